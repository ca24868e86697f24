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
        dataset: str | None = typer.Option(
            None,
            "--dataset",
            metavar="PATH",
            help="Evaluate on a dataset folder (MVTec AD, VisA, MPDD, BTAD, folder) instead.",
        ),
        layout: str = typer.Option("auto", "--layout", help="With --dataset: the layout."),
        products: str | None = typer.Option(
            None, "--products", help="With --dataset: comma-separated categories (default: all)."
        ),
        vocabulary: str = typer.Option(
            "dataset",
            "--vocabulary",
            help="With --dataset: score against all the dataset's defect words, or each product's.",
        ),
        methods: str = typer.Option(
            "dapo,handcrafted",
            "--methods",
            help="With --dataset: comma-separated from dapo, handcrafted, agnostic.",
        ),
        batch_size: int = typer.Option(8, "--batch-size", min=1, help="With --dataset."),
        markdown_path: Path | None = typer.Option(
            None, "--markdown", metavar="PATH", help="Write the per-category tables as Markdown."
        ),
    ) -> None:
        """Benchmark DAPO against its baselines on the held-out products (seen vs novel defect types),
        or with --dataset on a dataset's categories (the paper's protocol)."""
        from qc_stream.evaluation.benchmark import (
            goals_text,
            regions_text,
            run_benchmark,
            table,
            to_json_safe,
        )
        from qc_stream.settings import load_settings

        settings = load_settings()
        if dataset is not None:
            _eval_dataset(
                settings,
                dataset,
                layout,
                products,
                vocabulary,
                methods,
                batch_size,
                prompt_version or settings.prompt_version,
                agnostic,
                json_path,
                markdown_path,
            )
            return
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
        typer.echo(regions_text(report))
        typer.echo("")
        typer.echo(goals_text(report))
        typer.echo(
            f"\n{report['mode']} benchmark on {report['backbone']} took {report['seconds']:.0f} s"
        )
        if json_path is not None:
            write_json(json_path, to_json_safe(report))
            typer.echo(f"wrote {json_path}", err=True)


def _eval_dataset(
    settings,
    dataset,
    layout,
    products,
    vocabulary,
    methods,
    batch_size,
    prompt_version,
    agnostic,
    json_path,
    markdown_path,
) -> None:
    import sys

    from qc_stream.errors import InputError

    chosen = [m.strip() for m in methods.split(",") if m.strip()]
    unknown = sorted(set(chosen) - {"dapo", "handcrafted", "agnostic"})
    if unknown or not chosen:
        raise InputError(f"--methods: unknown method {unknown[0] if unknown else '(none)'!r}")
    if vocabulary not in ("dataset", "product"):
        raise InputError(f"--vocabulary must be dataset or product, got {vocabulary!r}")
    from qc_stream.datasets import read_dataset

    wanted = [p.strip() for p in products.split(",") if p.strip()] if products else None
    data = read_dataset(dataset, layout, wanted)  # every file checked before a model loads

    from qc_stream.dapo import load_backbone
    from qc_stream.evaluation.benchmark import to_json_safe
    from qc_stream.evaluation.dataset_eval import markdown, run_dataset_eval

    backbone = load_backbone(
        settings.backbone,
        pretrained=settings.pretrained,
        image_size=settings.image_size,
        models_dir=settings.models_dir,
        device=settings.device,
    )
    report = run_dataset_eval(
        data,
        backbone,
        settings.models_dir,
        chosen,
        prompt_version,
        agnostic,
        vocabulary,
        batch_size,
        log=lambda m: print(m, file=sys.stderr, flush=True),
    )
    report["command"] = " ".join(["qc-stream", *sys.argv[1:]])
    text = markdown(report)
    typer.echo(text)
    if json_path is not None:
        write_json(json_path, to_json_safe(report))
        typer.echo(f"wrote {json_path}", err=True)
    if markdown_path is not None:
        markdown_path.write_text(text + "\n")
        typer.echo(f"wrote {markdown_path}", err=True)
