"""Training DAPO and the learned baseline on a small synthetic masked set (tiny random backbone)."""

import numpy as np
import pytest
import torch

from qc_stream.dapo import (
    AgnosticBaseline,
    DapoConfig,
    DapoModel,
    HandcraftedBaseline,
    load_backbone,
)
from qc_stream.errors import QcError
from qc_stream.training import TrainConfig, evaluate_loss, train

WORDS = ["scratch", "hole"]


@pytest.fixture(scope="module")
def backbone():
    return load_backbone("qc-test-tiny")


def _dataset(n=16, masks=True, seed=0):
    """Noise images; every other one has a bright square (the defect) with its mask and word."""
    rng = np.random.default_rng(seed)
    items = []
    for i in range(n):
        img = (rng.random((64, 64, 3)) * 120).astype(np.uint8)
        mask = np.zeros((64, 64), np.uint8)
        word = None
        if i % 2:
            y, x = rng.integers(0, 40, size=2)
            mask[y : y + 20, x : x + 20] = 1
            img[mask > 0] = 250 if (i // 2) % 2 else 10
            word = WORDS[(i // 2) % 2]
        items.append({"image": img, "mask": mask if masks else None, "defect_type": word})
    return items


def _model(backbone):
    torch.manual_seed(0)
    return DapoModel(backbone, DapoConfig(n_copies=2))


def test_training_lowers_loss_and_keeps_backbone_frozen(backbone):
    model = _model(backbone)
    data = _dataset()
    frozen = {k: v.clone() for k, v in backbone.model.state_dict().items()}
    prompts_before = {k: v.clone() for k, v in model.trainable_state_dict().items()}
    cfg = TrainConfig(stage_epochs=(2, 2, 2), progress=False)
    before = evaluate_loss(model, data, cfg)
    history = train(model, data, cfg)
    after = evaluate_loss(model, data, cfg)
    assert after < 0.9 * before, (before, after)
    # and it learned where the defects are: the map is higher inside the masks than outside
    images = backbone.preprocess_batch([d["image"] for d in data])
    masks = torch.stack([torch.as_tensor(d["mask"]) for d in data]) > 0
    with torch.no_grad():
        amap = model(images).anomaly_map
    assert amap[masks].mean() > amap[~masks].mean() + 0.2, (amap[masks].mean(), amap[~masks].mean())
    assert [e["stage"] for e in history.epoch_means()] == ["text"] * 2 + [
        "deep_text+adapters"
    ] * 2 + ["deep_visual"] * 2
    # backbone: bit-identical tensors, still frozen and in eval mode
    state = backbone.model.state_dict()
    assert all(torch.equal(frozen[k], state[k]) for k in frozen)
    assert not any(p.requires_grad for p in backbone.model.parameters())
    assert not backbone.model.training
    # every trainable group moved
    changed = {
        k for k, v in model.trainable_state_dict().items() if not torch.equal(v, prompts_before[k])
    }
    assert {
        "prompts.ctx_abnormal",
        "prompts.deep_text",
        "visual.deep_visual",
        "visual.adapters.0.weight",
    } <= changed
    assert model.vocabulary == sorted(WORDS)


def test_staged_first_stage_trains_only_text_contexts(backbone):
    model = _model(backbone)
    before = {k: v.clone() for k, v in model.trainable_state_dict().items()}
    train(model, _dataset(8), TrainConfig(stage_epochs=(1, 0, 0), progress=False))
    changed = {k for k, v in model.trainable_state_dict().items() if not torch.equal(v, before[k])}
    assert changed == {"prompts.ctx_normal", "prompts.ctx_abnormal"}


def test_joint_schedule_runs(backbone):
    model = _model(backbone)
    history = train(
        model, _dataset(8), TrainConfig(joint_epochs=2, progress=False), schedule="joint"
    )
    assert {s["stage"] for s in history.steps} == {"joint"}
    assert len(history.steps) == 2
    with pytest.raises(QcError):
        train(model, _dataset(8), TrainConfig(progress=False), schedule="sideways")


def test_mask_free_training_uses_the_image_loss_only(backbone):
    model = _model(backbone)
    history = train(
        model, _dataset(8, masks=False), TrainConfig(stage_epochs=(1, 1, 1), progress=False)
    )
    assert len(history.steps) == 3
    assert all(s["pixel_loss"] == 0 and s["loss"] == s["image_loss"] for s in history.steps)


def test_sample_objects_and_tuples_are_accepted(backbone):
    class Sample:  # the shape of qc_stream.synth.Sample
        def __init__(self, image, mask, defect_type):
            self.image, self.mask, self.defect_type, self.product = image, mask, defect_type, "tile"

    items = _dataset(4)
    samples = [Sample(d["image"], d["mask"], d["defect_type"]) for d in items]
    tuples = [(d["image"], d["mask"], d["defect_type"]) for d in items]
    for data in (samples, tuples):
        history = train(
            _model(backbone), data, TrainConfig(joint_epochs=1, progress=False), schedule="joint"
        )
        assert len(history.steps) == 1


def test_agnostic_baseline_trains_and_handcrafted_cannot(backbone):
    torch.manual_seed(0)
    agnostic = AgnosticBaseline(backbone)
    data = _dataset()
    cfg = TrainConfig(stage_epochs=(2, 2, 2), progress=False)
    before = evaluate_loss(agnostic, data, cfg)
    history = train(agnostic, data, cfg)
    assert {e["stage"] for e in history.epoch_means()} == {
        "text",
        "deep_text+adapters",
    }  # no visual params
    assert evaluate_loss(agnostic, data, cfg) < before
    with pytest.raises(QcError, match="nothing to train"):
        train(HandcraftedBaseline(backbone), data, cfg)


def test_visual_only_stage_after_inference_reuses_cached_text(backbone):
    """Text features cached under inference_mode feed a later visual-only training stage."""
    model = _model(backbone).eval()
    data = _dataset(8)
    with torch.inference_mode():
        model(backbone.preprocess_batch([d["image"] for d in data[:2]]), sorted(WORDS))
    text_before = {
        k: v.clone() for k, v in model.trainable_state_dict().items() if k.startswith("prompts.")
    }
    history = train(
        model, data, TrainConfig(stage_epochs=(0, 0, 1), cumulative=False, progress=False)
    )
    assert [s["stage"] for s in history.steps] == ["deep_visual"]
    assert all(torch.equal(v, model.trainable_state_dict()[k]) for k, v in text_before.items())


def test_type_loss_is_the_cross_entropy_of_the_true_type_on_defective_samples_only():
    from qc_stream.dapo.model import DapoOutput
    from qc_stream.training.losses import dapo_loss

    probs = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4]])
    out = DapoOutput(
        image_score=torch.zeros(3),
        anomaly_map=torch.zeros(3, 4, 4),
        type_map_probs=torch.zeros(3, 3, 4, 4),
        image_type_probs=probs,
        words=["a", "b", "c"],
        candidate_mask=torch.ones(3, 3, dtype=torch.bool),
        image_logits=torch.zeros(3, 2),
    )
    labels, classes = torch.tensor([1, 1, 0]), torch.tensor([1, 3, 0])  # "a", "c", a normal sample
    no_mask = torch.zeros(3, dtype=torch.bool)
    plain = dapo_loss(out, labels, None, no_mask, classes)
    typed = dapo_loss(out, labels, None, no_mask, classes, type_weight=2.0)
    expected = 2.0 * -(np.log(0.7) + np.log(0.1)) / 2  # the normal sample's row does not count
    assert plain.types is None
    assert typed.types.item() == pytest.approx(expected, rel=1e-5)
    assert typed.total.item() == pytest.approx(plain.total.item() + expected, rel=1e-5)


def test_training_with_the_type_loss_records_it_and_lowers_it(backbone):
    model = _model(backbone)
    data = _dataset(16)
    history = train(
        model, data, TrainConfig(joint_epochs=6, type_weight=1.0, progress=False), schedule="joint"
    )
    type_losses = [s["type_loss"] for s in history.steps]
    assert len(type_losses) == len(history.steps) and all(t >= 0 for t in type_losses)
    assert np.mean(type_losses[-2:]) < np.mean(type_losses[:2]), type_losses
    # off by default: the paper's loss, nothing recorded
    assert (
        "type_loss"
        not in train(
            _model(backbone),
            _dataset(8),
            TrainConfig(joint_epochs=1, progress=False),
            schedule="joint",
        ).steps[0]
    )
