"""Release steps the Kubernetes manifests rely on, against real parts.

- `qc-stream db wait` (the workers' init container): fails with one line while the schema is behind,
  returns once the release's migration (`db upgrade`) ran. Real Postgres.
- The registry listener's /healthz (its liveness probe): beats per poll, 503 when the loop is held,
  200 again after. Real embedded broker, real health server over HTTP.
"""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request

from typer.testing import CliRunner

from qc_stream.cli.cmd_retrain import _listener_beat
from qc_stream.cli.main import app
from qc_stream.observability.server import HealthServer
from qc_stream.registry.listener import RegistryListener
from qc_stream.storage import migrate


def status(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except (urllib.error.URLError, ConnectionError):
        return 0  # not listening (yet)


def until(pred, timeout_s: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return False


def test_db_wait_refuses_an_old_schema_and_passes_after_the_upgrade(pg_url):
    runner = CliRunner()
    behind = runner.invoke(app, ["db", "wait", "--timeout-s", "0", "--url", pg_url])
    assert behind.exit_code == 1
    assert "at revision base, not at " + migrate.head() in behind.output
    assert "db upgrade" in behind.output
    migrate.upgrade(pg_url)
    ready = runner.invoke(app, ["db", "wait", "--timeout-s", "5", "--url", pg_url])
    assert ready.exit_code == 0, ready.output
    assert migrate.head() in ready.output


def test_db_wait_keeps_waiting_while_the_database_is_unreachable():
    result = CliRunner().invoke(
        app, ["db", "wait", "--timeout-s", "0.5", "--url", "postgresql+psycopg://qc@127.0.0.1:1/qc"]
    )
    assert result.exit_code == 1 and "unreachable" in result.output


def test_registry_listener_liveness_follows_its_poll_loop(broker):
    release = threading.Event()
    refreshes = []

    def on_change() -> None:
        refreshes.append(time.monotonic())
        if len(refreshes) == 1:
            release.wait(30)  # the start-up refresh holds the loop (a hung refresh)

    with HealthServer(host="127.0.0.1", port=0, stale_after_s=0.5) as health:
        listener = RegistryListener(
            broker.bootstrap, on_change, debounce_s=0.2, heartbeat=_listener_beat(health)
        )
        thread = threading.Thread(target=listener.run, daemon=True)
        thread.start()
        try:
            assert listener.ready.wait(20)
            assert until(lambda: refreshes)
            assert until(lambda: status(health.port, "/healthz") == 503)  # loop held
            release.set()
            assert until(lambda: status(health.port, "/healthz") == 200)  # beating again
            assert status(health.port, "/readyz") == 200
        finally:
            release.set()
            listener.stop()
            thread.join(10)
    assert not thread.is_alive()


def run_camera(broker, *, fps: str, stale_s: str):
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, QC_KAFKA_BOOTSTRAP=broker.bootstrap, QC_HEALTH_STALE_S=stale_s)
    cmd = [sys.executable, "-m", "qc_stream", "camera", "--source", "synthetic", "--product",
           "wood", "--fps", fps, "--count", "1000", "--size", "64", "--health-port", str(port)]  # fmt: skip
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE), port


def test_camera_liveness_holds_while_sending_and_fails_when_the_loop_stalls(broker):
    # Sending 5 frames/s: the loop reports every second, /healthz stays 200 past the 1 s limit.
    camera, port = run_camera(broker, fps="5", stale_s="1")
    try:
        assert until(lambda: status(port, "/readyz") == 200)
        time.sleep(2.5)
        assert status(port, "/healthz") == 200
    finally:
        camera.terminate()
        camera.wait(20)
    # One frame every 50 s stands in for a source that stopped delivering: the loop is stuck in
    # its wait, so after the 1 s limit /healthz answers 503 (the kubelet would restart it).
    camera, port = run_camera(broker, fps="0.02", stale_s="1")
    try:
        assert until(lambda: status(port, "/readyz") == 200)
        assert until(lambda: status(port, "/healthz") == 503)
    finally:
        camera.terminate()
        camera.wait(20)
