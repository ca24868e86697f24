"""Progressive (staged) or joint prompt tuning of a DAPO model or the learned baseline.

Dataset: any sequence (``len`` + indexing) whose items are

- an object with ``.image``, ``.mask`` and ``.defect_type`` (a ``qc_stream.synth`` ``Sample``), or
- a dict with ``"image"``, ``"mask"``, ``"defect_type"`` (or ``"word"``), or
- a tuple ``(image, mask, word)``.

``image``: uint8 HxWx3 (or a PIL image, or an already-normalised float tensor [3,H,W]); ``mask``:
HxW (nonzero = defect), or ``None`` when the sample has no pixel labels (mask-free: image loss only;
give normal images an all-zero mask to supervise them at pixel level); ``word``: the defect word, or
``None`` for a normal image.

Schedules: ``"staged"`` (default): stage 1 text contexts, stage 2 + deep text prompts and adapters,
stage 3 + deep visual prompts (``TrainConfig.cumulative=False`` trains only the new group in each
stage), each stage with its own epochs and a fresh Adam; ``"joint"``: everything at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from qc_stream.dapo.backbone import Backbone, autocast, resolve_device
from qc_stream.dapo.model import PromptDetector, check_words
from qc_stream.errors import QcError
from qc_stream.training.losses import dapo_loss

STAGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("text", ("text_context",)),
    ("deep_text+adapters", ("deep_text", "adapters")),
    ("deep_visual", ("deep_visual",)),
)


@dataclass
class TrainConfig:
    stage_epochs: tuple[int, int, int] = (1, 1, 1)  # staged schedule: epochs per stage
    joint_epochs: int = 3  # joint schedule
    batch_size: int = 8
    lr: float = 1e-3
    betas: tuple[float, float] = (0.5, 0.999)
    focal_gamma: float = 2.0
    pixel_weight: float = 4.0
    type_weight: float = (
        0.0  # per-image type cross-entropy on defective samples (type-aware models only)
    )
    cumulative: bool = True  # staged: earlier groups keep training in later stages
    max_steps_per_stage: int | None = None  # cap for quick runs and tests
    words: list[str] | None = (
        None  # vocabulary to train on (default: the dataset's defect words, sorted)
    )
    device: str | None = None  # None: where the model is; "auto"/"cpu"/"cuda"
    precision: str = "fp32"  # autocast "fp16"/"bf16"
    seed: int = 0
    num_workers: int = 0
    progress: bool = True

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TrainHistory:
    schedule: str
    words: list[str]
    steps: list[dict] = field(
        default_factory=list
    )  # {stage, epoch, step, loss, image_loss, pixel_loss}
    seconds: float = 0.0

    def losses(self, stage: str | None = None) -> list[float]:
        return [s["loss"] for s in self.steps if stage is None or s["stage"] == stage]

    def epoch_means(self) -> list[dict]:
        """Mean loss per (stage, epoch), in order."""
        out: dict[tuple, list[float]] = {}
        for s in self.steps:
            out.setdefault((s["stage"], s["epoch"]), []).append(s["loss"])
        return [{"stage": k[0], "epoch": k[1], "loss": float(np.mean(v))} for k, v in out.items()]

    def to_dict(self) -> dict:
        return asdict(self)


# --- data ---


def unpack_item(item: Any) -> tuple[Any, Any, str | None]:
    """-> (image, mask or None, defect word or None) from a Sample / dict / tuple."""
    if isinstance(item, (tuple, list)):
        if len(item) != 3:
            raise QcError("dataset tuples must be (image, mask, word)")
        image, mask, word = item
    elif isinstance(item, dict):
        image, mask = item["image"], item.get("mask")
        word = item.get("defect_type", item.get("word"))
    else:
        image, mask = item.image, getattr(item, "mask", None)
        word = getattr(item, "defect_type", getattr(item, "word", None))
    if word is not None and (not isinstance(word, str) or not word.strip()):
        word = None
    return image, mask, word.strip() if isinstance(word, str) else None


def mask_to_tensor(mask: Any, size: int) -> torch.Tensor:
    """HxW mask -> float {0,1} [size, size] with the image's geometry: the whole frame resized to
    size x size, as ``Backbone.preprocess`` does with the image (no crop)."""
    m = torch.as_tensor(np.asarray(mask)).float()
    if m.ndim == 3:
        m = m.amax(dim=-1) if m.shape[-1] in (1, 3) else m[0]
    m = (m > 0).float()
    if tuple(m.shape) != (size, size):
        m = F.interpolate(m[None, None], size=(size, size), mode="bilinear", align_corners=False)[
            0, 0
        ]
    return (m > 0.5).float()


def dataset_words(dataset: Sequence) -> list[str]:
    """Sorted distinct defect words of a dataset (reads every item; pass TrainConfig.words to skip)."""
    words = getattr(dataset, "words", None)
    if words:
        return list(words)
    found = {w for w in (unpack_item(dataset[i])[2] for i in range(len(dataset))) if w}
    return sorted(found)


class _Collate:
    def __init__(self, backbone: Backbone, words: list[str], type_aware: bool):
        self.backbone = backbone
        self.index = {w.casefold(): i for i, w in enumerate(words)}
        self.type_aware = type_aware

    def __call__(self, items: list) -> dict:
        size = self.backbone.image_size
        images, masks, has_mask, labels, classes = [], [], [], [], []
        for item in items:
            image, mask, word = unpack_item(item)
            images.append(self.backbone.preprocess(image))
            labels.append(0 if word is None else 1)
            if word is None:
                classes.append(0)
            elif self.type_aware:
                if word.casefold() not in self.index:
                    raise QcError(f"defect word {word!r} is not in the training vocabulary")
                classes.append(1 + self.index[word.casefold()])
            else:
                classes.append(1)
            has_mask.append(mask is not None)
            masks.append(
                mask_to_tensor(mask, size) if mask is not None else torch.zeros(size, size)
            )
        return {
            "images": torch.stack(images),
            "masks": torch.stack(masks),
            "has_mask": torch.tensor(has_mask),
            "labels": torch.tensor(labels),
            "classes": torch.tensor(classes),
        }


def _loader(
    model: PromptDetector, dataset, words, config: TrainConfig, shuffle: bool
) -> DataLoader:
    gen = torch.Generator().manual_seed(config.seed)
    return DataLoader(
        dataset,
        batch_size=config.batch_size,
        shuffle=shuffle,
        collate_fn=_Collate(model.backbone, words, model.type_aware),
        num_workers=config.num_workers,
        generator=gen,
    )


def batch_loss(
    model: PromptDetector, batch: dict, words: list[str], config: TrainConfig, device: torch.device
):
    with autocast(device, config.precision):
        out = model(batch["images"].to(device), words)
    return dapo_loss(
        out,
        batch["labels"].to(device),
        batch["masks"].to(device),
        batch["has_mask"].to(device),
        batch["classes"].to(device),
        gamma=config.focal_gamma,
        pixel_weight=config.pixel_weight,
        type_weight=config.type_weight if model.type_aware else 0.0,
    )


@torch.no_grad()
def evaluate_loss(
    model: PromptDetector,
    dataset: Sequence,
    config: TrainConfig | None = None,
    words: Sequence[str] | None = None,
) -> float:
    """Mean training loss over ``dataset`` without updating anything (eval mode)."""
    config = config or TrainConfig(progress=False)
    words = check_words(words or config.words or dataset_words(dataset))
    device = resolve_device(config.device) if config.device else model.device
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for batch in _loader(model, dataset, words, config, shuffle=False):
        parts = batch_loss(model, batch, words, config, device)
        total += float(parts.total) * len(batch["labels"])
        count += len(batch["labels"])
    model.train(was_training)
    return total / max(count, 1)


def _stages(schedule: str, config: TrainConfig) -> list[tuple[str, tuple[str, ...], int]]:
    if schedule == "joint":
        return [("joint", tuple(g for _, gs in STAGES for g in gs), config.joint_epochs)]
    if schedule != "staged":
        raise QcError(f"unknown schedule {schedule!r}: use 'staged' or 'joint'")
    if len(config.stage_epochs) != len(STAGES):
        raise QcError(
            f"stage_epochs needs {len(STAGES)} numbers (text, deep text + adapters, deep visual)"
        )
    out, seen = [], ()
    for (name, groups), epochs in zip(STAGES, config.stage_epochs):
        seen = seen + groups if config.cumulative else groups
        out.append((name, seen, int(epochs)))
    return out


def prepare_training(
    model: PromptDetector, dataset: Sequence, config: TrainConfig
) -> tuple[dict, list[str], torch.device]:
    """What every training run does first: refuse an empty dataset or a model with nothing to
    train, extend the model's vocabulary with the training words, move it to the device, seed.
    Returns the model's parameter groups, the training words and the device."""
    if len(dataset) == 0:
        raise QcError("training dataset is empty")
    groups = model.param_groups()
    if not any(groups.values()):
        raise QcError(f"the {model.method} method has nothing to train")
    words = check_words(config.words or dataset_words(dataset))
    model.vocabulary = list(dict.fromkeys(model.vocabulary + words))
    device = resolve_device(config.device) if config.device else model.device
    model.to(device)
    torch.manual_seed(config.seed)
    return groups, words, device


def train(
    model: PromptDetector,
    dataset: Sequence,
    config: TrainConfig | None = None,
    schedule: str = "staged",
    on_step: Callable[[dict], None] | None = None,
) -> TrainHistory:
    """Tune ``model``'s prompts/adapters on ``dataset`` (backbone frozen). Returns the loss history.

    The model's ``vocabulary`` is extended with the training words. The model is left in eval mode.
    """
    config = config or TrainConfig()
    groups, words, device = prepare_training(model, dataset, config)
    loader = _loader(model, dataset, words, config, shuffle=True)
    history = TrainHistory(schedule=schedule, words=words)
    all_params = model.trainable_parameters()
    started = time.perf_counter()
    step = 0
    try:
        for stage, stage_groups, epochs in _stages(schedule, config):
            params = [p for g in stage_groups for p in groups.get(g, [])]
            new_groups = dict(STAGES).get(stage, stage_groups)
            if not params or epochs <= 0 or not any(groups.get(g) for g in new_groups):
                continue  # e.g. the object-agnostic baseline has no adapters or visual prompts
            trainable = {id(p) for p in params}
            for p in all_params:
                p.requires_grad_(id(p) in trainable)
            optimizer = torch.optim.Adam(params, lr=config.lr, betas=config.betas)
            model.train()
            stage_steps = 0
            for epoch in range(epochs):
                bar = tqdm(
                    loader,
                    desc=f"{model.method} {stage} {epoch + 1}/{epochs}",
                    disable=not config.progress,
                    leave=False,
                )
                for batch in bar:
                    parts = batch_loss(model, batch, words, config, device)
                    optimizer.zero_grad(set_to_none=True)
                    parts.total.backward()
                    optimizer.step()
                    record = {
                        "stage": stage,
                        "epoch": epoch,
                        "step": step,
                        "loss": parts.total.item(),
                        "image_loss": parts.image.item(),
                        "pixel_loss": parts.pixel.item(),
                        **({"type_loss": parts.types.item()} if parts.types is not None else {}),
                    }
                    history.steps.append(record)
                    if on_step is not None:
                        on_step(record)
                    bar.set_postfix(loss=f"{record['loss']:.3f}")
                    step += 1
                    stage_steps += 1
                    if config.max_steps_per_stage and stage_steps >= config.max_steps_per_stage:
                        break
                bar.close()
                if config.max_steps_per_stage and stage_steps >= config.max_steps_per_stage:
                    break
    finally:
        for p in all_params:
            p.requires_grad_(True)
        model.eval()
        model.invalidate_text_cache()
    history.seconds = time.perf_counter() - started
    return history
