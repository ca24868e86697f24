#!/usr/bin/env python
"""Train the default prompt versions on the auxiliary products and ship them under models/prompts/.

- DAPO, staged schedule -> the default (ACTIVE) version
- the object-agnostic baseline (AnomalyCLIP-style), same data and epochs -> used by `qc-stream eval`

Each version's manifest carries its quick-benchmark metrics on the held-out products.

    .venv/bin/python scripts/train_default_prompts.py            # ~15-25 min on 2 busy cores
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from qc_stream.settings import DEFAULT_BACKBONE  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backbone", default=DEFAULT_BACKBONE)
    ap.add_argument("--models-dir", type=Path, default=REPO / "models")
    ap.add_argument("--per-product", type=int, default=48)
    ap.add_argument("--stage-epochs", default="1,1,1")
    ap.add_argument(
        "--deep-visual",
        type=int,
        default=0,
        help="DAPO deep visual prompt tokens per layer (spec: 4)",
    )
    ap.add_argument(
        "--own-types-only",
        action="store_true",
        help="defects only from each auxiliary product's own subset (default: any seen type)",
    )
    ap.add_argument(
        "--schedule", default="staged", choices=("staged", "joint"), help="DAPO's training schedule"
    )
    ap.add_argument(
        "--cls-type-weight",
        type=float,
        default=None,
        help="DAPO per-image type rule: weight of the CLS distribution (DapoConfig default 0.5)",
    )
    ap.add_argument(
        "--smooth-sigma", type=float, default=None, help="DAPO anomaly-map Gaussian smoothing (px)"
    )
    ap.add_argument(
        "--type-weight",
        type=float,
        default=0.0,
        help="DAPO training: weight of the per-image type cross-entropy (0 = the paper's loss)",
    )
    ap.add_argument("--methods", default="dapo,agnostic")
    ap.add_argument("--tag", default="v2", help="version names: <method>-<backbone>-<tag>")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-activate", action="store_true")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (the numbers do not depend on it)")
    ap.add_argument("--max-steps", type=int, default=None, help="cap steps per stage (smoke runs)")
    ap.add_argument(
        "--joint-ablation",
        type=Path,
        default=None,
        help="also train DAPO with the joint schedule (same recipe) and write both results here (JSON)",
    )
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from qc_stream.dapo import load_backbone, save_prompt_version
    from qc_stream.evaluation.dataset_eval import evaluate_dataset
    from qc_stream.synth.datasets import held_out_dataset
    from qc_stream.training.recipe import Recipe, train_method

    backbone = load_backbone(args.backbone, models_dir=args.models_dir, device=args.device)
    recipe = Recipe(
        per_product=args.per_product,
        stage_epochs=tuple(int(x) for x in args.stage_epochs.split(",")),
        max_steps_per_stage=args.max_steps,
        all_seen_types=not args.own_types_only,
        model_config={"n_deep_visual": args.deep_visual},
    )
    dapo_overrides = {
        k: v
        for k, v in (("cls_type_weight", args.cls_type_weight), ("smooth_sigma", args.smooth_sigma))
        if v is not None
    }
    ablation = {}
    data = held_out_dataset("quick")

    def evaluate(model, name: str) -> dict:
        """``qc-stream eval --quick``'s measurement of one model: the means over the held-out
        products (all, then "seen" and "novel") and each product's own."""
        res = evaluate_dataset(
            lambda _p: model, data, "product", 16, log=print, name=name, subsets=data.subsets()
        )
        per_product = {
            p: {k: v for k, v in m.items() if k != "subsets"}
            for p, m in res["per_category"].items()
        }
        return {
            **res["mean"],
            **res["subsets"],
            "per_product": per_product,
            "seconds": res["seconds"],
        }

    print(f"backbone {backbone.backbone_id}; recipe {recipe.to_dict()}", flush=True)
    for method in args.methods.split(","):
        t0 = time.perf_counter()
        schedule = args.schedule if method == "dapo" else "joint"
        method_recipe = recipe
        if method == "dapo":
            method_recipe = dataclasses.replace(
                recipe,
                model_config={**recipe.model_config, **dapo_overrides},
                type_weight=args.type_weight,
            )
        model, history, config = train_method(
            backbone,
            method,
            schedule,
            method_recipe,
            progress=False,
            on_step=lambda r, m=method: (
                r["step"] % 20 == 0
                and print(f"  {m} {r['stage']} step {r['step']} loss {r['loss']:.3f}", flush=True)
            ),
        )
        train_s = time.perf_counter() - t0
        print(
            f"{method}: trained {len(history.steps)} steps in {train_s:.0f} s; evaluating on held-out products",
            flush=True,
        )
        summary = evaluate(model, method)
        summary["train_seconds"] = train_s
        summary["benchmark"] = "qc-stream eval --quick (held-out products)"
        version = f"{method}-{backbone.name}-{args.tag}"
        path = save_prompt_version(
            model,
            args.models_dir,
            version,
            metrics=summary,
            parent=None,
            kind="trained",
            train_config={
                **config.to_dict(),
                "schedule": schedule,
                "recipe": method_recipe.to_dict(),
                "loss_by_epoch": history.epoch_means(),
            },
            activate=(method == "dapo" and not args.no_activate),
        )
        print(
            f"saved {path}" + (" (ACTIVE)" if method == "dapo" and not args.no_activate else ""),
            flush=True,
        )
        print(
            json.dumps({k: round(v, 4) for k, v in summary.items() if isinstance(v, float)}),
            flush=True,
        )
        if method == "dapo":
            ablation["staged"] = summary
    if args.joint_ablation is not None:
        t0 = time.perf_counter()
        model, history, _ = train_method(backbone, "dapo", "joint", recipe, progress=False)
        train_s = time.perf_counter() - t0
        metrics = evaluate(model, "dapo-joint")
        ablation["joint"] = {k: v for k, v in metrics.items() if k != "per_product"} | {
            "train_seconds": train_s
        }
        ablation["recipe"] = recipe.to_dict()
        args.joint_ablation.parent.mkdir(parents=True, exist_ok=True)
        args.joint_ablation.write_text(json.dumps(ablation, indent=2, default=str) + "\n")
        print(f"wrote {args.joint_ablation}", flush=True)


if __name__ == "__main__":
    main()
