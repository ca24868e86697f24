"""Full refresh: progressive tuning on auxiliary synthetic data + labelled examples, holdout
evaluation with the shared metrics, and the promotion gate.

The candidate starts from the active version's trained parameters (or a fresh DAPO model when none
is active), trains with the staged schedule on the auxiliary products of ``qc_stream.synth`` plus the
training part of ``--examples``, and is evaluated next to the active version on the same holdout
(the held-out synthetic products, zero-shot, plus a held-out part of the examples). It is promoted
only when ``gate.decide`` finds no gated metric dropping by more than the tolerance; otherwise
nothing is written and the active version stays.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from qc_stream.domain.defects import merge_vocabulary, name_key
from qc_stream.registry.gate import GATED_METRICS, GateDecision, decide

log = logging.getLogger(__name__)


@dataclass
class RetrainOptions:
    examples_dir: Path | None = None
    quick: bool = False
    tolerance: float = 0.02
    lr: float = 1e-3
    shuffle_labels: bool = False  # deliberately broken training (for testing the gate)
    seed: int = 0
    progress: bool = False
    # sizes (None: from quick / full presets)
    train_per_product: int | None = None
    holdout_per_product: int | None = None
    holdout_products: tuple[str, ...] | None = None
    max_steps_per_stage: int | None = None
    examples_holdout_fraction: float = 0.25
    image_size: int | None = None  # synthetic image size (default: the preset's)

    def preset(self) -> dict:
        if self.quick:
            return dict(train=6, holdout=12, products=2, steps=3, epochs=(1, 1, 1), size=128)
        return dict(train=32, holdout=48, products=None, steps=None, epochs=(2, 2, 2), size=256)


@dataclass
class RetrainReport:
    promoted: bool
    version: str | None  # the version active after the run
    candidate_metrics: dict
    active_metrics: dict | None
    decision: GateDecision
    message: str
    history: dict = field(default_factory=dict)


def _word_map(words) -> dict[str, str]:
    return {name_key(w): w for w in words}


def _synthetic(
    products, per_product: int, seed: int, size: int, defect_rate: float = 0.5
) -> list[dict]:
    from qc_stream.synth import generate

    items = []
    for p in products:
        for s in generate(p, n=per_product, seed=seed, size=size, defect_rate=defect_rate):
            items.append(
                {"image": s.image, "mask": s.mask, "defect_type": s.defect_type, "product": p}
            )
    return items


def _example_items(examples) -> list[dict]:
    return [
        {"image": e.image, "mask": e.mask, "defect_type": e.defect_type, "product": e.product}
        for e in examples
    ]


def _shuffled(items: list[dict], seed: int) -> list[dict]:
    """Break the labels on purpose: images keep their pixels, masks and words are permuted."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(items))
    return [
        {**items[i], "mask": items[j]["mask"], "defect_type": items[j]["defect_type"]}
        for i, j in enumerate(order)
    ]


def evaluate(
    model, holdout: list[dict], product_words: dict[str, list[str]], batch_size: int = 16
) -> dict:
    """Mean over products of image, pixel and type metrics (``qc_stream.evaluation.metrics``)."""
    import torch

    from qc_stream.evaluation.metrics import (
        image_metrics,
        mean_over_products,
        pixel_metrics,
        type_metrics,
        type_scores,
    )
    from qc_stream.training.train import mask_to_tensor

    size = model.backbone.image_size
    by_product: dict[str, list[dict]] = {}
    for item in holdout:
        by_product.setdefault(item["product"], []).append(item)
    per_product = {}
    model.eval()
    for product, items in by_product.items():
        words = list(product_words[product])
        scores, maps, type_probs = [], [], []
        with torch.inference_mode():
            for i in range(0, len(items), batch_size):
                chunk = items[i : i + batch_size]
                out = model(model.backbone.preprocess_batch([it["image"] for it in chunk]), words)
                scores.append(out.image_score.float().cpu().numpy())
                maps.append(out.anomaly_map.float().cpu().numpy())
                type_probs.append(out.image_type_probs.float().cpu().numpy())
        s, m, tp = np.concatenate(scores), np.concatenate(maps), np.concatenate(type_probs)
        labels = [0 if it["defect_type"] is None else 1 for it in items]
        result = dict(image_metrics(labels, np.nan_to_num(s, nan=0.5)))
        if not np.isfinite(s).all():
            result = {k: math.nan for k in result}
        with_mask = [k for k, it in enumerate(items) if it["mask"] is not None]
        if with_mask:
            masks = [mask_to_tensor(items[k]["mask"], size).numpy() for k in with_mask]
            pm = np.nan_to_num(m[with_mask], nan=0.0)
            result.update(pixel_metrics(masks, list(pm)))
            if not np.isfinite(m[with_mask]).all():
                result.update({k: math.nan for k in ("pixel_auroc", "pixel_aupro", "pixel_f1_max")})
        wmap = _word_map(words)
        truth = [
            None if it["defect_type"] is None else wmap[name_key(it["defect_type"])] for it in items
        ]
        if np.isfinite(tp).all() and np.isfinite(s).all():
            result.update(type_metrics(truth, type_scores(s, tp), words))
        else:
            result.update(
                {
                    "type_auroc": math.nan,
                    "type_ap": math.nan,
                    "type_f1": math.nan,
                    "type_accuracy": math.nan,
                }
            )
        per_product[product] = result
    mean = mean_over_products(per_product)
    mean["per_product"] = per_product
    return mean


class RetrainJob:
    def __init__(self, versions, options: RetrainOptions):
        self.versions = versions  # registry.versions.PromptVersions
        self.options = options

    def run(self) -> RetrainReport:
        import torch

        from qc_stream.dapo.checkpoint import (
            load_prompt_version,
            read_manifest,
            save_prompt_version,
        )
        from qc_stream.dapo.model import DapoModel
        from qc_stream.registry.examples import load_examples, split_holdout
        from qc_stream.synth import PRODUCTS
        from qc_stream.synth.split import load_split
        from qc_stream.training.train import TrainConfig, train

        opt = self.options
        preset = opt.preset()
        split = load_split()
        backbone = self.versions.backbone()
        defects = self.versions.defects.list(include_retired=True)

        # --- data ---
        size = opt.image_size or preset["size"]
        aux = _synthetic(
            split.auxiliary_products,
            opt.train_per_product or preset["train"],
            split.seeds["train"] + opt.seed,
            size,
        )
        hold_products = (
            opt.holdout_products or split.held_out_products[: preset["products"] or None]
        )
        # The validation seed, not the benchmark's test seed: the gate must not select on `qc-stream eval`'s data.
        holdout = _synthetic(
            hold_products,
            opt.holdout_per_product or preset["holdout"],
            split.seeds["validation"],
            size,
        )
        product_words = {p: list(PRODUCTS[p].defects) for p in hold_products}
        examples_train: list[dict] = []
        if opt.examples_dir is not None:
            train_ex, hold_ex = split_holdout(
                load_examples(opt.examples_dir, defects), opt.examples_holdout_fraction, opt.seed
            )
            examples_train = _example_items(train_ex)
            holdout += _example_items(hold_ex)
            registered = {}
            for d in defects:
                if d.active:
                    registered.setdefault(d.product, []).append(d.name)
            for e in train_ex + hold_ex:
                words = product_words.setdefault(e.product, list(registered.get(e.product, [])))
                if e.defect_type is not None and name_key(e.defect_type) not in {
                    name_key(w) for w in words
                }:
                    words.append(e.defect_type)
        dataset = aux + examples_train
        if opt.shuffle_labels:
            dataset = _shuffled(dataset, opt.seed)

        # --- the active version (baseline) and the candidate starting point ---
        parent = self.versions.active_name()
        parent_manifest = read_manifest(parent, self.versions.models_dir) if parent else None
        active_metrics = None
        if parent:
            active_model = load_prompt_version(parent, backbone, self.versions.models_dir).model
            active_metrics = evaluate(active_model, holdout, product_words)
            candidate = load_prompt_version(parent, backbone, self.versions.models_dir).model
        else:
            candidate = DapoModel(backbone)

        # --- train ---
        config = TrainConfig(
            stage_epochs=preset["epochs"],
            lr=opt.lr,
            max_steps_per_stage=opt.max_steps_per_stage or preset["steps"],
            seed=opt.seed,
            progress=opt.progress,
        )
        history = train(candidate, dataset, config, schedule="staged")
        losses = history.losses()
        diverged = None
        if not all(math.isfinite(x) for x in losses):
            diverged = "the training loss became non-finite"
        elif not all(
            bool(torch.isfinite(t).all()) for t in candidate.trainable_state_dict().values()
        ):
            diverged = "trained parameters are non-finite"
        candidate_metrics = evaluate(candidate, holdout, product_words) if not diverged else {}

        decision = decide(
            {k: v for k, v in candidate_metrics.items() if k in GATED_METRICS},
            {k: v for k, v in active_metrics.items() if k in GATED_METRICS}
            if active_metrics
            else None,
            opt.tolerance,
            diverged=diverged,
        )
        figures = _figures(candidate_metrics, active_metrics)
        if not decision.promote:
            return RetrainReport(
                False,
                parent,
                candidate_metrics,
                active_metrics,
                decision,
                f"candidate REFUSED, prompt version {parent or '(none)'} stays active: {decision.summary}"
                + figures,
                history.to_dict(),
            )

        # --- promote: vocabulary = active vocabulary + registry + training words ---
        base_vocab = (parent_manifest or {}).get("vocabulary") or {
            "words": list(candidate.vocabulary),
            "products": {p: list(v.defects) for p, v in PRODUCTS.items()},
        }
        vocab = merge_vocabulary(base_vocab, defects)
        seen = {name_key(w) for w in vocab["words"]}
        vocab["words"] += [w for w in candidate.vocabulary if name_key(w) not in seen]
        candidate.vocabulary = list(vocab["words"])
        metrics = {k: v for k, v in candidate_metrics.items() if k != "per_product"}
        metrics["holdout_products"] = list(candidate_metrics.get("per_product", {}))
        path = save_prompt_version(
            candidate,
            self.versions.models_dir,
            metrics=metrics,
            products=vocab["products"],
            parent=parent,
            kind="trained",
            train_config={
                **config.to_dict(),
                "examples": str(opt.examples_dir) if opt.examples_dir else None,
            },
        )
        outcome = self.versions.record(path, activate=True)
        return RetrainReport(
            True,
            outcome.version,
            candidate_metrics,
            active_metrics,
            decision,
            f"candidate PROMOTED: {outcome.message}" + figures,
            history.to_dict(),
        )


def _figures(candidate: dict, active: dict | None) -> str:
    lines = []
    for k in GATED_METRICS:
        new = candidate.get(k, math.nan)
        old = active.get(k, math.nan) if active else math.nan
        lines.append(f"\n  {k:<12} candidate {new:.3f}   active {old:.3f}")
    return "".join(lines)
