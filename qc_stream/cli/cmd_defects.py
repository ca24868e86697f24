"""`qc-stream defects add|list|show|retire|publish`: the defect-type registry.

Only typer is imported at load time; the registry (SQLAlchemy, kafka-python) loads inside commands.
"""

from __future__ import annotations

import json

import typer

PRODUCT = typer.Option(..., "--product", "-p", help="Product the defect type belongs to.")
NAME = typer.Option(
    ..., "--name", "-n", help="Defect name: the word the model reads (e.g. 'dent')."
)


def _quiet_kafka() -> None:
    # kafka-python logs every failed connection attempt; the command prints one line instead.
    import logging

    logging.getLogger("kafka").setLevel(logging.CRITICAL)
    logging.getLogger("qc_stream.registry.events").setLevel(logging.ERROR)


def _registry(publish: bool = True):
    _quiet_kafka()
    from qc_stream.registry.service import DefectRegistry
    from qc_stream.settings import load_settings

    return DefectRegistry.from_settings(load_settings(), publish=publish)


def _as_dict(d) -> dict:
    return d.model_dump(mode="json")


def _report_change(verb: str, change) -> None:
    d = change.defect
    typer.echo(f"{verb} defect type {d.name!r} for product {d.product!r}")
    if change.published:
        typer.echo("event published on qc.defect-types")
    else:
        typer.echo(
            f"warning: the event was NOT published on qc.defect-types ({change.publish_error}); the change "
            "is saved in the database; run `qc-stream defects publish` when the broker is reachable",
            err=True,
        )


def _refresh_after_change() -> None:
    from qc_stream.registry.versions import PromptVersions
    from qc_stream.settings import load_settings

    with PromptVersions.from_settings(load_settings()) as versions:
        outcome = versions.zero_shot_refresh()
    typer.echo(outcome.message)


def register(app: typer.Typer) -> None:
    defects = typer.Typer(help="The defect-type registry (per product).", no_args_is_help=True)
    app.add_typer(defects, name="defects")

    @defects.command("add")
    def add(
        product: str = PRODUCT,
        name: str = NAME,
        description: str | None = typer.Option(
            None, "--description", "-d", help="What the defect looks like."
        ),
        root_cause: str | None = typer.Option(
            None, "--root-cause", help="Typical cause on the line."
        ),
        corrective_action: str | None = typer.Option(
            None, "--corrective-action", help="What the line should do when this defect appears."
        ),
        refresh: bool = typer.Option(
            False,
            "--refresh",
            help="Also make a zero-shot prompt version now (instead of waiting for the listener).",
        ),
    ) -> None:
        """Register a defect type for a product."""
        registry = _registry()
        try:
            change = registry.add(product, name, description, root_cause, corrective_action)
        finally:
            registry.close()
        _report_change("registered", change)
        if refresh:
            _refresh_after_change()

    @defects.command("retire")
    def retire(
        product: str = PRODUCT,
        name: str = NAME,
        refresh: bool = typer.Option(
            False, "--refresh", help="Also make a zero-shot prompt version now."
        ),
    ) -> None:
        """Retire a defect type (kept for history; no longer in the model's vocabulary)."""
        registry = _registry()
        try:
            change = registry.retire(product, name)
        finally:
            registry.close()
        _report_change("retired", change)
        if refresh:
            _refresh_after_change()

    @defects.command("list")
    def list_(
        product: str | None = typer.Option(None, "--product", "-p", help="Only this product."),
        all_: bool = typer.Option(False, "--all", help="Include retired types."),
        as_json: bool = typer.Option(False, "--json", help="Print a JSON array."),
    ) -> None:
        """List registered defect types."""
        rows = _registry(publish=False).list(product, include_retired=all_)
        if as_json:
            typer.echo(json.dumps([_as_dict(d) for d in rows], indent=2))
            return
        if not rows:
            typer.echo(
                "no defect types registered" + (f" for product {product!r}" if product else "")
            )
            return
        width = max(len(d.product) for d in rows)
        name_w = max(len(d.name) for d in rows)
        for d in rows:
            typer.echo(
                f"{d.product:<{width}}  {d.name:<{name_w}}  {d.status.value:<7}  {d.description}"
            )

    @defects.command("show")
    def show(
        product: str = PRODUCT,
        name: str = NAME,
        as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    ) -> None:
        """Show one defect type with its root cause and corrective action."""
        d = _registry(publish=False).get(product, name)
        if as_json:
            typer.echo(json.dumps(_as_dict(d), indent=2))
            return
        for key, value in _as_dict(d).items():
            typer.echo(f"{key.replace('_', ' ')}: {'' if value is None else value}")

    @defects.command("publish")
    def publish() -> None:
        """Re-send every type's current state on qc.defect-types (after the broker was down)."""
        registry = _registry()
        try:
            sent, failed = registry.publish_all()
        finally:
            registry.close()
        typer.echo(f"published {sent} defect type event(s) on qc.defect-types")
        if failed:
            from qc_stream.errors import QcError

            raise QcError(
                f"{failed} event(s) could not be published: {registry.publisher.last_error}"
            )
