"""``qc-stream train``: DAPO prompts trained on a dataset on disk, saved as a new prompt version.

Order of work: read and check the whole dataset (one-line errors before anything heavy), load the
backbone, train epoch by epoch with a checkpoint in the run folder after each, then save the
version (its manifest's ``train_config`` records the dataset - name, layout, products, file-list
hash - the recipe and the run) and record it in the registry.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from qc_stream.dapo import build_model, load_backbone
from qc_stream.dapo.checkpoint import new_version_name, save_prompt_version
from qc_stream.datasets import read_dataset
from qc_stream.datasets.readers import LoadedSamples
from qc_stream.errors import InputError
from qc_stream.training.recipes import get_recipe
from qc_stream.training.runs import load_checkpoint, read_run, train_run, write_run
from qc_stream.training.train import TrainConfig

# The labelled split: public datasets keep their masks and defect types in "test" (the reference
# trains on the auxiliary dataset's test split and evaluates zero-shot on another dataset); the
# folder layout puts every image there.
TRAIN_SPLIT = "test"


@dataclass
class TrainRequest:
    dataset: str
    layout: str = "auto"
    products: list[str] = field(default_factory=list)
    backbone: str = "ViT-L-14-336-quickgelu"
    pretrained: str | None = None
    image_size: int | None = None
    recipe: str = "reference"
    epochs: int | None = None  # None: the recipe's
    batch_size: int | None = None
    lr: float | None = None
    device: str = "auto"
    precision: str = "fp32"
    version: str | None = None
    seed: int = 0
    max_steps: int | None = None  # per epoch; for quick runs and tests
    models_dir: str = "models"

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TrainOutcome:
    path: Path
    version: str
    run_dir: Path
    dataset: dict
    final_loss: float
    seconds: float
    epoch_seconds: list[float] = field(default_factory=list)  # wall time of each epoch run here
    peak_gpu_memory_mib: float | None = None  # torch's peak allocation on a CUDA device


def train_on_dataset(
    request: TrainRequest,
    run_dir: Path | None = None,
    resume: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = lambda _m: None,
) -> TrainOutcome:
    recipe = get_recipe(request.recipe)
    data = read_dataset(request.dataset, request.layout, request.products or None)
    train_items = data.select(split=TRAIN_SPLIT)
    if not train_items.items:
        raise InputError(f"{data.root}: no labelled ({TRAIN_SPLIT}) images to train on")
    if not train_items.words:
        raise InputError(f"{data.root}: no defective images to train on (only good ones)")
    version = request.version or new_version_name("dapo")
    models_dir = Path(request.models_dir)
    run_dir = Path(run_dir) if run_dir else models_dir / "runs" / version
    checkpoint = None
    if resume:
        checkpoint = load_checkpoint(run_dir)
    elif (run_dir / "checkpoint.pt").exists():
        raise InputError(f"{run_dir}: a run is already there; resume it with --resume {run_dir}")
    log(
        f"dataset {data.name} ({data.layout}): {len(train_items.items)} labelled images, "
        f"{len(train_items.products)} products, {len(train_items.words)} defect words"
    )
    backbone = load_backbone(
        request.backbone,
        pretrained=request.pretrained,
        image_size=request.image_size,
        models_dir=models_dir,
        device=request.device,
    )
    epochs = request.epochs or recipe.epochs
    config = TrainConfig(
        stage_epochs=(epochs, epochs, epochs),
        joint_epochs=epochs,
        batch_size=request.batch_size or recipe.batch_size,
        lr=request.lr or recipe.lr,
        betas=recipe.betas,
        words=train_items.words,
        device=request.device,
        precision=request.precision,
        seed=request.seed,
        progress=progress,
        max_steps_per_stage=request.max_steps,
    )
    dataset_info = train_items.info()
    write_run(
        run_dir,
        {
            "request": request.to_dict() | {"version": version},
            "recipe": recipe.to_dict(),
            "dataset": dataset_info,
            "backbone": backbone.backbone_id,
        },
    )
    torch.manual_seed(request.seed)
    model = build_model("dapo", backbone, recipe.model_config)
    if checkpoint is not None:
        log(f"resuming {run_dir} after epoch {checkpoint['epoch']}")
    log(
        f"training {version} on {backbone.backbone_id} at {backbone.image_size} px, recipe "
        f"{recipe.name} ({recipe.schedule}, {epochs} epochs, batch {config.batch_size}, lr {config.lr})"
    )
    epoch_seconds: list[float] = []
    last = [time.perf_counter()]

    def on_epoch(epoch: int, loss: float) -> None:
        now = time.perf_counter()
        epoch_seconds.append(now - last[0])
        last[0] = now
        log(
            f"epoch {epoch} done in {epoch_seconds[-1]:.0f} s, mean loss {loss:.4f}; "
            f"checkpoint in {run_dir}"
        )

    cuda = backbone.device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(backbone.device)
    history = train_run(
        model,
        LoadedSamples(train_items.items),
        config,
        recipe.schedule,
        run_dir,
        resume=checkpoint,
        on_epoch=on_epoch,
    )
    peak = torch.cuda.max_memory_allocated(backbone.device) / 2**20 if cuda else None
    model.vocabulary = train_items.words
    model.product_words = train_items.product_words()
    model.invalidate_text_cache()
    means = history.epoch_means()
    final_loss = means[-1]["loss"] if means else float("nan")
    path = save_prompt_version(
        model,
        models_dir,
        version,
        metrics={"final_loss": final_loss},
        train_config={
            "recipe": recipe.to_dict(),
            "config": config.to_dict() | {"words": None},
            "dataset": dataset_info,
            "backbone_id": backbone.backbone_id,
            "epoch_losses": means,
            "run_dir": str(run_dir),
        },
    )
    return TrainOutcome(
        path, version, run_dir, dataset_info, final_loss, history.seconds, epoch_seconds, peak
    )


def request_from_run(run_dir: Path) -> TrainRequest:
    """The request a run folder was started with (for ``--resume``)."""
    data = read_run(run_dir)["request"]
    known = set(TrainRequest.__dataclass_fields__)
    return TrainRequest(**{k: v for k, v in data.items() if k in known})
