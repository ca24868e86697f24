"""Benchmark data drawn from the synthetic generator with the split's fixed seeds.

Test sets are stratified per held-out product: normal images, defects of seen types and defects of
novel types come from disjoint index ranges of the product's stream, so every subset has enough
samples and no two samples share a base image.

``held_out_dataset`` gives the same images as a ``qc_stream.datasets.Dataset`` (items with their pixels
in memory), so ``qc-stream eval`` scores the synthetic benchmark with the code that scores MVTec AD,
VisA, MPDD, BTAD and folders; ``write_folder`` writes it in the folder layout.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from qc_stream.datasets import Dataset, DatasetItem
from qc_stream.synth import PRODUCTS, Sample, generate
from qc_stream.synth.split import Split, load_split

# index offsets inside a product's stream (disjoint ranges -> distinct base images)
_NORMAL, _SEEN, _NOVEL = 0, 100_000, 200_000

MODES = {
    # per held-out product: normals, seen-type defects, novel-type defects
    "quick": (24, 12, 12),
    "full": (80, 40, 40),
}


@dataclass
class ProductTestSet:
    product: str
    normals: list[Sample]
    seen: list[Sample]
    novel: list[Sample]

    @property
    def all(self) -> list[Sample]:
        return self.normals + self.seen + self.novel

    def subset(self, name: str) -> list[Sample]:
        return {
            "all": self.all,
            "seen": self.normals + self.seen,
            "novel": self.normals + self.novel,
        }[name]


def test_sets(
    mode: str = "quick",
    split: Split | None = None,
    size: int | None = None,
    products: list[str] | None = None,
) -> dict[str, ProductTestSet]:
    """Per held-out product test set for `mode` ("quick" or "full")."""
    split = split or load_split()
    n_normal, n_seen, n_novel = MODES[mode]
    seed = int(split.seeds["test"])
    size = size or split.image_size
    out = {}
    for p in products or split.held_out_products:
        seen_types = split.types_of(p, novel=False)
        novel_types = split.types_of(p, novel=True)
        out[p] = ProductTestSet(
            p,
            generate(p, n_normal, seed, size, defect_rate=0.0, start=_NORMAL),
            generate(p, n_seen, seed, size, defect_rate=1.0, defect_types=seen_types, start=_SEEN)
            if seen_types
            else [],
            generate(
                p, n_novel, seed, size, defect_rate=1.0, defect_types=novel_types, start=_NOVEL
            )
            if novel_types
            else [],
        )
    return out


@dataclass
class SyntheticDataset(Dataset):
    """The held-out test images of one mode. A product's vocabulary is its catalogue's defect types
    (what a registered line's detector gets), in the catalogue's order, whichever types its test
    images happen to show."""

    mode: str = "quick"
    split: Split = field(default_factory=load_split)

    @property
    def name(self) -> str:
        return f"synthetic-{self.mode}"

    @property
    def words(self) -> list[str]:
        return sorted({w for ws in self.product_words().values() for w in ws})

    def product_words(self) -> dict[str, list[str]]:
        return {p: list(PRODUCTS[p].defects) for p in self.products}

    def object_names(self) -> dict[str, str]:
        """What the hand-crafted baseline calls each product: its noun ("brushed metal plate")."""
        return {p: PRODUCTS[p].noun for p in self.products}

    def subsets(self) -> dict[str, Callable[[DatasetItem], bool]]:
        """The benchmark's "seen" and "novel" subsets: the normals plus the defects of the types
        the prompts were (seen) or were never (novel) trained on."""
        novel = set(self.split.novel_types)
        return {
            "seen": lambda i: i.defect_type is None or i.defect_type not in novel,
            "novel": lambda i: i.defect_type is None or i.defect_type in novel,
        }

    def info(self) -> dict:
        return {
            "name": self.name,
            "layout": self.layout,
            "products": self.products,
            "images": len(self.items),
            "defective": sum(i.label for i in self.items),
            "seed": int(self.split.seeds["test"]),
            "image_size": int(self.items[0].image.shape[0]) if self.items else None,
        }


def _items(root: Path, sets: dict[str, ProductTestSet]) -> list[DatasetItem]:
    """Items in the benchmark's order (per product: normals, seen-type, novel-type defects), each
    named as ``write_folder`` writes it: ``<product>/<good|type>/<n>.png``, masks
    ``<product>/masks/<type>/<n>.png``."""
    items: list[DatasetItem] = []
    for product, ts in sets.items():
        counts: dict[str, int] = {}
        for sample in ts.all:
            folder = sample.defect_type or "good"
            n = counts[folder] = counts.get(folder, -1) + 1
            stem = f"{n:04d}"
            mask_path = None
            if sample.defect_type is not None:
                mask_path = root / product / "masks" / folder / f"{stem}.png"
            items.append(
                DatasetItem(
                    root / product / folder / f"{stem}.png",
                    product,
                    "test",
                    sample.defect_type,
                    mask_path,
                    folder,
                    image=sample.image,
                    mask=sample.mask,
                )
            )
    return items


def held_out_dataset(
    mode: str = "quick", split: Split | None = None, products: list[str] | None = None
) -> SyntheticDataset:
    """``test_sets(mode, split, products=products)`` as a ``SyntheticDataset`` (layout "synthetic",
    every item split "test")."""
    split = split or load_split()
    root = Path(f"synthetic-{mode}")
    items = _items(root, test_sets(mode, split, products=products))
    return SyntheticDataset(root, "synthetic", items, mode=mode, split=split)


def write_folder(data: Dataset, root: Path) -> Path:
    """Write in-memory items in the folder layout (``<product>/<good|type>/<n>.png``, masks under
    ``<product>/masks/<type>/``) under ``root``, which ``qc-stream eval --dataset`` reads back."""
    for item in data.items:
        for rel, pixels in (
            (item.path, item.image),
            (item.mask_path, None if item.mask is None else item.mask * 255),
        ):
            if rel is None or pixels is None:
                continue
            out = root / rel.relative_to(data.root)
            out.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(out)
    return root


def training_set(
    per_product: int = 64,
    defect_rate: float = 0.6,
    split: Split | None = None,
    size: int | None = None,
    seed_name: str = "train",
    all_seen_types: bool = False,
) -> list[Sample]:
    """Auxiliary-product samples (with masks and type labels) for prompt training.

    `all_seen_types`: draw defects from every seen type on every auxiliary product (more defect
    variety per product; novel types and held-out products still never appear)."""
    split = split or load_split()
    seed = int(split.seeds[seed_name])
    size = size or split.image_size
    kinds = list(split.seen_types) if all_seen_types else None
    samples: list[Sample] = []
    for p in split.auxiliary_products:
        samples += generate(p, per_product, seed, size, defect_rate=defect_rate, defect_types=kinds)
    return samples
