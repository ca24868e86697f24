"""A real worker subprocess against faults: a record too large even to dead-letter whole, and its
database going away mid-stream. Real embedded broker (tansu), a private Postgres cluster started
for the test (stopping it harms nothing else), the tiny random-weights backbone.
"""

from __future__ import annotations

import hashlib
import threading
import time
import urllib.error
import urllib.request
from collections import Counter

import pytest
from kafka import KafkaProducer
from sqlalchemy import func, select

from qc_stream.devtools.broker import free_port
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
from qc_stream.wire.codec import header_value, result_from_json
from qc_stream.wire.topics import DEADLETTER, FRAMES, RESULTS
from tests.support.servers import private_postgres

TINY = {"QC_BACKBONE": "qc-test-tiny", "QC_BATCH_SIZE": "8"}


pytestmark = pytest.mark.usefixtures("untrained_models")


# own_broker (tests/conftest.py) creates the topics with this many partitions.
OWN_BROKER_PARTITIONS = 2


def probe(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError as e:
        return 0, str(e)


def wait_ready(port: int, worker: WorkerProcess, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while probe(port, "/readyz")[0] != 200:
        assert worker.alive and time.monotonic() < deadline, worker.log_tail()
        time.sleep(0.3)


def send_frames(bootstrap: str, camera: str, count: int, fps: float | None = None) -> int:
    producer = FrameProducer(load_settings(kafka_bootstrap=bootstrap))
    try:
        stats = run_camera(
            producer,
            synthetic("pill", count=count, defect_rate=0.3, seed=len(camera)),
            camera_id=camera,
            line_id="line-1",
            product="pill",
            fps=fps,
        )
    finally:
        producer.close()
    return stats.sent


def test_a_20mb_record_is_dead_lettered_truncated_and_the_worker_goes_on(
    own_broker, sqlite_url, unique_app_id, tmp_path
):
    upgrade(sqlite_url)
    port = free_port()
    env = worker_env(
        own_broker.bootstrap, sqlite_url, app_id=unique_app_id, QC_HEALTH_PORT=port, **TINY
    )
    worker = WorkerProcess(env, tmp_path / "worker.log")
    try:
        wait_ready(port, worker)
        # 20 MB: over the worker's 16 MiB request limit, so its dead letter cannot copy it whole.
        # The test's producer raises its own limit to send it (the broker takes up to 30 MB).
        huge = hashlib.sha256(b"seed").digest() * (20 * 1024 * 1024 // 32)
        raw = KafkaProducer(
            bootstrap_servers=own_broker.bootstrap, max_request_size=25 * 1024 * 1024
        )
        frame_headers = [
            ("frame_id", b"huge-1"),
            ("camera_id", b"cam-h"),
            ("line_id", b"line-1"),
            ("product", b"pill"),
            ("captured_at", b"2026-11-30T00:00:00+00:00"),
        ]
        raw.send(FRAMES, key=b"cam-h", value=huge, headers=frame_headers).get(30)
        raw.close()
        assert send_frames(own_broker.bootstrap, "cam-after", 5) == 5

        [dead] = read_topic(own_broker.bootstrap, DEADLETTER, expected=1, timeout_s=90)
        limit = load_settings().deadletter_max_bytes
        assert dead.value == huge[:limit]
        assert header_value(dead.headers, "original_size") == str(len(huge))
        assert header_value(dead.headers, "original_sha256") == hashlib.sha256(huge).hexdigest()
        assert header_value(dead.headers, "truncated") == "true"
        assert header_value(dead.headers, "frame_id") == "huge-1"
        assert "exceeds QC_MAX_FRAME_BYTES" in header_value(dead.headers, "error")

        repo = InspectionRepository(make_engine(sqlite_url))
        assert wait_for_rows(repo, 5, 60, workers=[worker]) == 5
        assert worker.alive, worker.log_tail()
    finally:
        assert worker.stop() == 0, worker.log_tail()


OUTAGE_S = 10.0


def test_a_postgres_outage_is_waited_out_without_losing_or_double_counting(
    own_broker, unique_app_id, tmp_path
):
    pg = private_postgres(tmp_path / "pg")
    try:
        url = pg.admin_url
        upgrade(url)
        port = free_port()
        env = worker_env(
            own_broker.bootstrap,
            url,
            app_id=unique_app_id,
            QC_HEALTH_PORT=port,
            QC_WORKER_RETRY_BASE_S="0.2",
            QC_WORKER_RETRY_CAP_S="1",
            **TINY,
        )
        worker = WorkerProcess(env, tmp_path / "worker.log")
        try:
            wait_ready(port, worker)
            repo = InspectionRepository(make_engine(url))
            assert send_frames(own_broker.bootstrap, "cam-before", 30) == 30
            assert wait_for_rows(repo, 30, 60, workers=[worker]) == 30

            # Frames keep coming at 10 fps from before the outage to after it.
            sent: list[int] = []
            camera = threading.Thread(
                target=lambda: sent.append(
                    send_frames(own_broker.bootstrap, "cam-during", 150, fps=10)
                )
            )
            camera.start()
            time.sleep(2)
            stored_before = repo.count()
            pg.stop()
            down_at = time.monotonic()
            seen_not_ready = None
            while time.monotonic() - down_at < OUTAGE_S:
                code, body = probe(port, "/readyz")
                if code == 503 and "database" in body:
                    seen_not_ready = body
                    assert probe(port, "/healthz")[0] == 200  # retrying, not stuck
                assert worker.alive, worker.log_tail()
                time.sleep(0.5)
            assert seen_not_ready, "readyz never reported the database outage"
            pg.start()
            back_at = time.monotonic()
            while repo.count() <= stored_before:  # the held batches go in first
                assert worker.alive and time.monotonic() - back_at < 60, worker.log_tail()
                time.sleep(0.1)
            resumed_s = time.monotonic() - back_at
            camera.join(60)
            assert sent == [150]
            total = 30 + 150
            # Recovery: the row count catches up and the worker is ready again.
            assert wait_for_rows(repo, total, 90, workers=[worker]) == total
            recovered_s = time.monotonic() - back_at
            deadline = time.monotonic() + 30
            while probe(port, "/readyz")[0] != 200:
                assert time.monotonic() < deadline, probe(port, "/readyz")
                time.sleep(0.3)
        finally:
            assert worker.stop() == 0, worker.log_tail()

        log_lines = worker.log_path.read_text(errors="replace").splitlines()
        assert any("database recovered after" in ln for ln in log_lines), worker.log_tail()
        # One line per repeating condition per 10 s, not one per attempt.
        assert sum("database unavailable" in ln for ln in log_lines) <= 3, worker.log_tail()
        with repo.engine.connect() as c:
            ids = [r[0] for r in c.execute(select(InspectionRow.frame_id))]
            counted = c.execute(select(func.sum(DefectCountRow.frames))).scalar_one()
        assert len(ids) == total and len(set(ids)) == total  # none lost, none stored twice
        assert counted == total  # per-minute counts agree with the rows
        results = Counter(
            result_from_json(r.value).frame_id
            for r in read_topic(own_broker.bootstrap, RESULTS, expected=total, timeout_s=30)
        )
        assert set(results) == set(ids)  # every stored frame published (at least once)
        print(
            f"\npostgres outage {OUTAGE_S:.0f} s: sent {total}, stored {len(ids)}, "
            f"duplicate rows {len(ids) - len(set(ids))}, duplicate results "
            f"{sum(n - 1 for n in results.values())}; storing again {resumed_s:.1f} s after the "
            f"restart, all stored after {recovered_s:.1f} s (the camera runs until then)"
        )
    finally:
        pg.close()


GRACE_S = 8


def test_with_the_broker_down_readyz_names_the_consumer_logs_stay_quiet_and_sigterm_exits(
    own_broker, sqlite_url, unique_app_id, tmp_path
):
    upgrade(sqlite_url)
    port = free_port()
    env = worker_env(
        own_broker.bootstrap,
        sqlite_url,
        app_id=unique_app_id,
        QC_HEALTH_PORT=port,
        QC_WORKER_SHUTDOWN_GRACE_S=GRACE_S,
        **TINY,
    )
    worker = WorkerProcess(env, tmp_path / "worker.log")
    try:
        wait_ready(port, worker)
        assert send_frames(own_broker.bootstrap, "cam-1", 5) == 5
        repo = InspectionRepository(make_engine(sqlite_url))
        assert wait_for_rows(repo, 5, 60, workers=[worker]) == 5
        lines_before = len(worker.log_path.read_text().splitlines())
        own_broker.kill()
        down_at = time.monotonic()
        code, body = probe(port, "/readyz")
        while not (code == 503 and "consumer" in body):
            assert time.monotonic() - down_at < 30, (code, body)
            time.sleep(0.5)
            code, body = probe(port, "/readyz")
        assert probe(port, "/healthz")[0] == 200
        while time.monotonic() - down_at < 12:  # long enough for a flood to show
            assert worker.alive, worker.log_tail()
            time.sleep(0.5)
        flood = worker.log_path.read_text().splitlines()[lines_before:]
        print(f"\nbroker down 12 s: {len(flood)} log lines")
        # Unlimited, the Kafka client logs ~100 lines a second here; limited, a few per 10 s.
        assert len(flood) < 40, "\n".join(flood[-40:])
    finally:
        # SIGTERM with no broker: a clean stop cannot leave the group, the grace bounds it.
        t0 = time.monotonic()
        rc = worker.stop(timeout_s=GRACE_S + 10)
        print(f"SIGTERM with the broker down: exit {rc} after {time.monotonic() - t0:.1f} s")
    assert rc == 0, worker.log_tail()


def test_sigterm_while_a_database_outage_is_retried_exits_and_loses_nothing(
    own_broker, unique_app_id, tmp_path
):
    pg = private_postgres(tmp_path / "pg")
    try:
        upgrade(pg.admin_url)
        port = free_port()
        env = worker_env(
            own_broker.bootstrap,
            pg.admin_url,
            app_id=unique_app_id,
            QC_HEALTH_PORT=port,
            QC_WORKER_SHUTDOWN_GRACE_S=GRACE_S,
            **TINY,
        )
        worker = WorkerProcess(env, tmp_path / "worker-1.log")
        wait_ready(port, worker)
        repo = InspectionRepository(make_engine(pg.admin_url))
        assert send_frames(own_broker.bootstrap, "cam-1", 10) == 10
        assert wait_for_rows(repo, 10, 60, workers=[worker]) == 10
        pg.stop()
        assert send_frames(own_broker.bootstrap, "cam-2", 10) == 10
        deadline = time.monotonic() + 30
        while "database" not in probe(port, "/readyz")[1]:
            assert time.monotonic() < deadline, worker.log_tail()
            time.sleep(0.3)
        t0 = time.monotonic()
        assert worker.stop(timeout_s=GRACE_S + 10) == 0, worker.log_tail()
        print(f"\nSIGTERM during a database outage: exit after {time.monotonic() - t0:.1f} s")
        assert "left unacked, it will be replayed" in worker.log_tail()

        pg.start()
        replacement = WorkerProcess(env, tmp_path / "worker-2.log")
        try:
            assert wait_for_rows(repo, 20, 90, workers=[replacement]) == 20
        finally:
            assert replacement.stop() == 0, replacement.log_tail()
        with repo.engine.connect() as c:
            ids = [r[0] for r in c.execute(select(InspectionRow.frame_id))]
            counted = c.execute(select(func.sum(DefectCountRow.frames))).scalar_one()
        assert len(ids) == 20 == len(set(ids)) == counted
    finally:
        pg.close()


def test_forged_model_updates_are_refused_by_a_running_worker(
    own_broker, pg_url, unique_app_id, tmp_path, monkeypatch
):
    from qc_stream.registry.events import EventPublisher
    from tests.integration.test_registry_versions import make_models_dir, seed_version

    # not the module's untrained opt-in: this worker runs the ACTIVE version
    monkeypatch.delenv("QC_PROMPT_VERSION")
    upgrade(pg_url)
    (tmp_path / "served").mkdir()
    (tmp_path / "elsewhere").mkdir()
    models = make_models_dir(tmp_path / "served")
    served = seed_version(models)  # active on disk, never registered: the worker starts on it
    elsewhere = make_models_dir(tmp_path / "elsewhere")
    evil_path = elsewhere / "prompts" / seed_version(elsewhere, words=("evil",))
    # A version folder in the worker's own models dir that nobody registered.
    evil_name = seed_version(models, words=("evil",))
    (models / "prompts" / "ACTIVE").write_text(served + "\n")
    port = free_port()
    env = worker_env(
        own_broker.bootstrap,
        pg_url,
        app_id=unique_app_id,
        QC_HEALTH_PORT=port,
        QC_MODELS_DIR=str(models),
        **TINY,
    )
    worker = WorkerProcess(env, tmp_path / "worker.log")
    try:
        wait_ready(port, worker)
        with EventPublisher(own_broker.bootstrap) as pub:
            for forged in (str(evil_path), f"../../elsewhere/models/prompts/{evil_path.name}"):
                assert pub.publish_model_update(forged, "")
            assert pub.publish_model_update(evil_name, "")
        deadline = time.monotonic() + 60
        while True:
            metrics = probe(port, "/metrics")[1]
            if (
                'qc_prompt_swap_refused_total{reason="bad_name"} 2.0' in metrics
                and 'qc_prompt_swap_refused_total{reason="unregistered"} 1.0' in metrics
            ):
                break
            assert time.monotonic() < deadline, metrics[-2000:]
            time.sleep(0.5)
        assert send_frames(own_broker.bootstrap, "cam-1", 4) == 4
        repo = InspectionRepository(make_engine(pg_url))
        assert wait_for_rows(repo, 4, 60, workers=[worker]) == 4
        assert {r.prompt_version for r in repo.recent(10)} == {served}
        refusals = [
            ln for ln in worker.log_path.read_text().splitlines() if "refused model update" in ln
        ]
        assert len(refusals) == 3, "\n".join(refusals)
    finally:
        assert worker.stop() == 0, worker.log_tail()
