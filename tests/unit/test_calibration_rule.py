"""Calibration, the pure parts: the threshold rule on hand-made scores, precedence, thresholds.json."""

import json

import numpy as np
import pytest

from qc_stream.dapo.thresholds import SCORE, THRESHOLDS_FILE, read_thresholds, write_thresholds
from qc_stream.domain.thresholds import (
    REJECT_CAP,
    resolve_thresholds,
    thresholds_from_normal_scores,
)
from qc_stream.registry.calibration import calibrate_product, flag_rate


def test_warn_is_the_quantile_and_reject_the_max_plus_margin_in_logits():
    scores = np.linspace(0.0, 0.5, 101)  # 0.000, 0.005, ..., 0.5
    warn, reject = thresholds_from_normal_scores(scores, quantile=0.9, margin=0.1)
    assert warn == pytest.approx(0.45)
    assert reject == pytest.approx(1 / (1 + np.exp(-0.1)))  # logit(0.5) + 0.1
    assert np.mean(scores >= warn) == pytest.approx(0.11, abs=0.01)  # ~1 - q of good parts warned


def test_high_normal_scores_still_leave_reject_reachable_above_every_good_part():
    scores = [0.9] * 9 + [0.99]
    warn, reject = thresholds_from_normal_scores(scores, quantile=0.98, margin=0.25)
    assert 0.9 < warn < reject < 1.0 and reject <= REJECT_CAP
    assert reject > max(scores)  # no good part is rejected, and a higher score can be


def test_identical_scores_and_margin_zero_give_warn_equal_reject():
    assert thresholds_from_normal_scores([0.3] * 10, quantile=0.98, margin=0.0) == (0.3, 0.3)


@pytest.mark.parametrize(
    "scores, kw, match",
    [
        ([0.1] * 7, {}, "at least 8"),
        ([0.1] * 9 + [float("nan")], {}, "finite"),
        ([0.1] * 10, {"quantile": 0.2}, "quantile"),
        ([0.1] * 10, {"margin": -0.1}, "margin"),
    ],
)
def test_bad_inputs_are_refused(scores, kw, match):
    with pytest.raises(ValueError, match=match):
        thresholds_from_normal_scores(scores, **kw)


def test_precedence_explicit_then_calibrated_then_global():
    explicit, calibrated, default = (
        {"pill": (0.4, 0.7)},
        {"pill": (0.9, 0.95), "wood": (0.6, 0.9)},
        (0.5, 0.8),
    )
    assert resolve_thresholds("pill", explicit, calibrated, default) == (0.4, 0.7)
    assert resolve_thresholds("wood", explicit, calibrated, default) == (0.6, 0.9)
    assert resolve_thresholds("screw", explicit, calibrated, default) == (0.5, 0.8)
    assert resolve_thresholds(None, explicit, calibrated, default) == (0.5, 0.8)


def test_calibrate_product_reports_flag_rates_on_the_check_scores():
    row = calibrate_product(
        "wood",
        np.linspace(0.5, 0.7, 50),
        0.98,
        0.2,
        check_normal=[0.55, 0.6, 0.72, 0.75],
        check_defective=[0.9, 0.71, 0.2, 0.8],
        global_thresholds=(0.5, 0.8),
    )
    assert row.warn == pytest.approx(0.696, abs=1e-3)
    assert row.reject == pytest.approx(1 / (1 + np.exp(-(np.log(0.7 / 0.3) + 0.2))))  # ~0.74
    assert row.false_alarm_rate == 0.5 and row.global_false_alarm_rate == 1.0
    assert row.recall == 0.75 and row.global_recall == 0.75
    assert row.reject_rate == 0.5  # 0.9 and 0.8 reach reject
    assert row.overlap == 0.25 and not row.flagged
    assert np.isnan(flag_rate([], (0.5, 0.8)))


def test_thresholds_file_round_trip_merges_products(tmp_path):
    write_thresholds(tmp_path, {"pill": (0.4, 0.7)}, {"n_normal": {"pill": 64}})
    write_thresholds(tmp_path, {"wood": (0.6, 0.9)}, {"n_normal": {"wood": 32}})
    doc = json.loads((tmp_path / THRESHOLDS_FILE).read_text())
    assert doc["pill"] == [0.4, 0.7] and doc["wood"] == [0.6, 0.9]
    assert (
        doc["_meta"]["n_normal"] == {"pill": 64, "wood": 32}
        and doc["_meta"]["method"]
        and doc["_meta"]["created_at"]
    )
    assert read_thresholds(tmp_path) == {"pill": (0.4, 0.7), "wood": (0.6, 0.9)}


META = ', "_meta": ' + json.dumps({"score": SCORE})


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        '{"pill": [0.9, 0.1]' + META + "}",
        '{"pill": 3' + META + "}",
        "[1, 2]",
        '{"pill": [0.4, 0.7]}',  # no score scale: calibrated on the old saturating score
        '{"pill": [0.4, 0.7], "_meta": {"score": "probability"}}',
    ],
)
def test_a_broken_or_stale_thresholds_file_is_ignored(tmp_path, text):
    (tmp_path / THRESHOLDS_FILE).write_text(text)
    assert read_thresholds(tmp_path) == {}
    assert read_thresholds(tmp_path / "missing") == {}
