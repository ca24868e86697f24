"""A real worker subprocess (``python -m qc_stream.stream.worker``) on the embedded broker, real
Postgres and Redis, the tiny random-weights backbone: frames in -> rows, counts, results, live
status; junk in -> dead letters only, and the worker goes on.

Each test starts its own broker so ``qc.frames`` holds exactly the test's records.
"""

from __future__ import annotations

import io
from collections import Counter

import numpy as np
import pytest
from kafka import KafkaProducer
from PIL import Image
from sqlalchemy import func, select

from qc_stream.devtools.local import (
    WorkerProcess,
    read_topic,
    wait_for_rows,
    worker_env,
)
from qc_stream.producers.camera import run_camera
from qc_stream.producers.producer import FrameProducer
from qc_stream.producers.sources import directory
from qc_stream.settings import load_settings
from qc_stream.storage.cache import Cache
from qc_stream.storage.db import make_engine
from qc_stream.storage.inspections import InspectionRepository
from qc_stream.storage.migrate import upgrade
from qc_stream.storage.orm import DefectCountRow, InspectionRow
from qc_stream.synth.source import synthetic
from qc_stream.wire.codec import header_value, result_from_json
from qc_stream.wire.topics import DEADLETTER, FRAMES, RESULTS

TINY = {"QC_BACKBONE": "qc-test-tiny", "QC_BATCH_SIZE": "8"}


pytestmark = pytest.mark.usefixtures("untrained_models")


# own_broker (tests/conftest.py) creates the topics with this many partitions.
OWN_BROKER_PARTITIONS = 4


@pytest.fixture
def worker_factory(tmp_path):
    started: list[WorkerProcess] = []

    def start(env: dict, name: str = "worker") -> WorkerProcess:
        w = WorkerProcess(env, tmp_path / f"{name}.log")
        started.append(w)
        return w

    yield start
    for w in started:
        w.stop()


def send_synthetic(bootstrap: str, plan: list[tuple[str, str, int]]) -> None:
    producer = FrameProducer(load_settings(kafka_bootstrap=bootstrap))
    for camera, product, n in plan:
        run_camera(
            producer,
            synthetic(product, count=n, defect_rate=0.5, seed=len(camera)),
            camera_id=camera,
            line_id="line-1",
            product=product,
        )
    producer.close()


def test_n_frames_give_n_inspections_results_counts_and_live_status(
    own_broker, pg_url, redis_url, redis_prefix, unique_app_id, worker_factory
):
    upgrade(pg_url)
    w = worker_factory(
        worker_env(
            own_broker.bootstrap,
            pg_url,
            app_id=unique_app_id,
            redis_url=redis_url,
            redis_prefix=redis_prefix,
            **TINY,
        )
    )
    send_synthetic(own_broker.bootstrap, [("cam-a", "pill", 14), ("cam-b", "screw", 10)])
    repo = InspectionRepository(make_engine(pg_url))
    assert wait_for_rows(repo, 24, 120, workers=[w]) == 24

    results = [
        result_from_json(r.value) for r in read_topic(own_broker.bootstrap, RESULTS, expected=24)
    ]
    rows = repo.recent(100)
    assert sorted(r.frame_id for r in results) == sorted(r.frame_id for r in rows)
    assert Counter(r.product for r in rows) == {"pill": 14, "screw": 10}
    assert all(r.prompt_version and r.model_version.startswith("qc-test-tiny@") for r in rows)

    # Root-cause counts agree exactly with the inspections they summarise.
    with repo.engine.connect() as c:
        counts = c.execute(
            select(
                DefectCountRow.product,
                func.sum(DefectCountRow.frames),
                func.sum(DefectCountRow.warn),
                func.sum(DefectCountRow.reject),
            ).group_by(DefectCountRow.product)
        ).all()
        per_verdict = Counter(c.execute(select(InspectionRow.product, InspectionRow.verdict)).all())
    expected = {
        p: (n, per_verdict[(p, "warn")], per_verdict[(p, "reject")])
        for p, n in (("pill", 14), ("screw", 10))
    }
    assert {p: (f, w_, r) for p, f, w_, r in counts} == expected

    cache = Cache(redis_url, redis_prefix, 60)
    status = cache.camera_status("cam-a")
    assert status["product"] == "pill" and status["verdict"] in ("ok", "warn", "reject")
    assert cache.rolling_counts(minutes=5).get("frames") == 24
    assert read_topic(own_broker.bootstrap, DEADLETTER, timeout_s=1) == []


def png(side: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((side, side, 3), 128, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def test_junk_goes_to_dead_letters_with_reason_and_the_worker_goes_on(
    own_broker, sqlite_url, unique_app_id, worker_factory, tmp_path
):
    upgrade(sqlite_url)
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "notes.txt").write_text("not an image")
    (junk / "truncated.png").write_bytes(png(64)[:40])
    (junk / "tiny.png").write_bytes(png(4))
    w = worker_factory(worker_env(own_broker.bootstrap, sqlite_url, app_id=unique_app_id, **TINY))

    producer = FrameProducer(load_settings(kafka_bootstrap=own_broker.bootstrap))
    run_camera(producer, directory(junk), camera_id="cam-j", line_id="line-1", product="pill")
    producer.close()
    raw = KafkaProducer(bootstrap_servers=own_broker.bootstrap)
    raw.send(FRAMES, key=b"cam-z", value=png(64)).get(10)  # no metadata headers at all
    raw.close()

    dead = read_topic(own_broker.bootstrap, DEADLETTER, expected=4, timeout_s=90)
    reasons = {
        header_value(d.headers, "frame_id") or "no-headers": header_value(d.headers, "error")
        for d in dead
    }
    assert len(dead) == 4
    assert sorted(d.value for d in dead) == sorted([b"not an image", png(64)[:40], png(4), png(64)])
    assert "missing header(s): frame_id" in reasons["no-headers"]
    assert sum("image too small" in r for r in reasons.values()) == 1
    assert sum("not a decodable image" in r for r in reasons.values()) == 2
    assert all(header_value(d.headers, "error_stage") in ("headers", "decode") for d in dead)

    # Nothing else was written, and the worker still inspects good frames afterwards.
    repo = InspectionRepository(make_engine(sqlite_url))
    assert repo.count() == 0
    send_synthetic(own_broker.bootstrap, [("cam-g", "pill", 3)])
    assert wait_for_rows(repo, 3, 60, workers=[w]) == 3
    assert len(read_topic(own_broker.bootstrap, RESULTS, timeout_s=3)) == 3


def test_a_worker_without_a_prompt_version_stops_naming_the_train_command(
    broker, sqlite_url, unique_app_id, worker_factory, monkeypatch
):
    """No QC_PROMPT_VERSION (the module's untrained opt-in removed), no ACTIVE, nothing active in
    the database: the worker exits 2 with one line naming `qc-stream train` in its log."""
    import time

    monkeypatch.delenv("QC_PROMPT_VERSION")
    upgrade(sqlite_url)
    w = worker_factory(worker_env(broker.bootstrap, sqlite_url, app_id=unique_app_id, **TINY))
    deadline = time.monotonic() + 120
    while w.alive and time.monotonic() < deadline:
        time.sleep(0.2)
    assert w.proc.returncode == 2, w.log_tail()
    # (Faust, running by then, prefixes what is printed on stderr with its log header)
    errors = [x for x in w.log_tail(200).splitlines() if "error:" in x]
    assert len(errors) == 1, w.log_tail()
    line = errors[0].split("error: ", 1)[1]
    assert line.startswith("no prompt version for backbone qc-test-tiny")
    assert "`qc-stream train --dataset PATH --backbone qc-test-tiny" in line
