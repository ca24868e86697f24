"""The worker side of frame retention (``FrameRetention.keep``): kept frames get their bytes and an
overlay; a store that is full (a real write failure: the process's file-size limit, RLIMIT_FSIZE)
or gone is a warning and ``qc_frame_store_failures_total``, never an exception."""

from __future__ import annotations

import logging
import resource
import signal
from datetime import UTC, datetime

import numpy as np
from PIL import Image

from qc_stream.domain.inspection import InspectionResult, Verdict
from qc_stream.observability import metrics
from qc_stream.storage.frame_store import FrameStore
from qc_stream.stream.retention import FrameRetention


class Event:
    def __init__(self, frame_id: str, value: bytes):
        self.value = value
        self.headers = [("frame_id", frame_id.encode()), ("content_type", b"image/png")]


def result(frame_id: str) -> InspectionResult:
    return InspectionResult(
        frame_id=frame_id,
        camera_id="cam",
        line_id="line",
        product="pill",
        captured_at=datetime(2026, 11, 30, tzinfo=UTC),
        verdict=Verdict.REJECT,
        anomaly_score=0.9,
        defect_type="crack",
        model_version="m",
        prompt_version="v",
        latency_ms=1.0,
    )


def retained(frame_id: str):
    return (result(frame_id), Image.new("RGB", (64, 64)), np.zeros((64, 64), np.float32))


def failures() -> float:
    return metrics.FRAME_STORE_FAILURES._value.get()


def test_kept_frames_get_bytes_and_overlay(tmp_path):
    from qc_stream.stream.retention import raw_frames

    (tmp_path / "s").mkdir()
    keeper = FrameRetention(FrameStore(tmp_path / "s"), record=lambda rows: len(rows))
    kept = keeper.keep([retained("f1")], raw_frames([Event("f1", b"PNGDATA")]))
    assert [k.frame_id for k in kept] == ["f1"]
    assert (tmp_path / "s" / kept[0].path).read_bytes() == b"PNGDATA"
    assert Image.open(tmp_path / "s" / kept[0].overlay_path).size == (64, 64)


def test_a_full_store_is_counted_and_logged_not_raised(tmp_path, caplog):
    (tmp_path / "s").mkdir()
    keeper = FrameRetention(FrameStore(tmp_path / "s"), record=lambda rows: len(rows))
    raw = {"big": (b"x" * 200_000, "image/png")}
    before = failures()
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    old = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of the signal
    resource.setrlimit(resource.RLIMIT_FSIZE, (50_000, hard))
    try:
        with caplog.at_level(logging.WARNING, logger="qc_stream.stream.retention"):
            kept = keeper.keep([retained("big")], raw)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old)
    assert kept == []
    assert failures() == before + 1
    assert "frame big not kept for review" in caplog.text
    assert not [p for p in (tmp_path / "s").rglob("*") if p.is_file()]  # no partial file left


def test_a_missing_store_is_counted_and_logged_not_raised(tmp_path, caplog):
    keeper = FrameRetention(FrameStore(tmp_path / "gone"), record=lambda rows: len(rows))
    before = failures()
    with caplog.at_level(logging.WARNING, logger="qc_stream.stream.retention"):
        kept = keeper.keep(
            [retained("a"), retained("b")], {"a": (b"1", "image/png"), "b": (b"2", "image/png")}
        )
    assert kept == [] and failures() == before + 2
    assert "missing" in caplog.text
