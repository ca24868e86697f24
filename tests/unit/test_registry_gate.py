"""The retrain promotion gate (pure)."""

from qc_stream.registry.gate import decide

ACTIVE = {
    "image_auroc": 0.80,
    "image_ap": 0.85,
    "pixel_auroc": 0.90,
    "pixel_aupro": 0.70,
    "type_f1": 0.40,
}


def test_equal_or_better_is_promoted():
    assert decide(dict(ACTIVE), ACTIVE, 0.02).promote
    assert decide({**ACTIVE, "image_auroc": 0.95}, ACTIVE, 0.02).promote


def test_small_drop_within_tolerance_is_promoted():
    assert decide({**ACTIVE, "pixel_auroc": 0.885}, ACTIVE, 0.02).promote


def test_regression_beyond_tolerance_is_refused_with_reason():
    d = decide({**ACTIVE, "pixel_aupro": 0.60, "type_f1": 0.10}, ACTIVE, 0.02)
    assert not d.promote
    assert any(r.startswith("pixel_aupro 0.600 < active 0.700") for r in d.reasons)
    assert any(r.startswith("type_f1") for r in d.reasons)


def test_nan_candidate_metric_is_a_regression_but_nan_active_metric_is_skipped():
    assert not decide({**ACTIVE, "image_ap": float("nan")}, ACTIVE, 0.02).promote
    assert decide({**ACTIVE, "type_f1": 0.0}, {**ACTIVE, "type_f1": float("nan")}, 0.02).promote


def test_divergence_and_first_version():
    assert not decide(ACTIVE, ACTIVE, 0.02, diverged="loss is nan").promote
    assert decide(ACTIVE, None, 0.02).promote
    assert not decide({k: float("nan") for k in ACTIVE}, None, 0.02).promote


def test_candidate_without_any_finite_metric_is_refused_even_when_active_has_none():
    nan = {k: float("nan") for k in ACTIVE}
    d = decide(nan, nan, 0.02)
    assert not d.promote and d.reasons == ["the candidate produced no finite holdout metric"]
    assert decide(
        {**nan, "pixel_auroc": 0.5}, nan, 0.02
    ).promote  # nothing to defend, something measured
