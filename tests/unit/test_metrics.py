"""Metrics against small cases computed by hand (and against scikit-learn where it applies)."""

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from qc_stream.evaluation.metrics import (
    aupro,
    f1_max,
    image_metrics,
    mean_over_products,
    pixel_metrics,
    type_metrics,
    type_scores,
)


def test_image_metrics_hand_case():
    # Positives 0.9, 0.4; negatives 0.6, 0.1 -> 3 of 4 pairs ordered right: AUROC 0.75.
    # AP: ranking 0.9(+) 0.6(-) 0.4(+) 0.1(-) -> precision at each positive 1, 2/3 -> (1 + 2/3) / 2.
    # F1-max: at threshold 0.9, P=1 R=.5 F1=2/3; at 0.4, P=2/3 R=1 F1=0.8.
    m = image_metrics([1, 0, 1, 0], [0.9, 0.6, 0.4, 0.1])
    assert m["image_auroc"] == pytest.approx(0.75)
    assert m["image_ap"] == pytest.approx((1 + 2 / 3) / 2)
    assert m["image_f1_max"] == pytest.approx(0.8)


def test_image_metrics_one_class_is_nan():
    m = image_metrics([0, 0, 0], [0.1, 0.2, 0.3])
    assert all(math.isnan(v) for v in m.values())
    m = image_metrics([1, 1], [0.1, 0.2])
    assert math.isnan(m["image_auroc"]) and math.isnan(m["image_ap"])
    assert m["image_f1_max"] == pytest.approx(1.0)  # predicting all positive is perfect


def test_f1_max_without_positives_is_nan():
    assert math.isnan(f1_max([0, 0], [0.3, 0.4]))


def _pixels(neg, regions):
    """Masks/maps where exactly ``neg`` are the negative scores (one image per region + one for negatives)."""
    masks, maps = [], []
    for scores in regions:  # a 1xK image per region: all its pixels form one component
        masks.append(np.ones((1, len(scores)), dtype=np.uint8))
        maps.append(np.array([scores], dtype=np.float32))
    masks.append(np.zeros((1, len(neg)), dtype=np.uint8))
    maps.append(np.array([neg], dtype=np.float32))
    return masks, maps


def test_aupro_flat_segments_by_hand():
    # Region A: 0.9, 0.5. Ten negatives: one at 0.7, nine at 0.1.
    # Curve (fpr, pro): (0,0) (0,.5) (.1,.5) (.1,1) (1,1). Area to 0.3 = .1*.5 + .2*1 = .25 -> /.3
    masks, maps = _pixels([0.7] + [0.1] * 9, [[0.9, 0.5]])
    assert aupro(masks, maps) == pytest.approx(0.25 / 0.3)


def test_aupro_averages_regions_by_hand():
    # Add region B: one pixel at 0.2. PRO = mean overlap of A and B:
    # t=.9: (0, .25); t=.7: (.1, .25); t=.5: (.1, .5); t=.2: (.1, 1); t=.1: (1, 1)
    # Area to 0.3 = .1*.25 + .2*1 = .225 -> /.3 = .75 (a region-size-weighted TPR would differ)
    masks, maps = _pixels([0.7] + [0.1] * 9, [[0.9, 0.5], [0.2]])
    assert aupro(masks, maps) == pytest.approx(0.75)


def test_aupro_interpolates_at_the_fpr_limit_by_hand():
    # Region: 0.9, 0.4. Negatives: five at 0.4 (tie with the region pixel), five at 0.1.
    # Curve: (0,0) (0,.5) (.5,1) (1,1). At fpr .3 the PRO is .5 + .5*.3/.5 = .8.
    # Area = .3 * (.5 + .8) / 2 = .195 -> /.3 = .65
    masks, maps = _pixels([0.4] * 5 + [0.1] * 5, [[0.9, 0.4]])
    assert aupro(masks, maps) == pytest.approx(0.65)


def test_aupro_counts_diagonal_neighbours_as_one_region():
    # Image 1: a diagonal of 3 defect pixels (1.0, 1.0, 0.0) = ONE 8-connected region R1.
    # Image 2: a diagonal pair at 1.0 (region R2) and a far pixel at 0.0 (region R3). Negatives 0.5.
    # t=1.0: fpr 0, pro = (2/3 + 1 + 0) / 3 = 5/9; the rest is found only at fpr 1 -> AUPRO = 5/9.
    # (4-connected components would give 6 regions: (1+1+0+1+1+0)/6 = 2/3.)
    mask1 = np.eye(3, dtype=np.uint8)
    map1 = np.where(mask1, 1.0, 0.5).astype(np.float32)
    map1[2, 2] = 0.0
    mask2 = np.zeros((5, 5), dtype=np.uint8)
    mask2[0, 0] = mask2[1, 1] = mask2[4, 4] = 1
    map2 = np.where(mask2, 1.0, 0.5).astype(np.float32)
    map2[4, 4] = 0.0
    assert aupro([mask1, mask2], [map1, map2]) == pytest.approx(5 / 9)


def test_pixel_metrics_match_sklearn_when_exact():
    rng = np.random.default_rng(0)
    masks = (rng.random((6, 16, 16)) < 0.2).astype(np.uint8)
    maps = np.round(rng.random((6, 16, 16)) * 0.6 + masks * 0.3, 2).astype(
        np.float32
    )  # ~100 levels: exact
    m = pixel_metrics(masks, maps)
    assert m["pixel_auroc"] == pytest.approx(roc_auc_score(masks.ravel(), maps.ravel()), abs=1e-9)
    assert m["pixel_f1_max"] == pytest.approx(f1_max(masks.ravel(), maps.ravel()), abs=1e-9)
    assert 0 < m["pixel_aupro"] < 1


def test_pixel_metrics_binned_are_close_to_exact():
    rng = np.random.default_rng(1)
    masks = (rng.random((4, 64, 64)) < 0.1).astype(np.uint8)
    maps = (rng.random((4, 64, 64)) + masks * 0.5).astype(np.float32)  # ~16k distinct values
    m = pixel_metrics(masks, maps, max_thresholds=256)
    assert m["pixel_auroc"] == pytest.approx(roc_auc_score(masks.ravel(), maps.ravel()), abs=5e-3)
    assert m["pixel_f1_max"] == pytest.approx(f1_max(masks.ravel(), maps.ravel()), abs=1e-2)


def test_pixel_metrics_without_defects_are_nan():
    m = pixel_metrics(np.zeros((2, 8, 8)), np.random.default_rng(0).random((2, 8, 8)))
    assert all(math.isnan(v) for v in m.values())


def test_perfect_pixel_maps_score_one():
    masks = np.zeros((2, 10, 10), dtype=np.uint8)
    masks[0, 2:5, 2:5] = 1
    masks[1, 7:9, 1:3] = 1
    m = pixel_metrics(masks, masks.astype(np.float32))
    assert m == pytest.approx({"pixel_auroc": 1.0, "pixel_aupro": 1.0, "pixel_f1_max": 1.0})


def test_type_metrics_hand_case():
    types = ["crack", "hole"]
    truth = [None, None, "crack", "hole"]
    scores = np.array(
        [
            [0.8, 0.1, 0.1],  # normal, right
            [0.3, 0.6, 0.1],  # normal, predicted crack (wrong)
            [0.2, 0.7, 0.1],  # crack, right
            [0.1, 0.5, 0.4],  # hole, predicted crack (wrong)
        ]
    )
    m = type_metrics(truth, scores, types)
    # One-vs-rest AUROC: normal: pos {.8,.3} neg {.2,.1} -> 1.0; crack: pos {.7} neg {.1,.6,.5} -> 1.0;
    # hole: pos {.4} neg {.1,.1,.1} -> 1.0.
    assert m["type_auroc"] == pytest.approx(1.0)
    assert m["type_ap"] == pytest.approx(1.0)
    # argmax: [normal, crack, crack, crack]. F1 normal: P 1 R .5 -> 2/3; crack: P 1/3 R 1 -> .5; hole 0.
    assert m["type_f1"] == pytest.approx((2 / 3 + 0.5 + 0) / 3)
    # Defective images, argmax over defect columns: crack->crack (right), hole->crack (wrong).
    assert m["type_accuracy"] == pytest.approx(0.5)


def test_type_metrics_degenerate_and_errors():
    m = type_metrics([None, None], np.array([[0.9, 0.1], [0.8, 0.2]]), ["crack"])
    assert math.isnan(m["type_auroc"]) and math.isnan(m["type_accuracy"])
    assert m["type_f1"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="not among"):
        type_metrics(["dent"], np.array([[0.5, 0.5]]), ["crack"])
    with pytest.raises(ValueError, match="scores must be"):
        type_metrics([None], np.array([[0.5, 0.5, 0.0]]), ["crack"])


def test_type_scores_and_mean_over_products():
    s = type_scores(np.array([0.8]), np.array([[0.25, 0.75]]))
    assert s == pytest.approx(np.array([[0.2, 0.2, 0.6]]))
    mean = mean_over_products(
        {"a": {"x": 1.0, "y": float("nan")}, "b": {"x": 0.5, "y": float("nan")}}
    )
    assert mean["x"] == pytest.approx(0.75) and math.isnan(mean["y"])
