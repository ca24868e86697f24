"""`qc-stream db upgrade|downgrade` (implemented by the storage work)."""

import typer


def register(app: typer.Typer) -> None:
    db = typer.Typer(help="Database schema migrations (Alembic).", no_args_is_help=True)
    app.add_typer(db, name="db")
