"""Frame sources for a camera producer. Each yields ``SourceFrame``s (encoded bytes + a little context).

- ``directory``: every file of a folder once, sorted, sent as-is (non-images too: the worker must
  dead-letter them, which is the point).
- ``video``: a video file, an RTSP/HTTP URL or a USB camera index, read with OpenCV.
"""

from __future__ import annotations

import io
import mimetypes
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from qc_stream.errors import InputError


@dataclass(frozen=True)
class SourceFrame:
    data: bytes
    content_type: str
    product: str | None = None  # known only for synthetic frames
    defect_type: str | None = None  # ground truth, synthetic frames only (not sent)
    name: str | None = None  # file name for directory sources


def encode_jpeg(image: np.ndarray, quality: int = 90) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def hidden_files(path: Path) -> list[str]:
    """Names of the regular dotfiles of ``path`` (``.DS_Store``, editor swap files), sorted."""
    return sorted(p.name for p in path.iterdir() if p.is_file() and p.name.startswith("."))


def regular_files(path: Path) -> list[Path]:
    """The regular, non-hidden files of ``path`` (not recursive), sorted by name; at least one."""
    if not path.is_dir():
        raise InputError(f"not a directory: {path}")
    files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
    if not files:
        hidden = hidden_files(path)
        raise InputError(
            f"no files in {path}"
            + (f" (only {len(hidden)} hidden file(s), which are skipped)" if hidden else "")
        )
    return files


def directory(
    path: Path, *, on_hidden: Callable[[list[str]], None] | None = None
) -> Iterator[SourceFrame]:
    """Every regular file of ``path`` (not recursive), sorted by name, sent once.

    Dotfiles are skipped; ``on_hidden`` gets their names (once, before the first frame) so the
    caller can say so."""
    files = regular_files(path)
    if on_hidden and (hidden := hidden_files(path)):
        on_hidden(hidden)
    for p in files:
        ctype = mimetypes.guess_type(p.name)[0] or "application/octet-stream"
        yield SourceFrame(p.read_bytes(), ctype, name=p.name)


def video(spec: str, *, count: int | None = None, quality: int = 90) -> Iterator[SourceFrame]:
    """Frames of a video file, an ``rtsp://``/``http://`` stream, or a USB camera (``usb:0`` or ``0``)."""
    import cv2

    target: str | int = spec
    if spec.startswith("usb:"):
        target = spec.removeprefix("usb:")
    if isinstance(target, str) and target.isdigit():
        target = int(target)
    elif isinstance(target, str) and "://" not in target and not Path(target).is_file():
        raise InputError(f"no such video file: {target}")
    cap = cv2.VideoCapture(target)
    if not cap.isOpened():
        raise InputError(f"cannot open video source {spec!r}")
    try:
        n = 0
        while count is None or n < count:
            ok, frame = cap.read()
            if not ok:
                return  # end of file or stream closed
            ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, quality])
            if not ok:
                raise InputError(f"could not JPEG-encode frame {n} of {spec!r}")
            yield SourceFrame(buf.tobytes(), "image/jpeg")
            n += 1
    finally:
        cap.release()


def open_source(
    spec: str, *, count: int | None, on_hidden: Callable[[list[str]], None] | None = None
) -> Iterator[SourceFrame]:
    """``--source`` -> frames: a directory, a video file, ``rtsp://…``, ``usb:N``.

    ``synthetic`` frames come from ``qc_stream.synth.source`` (the runtime never imports the
    generator); the camera command picks that source itself."""
    if "://" in spec or spec.startswith("usb:") or spec.isdigit():
        return video(spec, count=count)
    p = Path(spec)
    if p.is_dir():
        return directory(p, on_hidden=on_hidden)
    if p.is_file():
        return video(spec, count=count)
    raise InputError(
        f"--source {spec!r}: not 'synthetic', a directory, a video file, rtsp://… or usb:N"
    )
