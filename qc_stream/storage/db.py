"""Database engines for Postgres (production) and SQLite (embedded demo).

``make_engine`` turns a URL into a ready engine or raises ``StorageError`` with one readable line
(bad URL, unsupported backend, server unreachable). It never creates tables: the schema comes only
from the Alembic revisions in ``migrations/`` (see ``qc_stream.storage.migrate``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, OperationalError, SQLAlchemyError

from qc_stream.errors import StorageError

# Writers on SQLite wait this long for the file lock instead of failing with "database is locked".
SQLITE_BUSY_TIMEOUT_MS = 30_000
PG_CONNECT_TIMEOUT_S = 5
T = TypeVar("T")
log = logging.getLogger(__name__)


def parse_url(url: str | URL) -> URL:
    """Parse and normalise a database URL (``postgres://`` and ``postgresql://`` use psycopg 3)."""
    if isinstance(url, URL):
        parsed = url
    else:
        text = str(url).strip()
        if text.startswith("postgres://"):
            text = "postgresql://" + text.removeprefix("postgres://")
        try:
            parsed = make_url(text)
        except ArgumentError:
            raise StorageError(
                f"not a database URL: {text!r} (e.g. postgresql+psycopg://user@host:5432/db or sqlite:///qc.db)"
            ) from None
    backend = parsed.get_backend_name()
    if backend == "postgresql":
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        elif parsed.drivername != "postgresql+psycopg":
            raise StorageError(
                f"unsupported Postgres driver {parsed.drivername!r}: use postgresql+psycopg://"
            )
    elif backend == "sqlite":
        if parsed.drivername != "sqlite":
            raise StorageError(
                f"unsupported SQLite driver {parsed.drivername!r}: use sqlite:///PATH"
            )
    else:
        raise StorageError(
            f"unsupported database {backend!r}: use postgresql+psycopg:// or sqlite:///"
        )
    return parsed


def safe_url(url: str | URL) -> str:
    """The URL as text with any password masked, for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparseable URL>"


def make_engine(url: str | URL, *, check: bool = True, echo: bool = False) -> Engine:
    """An engine for ``url``; with ``check`` it connects once so a bad server fails here, readably."""
    parsed = parse_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = _sqlite_engine(parsed, echo)
    else:
        connect_args = {}
        if "connect_timeout" not in parsed.query:
            connect_args["connect_timeout"] = PG_CONNECT_TIMEOUT_S
        engine = create_engine(parsed, echo=echo, pool_pre_ping=True, connect_args=connect_args)
    if check:
        try:
            with engine.connect():
                pass
        except DBAPIError as e:
            engine.dispose()
            raise StorageError(
                f"cannot connect to database {safe_url(parsed)}: {describe_db_error(e)}"
            ) from None
    return engine


def _sqlite_engine(url: URL, echo: bool) -> Engine:
    database = url.database or ""
    in_memory = database in ("", ":memory:") or database.startswith("file::memory:")
    if not in_memory:
        path = Path(database).expanduser()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StorageError(
                f"cannot create the folder for SQLite database {database!r}: {e.strerror}"
            ) from None
    engine = create_engine(url, echo=echo)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record) -> None:
        # Let SQLAlchemy (not the sqlite3 module) emit BEGIN, so writers can ask for BEGIN IMMEDIATE.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        if not in_memory:
            # WAL: readers never block the writer; several processes can share the file.
            cur.execute("PRAGMA journal_mode = WAL")
            cur.execute("PRAGMA synchronous = NORMAL")
        cur.execute("PRAGMA foreign_keys = ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # BEGIN IMMEDIATE takes the write lock up front (waiting up to busy_timeout) instead of
        # failing when a deferred read transaction later tries to write after another process did.
        mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")

    return engine


@contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """A transaction meant to write; on SQLite it holds the write lock from the start."""
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            conn = conn.execution_options(sqlite_begin="IMMEDIATE")
        with conn.begin():
            yield conn


def is_transient(error: DBAPIError) -> bool:
    """Deadlock / serialization failure (Postgres) or a lock timeout (SQLite): worth one more try."""
    code = getattr(getattr(error, "orig", None), "sqlstate", None)
    if code in ("40P01", "40001"):
        return True
    return isinstance(error, OperationalError) and "database is locked" in str(error.orig)


def is_connection_error(error: BaseException) -> bool:
    """The database is unreachable or the connection broke (server down, restarting, network):
    worth retrying until it is back. Looks through ``StorageError`` wrappers at the cause."""
    import sqlite3

    import psycopg
    from sqlalchemy.exc import InterfaceError
    from sqlalchemy.exc import TimeoutError as PoolTimeout

    seen: set[int] = set()
    e: BaseException | None = error
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OperationalError) and isinstance(e.orig, sqlite3.Error):
            # SQLite reports a missing table as OperationalError too: only a busy or unreadable
            # file is worth waiting for.
            text = str(e.orig).lower()
            return any(s in text for s in ("locked", "busy", "unable to open", "disk i/o"))
        if isinstance(e, (OperationalError, InterfaceError, PoolTimeout)):
            return True
        if isinstance(e, DBAPIError) and e.connection_invalidated:
            return True
        if isinstance(e, (psycopg.OperationalError, psycopg.InterfaceError)):
            return True
        e = e.__cause__ or e.__context__
    return False


def retry_transient(fn: Callable[[], T], attempts: int = 5) -> T:
    """Run ``fn`` again when the database reports a deadlock or lock timeout; else raise StorageError."""
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except DBAPIError as e:
            if attempt < attempts and is_transient(e):
                log.info("retrying after a transient database error: %s", describe_db_error(e))
                time.sleep(0.05 * attempt)
                continue
            if isinstance(e, OperationalError):
                raise StorageError(f"database error: {describe_db_error(e)}") from e
            raise
    raise AssertionError("unreachable")


@contextmanager
def storage_errors(action: str | None = None) -> Iterator[None]:
    """Turn database failures into a one-line ``StorageError``: "could not <action>: <driver
    message>" ("database error: ..." without an action), hinting at `qc-stream db upgrade` when a
    table is missing."""
    what = f"could not {action}" if action else "database error"
    try:
        yield
    except DBAPIError as e:
        text = describe_db_error(e)
        hint = (
            " (run `qc-stream db upgrade`)"
            if "no such table" in text or "does not exist" in text
            else ""
        )
        raise StorageError(f"{what}: {text}{hint}") from e
    except SQLAlchemyError as e:
        raise StorageError(f"{what}: {e.__class__.__name__}") from e


def describe_db_error(error: DBAPIError) -> str:
    """The driver's message, first line only (drivers add multi-line hints)."""
    orig = getattr(error, "orig", None) or error
    lines = [ln.strip() for ln in str(orig).strip().splitlines() if ln.strip()]
    return lines[0] if lines else type(orig).__name__
