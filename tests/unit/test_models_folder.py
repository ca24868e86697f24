"""The default models folder: per user, seeded from the shipped assets, which are never written."""

from __future__ import annotations

import json
from pathlib import Path

from qc_stream import paths
from qc_stream.settings import DEFAULT_MODELS_DIR, SHIPPED_MODELS_DIR

REPO = Path(__file__).resolve().parents[2]


def _shipped(root: Path) -> Path:
    """A small shipped folder: one backbone, two prompt versions, ACTIVE naming the second."""
    for name in ("v1", "v2"):
        (root / "prompts" / name).mkdir(parents=True)
        (root / "prompts" / name / "manifest.json").write_text(json.dumps({"version": name}))
    (root / "prompts" / "ACTIVE").write_text("v2\n")
    (root / "backbones" / "tiny").mkdir(parents=True)
    (root / "backbones" / "tiny" / "weights.safetensors").write_bytes(b"w" * 64)
    return root


def test_the_default_is_the_per_user_folder_in_a_checkout_too(monkeypatch, tmp_path):
    assert paths.is_checkout() and SHIPPED_MODELS_DIR == REPO / "models"
    assert DEFAULT_MODELS_DIR != SHIPPED_MODELS_DIR
    assert not DEFAULT_MODELS_DIR.resolve().is_relative_to(REPO)  # conftest: a session folder
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert paths.default_models_dir() == tmp_path / "xdg" / "qc-stream" / "models"
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert paths.default_models_dir() == tmp_path / "home/.local/share/qc-stream/models"


def test_seeding_copies_prompt_versions_and_active_once_and_never_overwrites(monkeypatch, tmp_path):
    shipped = _shipped(tmp_path / "shipped")
    monkeypatch.setattr(paths, "shipped_models_dir", lambda: shipped)
    user = tmp_path / "user"
    paths.seed_models_dir(user)
    assert sorted(p.name for p in (user / "prompts").iterdir()) == ["ACTIVE", "v1", "v2"]
    assert (user / "prompts" / "ACTIVE").read_text() == "v2\n"
    assert not (user / "backbones").exists()  # weights are read in place, not copied

    (user / "prompts" / "ACTIVE").write_text("v1\n")  # the user's choice from now on
    (user / "prompts" / "v1" / "thresholds.json").write_text("mine")  # `models calibrate`
    # a newer checkout or install: a new version, recalibrated thresholds, a changed manifest
    (shipped / "prompts" / "v3").mkdir()
    for name in ("v1", "v2"):
        (shipped / "prompts" / name / "thresholds.json").write_text("recalibrated")
        (shipped / "prompts" / name / "manifest.json").write_text("{}")
    paths.seed_models_dir(user)
    assert (user / "prompts" / "ACTIVE").read_text() == "v1\n"
    assert (user / "prompts" / "v3").is_dir()
    assert (user / "prompts" / "v1" / "thresholds.json").read_text() == "mine"
    assert (user / "prompts" / "v2" / "thresholds.json").read_text() == "recalibrated"
    for name in ("v1", "v2"):  # covered by the registry's digest: never replaced under a name
        assert json.loads((user / "prompts" / name / "manifest.json").read_text()) == {
            "version": name
        }
    (shipped / "prompts" / "v2" / "thresholds.json").write_text("again")
    paths.seed_models_dir(user)
    assert (user / "prompts" / "v2" / "thresholds.json").read_text() == "again"
    assert not [p for p in (user / "prompts").rglob(".*") if p.name != paths.SEED_RECORD]


def test_a_backbone_missing_from_the_models_folder_is_read_from_the_shipped_one(tmp_path):
    from qc_stream.dapo.backbone import load_backbone

    empty = tmp_path / "models"
    empty.mkdir()
    backbone = load_backbone("qc-test-tiny", models_dir=empty)
    assert backbone.name == "qc-test-tiny" and not (empty / "backbones").exists()
