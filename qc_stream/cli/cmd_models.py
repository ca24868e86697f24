"""`qc-stream models list|activate|refresh`: prompt versions (rollback = activate an older one)."""

from __future__ import annotations

import json

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
    models = typer.Typer(help="Prompt versions: list, activate (rollback), zero-shot refresh.", no_args_is_help=True)
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
