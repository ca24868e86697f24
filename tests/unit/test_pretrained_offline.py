"""Real weights offline: --pretrained / QC_PRETRAINED takes a weights file or a copied open_clip /
Hugging Face cache folder; a version made for other weights names the `qc-stream train` command."""

from __future__ import annotations

from pathlib import Path

import pytest
from safetensors.torch import save_file

from qc_stream.dapo import build_model, load_backbone, load_prompt_version, save_prompt_version
from qc_stream.dapo.backbone import weights_in_folder
from qc_stream.errors import ConfigError, QcError

TINY = str(Path(__file__).resolve().parents[2] / "models" / "backbones" / "qc-test-tiny")


def _write_weights(path: Path, seed: int) -> None:
    backbone = load_backbone(TINY, pretrained="none", seed=seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in backbone.model.state_dict().items()}, str(path))


def test_a_copied_hugging_face_cache_folder_loads_like_its_file(tmp_path):
    snapshot = tmp_path / "hub" / "models--timm--tiny.openai" / "snapshots" / "0123abcd"
    weights = snapshot / "open_clip_model.safetensors"
    _write_weights(weights, seed=3)
    (snapshot / "open_clip_config.json").write_text("{}")  # a cache holds more than the weights
    assert weights_in_folder(tmp_path / "hub") == weights
    from_folder = load_backbone(TINY, pretrained=str(tmp_path / "hub"))
    from_file = load_backbone(TINY, pretrained=str(weights))
    assert from_folder.backbone_id == from_file.backbone_id
    assert from_folder.backbone_id != load_backbone(TINY, pretrained="none", seed=0).backbone_id


def test_a_folder_without_or_with_several_weights_is_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no open_clip weights file"):
        weights_in_folder(tmp_path / "empty")
    _write_weights(tmp_path / "two" / "a" / "w.safetensors", 1)
    _write_weights(tmp_path / "two" / "b" / "w.safetensors", 2)
    with pytest.raises(ConfigError, match="several weights files"):
        load_backbone(TINY, pretrained=str(tmp_path / "two"))


def test_a_version_for_other_weights_names_the_train_command(tmp_path):
    trained_on = load_backbone(TINY, pretrained="none", seed=1)
    model = build_model("dapo", trained_on, {"n_copies": 1}, vocabulary=["hole"])
    save_prompt_version(model, tmp_path, "v1")
    weights = tmp_path / "other.safetensors"
    _write_weights(weights, seed=2)
    other = load_backbone(TINY, pretrained=str(weights))
    with pytest.raises(QcError) as e:
        load_prompt_version("v1", other, tmp_path)
    message = str(e.value)
    assert "\n" not in message
    assert (
        f"qc-stream train --dataset PATH --backbone qc-test-tiny --pretrained {weights}" in message
    )
