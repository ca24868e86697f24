"""Benchmark data drawn from the synthetic generator with the split's fixed seeds.

Test sets are stratified per held-out product: normal images, defects of seen types and defects of
novel types come from disjoint index ranges of the product's stream, so every subset has enough
samples and no two samples share a base image.
"""

from __future__ import annotations

from dataclasses import dataclass

from qc_stream.synth import Sample, generate
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
