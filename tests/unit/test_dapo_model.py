"""DAPO model and baselines on the tiny random-weight open_clip config (models/backbones/qc-test-tiny).

Random weights detect nothing; these tests check shapes, invariants, freezing and the zero-shot
vocabulary mechanics.
"""

import pytest
import torch

from qc_stream.dapo import (
    AgnosticBaseline,
    DapoConfig,
    DapoModel,
    HandcraftedBaseline,
    load_backbone,
)
from qc_stream.errors import ConfigError, InputError, QcError

WORDS = ["scratch", "hole", "crack"]


@pytest.fixture(scope="module")
def backbone():
    return load_backbone("qc-test-tiny")


@pytest.fixture()
def model(backbone):
    torch.manual_seed(0)
    return DapoModel(backbone, DapoConfig(n_copies=2)).eval()


def test_backbone_is_frozen_deterministic_and_identified(backbone):
    assert not any(p.requires_grad for p in backbone.model.parameters())
    assert not backbone.model.training
    again = load_backbone("qc-test-tiny")
    assert again.backbone_id == backbone.backbone_id
    assert backbone.backbone_id.startswith("qc-test-tiny@") and len(backbone.weights_sha256) == 64
    other = load_backbone("qc-test-tiny", seed=1)
    assert other.backbone_id != backbone.backbone_id
    assert backbone.tap_layers(4) == [0, 1, 2, 3]


def test_shipped_weights_load_and_interpolate_to_another_size(backbone, tmp_path):
    import shutil

    from safetensors.torch import save_file

    folder = tmp_path / "backbones" / "my-clip"
    folder.mkdir(parents=True)
    shutil.copy(backbone_config_path(), folder / "open_clip_config.json")
    state = {
        k: v.contiguous()
        for k, v in load_backbone("qc-test-tiny", seed=3).model.state_dict().items()
    }
    save_file(state, str(folder / "weights.safetensors"))

    shipped = load_backbone("my-clip", models_dir=tmp_path)
    assert shipped.weights_path == folder / "weights.safetensors"
    assert torch.equal(shipped.model.visual.conv1.weight, state["visual.conv1.weight"])
    assert shipped.backbone_id.startswith("my-clip@")

    bigger = load_backbone("my-clip", image_size=96, models_dir=tmp_path)  # 8x8 -> 12x12 patch grid
    assert bigger.grid_size == (12, 12) and bigger.model.visual.positional_embedding.shape[0] == 145
    assert bigger.weights_sha256 == shipped.weights_sha256  # same source weights, same identity
    torch.manual_seed(0)
    with torch.no_grad():
        out = DapoModel(bigger, DapoConfig(n_copies=1)).eval()(torch.randn(1, 3, 96, 96), WORDS)
    assert out.anomaly_map.shape == (1, 96, 96)

    random = load_backbone("my-clip", pretrained="none", models_dir=tmp_path)
    assert random.weights_path is None and random.backbone_id != shipped.backbone_id


def backbone_config_path():
    from qc_stream.settings import SHIPPED_MODELS_DIR

    return SHIPPED_MODELS_DIR / "backbones" / "qc-test-tiny" / "open_clip_config.json"


def test_backbone_bad_names_are_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="unknown backbone"):
        load_backbone("no-such-backbone", models_dir=tmp_path)
    with pytest.raises(ConfigError, match="not a weights file"):
        load_backbone("qc-test-tiny", pretrained=str(tmp_path / "missing.safetensors"))


def test_output_shapes_and_ranges(model):
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        out = model(x, WORDS)
    assert out.image_score.shape == (2,)
    assert out.anomaly_map.shape == (2, 64, 64)
    assert out.type_map_probs.shape == (2, 3, 64, 64)
    assert out.image_type_probs.shape == (2, 3)
    assert out.type_map.shape == (2, 64, 64) and out.image_type.shape == (2,)
    assert len(out.layer_logits) == 4 and out.layer_logits[0].shape == (2, 4, 8, 8)
    assert ((out.image_score >= 0) & (out.image_score <= 1)).all()
    assert out.anomaly_map.min() >= 0 and out.anomaly_map.max() <= 1
    # per-type maps split the anomaly probability: they add up to the (unsmoothed) map
    torch.testing.assert_close(out.type_map_probs.sum(1), out.anomaly_map, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.image_type_probs.sum(1), torch.ones(2))


def test_other_input_size_gives_maps_at_input_size(model):
    with torch.no_grad():
        out = model(torch.randn(1, 3, 80, 96), WORDS)
    assert out.anomaly_map.shape == (1, 80, 96)
    assert out.type_map_probs.shape == (1, 3, 80, 96)


def test_candidate_mask_restricts_types(model):
    x = torch.randn(2, 3, 64, 64)
    cand = torch.tensor([[True, False, True], [False, True, False]])
    with torch.no_grad():
        out = model(x, WORDS, cand)
    assert (out.type_map_probs[0, 1] == 0).all() and (out.image_type_probs[0, 1] == 0).all()
    assert out.image_type[1].item() == 1
    assert set(out.type_map[1].unique().tolist()) == {1}
    with pytest.raises(InputError):
        model(x, WORDS, torch.zeros(2, 3, dtype=torch.bool))
    with pytest.raises(InputError):
        model(x, WORDS, torch.ones(2, 2, dtype=torch.bool))


def test_candidate_mask_from_product_registry(model):
    model.product_words = {"pill": ["crack", "hole"]}
    mask = model.candidate_mask(["pill", None, "unknown"], WORDS)
    assert mask.tolist() == [[False, True, True], [True, True, True], [True, True, True]]


def test_new_defect_word_at_inference_is_zero_shot(model):
    """A word the model never saw extends the candidate set; nothing is retrained."""
    x = torch.randn(2, 3, 64, 64)
    before = {k: v.clone() for k, v in model.trainable_state_dict().items()}
    with torch.no_grad():
        out3 = model(x, WORDS)
        out4 = model(x, WORDS + ["delamination"])
    assert out4.type_map_probs.shape[1] == 4 and out4.words[-1] == "delamination"
    assert out4.image_type_probs[:, 3].gt(0).all()
    # the new abnormal class takes probability mass: the maps change
    assert not torch.allclose(out3.anomaly_map, out4.anomaly_map)
    after = model.trainable_state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_text_features_are_cached_and_refreshed_when_prompts_change(model):
    with torch.no_grad():
        a = model.text_features(WORDS)
        b = model.text_features(WORDS)
    assert a is b  # one encoding per (prompt version, words)
    with torch.no_grad():
        model.prompts.ctx_abnormal.add_(0.5)  # what an optimizer step does
        c = model.text_features(WORDS)
    assert c is not a and not torch.allclose(a.abnormal, c.abnormal)
    torch.testing.assert_close(a.normal, c.normal)  # normal prompt untouched


def test_bad_words_are_input_errors(model):
    x = torch.randn(1, 3, 64, 64)
    with pytest.raises(InputError):
        model(x, [])
    with pytest.raises(InputError):
        model(x, ["hole", "Hole"])
    with pytest.raises(QcError, match="too long"):
        model(x, [" ".join(["contamination"] * 20)])


@pytest.mark.parametrize("cls", [HandcraftedBaseline, AgnosticBaseline])
def test_baselines_share_the_output(backbone, cls):
    torch.manual_seed(0)
    baseline = cls(backbone).eval()
    with torch.no_grad():
        out = baseline(
            torch.randn(2, 3, 64, 64),
            WORDS,
            torch.tensor([[True, True, False], [True, True, True]]),
        )
    assert out.image_score.shape == (2,)
    assert out.anomaly_map.shape == (2, 64, 64)
    assert out.type_map_probs.shape == (2, 3, 64, 64)
    assert (out.type_map_probs[0, 2] == 0).all()
    torch.testing.assert_close(out.type_map_probs.sum(1), out.anomaly_map, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.image_type_probs.sum(1), torch.ones(2))


def test_fp16_bf16_autocast_on_cpu(model):
    from qc_stream.dapo import autocast

    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad(), autocast("cpu", "bf16"):
        out = model(x, WORDS)
    assert out.anomaly_map.dtype == torch.float32 and torch.isfinite(out.anomaly_map).all()
    # text features cached under bf16 are not reused for an fp32 forward
    with torch.no_grad(), autocast("cpu", "bf16"):
        low = model.text_features(WORDS)
    with torch.no_grad():
        full = model.text_features(WORDS)
    assert low is not full


@pytest.mark.slow
def test_production_architecture_at_518(tmp_path):
    """ViT-L-14-336-quickgelu with random weights, positional embeddings interpolated 24x24 -> 37x37."""
    backbone = load_backbone(
        "ViT-L-14-336-quickgelu", pretrained="none", image_size=518, models_dir=tmp_path
    )
    assert backbone.grid_size == (37, 37)
    assert backbone.tap_layers(4) == [5, 11, 17, 23]  # layers 6/12/18/24
    torch.manual_seed(0)
    model = DapoModel(backbone, DapoConfig(n_copies=2)).eval()
    with torch.inference_mode():
        out = model(torch.randn(1, 3, 518, 518), ["scratch"])
    assert out.anomaly_map.shape == (1, 518, 518)
    assert out.type_map_probs.shape == (1, 1, 518, 518)
    assert out.layer_logits[0].shape == (1, 2, 37, 37)
