"""`qc-stream eval [--quick] [--dataset PATH] [--json PATH] [--markdown PATH]`: the quality benchmark.

DAPO (the active prompt version) vs the hand-crafted WinCLIP-style ensemble vs the object-agnostic
learned prompts, on the same backbone, per product (category) and mean. Without ``--dataset`` the
data are the held-out synthetic products (``evaluation.benchmark``: also seen and novel defect
types, goals, regions; full mode adds the staged-vs-joint ablation); with it, a dataset on disk
(``evaluation.dataset_eval``, which scores both). Progress goes to stderr, the Markdown report to
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
            None,
            "--products",
            help="Comma-separated categories, or held-out products without --dataset (default: all).",
        ),
        vocabulary: str | None = typer.Option(
            None,
            "--vocabulary",
            help="dataset: score every product against all the defect words of the data; product: "
            "against its own (default: dataset with --dataset, product on the synthetic benchmark).",
        ),
        methods: str | None = typer.Option(
            None,
            "--methods",
            help="Comma-separated from dapo, handcrafted, agnostic (default: dapo,handcrafted with "
            "--dataset, all three on the synthetic benchmark).",
        ),
        batch_size: int | None = typer.Option(
            None,
            "--batch-size",
            min=1,
            help="Images per forward (default: 8 with --dataset, else 16).",
        ),
        markdown_path: Path | None = typer.Option(
            None, "--markdown", metavar="PATH", help="Write the report's tables as Markdown."
        ),
    ) -> None:
        """Benchmark DAPO against its baselines on the held-out synthetic products (seen vs novel
        defect types), or with --dataset on a dataset's categories (the paper's protocol); both run
        through the same scoring and metrics."""
        import sys

        from qc_stream.errors import InputError
        from qc_stream.settings import load_settings

        settings = load_settings()
        chosen = _methods(
            methods or ("dapo,handcrafted" if dataset else "dapo,handcrafted,agnostic")
        )
        vocabulary = vocabulary or ("dataset" if dataset else "product")
        if vocabulary not in ("dataset", "product"):
            raise InputError(f"--vocabulary must be dataset or product, got {vocabulary!r}")
        wanted = [p.strip() for p in products.split(",") if p.strip()] if products else None
        if dataset is not None and (quick or ablation is not None):
            raise InputError(
                "--quick and --ablation apply to the synthetic benchmark, not --dataset"
            )
        if dataset is None and layout != "auto":
            raise InputError("--layout applies to --dataset only")
        data = None
        if dataset is not None:
            from qc_stream.datasets import read_dataset

            data = read_dataset(dataset, layout, wanted)  # every file checked before a model loads

        from qc_stream.dapo import load_backbone
        from qc_stream.evaluation.dataset_eval import markdown, run_dataset_eval, to_json_safe

        backbone = load_backbone(
            settings.backbone,
            pretrained=settings.pretrained,
            image_size=settings.image_size,
            models_dir=settings.models_dir,
            device=settings.device,
        )
        version = prompt_version or settings.prompt_version
        if data is not None:
            report = run_dataset_eval(
                data, backbone, settings.models_dir, chosen, version, agnostic, vocabulary,
                batch_size or 8, log=_log,
            )  # fmt: skip
            text = markdown(report)
        else:
            from qc_stream.evaluation.benchmark import BATCH_SIZE, benchmark_markdown, run_benchmark

            report = run_benchmark(
                backbone, settings.models_dir, quick, version, agnostic, ablation, chosen,
                vocabulary, wanted, batch_size or BATCH_SIZE, log=_log,
            )  # fmt: skip
            text = benchmark_markdown(report)
        report["command"] = " ".join(["qc-stream", *sys.argv[1:]])
        typer.echo(text)
        if data is None:
            typer.echo(
                f"\n{report['mode']} benchmark on {report['backbone']} took {report['seconds']:.0f} s"
            )
        if json_path is not None:
            write_json(json_path, to_json_safe(report))
            typer.echo(f"wrote {json_path}", err=True)
        if markdown_path is not None:
            markdown_path.write_text(text + "\n")
            typer.echo(f"wrote {markdown_path}", err=True)


def _log(message: str) -> None:
    import sys

    print(message, file=sys.stderr, flush=True)


def _methods(spec: str) -> list[str]:
    from qc_stream.errors import InputError

    chosen = [m.strip() for m in spec.split(",") if m.strip()]
    unknown = sorted(set(chosen) - {"dapo", "handcrafted", "agnostic"})
    if unknown or not chosen:
        raise InputError(f"--methods: unknown method {unknown[0] if unknown else '(none)'!r}")
    return chosen
