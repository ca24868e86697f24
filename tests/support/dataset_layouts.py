"""Tiny datasets written on the fly in each public layout, from the synthetic generator.

Each category gets ``n_good`` good images (train and test) and ``n_bad`` defective images per defect
type, with masks where the layout has them. Images are small (``size`` px) PNGs; a ``wide=True``
dataset stretches every frame to 2:1 so the whole-frame view is exercised.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

from qc_stream.synth import generate

# product -> two defect types of the generator, as folder names (one with an underscore)
CATEGORIES = {"carpet": ("hole", "stain"), "pill": ("crack", "contamination")}
FOLDER_NAMES = {"hole": "hole", "stain": "stain_large", "crack": "crack", "contamination": "dirt"}


def _png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _frame(array: np.ndarray, wide: bool) -> np.ndarray:
    if not wide:
        return array
    h, w = array.shape[:2]
    mode = "L" if array.ndim == 2 else "RGB"
    resample = Image.NEAREST if array.ndim == 2 else Image.BILINEAR
    return np.asarray(Image.fromarray(array, mode).resize((2 * w, h), resample))


def samples(product: str, size: int, n_good: int, n_bad: int, seed: int = 7):
    goods = generate(product, n_good, seed, size, defect_rate=0.0)
    bads = {
        t: generate(product, n_bad, seed, size, defect_rate=1.0, defect_types=[t], start=1000)
        for t in CATEGORIES[product]
    }
    return goods, bads


def write_layout(
    root: Path, layout: str, size: int = 64, n_good: int = 2, n_bad: int = 2, wide: bool = False
) -> Path:
    """Write a tiny dataset of ``layout`` under ``root``; return ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for ci, (product, _types) in enumerate(CATEGORIES.items()):
        goods, bads = samples(product, size, n_good, n_bad)
        cat = f"0{ci + 1}" if layout == "btad" else product
        for i, s in enumerate(goods):
            img = _frame(s.image, wide)
            if layout in ("mvtec", "mpdd"):
                _png(root / cat / "train" / "good" / f"{i:03d}.png", img)
                _png(root / cat / "test" / "good" / f"{i:03d}.png", img)
            elif layout == "btad":
                _png(root / cat / "train" / "ok" / f"{i:04d}.png", img)
                _png(root / cat / "test" / "ok" / f"{i:04d}.png", img)
            elif layout == "visa":
                rel = f"{cat}/Data/Images/Normal/{i:04d}.JPG.png"
                _png(root / rel, img)
                rows.append([cat, "test", "normal", rel, ""])
            else:
                _png(root / cat / "good" / f"{i:03d}.png", img)
        for t, items in bads.items():
            name = FOLDER_NAMES[t]
            for i, s in enumerate(items):
                img, mask = _frame(s.image, wide), _frame(s.mask * 255, wide)
                stem = f"{name}{i:03d}"
                if layout in ("mvtec", "mpdd"):
                    _png(root / cat / "test" / name / f"{i:03d}.png", img)
                    _png(root / cat / "ground_truth" / name / f"{i:03d}_mask.png", mask)
                elif layout == "btad":
                    _png(root / cat / "test" / "ko" / f"{stem}.png", img)
                    _png(root / cat / "ground_truth" / "ko" / f"{stem}.png", mask)
                elif layout == "visa":
                    rel = f"{cat}/Data/Images/Anomaly/{stem}.png"
                    mrel = f"{cat}/Data/Masks/Anomaly/{stem}.png"
                    _png(root / rel, img)
                    # VisA masks hold class indices, not 255: any non-zero value is defect
                    _png(root / mrel, (mask > 0).astype(np.uint8) * 3)
                    rows.append([cat, "test", "anomaly", rel, mrel])
                else:
                    _png(root / cat / name / f"{stem}.png", img)
                    _png(root / cat / "masks" / name / f"{stem}.png", mask)
        if layout == "visa":
            with open(root / cat / "image_anno.csv", "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(["image", "label", "mask"])
                for r in rows:
                    if r[0] == cat and r[2] == "anomaly":
                        stem = Path(r[3]).stem
                        w.writerow([r[3], stem.rstrip("0123456789"), r[4]])
    if layout == "visa":
        (root / "split_csv").mkdir(parents=True, exist_ok=True)
        with open(root / "split_csv" / "1cls.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["object", "split", "label", "image", "mask"])
            w.writerows(rows)
    return root
