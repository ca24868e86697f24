"""Anomaly map -> the list of defect regions a result reports (area, bbox, score, defect type)."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
from scipy import ndimage

from qc_stream.domain.inspection import Region

# Results travel through Kafka and into a table row: report the strongest regions, not hundreds.
MAX_REGIONS = 20
# Outline polygons are simplified to this tolerance (px of the working map) and vertex count.
OUTLINE_TOLERANCE_PX = 1.0
MAX_OUTLINE_POINTS = 64


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
    defect word that covers most of its pixels. ``score`` is the region's peak anomaly value,
    ``mean_score`` its mean, ``centroid`` its centre of mass (x, y) and ``outline`` its outer
    contour as a simplified polygon. Regions come strongest first (score, then area); bbox is
    ``[x0, y0, x1, y1)`` in map pixels.
    """
    amap = np.asarray(anomaly_map, dtype=np.float32)
    if amap.ndim != 2:
        raise ValueError(f"anomaly map must be HxW, got shape {amap.shape}")
    if type_map is not None and np.shape(type_map) != amap.shape:
        raise ValueError(
            f"type map {np.shape(type_map)} and anomaly map {amap.shape} differ in shape"
        )

    labels, n = ndimage.label(amap >= threshold, structure=np.ones((3, 3), dtype=int))
    if n == 0:
        return []
    flat = labels.ravel()
    areas = np.bincount(flat, minlength=n + 1)[1:]
    # Peak per component over its pixels only (ndimage.maximum sorts the whole map: ~6x slower).
    on = flat > 0
    peaks = np.full(
        n + 1, -np.inf, dtype=np.float32
    )  # same dtype as amap: ufunc.at stays on its fast path
    np.maximum.at(peaks, flat[on], amap.ravel()[on])
    peaks = np.clip(peaks[1:], 0.0, 1.0).astype(np.float64)
    keep = np.flatnonzero(areas >= min_area)
    # Strongest first (score, then area), ranked before any Region is built: a noisy map can hold
    # thousands of specks, and only the top ``max_regions`` are reported.
    keep = keep[np.lexsort((-areas[keep], -peaks[keep]))][:max_regions]
    slices = ndimage.find_objects(labels)

    regions = []
    for k in keep:
        ys, xs = slices[k]
        inside = (
            labels[ys, xs] == k + 1
        )  # work inside the bbox only: cost ~ region size, not image size
        values = amap[ys, xs][inside]
        py, px = np.nonzero(inside)
        regions.append(
            Region(
                defect_type=_majority_word(type_map, (ys, xs), inside, words),
                area_px=int(areas[k]),
                bbox=(int(xs.start), int(ys.start), int(xs.stop), int(ys.stop)),
                score=float(peaks[k]),
                mean_score=float(np.clip(values.mean(), 0.0, 1.0)),
                centroid=(float(px.mean() + xs.start), float(py.mean() + ys.start)),
                outline=_outline(inside, xs.start, ys.start),
            )
        )
    return regions


def _outline(inside: np.ndarray, x0: int, y0: int) -> list[tuple[int, int]]:
    """The outer contour of a component mask (cropped to its bbox at ``x0, y0``), simplified."""
    contours, _ = cv2.findContours(
        inside.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
    )
    if not contours:
        return []
    contour = max(contours, key=cv2.contourArea)
    tolerance = OUTLINE_TOLERANCE_PX
    poly = cv2.approxPolyDP(contour, tolerance, True)
    while len(poly) > MAX_OUTLINE_POINTS:
        tolerance *= 1.5
        poly = cv2.approxPolyDP(contour, tolerance, True)
    return [(int(x) + x0, int(y) + y0) for x, y in poly.reshape(-1, 2)]


def _majority_word(type_map, box, inside, words) -> str | None:
    if type_map is None or not len(words):
        return None
    types = np.asarray(type_map)[box][inside]
    types = types[(types >= 0) & (types < len(words))]
    if types.size == 0:
        return None
    return words[int(np.bincount(types.astype(np.int64)).argmax())]


def scale_regions(
    regions: Sequence[Region], sx: float, sy: float, width: int, height: int
) -> list[Region]:
    """Regions found on a map of ``sx * width`` x ``sy * height`` px -> pixels of the width x height image.

    Boxes grow outwards to whole pixels (never cut a region), areas scale by ``1 / (sx * sy)``.
    """
    out = []
    for r in regions:
        x0, y0, x1, y1 = r.bbox
        box = (
            max(0, int(np.floor(x0 / sx))),
            max(0, int(np.floor(y0 / sy))),
            min(width, int(np.ceil(x1 / sx))),
            min(height, int(np.ceil(y1 / sy))),
        )
        area = min(int(round(r.area_px / (sx * sy))), (box[2] - box[0]) * (box[3] - box[1]))
        # Pixel centres map as (x + 0.5) / s - 0.5; outline vertices are clipped into the image.
        centroid = (
            None
            if r.centroid is None
            else ((r.centroid[0] + 0.5) / sx - 0.5, (r.centroid[1] + 0.5) / sy - 0.5)
        )
        outline = [
            (
                min(width - 1, max(0, round((x + 0.5) / sx - 0.5))),
                min(height - 1, max(0, round((y + 0.5) / sy - 0.5))),
            )
            for x, y in r.outline
        ]
        out.append(
            r.model_copy(
                update={"bbox": box, "area_px": area, "centroid": centroid, "outline": outline}
            )
        )
    return out
