"""A camera: frames from a source -> ``qc.frames`` at ``--fps``, with progress and clean Ctrl-C."""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from qc_stream.producers.producer import FrameProducer, frame_meta
from qc_stream.producers.sources import SourceFrame


@dataclass
class CameraStats:
    sent: int = 0  # frames handed to the producer; all acknowledged once run_camera returns
    acked: int = 0  # frames the broker acknowledged so far
    backlog: int = 0  # sent, not acknowledged yet
    retries: int = 0  # producer clients replaced after a fatal error (backlog re-sent each time)
    skipped: list[str] = field(default_factory=list)  # frames refused at the producer (too large)
    seconds: float = 0.0
    interrupted: bool = False
    defects: int = 0  # synthetic ground truth, for the demo's summary

    @property
    def fps(self) -> float:
        """Acknowledged frames per second."""
        return self.acked / self.seconds if self.seconds > 0 else 0.0


def new_frame_id(camera_id: str) -> str:
    return f"{camera_id}-{uuid.uuid4().hex}"


def run_camera(
    producer: FrameProducer,
    frames: Iterable[SourceFrame],
    *,
    camera_id: str,
    line_id: str,
    product: str,
    fps: float | None = None,
    count: int | None = None,
    progress: Callable[[CameraStats], None] | None = None,
    progress_every_s: float = 1.0,
    should_stop: Callable[[], bool] | None = None,
    on_sent: Callable[[object, SourceFrame], None] | None = None,
) -> CameraStats:
    """Send frames until the source ends, ``count`` is reached, or Ctrl-C / ``should_stop``.

    Oversized frames are refused with a message (counted in ``skipped``) and the camera goes on.
    Progress counts acknowledged frames only. The producer is flushed before returning (re-sending
    across broker restarts), so every frame counted as sent was delivered; it raises ``QcError``
    after ``QC_PRODUCER_GIVE_UP_S`` without an acknowledgement.
    """
    stats = CameraStats()
    start = time.monotonic()
    next_at, last_progress = start, start
    period = 1.0 / fps if fps else 0.0

    def refresh() -> None:
        stats.acked, stats.backlog = producer.acked, producer.backlog
        stats.retries = producer.recoveries
        stats.seconds = time.monotonic() - start

    def report_while_waiting() -> None:  # the producer waits out a broker outage: keep reporting
        nonlocal last_progress
        now = time.monotonic()
        if progress and now - last_progress >= progress_every_s:
            refresh()
            progress(stats)
            last_progress = now

    producer.heartbeat = report_while_waiting
    try:
        for frame in frames:
            if (count is not None and stats.sent + len(stats.skipped) >= count) or (
                should_stop and should_stop()
            ):
                break
            if period:
                now = time.monotonic()
                if next_at > now:
                    time.sleep(next_at - now)
                next_at = max(next_at + period, time.monotonic() - period)  # no burst after a stall
            meta = frame_meta(
                camera_id,
                line_id,
                frame.product or product,
                frame.content_type,
                new_frame_id(camera_id),
            )
            try:
                producer.send(frame.data, meta, what=f"frame {frame.name or meta.frame_id}")
            except Exception as e:
                from qc_stream.producers.producer import FrameTooLarge

                if not isinstance(e, FrameTooLarge):
                    raise
                stats.skipped.append(str(e))
                print(f"{camera_id}: skipped: {e}", file=sys.stderr)
                continue
            stats.sent += 1
            if on_sent:
                on_sent(meta, frame)
            stats.defects += frame.defect_type is not None
            report_while_waiting()
    except KeyboardInterrupt:
        stats.interrupted = True
    try:
        producer.flush()
    finally:
        producer.heartbeat = None
        refresh()
    if progress:
        progress(stats)
    return stats
