"""Frame headers <-> FrameMeta, and the service function (decode + validate + detect -> results,
dead letters). The detector is a deterministic stand-in: this pins the service's own rules."""

from __future__ import annotations

import io
import re
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from PIL import Image

from qc_stream.domain.inspection import Detection, FrameMeta
from qc_stream.errors import InputError
from qc_stream.settings import load_settings
from qc_stream.stream.service import RawFrame, inspect_batch
from qc_stream.wire.codec import (
    deadletter_headers,
    header_value,
    headers_to_meta,
    meta_to_headers,
    result_from_json,
    result_to_json,
)

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def meta(frame_id="f1", product="pill", captured_at=NOW) -> FrameMeta:
    return FrameMeta(
        frame_id=frame_id,
        camera_id="cam-1",
        line_id="line-1",
        product=product,
        captured_at=captured_at,
    )


def png(side: int, level: int = 100) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((side, side, 3), level, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def test_headers_round_trip_and_tolerate_dict_and_str_values():
    m = meta()
    assert headers_to_meta(meta_to_headers(m)) == m
    as_dict = {k: v.decode() for k, v in meta_to_headers(m)}
    assert headers_to_meta(as_dict) == m


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda h: [x for x in h if x[0] != "product"], "missing header(s): product"),
        (
            lambda h: [(k, b"yesterday" if k == "captured_at" else v) for k, v in h],
            "captured_at is not an ISO-8601 time",
        ),
        (
            lambda h: [(k, b"2" if k == "schema_version" else v) for k, v in h],
            "unsupported schema_version '2'",
        ),
        (
            lambda h: [(k, b"\xff" if k == "camera_id" else v) for k, v in h],
            "header 'camera_id' is not UTF-8",
        ),
        (
            lambda h: [(k, b"x" * 200 if k == "frame_id" else v) for k, v in h],
            "bad header 'frame_id'",
        ),
    ],
)
def test_bad_headers_say_what_is_wrong(mutate, message):
    with pytest.raises(InputError, match=re.escape(message)):
        headers_to_meta(mutate(meta_to_headers(meta())))


def test_naive_capture_time_is_read_as_utc():
    h = [
        (k, b"2026-11-26T12:00:00" if k == "captured_at" else v) for k, v in meta_to_headers(meta())
    ]
    assert headers_to_meta(h).captured_at == NOW


def test_dead_letter_headers_keep_the_original_and_add_the_reason():
    h = deadletter_headers(meta_to_headers(meta()), "undecodable image: truncated", "decode")
    assert headers_to_meta(h) == meta()
    assert header_value(h, "error") == "undecodable image: truncated"
    assert header_value(h, "error_stage") == "decode"
    assert header_value(h, "failed_at")


class StandIn:
    """Score = brightness; raises on 48-px images (a frame the model chokes on)."""

    model_version, prompt_version = "bb@1", "p1"

    def __init__(self):
        self.batches = []

    def detect(self, images, products):
        self.batches.append(len(images))
        if any(im.size == (48, 48) for im in images):
            raise RuntimeError("model exploded")
        return [Detection(anomaly_score=float(np.asarray(im).mean() / 255)) for im in images]


def frame(data: bytes, **kw) -> RawFrame:
    return RawFrame.of(data, meta_to_headers(meta(**kw)), b"cam-1")


def test_service_builds_results_with_versions_thresholds_and_latency():
    settings = load_settings(thresholds='{"screw": [0.1, 0.2]}', database_url="sqlite://")
    out = inspect_batch(
        [
            frame(
                png(32, 100),
                frame_id="a",
                product="pill",
                captured_at=datetime.now(UTC) - timedelta(seconds=2),
            ),
            frame(png(32, 100), frame_id="b", product="screw"),
        ],
        StandIn(),
        settings,
    )
    assert out.dead == []
    by_id = {r.frame_id: r for r in out.results}
    assert (
        by_id["a"].verdict.value == "ok" and by_id["b"].verdict.value == "reject"
    )  # per-product thresholds
    assert by_id["a"].latency_ms >= 2000
    assert {(r.model_version, r.prompt_version) for r in out.results} == {("bb@1", "p1")}
    assert result_from_json(result_to_json(by_id["a"])) == by_id["a"]


def test_service_dead_letters_bad_frames_and_isolates_a_frame_the_model_fails_on():
    settings = load_settings(max_frame_bytes=4096, products="pill,screw", database_url="sqlite://")
    detector = StandIn()
    frames = [
        frame(png(32), frame_id="ok-1"),
        frame(b"", frame_id="empty"),
        frame(b"\x89PNG nope", frame_id="junk"),
        frame(
            np.random.default_rng(0).integers(0, 255, 5000, dtype=np.uint8).tobytes(),
            frame_id="big",
        ),
        frame(png(32), frame_id="alien", product="spaceship"),
        frame(png(48), frame_id="poison"),
        frame(png(32), frame_id="ok-2"),
    ]
    out = inspect_batch(frames, detector, settings)
    assert sorted(r.frame_id for r in out.results) == ["ok-1", "ok-2"]
    reasons = {headers_to_meta(d.frame.headers).frame_id: (d.stage, d.reason) for d in out.dead}
    assert reasons["empty"] == ("decode", "empty frame (no image bytes)")
    assert reasons["junk"][1].startswith("undecodable image")
    assert reasons["big"][1] == "frame of 5000 bytes exceeds QC_MAX_FRAME_BYTES=4096"
    assert reasons["alien"] == (
        "headers",
        "unknown product 'spaceship' (QC_PRODUCTS lists the known ones)",
    )
    assert reasons["poison"] == ("inference", "inference failed: RuntimeError: model exploded")
    assert detector.batches[0] == 3  # one batched call first, then frame by frame
    assert all(d.frame.value is not None for d in out.dead)


def test_a_dead_letter_is_bounded_whatever_the_record_carries():
    import hashlib

    from qc_stream.wire.codec import MAX_ORIGINAL_HEADER_BYTES, deadletter_record, header_value

    small, small_headers = deadletter_record(b"abc", meta_to_headers(meta()), "bad", "decode", 10)
    assert small == b"abc" and header_value(small_headers, "truncated") == "false"
    assert header_value(small_headers, "original_sha256") == hashlib.sha256(b"abc").hexdigest()
    assert header_value(small_headers, "frame_id") == "f1"

    # Megabytes of headers and value: the letter keeps a bounded prefix of each.
    flood = [(f"h{i}", b"x" * 100_000) for i in range(100)]
    value, headers = deadletter_record(b"y" * 5_000_000, flood, "r" * 100_000, "decode", 1000)
    assert value == b"y" * 1000
    assert sum(len(k) + len(v) for k, v in headers) < MAX_ORIGINAL_HEADER_BYTES + 10_000
    assert header_value(headers, "original_size") == "5000000"
    assert header_value(headers, "truncated") == "true"
    assert len(header_value(headers, "error")) == 4096
