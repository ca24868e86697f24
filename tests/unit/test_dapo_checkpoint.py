"""Prompt versions: trained parameters + manifest, bound to the backbone they were made for."""

import json

import pytest
import torch
from safetensors.torch import load_file

from qc_stream.dapo import (
    AgnosticBaseline,
    DapoConfig,
    DapoModel,
    HandcraftedBaseline,
    active_version,
    list_versions,
    load_backbone,
    load_prompt_version,
    save_prompt_version,
    set_active_version,
)
from qc_stream.errors import QcError

WORDS = ["scratch", "hole", "crack"]


@pytest.fixture(scope="module")
def backbone():
    return load_backbone("qc-test-tiny")


def _trained_like(backbone):
    """A DAPO model whose prompt weights differ from a fresh init (as after training)."""
    torch.manual_seed(0)
    model = DapoModel(backbone, DapoConfig(n_copies=2, n_ctx=3), vocabulary=WORDS).eval()
    with torch.no_grad():
        for p in model.trainable_parameters():
            p.add_(0.01 * torch.randn_like(p))
    model.product_words = {"pill": ["crack", "hole"]}
    return model


def test_round_trip_gives_identical_outputs(backbone, tmp_path):
    model = _trained_like(backbone)
    path = save_prompt_version(model, tmp_path, "v1", metrics={"image_auroc": 0.9}, activate=True)
    assert path == tmp_path / "prompts" / "v1"
    assert active_version(tmp_path) == "v1"

    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["method"] == "dapo" and manifest["kind"] == "trained"
    assert manifest["backbone"]["backbone_id"] == backbone.backbone_id
    assert manifest["backbone"]["weights_sha256"] == backbone.weights_sha256
    assert manifest["vocabulary"] == {"words": WORDS, "products": {"pill": ["crack", "hole"]}}
    assert manifest["config"]["n_ctx"] == 3 and manifest["metrics"] == {"image_auroc": 0.9}
    assert manifest["created_at"].endswith("+00:00")
    # only the trained parameters are stored, no backbone tensor
    stored = load_file(str(path / "prompts.safetensors"))
    assert set(stored) == set(model.trainable_state_dict())
    assert not any(k.startswith("clip.") for k in stored)

    loaded = load_prompt_version("v1", load_backbone("qc-test-tiny"), tmp_path)
    assert loaded.version == "v1" and loaded.words == WORDS
    assert loaded.model.product_words == {"pill": ["crack", "hole"]}
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        a, b = model(x, WORDS), loaded.model(x)
    for name in ("image_score", "anomaly_map", "type_map_probs", "image_type_probs"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name


def test_loading_on_another_backbone_is_refused(backbone, tmp_path):
    save_prompt_version(_trained_like(backbone), tmp_path, "v1")
    other = load_backbone("qc-test-tiny", seed=7)
    with pytest.raises(
        QcError,
        match=f"made for backbone {backbone.backbone_id}.*loaded backbone is {other.backbone_id}",
    ):
        load_prompt_version("v1", other, tmp_path)


def test_versions_listing_activation_and_errors(backbone, tmp_path):
    model = _trained_like(backbone)
    save_prompt_version(model, tmp_path, "v1")
    save_prompt_version(model, tmp_path, "v2", kind="zero-shot", parent="v1")
    assert [m["version"] for m in list_versions(tmp_path)] == ["v1", "v2"]
    assert active_version(tmp_path) is None
    set_active_version("v2", tmp_path)
    assert active_version(tmp_path) == "v2"
    with pytest.raises(QcError, match="already exists"):
        save_prompt_version(model, tmp_path, "v1")
    with pytest.raises(QcError, match="not found"):
        load_prompt_version("v9", backbone, tmp_path)
    with pytest.raises(QcError, match="not found"):
        set_active_version("v9", tmp_path)
    with pytest.raises(QcError):
        save_prompt_version(model, tmp_path, "../escape")
    assert not any(p.name.startswith(".") for p in (tmp_path / "prompts").iterdir() if p.is_dir())


@pytest.mark.parametrize("cls", [HandcraftedBaseline, AgnosticBaseline])
def test_baselines_round_trip(backbone, tmp_path, cls):
    torch.manual_seed(0)
    model = cls(backbone, vocabulary=WORDS).eval()
    save_prompt_version(model, tmp_path, "b1")
    loaded = load_prompt_version(tmp_path / "prompts" / "b1", backbone)
    assert type(loaded.model) is cls
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x).anomaly_map, loaded.model(x).anomaly_map)
