"""Synthetic industrial images with pixel masks and defect-type labels, and the benchmark split.

from qc_stream.synth import PRODUCTS, generate, frames
samples = generate("pill", n=8, seed=1, size=256, defect_rate=0.5)
"""

from qc_stream.domain.catalog import DEFECT_TYPES, GENERIC_NOUNS, PRODUCTS, Product, product
from qc_stream.synth.generator import Sample, frames, generate, render_sample
from qc_stream.synth.split import Split, load_split

__all__ = [
    "DEFECT_TYPES",
    "GENERIC_NOUNS",
    "PRODUCTS",
    "Product",
    "Sample",
    "Split",
    "frames",
    "generate",
    "load_split",
    "product",
    "render_sample",
]
