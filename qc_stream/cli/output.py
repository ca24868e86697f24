"""How commands print: a listing is a ``rich`` table by default and JSON with ``--format json``;
a command that writes a result file takes ``--json PATH``.

Only typer is imported at load time; rich loads when something is printed.
"""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Any

import typer

# Piped output has no terminal width; a wide bound keeps rows on one line (tables never pad to it).
PIPE_WIDTH = 200


class OutputFormat(str, Enum):
    table = "table"
    json = "json"


def format_option() -> Any:
    """``--format table|json`` for a listing."""
    return typer.Option(
        OutputFormat.table,
        "--format",
        case_sensitive=False,
        help="Print a table (for people) or JSON (for scripts).",
    )


def json_path_option(what: str) -> Any:
    """``--json PATH`` for a command that writes a result file."""
    return typer.Option(
        None,
        "--json",
        metavar="PATH",
        dir_okay=False,
        help=f"Also write {what} as JSON to PATH.",
    )


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")


def echo_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2))


def new_table(*columns: str, title: str | None = None, right: tuple[str, ...] = ()):
    """A rich table with these column headers; ``right``: the numeric ones (right-aligned)."""
    from rich.table import Table

    table = Table(title=title)
    for name in columns:
        table.add_column(name, justify="right" if name in right else "left")
    return table


def add_row(table, *values: Any) -> None:
    """Cells are plain text: a description holding '[bold]' or ':smile:' prints as typed."""
    from rich.text import Text

    table.add_row(*(Text("" if v is None else str(v)) for v in values))


def print_table(table) -> None:
    from rich.console import Console

    console = Console()
    if not console.is_terminal:
        console = Console(width=PIPE_WIDTH)
    console.print(table)
