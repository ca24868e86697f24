"""Anomaly map -> the list of defect regions a result reports (area, bbox, score, defect type)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from qc_stream.domain.inspection import Region

# Results travel through Kafka and into a table row: report the strongest regions, not hundreds.
MAX_REGIONS = 20


def find_regions(
    anomaly_map: np.ndarray,
    threshold: float,
    *,
    min_area: int = 1,
    type_map: np.ndarray | None = None,
    words: Sequence[str] = (),
    max_regions: int = MAX_REGIONS,
) -> list[Region]:
    """Connected components (8-connected) of ``anomaly_map >= threshold`` with at least ``min_area`` px.

    ``type_map`` (optional, same HxW, int index into ``words``, -1 = no type) gives each region the
    defect word that covers most of its pixels. ``score`` is the region's peak anomaly value. Regions
    come strongest first (score, then area); bbox is ``[x0, y0, x1, y1)`` in map pixels.
    """
    from scipy import ndimage

    amap = np.asarray(anomaly_map, dtype=np.float32)
    if amap.ndim != 2:
        raise ValueError(f"anomaly map must be HxW, got shape {amap.shape}")
    if type_map is not None and np.shape(type_map) != amap.shape:
        raise ValueError(f"type map {np.shape(type_map)} and anomaly map {amap.shape} differ in shape")

    labels, n = ndimage.label(amap >= threshold, structure=np.ones((3, 3), dtype=int))
    if n == 0:
        return []
    index = np.arange(1, n + 1)
    areas = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    peaks = np.asarray(ndimage.maximum(amap, labels, index), dtype=np.float64).reshape(-1)
    slices = ndimage.find_objects(labels)

    regions = []
    for k in range(n):
        if areas[k] < min_area:
            continue
        ys, xs = slices[k]
        regions.append(
            Region(
                defect_type=_majority_word(type_map, labels, k + 1, slices[k], words),
                area_px=int(areas[k]),
                bbox=(int(xs.start), int(ys.start), int(xs.stop), int(ys.stop)),
                score=float(np.clip(peaks[k], 0.0, 1.0)),
            )
        )
    regions.sort(key=lambda r: (r.score, r.area_px), reverse=True)
    return regions[:max_regions]


def _majority_word(type_map, labels, label, box, words) -> str | None:
    if type_map is None or not len(words):
        return None
    inside = np.asarray(type_map)[box][labels[box] == label]
    inside = inside[(inside >= 0) & (inside < len(words))]
    if inside.size == 0:
        return None
    return words[int(np.bincount(inside.astype(np.int64)).argmax())]
