"""A resumable training run: epochs of ``train``'s step, a checkpoint after every finished epoch.

The run folder holds ``run.json`` (what was asked: dataset, recipe, backbone...) and
``checkpoint.pt`` (the trainable tensors, the optimiser state and the loss history after the last
finished epoch). Interrupting a run loses at most the epoch in progress; ``resume`` starts from the
epoch after the checkpoint with the same optimiser state.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from tqdm.auto import tqdm

from qc_stream.dapo.model import PromptDetector
from qc_stream.errors import QcError
from qc_stream.training.train import (
    TrainConfig,
    TrainHistory,
    _loader,
    _stages,
    batch_loss,
    prepare_training,
)

RUN_FILE = "run.json"
CHECKPOINT = "checkpoint.pt"


def epoch_plan(schedule: str, config: TrainConfig) -> list[tuple[str, tuple[str, ...]]]:
    """One (stage name, trained groups) entry per epoch, in order."""
    return [
        (stage, groups)
        for stage, groups, epochs in _stages(schedule, config)
        for _ in range(epochs)
    ]


def write_run(run_dir: Path, run: dict) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / RUN_FILE).write_text(json.dumps(run, indent=2, default=str) + "\n")


def read_run(run_dir: Path) -> dict:
    path = Path(run_dir) / RUN_FILE
    if not path.is_file():
        raise QcError(f"{run_dir}: not a training run folder (no {RUN_FILE})")
    return json.loads(path.read_text())


def load_checkpoint(run_dir: Path) -> dict | None:
    path = Path(run_dir) / CHECKPOINT
    if not path.is_file():
        return None
    return torch.load(path, map_location="cpu", weights_only=False)


def _save_checkpoint(run_dir: Path, state: dict) -> None:
    tmp = run_dir / f".{CHECKPOINT}.tmp"
    torch.save(state, tmp)
    os.replace(tmp, run_dir / CHECKPOINT)  # a reader never sees half a checkpoint


def train_run(
    model: PromptDetector,
    dataset: Sequence,
    config: TrainConfig,
    schedule: str,
    run_dir: Path,
    resume: dict | None = None,
    on_epoch: Callable[[int, float], None] | None = None,
) -> TrainHistory:
    """Train ``model`` epoch by epoch, checkpointing into ``run_dir`` after each finished epoch.

    ``resume``: a checkpoint from ``load_checkpoint``; its epochs are skipped. The progress bar counts
    the steps of every remaining epoch (so its ETA is the run's), with the running loss.
    """
    groups, words, device = prepare_training(model, dataset, config)
    plan = epoch_plan(schedule, config)
    history = TrainHistory(schedule=schedule, words=words)
    start = 0
    optimizer_state = None
    if resume is not None:
        model.load_trainable_state_dict({k: v.to(device) for k, v in resume["model"].items()})
        start = int(resume["epoch"])
        optimizer_state = resume.get("optimizer")
        history.steps = list(resume.get("steps", []))
    all_params = model.trainable_parameters()
    loader = _loader(model, dataset, words, config, shuffle=True)
    per_epoch = len(loader)
    if config.max_steps_per_stage:
        per_epoch = min(per_epoch, config.max_steps_per_stage)
    started = time.perf_counter()
    bar = tqdm(
        total=per_epoch * max(len(plan) - start, 0),
        desc=f"{model.method} training",
        unit="step",
        disable=not config.progress,
    )
    optimizer, current_stage = None, None
    try:
        for epoch in range(start, len(plan)):
            stage, stage_groups = plan[epoch]
            if stage != current_stage:
                params = [p for g in stage_groups for p in groups.get(g, [])]
                trainable = {id(p) for p in params}
                for p in all_params:
                    p.requires_grad_(id(p) in trainable)
                optimizer = torch.optim.Adam(params, lr=config.lr, betas=config.betas)
                if (
                    optimizer_state is not None
                    and resume is not None
                    and resume.get("stage") == stage
                ):
                    optimizer.load_state_dict(optimizer_state)
                optimizer_state, current_stage = None, stage
            model.train()
            torch.manual_seed(config.seed + epoch)  # the same shuffles whether resumed or not
            losses = []
            for i, batch in enumerate(loader):
                if i >= per_epoch:
                    break
                parts = batch_loss(model, batch, words, config, device)
                optimizer.zero_grad(set_to_none=True)
                parts.total.backward()
                optimizer.step()
                loss = parts.total.item()
                losses.append(loss)
                history.steps.append(
                    {
                        "stage": stage,
                        "epoch": epoch,
                        "step": len(history.steps),
                        "loss": loss,
                        "image_loss": parts.image.item(),
                        "pixel_loss": parts.pixel.item(),
                    }
                )
                bar.update(1)
                bar.set_postfix(epoch=f"{epoch + 1}/{len(plan)}", loss=f"{loss:.3f}")
            model.invalidate_text_cache()
            _save_checkpoint(
                run_dir,
                {
                    "epoch": epoch + 1,
                    "stage": stage,
                    "model": {k: v.detach().cpu() for k, v in model.trainable_state_dict().items()},
                    "optimizer": optimizer.state_dict(),
                    "steps": history.steps,
                },
            )
            if on_epoch is not None:
                on_epoch(epoch + 1, sum(losses) / max(len(losses), 1))
    finally:
        bar.close()
        for p in all_params:
            p.requires_grad_(True)
        model.eval()
        model.invalidate_text_cache()
    history.seconds = time.perf_counter() - started
    return history
