#!/usr/bin/env python
"""Where does DAPO's benchmark quality go? Three diagnostics behind docs/dapo.md "Model quality".

    oracle    pixel metrics of a perfect predictor at a coarse grid (no model): is the patch grid the limit?
    ceiling   DAPO trained on the held-out products themselves (train seed), tested on their test seed:
              what can the frozen backbone's features give at all, without the distribution shift?
    recipe    DAPO trained on the auxiliary products (the shipped recipe, overridable), measured on the
              VALIDATION seed, with alternative image-score rules from the same forward pass
    versions  saved prompt versions (DAPO or baselines) measured on the VALIDATION seed: how to choose
              between versions without looking at the test seed
    types     type naming on the VALIDATION seed: a DAPO version's image score with its own per-image
              type distribution, the hand-crafted baseline's (product-named frozen prompts), and blends

    .venv/bin/python scripts/diagnose_quality.py oracle
    .venv/bin/python scripts/diagnose_quality.py ceiling --epochs 4
    .venv/bin/python scripts/diagnose_quality.py recipe --models-dir models --per-product 96 --epochs 4
    .venv/bin/python scripts/diagnose_quality.py versions dapo-qc-clip-tiny-cpu-v1 agnostic-qc-clip-tiny-cpu-v1
    .venv/bin/python scripts/diagnose_quality.py types dapo-qc-clip-tiny-cpu-v1
    .venv/bin/python scripts/diagnose_quality.py --backbone qc-clip-tiny versions dapo-qc-clip-tiny-v3  # GPU backbone

`--backbone` (default: the default backbone) must be the one a named version was trained on.

Numbers are for choosing what to try next; the benchmark itself is `qc-stream eval`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from qc_stream.settings import DEFAULT_BACKBONE  # noqa: E402

V3_CONFIG = {
    "n_deep_visual": 0,
    "cls_type_weight": 1.0,
    "smooth_sigma": 4.0,
}  # the shipped v3 settings


def _mean(rows: dict[str, dict]) -> dict:
    first = next(iter(rows.values()))
    return {k: round(float(np.mean([r[k] for r in rows.values()])), 3) for k in first}


def oracle(args) -> None:
    import torch
    import torch.nn.functional as F

    from qc_stream.evaluation.metrics import pixel_metrics
    from qc_stream.synth.datasets import test_sets

    sets = test_sets("quick")
    gen = torch.Generator().manual_seed(0)
    for g in args.grids:
        rows = {}
        for p, ts in sets.items():
            masks = [s.mask for s in ts.all]
            m = torch.from_numpy(np.stack(masks).astype(np.float32))[:, None]
            small = F.adaptive_avg_pool2d(m, g)
            small = small + 0.02 * torch.rand(
                small.shape, generator=gen
            )  # ties broken, as in a real map
            up = F.interpolate(small, size=masks[0].shape, mode="bilinear", align_corners=False)[
                :, 0
            ].numpy()
            rows[p] = pixel_metrics(masks, up)
        print(f"grid {g}x{g}: {_mean(rows)}", flush=True)


def _train(backbone, args, data=None, words=None):
    """DAPO with the v3 settings, joint schedule, `args.epochs` epochs (the shared training recipe)."""
    from qc_stream.training.recipe import Recipe, train_method

    recipe = Recipe(
        per_product=args.per_product,
        stage_epochs=(args.epochs, 0, 0),
        lr=args.lr,
        seed=args.seed,
        model_config={**V3_CONFIG, **json.loads(args.config)},
        type_weight=args.type_weight,
    )
    t0 = time.perf_counter()
    model, history, _ = train_method(
        backbone, "dapo", "joint", recipe, progress=False, data=data, words=words
    )
    print(
        f"trained {args.epochs} epochs ({len(history.steps)} steps) in {time.perf_counter() - t0:.0f} s",
        flush=True,
    )
    return model


def _score(model, items, words: list[str]) -> dict[str, np.ndarray]:
    """The raw outputs of ``qc-stream eval``'s scoring pass: image scores [B], anomaly maps
    [B, H, W] at the frames' size, image type distributions [B, N]."""
    from qc_stream.evaluation.dataset_eval import score_items

    rows = list(score_items(model, items, words, batch_size=16))
    return {
        "score": np.array([r[0] for r in rows]),
        "map": np.stack([r[1] for r in rows]),
        "types": np.stack([r[3] for r in rows]),
    }


def _by_product(data) -> dict[str, list]:
    """The held-out data set's items per product (its benchmark order)."""
    return {p: [i for i in data.items if i.product == p] for p in data.products}


def _report(model, data, label: str) -> None:
    from qc_stream.evaluation.metrics import image_metrics, pixel_metrics, type_metrics, type_scores

    model.eval()
    words_of = data.product_words()
    rows = {}
    for p, items in _by_product(data).items():
        words = words_of[p]
        r = _score(model, items, words)
        y = np.array([s.defect_type is not None for s in items], int)
        flat = r["map"].reshape(len(y), -1)
        top1 = np.sort(flat, 1)[:, -max(1, flat.shape[1] // 100) :].mean(1)
        rules = {
            "cls": r["score"],
            "map_max": flat.max(1),
            "map_top1%": top1,
            "cls*map_top1%": r["score"] * top1,
        }
        rows[p] = {
            f"image_auroc[{k}]": image_metrics(y, v)["image_auroc"] for k, v in rules.items()
        }
        rows[p]["image_ap[cls]"] = image_metrics(y, r["score"])["image_ap"]
        rows[p].update(pixel_metrics([s.mask for s in items], r["map"]))
        rows[p]["type_f1"] = type_metrics(
            [s.defect_type for s in items], type_scores(r["score"], r["types"]), words
        )["type_f1"]
        print(f"  {p:12s} {json.dumps({k: round(v, 3) for k, v in rows[p].items()})}", flush=True)
    print(f"{label} mean: {json.dumps(_mean(rows))}", flush=True)


def ceiling(args) -> None:
    from qc_stream.dapo import load_backbone
    from qc_stream.synth import PRODUCTS, generate
    from qc_stream.synth.datasets import held_out_dataset
    from qc_stream.synth.split import load_split

    split = load_split()
    backbone = load_backbone(args.backbone, models_dir=args.models_dir)
    data = [
        s
        for p in split.held_out_products
        for s in generate(p, args.per_product, int(split.seeds["train"]), 256, 0.6)
    ]
    words = sorted({t for p in split.held_out_products for t in PRODUCTS[p].defects})
    _report(
        _train(backbone, args, data, words),
        held_out_dataset("quick"),
        f"ceiling ({backbone.backbone_id}, test seed)",
    )


def _validation_sets():
    from qc_stream.synth.datasets import held_out_dataset
    from qc_stream.synth.split import load_split

    split = load_split()
    return held_out_dataset(
        "quick",
        split=dataclasses.replace(split, seeds={**split.seeds, "test": split.seeds["validation"]}),
    )


def recipe(args) -> None:
    from qc_stream.dapo import load_backbone

    backbone = load_backbone(args.backbone, models_dir=args.models_dir)
    model = _train(backbone, args)
    _report(model, _validation_sets(), f"recipe ({backbone.backbone_id}, validation seed)")


def versions(args) -> None:
    from qc_stream.dapo import load_backbone, load_prompt_version

    if not args.names:
        raise SystemExit("versions: name at least one prompt version (see models/prompts/)")
    backbone = load_backbone(args.backbone, models_dir=args.models_dir)
    sets = _validation_sets()
    for name in args.names:
        _report(
            load_prompt_version(name, backbone, args.models_dir).model,
            sets,
            f"{name} (validation seed)",
        )


def types(args) -> None:
    from qc_stream.dapo import (
        HandcraftedBaseline,
        HandcraftedConfig,
        load_backbone,
        load_prompt_version,
    )
    from qc_stream.evaluation.metrics import type_metrics, type_scores

    if len(args.names) != 1:
        raise SystemExit("types: name exactly one DAPO prompt version (see models/prompts/)")
    backbone = load_backbone(args.backbone, models_dir=args.models_dir)
    dapo = load_prompt_version(args.names[0], backbone, args.models_dir).model.eval()
    data = _validation_sets()
    words_of, nouns = data.product_words(), data.object_names()
    rows = {}
    for p, items in _by_product(data).items():
        words = words_of[p]
        handcrafted = HandcraftedBaseline(backbone, HandcraftedConfig(object_name=nouns[p])).eval()
        rd, rh = _score(dapo, items, words), _score(handcrafted, items, words)
        truth = [s.defect_type for s in items]
        defective = [i for i, t in enumerate(truth) if t is not None]
        rows[p] = {}
        # w = weight of the hand-crafted type distribution; the image score stays DAPO's throughout
        for w in args.weights:
            dist = (1 - w) * rd["types"] + w * rh["types"]
            rows[p][f"type_f1[w={w:g}]"] = type_metrics(
                truth, type_scores(rd["score"], dist), words
            )["type_f1"]
            rows[p][f"type_acc_defects[w={w:g}]"] = float(
                np.mean([words[int(np.argmax(dist[i]))] == truth[i] for i in defective])
            )
        rows[p]["type_f1[handcrafted alone]"] = type_metrics(
            truth, type_scores(rh["score"], rh["types"]), words
        )["type_f1"]
        # and the other way round: is the baseline's edge in its score or in its naming?
        rows[p]["type_f1[handcrafted score, DAPO types]"] = type_metrics(
            truth, type_scores(rh["score"], rd["types"]), words
        )["type_f1"]
        print(f"  {p:12s} {json.dumps({k: round(v, 3) for k, v in rows[p].items()})}", flush=True)
    print(
        f"{args.names[0]} type naming (validation seed) mean: {json.dumps(_mean(rows))}", flush=True
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("what", choices=("oracle", "ceiling", "recipe", "versions", "types"))
    ap.add_argument(
        "names", nargs="*", help="versions: the prompt versions to measure; types: one DAPO version"
    )
    ap.add_argument(
        "--weights",
        type=float,
        nargs="+",
        default=[0.0, 0.25, 0.5, 0.75, 1.0],
        help="types: weights of the hand-crafted type distribution to try (0 = DAPO's own)",
    )
    ap.add_argument("--backbone", default=DEFAULT_BACKBONE)
    ap.add_argument(
        "--models-dir", type=Path, default=REPO / "models", help="folder holding backbones/<name>/"
    )
    ap.add_argument("--per-product", type=int, default=96)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--config", default="{}", help="DAPO config overrides (JSON), on top of the v3 settings"
    )
    ap.add_argument(
        "--type-weight",
        type=float,
        default=0.0,
        help="recipe/ceiling: weight of the per-image type cross-entropy (0 = the paper's loss)",
    )
    ap.add_argument("--grids", type=int, nargs="+", default=[8, 12, 16, 24])
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    if args.names and args.what not in ("versions", "types"):
        ap.error("prompt version names go only with 'versions' or 'types'")
    if any(not 0.0 <= w <= 1.0 for w in args.weights):
        ap.error("--weights must lie in [0, 1]")
    {"oracle": oracle, "ceiling": ceiling, "recipe": recipe, "versions": versions, "types": types}[
        args.what
    ](args)


if __name__ == "__main__":
    main()
