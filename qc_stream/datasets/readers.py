"""One reader per dataset layout; each lists ``DatasetItem``s and checks them before any training.

Layouts (``root`` is the folder given on the command line):

- ``mvtec`` (MVTec AD) and ``mpdd`` (MPDD, the same layout): ``<cat>/train/good/*``,
  ``<cat>/test/good/*``, ``<cat>/test/<type>/*``, masks ``<cat>/ground_truth/<type>/<stem>_mask.png``.
- ``visa``: ``split_csv/1cls.csv`` (columns object, split, label, image, mask; paths relative to the
  root); any non-zero mask value is defect. VisA names no defect type per image in that file: the
  type is read from ``<object>/image_anno.csv`` (column ``label``, first entry) when present, else
  the image is of type "anomaly".
- ``btad``: ``01|02|03/train/ok/*``, ``test/ok/*``, ``test/ko/*``, masks ``ground_truth/ko/<stem>.*``
  (BTAD names no type: defective images are of type "defect").
- ``folder`` (also what ``qc-stream retrain --examples`` reads): ``<product>/good/*`` and
  ``<product>/<defect_type>/*``, optional masks ``<product>/masks/<defect_type>/<stem>.*`` or
  ``<product>/<defect_type>/masks/<stem>.*``. Every image is labelled, so all are split "test".

Folder names become defect words: ``broken_large`` -> "broken large". A layout that does not fit
raises ``InputError`` naming the first offending path (missing mask, mask of another size, empty
category, unreadable file).
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from qc_stream.errors import InputError

LAYOUTS = ("mvtec", "mpdd", "visa", "btad", "folder")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}
NORMAL_DIRS = {"good", "normal", "ok"}
MASKS_DIR = "masks"
# MPDD's six categories: its layout is MVTec's, so auto-detection tells them apart by name.
MPDD_CATEGORIES = {
    "bracket_black",
    "bracket_brown",
    "bracket_white",
    "connector",
    "metal_plate",
    "tubes",
}


def defect_word(folder_name: str) -> str:
    """``broken_large`` -> ``broken large`` (underscores and dashes become spaces, lower case)."""
    return " ".join(folder_name.replace("_", " ").replace("-", " ").split()).lower()


@dataclass(frozen=True)
class DatasetItem:
    path: Path
    product: str
    split: str  # "train" or "test"
    defect_type: str | None  # defect word; None = a defect-free image
    mask_path: Path | None = None  # None: no pixel labels (or a good image)
    folder: str = ""  # the type folder's own name (``retrain --examples`` matches registered types)
    # A generated data set (the synthetic benchmark's) keeps its pixels in memory: uint8 HxWx3 and
    # HxW (non-zero = defect); ``load_image`` / ``load_mask`` return them instead of reading files.
    image: np.ndarray | None = field(default=None, compare=False, repr=False)
    mask: np.ndarray | None = field(default=None, compare=False, repr=False)

    @property
    def label(self) -> int:
        return 0 if self.defect_type is None else 1


@dataclass
class Dataset:
    root: Path
    layout: str
    items: list[DatasetItem] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.root.resolve().name

    @property
    def products(self) -> list[str]:
        return sorted({i.product for i in self.items})

    @property
    def words(self) -> list[str]:
        """Every defect word of the dataset (the ``--vocabulary dataset`` candidates), sorted."""
        return sorted({i.defect_type for i in self.items if i.defect_type})

    def product_words(self) -> dict[str, list[str]]:
        out: dict[str, set[str]] = {p: set() for p in self.products}
        for i in self.items:
            if i.defect_type:
                out[i.product].add(i.defect_type)
        return {p: sorted(ws) for p, ws in out.items()}

    def select(self, products: Sequence[str] | None = None, split: str | None = None) -> Dataset:
        """The items of ``products`` (all when None) in ``split`` (both when None)."""
        if products:
            unknown = sorted(set(products) - set(self.products))
            if unknown:
                raise InputError(
                    f"{self.root}: no product {unknown[0]!r} in this {self.layout} dataset "
                    f"(products: {', '.join(self.products)})"
                )
        items = [
            i
            for i in self.items
            if (not products or i.product in products) and (split is None or i.split == split)
        ]
        return replace(self, items=items)

    def file_list_hash(self) -> str:
        """sha256 of the sorted (relative path, product, split, type, mask, size) rows: names the exact
        data a version was trained on without hashing the pixels."""
        h = hashlib.sha256()
        for i in sorted(self.items, key=lambda i: str(i.path)):
            rel = _relative(i.path, self.root)
            mask = _relative(i.mask_path, self.root) if i.mask_path else ""
            h.update(
                f"{rel}|{i.product}|{i.split}|{i.defect_type or ''}|{mask}|{i.path.stat().st_size}\n".encode()
            )
        return h.hexdigest()

    def info(self) -> dict:
        """What a prompt manifest records about its training data."""
        return {
            "name": self.name,
            "layout": self.layout,
            "products": self.products,
            "images": len(self.items),
            "defective": sum(i.label for i in self.items),
            "file_list_sha256": self.file_list_hash(),
        }


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def _images_in(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES
    )


def _subdirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _by_stem(folder: Path) -> dict[str, Path]:
    return {p.stem: p for p in _images_in(folder)}


# ---------------------------------------------------------------- layouts


def _read_mvtec(root: Path) -> list[DatasetItem]:
    items: list[DatasetItem] = []
    for cat in _subdirs(root):
        if not (cat / "test").is_dir() and not (cat / "train").is_dir():
            continue
        found = 0
        for path in _images_in(cat / "train" / "good"):
            items.append(DatasetItem(path, cat.name, "train", None, folder="good"))
            found += 1
        test = cat / "test"
        for type_dir in _subdirs(test) if test.is_dir() else []:
            normal = type_dir.name.casefold() in NORMAL_DIRS
            for path in _images_in(type_dir):
                mask = None
                if not normal:
                    mask = cat / "ground_truth" / type_dir.name / f"{path.stem}_mask.png"
                    if not mask.is_file():
                        raise InputError(f"{mask}: missing mask for {path}")
                word = None if normal else defect_word(type_dir.name)
                items.append(DatasetItem(path, cat.name, "test", word, mask, type_dir.name))
                found += 1
        if not found:
            raise InputError(f"{cat}: empty category (no images under train/good or test/<type>)")
    return items


def _read_btad(root: Path) -> list[DatasetItem]:
    items: list[DatasetItem] = []
    for cat in _subdirs(root):
        if not (cat / "test").is_dir():
            continue
        found = 0
        for path in _images_in(cat / "train" / "ok"):
            items.append(DatasetItem(path, cat.name, "train", None, folder="ok"))
            found += 1
        for path in _images_in(cat / "test" / "ok"):
            items.append(DatasetItem(path, cat.name, "test", None, folder="ok"))
            found += 1
        masks = _by_stem(cat / "ground_truth" / "ko")
        for path in _images_in(cat / "test" / "ko"):
            mask = masks.get(path.stem)
            if mask is None:
                raise InputError(
                    f"{cat / 'ground_truth' / 'ko' / path.stem}.*: missing mask for {path}"
                )
            items.append(DatasetItem(path, cat.name, "test", "defect", mask, "ko"))
            found += 1
        if not found:
            raise InputError(f"{cat}: empty category (no images under train/ok or test/ok|ko)")
    return items


def _visa_types(root: Path, obj: str) -> dict[str, str]:
    """image path (relative to root) -> defect word, from ``<obj>/image_anno.csv`` when present."""
    anno = root / obj / "image_anno.csv"
    if not anno.is_file():
        return {}
    out = {}
    with open(anno, newline="") as f:
        for row in csv.DictReader(f):
            label = (row.get("label") or "").split(",")[0].strip()
            if row.get("image") and label and label.casefold() not in NORMAL_DIRS:
                out[row["image"].strip()] = defect_word(label)
    return out


def _read_visa(root: Path) -> list[DatasetItem]:
    table = root / "split_csv" / "1cls.csv"
    try:
        with open(table, newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError as e:
        raise InputError(f"{table}: cannot read ({e.__class__.__name__})") from None
    need = {"object", "split", "label", "image"}
    if not rows or not need <= set(rows[0]):
        raise InputError(f"{table}: expected the columns object, split, label, image, mask")
    types: dict[str, dict[str, str]] = {}
    items: list[DatasetItem] = []
    for row in rows:
        obj = row["object"].strip()
        path = root / row["image"].strip()
        if not path.is_file():
            raise InputError(f"{path}: listed in {table} but missing")
        if row["label"].strip().casefold() in NORMAL_DIRS:
            items.append(DatasetItem(path, obj, row["split"].strip(), None, folder="normal"))
            continue
        mask_rel = (row.get("mask") or "").strip()
        mask = root / mask_rel if mask_rel else None
        if mask is None or not mask.is_file():
            raise InputError(f"{mask or path}: missing mask for {path}")
        if obj not in types:
            types[obj] = _visa_types(root, obj)
        word = types[obj].get(row["image"].strip(), "anomaly")
        items.append(DatasetItem(path, obj, row["split"].strip(), word, mask, "anomaly"))
    return items


def _read_folder(root: Path) -> list[DatasetItem]:
    items: list[DatasetItem] = []
    for product_dir in _subdirs(root):
        found = 0
        for type_dir in _subdirs(product_dir):
            if type_dir.name == MASKS_DIR:
                continue
            normal = type_dir.name.casefold() in NORMAL_DIRS
            masks = {} if normal else _by_stem(product_dir / MASKS_DIR / type_dir.name)
            masks = {**_by_stem(type_dir / MASKS_DIR), **masks} if not normal else masks
            word = None if normal else defect_word(type_dir.name)
            for path in _images_in(type_dir):
                items.append(
                    DatasetItem(
                        path, product_dir.name, "test", word, masks.get(path.stem), type_dir.name
                    )
                )
                found += 1
        if not found:
            raise InputError(
                f"{product_dir}: empty product (expected {product_dir}/good/* or {product_dir}/<defect>/*)"
            )
    return items


READERS = {
    "mvtec": _read_mvtec,
    "mpdd": _read_mvtec,
    "visa": _read_visa,
    "btad": _read_btad,
    "folder": _read_folder,
}


def detect_layout(root: str | Path) -> str:
    """The layout of ``root`` from its folder structure (see the module docstring)."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"dataset folder {root} does not exist")
    if (root / "split_csv" / "1cls.csv").is_file():
        return "visa"
    cats = _subdirs(root)
    if not cats:
        raise InputError(f"{root}: no category folders (an empty dataset)")
    if any((c / "test" / "ko").is_dir() or (c / "train" / "ok").is_dir() for c in cats):
        return "btad"
    if any((c / "ground_truth").is_dir() or (c / "test").is_dir() for c in cats):
        names = {c.name for c in cats}
        return "mpdd" if names <= MPDD_CATEGORIES or "mpdd" in root.name.casefold() else "mvtec"
    if any(_subdirs(c) for c in cats):
        return "folder"
    raise InputError(
        f"{root}: layout not recognised (expected MVTec/MPDD <cat>/test/<type>, VisA split_csv/1cls.csv, "
        f"BTAD 01/test/ko, or a folder <product>/good and <product>/<defect>)"
    )


def _check_image(path: Path) -> tuple[int, int]:
    """(width, height) from the file header; ``InputError`` when it is not a readable image."""
    try:
        with Image.open(path) as im:
            return im.size
    except (UnidentifiedImageError, OSError) as e:
        raise InputError(f"{path}: not a readable image ({e.__class__.__name__})") from None


def check_items(items: Iterable[DatasetItem]) -> None:
    """Open every image's and mask's header: unreadable files and masks of another size stop here,
    naming the first offending path, before anything is trained."""
    for item in items:
        size = _check_image(item.path)
        if item.mask_path is not None:
            msize = _check_image(item.mask_path)
            if msize != size:
                raise InputError(
                    f"{item.mask_path}: mask is {msize[0]}x{msize[1]} but its image {item.path} is "
                    f"{size[0]}x{size[1]}"
                )


def read_dataset(
    root: str | Path,
    layout: str = "auto",
    products: Sequence[str] | None = None,
    check: bool = True,
) -> Dataset:
    """List and check a dataset. ``layout``: one of ``LAYOUTS`` or "auto"."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"dataset folder {root} does not exist")
    if layout == "auto":
        layout = detect_layout(root)
    if layout not in READERS:
        raise InputError(f"unknown layout {layout!r}: use auto, {', '.join(LAYOUTS)}")
    items = READERS[layout](root)
    if not items:
        raise InputError(f"{root}: no images found for the {layout} layout")
    data = Dataset(root, layout, items)
    if products:
        data = data.select(products)
    if check:
        check_items(data.items)
    return data


# ---------------------------------------------------------------- pixels


def load_image(item: DatasetItem | Path) -> np.ndarray:
    """uint8 HxWx3 RGB."""
    if isinstance(item, DatasetItem) and item.image is not None:
        return item.image
    path = item.path if isinstance(item, DatasetItem) else Path(item)
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as e:
        raise InputError(f"{path}: not a readable image ({e.__class__.__name__})") from None


def load_mask(item: DatasetItem, shape: tuple[int, int]) -> np.ndarray | None:
    """uint8 HxW in {0, 1} (any non-zero value is defect); all zeros for a good image; None for a
    defective image without a mask (image-level label only)."""
    if item.defect_type is None:
        return np.zeros(shape, dtype=np.uint8)
    if item.mask is not None:
        mask = (np.asarray(item.mask) > 0).astype(np.uint8)
    elif item.mask_path is None:
        return None
    else:
        try:
            with Image.open(item.mask_path) as im:
                mask = (np.asarray(im.convert("L")) > 0).astype(np.uint8)
        except (UnidentifiedImageError, OSError) as e:
            raise InputError(
                f"{item.mask_path}: not a readable mask image ({e.__class__.__name__})"
            ) from None
    if mask.shape != tuple(shape):
        raise InputError(
            f"{item.mask_path or item.path}: mask is {mask.shape[1]}x{mask.shape[0]} but its image is "
            f"{shape[1]}x{shape[0]}"
        )
    return mask


class LoadedSamples:
    """A lazy sequence of ``{"image", "mask", "defect_type", "product"}`` dicts over items (what
    ``qc_stream.training.train`` and the evaluators take)."""

    def __init__(self, items: Sequence[DatasetItem]):
        self.items = list(items)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        item = self.items[index]
        image = load_image(item)
        return {
            "image": image,
            "mask": load_mask(item, image.shape[:2]),
            "defect_type": item.defect_type,
            "product": item.product,
        }

    @property
    def words(self) -> list[str]:
        return sorted({i.defect_type for i in self.items if i.defect_type})
