"""Alembic migrations on empty databases, both backends, through the API and the CLI."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from qc_stream.errors import StorageError
from qc_stream.storage import migrate
from qc_stream.storage.db import make_engine
from qc_stream.storage.orm import Base

TABLES = {
    "defect_types",
    "model_versions",
    "inspections",
    "defect_counts",
    "frame_ids",
    "camera_minute",
    "prompt_minute",
    "camera_hour",
    "prompt_hour",
    "defect_counts_hour",
    "retained_frames",
    "reviews",
    "users",
    "defect_proposals",
}
# Day and default partitions of inspections / frame_ids (Postgres) are not tables of their own.
PARTITION = re.compile(r"_(p\d{8}|default)$")
QC_STREAM = Path(sys.executable).with_name("qc-stream")


@pytest.fixture(params=["postgres", "sqlite"])
def db_url(request):
    return request.getfixturevalue("pg_url" if request.param == "postgres" else "sqlite_url")


def _tables(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        names = set(inspect(engine).get_table_names()) - {"alembic_version"}
        return {n for n in names if not PARTITION.search(n)}
    finally:
        engine.dispose()


def test_upgrade_and_downgrade_on_an_empty_database(db_url):
    assert _tables(db_url) == set()
    assert migrate.current(db_url) is None

    migrate.upgrade(db_url)
    assert _tables(db_url) == TABLES
    assert migrate.current(db_url) == migrate.head()

    migrate.downgrade(db_url, "base")
    assert _tables(db_url) == set()
    assert migrate.current(db_url) is None

    migrate.upgrade(db_url)  # and back up again: revisions are repeatable
    assert _tables(db_url) == TABLES


def _not_a_partition(name, type_, _parents) -> bool:
    return not (type_ == "table" and PARTITION.search(name or ""))


def test_migrated_schema_matches_the_orm(db_url):
    migrate.upgrade(db_url)
    engine = make_engine(db_url)
    with engine.connect() as conn:
        diff = compare_metadata(
            MigrationContext.configure(
                conn, opts={"compare_type": True, "include_name": _not_a_partition}
            ),
            Base.metadata,
        )
    engine.dispose()
    assert diff == []


def test_unknown_revision_is_a_storage_error(sqlite_url):
    with pytest.raises(StorageError, match="nosuch"):
        migrate.upgrade(sqlite_url, "nosuch")


def _cli(args, url, cwd):
    env = {**os.environ, "QC_DATABASE_URL": url}
    return subprocess.run(
        [str(QC_STREAM), *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=120
    )


def test_cli_upgrade_current_downgrade_from_any_directory(tmp_path, pg_url):
    sqlite_url = f"sqlite:///{tmp_path / 'nested' / 'qc.db'}"
    for url in (sqlite_url, pg_url):
        up = _cli(["db", "upgrade"], url, tmp_path)
        assert up.returncode == 0, up.stderr
        assert f"at revision {migrate.head()}" in up.stdout
        cur = _cli(["db", "current"], url, tmp_path)
        assert cur.returncode == 0 and f"at revision {migrate.head()}" in cur.stdout
        down = _cli(["db", "downgrade", "base"], url, tmp_path)
        assert down.returncode == 0 and "at revision base" in down.stdout
        assert _tables(url) == set()


@pytest.mark.parametrize(
    "url, words",
    [
        ("garbage", "not a database URL"),
        ("mysql://root@127.0.0.1/test", "unsupported database"),
        ("postgresql+psycopg://postgres@127.0.0.1:1/test", "Connection refused"),
        ("postgresql+psycopg://postgres:secret@127.0.0.1:5432/qc_no_such_db", "does not exist"),
    ],
)
def test_cli_bad_database_urls_give_one_line_and_non_zero_exit(tmp_path, url, words):
    proc = _cli(["db", "upgrade"], url, tmp_path)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error:") and words in lines[0]
    assert "Traceback" not in proc.stderr and "secret" not in proc.stderr


def test_cli_unknown_revision_gives_one_line(tmp_path, sqlite_url):
    proc = _cli(["db", "upgrade", "--revision", "nosuch"], sqlite_url, tmp_path)
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines() == [
        "error: migration failed: Can't locate revision identified by 'nosuch'"
    ]
