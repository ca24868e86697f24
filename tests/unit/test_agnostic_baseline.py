"""The object-agnostic baseline as AnomalyCLIP builds it: DPAM (V-V attention in the later blocks),
sigma-4 smoothing, deep text prompts replacing the tokens of layers 0-8; older versions load as
they were trained."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from qc_stream.dapo import build_model, load_backbone, load_prompt_version, save_prompt_version
from qc_stream.dapo.baselines import AgnosticConfig, dpam_start
from qc_stream.training import TrainConfig, train
from tests.support.dataset_layouts import samples

TINY = str(Path(__file__).resolve().parents[2] / "models" / "backbones" / "qc-test-tiny")


@pytest.fixture(scope="module")
def backbone():
    return load_backbone(TINY)


def _images(backbone, n=2):
    goods, bads = samples("carpet", backbone.image_size, 1, n - 1)
    return backbone.preprocess_batch([s.image for s in goods + bads["hole"]])


def test_defaults_follow_anomalyclip(backbone):
    cfg = AgnosticConfig()
    assert cfg.smooth_sigma == 4.0 and cfg.alpha == 0.0 and cfg.deep_text_depth == 9
    assert dpam_start(cfg, 24) == 5  # the last 19 of ViT-L's 24 blocks
    assert dpam_start(AgnosticConfig(dpam_layers=0), 24) is None
    model = build_model("agnostic", backbone)
    assert model.prompts.deep_text.shape[0] == min(9, backbone.text_layers)


def test_dpam_changes_the_maps(backbone):
    torch.manual_seed(0)
    with_dpam = build_model("agnostic", backbone, {"smooth_sigma": 0.0}).eval()
    without = build_model("agnostic", backbone, {"smooth_sigma": 0.0, "dpam_layers": 0}).eval()
    without.load_trainable_state_dict(with_dpam.trainable_state_dict())
    x = _images(backbone)
    with torch.no_grad():
        a = with_dpam(x, ["hole"])
        b = without(x, ["hole"])
    assert torch.allclose(a.image_score, b.image_score)  # the global path is CLIP's own
    assert (a.anomaly_map - b.anomaly_map).abs().max() > 1e-3


def test_the_baseline_trains(backbone):
    goods, bads = samples("carpet", backbone.image_size, 4, 4)
    data = [(s.image, s.mask, s.defect_type) for s in goods + bads["hole"] + bads["stain"]]
    torch.manual_seed(0)
    model = build_model("agnostic", backbone)
    before = {k: v.clone() for k, v in model.trainable_state_dict().items()}
    history = train(model, data, TrainConfig(joint_epochs=2, progress=False), schedule="joint")
    after = model.trainable_state_dict()
    assert all(not torch.equal(before[k], after[k]) for k in before)
    losses = history.epoch_means()
    assert losses[-1]["loss"] < losses[0]["loss"]


def test_a_version_saved_before_dpam_loads_as_trained(backbone, tmp_path):
    old = build_model(
        "agnostic", backbone, {"dpam_layers": 0, "deep_text_depth": None, "alpha": 0.01}
    )
    path = save_prompt_version(old, tmp_path, "old")
    manifest = (path / "manifest.json").read_text()
    import json

    m = json.loads(manifest)
    for key in ("dpam_layers", "deep_text_depth"):
        del m["config"][key]
    (path / "manifest.json").write_text(json.dumps(m))
    loaded = load_prompt_version("old", backbone, tmp_path).model
    assert loaded.visual.dpam_from is None
    assert loaded.prompts.deep_text.shape[0] == backbone.text_layers
