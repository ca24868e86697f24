"""Quiet logs for repeating conditions: one line per condition per interval, with a count.

A worker whose broker or database is down meets the same error many times a second. The first
occurrence is logged at once; repeats within ``interval_s`` are only counted, and the next one
after the interval is logged with "(N more in the last S s)". Two ways in:

- :class:`RepeatLimiter` for our own code: ``limiter.log(log, logging.ERROR, "database", msg, *args)``;
- :class:`RepeatFilter`, a ``logging.Filter`` for a handler, for libraries' loggers (aiokafka, faust),
  keyed by logger, level and the formatted message (the same condition repeating; distinct events,
  such as two different refused updates, each keep their line).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable


class RepeatLimiter:
    """Counts occurrences per key; :meth:`admit` says whether to log now and how many were held."""

    def __init__(self, interval_s: float = 10.0, clock: Callable[[], float] = time.monotonic):
        self.interval_s = interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._last: dict[object, float] = {}
        self._held: dict[object, int] = {}

    def admit(self, key: object) -> tuple[bool, int]:
        """(log this one?, occurrences held back since the last logged one)."""
        now = self._clock()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.interval_s:
                self._held[key] = self._held.get(key, 0) + 1
                return False, 0
            self._last[key] = now
            return True, self._held.pop(key, 0)

    def log(self, logger: logging.Logger, level: int, key: object, msg: str, *args) -> bool:
        """Log ``msg % args`` unless the same ``key`` was logged within the interval; True if logged."""
        ok, held = self.admit(key)
        if ok:
            if held:
                msg += f" ({held} more in the last {self.interval_s:.0f} s)"
            logger.log(level, msg, *args)
        return ok

    def reset(self, key: object) -> int:
        """Forget ``key`` (the condition ended); returns the occurrences still held back."""
        with self._lock:
            self._last.pop(key, None)
            return self._held.pop(key, 0)


class RepeatFilter(logging.Filter):
    """A handler filter: records at ``min_level`` or above with the same logger and formatted message
    pass once per interval; the next one that passes says how many were dropped."""

    def __init__(self, interval_s: float = 10.0, min_level: int = logging.WARNING):
        super().__init__()
        self.min_level = min_level
        self._limiter = RepeatLimiter(interval_s)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < self.min_level:
            return True
        try:
            text = record.getMessage()
        except Exception:  # a malformed record is the handler's problem, not ours
            return True
        ok, held = self._limiter.admit((record.name, record.levelno, text))
        if ok and held:
            record.msg = f"{record.msg} ({held} more in the last {self._limiter.interval_s:.0f} s)"
        return ok


def quiet_repeats(interval_s: float = 10.0, logger: logging.Logger | None = None) -> RepeatFilter:
    """Install one :class:`RepeatFilter` on every handler of ``logger`` (default: the root)."""
    flt = RepeatFilter(interval_s)
    for handler in (logger or logging.getLogger()).handlers:
        handler.addFilter(flt)
    return flt
