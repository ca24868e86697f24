"""`qc-stream models list|activate|refresh|calibrate`: prompt versions (rollback = activate an older one)."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def _versions(publish: bool = True):
    import logging

    from qc_stream.registry.versions import PromptVersions
    from qc_stream.settings import load_settings

    logging.getLogger("kafka").setLevel(logging.CRITICAL)  # one line from us instead of retries
    logging.getLogger("qc_stream.registry.events").setLevel(logging.ERROR)
    return PromptVersions.from_settings(load_settings(), publish=publish)


def _headline(metrics: dict) -> str:
    keys = ("image_auroc", "pixel_auroc", "type_f1")
    parts = [f"{k}={metrics[k]:.3f}" for k in keys if isinstance(metrics.get(k), (int, float))]
    return " ".join(parts)


def register(app: typer.Typer) -> None:
    models = typer.Typer(
        help="Prompt versions: list, activate (rollback), zero-shot refresh, calibrate thresholds.",
        no_args_is_help=True,
    )
    app.add_typer(models, name="models")

    @models.command("list")
    def list_(as_json: bool = typer.Option(False, "--json", help="Print a JSON array.")) -> None:
        """List prompt versions, oldest first; '*' marks the active one."""
        with _versions(publish=False) as versions:
            rows = versions.list()
        if as_json:
            typer.echo(json.dumps([r.model_dump(mode="json") for r in rows], indent=2))
            return
        if not rows:
            typer.echo("no prompt versions yet (run `qc-stream retrain`)")
            return
        width = max(len(r.prompt_version) for r in rows)
        for r in rows:
            words = len((r.vocabulary or {}).get("words", []))
            created = r.created_at.strftime("%Y-%m-%d %H:%M:%S") if r.created_at else ""
            typer.echo(
                f"{'*' if r.active else ' '} {r.prompt_version:<{width}}  {r.kind:<9}  {created}  "
                f"{words:>3} words  parent={r.parent_version or '-'}  {_headline(r.metrics)}"
            )

    @models.command("activate")
    def activate(version: str = typer.Argument(..., help="Prompt version to make active.")) -> None:
        """Make VERSION the active prompt version and announce it to running workers."""
        with _versions() as versions:
            typer.echo(versions.activate(version).message)

    @models.command("refresh")
    def refresh() -> None:
        """Zero-shot refresh now: a new version with the registry's vocabulary (no training)."""
        with _versions() as versions:
            typer.echo(versions.zero_shot_refresh().message)

    @models.command("calibrate")
    def calibrate(
        version: str | None = typer.Option(
            None, "--version", help="Prompt version (default: the active one)."
        ),
        product: list[str] = typer.Option(
            [], "--product", "-p", help="Product(s) to calibrate (default: every catalog product)."
        ),
        images: Path | None = typer.Option(
            None,
            "--images",
            help="Folder of good parts of one --product (default: synthetic parts).",
        ),
        synthetic: int = typer.Option(
            64, "--synthetic", min=8, max=10_000, help="Synthetic good parts per product."
        ),
        quantile: float = typer.Option(
            0.98,
            "--quantile",
            min=0.5,
            max=1.0,
            help="warn = this quantile of the good parts' scores.",
        ),
        margin: float = typer.Option(
            0.05, "--margin", min=0.0, max=1.0, help="reject = the highest good score + this."
        ),
        check: int = typer.Option(
            64,
            "--check",
            min=0,
            max=10_000,
            help="Synthetic check parts per product (half defective); 0: none.",
        ),
        size: int = typer.Option(
            256,
            "--size",
            min=32,
            max=2048,
            help="Synthetic image size (the demo's cameras send 256).",
        ),
    ) -> None:
        """Per-product verdict thresholds from good parts, written to the version's thresholds.json."""
        from qc_stream.registry.calibration import calibrate_version, format_table
        from qc_stream.settings import load_settings

        settings = load_settings()
        name, rows, path = calibrate_version(
            settings,
            version=version,
            products=product,
            images_dir=images,
            synthetic=synthetic,
            check=check,
            quantile=quantile,
            margin=margin,
            size=size,
        )
        typer.echo(
            f"prompt version {name}: warn = {quantile:g} quantile of good scores, reject = max + {margin:g}"
        )
        typer.echo(format_table(rows, (settings.warn_threshold, settings.reject_threshold)))
        typer.echo(f"wrote {path}")
        typer.echo(
            f"running workers load it with the version: `qc-stream models activate {name}` re-announces it"
        )
