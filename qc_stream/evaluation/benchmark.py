"""`qc-stream eval` without ``--dataset``: the synthetic benchmark, one dataset among others.

The held-out products' test images (``qc_stream.synth.datasets.held_out_dataset``) are scored and
measured by ``qc_stream.evaluation.dataset_eval``, the code that runs on MVTec AD, VisA, MPDD, BTAD
and folders: per product (category) and mean, by default against each product's own defect words
(``--vocabulary product``, what a registered line's detector gets). What only this benchmark has
comes on top of those results:

- ``seen`` / ``novel`` subsets (the normals plus the defects of seen / never-trained types): from the
  same scores, per product and mean (``methods[m]["subsets"]``);
- ``goals``: issue 4's targets, from the means;
- ``regions``: what the operator's regions are worth (``evaluation.regions``): the production
  detector with the version's calibrated thresholds on the defective frames, since regions and
  verdicts are the detector's, not the raw model's;
- ``ablation`` (full mode): DAPO trained staged and joint here, each evaluated the same way.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from qc_stream.errors import InputError
from qc_stream.evaluation.dataset_eval import evaluate_dataset, markdown, run_dataset_eval
from qc_stream.evaluation.regions import region_quality
from qc_stream.inference.detector import Detector
from qc_stream.settings import load_settings
from qc_stream.synth.datasets import MODES, held_out_dataset
from qc_stream.synth.split import load_split
from qc_stream.training.recipe import Recipe, train_method

METHODS = ("dapo", "handcrafted", "agnostic")
BATCH_SIZE = 16
ABLATION_RECIPE = dict(per_product=32)  # the default recipe on fewer images (two CPU trainings)


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run_benchmark(
    backbone,
    models_dir: Path,
    quick: bool = True,
    dapo_version: str | None = None,
    agnostic_version: str | None = None,
    ablation: bool | None = None,
    methods: Sequence[str] = METHODS,
    vocabulary: str = "product",
    products: Sequence[str] | None = None,
    batch_size: int = BATCH_SIZE,
    log: Callable[[str], None] = _log,
) -> dict:
    """The report ``qc-stream eval [--quick]`` writes: ``run_dataset_eval``'s, plus ``mode``,
    ``split``, ``goals``, ``regions`` (with dapo) and ``ablation`` (full mode by default)."""
    started = time.perf_counter()
    torch.set_num_threads(max(1, min(torch.get_num_threads(), 2)))
    mode = "quick" if quick else "full"
    split = load_split()
    unknown = sorted(set(products or ()) - set(split.held_out_products))
    if unknown:
        raise InputError(
            f"--products: {unknown[0]!r} is not a held-out product "
            f"({', '.join(split.held_out_products)})"
        )
    n = MODES[mode]
    log(
        f"eval ({mode}): backbone {backbone.backbone_id}; held-out products "
        f"{', '.join(products or split.held_out_products)}; per product {n[0]} normal + {n[1]} "
        f"seen-type + {n[2]} novel-type defects; vocabulary {vocabulary}"
    )
    log("generating test images ...")
    data = held_out_dataset(mode, split, list(products) if products else None)
    subsets = data.subsets()
    report = run_dataset_eval(
        data,
        backbone,
        models_dir,
        methods,
        dapo_version,
        agnostic_version,
        vocabulary,
        batch_size,
        log=log,
        subsets=subsets,
        object_names=data.object_names(),
    )
    report["mode"] = mode
    report["split"] = split.to_dict() | {
        "test_per_product": dict(zip(("normal", "seen", "novel"), n))
    }
    report["goals"] = goals(report["methods"])
    if "dapo" in report["prompt_versions"]:
        log("regions: the detector with the calibrated thresholds on the defective frames ...")
        version = report["prompt_versions"]["dapo"]
        settings = load_settings(models_dir=models_dir, prompt_version=version)
        detector = Detector.for_version(backbone, version, settings)
        report["regions"] = region_quality(detector, data.items, batch_size)
    if ablation if ablation is not None else not quick:
        recipe = Recipe(**ABLATION_RECIPE)
        report["ablation"] = {"recipe": recipe.to_dict()}
        for schedule in ("staged", "joint"):
            log(
                f"ablation: training DAPO, {schedule} schedule ({recipe.per_product} images per "
                "auxiliary product) ..."
            )
            t0 = time.perf_counter()
            model, history, _ = train_method(
                backbone, "dapo", schedule, recipe, progress=sys.stderr.isatty()
            )
            res = evaluate_dataset(
                lambda _p, m=model: m,
                data,
                vocabulary,
                batch_size,
                log=log,
                name=f"dapo-{schedule}",
                subsets=subsets,
            )
            res["train_seconds"] = time.perf_counter() - t0
            res["final_loss"] = history.epoch_means()[-1]["loss"] if history.steps else math.nan
            report["ablation"][schedule] = res
    report["seconds"] = time.perf_counter() - started
    return report


# ---------------------------------------------------------------- goals


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
    """Each goal of issue 4: target, measured value, met or not (nothing without dapo)."""
    if "dapo" not in methods:
        return {}
    d = methods["dapo"]
    baselines = [v for k, v in methods.items() if k in ("handcrafted", "agnostic")]
    best_img = max((image_level(v["mean"]) for v in baselines), default=math.nan)
    best_px_novel = max(
        (pixel_level(v["subsets"]["novel"]) for v in baselines if "novel" in v.get("subsets", {})),
        default=math.nan,
    )
    novel = d.get("subsets", {}).get("novel")
    measured = {
        "dapo_image_auroc": d["mean"]["image_auroc"],
        "dapo_pixel_auroc": d["mean"]["pixel_auroc"],
        "dapo_pixel_aupro": d["mean"]["pixel_aupro"],
        "dapo_type_f1": d["mean"]["type_f1"],
        "image_margin_over_best_baseline": image_level(d["mean"]) - best_img,
        "novel_pixel_margin_over_best_baseline": (pixel_level(novel) if novel else math.nan)
        - best_px_novel,
    }
    return {
        k: {"target": GOALS[k], "measured": measured[k], "met": bool(measured[k] >= GOALS[k])}
        for k in GOALS
    }


# ---------------------------------------------------------------- text


def _fmt(v) -> str:
    return "  n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"


def table(report: dict) -> str:
    """A Markdown table: methods (and the ablation's two DAPOs) x (all / seen / novel), means over
    the held-out products."""
    cols = ("image_auroc", "image_ap", "pixel_auroc", "pixel_aupro", "type_f1", "type_accuracy")
    head = "| method | subset | image AUROC | image AP | pixel AUROC | AUPRO | type F1 | type acc |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    rows = list(report["methods"].items())
    rows += [
        (f"dapo ({s})", report["ablation"][s])
        for s in ("staged", "joint")
        if s in report.get("ablation", {})
    ]
    for name, m in rows:
        for sub in ("all", "seen", "novel"):
            src = m["mean"] if sub == "all" else m.get("subsets", {}).get(sub, {})
            lines.append(f"| {name} | {sub} | " + " | ".join(_fmt(src.get(c)) for c in cols) + " |")
    return "\n".join(lines)


def regions_text(report: dict) -> str:
    """One line: what the regions of flagged defective frames are worth (see evaluation.regions)."""
    r = (report.get("regions") or {}).get("all")
    if not r:
        return ""
    return (
        f"regions (dapo, calibrated thresholds, {r['defective']} defective frames): flagged "
        f"{_fmt(r['flagged'])}; of those flagged: with a region {_fmt(r['regions_shown'])}, top "
        f"region on the defect {_fmt(r['region_hit_rate'])}, mean IoU {_fmt(r['region_iou'])}"
    )


def goals_text(report: dict) -> str:
    return "\n".join(
        f"{'met ' if g['met'] else 'MISS'} {k}: measured {_fmt(g['measured'])} (target {g['target']})"
        for k, g in report["goals"].items()
    )


def benchmark_markdown(report: dict) -> str:
    """The per-product tables of every dataset report, then the seen/novel table, the regions line
    and the goals."""
    return "\n".join(
        [
            markdown(report),
            "## seen and novel defect types (mean over the held-out products)",
            "",
            table(report),
            "",
            regions_text(report),
            "",
            goals_text(report),
        ]
    )
