"""Named training recipes for ``qc-stream train``.

``reference`` is the reference code's recipe (boschresearch/defect-aware-prompt-optimization):
everything trained jointly for 5 epochs, Adam lr 1e-3 betas (0.5, 0.999), batch 8, deep text and deep
visual prompts on (4 tokens per layer), adapters on 4 tapped layers. ``staged`` is this project's
earlier schedule (text contexts, then deep text + adapters, then deep visual prompts; 1+1+1 epochs,
a fresh optimiser per stage, no deep visual prompts), kept for comparison.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from qc_stream.errors import InputError


@dataclass(frozen=True)
class TrainRecipe:
    name: str
    schedule: str  # "joint" or "staged"
    epochs: int  # joint: epochs; staged: epochs per stage (each of the 3 stages)
    batch_size: int = 8
    lr: float = 1e-3
    betas: tuple[float, float] = (0.5, 0.999)
    model_config: dict = field(default_factory=dict)  # DapoConfig overrides

    def to_dict(self) -> dict:
        return asdict(self)


RECIPES = {
    "reference": TrainRecipe(
        "reference",
        "joint",
        5,
        model_config={"n_deep_text": 4, "n_deep_visual": 4, "n_taps": 4},
    ),
    "staged": TrainRecipe("staged", "staged", 1, model_config={"n_deep_visual": 0}),
}
DEFAULT_RECIPE = "reference"


def get_recipe(name: str) -> TrainRecipe:
    if name not in RECIPES:
        raise InputError(f"unknown recipe {name!r}: use {', '.join(RECIPES)}")
    return RECIPES[name]
