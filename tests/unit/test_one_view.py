"""One view everywhere: training, evaluation, `predict` and the worker all resize the whole frame to
the model's input (no centre crop) and map back to the frame's own size.

A 2:1 frame has a bright defect touching its right edge; a centre crop would cut it off. The model
is replaced by a geometry probe whose anomaly map is the brightness of its input (a real CLIP would
make the assertion depend on what it learnt, not on the geometry this test is about); every other
step - preprocessing, mask handling, resizing back - is the shipped code.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from PIL import Image

from qc_stream.dapo import load_backbone
from qc_stream.datasets import DatasetItem
from qc_stream.evaluation.dataset_eval import score_items
from qc_stream.inference.decode import preprocess_batch
from qc_stream.inference.detector import _resize
from qc_stream.training.train import mask_to_tensor

H, W = 64, 128
DEFECT = (slice(20, 40), slice(116, 128))  # touches the right edge


def _frame() -> tuple[np.ndarray, np.ndarray]:
    image = np.full((H, W, 3), 70, dtype=np.uint8)
    image[DEFECT] = 255
    mask = np.zeros((H, W), dtype=np.uint8)
    mask[DEFECT] = 1
    return image, mask


def _brightness(x: torch.Tensor) -> torch.Tensor:
    """[B, 3, S, S] normalised -> [B, S, S] in [0, 1]: the probe's anomaly map."""
    b = x.float().mean(1)
    lo = b.flatten(1).min(1).values[:, None, None]
    hi = b.flatten(1).max(1).values[:, None, None]
    return (b - lo) / (hi - lo).clamp_min(1e-6)


def _peak_on_defect(amap: np.ndarray, mask: np.ndarray) -> bool:
    assert amap.shape == mask.shape
    return bool(mask[np.unravel_index(int(np.argmax(amap)), amap.shape)])


BACKBONE = Path(__file__).resolve().parents[2] / "models" / "backbones" / "qc-test-tiny"


def test_training_sees_the_edge_defect_where_its_mask_is():
    backbone = load_backbone(str(BACKBONE))
    image, mask = _frame()
    x = backbone.preprocess(image)  # what the training collate feeds the model
    target = mask_to_tensor(mask, backbone.image_size)  # what the loss compares with
    seen = _brightness(x[None])[0] > 0.5
    assert target.sum() > 0, "the edge defect was cropped out of the training mask"
    overlap = (seen & target.bool()).sum() / (seen | target.bool()).sum()
    assert float(overlap) > 0.8
    assert bool(target[:, -1].any())  # it still touches the edge after resizing


def test_evaluation_map_peak_lands_on_the_edge_defect(tmp_path):
    backbone = load_backbone(str(BACKBONE))
    image, mask = _frame()
    Image.fromarray(image).save(tmp_path / "f.png")
    Image.fromarray(mask * 255).save(tmp_path / "m.png")
    item = DatasetItem(tmp_path / "f.png", "p", "test", "hole", tmp_path / "m.png")

    def probe(x, words):
        amap = _brightness(x)
        b, n = x.shape[0], len(words)
        return SimpleNamespace(
            image_score=amap.flatten(1).max(1).values,
            anomaly_map=amap,
            type_map_probs=amap[:, None].expand(b, n, -1, -1) / n,
            image_type_probs=torch.full((b, n), 1 / n),
        )

    model = type("Probe", (), {"backbone": backbone, "__call__": lambda self, x, w: probe(x, w)})()
    (_score, amap, _classes, _types, gt) = next(score_items(model, [item], ["hole"]))
    assert amap.shape == (H, W)
    assert _peak_on_defect(amap, gt)


def test_predict_and_worker_preprocessing_put_the_peak_on_the_edge_defect():
    """`predict` and the worker share ``Detector.detect``: ``preprocess_batch`` in, ``_resize`` out."""
    backbone = load_backbone(str(BACKBONE))
    image, mask = _frame()
    x = preprocess_batch([Image.fromarray(image)], backbone.image_size, backbone.mean, backbone.std)
    amap = _brightness(x)[0].numpy()
    back = _resize(amap, (W, H), nearest=False)
    assert _peak_on_defect(back, mask)
    # and the same picture through the training/evaluation preprocessing gives the same view
    same = backbone.preprocess(image)
    assert torch.allclose(_brightness(same[None])[0], _brightness(x)[0], atol=0.05)
