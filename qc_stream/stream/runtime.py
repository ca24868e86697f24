"""What a worker's agents share: settings, the detector, the sinks and the two executor threads.

Inference runs on a single-thread executor so that batches and prompt swaps are serialised: a swap
always lands *between* batches. Storage runs on its own thread so the event loop never blocks on
the database.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from qc_stream.domain.inspection import InspectionResult
from qc_stream.observability import metrics
from qc_stream.observability.ratelimit import RepeatLimiter
from qc_stream.settings import Settings
from qc_stream.stream.service import DetectorLike

log = logging.getLogger(__name__)

StoreFn = Callable[[Sequence[InspectionResult]], int]
LiveFn = Callable[[Sequence[InspectionResult], int], None]
T = TypeVar("T")


def backoff_delays(base_s: float, cap_s: float) -> Iterator[float]:
    """base, 2 base, 4 base, ... never above cap (no jitter: one worker retries one batch)."""
    delay = base_s
    while True:
        yield min(delay, cap_s)
        delay = min(delay * 2, cap_s)


def _done_future() -> Future:
    f: Future = Future()
    f.set_result(None)
    return f


@dataclass
class WorkerRuntime:
    settings: Settings
    detector: DetectorLike | None  # None until loaded (on the inference thread, see worker.py)
    store: StoreFn  # idempotent: InspectionRepository.record_many
    live: LiveFn | None = None  # Redis live status / rolling counts; never raises
    decode: Callable[[bytes], Any] | None = None
    inference_pool: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(max_workers=1, thread_name_prefix="qc-inference")
    )
    store_pool: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(max_workers=1, thread_name_prefix="qc-store")
    )
    loaded: Future = field(default_factory=_done_future)  # completes when the detector is usable
    decode_threads: int = field(default_factory=lambda: max(1, min(4, os.cpu_count() or 1)))
    # What to do when a batch cannot be stored/published: by default end the process at once, so the
    # group hands the partitions on and the unacked batch is replayed (tests replace it).
    on_fatal: Callable[[BaseException], None] | None = None
    # The HealthServer (or None): conditions being retried are shown as /readyz reasons.
    health: Any = None
    # Whether an error while storing / publishing is worth waiting out (see worker.py).
    is_store_outage: Callable[[BaseException], bool] = lambda e: False
    is_publish_outage: Callable[[BaseException], bool] = lambda e: False
    repeats: RepeatLimiter = field(default_factory=lambda: RepeatLimiter(10.0))
    # Set on SIGTERM/SIGINT: a batch being retried gives up at once (unacked: it is replayed).
    stopping: threading.Event = field(default_factory=threading.Event)
    # Batches between inference and ack (finish tasks of the inspect agent) -> monotonic start.
    inflight: dict = field(default_factory=dict)
    # For the stall watchdog (stream/stall.py): when a batch was last acked, and how many batches
    # are being retried through an outage now (that is waited out, not a stall).
    last_ack: float = field(default_factory=time.monotonic)
    retrying: int = 0
    # prompt version name -> its model_versions row (None: not registered); qc.model-updates
    # swaps only to registered versions whose files match the recorded sha256.
    registered_version: Callable[[str], Any] | None = None
    # The model_versions row marked active (None: none); the worker starts on it when
    # QC_PROMPT_VERSION is unset: the database, not the ACTIVE file, says which version is active.
    active_version_row: Callable[[], Any] | None = None
    # The frame store for review (qc_stream.stream.retention.FrameRetention), None: off.
    retention: Any = None

    def __post_init__(self) -> None:
        self.decode_pool = ThreadPoolExecutor(
            max_workers=self.decode_threads, thread_name_prefix="qc-decode"
        )

    def track(self, task: asyncio.Future) -> asyncio.Future:
        self.inflight[task] = time.monotonic()
        task.add_done_callback(lambda t: self.inflight.pop(t, None))
        return task

    def oldest_inflight_started(self) -> float | None:
        """When the oldest batch in flight started (None: none); read from another thread."""
        return min(list(self.inflight.values()), default=None)

    async def drain(self, timeout_s: float) -> None:
        """On stop: let the batches in flight finish (stored, published, acked) for up to
        ``timeout_s``; one being retried gives up at once (``stopping``) and stays unacked."""
        self.stopping.set()
        if self.inflight:
            await asyncio.wait(list(self.inflight), timeout=timeout_s)

    async def until_done(
        self,
        what: str,
        attempt: Callable[[], Awaitable[T]],
        is_outage: Callable[[BaseException], bool],
    ) -> T:
        """Run ``attempt`` until it succeeds, waiting out outages (``is_outage``) with capped
        exponential backoff; any other error is raised. While it waits, /readyz is 503 with the
        reason, and /healthz once it has waited ``QC_WORKER_STUCK_S``. The caller holds its batch
        (nothing is acked), so a stop during the wait replays it."""
        s = self.settings
        delays = backoff_delays(s.worker_retry_base_s, s.worker_retry_cap_s)
        started, failures = time.monotonic(), 0
        try:
            while True:
                try:
                    result = await attempt()
                except asyncio.CancelledError:
                    raise
                except Exception as e:
                    if not is_outage(e):
                        raise
                    if not failures:
                        self.retrying += 1
                    failures += 1
                    delay = next(delays)
                    reason = f"{type(e).__name__}: {_first_line(e)}"
                    metrics.WORKER_RETRIES.labels(what=what).inc()
                    if self.health is not None:
                        self.health.set_problem(what, reason, stuck_after_s=s.worker_stuck_s)
                    self.repeats.log(
                        log,
                        logging.ERROR,
                        what,
                        "%s unavailable (%s); batch held, retrying in %.1f s (attempt %d)",
                        what,
                        reason,
                        delay,
                        failures,
                    )
                    until = time.monotonic() + delay
                    while not self.stopping.is_set() and time.monotonic() < until:
                        await asyncio.sleep(min(0.25, max(0.0, until - time.monotonic())))
                    if self.stopping.is_set():
                        log.warning("stopping: %s batch left unacked, it will be replayed", what)
                        raise asyncio.CancelledError from e
                    continue
                if failures:
                    self.repeats.reset(what)
                    if self.health is not None:
                        self.health.clear_problem(what)
                    log.warning(
                        "%s recovered after %d failed attempt(s) in %.1f s",
                        what,
                        failures,
                        time.monotonic() - started,
                    )
                return result
        finally:
            if failures:  # the batch is no longer held (done, failed or cancelled)
                self.retrying -= 1

    def fatal(self, error: BaseException) -> None:
        if self.on_fatal is not None:
            self.on_fatal(error)
            return
        log.critical(
            "cannot store or publish a batch (%s: %s); exiting so it is replayed",
            type(error).__name__,
            error,
        )
        logging.shutdown()
        os._exit(3)

    def store_and_publish_live(self, results: Sequence[InspectionResult]) -> int:
        """Runs on the store thread: database first (the source of truth), then Redis (best effort)."""
        new = self.store(results) if results else 0
        if self.live and results:
            try:
                self.live(results, new)
            except Exception as e:  # Redis is a cache: never let it stop the line
                log.warning("live status update failed: %s", e)
        return new

    def write_overlays(self, rejects) -> None:
        """Overlay PNGs of rejected frames (QC_OVERLAY_DIR); best effort, after the result is stored."""
        if not rejects or self.settings.overlay_dir is None:
            return
        from qc_stream.inference.overlay import save_overlay

        for result, image, amap in rejects:
            caption = f"{result.product} {result.verdict.value} {result.anomaly_score:.2f} {result.defect_type or ''}"
            try:
                save_overlay(
                    self.settings.overlay_dir / f"{_safe_name(result.frame_id)}.png",
                    image,
                    amap,
                    result.regions,
                    caption,
                )
            except Exception as e:
                log.warning("overlay of %s failed: %s", result.frame_id, e)

    def close(self) -> None:
        self.decode_pool.shutdown(wait=True)
        self.inference_pool.shutdown(wait=True)
        self.store_pool.shutdown(wait=True)


def live_updater(cache: Any) -> LiveFn:
    """Adapt the storage ``Cache``: latest status per camera, rolling counts for new frames only."""

    def update(results: Sequence[InspectionResult], new: int) -> None:
        latest: dict[str, InspectionResult] = {}
        for r in results:
            latest[r.camera_id] = r
        for camera_id, r in latest.items():
            cache.set_camera_status(
                camera_id,
                {
                    "frame_id": r.frame_id,
                    "line_id": r.line_id,
                    "product": r.product,
                    "verdict": r.verdict.value,
                    "anomaly_score": round(r.anomaly_score, 4),
                    "defect_type": r.defect_type,
                    "prompt_version": r.prompt_version,
                    "processed_at": r.processed_at.isoformat(),
                },
            )
        # The repository tells how many were new, not which: a batch that is wholly new (the normal
        # case) is counted; a partly replayed one is left to the database, which is always exact.
        if new == len(results):
            for r in results:
                cache.bump_result(r)

    return update


def consumer_problem(app) -> str | None:
    """Why the worker's Kafka consumer cannot consume now (no connection to the broker, no group
    coordinator, no partitions), or None when it can or cannot be told. Reads the consumer's
    state from its thread without calling into it."""
    try:
        consumer = app.consumer._thread._consumer
    except AttributeError:
        return None
    if consumer is None:
        return "consumer not started"
    conns = getattr(getattr(consumer, "_client", None), "_conns", None)
    if conns is not None and not any(c.connected() for c in list(conns.values())):
        return "consumer has no connection to the broker"
    coordinator = getattr(consumer, "_coordinator", None)
    if coordinator is not None and getattr(coordinator, "coordinator_id", 0) is None:
        return "consumer has no group coordinator (broker unreachable or rebalancing)"
    if not consumer.assignment():
        return "no partitions assigned"
    return None


def is_refused_record(error: BaseException) -> bool:
    """The broker (or the client, before sending) refuses this record for good: too large or
    malformed. Retrying would block the partition forever; everything else is worth a retry."""
    from aiokafka import errors as ak

    refused = (
        ak.MessageSizeTooLargeError,
        ak.RecordTooLargeError,
        ak.RecordListTooLargeError,
        ak.CorruptRecordException,
        ak.InvalidMessageError,
        ak.InvalidTimestampError,
    )
    seen: set[int] = set()
    e: BaseException | None = error
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, refused):
            return True
        e = e.__cause__ or e.__context__
    return False


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:300] if text else ""


def _safe_name(frame_id: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in frame_id)[:120]


def consumer_state(app) -> str:
    """The Kafka consumer's view, for a stall report: Faust's flow control and rebalance flags, the
    group membership, and per assigned partition its position, highwater and whether it is paused.
    Read from another thread without calling into the consumer; best effort."""
    parts: list[str] = []
    try:
        fc = app.consumer
        parts.append(
            f"rebalancing={app.rebalancing} flow_active={app.flow_control.is_active()} "
            f"can_resume_flow={fc.can_resume_flow.is_set()} "
            f"faust_assignment={sorted(str(tp) for tp in app.assignor.assigned_actives())}"
        )
        consumer = fc._thread._consumer
        co = consumer._coordinator
        parts.append(
            f"member={getattr(co, 'member_id', '?')} generation={getattr(co, 'generation', '?')} "
            f"coordinator={getattr(co, 'coordinator_id', '?')} "
            f"rejoin_needed={getattr(getattr(co, '_rejoin_needed_fut', None), 'done', lambda: '?')()}"
        )
        paused = consumer.paused()
        assignment = consumer._subscription.subscription.assignment
        for tp in sorted(consumer.assignment()):
            st = assignment.state_value(tp)
            parts.append(
                f"{tp.topic}[{tp.partition}] position={getattr(st, '_position', '?')} "
                f"highwater={getattr(st, 'highwater', '?')} paused={tp in paused}"
            )
    except Exception as e:  # diagnostics only
        parts.append(f"(consumer state unreadable: {type(e).__name__}: {e})")
    return "; ".join(parts)


def rewind_frames(app, offsets: dict[int, int]) -> None:
    """Seek this worker's consumer to ``offsets`` ({qc.frames partition: offset}) for the partitions
    it holds, from any thread (scheduled on the app's loop; Faust's seek also resets its own read
    offset). The partitions it does not hold are left to their holder's watchdog."""
    from faust.types import TP

    from qc_stream.wire.topics import FRAMES

    async def seek_held() -> None:
        held = app.consumer.assignment()
        for partition, offset in offsets.items():
            tp = TP(FRAMES, partition)
            if tp in held:
                await app.consumer.seek(tp, offset)
                log.warning("qc.frames[%d] rewound to offset %d", partition, offset)

    asyncio.run_coroutine_threadsafe(seek_held(), app.loop)
