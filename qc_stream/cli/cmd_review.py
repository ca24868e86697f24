"""`qc-stream review [--port N]`: the operator review station; `review user add|passwd|disable`,
`review export --out DIR`, `review cleanup`.

Only typer is imported at load time; FastAPI, uvicorn, SQLAlchemy and argon2 load inside commands.
"""

from __future__ import annotations

from pathlib import Path

import typer

ROLE_HELP = "operator (reviews frames) or engineer (also accepts proposed types, exports)."


def _settings():
    from qc_stream.settings import load_settings

    return load_settings()


def _engine(settings):
    from qc_stream.storage.db import make_engine

    return make_engine(settings.database_url)


def _password(password_stdin: bool) -> str:
    import sys

    if password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    return typer.prompt("Password", hide_input=True, confirmation_prompt=True)


def register(app: typer.Typer) -> None:
    review = typer.Typer(
        help="Operator review station: confirm or correct verdicts of kept frames.",
        invoke_without_command=True,
    )
    app.add_typer(review, name="review")

    @review.callback()
    def serve(
        ctx: typer.Context,
        port: int = typer.Option(8090, "--port", min=1, max=65535, help="Port to listen on."),
        host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    ) -> None:
        """Run the review station (http://HOST:PORT/login) until stopped."""
        if ctx.invoked_subcommand is not None:
            return
        import uvicorn

        from qc_stream.review.app import create_app

        settings = _settings()
        if settings.frame_store_dir is None:
            typer.echo(
                "warning: QC_FRAME_STORE_DIR is not set; no frame pictures to show", err=True
            )
        app_ = create_app(settings)
        typer.echo(f"review station on http://{host}:{port}/login")
        uvicorn.run(app_, host=host, port=port, log_level="warning")

    user = typer.Typer(help="Review station accounts.", no_args_is_help=True)
    review.add_typer(user, name="user")

    @user.command("add")
    def user_add(
        name: str = typer.Argument(..., help="User name."),
        role: str = typer.Option("operator", "--role", help=ROLE_HELP),
        password_stdin: bool = typer.Option(
            False, "--password-stdin", help="Read the password from one line of stdin."
        ),
    ) -> None:
        """Create an account (asks for the password)."""
        from qc_stream.errors import InputError
        from qc_stream.review.passwords import hash_password
        from qc_stream.storage.reviews import ROLES, UserRepository

        name = name.strip()
        if not name or len(name) > 64 or not name.isprintable():
            raise InputError("a user name has 1 to 64 printable characters")
        if role not in ROLES:
            raise InputError(f"--role must be one of {', '.join(ROLES)}")
        hashed = hash_password(_password(password_stdin))
        UserRepository(_engine(_settings())).add(name, hashed, role)
        typer.echo(f"user {name!r} added ({role})")

    @user.command("passwd")
    def user_passwd(
        name: str = typer.Argument(..., help="User name."),
        password_stdin: bool = typer.Option(
            False, "--password-stdin", help="Read the password from one line of stdin."
        ),
    ) -> None:
        """Set a new password (and enable the account)."""
        from qc_stream.review.passwords import hash_password
        from qc_stream.storage.reviews import UserRepository

        hashed = hash_password(_password(password_stdin))
        UserRepository(_engine(_settings())).set(name, password_hash=hashed, disabled=False)
        typer.echo(f"password of {name!r} changed")

    @user.command("disable")
    def user_disable(name: str = typer.Argument(..., help="User name.")) -> None:
        """Disable an account (its sessions end at their next request)."""
        from qc_stream.storage.reviews import UserRepository

        UserRepository(_engine(_settings())).set(name, disabled=True)
        typer.echo(f"user {name!r} disabled")

    @review.command("export")
    def export(
        out: Path = typer.Option(..., "--out", help="Folder to write (retrain --examples layout)."),
    ) -> None:
        """Write reviewed frames as DIR/<product>/good/ and DIR/<product>/<type>/."""
        from qc_stream.errors import InputError
        from qc_stream.review.export import export_reviewed
        from qc_stream.storage.defect_types import DefectTypeRepository
        from qc_stream.storage.frame_store import FrameStore
        from qc_stream.storage.reviews import ReviewRepository

        settings = _settings()
        if settings.frame_store_dir is None:
            raise InputError("QC_FRAME_STORE_DIR is not set: there are no kept frames to export")
        engine = _engine(settings)
        report = export_reviewed(
            ReviewRepository(engine),
            DefectTypeRepository(engine).list(),
            FrameStore(settings.frame_store_dir),
            out,
        )
        for (product, folder), n in sorted(report.written.items()):
            typer.echo(f"{out / product / folder}: {n}")
        for reason, n in sorted(report.skipped.items()):
            typer.echo(f"skipped {n}: {reason}")
        typer.echo(f"{sum(report.written.values())} frame(s) written to {out}")

    @review.command("cleanup")
    def cleanup() -> None:
        """Enforce QC_FRAME_STORE_MAX_DAYS and QC_FRAME_STORE_MAX_BYTES on the frame store."""
        from qc_stream.errors import InputError
        from qc_stream.storage.frame_store import FrameStore
        from qc_stream.storage.reviews import ReviewRepository

        settings = _settings()
        if settings.frame_store_dir is None:
            raise InputError("QC_FRAME_STORE_DIR is not set")
        store = FrameStore(
            settings.frame_store_dir,
            max_days=settings.frame_store_max_days,
            max_bytes=settings.frame_store_max_bytes,
        )
        report = store.cleanup()
        rows = ReviewRepository(_engine(settings)).forget_paths(report.removed_paths)
        typer.echo(
            f"removed {report.removed_files} file(s), {report.removed_bytes} bytes "
            f"({rows} kept frame(s)); {report.kept_bytes} bytes left"
        )
