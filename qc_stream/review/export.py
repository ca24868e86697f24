"""`qc-stream review export`: reviewed frames in the folder layout `retrain --examples` reads.

``DIR/<product>/good/<file>`` for frames whose current decision is ok, ``DIR/<product>/<type>/<file>``
for warn/reject frames with an active registered type (the registered spelling). A frame whose
decided type is not (yet) registered, e.g. a pending proposal, is skipped and counted: retrain
refuses unregistered types. Reviewed good frames are also what ``models calibrate`` can use.
"""

from __future__ import annotations

import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from qc_stream.domain.defects import name_key
from qc_stream.storage.frame_store import FrameStore, FrameStoreError


@dataclass
class ExportReport:
    written: Counter = field(default_factory=Counter)  # (product, folder) -> files
    skipped: Counter = field(default_factory=Counter)  # reason -> frames


def export_reviewed(reviews, registered: list, store: FrameStore, out: Path) -> ExportReport:
    active = {(d.product, name_key(d.name)): d.name for d in registered if d.active}
    report = ExportReport()
    for review, retained in reviews.current_decisions():
        if review.verdict == "ok":
            folder = "good"
        elif not review.defect_type:
            report.skipped["defect without a type"] += 1
            continue
        else:
            folder = active.get((review.product, name_key(review.defect_type)))
            if folder is None:
                report.skipped[f"type {review.defect_type!r} not registered"] += 1
                continue
        try:
            source = store.resolve(retained.path)
        except FrameStoreError:
            report.skipped["frame no longer in the store"] += 1
            continue
        target = out / review.product / folder / source.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        report.written[(review.product, folder)] += 1
    return report
