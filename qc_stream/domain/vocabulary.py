"""The defect vocabulary of a prompt version: its words, and which of them each product can show."""

from __future__ import annotations

from dataclasses import dataclass

from qc_stream.domain.catalog import DEFECT_TYPES, PRODUCTS
from qc_stream.errors import ConfigError


@dataclass(frozen=True)
class Vocabulary:
    """Defect words of a prompt version, and which of them each known product can show."""

    words: tuple[str, ...]
    products: dict[str, tuple[str, ...]]

    @classmethod
    def from_manifest(cls, vocab: dict) -> Vocabulary:
        words, seen = [], set()
        for w in vocab.get("words") or ():  # the model refuses duplicate words (case-insensitive)
            if w.casefold() not in seen:
                seen.add(w.casefold())
                words.append(w)
        words = tuple(words)
        canonical = {w.casefold(): w for w in words}
        products = {
            p: tuple(
                dict.fromkeys(canonical[w.casefold()] for w in ws if w.casefold() in canonical)
            )
            for p, ws in (vocab.get("products") or {}).items()
        }
        if not words:
            raise ConfigError(
                "the prompt version has an empty vocabulary: no defect words to score"
            )
        return cls(words, products)

    @classmethod
    def catalog_default(cls) -> Vocabulary:
        """Every catalogue word, with each catalogue product's subset (the untrained fallback)."""
        return cls(tuple(DEFECT_TYPES), {name: tuple(p.defects) for name, p in PRODUCTS.items()})

    def words_for(self, product: str | None) -> tuple[str, ...]:
        """The product's registered words; every word when the product is unknown or not given."""
        if product is not None and self.products.get(product):
            return self.products[product]
        return self.words
