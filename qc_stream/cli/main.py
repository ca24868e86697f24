"""The ``qc-stream`` entry point.

Each command lives in its own module under ``qc_stream.cli`` and exposes ``register(app)``. Those
modules import only light things at import time (typer, settings); torch, open_clip, faust and
SQLAlchemy engines are imported inside the command bodies so ``qc-stream --help`` stays instant.
"""

from __future__ import annotations

import importlib
import logging
import sys

import typer

from qc_stream.errors import QcError

app = typer.Typer(
    name="qc-stream",
    help="Streaming visual quality control: cameras -> Kafka -> DAPO workers -> Postgres/Redis -> Grafana.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _print_version(value: bool) -> None:
    if not value:
        return
    # Package metadata only: `--version` imports nothing of qc_stream beyond this module.
    from importlib.metadata import PackageNotFoundError, version

    try:
        typer.echo(f"qc-stream {version('qc-stream')}")
    except PackageNotFoundError:  # a source tree that was never installed
        typer.echo("qc-stream (not installed: no package metadata)")
    raise typer.Exit()


@app.callback()
def _root(
    _version: bool = typer.Option(
        False,
        "--version",
        is_eager=True,
        callback=_print_version,
        help="Print the version and exit.",
    ),
) -> None:
    pass


# Order is the order of `qc-stream --help`.
COMMAND_MODULES = [
    "demo",
    "broker",
    "camera",
    "worker",
    "predict",
    "db",
    "defects",
    "retrain",
    "models",
    "dashboards",
    "train",
    "eval",
    "bench",
    "review",
]

for _name in COMMAND_MODULES:
    try:
        _module = importlib.import_module(f"qc_stream.cli.cmd_{_name}")
    except ModuleNotFoundError as _e:
        if _e.name != f"qc_stream.cli.cmd_{_name}":
            raise
        continue
    _module.register(app)


def run() -> None:
    """Console-script entry: user errors become one line on stderr and exit code 2."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        app()
    except QcError as e:
        typer.echo(f"error: {e}", err=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
