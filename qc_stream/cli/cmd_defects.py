"""`qc-stream defects add|list|show|retire|publish`: the defect-type registry.

Only typer is imported at load time; the registry (SQLAlchemy, kafka-python) loads inside commands.
"""

from __future__ import annotations

import typer

from qc_stream.cli.output import (
    OutputFormat,
    add_row,
    echo_json,
    format_option,
    new_table,
    print_table,
)

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
        output: OutputFormat = format_option(),
    ) -> None:
        """List registered defect types."""
        rows = _registry(publish=False).list(product, include_retired=all_)
        if output is OutputFormat.json:
            echo_json([_as_dict(d) for d in rows])
            return
        if not rows:
            typer.echo(
                "no defect types registered" + (f" for product {product!r}" if product else "")
            )
            return
        table = new_table("product", "name", "status", "description")
        for d in rows:
            add_row(table, d.product, d.name, d.status.value, d.description)
        print_table(table)

    @defects.command("show")
    def show(
        product: str = PRODUCT,
        name: str = NAME,
        output: OutputFormat = format_option(),
    ) -> None:
        """Show one defect type with its root cause and corrective action."""
        d = _as_dict(_registry(publish=False).get(product, name))
        if output is OutputFormat.json:
            echo_json(d)
            return
        table = new_table("field", "value")
        for key, value in d.items():
            add_row(table, key.replace("_", " "), value)
        print_table(table)

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
