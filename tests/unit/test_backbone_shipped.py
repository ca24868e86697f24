"""The shipped default backbone (`qc-clip-tiny-cpu`, pretrained on 2 CPU cores): loads offline
through open_clip and has really learned the synthetic world (image-text retrieval far above
chance on fresh samples)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from qc_stream.settings import DEFAULT_BACKBONE, SHIPPED_MODELS_DIR, Settings
from qc_stream.synth import PRODUCTS, generate
from qc_stream.synth.captions import DEFECT_PHRASES

FOLDER = SHIPPED_MODELS_DIR / "backbones" / DEFAULT_BACKBONE


@pytest.fixture(scope="module")
def backbone():
    import os

    os.environ["HF_HUB_OFFLINE"] = "1"  # nothing may be downloaded
    import torch

    torch.set_num_threads(2)
    from qc_stream.dapo import load_backbone

    return load_backbone(DEFAULT_BACKBONE)


def test_shipped_files_are_small_and_documented():
    cfg = json.loads((FOLDER / "open_clip_config.json").read_text())
    assert cfg["model_cfg"]["embed_dim"] == 128
    assert (FOLDER / "weights.safetensors").stat().st_size < 25 * 1024 * 1024
    card = (FOLDER / "MODEL_CARD.md").read_text()
    assert "Reproduce" in card and "scripts/pretrain_backbone.py" in card
    run = json.loads((FOLDER / "training_log.json").read_text())
    assert (
        run["device"] == "cpu" and run["threads"] == 2 and run["minutes"] <= 60
    )  # the budget
    assert (
        Settings.model_fields["backbone"].default == DEFAULT_BACKBONE
    )  # QC_BACKBONE may override it


def test_loads_offline_with_the_shipped_weights(backbone):
    assert backbone.weights_path is not None and backbone.weights_path.name == "weights.safetensors"
    assert backbone.backbone_id.startswith(f"{DEFAULT_BACKBONE}@")
    assert backbone.image_size == 192 and backbone.grid_size == (12, 12)
    assert not any(p.requires_grad for p in backbone.model.parameters())


def test_shipped_fp16_weights_load_at_another_image_size(backbone):
    """QC_IMAGE_SIZE with the fp16 shipped weights: the positional embedding is interpolated in
    fp32 (open_clip's bicubic resize is not implemented for fp16 on the CPU)."""
    import torch

    from qc_stream.dapo import load_backbone

    bigger = load_backbone(DEFAULT_BACKBONE, image_size=256)
    assert bigger.image_size == 256 and bigger.grid_size == (16, 16)
    assert bigger.weights_sha256 == backbone.weights_sha256
    assert torch.equal(bigger.model.visual.conv1.weight, backbone.model.visual.conv1.weight)
    assert bigger.model.visual.positional_embedding.shape[0] == 1 + 16 * 16


def _encode(backbone, images, texts):
    import torch
    import torch.nn.functional as F

    with torch.inference_mode():
        img = F.normalize(backbone.model.encode_image(backbone.preprocess_batch(images)), dim=-1)
        txt = F.normalize(backbone.model.encode_text(backbone.tokenize(texts)), dim=-1)
    return (img @ txt.T).numpy()


def test_zero_shot_retrieval_beats_chance_by_a_wide_margin(backbone):
    # fresh samples: a seed the pretraining never used
    names = list(PRODUCTS)
    samples = [s for p in names for s in generate(p, 3, seed=424242, size=192, defect_rate=0.5)]
    images = [s.image for s in samples]

    # which product is it? (14-way, chance 7 %)
    sim = _encode(backbone, images, [f"a photo of a {PRODUCTS[p].noun}" for p in names])
    product_acc = np.mean([names[i] == s.product for i, s in zip(sim.argmax(1), samples)])
    assert product_acc >= 0.6, product_acc

    # which product in which state? (one caption per product x {flawless, each defect}; chance ~1 %)
    keys, texts = [], []
    for p in names:
        keys.append((p, None))
        texts.append(f"a photo of a flawless {PRODUCTS[p].noun}")
        for d in PRODUCTS[p].defects:
            keys.append((p, d))
            texts.append(f"a photo of a {PRODUCTS[p].noun} with {DEFECT_PHRASES[d][0]}")
    sim = _encode(backbone, images, texts)
    state_acc = np.mean(
        [keys[i] == (s.product, s.defect_type) for i, s in zip(sim.argmax(1), samples)]
    )
    assert state_acc >= 10 / len(texts), state_acc  # >= 10x chance
