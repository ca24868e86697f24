"""What a worker's agents share: settings, the detector, the sinks and the two executor threads.

Inference runs on a single-thread executor so that batches and prompt swaps are serialised: a swap
always lands *between* batches. Storage runs on its own thread so the event loop never blocks on
the database.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from qc_stream.domain.inspection import InspectionResult
from qc_stream.settings import Settings
from qc_stream.stream.service import DetectorLike

log = logging.getLogger(__name__)

StoreFn = Callable[[Sequence[InspectionResult]], int]
LiveFn = Callable[[Sequence[InspectionResult], int], None]


@dataclass
class WorkerRuntime:
    settings: Settings
    detector: DetectorLike
    store: StoreFn  # idempotent: InspectionRepository.record_many
    live: LiveFn | None = None  # Redis live status / rolling counts; never raises
    decode: Callable[[bytes], Any] | None = None
    inference_pool: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(max_workers=1, thread_name_prefix="qc-inference")
    )
    store_pool: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(max_workers=1, thread_name_prefix="qc-store")
    )

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
                save_overlay(self.settings.overlay_dir / f"{_safe_name(result.frame_id)}.png", image, amap, result.regions, caption)
            except Exception as e:
                log.warning("overlay of %s failed: %s", result.frame_id, e)

    def close(self) -> None:
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
