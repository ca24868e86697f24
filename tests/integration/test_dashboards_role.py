"""deploy/grafana/readonly-role.sql gives Grafana a login that can read the dashboards' tables and nothing else.

Runs the file with the real psql against a migrated Postgres (a role name unique to the test, since
roles are shared by the whole server), then logs in as that role.
"""

from __future__ import annotations

import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from qc_stream.storage.migrate import upgrade

ROLE_SQL = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "readonly-role.sql"
TABLES = [
    "inspections",
    "defect_counts",
    "defect_types",
    "model_versions",
    "camera_minute",
    "prompt_minute",
]


def _psql(pg_url: str, *variables: str) -> subprocess.CompletedProcess:
    url = make_url(pg_url)
    libpq = f"postgresql://{url.username}@{url.host}:{url.port or 5432}/{url.database}"
    args = ["psql", libpq, "-X", "-q", "-f", str(ROLE_SQL)]
    for v in variables:
        args += ["-v", v]
    return subprocess.run(args, capture_output=True, text=True, timeout=60)


@pytest.fixture
def grafana_user(pg_url):
    assert shutil.which("psql"), "psql (the Postgres client) is needed to apply the role file"
    upgrade(pg_url)
    role = f"qc_grafana_{uuid.uuid4().hex[:8]}"
    yield role
    admin = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        if c.execute(text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": role}).first():
            c.execute(text(f'DROP OWNED BY "{role}"'))
            c.execute(text(f'DROP ROLE "{role}"'))
    admin.dispose()


def test_role_reads_the_dashboard_tables_and_cannot_write(pg_url, grafana_user):
    for _ in range(2):  # applying it again is fine
        done = _psql(pg_url, f"grafana_user={grafana_user}", "grafana_password=s3cret")
        assert done.returncode == 0, done.stderr

    engine = create_engine(make_url(pg_url).set(username=grafana_user, password="s3cret"))
    try:
        with engine.connect() as c:
            for table in TABLES:
                assert c.execute(text(f"SELECT count(*) FROM {table}")).scalar() == 0
            # the latency panels' function is callable by the role
            assert (
                c.execute(text("SELECT qc_latency_quantile(ARRAY[1, 1]::bigint[], 0.5)")).scalar()
                == 5.0
            )
        with engine.connect() as c, pytest.raises(DBAPIError, match="read-only transaction"):
            c.execute(text("DELETE FROM inspections"))
        with (
            engine.connect() as c,
            pytest.raises(DBAPIError, match="permission denied for table inspections"),
        ):
            # even with read-only switched off, the role has no write grant
            c.execute(text("SET default_transaction_read_only = off"))
            c.commit()  # the setting applies from the next transaction on
            c.execute(text("DELETE FROM inspections"))
        with (
            engine.connect() as c,
            pytest.raises(DBAPIError, match="permission denied for table alembic_version"),
        ):
            c.execute(text("SELECT * FROM alembic_version"))
    finally:
        engine.dispose()


def test_missing_password_stops_with_a_hint(pg_url, grafana_user):
    done = _psql(pg_url, f"grafana_user={grafana_user}")
    assert done.returncode != 0
    assert "grafana_password=SECRET" in done.stderr
