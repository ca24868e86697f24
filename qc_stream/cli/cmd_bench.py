"""`qc-stream bench`: bare model vs end-to-end pipeline throughput, and latency, in one run."""

from __future__ import annotations

from pathlib import Path

import typer

from qc_stream.cli.output import json_path_option


def register(app: typer.Typer) -> None:
    @app.command("bench")
    def bench(
        json_path: Path | None = json_path_option(
            "the report ({encoder_fps, bare_fps, e2e_fps, ratio, p50_ms, p99_ms, device, "
            "backbone, batch, ...})"
        ),
        frames: int = typer.Option(256, "--frames", min=1, help="Frames per measurement."),
        batch_size: int | None = typer.Option(
            None,
            "--batch-size",
            min=1,
            max=1024,
            envvar="QC_BATCH_SIZE",
            help="Micro-batch size, as the worker's QC_BATCH_SIZE (default 16).",
        ),
        frame_size: str = typer.Option(
            "256",
            "--frame-size",
            help="Synthetic camera frames: N (square) or WxH, e.g. 256, 1280x1024, 2448x2048 "
            "(JPEG quality 90).",
        ),
        workers: int = typer.Option(
            1,
            "--workers",
            min=1,
            max=64,
            help="Also run N worker processes in one consumer group (partitions >= N) and report "
            "the speed-up over one.",
        ),
    ) -> None:
        """Throughput of the image encoder alone, the bare model and broker -> worker -> database, in one run.

        Uses QC_BACKBONE, QC_PRETRAINED, QC_IMAGE_SIZE, QC_DEVICE, QC_PRECISION; SQLite unless
        QC_DATABASE_URL.
        """
        import json

        from qc_stream.devtools.bench import parse_frame_size, run_bench
        from qc_stream.settings import load_settings

        settings = load_settings()
        report = run_bench(
            settings,
            frames=frames,
            batch=batch_size or settings.batch_size,
            frame_size=parse_frame_size(frame_size),
            workers=workers,
            json_path=json_path,
            echo=lambda m: typer.echo(m, err=True),
        )
        typer.echo(json.dumps(report))
