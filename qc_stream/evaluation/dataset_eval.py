"""The paper's protocol on a dataset read by ``qc_stream.datasets``: per category and mean.

Per category (the dataset's test split): image AUROC / AP / F1-max; pixel AUROC / AUPRO (FPR 0.3) /
F1-max with maps resized back to each frame's own size; multi-type metrics one-vs-rest over
``[normal, *words]`` at image level (``type_*``, as ``type_metrics``) and at pixel level
(``pixel_type_*``: macro AUROC / AP / F1 of the per-pixel argmax, computed at the model's input size
with the masks resized nearest to it, so memory stays bounded with a large vocabulary).

Vocabulary: ``dataset`` scores every category against all defect words of the dataset (the
reference's protocol); ``product`` only against the category's own words.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from qc_stream.dapo import HandcraftedBaseline, HandcraftedConfig, active_version
from qc_stream.dapo.checkpoint import load_prompt_version, read_manifest
from qc_stream.datasets import Dataset, DatasetItem, load_image, load_mask
from qc_stream.errors import QcError
from qc_stream.evaluation.benchmark import find_version
from qc_stream.evaluation.metrics import (
    PixelCounts,
    PixelTypeCounts,
    _thresholds,
    image_metrics,
    mean_over_products,
    type_metrics,
    type_scores,
)

VOCABULARIES = ("dataset", "product")
METRICS = (
    "image_auroc",
    "image_ap",
    "image_f1_max",
    "pixel_auroc",
    "pixel_aupro",
    "pixel_f1_max",
    "type_auroc",
    "type_ap",
    "type_f1",
    "type_accuracy",
    "pixel_type_auroc",
    "pixel_type_ap",
    "pixel_type_f1",
)


@torch.inference_mode()
def score_items(model, items: Sequence[DatasetItem], words: list[str], batch_size: int = 8):
    """Yield, per item: (image score, anomaly map at the frame's size, class scores [1+N, S, S] at
    the model's input size, image type distribution [N], mask at the frame's size or None)."""
    backbone = model.backbone
    for i in range(0, len(items), batch_size):
        chunk = items[i : i + batch_size]
        images = [load_image(it) for it in chunk]
        x = backbone.preprocess_batch(images).to(backbone.device)
        out = model(x, words)
        for j, (item, image) in enumerate(zip(chunk, images)):
            h, w = image.shape[:2]
            amap = out.anomaly_map[j].float()
            full = F.interpolate(
                amap[None, None], size=(h, w), mode="bilinear", align_corners=False
            )
            classes = torch.cat([1 - amap[None], out.type_map_probs[j].float()], dim=0)
            yield (
                float(out.image_score[j]),
                full[0, 0].cpu().numpy(),
                classes.cpu().numpy(),
                out.image_type_probs[j].float().cpu().numpy(),
                load_mask(item, (h, w)),
            )


def _class_map(mask: np.ndarray, cls: int, size: tuple[int, int]) -> np.ndarray:
    m = torch.from_numpy(mask.astype(np.float32))[None, None]
    m = F.interpolate(m, size=size, mode="nearest")[0, 0].numpy() > 0
    return m.astype(np.int64) * cls


def category_metrics(
    model, items: Sequence[DatasetItem], words: list[str], batch_size: int = 8
) -> dict[str, float]:
    labels, scores, type_probs, true_types = [], [], [], []
    maps, masks = [], []
    index = {w: k for k, w in enumerate(words)}
    pixel_types = PixelTypeCounts(1 + len(words))
    for item, (s, amap, classes, tprobs, mask) in zip(
        items, score_items(model, items, words, batch_size)
    ):
        labels.append(item.label)
        scores.append(s)
        type_probs.append(tprobs)
        true_types.append(item.defect_type)
        if mask is not None:
            maps.append(amap)
            masks.append(mask)
            cls = 0 if item.defect_type is None else 1 + index[item.defect_type]
            pixel_types.add(_class_map(mask, cls, classes.shape[1:]), classes)
    out = image_metrics(labels, scores)
    if maps:
        counts = PixelCounts(_thresholds(maps, 4096))
        for mask, amap in zip(masks, maps):
            counts.add(mask, amap)
        out.update(
            pixel_auroc=counts.auroc(), pixel_aupro=counts.aupro(), pixel_f1_max=counts.f1_max()
        )
        out.update(pixel_types.metrics())
    else:
        out.update({k: math.nan for k in METRICS if k.startswith("pixel")})
    out.update(type_metrics(true_types, type_scores(np.array(scores), np.array(type_probs)), words))
    out["images"] = len(items)
    out["defective"] = int(sum(labels))
    return out


def evaluate_dataset(
    model_for: Callable[[str], object],
    data: Dataset,
    vocabulary: str = "dataset",
    batch_size: int = 8,
    log: Callable[[str], None] | None = None,
    name: str = "",
) -> dict:
    """Metrics of one method on ``data``'s test split: ``per_category``, the ``mean`` over
    categories, ``seconds``. ``model_for(category)`` returns the detector for a category."""
    if vocabulary not in VOCABULARIES:
        raise ValueError(f"vocabulary must be one of {VOCABULARIES}")
    started = time.perf_counter()
    test = data.select(split="test")
    product_words = test.product_words()
    all_words = test.words or ["anomaly"]
    per: dict[str, dict] = {}
    for category in test.products:
        t0 = time.perf_counter()
        items = [i for i in test.items if i.product == category]
        words = all_words if vocabulary == "dataset" else (product_words[category] or all_words)
        per[category] = category_metrics(model_for(category), items, words, batch_size)
        if log:
            m = per[category]
            log(
                f"  {name:12s} {category:14s} image AUROC {m['image_auroc']:.3f}  pixel AUROC "
                f"{m['pixel_auroc']:.3f}  AUPRO {m['pixel_aupro']:.3f}  px-type F1 "
                f"{m['pixel_type_f1']:.3f}  ({time.perf_counter() - t0:.1f} s)"
            )
    return {
        "mean": mean_over_products(
            {c: {k: v for k, v in m.items() if k in METRICS} for c, m in per.items()}
        ),
        "per_category": per,
        "seconds": time.perf_counter() - started,
    }


def _fmt(v) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.1f}"


MARKDOWN_COLUMNS = (
    ("image_auroc", "img AUROC"),
    ("image_ap", "img AP"),
    ("image_f1_max", "img F1"),
    ("pixel_auroc", "px AUROC"),
    ("pixel_aupro", "AUPRO"),
    ("pixel_f1_max", "px F1"),
    ("type_f1", "type F1"),
    ("pixel_type_auroc", "px-type AUROC"),
    ("pixel_type_ap", "px-type AP"),
    ("pixel_type_f1", "px-type F1"),
)


def markdown(report: dict) -> str:
    """Per method: a table of categories x metrics (in %), then the mean row."""
    lines = [
        f"# {report['dataset']['name']} ({report['dataset']['layout']}), vocabulary: "
        f"{report['vocabulary']}, backbone {report['backbone']}",
        "",
    ]
    head = "| category | " + " | ".join(c for _, c in MARKDOWN_COLUMNS) + " |"
    for method, res in report["methods"].items():
        lines += [f"## {method}", "", head, "|" + "---|" * (len(MARKDOWN_COLUMNS) + 1)]
        for cat, m in res["per_category"].items():
            lines.append(
                f"| {cat} | " + " | ".join(_fmt(m.get(k)) for k, _ in MARKDOWN_COLUMNS) + " |"
            )
        m = res["mean"]
        lines.append(
            "| **mean** | " + " | ".join(_fmt(m.get(k)) for k, _ in MARKDOWN_COLUMNS) + " |"
        )
        lines.append("")
    return "\n".join(lines)


def _object_name(category: str) -> str:
    return category.replace("_", " ").replace("-", " ")


def run_dataset_eval(
    data: Dataset,
    backbone,
    models_dir,
    methods: Sequence[str] = ("dapo", "handcrafted"),
    prompt_version: str | None = None,
    agnostic_version: str | None = None,
    vocabulary: str = "dataset",
    batch_size: int = 8,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Evaluate ``methods`` on ``data`` with ``backbone``; the report ``qc-stream eval --dataset`` writes."""
    started = time.perf_counter()
    detectors: dict[str, Callable[[str], object]] = {}
    versions: dict[str, str] = {}
    for method in methods:
        if method == "handcrafted":
            cache: dict[str, object] = {}

            def handcrafted(category: str, cache=cache):
                if category not in cache:
                    cfg = HandcraftedConfig(object_name=_object_name(category))
                    cache[category] = HandcraftedBaseline(backbone, cfg).eval()
                return cache[category]

            detectors[method] = handcrafted
            continue
        wanted = prompt_version if method == "dapo" else agnostic_version
        if wanted is None and method == "dapo":
            active = active_version(models_dir)
            made_for = read_manifest(active, models_dir)["backbone"] if active else {}
            if made_for.get("weights_sha256") == backbone.weights_sha256:
                wanted = active  # else: the newest DAPO version made for this backbone
        if wanted is None:
            try:
                wanted = find_version(models_dir, method, backbone)
            except QcError:
                hint = (
                    f"train one: qc-stream train --dataset PATH --backbone {backbone.name}"
                    if method == "dapo"
                    else "give --agnostic VERSION or leave agnostic out of --methods"
                )
                raise QcError(
                    f"no {method} prompt version for backbone {backbone.backbone_id} under "
                    f"{models_dir}/prompts; {hint}"
                ) from None
        version = load_prompt_version(wanted, backbone, models_dir)
        if version.model.method != method:
            raise QcError(
                f"prompt version {version.version!r} is a {version.model.method} version, not {method}"
            )
        versions[method] = version.version
        detectors[method] = lambda _c, m=version.model: m
    report = {
        "dataset": data.info(),
        "vocabulary": vocabulary,
        "backbone": backbone.backbone_id,
        "prompt_versions": versions,
        "methods": {},
    }
    for method, model_for in detectors.items():
        if log:
            log(f"{method}:")
        report["methods"][method] = evaluate_dataset(
            model_for, data, vocabulary, batch_size, log=log, name=method
        )
    report["seconds"] = time.perf_counter() - started
    return report
