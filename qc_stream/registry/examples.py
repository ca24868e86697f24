"""Labelled examples for ``qc-stream retrain --examples DIR``.

Layout (PNG, JPEG, BMP or TIFF)::

    DIR/<product>/<defect>/*.png           images showing the registered defect type <defect>
    DIR/<product>/<defect>/masks/*.png     optional pixel masks, same file stem (nonzero = defect)
    DIR/<product>/masks/<defect>/*.png     (or here: the dataset ``folder`` layout, docs/datasets.md)
    DIR/<product>/good/*.png               optional defect-free images of the product

``<product>/<defect>`` must be an active registered type (compared ignoring case); the registered
spelling is the word trained. Images without a mask train the image-level loss only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from qc_stream.datasets.readers import check_items, load_image, load_mask, read_dataset
from qc_stream.domain.defects import DefectType, name_key
from qc_stream.errors import InputError


@dataclass(frozen=True)
class Example:
    image: np.ndarray  # uint8 HxWx3
    mask: np.ndarray | None  # uint8 HxW (0/1) or None (image-level label only)
    defect_type: str | None  # None: a defect-free image
    product: str
    path: str


def load_examples(root: str | Path, registered: list[DefectType]) -> list[Example]:
    """Read every example under ``root`` (the ``folder`` dataset layout, one reader for both
    commands); refuse folders that name no active registered type."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"examples folder {root} does not exist")
    if not any(p.is_dir() for p in root.iterdir()):
        raise InputError(
            f"no example images under {root} (expected {root}/<product>/<defect>/*.png)"
        )
    active = {(d.product, name_key(d.name)): d.name for d in registered if d.active}
    data = read_dataset(root, "folder", check=False)
    words: dict[tuple[str, str], str | None] = {}
    for item in data.items:
        key = (item.product, item.folder)
        if key in words or item.defect_type is None:
            continue
        word = active.get((item.product, name_key(item.folder))) or active.get(
            (item.product, name_key(item.defect_type))
        )
        if word is None:
            raise InputError(
                f"{item.path.parent}: {item.folder!r} is not an active registered defect type of product "
                f"{item.product!r}; register it first (qc-stream defects add --product {item.product} --name ...)"
            )
        words[key] = word
    check_items(data.items)
    out: list[Example] = []
    for item in data.items:
        image = load_image(item)
        mask = load_mask(item, image.shape[:2])
        word = None if item.defect_type is None else words[(item.product, item.folder)]
        out.append(Example(image, mask, word, item.product, str(item.path)))
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
