from datetime import UTC, datetime

from qc_stream.domain.inspection import (
    Detection,
    FrameMeta,
    InspectionResult,
    Verdict,
    decide_verdict,
)


def test_verdict_thresholds_are_inclusive():
    assert decide_verdict(0.49, 0.5, 0.8) is Verdict.OK
    assert decide_verdict(0.5, 0.5, 0.8) is Verdict.WARN
    assert decide_verdict(0.8, 0.5, 0.8) is Verdict.REJECT


def test_result_from_detection_roundtrips_json():
    frame = FrameMeta(
        frame_id="f1",
        camera_id="c",
        line_id="l",
        product="pill",
        captured_at=datetime(2026, 1, 1, tzinfo=UTC),
    )
    det = Detection(
        anomaly_score=0.9, defect_type="crack", defect_probs={"crack": 0.7, "hole": 0.3}
    )
    r = InspectionResult.from_detection(
        frame, det, thresholds=(0.5, 0.8), model_version="m", prompt_version="p1", latency_ms=12.5
    )
    assert r.verdict is Verdict.REJECT
    assert InspectionResult.model_validate_json(r.model_dump_json()) == r
