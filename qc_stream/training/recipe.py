"""The prompt-training recipe shared by `scripts/train_default_prompts.py` and `qc-stream eval` (full).

One place defines how a method is trained on the auxiliary products, so the shipped version, the
benchmark's retrained versions and the staged-vs-joint ablation all use the same data and budget
(staged 1+1+1 epochs == joint 3 epochs).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch

from qc_stream.dapo import build_model
from qc_stream.synth import PRODUCTS
from qc_stream.synth.datasets import training_set
from qc_stream.synth.split import load_split
from qc_stream.training import TrainConfig, train


@dataclass
class Recipe:
    per_product: int = 48  # auxiliary samples per product
    defect_rate: float = 0.6
    stage_epochs: tuple[int, int, int] = (1, 1, 1)
    batch_size: int = 8
    lr: float = 1e-3
    seed: int = 0
    max_steps_per_stage: int | None = None
    all_seen_types: bool = True  # defects of every seen type on every auxiliary product
    type_weight: float = 0.0  # DAPO only: per-image type cross-entropy (TrainConfig.type_weight)
    # method config overrides. No deep visual prompts by default: with them, DAPO generalised worse
    # to the held-out products here (image AUROC 0.57 vs 0.81, same recipe; docs/benchmark.md).
    model_config: dict | None = field(default_factory=lambda: {"n_deep_visual": 0})

    @property
    def joint_epochs(self) -> int:
        return sum(self.stage_epochs)

    def to_dict(self) -> dict:
        return asdict(self)


def all_words() -> list[str]:
    """Every defect word of the catalog, in catalog order."""
    return list(dict.fromkeys(t for p in PRODUCTS.values() for t in p.defects))


def product_words() -> dict[str, list[str]]:
    return {name: list(p.defects) for name, p in PRODUCTS.items()}


def train_method(
    backbone,
    method: str,
    schedule: str = "staged",
    recipe: Recipe | None = None,
    progress: bool = True,
    on_step=None,
    data=None,
    words: list[str] | None = None,
):
    """Train `method` ("dapo" or "agnostic") on the auxiliary products; returns (model, history).

    `data` / `words` replace the auxiliary samples and the seen words (diagnostics train on other
    products). The returned model knows every catalog word and product subset (novel words are
    zero-shot), so it can serve the demo's products as well as the benchmark."""
    recipe = recipe or Recipe()
    split = load_split()
    if data is None:
        data = training_set(
            recipe.per_product, recipe.defect_rate, split, all_seen_types=recipe.all_seen_types
        )
    train_words = sorted(words) if words is not None else sorted(split.seen_types)

    torch.manual_seed(
        recipe.seed
    )  # prompt initialisation is random: seed it, so a recipe is one model
    model = build_model(method, backbone, recipe.model_config)
    config = TrainConfig(
        stage_epochs=recipe.stage_epochs,
        joint_epochs=recipe.joint_epochs,
        batch_size=recipe.batch_size,
        lr=recipe.lr,
        seed=recipe.seed,
        words=train_words,
        progress=progress,
        max_steps_per_stage=recipe.max_steps_per_stage,
        type_weight=recipe.type_weight,
    )
    history = train(model, data, config, schedule=schedule, on_step=on_step)
    model.vocabulary = all_words()
    model.product_words = product_words()
    model.invalidate_text_cache()
    return model, history, config
