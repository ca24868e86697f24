"""Schema migrations through Alembic: ``upgrade(url)`` / ``downgrade(url, revision)`` / ``current(url)``.

The revisions live in ``migrations/`` at the repository root, found relative to this package, or
in an installed wheel's data files (``<prefix>/share/qc-stream/migrations``), or at
``QC_MIGRATIONS_DIR``; so ``qc-stream db upgrade`` works from any working directory.
"""

from __future__ import annotations

import os
from pathlib import Path

from qc_stream.errors import StorageError

PACKAGE_ROOT = Path(__file__).resolve().parents[2]


def migrations_dir() -> Path:
    """``QC_MIGRATIONS_DIR``, else the checkout's migrations/, else the installed wheel's copy."""
    from qc_stream.paths import shipped_migrations_dir

    override = os.environ.get("QC_MIGRATIONS_DIR")
    path = Path(override) if override else shipped_migrations_dir()
    if not (path / "env.py").is_file():
        raise StorageError(f"Alembic migrations not found at {path} (set QC_MIGRATIONS_DIR)")
    return path


def _config(engine):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    cfg.attributes["engine"] = engine
    return cfg


def _run(url: str, fn) -> None:
    from alembic.util.exc import CommandError
    from sqlalchemy.exc import DBAPIError

    from qc_stream.storage.db import describe_db_error, make_engine

    engine = make_engine(url)
    try:
        with engine.begin() as connection:
            cfg = _config(engine)
            cfg.attributes["connection"] = connection
            fn(cfg)
    except CommandError as e:
        raise StorageError(f"migration failed: {str(e).splitlines()[0]}") from None
    except DBAPIError as e:
        raise StorageError(f"migration failed: {describe_db_error(e)}") from e
    finally:
        engine.dispose()


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the schema at ``url`` up to ``revision`` (default: the newest)."""
    from alembic import command

    _run(url, lambda cfg: command.upgrade(cfg, revision))


def downgrade(url: str, revision: str) -> None:
    """Take the schema at ``url`` down to ``revision`` (``base`` removes every table)."""
    from alembic import command

    _run(url, lambda cfg: command.downgrade(cfg, revision))


def current(url: str) -> str | None:
    """The revision the database at ``url`` is at, or None for an empty (unmigrated) database."""
    from alembic.runtime.migration import MigrationContext

    from qc_stream.storage.db import make_engine

    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


def head() -> str:
    """The newest revision in ``migrations/``."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_config(None)).get_current_head()
