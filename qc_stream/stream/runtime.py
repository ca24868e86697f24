"""What a worker's agents share: settings, the detector, the sinks and the two executor threads.

Inference runs on a single-thread executor so that batches and prompt swaps are serialised: a swap
always lands *between* batches. Storage runs on its own thread so the event loop never blocks on
the database.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from qc_stream.domain.inspection import InspectionResult
from qc_stream.settings import Settings
from qc_stream.stream.service import DetectorLike

log = logging.getLogger(__name__)

StoreFn = Callable[[Sequence[InspectionResult]], int]
LiveFn = Callable[[Sequence[InspectionResult], int], None]


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

    def __post_init__(self) -> None:
        self.decode_pool = ThreadPoolExecutor(
            max_workers=self.decode_threads, thread_name_prefix="qc-decode"
        )

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


def _safe_name(frame_id: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in frame_id)[:120]
