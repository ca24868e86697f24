"""Fast noise and geometry helpers for the generator (float32 images in 0..1, OpenCV for speed).

Cheap smooth noise comes from upsampling a small random grid with bicubic interpolation; this is
~50x faster than summing sinusoids and good enough for material textures.
"""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np

cv2.setNumThreads(1)  # one core per generator; callers parallelise by process if they want


@lru_cache(maxsize=8)
def grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (yy, xx), float32, read-only."""
    ax = np.arange(size, dtype=np.float32)
    yy, xx = np.meshgrid(ax, ax, indexing="ij")
    yy.flags.writeable = False
    xx.flags.writeable = False
    return yy, xx


def smooth_noise(
    rng: np.random.Generator, h: int, w: int, cells_y: int, cells_x: int | None = None
) -> np.ndarray:
    """Zero-mean smooth noise of roughly unit variance with about `cells` blobs per side."""
    small = rng.standard_normal((max(cells_y, 2), max(cells_x or cells_y, 2)), dtype=np.float32)
    # bicubic only where blobs are large; linear is indistinguishable for fine grids and 3x cheaper
    interp = cv2.INTER_CUBIC if max(small.shape) <= 8 else cv2.INTER_LINEAR
    return cv2.resize(small, (w, h), interpolation=interp)


def fractal(
    rng: np.random.Generator, size: int, cells=(4, 8, 16, 32), falloff: float = 0.55
) -> np.ndarray:
    out = np.zeros((size, size), np.float32)
    gain = 1.0
    for c in cells:
        out += gain * smooth_noise(rng, size, size, min(c, size))
        gain *= falloff
    return out / np.float32(np.sqrt(sum(falloff ** (2 * i) for i in range(len(cells)))))


@lru_cache(maxsize=4)
def _bank(size: int) -> np.ndarray:
    # Fixed white-noise bank; per-sample noise is a random window of it. Drawing fresh Gaussian
    # noise costs ~0.6 ms per 256x256 plane, more than the rest of a texture.
    bank = np.random.default_rng(20251126).standard_normal((2 * size, 2 * size), dtype=np.float32)
    bank.flags.writeable = False
    return bank


def white_noise(rng: np.random.Generator, size: int) -> np.ndarray:
    """A unit-variance white-noise plane (a seeded random window of a fixed bank, maybe flipped)."""
    oy, ox = rng.integers(0, size, 2)
    w = _bank(size)[oy : oy + size, ox : ox + size]
    if rng.random() < 0.5:
        w = w[::-1]
    if rng.random() < 0.5:
        w = w.T
    return np.ascontiguousarray(w)


def fine_noise(rng: np.random.Generator, size: int, sigma: float = 0.7) -> np.ndarray:
    n = white_noise(rng, size)
    return cv2.GaussianBlur(n, (0, 0), sigma) * np.float32(1.0 / (0.28 / sigma + 0.05) ** 0.5 * 0.3)


def rotated_coords(size: int, angle: float, cx: float | None = None, cy: float | None = None):
    """(u, v): coordinates along and across direction `angle` (radians) about (cx, cy)."""
    yy, xx = grid(size)
    cx = size / 2 if cx is None else cx
    cy = size / 2 if cy is None else cy
    c, s = np.float32(np.cos(angle)), np.float32(np.sin(angle))
    dx, dy = xx - np.float32(cx), yy - np.float32(cy)
    return dx * c + dy * s, -dx * s + dy * c


def colour(rng: np.random.Generator, base, jitter: float = 0.06) -> np.ndarray:
    c = np.asarray(base, np.float32) + rng.uniform(-jitter, jitter, 3).astype(np.float32)
    return np.clip(c, 0.0, 1.0)


def shade(gray: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Colour a grayscale intensity map (HxW) with an RGB colour: HxWx3."""
    gray = np.asarray(gray, np.float32)
    return cv2.merge([gray * c[0], gray * c[1], gray * c[2]])


def mul(img: np.ndarray, gray: np.ndarray) -> None:
    """img *= gray per pixel, in place (faster than numpy's broadcast over a trailing axis of 3)."""
    gray = np.asarray(gray, np.float32)
    cv2.multiply(img, cv2.merge([gray, gray, gray]), dst=img)


def blend(img: np.ndarray, target, alpha: np.ndarray) -> None:
    """img <- img * (1 - alpha) + target * alpha, in place, only inside alpha's bounding box
    (defects are local; this keeps them cheap). `target` is HxWx3 or one colour."""
    rows = np.flatnonzero(alpha.any(axis=1))
    if rows.size == 0:
        return
    cols = np.flatnonzero(alpha.any(axis=0))
    box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    a = alpha[box].astype(np.float32, copy=False)
    target = np.asarray(target, np.float32)
    t = target[box] if target.ndim == 3 else target
    sub = img[box]
    sub += (t - sub) * cv2.merge([a, a, a])


def aa_mask(size: int, draw) -> np.ndarray:
    """Run `draw(canvas)` on a uint8 canvas (255 = ink) with anti-aliasing; return float alpha."""
    canvas = np.zeros((size, size), np.uint8)
    draw(canvas)
    return canvas.astype(np.float32) * np.float32(1 / 255)


def soft_blob(
    rng: np.random.Generator, size: int, cy: float, cx: float, r: float, irregular: float = 0.5
) -> np.ndarray:
    """An irregular soft blob (float alpha 0..1, 1 inside) of radius ~r, computed on its crop only."""
    out = np.zeros((size, size), np.float32)
    half = int(r * 1.8) + 2
    y0, y1 = max(0, int(cy) - half), min(size, int(cy) + half + 1)
    x0, x1 = max(0, int(cx) - half), min(size, int(cx) + half + 1)
    if y1 <= y0 or x1 <= x0:
        return out
    yy, xx = grid(size)
    dy = yy[y0:y1, x0:x1] - np.float32(cy)
    dx = xx[y0:y1, x0:x1] - np.float32(cx)
    d = np.sqrt(dy * dy + dx * dx) / np.float32(max(r, 1.0))
    n = smooth_noise(rng, y1 - y0, x1 - x0, 4)
    field = 1.0 - d + np.float32(irregular * 0.35) * n
    out[y0:y1, x0:x1] = np.clip(field * 4.0, 0.0, 1.0)
    return out


def pick_point(rng: np.random.Generator, where: np.ndarray) -> tuple[int, int]:
    """A random (y, x) where the boolean mask is True (the centre when it is empty)."""
    idx = np.flatnonzero(where.ravel())
    if idx.size == 0:
        return where.shape[0] // 2, where.shape[1] // 2
    i = int(idx[rng.integers(idx.size)])
    return divmod(i, where.shape[1])


def edge_of(region: np.ndarray, width: int = 2) -> np.ndarray:
    """Boolean band of `width` px on the inner side of a region's boundary."""
    m = region.astype(np.uint8)
    k = np.ones((2 * width + 1, 2 * width + 1), np.uint8)
    return (m > 0) & (cv2.erode(m, k) == 0)
