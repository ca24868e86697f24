"""The wheel's data files follow models/prompts/ACTIVE and the settings' default backbone (setup.py
computes them at build time), on a small models tree made here."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from qc_stream.settings import DEFAULT_BACKBONE

REPO = Path(__file__).resolve().parents[2]


def _setup_module():
    spec = importlib.util.spec_from_file_location("qc_stream_setup", REPO / "setup.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # not __main__: setup() is not called
    return module


SETUP = _setup_module()


def _version(root: Path, name: str, backbone: str) -> None:
    folder = root / "models" / "prompts" / name
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text(
        json.dumps({"version": name, "backbone": {"name": backbone}})
    )
    (folder / "prompts.safetensors").write_bytes(b"w")


@pytest.fixture
def tree(tmp_path):
    (tmp_path / "qc_stream").mkdir()
    (tmp_path / "qc_stream" / "settings.py").write_text('X = 1\nDEFAULT_BACKBONE = "bb"\n')
    (tmp_path / "models" / "backbones" / "bb").mkdir(parents=True)
    (tmp_path / "models" / "backbones" / "bb" / "weights.safetensors").write_bytes(b"w")
    (tmp_path / "models" / "backbones" / "other").mkdir()
    _version(tmp_path, "v-a", "bb")
    _version(tmp_path, "v-b", "bb")
    _version(tmp_path, "gpu-v1", "other")
    (tmp_path / "models" / "prompts" / "ACTIVE").write_text("v-a\n")
    (tmp_path / "migrations" / "versions").mkdir(parents=True)
    (tmp_path / "migrations" / "versions" / "0001_x.py").write_text("")
    (tmp_path / "migrations" / "versions" / "notes.txt").write_text("")
    return tmp_path


def _shipped_dirs(data_files) -> set[str]:
    return {target for target, _ in data_files}


def test_the_active_version_and_the_default_backbone_are_shipped(tree):
    files = dict(SETUP.wheel_data_files(tree))
    assert files["share/qc-stream/models/prompts/v-a"] == [
        "models/prompts/v-a/manifest.json",
        "models/prompts/v-a/prompts.safetensors",
    ]
    assert files["share/qc-stream/models/backbones/bb"] == [
        "models/backbones/bb/weights.safetensors"
    ]
    assert files["share/qc-stream/models/prompts"] == ["models/prompts/ACTIVE"]
    assert files["share/qc-stream/migrations/versions"] == ["migrations/versions/0001_x.py"]
    assert not any("v-b" in d or "other" in d for d in _shipped_dirs(files.items()))

    (tree / "models" / "prompts" / "ACTIVE").write_text("v-b\n")  # activate another, rebuild
    dirs = _shipped_dirs(SETUP.wheel_data_files(tree))
    assert "share/qc-stream/models/prompts/v-b" in dirs
    assert "share/qc-stream/models/prompts/v-a" not in dirs


def test_the_default_backbone_comes_from_the_settings(tree):
    (tree / "qc_stream" / "settings.py").write_text('DEFAULT_BACKBONE = "other"\n')
    (tree / "models" / "prompts" / "ACTIVE").write_text("gpu-v1\n")
    dirs = _shipped_dirs(SETUP.wheel_data_files(tree))
    assert {
        "share/qc-stream/models/backbones/other",
        "share/qc-stream/models/prompts/gpu-v1",
    } <= dirs
    assert SETUP.default_backbone(REPO) == DEFAULT_BACKBONE  # the checkout's own


@pytest.mark.parametrize(
    ("active", "message"),
    [
        ("gpu-v1", "made for backbone 'other', not the default 'bb'"),
        ("v-gone", "ACTIVE names 'v-gone'"),
        ("", "ACTIVE names ''"),
    ],
)
def test_a_wheel_that_could_not_predict_is_not_built(tree, active, message):
    (tree / "models" / "prompts" / "ACTIVE").write_text(active)
    with pytest.raises(SystemExit, match=message):
        SETUP.wheel_data_files(tree)
