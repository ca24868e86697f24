"""`qc-stream bench`: bare model vs end-to-end pipeline throughput, and latency, in one run."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("bench")
    def bench(
        json_path: Path = typer.Option(
            None,
            "--json",
            help="Write {encoder_fps, bare_fps, e2e_fps, ratio, p50_ms, p99_ms, device, backbone, batch} here.",
        ),
        frames: int = typer.Option(256, "--frames", min=1, help="Frames per measurement."),
        batch: int = typer.Option(
            None, "--batch", min=1, max=1024, help="Micro-batch size (default QC_BATCH_SIZE)."
        ),
        size: int = typer.Option(
            256, "--size", min=32, max=2048, help="Side of the synthetic JPEG frames."
        ),
    ) -> None:
        """Throughput of the image encoder alone, the bare model and the whole pipeline (broker -> worker -> database), in one run.

        Uses QC_BACKBONE, QC_PRETRAINED, QC_IMAGE_SIZE, QC_DEVICE, QC_PRECISION; SQLite unless
        QC_DATABASE_URL.
        """
        import json

        from qc_stream.devtools.bench import run_bench
        from qc_stream.settings import load_settings

        settings = load_settings()
        report = run_bench(
            settings,
            frames=frames,
            batch=batch or settings.batch_size,
            size=size,
            json_path=json_path,
            echo=lambda m: typer.echo(m, err=True),
        )
        typer.echo(json.dumps(report))
