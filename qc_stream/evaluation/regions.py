"""Do the regions an operator sees point at the defect? Measured with the real detector.

The benchmark's pixel metrics score the raw anomaly map; this scores what ``predict`` and the
worker report: the detector's verdict with the prompt version's thresholds and its regions. Over
every defective test frame the detector flags (warn or reject):

- ``region_hit_rate``: share whose top region (the strongest) overlaps the true defect mask;
- ``region_iou``: mean IoU of the union of its regions (filled outlines) with the true mask;
- ``regions_shown``: share that carry at least one region at all;
- ``flagged``: share of the defective frames flagged.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
from PIL import Image

from qc_stream.datasets import DatasetItem, load_image, load_mask
from qc_stream.domain.inspection import Region, decide_verdict

REGION_KEYS = ("flagged", "regions_shown", "region_hit_rate", "region_iou")


def region_mask(region: Region, shape: tuple[int, int]) -> np.ndarray:
    """Boolean [h, w] mask of a region: its filled outline, or its bbox when it has no outline."""
    mask = np.zeros(shape, dtype=np.uint8)
    if len(region.outline) >= 3:
        cv2.fillPoly(mask, [np.asarray(region.outline, dtype=np.int32).reshape(-1, 1, 2)], 1)
    else:
        x0, y0, x1, y1 = region.bbox
        mask[y0:y1, x0:x1] = 1
    return mask.astype(bool)


def frame_region_scores(regions: Sequence[Region], truth: np.ndarray) -> tuple[bool, float]:
    """(top region overlaps ``truth``, IoU of all regions with ``truth``) for one frame."""
    truth = np.asarray(truth) > 0
    if not regions:
        return False, 0.0
    masks = [region_mask(r, truth.shape) for r in regions]
    hit = bool((masks[0] & truth).any())
    union = np.logical_or.reduce(masks)
    denom = (union | truth).sum()
    return hit, float((union & truth).sum() / denom) if denom else 0.0


def region_quality(detector, items: Sequence[DatasetItem], batch_size: int = 16) -> dict:
    """``REGION_KEYS`` per product over its defective items (pixels from ``load_image`` /
    ``load_mask``) and pooled over every product's frames under ``"all"``; nan where nothing was
    flagged."""
    by_product: dict[str, list[DatasetItem]] = {}
    for item in items:
        by_product.setdefault(item.product, []).append(item)
    per_product: dict[str, dict] = {}
    for product, product_items in by_product.items():
        defective = [i for i in product_items if i.defect_type is not None]
        flagged = shown = hits = 0
        ious: list[float] = []
        for start in range(0, len(defective), batch_size):
            chunk = defective[start : start + batch_size]
            pixels = [load_image(i) for i in chunk]
            images = [Image.fromarray(p) for p in pixels]
            for item, image, out in zip(
                chunk, pixels, detector.detect(images, [product] * len(chunk))
            ):
                det = out.detection
                if decide_verdict(det.anomaly_score, *out.thresholds).value == "ok":
                    continue
                flagged += 1
                shown += bool(det.regions)
                hit, iou = frame_region_scores(det.regions, load_mask(item, image.shape[:2]))
                hits += hit
                ious.append(iou)
        per_product[product] = {
            "defective": len(defective),
            "n_flagged": flagged,
            "n_shown": shown,
            "n_hits": hits,
            "iou_sum": float(np.sum(ious)),
            "flagged": flagged / len(defective) if defective else float("nan"),
            "regions_shown": shown / flagged if flagged else float("nan"),
            "region_hit_rate": hits / flagged if flagged else float("nan"),
            "region_iou": float(np.mean(ious)) if ious else float("nan"),
        }
    total = {
        k: sum(m[k] for m in per_product.values())
        for k in ("defective", "n_flagged", "n_shown", "n_hits", "iou_sum")
    }
    flagged = total["n_flagged"]
    pooled = {
        "defective": total["defective"],
        "flagged": flagged / total["defective"] if total["defective"] else float("nan"),
        "regions_shown": total["n_shown"] / flagged if flagged else float("nan"),
        "region_hit_rate": total["n_hits"] / flagged if flagged else float("nan"),
        "region_iou": total["iou_sum"] / flagged if flagged else float("nan"),
    }
    return {"all": pooled, "per_product": per_product}
