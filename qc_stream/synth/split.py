"""The benchmark split (auxiliary vs held-out products, seen vs novel defect types), fixed as data
in ``split.json`` next to this module so every run and every reader sees the same protocol."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from qc_stream.domain.catalog import PRODUCTS

SPLIT_FILE = Path(__file__).with_name("split.json")


@dataclass(frozen=True)
class Split:
    auxiliary_products: tuple[str, ...]
    held_out_products: tuple[str, ...]
    novel_types: tuple[str, ...]
    image_size: int
    seeds: dict
    test: dict

    @property
    def seen_types(self) -> tuple[str, ...]:
        """Defect types that occur on at least one auxiliary product."""
        seen = {t for p in self.auxiliary_products for t in PRODUCTS[p].defects}
        return tuple(
            t for t in dict.fromkeys(t for p in PRODUCTS.values() for t in p.defects) if t in seen
        )

    def types_of(self, product: str, novel: bool | None = None) -> tuple[str, ...]:
        """A product's defect types; only the novel (True) or seen (False) ones when asked."""
        kinds = PRODUCTS[product].defects
        if novel is None:
            return kinds
        return tuple(t for t in kinds if (t in self.novel_types) == novel)

    def to_dict(self) -> dict:
        return {
            "auxiliary_products": list(self.auxiliary_products),
            "held_out_products": list(self.held_out_products),
            "seen_types": list(self.seen_types),
            "novel_types": list(self.novel_types),
            "image_size": self.image_size,
            "seeds": dict(self.seeds),
        }


@lru_cache(maxsize=1)
def load_split() -> Split:
    raw = json.loads(SPLIT_FILE.read_text())
    split = Split(
        tuple(raw["auxiliary_products"]),
        tuple(raw["held_out_products"]),
        tuple(raw["novel_types"]),
        int(raw["image_size"]),
        raw["seeds"],
        raw["test"],
    )
    _validate(split)
    return split


def _validate(s: Split) -> None:
    # The protocol's promises, checked on every load: a broken split must not produce numbers.
    def need(ok: bool, what: str) -> None:
        if not ok:
            raise ValueError(f"{SPLIT_FILE}: {what}")

    need(
        not set(s.auxiliary_products) & set(s.held_out_products),
        "auxiliary and held-out products overlap",
    )
    need(set(s.auxiliary_products) | set(s.held_out_products) <= set(PRODUCTS), "unknown product")
    for p in s.auxiliary_products:
        need(
            not set(PRODUCTS[p].defects) & set(s.novel_types),
            f"a novel type occurs on auxiliary product {p}",
        )
    for p in s.held_out_products:
        need(bool(s.types_of(p, novel=True)), f"held-out product {p} has no novel type")
