"""Labelled examples for ``qc-stream retrain --examples DIR``.

Layout (PNG, JPEG, BMP or TIFF)::

    DIR/<product>/<defect>/*.png           images showing the registered defect type <defect>
    DIR/<product>/<defect>/masks/*.png     optional pixel masks, same file stem (nonzero = defect)
    DIR/<product>/good/*.png               optional defect-free images of the product

``<product>/<defect>`` must be an active registered type (compared ignoring case); the registered
spelling is the word trained. Images without a mask train the image-level loss only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from qc_stream.domain.defects import DefectType, name_key
from qc_stream.errors import InputError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}
NORMAL_DIRS = {"good", "normal", "ok"}


@dataclass(frozen=True)
class Example:
    image: np.ndarray  # uint8 HxWx3
    mask: np.ndarray | None  # uint8 HxW (0/1) or None (image-level label only)
    defect_type: str | None  # None: a defect-free image
    product: str
    path: str


def _read_image(path: Path) -> np.ndarray:

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as e:
        raise InputError(f"{path}: not a readable image ({e.__class__.__name__})") from None


def _read_mask(path: Path, shape: tuple[int, int]) -> np.ndarray:

    try:
        with Image.open(path) as im:
            mask = (np.asarray(im.convert("L")) > 0).astype(np.uint8)
    except (UnidentifiedImageError, OSError) as e:
        raise InputError(f"{path}: not a readable mask image ({e.__class__.__name__})") from None
    if mask.shape != shape:
        raise InputError(
            f"{path}: mask is {mask.shape[1]}x{mask.shape[0]} but its image is {shape[1]}x{shape[0]}"
        )
    return mask


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def load_examples(root: str | Path, registered: list[DefectType]) -> list[Example]:
    """Read every example under ``root``; refuse folders that name no active registered type."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"examples folder {root} does not exist")
    active = {(d.product, name_key(d.name)): d.name for d in registered if d.active}
    out: list[Example] = []
    for product_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        product = product_dir.name
        for type_dir in sorted(p for p in product_dir.iterdir() if p.is_dir()):
            normal = type_dir.name.casefold() in NORMAL_DIRS
            word = None if normal else active.get((product, name_key(type_dir.name)))
            if not normal and word is None:
                raise InputError(
                    f"{type_dir}: {type_dir.name!r} is not an active registered defect type of product "
                    f"{product!r}; register it first (qc-stream defects add --product {product} --name ...)"
                )
            masks_dir = type_dir / "masks"
            for image_path in _images_in(type_dir):
                image = _read_image(image_path)
                mask = None
                if normal:
                    mask = np.zeros(image.shape[:2], dtype=np.uint8)
                elif masks_dir.is_dir():
                    found = [m for m in _images_in(masks_dir) if m.stem == image_path.stem]
                    if found:
                        mask = _read_mask(found[0], image.shape[:2])
                out.append(Example(image, mask, word, product, str(image_path)))
    if not out:
        raise InputError(
            f"no example images under {root} (expected {root}/<product>/<defect>/*.png)"
        )
    return out


def split_holdout(
    examples: list[Example], fraction: float, seed: int
) -> tuple[list[Example], list[Example]]:
    """Per product, hold out ``fraction`` of the images (at least one normal and one defective when
    the product has >= 2 of each); the rest trains. Deterministic for a seed."""
    rng = np.random.default_rng(seed)
    train, hold = [], []
    by_product: dict[str, list[Example]] = {}
    for e in examples:
        by_product.setdefault(e.product, []).append(e)
    for items in by_product.values():
        for group in (
            [e for e in items if e.defect_type is None],
            [e for e in items if e.defect_type is not None],
        ):
            order = rng.permutation(len(group))
            k = int(round(len(group) * fraction)) if len(group) >= 2 else 0
            k = max(k, 1) if len(group) >= 2 else 0
            hold += [group[i] for i in order[:k]]
            train += [group[i] for i in order[k:]]
    return train, hold
