"""Seeded synthetic samples: `generate(product, n, seed, ...)` and the endless `frames(...)` stream.

Sample i of (product, seed) depends only on those three values (its own RNG is seeded with
[seed, product id, i]), so a list and a stream with the same seed agree, and any subset can be
regenerated exactly.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from qc_stream.domain.catalog import PRODUCTS
from qc_stream.domain.catalog import product as lookup_product
from qc_stream.errors import InputError
from qc_stream.synth.defects import OUTLINE_DEFECTS, PAINTERS
from qc_stream.synth.noise import grid, mul, white_noise
from qc_stream.synth.products import RENDERERS

MIN_MASK_FRACTION = 2e-4  # a defect must change at least this share of the image


@dataclass(frozen=True, eq=False)
class Sample:
    image: np.ndarray  # uint8 HxWx3 RGB
    mask: np.ndarray  # uint8 HxW, 1 = defect pixel
    defect_type: str | None  # None = normal
    product: str
    strength: float = 0.0  # defect contrast in (0, 1]; 0 for normal samples

    @property
    def is_defective(self) -> bool:
        return self.defect_type is not None


def _strength(rng: np.random.Generator) -> float:
    # Mostly clear defects, a fat tail of subtle ones (real lines see both).
    if rng.random() < 0.25:
        return float(rng.uniform(0.15, 0.35))
    return float(rng.uniform(0.35, 1.0))


def _finish(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Camera effects: uneven lighting, exposure, blur, sensor noise; then 8-bit RGB."""
    size = img.shape[0]
    yy, xx = grid(size)
    ang = rng.uniform(0, 2 * np.pi)
    ramp = (
        (xx - size / 2) * np.float32(np.cos(ang)) + (yy - size / 2) * np.float32(np.sin(ang))
    ) / np.float32(size)
    light = np.float32(rng.uniform(0.8, 1.15)) * (1 + np.float32(rng.uniform(0, 0.3)) * ramp)
    mul(img, light)
    sigma = rng.uniform(0, 1.0) * size / 256
    if sigma > 0.35:
        img = cv2.GaussianBlur(img, (0, 0), sigma)
    grain = white_noise(rng, size) * np.float32(rng.uniform(0.004, 0.025))
    img += cv2.merge([grain, np.roll(grain, 1, 0), np.roll(grain, 1, 1)])
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


def _product_id(name: str) -> int:
    return zlib.crc32(name.encode())


def _paint(
    kind: str, scene, rng: np.random.Generator, strength: float
) -> tuple[np.ndarray, np.ndarray]:
    """One defect drawn into a copy of the scene: (image, bool mask).

    A surface defect is kept on the product: strokes that ran off its edge are not drawn, so no
    visible change lies outside the mask (before this, a third of a washer scratch's visible change
    on average, and up to 80 %, was drawn on the background, unlabelled)."""
    img = scene.img.copy()
    mask = PAINTERS[kind](img, scene, rng, strength)
    if kind not in OUTLINE_DEFECTS:
        off_part = ~scene.region
        if off_part.any():  # objects only; a texture fills the frame
            np.copyto(img, scene.img, where=off_part[..., None])
        mask = mask & scene.region
    return img, mask


def render_sample(
    product: str,
    seed: int,
    index: int,
    size: int = 256,
    defect_rate: float = 0.5,
    defect_types: Sequence[str] | None = None,
) -> Sample:
    """Draw sample number `index` of the (product, seed) stream.

    Scene, defect and camera effects use separate random streams, so the normal and the defective
    rendering of one index show the same part under the same camera: only the defect differs."""
    base = [seed & 0xFFFFFFFF, _product_id(product), index]
    scene_rng, defect_rng, camera_rng = (np.random.default_rng(base + [k]) for k in range(3))
    scene = RENDERERS[product](scene_rng, size)
    kinds = list(defect_types) if defect_types is not None else list(PRODUCTS[product].defects)
    if not kinds or defect_rng.random() >= defect_rate:
        return Sample(
            _finish(scene.img, camera_rng), np.zeros((size, size), np.uint8), None, product
        )
    kind = kinds[int(defect_rng.integers(len(kinds)))]
    s = _strength(defect_rng)
    min_px = max(4, int(MIN_MASK_FRACTION * size * size))
    for _attempt in range(6):
        img, mask = _paint(kind, scene, defect_rng, s)
        if int(mask.sum()) >= min_px:
            break
        s = max(s, 0.5)  # retry a clearer, new draw; geometry can make a defect vanish
    else:  # last resort: the same type at full strength, and never an empty mask
        img, mask = _paint(kind, scene, defect_rng, 1.0)
        if not mask.any():
            y, x = np.argwhere(scene.region)[0]
            mask[y, x] = True
    return Sample(_finish(img, camera_rng), mask.astype(np.uint8), kind, product, s)


def closeup_crop(sample: Sample, rng: np.random.Generator, size: int) -> np.ndarray:
    """A size x size crop of a sample rendered larger than `size` (a close-up for pretraining).

    A defective sample's crop keeps the defect's centre in the crop's middle 60 %, so a caption
    naming the defect stays true; a normal sample's crop is anywhere."""
    big = sample.image.shape[0]
    if size > big:
        raise InputError(f"crop size {size} is larger than the image ({big})")
    if sample.defect_type is None:
        y0, x0 = (int(v) for v in rng.integers(0, big - size + 1, 2))
    else:
        ys, xs = np.nonzero(sample.mask)
        off = rng.uniform(0.2, 0.8, 2) * size
        y0 = int(np.clip(ys.mean() - off[0], 0, big - size))
        x0 = int(np.clip(xs.mean() - off[1], 0, big - size))
    return np.ascontiguousarray(sample.image[y0 : y0 + size, x0 : x0 + size])


def _check(product: str, size: int, defect_rate: float, defect_types: Sequence[str] | None) -> None:
    lookup_product(product)
    if not 32 <= size <= 2048:
        raise InputError(f"image size must be in 32..2048, got {size}")
    if not 0.0 <= defect_rate <= 1.0:
        raise InputError(f"defect rate must be in 0..1, got {defect_rate}")
    for t in defect_types or ():
        if t not in PAINTERS:
            raise InputError(
                f"unknown synthetic defect type {t!r}; choose from: {', '.join(PAINTERS)}"
            )


def generate(
    product: str,
    n: int,
    seed: int = 0,
    size: int = 256,
    defect_rate: float = 0.5,
    defect_types: Sequence[str] | None = None,
    start: int = 0,
) -> list[Sample]:
    """n samples of `product`; a share `defect_rate` defective, types drawn from the product's subset
    (or from `defect_types` when given). Same arguments -> identical arrays."""
    _check(product, size, defect_rate, defect_types)
    return [
        render_sample(product, seed, start + i, size, defect_rate, defect_types) for i in range(n)
    ]


def frames(
    product: str,
    seed: int = 0,
    size: int = 256,
    defect_rate: float = 0.1,
    defect_types: Sequence[str] | None = None,
) -> Iterator[Sample]:
    """Endless camera-like stream of samples of one product (the `camera --source synthetic` feed)."""
    _check(product, size, defect_rate, defect_types)
    i = 0
    while True:
        yield render_sample(product, seed, i, size, defect_rate, defect_types)
        i += 1
