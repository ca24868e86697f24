"""`qc-stream eval [--quick] [--json PATH]`: the quality benchmark on held-out synthetic products.

DAPO (the active prompt version) vs the hand-crafted WinCLIP-style ensemble vs the object-agnostic
learned prompts, on the same backbone; seen and novel defect types separately; per product and
mean. Full mode adds the staged-vs-joint training ablation. Progress goes to stderr, the table to
stdout. Heavy imports happen inside the command.
"""

from __future__ import annotations

from pathlib import Path

import typer

from qc_stream.cli.output import json_path_option, write_json


def register(app: typer.Typer) -> None:
    @app.command("eval")
    def eval_(
        quick: bool = typer.Option(
            False, "--quick", help="Small test set, shipped prompts only (<= 5 min on 2 cores)."
        ),
        json_path: Path | None = json_path_option("the full report"),
        prompt_version: str | None = typer.Option(
            None,
            "--prompt-version",
            envvar="QC_PROMPT_VERSION",
            help="DAPO prompt version (default: the active one).",
        ),
        agnostic: str | None = typer.Option(
            None,
            "--agnostic",
            help="Object-agnostic baseline version (default: the newest for the backbone).",
        ),
        ablation: bool | None = typer.Option(
            None,
            "--ablation/--no-ablation",
            help="Train DAPO staged and joint and compare (default: on in full mode).",
        ),
    ) -> None:
        """Benchmark DAPO against its baselines on the held-out products (seen vs novel defect types)."""
        from qc_stream.evaluation.benchmark import goals_text, run_benchmark, table, to_json_safe
        from qc_stream.settings import load_settings

        settings = load_settings()
        report = run_benchmark(
            quick=quick,
            backbone_name=settings.backbone,
            models_dir=settings.models_dir,
            dapo_version=prompt_version or settings.prompt_version,
            agnostic_version=agnostic,
            ablation=ablation,
        )
        report["command"] = "qc-stream eval" + (" --quick" if quick else "")
        typer.echo(table(report))
        typer.echo("")
        typer.echo(goals_text(report))
        typer.echo(
            f"\n{report['mode']} benchmark on {report['backbone']} took {report['seconds']:.0f} s"
        )
        if json_path is not None:
            write_json(json_path, to_json_safe(report))
            typer.echo(f"wrote {json_path}", err=True)
