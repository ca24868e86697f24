"""Run detectors over the held-out test sets and compute the benchmark metrics.

For every held-out product the detector sees the product's own defect words as candidates (as a
registered line would) and scores all test images once; metrics are then computed on three
subsets: all, seen (normals + seen-type defects) and novel (normals + novel-type defects).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from qc_stream.dapo import HandcraftedBaseline, HandcraftedConfig
from qc_stream.evaluation.metrics import (
    image_metrics,
    mean_over_products,
    pixel_metrics,
    type_metrics,
    type_scores,
)
from qc_stream.synth import PRODUCTS
from qc_stream.synth.datasets import ProductTestSet

SUBSETS = ("all", "seen", "novel")
HEADLINE = (
    "image_auroc",
    "image_ap",
    "image_f1_max",
    "pixel_auroc",
    "pixel_aupro",
    "pixel_f1_max",
    "type_f1",
    "type_accuracy",
    "type_auroc",
)


@torch.inference_mode()
def score(model, samples, words: list[str], batch_size: int = 16) -> dict[str, np.ndarray]:
    """image scores [B], anomaly maps [B,H,W] at the samples' size, type distributions [B,N]."""
    backbone = model.backbone
    scores, maps, types = [], [], []
    for i in range(0, len(samples), batch_size):
        chunk = samples[i : i + batch_size]
        x = backbone.preprocess_batch([s.image for s in chunk]).to(backbone.device)
        out = model(x, words)
        h, w = chunk[0].image.shape[:2]
        amap = F.interpolate(
            out.anomaly_map[:, None].float(), size=(h, w), mode="bilinear", align_corners=False
        )[:, 0]
        scores.append(out.image_score.float().cpu().numpy())
        maps.append(amap.cpu().numpy())
        types.append(out.image_type_probs.float().cpu().numpy())
    return {
        "score": np.concatenate(scores),
        "map": np.concatenate(maps),
        "types": np.concatenate(types),
    }


def subset_metrics(samples, result, words, index: np.ndarray) -> dict[str, float]:
    sel = [samples[i] for i in index]
    labels = np.array([s.defect_type is not None for s in sel], dtype=int)
    m = image_metrics(labels, result["score"][index])
    m.update(pixel_metrics([s.mask for s in sel], result["map"][index]))
    m.update(
        type_metrics(
            [s.defect_type for s in sel],
            type_scores(result["score"][index], result["types"][index]),
            words,
        )
    )
    return m


def evaluate(
    model_for: Callable[[str], object],
    sets: dict[str, ProductTestSet],
    batch_size: int = 16,
    log: Callable[[str], None] | None = None,
    name: str = "",
) -> dict:
    """Metrics of one method: headline means over products (subset "all") plus "seen", "novel",
    "per_product" and "seconds". `model_for(product)` returns the detector to use for a product."""
    started = time.perf_counter()
    per_product: dict[str, dict] = {}
    for product, ts in sets.items():
        t0 = time.perf_counter()
        words = list(PRODUCTS[product].defects)
        samples = ts.all
        result = score(model_for(product), samples, words, batch_size)
        n0, n1 = len(ts.normals), len(ts.seen)
        idx = {
            "all": np.arange(len(samples)),
            "seen": np.arange(n0 + n1),
            "novel": np.concatenate([np.arange(n0), np.arange(n0 + n1, len(samples))]),
        }
        per_product[product] = {
            k: subset_metrics(samples, result, words, v)
            for k, v in idx.items()
            if len(v) > n0 or k == "all"
        }
        if log:
            m = per_product[product]["all"]
            log(
                f"  {name:12s} {product:12s} image AUROC {m['image_auroc']:.3f}  pixel AUROC {m['pixel_auroc']:.3f}  "
                f"AUPRO {m['pixel_aupro']:.3f}  type F1 {m['type_f1']:.3f}  ({time.perf_counter() - t0:.1f} s)"
            )
    out = {
        k: v for k, v in mean_over_products({p: r["all"] for p, r in per_product.items()}).items()
    }
    for sub in ("seen", "novel"):
        out[sub] = mean_over_products({p: r[sub] for p, r in per_product.items() if sub in r})
    out["per_product"] = per_product
    out["seconds"] = time.perf_counter() - started
    return out


def image_level(m: dict) -> float:
    """The paper's image-level figure: mean of image AUROC and AP."""
    return (m["image_auroc"] + m["image_ap"]) / 2


def pixel_level(m: dict) -> float:
    """Pixel-level figure: mean of pixel AUROC and AUPRO."""
    return (m["pixel_auroc"] + m["pixel_aupro"]) / 2


GOALS = {
    "dapo_image_auroc": 0.95,
    "dapo_pixel_auroc": 0.95,
    "dapo_pixel_aupro": 0.85,
    "dapo_type_f1": 0.80,
    "image_margin_over_best_baseline": 0.037,
    "novel_pixel_margin_over_best_baseline": 0.065,
}


def goals(methods: dict[str, dict]) -> dict:
    """Each goal of issue 4: target, measured value, met or not."""
    d = methods["dapo"]
    baselines = {k: v for k, v in methods.items() if k in ("handcrafted", "agnostic")}
    best_img = max(image_level(v) for v in baselines.values()) if baselines else math.nan
    best_px_novel = (
        max(pixel_level(v["novel"]) for v in baselines.values()) if baselines else math.nan
    )
    measured = {
        "dapo_image_auroc": d["image_auroc"],
        "dapo_pixel_auroc": d["pixel_auroc"],
        "dapo_pixel_aupro": d["pixel_aupro"],
        "dapo_type_f1": d["type_f1"],
        "image_margin_over_best_baseline": image_level(d) - best_img,
        "novel_pixel_margin_over_best_baseline": pixel_level(d["novel"]) - best_px_novel,
    }
    return {
        k: {"target": GOALS[k], "measured": measured[k], "met": bool(measured[k] >= GOALS[k])}
        for k in GOALS
    }


def handcrafted_for(backbone) -> Callable[[str], object]:
    """WinCLIP-style baseline naming each product by its noun (as WinCLIP uses the class name)."""
    cache: dict[str, object] = {}

    def get(product: str):
        if product not in cache:
            cache[product] = HandcraftedBaseline(
                backbone, HandcraftedConfig(object_name=PRODUCTS[product].noun)
            ).eval()
        return cache[product]

    return get
