"""`qc-stream train --dataset PATH`: train DAPO prompts on MVTec AD / VisA / MPDD / BTAD / a folder.

Writes a new prompt version and records it in the registry (inactive unless ``--activate``). A
progress bar shows the run's ETA and loss; a checkpoint is written after every finished epoch, and
Ctrl-C keeps the last finished epoch (``--resume RUN_DIR`` goes on from there). Heavy imports happen
inside the command.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from qc_stream.cli.output import json_path_option, write_json


def register(app: typer.Typer) -> None:
    @app.command("train")
    def train(
        dataset: str | None = typer.Option(
            None, "--dataset", metavar="PATH", help="Dataset folder (see docs/datasets.md)."
        ),
        layout: str = typer.Option(
            "auto", "--layout", help="auto, mvtec, visa, mpdd, btad or folder."
        ),
        products: str | None = typer.Option(
            None, "--products", help="Comma-separated categories to train on (default: all)."
        ),
        backbone: str | None = typer.Option(
            None,
            "--backbone",
            envvar="QC_BACKBONE",
            help="open_clip architecture or backbone folder.",
        ),
        pretrained: str | None = typer.Option(
            None,
            "--pretrained",
            envvar="QC_PRETRAINED",
            help="Weights file, open_clip/Hugging Face cache folder, open_clip tag, or 'none'.",
        ),
        image_size: int | None = typer.Option(
            None, "--image-size", envvar="QC_IMAGE_SIZE", help="Model input size (e.g. 518)."
        ),
        recipe: str = typer.Option("reference", "--recipe", help="reference (default) or staged."),
        epochs: int | None = typer.Option(None, "--epochs", min=1, help="Default: the recipe's."),
        batch_size: int | None = typer.Option(
            None, "--batch-size", min=1, help="Default: the recipe's (8)."
        ),
        lr: float | None = typer.Option(None, "--lr", help="Default: the recipe's (1e-3)."),
        device: str | None = typer.Option(
            None, "--device", envvar="QC_DEVICE", help="auto, cpu or cuda."
        ),
        precision: str | None = typer.Option(
            None, "--precision", envvar="QC_PRECISION", help="fp32, fp16 or bf16."
        ),
        version: str | None = typer.Option(None, "--version", help="Name of the new version."),
        activate: bool = typer.Option(False, "--activate", help="Make the new version active."),
        resume: Path | None = typer.Option(
            None, "--resume", metavar="RUN_DIR", help="Go on with an interrupted run."
        ),
        max_steps: int | None = typer.Option(
            None, "--max-steps", min=1, help="Cap on steps per epoch (quick trials)."
        ),
        json_path: Path | None = json_path_option("the training summary"),
    ) -> None:
        """Train DAPO prompts on a dataset and register them as a new prompt version."""
        from qc_stream.errors import InputError
        from qc_stream.settings import load_settings

        settings = load_settings()
        if resume is None and dataset is None:
            raise InputError("give --dataset PATH (or --resume RUN_DIR)")

        def log(msg: str) -> None:
            print(msg, file=sys.stderr, flush=True)

        from qc_stream.training.dataset_train import (
            TrainRequest,
            request_from_run,
            train_on_dataset,
        )

        if resume is not None:
            request = request_from_run(resume)
            run_dir = resume
        else:
            request = TrainRequest(
                dataset=dataset,
                layout=layout,
                products=[p.strip() for p in products.split(",") if p.strip()] if products else [],
                backbone=backbone or settings.backbone,
                pretrained=pretrained if pretrained is not None else settings.pretrained,
                image_size=image_size or settings.image_size,
                recipe=recipe,
                epochs=epochs,
                batch_size=batch_size,
                lr=lr,
                device=device or settings.device,
                precision=precision or settings.precision,
                version=version,
                max_steps=max_steps,
                models_dir=str(settings.models_dir),
            )
            if request.version is None:  # named now, so an interrupted run can say where it is
                from qc_stream.dapo.checkpoint import new_version_name

                request.version = new_version_name("dapo")
            run_dir = None
        from qc_stream.datasets import read_dataset
        from qc_stream.registry.versions import PromptVersions

        # the data, then the registry, must be right before hours of training, not after
        read_dataset(request.dataset, request.layout, request.products or None)
        with PromptVersions.from_settings(settings, publish=False) as versions:
            versions.versions.list()
        try:
            outcome = train_on_dataset(
                request,
                run_dir=run_dir,
                resume=resume is not None,
                progress=sys.stderr.isatty(),
                log=log,
            )
        except KeyboardInterrupt:
            from qc_stream.training.runs import load_checkpoint

            where = run_dir or Path(request.models_dir) / "runs" / request.version
            done = load_checkpoint(where) if (where / "checkpoint.pt").exists() else None
            kept = f"epochs 1-{done['epoch']} kept" if done else "no epoch finished yet"
            typer.echo(
                f"interrupted: {kept} in {where}; resume with: qc-stream train --resume {where}",
                err=True,
            )
            raise typer.Exit(130) from None

        import logging

        logging.getLogger("kafka").setLevel(logging.CRITICAL)  # one line from us instead of retries
        logging.getLogger("qc_stream.registry.events").setLevel(logging.ERROR)
        with PromptVersions.from_settings(settings, publish=activate) as versions:
            outcome_reg = versions.record(outcome.path, activate=activate)
        typer.echo(
            f"trained {outcome.version} in {outcome.seconds:.0f} s (final loss {outcome.final_loss:.4f}); "
            f"{outcome_reg.message}"
        )
        if not activate:
            typer.echo(f"activate it with: qc-stream models activate {outcome.version}", err=True)
        if json_path is not None:
            write_json(
                json_path,
                {
                    "version": outcome.version,
                    "path": str(outcome.path),
                    "run_dir": str(outcome.run_dir),
                    "dataset": outcome.dataset,
                    "final_loss": outcome.final_loss,
                    "seconds": outcome.seconds,
                    "epoch_seconds": outcome.epoch_seconds,
                    "peak_gpu_memory_mib": outcome.peak_gpu_memory_mib,
                    "active": activate,
                },
            )
