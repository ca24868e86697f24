"""The stall watchdog: a worker that should be consuming but is not recovers by itself.

After a restart of the embedded broker (tansu: its memory log starts empty) the Kafka client can
consume nothing for good ("OffsetCommit failed ... UnknownMemberIdError, will rejoin", then
silence) while it still reports partitions, so /readyz stays 200: the group's committed offset
of a partition lies past the rebuilt log's end (Kafka would answer OFFSET_OUT_OF_RANGE and the
client reset; tansu does not), or it keeps the old assignment of a topic recreated with more
partitions (docs/streaming.md). The watchdog looks at what the worker does instead of what the
client says: frames wait for the group (lag > 0, read from the broker), no batch is in flight or
being retried, and nothing was acked for ``after_s``. Then /healthz turns 503; partitions
committed past their log end are rewound to the log start; otherwise (or when that brought no
ack) every task's stack is logged (observability/stackdump.py) and the process re-executes
itself (same pid, arguments and environment). Nothing unacked was committed, so the frames it
held are replayed by the new consumer and the idempotent sinks store each once.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass
class StallClock:
    """Decides when a worker is stalled; pure, fed with the monotonic time."""

    after_s: float
    waiting_since: float | None = None

    def check(self, now: float, *, last_ack: float, busy: bool, frames_waiting) -> bool:
        """True once frames have been seen waiting at every check for ``after_s`` while nothing
        was acked (the window starts at the later of the two) and no batch was busy.
        ``frames_waiting`` (called only when the rest holds) says whether frames wait for the
        group untaken: True, False, or None when it cannot be told (the broker is unreachable:
        an outage is waited out, not restarted)."""
        # The broker is asked only once the worker has been quiet for a fifth of the window: a
        # worker acking batches costs no round trip, a quiet one is sampled at every check.
        quiet = now - last_ack >= self.after_s / 5
        if busy or not quiet or frames_waiting() is not True:
            self.waiting_since = None
            return False
        if self.waiting_since is None:
            self.waiting_since = now
        return now - max(self.waiting_since, last_ack) >= self.after_s


def restart_in_place() -> None:
    """Replace this process with a fresh worker: same pid (a supervisor or test keeps its handle),
    same command line and environment. Sockets are not inherited, so the health port is free."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    os.execv(sys.executable, sys.orig_argv)


class StallWatchdog:
    """A daemon thread: every ``interval_s``, ``clock.check`` the runtime; on a stall, report it,
    ``rewind`` partitions committed past their log end, else dump the stacks and ``restart``."""

    def __init__(
        self,
        rt,
        after_s: float,
        frames_waiting: Callable[[], bool | None],
        *,
        restart: Callable[[], None] = restart_in_place,
    ):
        self.rt = rt
        self.clock = StallClock(after_s)
        self.frames_waiting = frames_waiting
        self.restart = restart
        # What the Kafka client believes, logged with the stall (worker.py sets it once the app
        # exists): runtime.consumer_state.
        self.describe: Callable[[], str] | None = None
        # {partition: offset} -> seek this worker's consumer there (worker.py sets it); tried once
        # per stall, before the restart, when the group committed past a partition's log end.
        self.rewind: Callable[[dict[int, int]], None] | None = None
        self.interval_s = min(10.0, max(1.0, after_s / 5))
        self._thread: threading.Thread | None = None

    def start(self) -> StallWatchdog:
        self._thread = threading.Thread(target=self._run, name="qc-stall-watchdog", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        from qc_stream.observability.stackdump import log_stacks

        rt = self.rt
        try:
            rt.loaded.result()  # armed once the detector is usable: loading is not a stall
        except Exception:
            return  # the worker exits (worker._exit_if_failed)
        rt.last_ack = max(rt.last_ack, time.monotonic())
        rewound, acked = False, rt.last_ack
        while not rt.stopping.wait(self.interval_s):
            if rt.last_ack != acked:  # progress: a later stall may rewind again
                rewound, acked = False, rt.last_ack
                if rt.health is not None:
                    rt.health.clear_problem("stall")
            # A batch held through an outage is waited out (QC_WORKER_STUCK_S covers it); one in
            # flight for less than after_s is work in progress; one older is part of the stall.
            if not self.clock.check(
                time.monotonic(),
                last_ack=rt.last_ack,
                busy=rt.retrying > 0 or self._batch_young(),
                frames_waiting=self.frames_waiting,
            ):
                continue
            if rt.health is not None:  # /readyz and /healthz 503 until a batch is acked
                rt.health.set_problem("stall", "stalled: frames waiting, nothing acked", 0)
            if self.describe is not None:
                log.error("consumer at the stall: %s", self.describe())
            past_end = dict(getattr(self.frames_waiting, "past_end", {}))
            if past_end and self.rewind is not None and not rewound:
                # Not a client bug a restart cures: the group's own offsets point past the log.
                rewound = True
                log.error(
                    "stalled: qc.frames partition(s) %s committed past the log end (the broker "
                    "lost its log); rewinding them to the log start (QC_STALL_RESTART_S)",
                    sorted(past_end),
                )
                self.rewind(past_end)
                self.clock.waiting_since = None
                continue
            reason = (
                f"stalled: frames waiting and nothing acked for {self.clock.after_s:.0f} s; "
                "restarting the worker"
            )
            log.error("%s (QC_STALL_RESTART_S)", reason)
            log_stacks("stall")
            if rt.stopping.is_set():
                return
            self.restart()
            return

    def _batch_young(self) -> bool:
        """A batch in flight for less than ``after_s`` is work in progress, not a stall."""
        started = self.rt.oldest_inflight_started()
        return started is not None and time.monotonic() - started < self.clock.after_s


class GroupLag:
    """Whether frames wait for the worker group on qc.frames and nobody is taking them: some lag
    (end offset > committed offset) and no committed offset moved since the previous reading
    (another worker making progress is no stall of this one, idle, worker); None: the broker
    cannot be read. Also remembers the partitions whose committed offset lies past the log end."""

    def __init__(self, settings):
        self.settings = settings
        self.previous: dict[int, int] = {}
        # partition -> log start offset, for partitions committed past their log's end: a broker
        # that lost its log (tansu's memory storage, restarted) and a worker that committed its
        # pre-crash offset into the rebuilt group. Kafka answers such a fetch OFFSET_OUT_OF_RANGE
        # and the client resets; tansu does not, and the consumer waits there for good.
        self.past_end: dict[int, int] = {}

    def __call__(self) -> bool | None:
        from qc_stream.observability.lag import read_lag
        from qc_stream.wire.security import kafka_python_kwargs
        from qc_stream.wire.topics import FRAMES

        s = self.settings
        try:
            lag = read_lag(
                s.kafka_bootstrap,
                s.app_id,
                FRAMES,
                timeout_s=5.0,
                client_kwargs=kafka_python_kwargs(s),
                committed=True,
            )
        except Exception as e:
            log.debug("stall watchdog: lag unreadable (%s)", e)
            return None
        if not lag:
            return None
        committed = {p: c for p, (_, c, _, _) in lag.items()}
        self.past_end = {p: start for p, (_, c, start, end) in lag.items() if c > end}
        moved = bool(self.previous) and committed != self.previous
        self.previous = committed
        return not moved and any(behind > 0 for behind, _, _, _ in lag.values())
