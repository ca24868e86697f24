"""`qc-stream eval` end to end: load or train the methods, evaluate, build the report and table."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from qc_stream.dapo import active_version, list_versions, load_backbone, load_prompt_version
from qc_stream.errors import QcError
from qc_stream.evaluation.regions import region_quality
from qc_stream.evaluation.runner import evaluate, goals, handcrafted_for
from qc_stream.inference.detector import Detector
from qc_stream.settings import DEFAULT_BACKBONE, DEFAULT_MODELS_DIR, load_settings
from qc_stream.synth.datasets import MODES, test_sets
from qc_stream.synth.split import load_split
from qc_stream.training.recipe import Recipe, train_method

METHODS = ("dapo", "handcrafted", "agnostic")
ABLATION_RECIPE = dict(per_product=32)  # the default recipe on fewer images (two CPU trainings)


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def find_version(models_dir: Path, method: str, backbone) -> str:
    """The newest saved version of `method` made for this backbone."""
    found = [
        m["version"]
        for m in list_versions(models_dir)
        if m.get("method") == method
        and m.get("backbone", {}).get("weights_sha256") == backbone.weights_sha256
    ]
    if not found:
        raise QcError(
            f"no {method} prompt version for backbone {backbone.backbone_id} under {models_dir}/prompts "
            "(train one with scripts/train_default_prompts.py)"
        )
    return found[-1]


def run_benchmark(
    quick: bool = True,
    backbone_name: str = DEFAULT_BACKBONE,
    models_dir: Path | None = None,
    dapo_version: str | None = None,
    agnostic_version: str | None = None,
    ablation: bool | None = None,
    log: Callable[[str], None] = _log,
) -> dict:

    started = time.perf_counter()
    torch.set_num_threads(max(1, min(torch.get_num_threads(), 2)))
    models_dir = Path(models_dir or DEFAULT_MODELS_DIR)
    mode = "quick" if quick else "full"
    split = load_split()
    backbone = load_backbone(backbone_name, models_dir=models_dir)
    dapo_version = (
        dapo_version or active_version(models_dir) or find_version(models_dir, "dapo", backbone)
    )
    agnostic_version = agnostic_version or find_version(models_dir, "agnostic", backbone)
    dapo = load_prompt_version(dapo_version, backbone, models_dir)
    agnostic = load_prompt_version(agnostic_version, backbone, models_dir)
    if dapo.model.method != "dapo":
        raise QcError(f"prompt version {dapo_version!r} is a {dapo.model.method} version, not dapo")
    n = MODES[mode]
    log(
        f"eval ({mode}): backbone {backbone.backbone_id}; held-out products {', '.join(split.held_out_products)}; "
        f"per product {n[0]} normal + {n[1]} seen-type + {n[2]} novel-type defects"
    )
    log("generating test images ...")
    sets = test_sets(mode, split)
    detectors = {
        "dapo": lambda p: dapo.model,
        "handcrafted": handcrafted_for(backbone),
        "agnostic": lambda p: agnostic.model,
    }
    methods = {}
    for name, model_for in detectors.items():
        log(f"{name}:")
        methods[name] = evaluate(model_for, sets, log=log, name=name)
    log("regions: the detector with the calibrated thresholds on the defective frames ...")
    detector = Detector.for_version(
        backbone, dapo.version, load_settings(models_dir=models_dir, prompt_version=dapo.version)
    )
    regions = region_quality(detector, {p: ts.all for p, ts in sets.items()})
    report = {
        "mode": mode,
        "backbone": backbone.backbone_id,
        "regions": regions,
        "prompt_versions": {"dapo": dapo.version, "agnostic": agnostic.version},
        "split": split.to_dict() | {"test_per_product": dict(zip(("normal", "seen", "novel"), n))},
        "methods": methods,
        "goals": goals(methods),
    }
    if ablation if ablation is not None else not quick:
        recipe = Recipe(**ABLATION_RECIPE)
        report["ablation"] = {"recipe": recipe.to_dict()}
        for schedule in ("staged", "joint"):
            log(
                f"ablation: training DAPO, {schedule} schedule ({recipe.per_product} images per auxiliary product) ..."
            )
            t0 = time.perf_counter()
            model, history, _ = train_method(
                backbone, "dapo", schedule, recipe, progress=sys.stderr.isatty()
            )
            res = evaluate(lambda p, m=model: m, sets, log=log, name=f"dapo-{schedule}")
            res["train_seconds"] = time.perf_counter() - t0
            res["final_loss"] = history.epoch_means()[-1]["loss"] if history.steps else math.nan
            report["ablation"][schedule] = res
    report["seconds"] = time.perf_counter() - started
    return report


def _fmt(v) -> str:
    return "  n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"


def table(report: dict) -> str:
    """A Markdown table: methods x (all / seen / novel) on the headline metrics."""
    cols = ("image_auroc", "image_ap", "pixel_auroc", "pixel_aupro", "type_f1", "type_accuracy")
    head = "| method | subset | image AUROC | image AP | pixel AUROC | AUPRO | type F1 | type acc |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    rows = [(k, v) for k, v in report["methods"].items()]
    rows += [
        (f"dapo ({s})", report["ablation"][s])
        for s in ("staged", "joint")
        if s in report.get("ablation", {})
    ]
    for name, m in rows:
        for sub in ("all", "seen", "novel"):
            src = m if sub == "all" else m.get(sub, {})
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
    out = []
    for k, g in report["goals"].items():
        out.append(
            f"{'met ' if g['met'] else 'MISS'} {k}: measured {_fmt(g['measured'])} (target {g['target']})"
        )
    return "\n".join(out)


def to_json_safe(obj):
    """NaN -> null so the file is strict JSON."""
    if isinstance(obj, float):
        return None if math.isnan(obj) or math.isinf(obj) else obj
    if isinstance(obj, dict):
        return {str(k): to_json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_json_safe(v) for v in obj]
    return obj
