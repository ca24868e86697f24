"""Redis cache: cache-aside lookups, live per-camera status and rolling per-minute counts.

Every key gets a TTL. Redis is an accelerator, never a dependency: when it is down (refused,
timed out), the first failure logs one warning, calls fall back to the loader (the database) or
become no-ops, and Redis is tried again every ``retry_after_s``; when it answers again, one info
line says so. Short socket timeouts keep a dead Redis from stalling a worker.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from qc_stream.errors import ConfigError

log = logging.getLogger(__name__)
T = TypeVar("T")

SOCKET_TIMEOUT_S = 0.5
COUNTS_WINDOW_S = 3600  # how long per-minute counters live

# Shared key names for the hot lookups, so writers can invalidate what readers cached.
ACTIVE_PROMPT_KEY = "active_prompt"


def registry_key(product: str) -> str:
    """The cached defect-type list of one product (invalidate all with ``registry:*``)."""
    return f"registry:{product}"


def thresholds_key(product: str) -> str:
    return f"thresholds:{product}"


class Cache:
    """Cache-aside over Redis under a key ``prefix``; ``redis_url=None`` disables Redis entirely."""

    def __init__(
        self,
        redis_url: str | None,
        prefix: str = "qc:",
        ttl_s: int = 60,
        *,
        status_ttl_s: int = 120,
        counts_window_s: int = COUNTS_WINDOW_S,
        retry_after_s: float = 5.0,
        socket_timeout_s: float = SOCKET_TIMEOUT_S,
    ):
        if ttl_s <= 0 or status_ttl_s <= 0 or counts_window_s <= 0:
            raise ValueError("TTLs must be positive: every cache key expires")
        self.prefix = prefix
        self.ttl_s = ttl_s
        self.status_ttl_s = status_ttl_s
        self.counts_window_s = counts_window_s
        self.retry_after_s = retry_after_s
        self._client = None
        self._down_since: float | None = None  # monotonic time of the last failure while down
        self._lock = threading.Lock()
        if redis_url:
            import redis

            self._errors: tuple[type[Exception], ...] = (redis.ConnectionError, redis.TimeoutError)
            try:
                self._client = redis.Redis.from_url(
                    redis_url,
                    socket_connect_timeout=socket_timeout_s,
                    socket_timeout=socket_timeout_s,
                    decode_responses=True,
                )
            except ValueError as e:
                raise ConfigError(f"not a Redis URL: {redis_url!r} ({e})") from None
        else:
            self._errors = ()

    @classmethod
    def from_settings(cls, settings) -> Cache:
        return cls(settings.redis_url, settings.cache_prefix, settings.cache_ttl_s)

    # --- availability ---
    @property
    def available(self) -> bool:
        """False while Redis is known to be down (or disabled)."""
        return self._client is not None and self._down_since is None

    def _call(self, fn: Callable[[Any], T], default: T) -> T:
        """Run ``fn(client)``; on a connection failure mark Redis down and return ``default``."""
        if self._client is None:
            return default
        with self._lock:
            down_since = self._down_since
        if down_since is not None and time.monotonic() - down_since < self.retry_after_s:
            return default
        try:
            value = fn(self._client)
        except self._errors as e:
            with self._lock:
                first = self._down_since is None
                self._down_since = time.monotonic()
            if first:
                log.warning("Redis unavailable (%s); working without the cache until it is back", e)
            return default
        if down_since is not None:
            with self._lock:
                if self._down_since is not None:
                    self._down_since = None
                    log.info("Redis is back; cache enabled again")
        return value

    def _key(self, key: str) -> str:
        return self.prefix + key

    # --- cache-aside ---
    def get_or_load(self, key: str, loader: Callable[[], T], ttl_s: int | None = None) -> T:
        """The cached value of ``key``, else ``loader()`` (stored with a TTL). Values must be JSON."""
        raw = self._call(lambda r: r.get(self._key(key)), None)
        if raw is not None:
            return json.loads(raw)
        value = loader()
        self.set(key, value, ttl_s)
        return value

    def set(self, key: str, value: Any, ttl_s: int | None = None) -> None:
        payload = json.dumps(value)
        self._call(lambda r: r.set(self._key(key), payload, ex=ttl_s or self.ttl_s), None)

    def invalidate(self, *keys: str) -> None:
        """Forget cached values (call after the database changed)."""
        if keys:
            self._call(lambda r: r.delete(*(self._key(k) for k in keys)), None)

    def invalidate_matching(self, pattern: str) -> None:
        """Forget every cached key matching a glob ``pattern`` under the prefix (e.g. ``registry:*``)."""

        def drop(r) -> None:
            batch = list(r.scan_iter(match=self._key(pattern), count=500))
            if batch:
                r.delete(*batch)

        self._call(drop, None)

    # --- live per-camera status ---
    def set_camera_status(self, camera_id: str, fields: dict[str, Any]) -> None:
        """Merge ``fields`` into the camera's live status hash and renew its TTL."""
        key = self._key(f"camera:{camera_id}")
        mapping = {k: json.dumps(v) for k, v in fields.items()}

        def write(r) -> None:
            pipe = r.pipeline(transaction=True)
            pipe.hset(key, mapping=mapping)
            pipe.expire(key, self.status_ttl_s)
            pipe.execute()

        if mapping:
            self._call(write, None)

    def camera_status(self, camera_id: str) -> dict[str, Any] | None:
        raw = self._call(lambda r: r.hgetall(self._key(f"camera:{camera_id}")), {})
        return {k: json.loads(v) for k, v in raw.items()} if raw else None

    def camera_statuses(self) -> dict[str, dict[str, Any]]:
        """Every camera with a live (unexpired) status."""
        start = len(self._key("camera:"))

        def read(r) -> dict[str, dict[str, Any]]:
            out = {}
            for key in r.scan_iter(match=self._key("camera:*"), count=500):
                raw = r.hgetall(key)
                if raw:
                    out[key[start:]] = {k: json.loads(v) for k, v in raw.items()}
            return out

        return self._call(read, {})

    # --- rolling counts ---
    def _minute_key(self, at: datetime) -> str:
        t = at.astimezone(UTC) if at.tzinfo else at.replace(tzinfo=UTC)
        return self._key(f"counts:{t:%Y%m%d%H%M}")

    def bump_counts(
        self, line_id: str, product: str, counts: dict[str, int], at: datetime | None = None
    ) -> None:
        """Add ``counts`` (e.g. ``{"frames": 1, "reject": 1, "type:crack": 1}``) to the minute of ``at``.

        Call it once per *new* inspection (``InspectionRepository.record`` returned True) so
        redelivered frames are not counted twice.
        """
        key = self._minute_key(at or datetime.now(UTC))

        def write(r) -> None:
            pipe = r.pipeline(transaction=True)
            for name, n in counts.items():
                pipe.hincrby(key, f"{line_id}|{product}|{name}", int(n))
            pipe.expire(key, self.counts_window_s)
            pipe.execute()

        if counts:
            self._call(write, None)

    def bump_result(self, result) -> None:
        """Count one new ``InspectionResult``: frames, its verdict, and its defect type when not ok."""
        counts = {"frames": 1, result.verdict.value: 1}
        if result.verdict.value != "ok" and result.defect_type:
            counts[f"type:{result.defect_type}"] = 1
        self.bump_counts(result.line_id, result.product, counts, result.captured_at)

    def rolling_counts(
        self,
        minutes: int = 5,
        *,
        line_id: str | None = None,
        product: str | None = None,
        now: datetime | None = None,
    ) -> dict[str, int]:
        """Summed counters over the last ``minutes`` minutes (including the current one).

        Empty when Redis is down: live counts are best-effort; the database has the exact ones.
        """
        now = now or datetime.now(UTC)
        keys = [
            self._minute_key(datetime.fromtimestamp(now.timestamp() - 60 * i, UTC))
            for i in range(minutes)
        ]

        def read(r) -> list[dict[str, str]]:
            pipe = r.pipeline(transaction=False)
            for k in keys:
                pipe.hgetall(k)
            return pipe.execute()

        totals: dict[str, int] = {}
        for h in self._call(read, []):
            for field, n in h.items():
                line, prod, name = field.split("|", 2)
                if (line_id is None or line == line_id) and (product is None or prod == product):
                    totals[name] = totals.get(name, 0) + int(n)
        return totals

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
