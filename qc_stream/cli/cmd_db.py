"""`qc-stream db upgrade|downgrade|current`: schema migrations through Alembic.

Only typer is imported here at load time; SQLAlchemy and Alembic load inside the commands.
"""

from __future__ import annotations

import typer

URL_HELP = "Database URL (default sqlite:///qc-stream.db)."


def _url(url: str | None) -> str:
    """The URL to migrate, checked like QC_DATABASE_URL (a bad one is one line, exit 2)."""
    from qc_stream.settings import load_settings

    return load_settings(**({"database_url": url} if url else {})).database_url


def _url_option():
    return typer.Option(None, "--url", envvar="QC_DATABASE_URL", help=URL_HELP)


def _where(url: str) -> str:
    from qc_stream.storage.db import safe_url

    return safe_url(url)


def register(app: typer.Typer) -> None:
    db = typer.Typer(help="Database schema migrations (Alembic).", no_args_is_help=True)
    app.add_typer(db, name="db")

    @db.command("upgrade")
    def upgrade(
        revision: str = typer.Option("head", "--revision", "-r", help="Target revision."),
        url: str | None = _url_option(),
    ) -> None:
        """Upgrade the schema (default: to the newest revision)."""
        from qc_stream.storage import migrate

        target = _url(url)
        migrate.upgrade(target, revision)
        typer.echo(f"database {_where(target)} at revision {migrate.current(target) or 'base'}")

    @db.command("downgrade")
    def downgrade(
        revision: str = typer.Argument(
            ..., help="Target revision ('base' removes every table, '-1' steps back)."
        ),
        url: str | None = _url_option(),
    ) -> None:
        """Downgrade the schema to REVISION."""
        from qc_stream.storage import migrate

        target = _url(url)
        migrate.downgrade(target, revision)
        typer.echo(f"database {_where(target)} at revision {migrate.current(target) or 'base'}")

    @db.command("current")
    def current(url: str | None = _url_option()) -> None:
        """Print the revision the database is at and the newest one available."""
        from qc_stream.storage import migrate

        target = _url(url)
        typer.echo(
            f"database {_where(target)} at revision {migrate.current(target) or 'base'} (head {migrate.head()})"
        )

    @db.command("wait")
    def wait(
        timeout_s: float = typer.Option(
            600.0, "--timeout-s", min=0, help="Give up after this many seconds (exit 1)."
        ),
        url: str | None = _url_option(),
    ) -> None:
        """Block until the schema is at the newest revision this release ships (a worker's init
        step: the release's migration Job runs `db upgrade`, workers start only after it)."""
        import time

        from qc_stream.errors import QcError
        from qc_stream.storage import migrate

        target = _url(url)
        wanted = migrate.head()
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                at = migrate.current(target)
                state = f"at revision {at or 'base'}"
            except QcError as e:  # database not reachable yet: keep waiting
                at, state = None, f"unreachable ({e})"
            if at == wanted:
                typer.echo(f"database {_where(target)} at revision {at}")
                return
            if time.monotonic() >= deadline:
                typer.echo(
                    f"error: database {_where(target)} {state}, not at {wanted}, after "
                    f"{timeout_s:g} s; run `qc-stream db upgrade` (the release's migration Job)",
                    err=True,
                )
                raise typer.Exit(1)
            time.sleep(min(2.0, max(0.1, deadline - time.monotonic())))

    @db.command("prune")
    def prune(
        dry_run: bool = typer.Option(
            False, "--dry-run", help="Print what would be dropped; change nothing."
        ),
        url: str | None = _url_option(),
    ) -> None:
        """Retention: drop old frames and roll-ups, printing the plan first.

        Frames older than QC_RETENTION_DAYS go as whole day partitions on Postgres, roll-up rows
        older than QC_ROLLUP_RETENTION_DAYS are deleted; the coming days' partitions are created.
        """
        from qc_stream.settings import load_settings
        from qc_stream.storage.db import make_engine, storage_errors
        from qc_stream.storage.partitions import execute_prune, plan_prune

        target = _url(url)
        settings = load_settings()
        engine = make_engine(target)
        try:
            with storage_errors("plan the prune"), engine.connect() as conn:
                plan = plan_prune(conn, settings.retention_days, settings.rollup_retention_days)
            prefix = "would " if dry_run else ""
            for line in plan.lines():
                typer.echo(prefix + line if line.startswith(("drop", "delete")) else line)
            if not dry_run:
                with storage_errors("prune"):
                    execute_prune(engine, plan)
                typer.echo(f"pruned database {_where(target)}")
        finally:
            engine.dispose()
