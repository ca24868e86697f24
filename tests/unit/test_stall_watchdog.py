"""The stall watchdog's decision (stream/stall.py): restart only a worker that should be consuming."""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future

from qc_stream.stream.stall import StallClock, StallWatchdog


def waiting(answer):
    calls = []

    def frames_waiting():
        calls.append(1)
        return answer

    frames_waiting.calls = calls
    return frames_waiting


def test_stalled_after_frames_wait_unacked_for_the_whole_window():
    clock = StallClock(after_s=10)
    yes = waiting(True)
    assert not clock.check(100, last_ack=50, busy=False, frames_waiting=yes)  # first seen waiting
    assert not clock.check(109, last_ack=50, busy=False, frames_waiting=yes)
    assert clock.check(110, last_ack=50, busy=False, frames_waiting=yes)


def test_an_ack_restarts_the_window():
    clock = StallClock(after_s=10)
    yes = waiting(True)
    clock.check(100, last_ack=50, busy=False, frames_waiting=yes)
    assert not clock.check(112, last_ack=105, busy=False, frames_waiting=yes)  # acked 7 s ago
    assert clock.check(115, last_ack=105, busy=False, frames_waiting=yes)


def test_idle_busy_or_unreadable_broker_is_no_stall():
    clock = StallClock(after_s=10)
    for now in range(100, 200, 5):  # no frames waiting: an idle line
        assert not clock.check(now, last_ack=0, busy=False, frames_waiting=waiting(False))
    for now in range(200, 300, 5):  # the broker cannot be read: an outage is waited out
        assert not clock.check(now, last_ack=0, busy=False, frames_waiting=waiting(None))
    never = waiting(True)
    for now in range(300, 400, 5):  # a batch being retried or young: not asked at all
        assert not clock.check(now, last_ack=0, busy=True, frames_waiting=never)
    assert not never.calls
    # Frames seen waiting only now: the window starts now, not at the last ack long ago.
    assert not clock.check(400, last_ack=0, busy=False, frames_waiting=waiting(True))


def test_lag_is_read_only_when_nothing_was_acked_for_the_window():
    clock = StallClock(after_s=10)
    lag = waiting(True)
    assert not clock.check(100, last_ack=99, busy=False, frames_waiting=lag)
    assert not lag.calls  # a worker acking batches costs no broker round trip


class FakeRuntime:
    def __init__(self):
        self.loaded: Future = Future()
        self.loaded.set_result(None)
        self.stopping = threading.Event()
        self.inflight: dict = {}
        self.retrying = 0
        self.last_ack = 0.0
        self.health = None

    def oldest_inflight_started(self):
        return min(self.inflight.values(), default=None)


def test_watchdog_restarts_a_stalled_worker_and_not_one_holding_a_batch_for_an_outage():
    restarted = threading.Event()
    rt = FakeRuntime()
    rt.retrying = 1  # a batch held through a database outage
    dog = StallWatchdog(rt, after_s=0.05, frames_waiting=lambda: True, restart=restarted.set)
    dog.interval_s = 0.01
    dog.start()
    assert not restarted.wait(0.3)
    rt.retrying = 0  # the outage is over, yet nothing is acked: a stall
    assert restarted.wait(5)
    rt.stopping.set()


def test_a_batch_stuck_in_flight_is_a_stall():
    restarted = threading.Event()
    rt = FakeRuntime()
    rt.inflight = {"batch": time.monotonic()}  # e.g. awaiting a send that never completes
    dog = StallWatchdog(rt, after_s=0.1, frames_waiting=lambda: True, restart=restarted.set)
    dog.interval_s = 0.01
    dog.start()
    assert restarted.wait(5)
    rt.stopping.set()


class LagPastTheEnd:
    """A group whose committed offset of partition 0 lies past its (rebuilt) log's end."""

    past_end = {0: 0}

    def __call__(self):
        return True


def test_a_partition_committed_past_its_log_end_is_rewound_before_any_restart():
    restarted, rewinds = threading.Event(), []
    rt = FakeRuntime()

    def rewind(offsets):
        rewinds.append(offsets)
        rt.last_ack = time.monotonic() + 3600  # consuming again (and acking on)

    dog = StallWatchdog(rt, after_s=0.1, frames_waiting=LagPastTheEnd(), restart=restarted.set)
    dog.rewind = rewind
    dog.interval_s = 0.01
    dog.start()
    assert not restarted.wait(0.5)
    assert rewinds == [{0: 0}]
    rt.stopping.set()


def test_a_rewind_that_brings_no_ack_is_followed_by_a_restart():
    restarted, rewinds = threading.Event(), []
    rt = FakeRuntime()
    dog = StallWatchdog(rt, after_s=0.1, frames_waiting=LagPastTheEnd(), restart=restarted.set)
    dog.rewind = rewinds.append
    dog.interval_s = 0.01
    dog.start()
    assert restarted.wait(5)
    assert rewinds == [{0: 0}]
    rt.stopping.set()
