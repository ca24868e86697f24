"""`qc-stream models list|activate|refresh|calibrate`: prompt versions (rollback = activate an older one)."""

from __future__ import annotations

import math
from pathlib import Path

import typer

from qc_stream.cli.output import (
    OutputFormat,
    add_row,
    echo_json,
    format_option,
    new_table,
    print_table,
)

HEADLINE = {"image_auroc": "image AUROC", "pixel_auroc": "pixel AUROC", "type_f1": "type F1"}


def _versions(publish: bool = True):
    import logging

    from qc_stream.registry.versions import PromptVersions
    from qc_stream.settings import load_settings

    logging.getLogger("kafka").setLevel(logging.CRITICAL)  # one line from us instead of retries
    logging.getLogger("qc_stream.registry.events").setLevel(logging.ERROR)
    return PromptVersions.from_settings(load_settings(), publish=publish)


def _as_json(r) -> dict:
    """The contract's keys first (version, backbone_id, active, created_at), then the rest."""
    d = r.model_dump(mode="json")
    head = {
        "version": d.pop("prompt_version"),
        "backbone_id": d.pop("backbone"),
        "active": d.pop("active"),
        "created_at": d.pop("created_at"),
    }
    return head | d


def _metric(metrics: dict, key: str) -> str:
    value = metrics.get(key)
    return f"{value:.3f}" if isinstance(value, (int, float)) else ""


def _pct(x: float) -> str:
    return "-" if math.isnan(x) else f"{100 * x:.0f}%"


def _calibration_table(rows, default: tuple[float, float]):
    """Thresholds, the good parts' score spread, and flag rates on the check set with the
    calibrated thresholds vs the global ones; an "all" row pools the products' check sets."""
    from qc_stream.registry.calibration import pooled_rate

    table = new_table(
        "product",
        "n",
        "warn",
        "reject",
        "median",
        "max",
        "region px",
        "false alarms",
        "defects caught",
        "rejected",
        "overlap",
        "check set",
        title=f"rates on the check set: calibrated / global {default[0]:g}-{default[1]:g}",
        right=(
            "n",
            "warn",
            "reject",
            "median",
            "max",
            "region px",
            "false alarms",
            "defects caught",
            "rejected",
            "overlap",
        ),
    )
    for r in rows:
        add_row(
            table,
            r.product,
            r.n_normal,
            f"{r.warn:.3f}",
            f"{r.reject:.3f}",
            f"{r.normal_median:.3f}",
            f"{r.normal_max:.3f}",
            "-" if r.region_threshold is None else f"{r.region_threshold:.3f}",
            f"{_pct(r.false_alarm_rate)} / {_pct(r.global_false_alarm_rate)}",
            f"{_pct(r.recall)} / {_pct(r.global_recall)}",
            _pct(r.reject_rate),
            _pct(r.overlap) + (" !" if r.flagged else ""),
            f"n={r.check_normal}+{r.check_defective}",
        )
    checked = [r for r in rows if r.check_normal + r.check_defective]
    if len(checked) > 1:

        def pooled(rate: str, count: str) -> str:
            return _pct(pooled_rate(checked, rate, count))

        add_row(
            table,
            "all",
            "",
            "",
            "",
            "",
            "",
            "",
            f"{pooled('false_alarm_rate', 'check_normal')} / "
            f"{pooled('global_false_alarm_rate', 'check_normal')}",
            f"{pooled('recall', 'check_defective')} / {pooled('global_recall', 'check_defective')}",
            pooled("reject_rate", "check_defective"),
            "",
            f"n={sum(r.check_normal for r in checked)}+{sum(r.check_defective for r in checked)}",
        )
    return table


def register(app: typer.Typer) -> None:
    models = typer.Typer(
        help="Prompt versions: list, activate (rollback), zero-shot refresh, calibrate thresholds.",
        no_args_is_help=True,
    )
    app.add_typer(models, name="models")

    @models.command("list")
    def list_(output: OutputFormat = format_option()) -> None:
        """List prompt versions, oldest first; '*' marks the active one."""
        with _versions(publish=False) as versions:
            rows = versions.list()
        if output is OutputFormat.json:
            echo_json([_as_json(r) for r in rows])
            return
        if not rows:
            typer.echo("no prompt versions yet (run `qc-stream retrain`)")
            return
        table = new_table(
            "active",
            "version",
            "kind",
            "created",
            "words",
            "parent",
            "backbone",
            *HEADLINE.values(),
            right=("words", *HEADLINE.values()),
        )
        for r in rows:
            add_row(
                table,
                "*" if r.active else "",
                r.prompt_version,
                r.kind,
                r.created_at.strftime("%Y-%m-%d %H:%M:%S") if r.created_at else "",
                len((r.vocabulary or {}).get("words", [])),
                r.parent_version or "-",
                r.backbone,
                *(_metric(r.metrics, k) for k in HEADLINE),
            )
        print_table(table)

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
            None,
            "--prompt-version",
            envvar="QC_PROMPT_VERSION",
            help="Prompt version to calibrate (default: the active one).",
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
            0.25,
            "--margin",
            min=0.0,
            max=1.0,
            help="reject = the highest good score + this, in logits of the score.",
        ),
        max_overlap: float = typer.Option(
            0.5,
            "--max-overlap",
            min=0.0,
            max=1.0,
            help="Flag a product when more than this share of its defective check parts scores under warn.",
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
        from qc_stream.registry.calibration import calibrate_version
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
            max_overlap=max_overlap,
        )
        typer.echo(
            f"prompt version {name}: warn = {quantile:g} quantile of good scores, "
            f"reject = max + {margin:g} in logits; region px = 0.999 quantile of good maps"
        )
        print_table(_calibration_table(rows, (settings.warn_threshold, settings.reject_threshold)))
        for r in rows:
            if r.flagged:
                typer.echo(
                    f"warning: {r.product}: good and defective parts overlap: {_pct(r.overlap)} of "
                    f"its defective check parts score under warn (limit {_pct(max_overlap)}); its "
                    "verdicts will miss most defects",
                    err=True,
                )
        typer.echo(f"wrote {path}")
        typer.echo(
            f"running workers load it with the version: `qc-stream models activate {name}` re-announces it"
        )
