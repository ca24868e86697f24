"""The liveness endpoint the Kubernetes probes and compose health checks hit can fail.

Real parts: the worker's HealthServer over HTTP, a real inference thread pool, the worker's Faust
app as run_worker builds it (its heartbeat timer is executed, not mocked). A hung GPU call is
stood in for by a job that blocks the inference thread; a blocked event loop is the timer not
running at all. The limit is a fraction of a second so the test does not wait long; it asserts
outcomes, not speed.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

from qc_stream.observability.heartbeat import InferenceHeartbeat
from qc_stream.observability.server import HealthServer
from qc_stream.settings import load_settings

STALE_S = 0.3


def status(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def wait_past_the_limit() -> None:
    time.sleep(STALE_S * 2)


@pytest.fixture
def pool():
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
    yield executor
    executor.shutdown(wait=False, cancel_futures=True)


def test_healthz_turns_503_when_the_inference_thread_hangs_and_recovers_after(pool):
    with HealthServer(host="127.0.0.1", port=0, stale_after_s=STALE_S) as health:
        heartbeat = InferenceHeartbeat(health, pool)
        heartbeat.tick()
        pool.submit(lambda: None).result()  # the beat ran
        assert status(health.port, "/healthz") == 200
        release = threading.Event()
        pool.submit(release.wait)  # a GPU call that never returns
        for _ in range(4):
            heartbeat.tick()  # the event loop keeps ticking; the beats queue behind the hang
            wait_past_the_limit()
        assert status(health.port, "/healthz") == 503
        assert pool._work_queue.qsize() == 1, "ticks must not pile up beats behind a hang"
        release.set()
        pool.submit(lambda: None).result()
        assert status(health.port, "/healthz") == 200


def test_healthz_turns_503_when_the_event_loop_stops_ticking(pool):
    with HealthServer(host="127.0.0.1", port=0, stale_after_s=STALE_S) as health:
        InferenceHeartbeat(health, pool).tick()
        pool.submit(lambda: None).result()
        assert status(health.port, "/healthz") == 200
        wait_past_the_limit()  # no tick: a wedged loop
        assert status(health.port, "/healthz") == 503


def test_the_worker_app_beats_through_its_timer(tmp_path):
    from qc_stream.stream.worker import build_runtime, build_worker_app

    settings = load_settings(database_url=f"sqlite:///{tmp_path}/qc.db", redis_url=None)
    rt = build_runtime(settings)
    try:
        health = HealthServer(host="127.0.0.1", port=0, stale_after_s=STALE_S)
        app = build_worker_app(settings, rt, {}, health)
        timers = [t for t in app._app_tasks if t.__name__ == "_heartbeat"]
        assert len(timers) == 1, "the worker must register a heartbeat timer"
        with health:
            wait_past_the_limit()
            assert status(health.port, "/healthz") == 503
            asyncio.run(inspect.unwrap(timers[0])())  # one tick of the timer, as Faust runs it
            rt.inference_pool.submit(lambda: None).result()
            assert status(health.port, "/healthz") == 200
    finally:
        rt.close()


def test_the_default_limit_is_a_setting_above_a_slow_batch():
    settings = load_settings()
    assert settings.health_stale_s >= 60
    assert load_settings(health_stale_s=30).health_stale_s == 30
