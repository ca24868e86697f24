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
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from qc_stream.dapo import HandcraftedBaseline, HandcraftedConfig, active_version, list_versions
from qc_stream.dapo.checkpoint import load_prompt_version, read_manifest
from qc_stream.datasets import Dataset, DatasetItem, load_image, load_mask
from qc_stream.errors import QcError
from qc_stream.evaluation.metrics import (
    PixelTypeCounts,
    image_metrics,
    mean_over_products,
    pixel_metrics,
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
    model,
    items: Sequence[DatasetItem],
    words: list[str],
    batch_size: int = 8,
    subsets: Mapping[str, Callable[[DatasetItem], bool]] | None = None,
) -> dict:
    """``METRICS`` of one category from one scoring pass, plus ``images`` and ``defective``. With
    ``subsets`` (name -> which items belong), the same metrics of each subset that holds a defective
    item under ``"subsets"``, from the same scores."""
    groups = {"all": lambda _item: True, **(subsets or {})}
    members = {g: [k for k, item in enumerate(items) if keep(item)] for g, keep in groups.items()}
    member_sets = {g: set(ks) for g, ks in members.items()}
    index = {w: k for k, w in enumerate(words)}
    pixel_types = {g: PixelTypeCounts(1 + len(words)) for g in groups}
    scores, type_probs, maps, masks = [], [], [], []
    for k, (item, (s, amap, classes, tprobs, mask)) in enumerate(
        zip(items, score_items(model, items, words, batch_size))
    ):
        scores.append(s)
        type_probs.append(tprobs)
        maps.append(None if mask is None else amap)  # no mask: no pixel metric needs the map
        masks.append(mask)
        if mask is not None:
            cls = 0 if item.defect_type is None else 1 + index[item.defect_type]
            counts = pixel_types["all"].counts(_class_map(mask, cls, classes.shape[1:]), classes)
            for g, ks in member_sets.items():
                if k in ks:
                    pixel_types[g].add_counts(counts)

    def metrics(ks: list[int], pixel_type_counts: PixelTypeCounts) -> dict[str, float]:
        labels = [items[k].label for k in ks]
        out = image_metrics(labels, [scores[k] for k in ks])
        labelled = [k for k in ks if masks[k] is not None]
        if labelled:
            out.update(pixel_metrics([masks[k] for k in labelled], [maps[k] for k in labelled]))
            out.update(pixel_type_counts.metrics())
        else:
            out.update({m: math.nan for m in METRICS if m.startswith("pixel")})
        out.update(
            type_metrics(
                [items[k].defect_type for k in ks],
                type_scores(
                    np.array([scores[k] for k in ks]), np.array([type_probs[k] for k in ks])
                ),
                words,
            )
        )
        out["images"] = len(ks)
        out["defective"] = int(sum(labels))
        return out

    result = metrics(members["all"], pixel_types["all"])
    if subsets:
        result["subsets"] = {
            g: metrics(members[g], pixel_types[g])
            for g in subsets
            if any(items[k].label for k in members[g])
        }
    return result


def evaluate_dataset(
    model_for: Callable[[str], object],
    data: Dataset,
    vocabulary: str = "dataset",
    batch_size: int = 8,
    log: Callable[[str], None] | None = None,
    name: str = "",
    subsets: Mapping[str, Callable[[DatasetItem], bool]] | None = None,
) -> dict:
    """Metrics of one method on ``data``'s test split: ``per_category``, the ``mean`` over
    categories, ``seconds``; with ``subsets``, also their means under ``"subsets"`` (each category's
    own under its ``"subsets"``). ``model_for(category)`` returns the detector for a category."""
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
        per[category] = category_metrics(model_for(category), items, words, batch_size, subsets)
        if log:
            m = per[category]
            log(
                f"  {name:12s} {category:14s} image AUROC {m['image_auroc']:.3f}  pixel AUROC "
                f"{m['pixel_auroc']:.3f}  AUPRO {m['pixel_aupro']:.3f}  type F1 {m['type_f1']:.3f}  "
                f"px-type F1 {m['pixel_type_f1']:.3f}  ({time.perf_counter() - t0:.1f} s)"
            )
    out = {"mean": _mean(per.values()), "per_category": per}
    if subsets:
        out["subsets"] = {
            g: _mean(m["subsets"][g] for m in per.values() if g in m["subsets"]) for g in subsets
        }
    out["seconds"] = time.perf_counter() - started
    return out


def _mean(per_category: Iterable[Mapping]) -> dict[str, float]:
    return mean_over_products(
        {
            str(k): {m: v for m, v in metrics.items() if m in METRICS}
            for k, metrics in enumerate(per_category)
        }
    )


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


def find_version(models_dir: Path, method: str, backbone) -> str:
    """The newest saved version of ``method`` made for this backbone."""
    found = [
        m["version"]
        for m in list_versions(models_dir)
        if m.get("method") == method
        and m.get("backbone", {}).get("weights_sha256") == backbone.weights_sha256
    ]
    if not found:
        raise QcError(
            f"no {method} prompt version for backbone {backbone.backbone_id} under {models_dir}/prompts"
        )
    return found[-1]


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
    subsets: Mapping[str, Callable[[DatasetItem], bool]] | None = None,
    object_names: Mapping[str, str] | None = None,
) -> dict:
    """Evaluate ``methods`` on ``data`` with ``backbone``: the report ``qc-stream eval`` writes.
    ``subsets``: see ``category_metrics``; ``object_names``: what the hand-crafted baseline calls
    each category (default: its folder name in words)."""
    started = time.perf_counter()
    detectors: dict[str, Callable[[str], object]] = {}
    versions: dict[str, str] = {}
    for method in methods:
        if method == "handcrafted":
            cache: dict[str, object] = {}

            def handcrafted(category: str, cache=cache):
                if category not in cache:
                    name = (object_names or {}).get(category) or _object_name(category)
                    cfg = HandcraftedConfig(object_name=name)
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
            model_for, data, vocabulary, batch_size, log=log, name=method, subsets=subsets
        )
    report["seconds"] = time.perf_counter() - started
    return report


def to_json_safe(obj):
    """NaN -> null so the file is strict JSON."""
    if isinstance(obj, float):
        return None if math.isnan(obj) or math.isinf(obj) else obj
    if isinstance(obj, dict):
        return {str(k): to_json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_json_safe(v) for v in obj]
    return obj
