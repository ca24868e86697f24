"""A real worker on the embedded broker and Postgres keeps frames for review: every warn/reject and
the hash-chosen sample of ok frames land in the frame store (bytes as sent + an overlay PNG) with a
``retained_frames`` row each; a frame store that is gone does not stop inspection."""

from __future__ import annotations

import time

import pytest
from PIL import Image
from sqlalchemy import select

from qc_stream.devtools.local import (
    WorkerProcess,
    wait_for_rows,
    worker_env,
)
from qc_stream.producers.camera import run_camera
from qc_stream.producers.producer import FrameProducer
from qc_stream.settings import load_settings
from qc_stream.storage.db import make_engine
from qc_stream.storage.frame_store import keeps
from qc_stream.storage.inspections import InspectionRepository
from qc_stream.storage.migrate import upgrade
from qc_stream.storage.orm import InspectionRow, RetainedFrameRow
from qc_stream.synth.source import synthetic

TINY = {"QC_BACKBONE": "qc-test-tiny", "QC_BATCH_SIZE": "8"}


pytestmark = pytest.mark.usefixtures("untrained_models")


# own_broker (tests/conftest.py) creates the topics with this many partitions.
OWN_BROKER_PARTITIONS = 4


def send(bootstrap: str, n: int) -> None:
    producer = FrameProducer(load_settings(kafka_bootstrap=bootstrap))
    run_camera(
        producer,
        synthetic("pill", count=n, defect_rate=0.5, seed=7),
        camera_id="cam-r",
        line_id="line-r",
        product="pill",
    )
    producer.close()


def run_worker(tmp_path, bootstrap, pg_url, app_id, store, n, **extra):
    upgrade(pg_url)
    w = WorkerProcess(
        worker_env(bootstrap, pg_url, app_id=app_id, QC_FRAME_STORE_DIR=store, **TINY, **extra),
        tmp_path / "worker.log",
    )
    try:
        send(bootstrap, n)
        repo = InspectionRepository(make_engine(pg_url))
        assert wait_for_rows(repo, n, 120, workers=[w]) == n
        time.sleep(0.5)
    finally:
        w.stop()
    return repo.engine, (tmp_path / "worker.log").read_text()


def test_worker_keeps_flagged_and_sampled_frames_with_overlays(
    tmp_path, own_broker, pg_url, unique_app_id
):
    store = tmp_path / "frames"
    store.mkdir()
    engine, _ = run_worker(
        tmp_path, own_broker.bootstrap, pg_url, unique_app_id, store, 12, QC_REVIEW_SAMPLE_OK="0.5"
    )
    with engine.connect() as c:
        inspections = dict(c.execute(select(InspectionRow.frame_id, InspectionRow.verdict)).all())
        retained = {r.frame_id: r for r in c.execute(select(RetainedFrameRow)).all()}
    assert len(inspections) == 12
    expected = {f for f, verdict in inspections.items() if keeps(verdict, f, 0.5)}
    assert expected, "the sample chose no frame: pick another seed"
    assert set(retained) == expected
    for row in retained.values():
        frame = store / row.path
        assert frame.is_file() and frame.stat().st_size > 0
        assert Image.open(frame).size[0] > 0  # the bytes as the camera sent them
        assert row.overlay_path and Image.open(store / row.overlay_path).format == "PNG"
        assert row.size_bytes >= frame.stat().st_size
        assert row.thresholds["source"] and 0 <= row.thresholds["warn"] <= row.thresholds["reject"]


def test_missing_frame_store_does_not_stop_inspection(tmp_path, own_broker, pg_url, unique_app_id):
    engine, log = run_worker(
        tmp_path,
        own_broker.bootstrap,
        pg_url,
        unique_app_id,
        tmp_path / "gone",
        8,
        QC_REVIEW_SAMPLE_OK="1",
    )
    with engine.connect() as c:
        assert len(c.execute(select(InspectionRow.frame_id)).all()) == 8
        assert c.execute(select(RetainedFrameRow.frame_id)).all() == []
    assert "not kept for review" in log
