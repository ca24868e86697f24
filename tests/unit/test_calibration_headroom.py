"""Scores with headroom, overlap reporting, pixel thresholds and where each threshold came from.

Pure parts on hand-made numbers: the rule must leave reject reachable however high good parts
score, say when a product cannot be separated, and name the source of every threshold.
"""

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from qc_stream.dapo.thresholds import (
    SCORE,
    THRESHOLDS_FILE,
    read_region_thresholds,
    read_thresholds,
    read_thresholds_meta,
    write_thresholds,
)
from qc_stream.domain.thresholds import (
    DEFAULT_REGION_THRESHOLD,
    REGION_FLOOR,
    RELATIVE_REGION,
    pixel_threshold_from_normal_maps,
    region_cut,
    resolve_region_threshold,
    resolve_with_source,
    score_from_logit,
)
from qc_stream.registry.calibration import calibrate_product

SHIPPED = Path(__file__).resolve().parents[2] / "models" / "prompts"


def test_score_from_logit_keeps_headroom_where_the_probability_saturates():
    # p(abnormal) of a logit of 8 is 0.9997; the score leaves room above it
    assert score_from_logit(0.0) == pytest.approx(0.5)
    assert 0.85 < score_from_logit(8.0) < 0.9
    assert score_from_logit(12.0) > score_from_logit(8.0)  # still ordered, still below 1
    assert score_from_logit(-8.0) == pytest.approx(1 - score_from_logit(8.0))


def test_good_parts_near_the_top_leave_reject_reachable_and_report_the_overlap():
    rng = np.random.default_rng(0)
    good = rng.uniform(0.97, 0.999, 64)  # a product whose good parts all score near the top
    defective = np.concatenate([rng.uniform(0.97, 0.999, 24), [0.9995, 0.9999]])
    row = calibrate_product(
        "screw", good, 0.98, 0.25, check_normal=good[:16], check_defective=defective
    )
    assert row.warn < row.reject < 1.0  # never pinned at 1.0
    assert row.reject > good.max()  # no good part rejected
    assert row.reject_rate > 0  # the two clearly higher parts are rejected: reject is reachable
    assert row.overlap > 0.5 and row.flagged  # most defective parts score like good ones
    assert row.false_alarm_rate <= 0.1


def test_a_separable_product_is_not_flagged():
    good = np.linspace(0.3, 0.5, 64)
    row = calibrate_product(
        "pill", good, 0.98, 0.25, check_normal=[0.35, 0.4], check_defective=[0.7, 0.8, 0.9, 0.45]
    )
    assert row.overlap == 0.25 and not row.flagged
    assert row.recall == 0.75


def test_pixel_threshold_is_a_high_quantile_of_good_maps_with_a_floor():
    quiet = [np.full((16, 16), 0.001, np.float32) for _ in range(8)]
    assert pixel_threshold_from_normal_maps(quiet) == REGION_FLOOR
    busy = [np.full((16, 16), 0.03, np.float32) for _ in range(8)]
    busy[0][0, 0] = 0.5  # one hot pixel among 2048 does not set the threshold
    assert pixel_threshold_from_normal_maps(busy) == pytest.approx(0.03, abs=1e-6)
    with pytest.raises(ValueError, match="at least 8"):
        pixel_threshold_from_normal_maps(quiet[:3])


def test_region_cut_gives_every_flagged_frame_with_a_peak_a_region():
    assert region_cut(0.4, 0.05, flagged=True) == pytest.approx(RELATIVE_REGION * 0.4)
    assert region_cut(0.06, 0.05, flagged=True) == 0.05  # the product threshold when higher
    assert region_cut(0.04, 0.05, flagged=True) == pytest.approx(
        max(REGION_FLOOR, RELATIVE_REGION * 0.04)
    )  # under it: the pixels near the peak
    assert region_cut(0.04, 0.05, flagged=False) is None  # an ok frame gets none
    assert region_cut(0.001, 0.05, flagged=True) is None  # a flat map has no peak


def test_sources_setting_then_calibrated_then_global():
    cal = {"pill": (0.6, 0.7)}
    assert resolve_with_source("pill", {"pill": (0.1, 0.2)}, cal, (0.5, 0.8), "v1") == (
        (0.1, 0.2),
        "setting",
    )
    assert resolve_with_source("pill", {}, cal, (0.5, 0.8), "v1") == ((0.6, 0.7), "calibrated:v1")
    assert resolve_with_source("wood", {}, cal, (0.5, 0.8), "v1") == ((0.5, 0.8), "global")
    assert resolve_region_threshold("pill", 0.3, {"pill": 0.04}, "v1") == (0.3, "setting")
    assert resolve_region_threshold("pill", None, {"pill": 0.04}, "v1") == (0.04, "calibrated:v1")
    assert resolve_region_threshold("wood", None, {"pill": 0.04}, "v1") == (
        DEFAULT_REGION_THRESHOLD,
        "global",
    )


def test_thresholds_file_keeps_region_thresholds_overlap_and_flags(tmp_path):
    write_thresholds(
        tmp_path,
        {"pill": (0.4, 0.7), "screw": (0.8, 0.9)},
        {"n_normal": {"pill": 64, "screw": 64}, "overlap": {"screw": 0.8}, "flagged": ["screw"]},
        region={"pill": 0.04, "screw": 0.05},
    )
    write_thresholds(  # recalibrating screw alone keeps pill and clears screw's flag
        tmp_path,
        {"screw": (0.7, 0.8)},
        {"n_normal": {"screw": 64}, "overlap": {"screw": 0.2}, "flagged": []},
        region={"screw": 0.06},
    )
    doc = json.loads((tmp_path / THRESHOLDS_FILE).read_text())
    assert doc["_meta"]["score"] == SCORE
    assert read_thresholds(tmp_path) == {"pill": (0.4, 0.7), "screw": (0.7, 0.8)}
    assert read_region_thresholds(tmp_path) == {"pill": 0.04, "screw": 0.06}
    meta = read_thresholds_meta(tmp_path)
    assert meta["flagged"] == [] and meta["overlap"] == {"screw": 0.2}


def test_a_file_on_the_former_score_is_ignored_out_loud(tmp_path, caplog):
    (tmp_path / THRESHOLDS_FILE).write_text(
        '{"pill": [0.97, 1.0], "_meta": {"method": "normal-quantile"}}'
    )
    with caplog.at_level(logging.WARNING, logger="qc_stream.dapo.thresholds"):
        assert read_thresholds(tmp_path) == {} and read_region_thresholds(tmp_path) == {}
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert str(tmp_path / THRESHOLDS_FILE) in warning.getMessage()
    assert "qc-stream models calibrate" in warning.getMessage()


def test_no_shipped_version_carries_thresholds_on_another_score():
    """A shipped DAPO version is calibrated on the current score (never left to the global pair by
    a stale file); the agnostic baselines are eval-only and carry no thresholds."""
    versions = [d for d in sorted(SHIPPED.iterdir()) if (d / "manifest.json").is_file()]
    assert versions
    for d in versions:
        method = json.loads((d / "manifest.json").read_text())["method"]
        if method == "dapo":
            assert read_thresholds_meta(d).get("score") == SCORE, d.name
            pairs = read_thresholds(d)
            assert pairs and all(w < r < 1.0 for w, r in pairs.values()), d.name  # both reachable
            assert read_region_thresholds(d), d.name
        else:
            assert not (d / THRESHOLDS_FILE).exists(), d.name
