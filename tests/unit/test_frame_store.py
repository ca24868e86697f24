"""The frame store: idempotent by frame id, file names that cannot leave the store, reads confined
to the root, retention by days then bytes (a frame leaves with its overlay), the ok sample."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

import pytest

from qc_stream.storage.frame_store import FrameStore, FrameStoreError, file_name, keeps

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def overlay(data: bytes):
    def draw(path):
        path.write_bytes(data)

    return draw


@pytest.fixture
def store(tmp_path) -> FrameStore:
    (tmp_path / "frames").mkdir()
    return FrameStore(tmp_path / "frames", max_days=7, max_bytes=10_000)


def test_put_is_idempotent_by_frame_id(store):
    first = store.put("cam-1/000001", NOW, b"A" * 100, "image/png", overlay(b"o" * 10))
    again = store.put("cam-1/000001", NOW, b"B" * 100, "image/png", overlay(b"p" * 10))
    assert first == again
    assert (store.root / first.path).read_bytes() == b"A" * 100  # not rewritten
    assert (store.root / first.overlay_path).read_bytes() == b"o" * 10
    assert first.path.startswith("2026-11-30/") and first.path.endswith(".png")
    assert first.size_bytes == 110
    assert len(list(store.root.rglob("*"))) == 3  # the day folder and two files, no temp files


@pytest.mark.parametrize("frame_id", ["../../etc/passwd", "/abs/path", "..", "a\x00b", "\u202e"])
def test_file_names_stay_inside_the_store(store, frame_id):
    name = file_name(frame_id)
    assert "/" not in name and not name.startswith(".") and "\x00" not in name
    stored = store.put(frame_id, NOW, b"x", "image/jpeg")
    assert (store.root / stored.path).resolve().parent.parent == store.root.resolve()


def test_ids_that_read_the_same_when_made_safe_get_two_files(store):
    a = store.put("cam/1", NOW, b"a")
    b = store.put("cam_1", NOW, b"b")
    assert a.path != b.path


def test_resolve_refuses_paths_leaving_the_store_and_missing_files(store, tmp_path):
    (tmp_path / "secret").write_text("x")
    for rel in ("../secret", "/etc/passwd", "2026-11-30/../../secret"):
        with pytest.raises(FrameStoreError, match="outside"):
            store.resolve(rel)
    with pytest.raises(FrameStoreError, match="no longer"):
        store.resolve("2026-11-30/gone.png")


def test_missing_store_is_a_frame_store_error(tmp_path):
    gone = FrameStore(tmp_path / "nope")
    with pytest.raises(FrameStoreError, match="missing"):
        gone.put("f", NOW, b"x")
    with pytest.raises(FrameStoreError, match="missing"):
        gone.cleanup(NOW)


def test_cleanup_removes_old_days_then_oldest_frames_with_their_overlays(store):
    old = store.put("old", NOW - timedelta(days=8), b"o" * 100, "image/png", overlay(b"v" * 50))
    keep = store.put("day-6", NOW - timedelta(days=6), b"k" * 100)
    report = store.cleanup(NOW)
    assert set(report.removed_paths) == {old.path, old.overlay_path}
    assert report.removed_bytes == 150 and report.kept_bytes == 100
    assert not (store.root / old.path).parent.exists()  # the emptied day folder is gone too
    assert (store.root / keep.path).exists()

    # Bytes: 4 frames of 3000 + 1000 overlay bytes each = 16000 > 10000: the two oldest go.
    frames = []
    for n in range(4):
        f = store.put(f"f{n}", NOW, b"x" * 3000, "image/png", overlay(b"y" * 1000))
        t = NOW.timestamp() + n
        for rel in (f.path, f.overlay_path):
            os.utime(store.root / rel, (t, t))
        frames.append(f)
    report = store.cleanup(NOW)
    assert set(report.removed_paths) == {
        keep.path,  # an older capture day goes first
        frames[0].path,
        frames[0].overlay_path,
        frames[1].path,
        frames[1].overlay_path,
    }
    assert report.kept_bytes == 8000 <= store.max_bytes
    assert store.usage() == 8000


def test_every_flagged_frame_and_a_deterministic_sample_of_ok_frames_is_kept():
    ids = [f"cam-{n}" for n in range(2000)]
    assert all(keeps("warn", i, 0.0) and keeps("reject", i, 0.0) for i in ids)
    assert not any(keeps("ok", i, 0.0) for i in ids)
    assert all(keeps("ok", i, 1.0) for i in ids)
    sample = [i for i in ids if keeps("ok", i, 0.1)]
    assert 140 <= len(sample) <= 260  # ~10 % of 2000
    assert sample == [i for i in ids if keeps("ok", i, 0.1)]  # the same every time
