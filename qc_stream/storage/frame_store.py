"""The frame store: the bytes (and overlay) of frames kept for review, in a local directory.

Layout: ``<root>/<capture day>/<name>.<ext>`` and ``<name>.overlay.png`` beside it, where
``<name>`` is the frame id made file-safe plus a hash of the exact id (two ids that read the same
once made safe still get two files). The path depends only on the frame id and its capture time,
so a redelivered frame finds its file already there and writes nothing (idempotent). Paths read
back from the database are resolved and must stay under the root: a stored or forged ``../``
never leaves the store. ``cleanup`` enforces the retention limits (days, then bytes).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from qc_stream.errors import QcError

EXTENSIONS = {"image/jpeg": "jpg", "image/png": "png", "image/bmp": "bmp", "image/webp": "webp"}
OVERLAY_SUFFIX = ".overlay.png"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class FrameStoreError(QcError):
    """The store cannot be written or read (missing, full, not a directory, outside path)."""


def keeps(verdict: str, frame_id: str, sample_ok: float) -> bool:
    """Whether a frame is kept for review: every warn/reject, and ``sample_ok`` of the ok frames
    chosen by a hash of the frame id (deterministic: every replay and every worker agree)."""
    if verdict != "ok":
        return True
    if sample_ok <= 0:
        return False
    h = int.from_bytes(hashlib.sha256(frame_id.encode()).digest()[:8], "big")
    return h / 2**64 < sample_ok


def file_name(frame_id: str) -> str:
    """A file name for a frame id: its safe characters (at most 80) + 12 hex of its sha256."""
    safe = _UNSAFE.sub("_", frame_id)[:80].lstrip(".") or "frame"
    return f"{safe}-{hashlib.sha256(frame_id.encode()).hexdigest()[:12]}"


@dataclass(frozen=True)
class StoredFrame:
    frame_id: str
    captured_at: datetime
    path: str  # relative to the store root
    overlay_path: str | None
    size_bytes: int
    thresholds: dict | None = None  # what decided the verdict, kept with the frame for reviewers


@dataclass(frozen=True)
class CleanupReport:
    removed_files: int
    removed_bytes: int
    kept_bytes: int
    removed_paths: tuple[str, ...]


class FrameStore:
    def __init__(self, root: Path | str, *, max_days: int = 30, max_bytes: int = 20 * 1024**3):
        self.root = Path(root)
        self.max_days = max_days
        self.max_bytes = max_bytes

    # --- writes (worker) ---
    def put(
        self,
        frame_id: str,
        captured_at: datetime,
        data: bytes,
        content_type: str = "image/jpeg",
        overlay: Callable[[Path], object] | None = None,
    ) -> StoredFrame:
        """Keep a frame (and its overlay, drawn by ``overlay(path)``); nothing is rewritten when
        the files exist. ``FrameStoreError`` when the store is missing or cannot be written."""
        if not self.root.is_dir():
            raise FrameStoreError(f"frame store {self.root} is missing or not a directory")
        day = captured_at.astimezone(UTC).date().isoformat()
        name = file_name(frame_id)
        rel = f"{day}/{name}.{EXTENSIONS.get(content_type, 'bin')}"
        target = self.root / rel
        try:
            target.parent.mkdir(exist_ok=True)
            if not target.exists():
                _write_atomic(target, data)
            overlay_rel = None
            if overlay is not None:
                overlay_rel = f"{day}/{name}{OVERLAY_SUFFIX}"
                overlay_target = self.root / overlay_rel
                if not overlay_target.exists():
                    tmp = overlay_target.with_name(f".{name}.{os.getpid()}.tmp.png")
                    overlay(tmp)
                    os.replace(tmp, overlay_target)
        except OSError as e:
            raise FrameStoreError(f"cannot write {rel} to the frame store: {e}") from e
        size = len(data) + (
            (self.root / overlay_rel).stat().st_size if overlay_rel is not None else 0
        )
        return StoredFrame(frame_id, captured_at, rel, overlay_rel, size)

    # --- reads (review station) ---
    def resolve(self, rel: str) -> Path:
        """The file at ``rel`` under the root; ``FrameStoreError`` for a path that leaves the
        store or a file that is gone."""
        root = self.root.resolve()
        path = (root / rel).resolve()
        if root not in path.parents:
            raise FrameStoreError(f"{rel!r} is outside the frame store")
        if not path.is_file():
            raise FrameStoreError(f"{rel!r} is no longer in the frame store")
        return path

    # --- retention ---
    def cleanup(self, now: datetime | None = None) -> CleanupReport:
        """Remove capture days older than ``max_days``, then the oldest frames (with their
        overlays: a frame and its overlay go together) until the store holds at most
        ``max_bytes``. Returns what was removed (relative paths)."""
        today = (now or datetime.now(UTC)).astimezone(UTC).date()
        oldest_kept = today - timedelta(days=self.max_days)
        removed: list[str] = []
        removed_bytes = 0

        def drop(paths: list[Path]) -> int:
            freed = 0
            for path in paths:
                size = path.stat().st_size if path.exists() else 0
                path.unlink(missing_ok=True)
                removed.append(path.relative_to(self.root).as_posix())
                freed += size
            return freed

        keep: list[tuple[date, float, str, list[Path], int]] = []
        for day, paths in self._units():
            size = sum(p.stat().st_size for p in paths)
            if day < oldest_kept:
                removed_bytes += drop(paths)
            else:
                written = min(p.stat().st_mtime for p in paths)
                keep.append((day, written, paths[0].name, paths, size))
        total = sum(u[4] for u in keep)
        keep.sort(key=lambda u: u[:3])  # oldest first: capture day, then write time
        while keep and total > self.max_bytes:
            unit = keep.pop(0)
            removed_bytes += drop(unit[3])
            total -= unit[4]
        for folder in self.root.iterdir():
            if folder.is_dir() and _DAY.match(folder.name) and not any(folder.iterdir()):
                shutil.rmtree(folder, ignore_errors=True)
        return CleanupReport(len(removed), removed_bytes, total, tuple(removed))

    def usage(self) -> int:
        return sum(p.stat().st_size for _, paths in self._units() for p in paths)

    def _units(self) -> list[tuple[date, list[Path]]]:
        """Each kept frame as (capture day, [frame file, overlay file if any])."""
        if not self.root.is_dir():
            raise FrameStoreError(f"frame store {self.root} is missing or not a directory")
        out = []
        for folder in self.root.iterdir():
            if not (folder.is_dir() and _DAY.match(folder.name)):
                continue
            day = date.fromisoformat(folder.name)
            units: dict[str, list[Path]] = {}
            for f in sorted(folder.iterdir()):
                if not f.is_file() or f.name.startswith("."):
                    continue
                if f.name.endswith(OVERLAY_SUFFIX):
                    stem = f.name.removesuffix(OVERLAY_SUFFIX)
                else:
                    stem = f.name.rsplit(".", 1)[0]
                units.setdefault(stem, []).append(f)
            out += [(day, paths) for paths in units.values()]
        return out


def _write_atomic(target: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
