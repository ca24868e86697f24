"""Regions from the shipped model on a defective synthetic frame: they overlap the true defect
mask, and every region field travels through qc.results JSON into the inspections table.

Real parts: the shipped CPU backbone and active prompt version, the synthetic generator's mask,
the codec, and the repository on Postgres and SQLite.
"""

from datetime import UTC, datetime

import numpy as np
import pytest
from PIL import Image

from qc_stream.domain.inspection import FrameMeta, InspectionResult
from qc_stream.evaluation.regions import frame_region_scores, region_mask
from qc_stream.settings import load_settings
from qc_stream.storage import migrate
from qc_stream.storage.db import make_engine
from qc_stream.storage.inspections import InspectionRepository
from qc_stream.synth import generate
from qc_stream.wire.codec import result_from_json, result_to_json

# wood, seed 7002: a hole the shipped model sees clearly (map peak ~0.47 on the map scale)
PRODUCT, SEED, INDEX = "wood", 7002, 2


@pytest.fixture(scope="module")
def detection():
    from qc_stream.inference.detector import Detector

    # The frame is flagged whatever the calibration says, so the test is about regions only.
    settings = load_settings(device="cpu", thresholds='{"wood": [0.0, 0.999]}')
    detector = Detector.from_settings(settings)
    sample = list(generate(PRODUCT, n=16, seed=SEED, size=256, defect_rate=1.0))[INDEX]
    assert sample.defect_type is not None
    (out,) = detector.detect([Image.fromarray(sample.image)], [PRODUCT])
    return detector, sample, out


def test_a_defective_frame_gets_a_region_on_its_defect(detection):
    _, sample, out = detection
    regions = out.detection.regions
    assert regions, "a flagged frame whose map has a peak must carry a region"
    hit, iou = frame_region_scores(regions, sample.mask)
    assert hit and iou > 0.1
    top = regions[0]
    assert region_mask(top, sample.mask.shape).sum() > 0
    assert top.defect_type in out.detection.defect_probs  # one of the product's candidate words
    assert 0 < top.mean_score <= top.score and top.centroid is not None and len(top.outline) >= 3
    t = out.detection.thresholds
    assert (t.warn, t.reject, t.source) == (0.0, 0.999, "setting")
    assert t.region_source.startswith(("calibrated:", "global"))


@pytest.fixture(params=["postgres", "sqlite"])
def db_url(request):
    url = request.getfixturevalue("pg_url" if request.param == "postgres" else "sqlite_url")
    migrate.upgrade(url)
    return url


def test_region_fields_travel_through_qc_results_into_the_database(detection, db_url):
    detector, _, out = detection
    meta = FrameMeta(
        frame_id="f-region-1",
        camera_id="cam-1",
        line_id="line-1",
        product=PRODUCT,
        captured_at=datetime.now(UTC),
    )
    result = InspectionResult.from_detection(
        meta,
        out.detection,
        thresholds=out.thresholds,
        model_version=detector.model_version,
        prompt_version=detector.prompt_version,
        latency_ms=1.0,
    )
    wire = result_from_json(result_to_json(result))
    assert wire.regions == result.regions and wire.thresholds == result.thresholds
    assert wire.candidate_words == list(out.detection.defect_probs)

    engine = make_engine(db_url)
    try:
        repo = InspectionRepository(engine)
        assert repo.record(wire) is True
        stored = repo.get("f-region-1")
    finally:
        engine.dispose()
    assert stored.regions == result.regions  # bbox, area, centroid, outline, type, peak and mean
    assert stored.thresholds == result.thresholds  # the verdict explains itself in the table too
    assert stored.thresholds.source == "setting" and stored.candidate_words == wire.candidate_words
    r = stored.regions[0]
    assert r.outline and r.centroid and r.mean_score is not None
    assert np.isfinite(r.score)
