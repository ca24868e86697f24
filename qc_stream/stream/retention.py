"""Keeping frames for review: the worker writes the bytes and overlay of each frame the frame store
keeps (every warn/reject, a sample of ok) before its batch is acked, then records where they are.

A store that is missing, full or unwritable never stops inspection: the frame is inspected,
stored and acked as usual, without its picture; a warning (rate-limited) and
``qc_frame_store_failures_total`` say so.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from qc_stream.domain.inspection import InspectionResult
from qc_stream.observability import metrics
from qc_stream.observability.ratelimit import RepeatLimiter
from qc_stream.storage.frame_store import FrameStore, StoredFrame
from qc_stream.wire.codec import normalize_headers

log = logging.getLogger(__name__)

Retained = Sequence[tuple[InspectionResult, Any, Any]]


def raw_frames(events) -> dict[str, tuple[bytes, str]]:
    """frame id -> (image bytes, content type) of a batch's qc.frames events."""
    out: dict[str, tuple[bytes, str]] = {}
    for e in events:
        headers = dict(normalize_headers(getattr(e, "headers", None)))
        frame_id = headers.get("frame_id")
        if frame_id is None or not e.value:
            continue
        content_type = headers.get("content_type", b"image/jpeg").decode("utf-8", "replace")
        out[frame_id.decode("utf-8", "replace")] = (bytes(e.value), content_type)
    return out


@dataclass
class FrameRetention:
    store: FrameStore
    record: Callable[[Sequence[StoredFrame]], int]  # ReviewRepository.record_retained
    repeats: RepeatLimiter = field(default_factory=lambda: RepeatLimiter(30.0))

    def keep(self, retained: Retained, raw: dict[str, tuple[bytes, str]]) -> list[StoredFrame]:
        """Write the kept frames and overlays; never raises (failures are logged and counted)."""
        from qc_stream.inference.overlay import save_overlay

        kept: list[StoredFrame] = []
        for result, image, amap in retained:
            data = raw.get(result.frame_id)
            if data is None:
                continue
            caption = (
                f"{result.product} {result.verdict.value} {result.anomaly_score:.2f} "
                f"{result.defect_type or ''}"
            )

            def draw(path, image=image, amap=amap, result=result, caption=caption):
                save_overlay(path, image, amap, result.regions, caption)

            try:
                stored = self.store.put(result.frame_id, result.captured_at, data[0], data[1], draw)
                thresholds = getattr(result, "thresholds", None)
                if thresholds is not None:
                    stored = replace(stored, thresholds=thresholds.model_dump(mode="json"))
                kept.append(stored)
                metrics.FRAMES_RETAINED.labels(verdict=result.verdict.value).inc()
            except Exception as e:  # the store is an aid to review: never stop the line for it
                metrics.FRAME_STORE_FAILURES.inc()
                self.repeats.log(
                    log,
                    logging.WARNING,
                    "frame store",
                    "frame %s not kept for review: %s",
                    result.frame_id,
                    e,
                )
        return kept
