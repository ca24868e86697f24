"""Readers for labelled image datasets on disk: MVTec AD, MPDD, VisA, BTAD and a plain folder.

Offline tooling for ``qc-stream train`` / ``qc-stream eval --dataset`` and ``retrain --examples``:
numpy and PIL only (no torch), lazy (pixels are read when an item is loaded) and read-only.
See docs/datasets.md.
"""

from qc_stream.datasets.readers import (
    LAYOUTS,
    Dataset,
    DatasetItem,
    defect_word,
    detect_layout,
    load_image,
    load_mask,
    read_dataset,
)

__all__ = [
    "LAYOUTS",
    "Dataset",
    "DatasetItem",
    "defect_word",
    "detect_layout",
    "load_image",
    "load_mask",
    "read_dataset",
]
