"""The synthetic camera: generated product frames as a producer source (``--source synthetic``)."""

from __future__ import annotations

from collections.abc import Iterator

from qc_stream.domain.catalog import PRODUCTS
from qc_stream.errors import InputError
from qc_stream.producers.sources import SourceFrame, encode_jpeg
from qc_stream.synth.generator import frames


def synthetic(
    product: str, *, count: int | None, defect_rate: float = 0.2, seed: int = 0, size: int = 256
) -> Iterator[SourceFrame]:
    """Generated frames of ``product`` (``qc_stream.synth``); endless when ``count`` is None."""
    if product not in PRODUCTS:
        raise InputError(
            f"unknown synthetic product {product!r}; known: {', '.join(sorted(PRODUCTS))}"
        )
    for i, sample in enumerate(frames(product, seed=seed, size=size, defect_rate=defect_rate)):
        if count is not None and i >= count:
            return
        yield SourceFrame(
            encode_jpeg(sample.image), "image/jpeg", sample.product, sample.defect_type
        )
