"""Two workers share qc.frames; one is SIGKILLed mid-stream; the other takes over its partitions.

Delivery is at-least-once (frames of the killed worker's uncommitted batches come again), the
database must still hold every frame exactly once and the root-cause counts must be exact.
Real broker (its own, so qc.frames holds only this test's frames), real Postgres, real workers.
"""

from __future__ import annotations

import time
import urllib.request
from collections import Counter

import pytest
from sqlalchemy import func, select

from qc_stream.devtools.broker import EmbeddedBroker, free_port
from qc_stream.devtools.local import (
    WorkerProcess,
    read_topic,
    wait_for_rows,
    worker_env,
)
from qc_stream.producers.camera import run_camera
from qc_stream.producers.producer import FrameProducer
from qc_stream.settings import load_settings
from qc_stream.storage.db import make_engine
from qc_stream.storage.inspections import InspectionRepository
from qc_stream.storage.migrate import upgrade
from qc_stream.storage.orm import DefectCountRow, InspectionRow
from qc_stream.synth.source import synthetic
from qc_stream.wire.codec import headers_to_meta, result_from_json
from qc_stream.wire.topics import FRAMES, RESULTS, ensure_topics

N_CAMERAS, PER_CAMERA = 8, 30


pytestmark = pytest.mark.usefixtures("untrained_models")


N = N_CAMERAS * PER_CAMERA


def ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
            return r.status == 200
    except OSError:
        return False


def test_sigkill_one_of_two_workers_loses_nothing_and_counts_nothing_twice(
    pg_url, unique_app_id, tmp_path
):
    upgrade(pg_url)
    repo = InspectionRepository(make_engine(pg_url))
    with EmbeddedBroker() as broker:
        ensure_topics(broker.bootstrap, 4)
        ports = [free_port(), free_port()]
        workers = [
            WorkerProcess(
                worker_env(
                    broker.bootstrap,
                    pg_url,
                    app_id=unique_app_id,
                    QC_BACKBONE="qc-test-tiny",
                    QC_BATCH_SIZE=8,
                    QC_HEALTH_PORT=port,
                ),
                tmp_path / f"worker{i}.log",
            )
            for i, port in enumerate(ports)
        ]
        try:
            deadline = time.monotonic() + 90
            while not all(ready(p) for p in ports):
                assert time.monotonic() < deadline, "workers not ready:\n" + "\n".join(
                    w.log_tail() for w in workers
                )
                time.sleep(0.3)
            time.sleep(1.0)  # let the second join's rebalance settle: both hold partitions

            producer = FrameProducer(load_settings(kafka_bootstrap=broker.bootstrap))
            for c in range(N_CAMERAS):
                product = ("pill", "screw", "wood", "tile")[c % 4]
                run_camera(
                    producer,
                    synthetic(product, count=PER_CAMERA, defect_rate=0.4, seed=c),
                    camera_id=f"cam-{c}",
                    line_id=f"line-{c % 2}",
                    product=product,
                )
            producer.close()
            sent = {
                headers_to_meta(r.headers).frame_id
                for r in read_topic(broker.bootstrap, FRAMES, expected=N)
            }
            assert len(sent) == N

            wait_for_rows(repo, N // 4, 120, workers=workers, poll_s=0.05)
            workers[0].kill()  # mid-stream: a crash, no commit, no LeaveGroup
            assert wait_for_rows(repo, N, 120, workers=workers[1:]) == N
            time.sleep(
                2.0
            )  # replays of the killed worker's batches would land now; they must not count
            results = [
                result_from_json(r.value)
                for r in read_topic(broker.bootstrap, RESULTS, timeout_s=3)
            ]
        finally:
            for w in workers:
                w.stop()

    with repo.engine.connect() as c:
        stored = c.execute(select(InspectionRow.frame_id)).scalars().all()
        totals = c.execute(
            select(
                func.sum(DefectCountRow.frames),
                func.sum(DefectCountRow.warn),
                func.sum(DefectCountRow.reject),
            )
        ).one()
        verdicts = Counter(c.execute(select(InspectionRow.verdict)).scalars().all())
    assert len(stored) == N and set(stored) == sent  # none lost, none twice
    assert tuple(totals) == (N, verdicts["warn"], verdicts["reject"])  # counts exact
    assert {r.frame_id for r in results} == sent  # every result published (some possibly twice)
