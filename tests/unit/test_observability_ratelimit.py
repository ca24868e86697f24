"""Rate-limited logging of repeating conditions (observability.ratelimit) and settings it rests on."""

from __future__ import annotations

import logging

import pytest

from qc_stream.errors import ConfigError
from qc_stream.observability.ratelimit import RepeatFilter, RepeatLimiter
from qc_stream.settings import load_settings


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_repeating_condition_logs_once_per_interval_with_the_count(caplog):
    clock = Clock()
    limiter = RepeatLimiter(10.0, clock=clock)
    log = logging.getLogger("test.ratelimit")
    with caplog.at_level(logging.ERROR, logger="test.ratelimit"):
        for _ in range(100):  # a burst: one line
            limiter.log(log, logging.ERROR, "db", "database down: %s", "refused")
            clock.now += 0.01
        clock.now = 10.5
        limiter.log(log, logging.ERROR, "db", "database down: %s", "refused")
        limiter.log(log, logging.ERROR, "broker", "broker down")  # another key: its own line
    assert [r.getMessage() for r in caplog.records] == [
        "database down: refused",
        "database down: refused (99 more in the last 10 s)",
        "broker down",
    ]


def test_reset_starts_a_condition_afresh():
    clock = Clock()
    limiter = RepeatLimiter(10.0, clock=clock)
    assert limiter.admit("db") == (True, 0)
    assert limiter.admit("db") == (False, 0)
    assert limiter.reset("db") == 1
    assert limiter.admit("db") == (True, 0)


def test_the_handler_filter_collapses_library_floods_of_the_same_message():
    flt = RepeatFilter(10.0)

    def rec(msg, level=logging.ERROR, name="aiokafka.conn"):
        return logging.LogRecord(name, level, __file__, 1, msg, ("127.0.0.1:9092",), None)

    passed = [flt.filter(rec("Unable connect to %s")) for _ in range(50)]
    assert passed.count(True) == 1
    assert flt.filter(rec("Unable connect to %s", logging.INFO))  # below WARNING: untouched
    assert flt.filter(rec("another message %s"))
    other_args = logging.LogRecord(
        "aiokafka.conn",
        logging.ERROR,
        __file__,
        1,
        "Unable connect to %s",
        ("10.0.0.2:9092",),
        None,
    )
    assert flt.filter(other_args)  # another broker: another condition


@pytest.mark.parametrize(
    "overrides, names",
    [
        ({"deadletter_max_bytes": 16 * 1024 * 1024}, "QC_DEADLETTER_MAX_BYTES"),
        ({"worker_retry_base_s": 5.0, "worker_retry_cap_s": 1.0}, "QC_WORKER_RETRY_BASE_S"),
    ],
)
def test_fault_settings_are_validated(overrides, names):
    with pytest.raises(ConfigError, match=names):
        load_settings(**overrides)
