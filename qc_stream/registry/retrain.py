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
import torch

from qc_stream.dapo.checkpoint import load_prompt_version, read_manifest, save_prompt_version
from qc_stream.dapo.model import DapoModel
from qc_stream.domain.defects import DefectType, merge_vocabulary, name_key
from qc_stream.evaluation.metrics import (
    image_metrics,
    mean_over_products,
    pixel_metrics,
    type_metrics,
    type_scores,
)
from qc_stream.registry.examples import load_examples, split_holdout
from qc_stream.registry.gate import GATED_METRICS, GateDecision, decide
from qc_stream.synth import PRODUCTS, generate
from qc_stream.synth.split import load_split
from qc_stream.training.train import TrainConfig, TrainHistory, mask_to_tensor, train

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


@dataclass
class RetrainData:
    """What one run trains on and scores both versions on."""

    train: list[dict]  # auxiliary synthetic products + the training part of the examples
    holdout: list[dict]  # held-out synthetic products (zero-shot) + the held-out examples
    product_words: dict[str, list[str]]  # the candidate types per holdout product


@dataclass
class Candidate:
    """The trained candidate and what the gate needs to judge it."""

    model: DapoModel
    config: TrainConfig
    history: TrainHistory
    diverged: str | None  # why the run is unusable, or None


class RetrainJob:
    """load data -> score the active version -> train a candidate -> gate -> promote (or refuse)."""

    def __init__(self, versions, options: RetrainOptions):
        self.versions = versions  # registry.versions.PromptVersions
        self.options = options

    def run(self) -> RetrainReport:
        backbone = self.versions.backbone()
        defects = self.versions.defects.list(include_retired=True)
        data = self.load_data(defects)
        parent = self.versions.active_name()
        active_metrics = self.score_active(parent, backbone, data)
        candidate = self.train_candidate(parent, backbone, data)
        candidate_metrics = (
            evaluate(candidate.model, data.holdout, data.product_words)
            if not candidate.diverged
            else {}
        )
        decision = self.gate(candidate_metrics, active_metrics, candidate.diverged)
        figures = _figures(candidate_metrics, active_metrics)
        if not decision.promote:
            return RetrainReport(
                False,
                parent,
                candidate_metrics,
                active_metrics,
                decision,
                f"candidate REFUSED, prompt version {parent or '(none)'} stays active: "
                f"{decision.summary}" + figures,
                candidate.history.to_dict(),
            )
        outcome = self.promote(candidate, candidate_metrics, parent, defects)
        return RetrainReport(
            True,
            outcome.version,
            candidate_metrics,
            active_metrics,
            decision,
            f"candidate PROMOTED: {outcome.message}" + figures,
            candidate.history.to_dict(),
        )

    # ------------------------------------------------------------------ steps
    def load_data(self, defects: list[DefectType]) -> RetrainData:
        """Synthetic training and holdout sets, plus the examples split into both; each holdout
        product's candidate words are its catalogue defects, or the registered ones for examples."""
        opt = self.options
        preset = opt.preset()
        split = load_split()
        size = opt.image_size or preset["size"]
        train_items = _synthetic(
            split.auxiliary_products,
            opt.train_per_product or preset["train"],
            split.seeds["train"] + opt.seed,
            size,
        )
        hold_products = (
            opt.holdout_products or split.held_out_products[: preset["products"] or None]
        )
        # The validation seed, not the benchmark's test seed: the gate must not select on
        # `qc-stream eval`'s data.
        holdout = _synthetic(
            hold_products,
            opt.holdout_per_product or preset["holdout"],
            split.seeds["validation"],
            size,
        )
        product_words = {p: list(PRODUCTS[p].defects) for p in hold_products}
        if opt.examples_dir is not None:
            train_ex, hold_ex = split_holdout(
                load_examples(opt.examples_dir, defects), opt.examples_holdout_fraction, opt.seed
            )
            train_items += _example_items(train_ex)
            holdout += _example_items(hold_ex)
            _add_example_words(product_words, train_ex + hold_ex, defects)
        if opt.shuffle_labels:
            train_items = _shuffled(train_items, opt.seed)
        return RetrainData(train_items, holdout, product_words)

    def score_active(self, parent: str | None, backbone, data: RetrainData) -> dict | None:
        """The active version's holdout metrics (the gate's baseline), or None when none is active."""
        if not parent:
            return None
        active_model = load_prompt_version(parent, backbone, self.versions.models_dir).model
        return evaluate(active_model, data.holdout, data.product_words)

    def train_candidate(self, parent: str | None, backbone, data: RetrainData) -> Candidate:
        """Staged training from the active version's parameters (a fresh model when none)."""
        opt = self.options
        preset = opt.preset()
        if parent:
            model = load_prompt_version(parent, backbone, self.versions.models_dir).model
        else:
            model = DapoModel(backbone)
        config = TrainConfig(
            stage_epochs=preset["epochs"],
            lr=opt.lr,
            max_steps_per_stage=opt.max_steps_per_stage or preset["steps"],
            seed=opt.seed,
            progress=opt.progress,
        )
        history = train(model, data.train, config, schedule="staged")
        diverged = None
        if not all(math.isfinite(x) for x in history.losses()):
            diverged = "the training loss became non-finite"
        elif not all(bool(torch.isfinite(t).all()) for t in model.trainable_state_dict().values()):
            diverged = "trained parameters are non-finite"
        return Candidate(model, config, history, diverged)

    def gate(
        self, candidate_metrics: dict, active_metrics: dict | None, diverged: str | None
    ) -> GateDecision:
        """``gate.decide`` on the gated metrics of both versions."""
        return decide(
            {k: v for k, v in candidate_metrics.items() if k in GATED_METRICS},
            {k: v for k, v in active_metrics.items() if k in GATED_METRICS}
            if active_metrics
            else None,
            self.options.tolerance,
            diverged=diverged,
        )

    def promote(
        self,
        candidate: Candidate,
        candidate_metrics: dict,
        parent: str | None,
        defects: list[DefectType],
    ):
        """Save the candidate with vocabulary = active vocabulary + registry + training words, and
        record it as the active version; returns the registry's outcome."""
        model = candidate.model
        parent_manifest = read_manifest(parent, self.versions.models_dir) if parent else None
        base_vocab = (parent_manifest or {}).get("vocabulary") or {
            "words": list(model.vocabulary),
            "products": {p: list(v.defects) for p, v in PRODUCTS.items()},
        }
        vocab = merge_vocabulary(base_vocab, defects)
        seen = {name_key(w) for w in vocab["words"]}
        vocab["words"] += [w for w in model.vocabulary if name_key(w) not in seen]
        model.vocabulary = list(vocab["words"])
        metrics = {k: v for k, v in candidate_metrics.items() if k != "per_product"}
        metrics["holdout_products"] = list(candidate_metrics.get("per_product", {}))
        path = save_prompt_version(
            model,
            self.versions.models_dir,
            metrics=metrics,
            products=vocab["products"],
            parent=parent,
            kind="trained",
            train_config={
                **candidate.config.to_dict(),
                "examples": str(self.options.examples_dir) if self.options.examples_dir else None,
            },
        )
        return self.versions.record(path, activate=True)


def _add_example_words(
    product_words: dict[str, list[str]], examples, defects: list[DefectType]
) -> None:
    """A product seen only in the examples gets its active registered types; an example's own type
    joins its product's words when missing."""
    registered: dict[str, list[str]] = {}
    for d in defects:
        if d.active:
            registered.setdefault(d.product, []).append(d.name)
    for e in examples:
        words = product_words.setdefault(e.product, list(registered.get(e.product, [])))
        if e.defect_type is not None and name_key(e.defect_type) not in {
            name_key(w) for w in words
        }:
            words.append(e.defect_type)


def _figures(candidate: dict, active: dict | None) -> str:
    lines = []
    for k in GATED_METRICS:
        new = candidate.get(k, math.nan)
        old = active.get(k, math.nan) if active else math.nan
        lines.append(f"\n  {k:<12} candidate {new:.3f}   active {old:.3f}")
    return "".join(lines)
