"""Shared fixtures: real Postgres, Redis and the embedded Kafka-protocol broker of this machine.

Each test session gets its own Postgres database and Redis key prefix, so runs never see each
other's data. Set QC_TEST_PG_ADMIN_URL / QC_TEST_REDIS_URL to point elsewhere; a server that is not
reachable there is replaced by a throwaway one for the session (tests/support/session_servers.py).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid

import pytest

from tests.support.session_servers import (
    DEFAULT_PG_ADMIN_URL,
    DEFAULT_REDIS_URL,
    SessionServer,
    postgres_client_onto_path,
    postgres_for_session,
    redis_for_session,
)

# Before qc_stream is imported (its default models folder is read at import; nothing above imports
# it): the default models folder, $XDG_DATA_HOME/qc-stream/models, is a session temp folder, so no
# test (nor a worker or CLI it starts) writes into ~/.local/share or the repository's models/.
_DATA_HOME = tempfile.mkdtemp(prefix="qc-test-data-")
os.environ["XDG_DATA_HOME"] = _DATA_HOME
os.environ.pop("QC_MODELS_DIR", None)

# Final values are set in pytest_sessionstart (a throwaway server's URL when the given one is down).
PG_ADMIN_URL = os.environ.get("QC_TEST_PG_ADMIN_URL", DEFAULT_PG_ADMIN_URL)
REDIS_URL = os.environ.get("QC_TEST_REDIS_URL", DEFAULT_REDIS_URL)
_SESSION_SERVERS: list[SessionServer] = []
_HEADER: list[str] = []

# Small models on 2 cores: keep torch from oversubscribing.
os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session) -> None:
    """Settle which Postgres and Redis this session uses, before the header is printed."""
    global PG_ADMIN_URL, REDIS_URL
    if _SESSION_SERVERS:
        return
    pg = postgres_for_session(PG_ADMIN_URL)
    redis = redis_for_session(REDIS_URL)
    _SESSION_SERVERS.extend([pg, redis])
    PG_ADMIN_URL, REDIS_URL = pg.url, redis.url
    # Subprocesses (nested pytest runs, workers reading the env) see the same servers.
    os.environ["QC_TEST_PG_ADMIN_URL"] = PG_ADMIN_URL
    os.environ["QC_TEST_REDIS_URL"] = REDIS_URL
    _HEADER.extend(f"test servers: {s.describe()}" for s in _SESSION_SERVERS)
    psql_dir = postgres_client_onto_path()
    if psql_dir:
        _HEADER.append(f"test servers: psql not on PATH, using {psql_dir}/psql")


def pytest_report_header(config) -> list[str]:
    return _HEADER


def pytest_unconfigure(config) -> None:
    while _SESSION_SERVERS:
        _SESSION_SERVERS.pop().close()
    shutil.rmtree(_DATA_HOME, ignore_errors=True)


@pytest.fixture(scope="session")
def run_id() -> str:
    return uuid.uuid4().hex[:10]


def _create_pg_database(name: str) -> str:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)


def _drop_pg_database(name: str) -> None:
    from sqlalchemy import create_engine, text

    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def pg_url(run_id: str):
    """A fresh, empty Postgres database for one test (dropped afterwards)."""
    name = f"qc_test_{run_id}_{uuid.uuid4().hex[:6]}"
    url = _create_pg_database(name)
    yield url
    _drop_pg_database(name)


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'qc.db'}"


@pytest.fixture
def redis_url() -> str:
    return REDIS_URL


@pytest.fixture
def redis_prefix(run_id: str):
    """A unique key prefix; every key under it is deleted after the test."""
    import redis

    prefix = f"qctest:{run_id}:{uuid.uuid4().hex[:6]}:"
    yield prefix
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=prefix + "*"))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture(scope="session")
def broker():
    """One embedded tansu broker for the whole test session (memory storage).

    tansu keeps a group's first session timeout for its lifetime, so tests must use a unique app id
    (consumer group) each: see ``unique_app_id``.
    """
    from qc_stream.devtools.broker import EmbeddedBroker

    with EmbeddedBroker() as b:
        yield b


@pytest.fixture
def own_broker(request):
    """A broker of this test's own (memory storage): a test that counts what a worker reads sees
    nothing other tests left in the session broker's topics. A module that sets
    ``OWN_BROKER_PARTITIONS = N`` gets the qc.* topics created with N partitions."""
    from qc_stream.devtools.broker import EmbeddedBroker
    from qc_stream.wire.topics import ensure_topics

    partitions = getattr(request.module, "OWN_BROKER_PARTITIONS", None)
    with EmbeddedBroker() as b:
        if partitions:
            ensure_topics(b.bootstrap, partitions)
        yield b


@pytest.fixture
def untrained_models(tmp_path_factory, monkeypatch):
    """QC_MODELS_DIR with the shipped backbones and no prompt version, and the explicit
    QC_PROMPT_VERSION=untrained: workers on the tiny random backbone run seeded untrained prompts
    (the shipped prompts belong to another backbone; without the opt-in they would stop).
    Modules use it with ``pytestmark = pytest.mark.usefixtures("untrained_models")``."""
    from qc_stream.devtools.local import models_dir_without_prompts

    monkeypatch.setenv(
        "QC_MODELS_DIR", str(models_dir_without_prompts(tmp_path_factory.mktemp("models")))
    )
    monkeypatch.setenv("QC_PROMPT_VERSION", "untrained")


@pytest.fixture
def unique_app_id() -> str:
    return f"qc-test-{uuid.uuid4().hex[:8]}"
