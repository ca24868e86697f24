"""Image bytes -> RGB picture, and a batch of pictures -> the backbone's input tensor.

Every bad input becomes an ``InputError`` whose message says what is wrong (not an image, truncated,
too small, too large), so a worker can dead-letter it and ``predict`` can print it per file.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from qc_stream.errors import InputError

MIN_SIDE_PX = 16
# 50 megapixels: far above any line camera, far below what would exhaust a worker's memory.
MAX_PIXELS = 50_000_000


def decode_image(
    data: bytes, *, max_pixels: int = MAX_PIXELS, min_side: int = MIN_SIDE_PX
) -> Image.Image:
    """Decode JPEG/PNG/BMP/TIFF/WebP bytes into an 8-bit RGB ``PIL.Image``.

    Grayscale, palette, RGBA/LA (alpha dropped), CMYK and 16-bit/32-bit images are converted; EXIF
    orientation is applied. Raises ``InputError`` for empty or undecodable data, images with a side
    below ``min_side`` pixels, and images above ``max_pixels`` pixels (checked from the header, before
    the pixels are decoded, so a decompression bomb costs nothing).
    """
    if not data:
        raise InputError("empty image data")
    try:
        with warnings.catch_warnings():
            # We apply our own size limit below; PIL's bomb warning would only be noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as e:
        raise InputError(f"image too large: {e}") from None
    except UnidentifiedImageError:
        # PIL's own message only names the in-memory buffer, which tells the user nothing.
        raise InputError("not a decodable image (unknown or corrupt image format)") from None
    except (OSError, ValueError, SyntaxError) as e:
        raise InputError(f"not a decodable image ({type(e).__name__}: {e})") from None

    w, h = img.size
    if w * h > max_pixels:
        raise InputError(
            f"image too large: {w}x{h} = {w * h / 1e6:.1f} MP (limit {max_pixels / 1e6:.0f} MP)"
        )
    if min(w, h) < min_side:
        raise InputError(f"image too small: {w}x{h} (each side must be at least {min_side} px)")

    try:
        img.load()
        img = ImageOps.exif_transpose(img)
        return to_rgb(img)
    except (OSError, ValueError, SyntaxError) as e:
        raise InputError(f"corrupt or truncated image ({type(e).__name__}: {e})") from None


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode -> 8-bit RGB (high bit depths scaled down, not clipped)."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        a = np.asarray(img, dtype=np.float64)
        if img.mode.startswith("I;16"):
            scale = 65535.0
        else:
            # 32-bit int / float: no fixed range; stretch the actual range (common for depth/thermal).
            lo, hi = float(a.min()), float(a.max())
            a, scale = a - lo, (hi - lo) or 1.0
        gray = np.clip(np.rint(a * (255.0 / scale)), 0, 255).astype(np.uint8)
        return Image.fromarray(gray, mode="L").convert("RGB")
    if img.mode == "P":
        img = img.convert("RGBA")
    return img.convert("RGB")


# ---------------------------------------------------------------- batch preprocessing


def resize_rgb(img: Image.Image, size: int) -> np.ndarray:
    """RGB picture -> uint8 [size, size, 3], the whole frame (no crop), bicubic.

    No centre crop: the anomaly map must cover the whole frame so regions map back to it exactly.
    PIL's bicubic matches the backbone's own preprocessing; ``reducing_gap`` first shrinks large
    frames by an integer factor (box filter), which makes a 1280x960 -> 224 resize several times
    faster than a plain bicubic (and than converting the full frame to an array first).
    """
    if img.mode != "RGB":
        img = img.convert("RGB")
    if img.size != (size, size):
        img = img.resize((size, size), Image.BICUBIC, reducing_gap=3.0)
    return np.asarray(img)


def _resize_threads() -> int:
    return min(
        8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    )


_POOL: tuple[int, ThreadPoolExecutor] | None = None


def _resize_pool() -> ThreadPoolExecutor:
    """One pool per process, created on first use. Keyed by pid: a forked child inherits the pool
    object but not its threads, and would wait forever on it."""
    global _POOL
    if _POOL is None or _POOL[0] != os.getpid():
        _POOL = (
            os.getpid(),
            ThreadPoolExecutor(max_workers=_resize_threads(), thread_name_prefix="qc-resize"),
        )
    return _POOL[1]


def preprocess_batch(
    images: Sequence[Image.Image],
    size: int,
    mean: Sequence[float],
    std: Sequence[float],
    device="cpu",
    dtype=None,
):
    """Pictures -> normalised float tensor [B, 3, size, size] on ``device``.

    Resizing happens on the CPU in uint8, one picture per thread (PIL releases the GIL while it
    resizes; on a GPU worker a single thread resizing 256 px frames to 518 px was as slow as the
    ViT-L forward). The batch travels to the device as uint8 (4x fewer bytes than float) and is
    converted and normalised there.
    """
    if not images:
        raise ValueError("empty batch")
    if len(images) == 1 or _resize_threads() == 1:
        resized = [resize_rgb(im, size) for im in images]
    else:
        resized = list(_resize_pool().map(lambda im: resize_rgb(im, size), images))
    if torch.device(device).type == "cuda":
        # Pinned host memory: the copy to the GPU is then truly asynchronous (a pageable one makes
        # the CPU wait), so a pipeline can prepare the next batch while this one is copied.
        host = torch.empty((len(resized), size, size, 3), dtype=torch.uint8, pin_memory=True)
        np.stack(resized, out=host.numpy())
    else:
        host = torch.from_numpy(np.stack(resized))  # [B, S, S, 3] uint8
    t = host.to(device, non_blocking=True).permute(0, 3, 1, 2)
    t = t.to(dtype or torch.float32).div_(255.0)
    m = torch.tensor(mean, device=device, dtype=t.dtype).view(1, 3, 1, 1)
    s = torch.tensor(std, device=device, dtype=t.dtype).view(1, 3, 1, 1)
    return t.sub_(m).div_(s).contiguous()
