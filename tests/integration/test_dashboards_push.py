"""`qc-stream dashboards push` against a stand-in for Grafana's HTTP API.

There is no Grafana on this machine (and none can be installed), so a small ``http.server`` on
127.0.0.1 plays the part of the few endpoints the push uses (/api/health, /api/folders,
/api/datasources, /api/dashboards/db) with Grafana's status codes: 401 for a bad token, 403 for a
token without the right role, 404 for a missing folder or datasource, 412 when a dashboard exists and
``overwrite`` is false. It records every request, so the tests check what the push sends, that a
second push updates instead of duplicating, and the one-line errors. The real grafana-client talks to
it over real HTTP.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from qc_stream.dashboards.build import build_all, write_dashboards
from qc_stream.dashboards.push import GrafanaPusher, datasource_payload
from qc_stream.dashboards.workers import PROMETHEUS_UID
from qc_stream.dashboards.workers import UID as WORKERS_UID
from qc_stream.errors import ConfigError, QcError

GOOD = "good-token"
VIEWER = "viewer-token"  # valid, but may only read
DB_URL = "postgresql://qc_grafana:s3cret@db.example:5433/qc"


class FakeGrafana:
    """State and request log of the stand-in Grafana; ``prefix`` is where its API lives."""

    def __init__(self, prefix: str = ""):
        self.prefix = prefix
        self.requests: list[tuple[str, str, dict | None]] = []
        self.folders: dict[str, dict] = {}
        self.datasources: dict[str, dict] = {}
        self.dashboards: dict[str, dict] = {}
        self._next_id = 1

    def new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def handle(self, method: str, path: str, body: dict | None, auth: str) -> tuple[int, dict]:
        self.requests.append((method, path, body))
        if not path.startswith(self.prefix + "/api/"):
            return 404, {"message": "Not found"}
        path = path[len(self.prefix) :]
        if (method, path) == ("GET", "/api/health"):
            return 200, {"commit": "fake", "database": "ok", "version": "11.3.0"}
        if auth not in (f"Bearer {GOOD}", f"Bearer {VIEWER}"):
            return 401, {"message": "invalid API key"}
        if method != "GET" and auth == f"Bearer {VIEWER}":
            return 403, {"message": "You'll need additional permissions to perform this action."}
        parts = path.strip("/").split("/")
        if parts[:2] == ["api", "folders"]:
            return self.folder(method, parts[2:], body)
        if parts[:2] == ["api", "datasources"]:
            return self.datasource(method, parts[2:], body)
        if (method, parts) == ("POST", ["api", "dashboards", "db"]):
            return self.dashboard(body)
        return 404, {"message": "Not found"}

    def folder(self, method, rest, body):
        if method == "GET" and len(rest) == 1:
            found = self.folders.get(rest[0])
            return (200, found) if found else (404, {"message": "folder not found"})
        if method == "POST" and not rest:
            if body["uid"] in self.folders:
                return 409, {"message": "a folder with the same uid already exists"}
            self.folders[body["uid"]] = {
                "id": self.new_id(),
                "uid": body["uid"],
                "title": body["title"],
                "version": 1,
            }
            return 200, self.folders[body["uid"]]
        if method == "PUT" and len(rest) == 1 and rest[0] in self.folders:
            self.folders[rest[0]]["title"] = body["title"]
            return 200, self.folders[rest[0]]
        return 404, {"message": "Not found"}

    def datasource(self, method, rest, body):
        if rest[:1] == ["uid"] and len(rest) == 2:
            uid = rest[1]
            if uid not in self.datasources:
                return 404, {"message": "Data source not found"}
            if method == "GET":
                return 200, self.datasources[uid]
            if method == "PUT":
                self.datasources[uid] = {**body, "id": self.datasources[uid]["id"]}
                return 200, {"message": "Datasource updated", "datasource": self.datasources[uid]}
        if method == "POST" and not rest:
            if body["uid"] in self.datasources or any(
                d["name"] == body["name"] for d in self.datasources.values()
            ):
                return 409, {"message": "data source with the same name already exists"}
            self.datasources[body["uid"]] = {**body, "id": self.new_id()}
            return 200, {"message": "Datasource added", "datasource": self.datasources[body["uid"]]}
        return 404, {"message": "Not found"}

    def dashboard(self, body):
        dashboard, uid = body["dashboard"], body["dashboard"]["uid"]
        if body.get("folderUid") not in self.folders:
            return 400, {"message": "folder not found"}
        current = self.dashboards.get(uid)
        if current and not body.get("overwrite"):
            return 412, {
                "message": "A dashboard with the same uid already exists",
                "status": "name-exists",
            }
        version = current["version"] + 1 if current else 1
        self.dashboards[uid] = {
            "dashboard": dashboard,
            "folderUid": body["folderUid"],
            "version": version,
        }
        return 200, {
            "id": self.new_id(),
            "uid": uid,
            "status": "success",
            "version": version,
            "url": f"/d/{uid}",
        }


@pytest.fixture
def grafana():
    """A running stand-in Grafana: yields ``(url, state)``."""
    state = FakeGrafana()

    class Handler(BaseHTTPRequestHandler):
        def _serve(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length)) if length else None
            status, answer = state.handle(
                self.command, self.path.split("?")[0], body, self.headers.get("Authorization", "")
            )
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_DELETE = _serve

        def log_message(self, *args):  # keep pytest output clean
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", state
    server.shutdown()
    server.server_close()


def _push(url: str, token: str = GOOD):
    return GrafanaPusher(url, token, timeout_s=5).push(build_all(), datasource_payload(DB_URL))


def _writes(state: FakeGrafana) -> list[tuple[str, str]]:
    return [(m, p) for m, p, _ in state.requests if m != "GET"]


def test_first_push_creates_folder_datasource_and_every_dashboard(grafana):
    url, state = grafana
    report = _push(url)

    built = build_all()
    assert report.folder == "created" and report.datasource == "created"
    assert report.dashboards == {d["uid"]: "created" for d in built}
    assert _writes(state) == [("POST", "/api/folders"), ("POST", "/api/datasources")] + [
        ("POST", "/api/dashboards/db")
    ] * len(built)

    assert state.folders["qc-stream"]["title"] == "qc-stream"
    ds = state.datasources["qc-stream-pg"]
    assert (ds["type"], ds["url"], ds["user"]) == (
        "grafana-postgresql-datasource",
        "db.example:5433",
        "qc_grafana",
    )
    assert ds["jsonData"]["database"] == "qc" and ds["secureJsonData"] == {"password": "s3cret"}

    posts = [body for m, p, body in state.requests if p == "/api/dashboards/db"]
    assert all(b["overwrite"] is True and b["folderUid"] == "qc-stream" for b in posts)
    assert {uid: d["dashboard"] for uid, d in state.dashboards.items()} == {
        d["uid"]: d for d in built
    }
    # every SQL panel points at the datasource the push created; the workers dashboard reads the
    # Prometheus datasource, which Grafana provisioning creates (the push does not)
    for d in built:
        expected = PROMETHEUS_UID if d["uid"] == WORKERS_UID else "qc-stream-pg"
        assert {p["datasource"]["uid"] for p in d["panels"]} == {expected}, d["uid"]


def test_second_push_updates_in_place_without_duplicates(grafana):
    url, state = grafana
    _push(url)
    state.requests.clear()
    report = _push(url)

    assert report.folder == "updated" and report.datasource == "updated"
    assert set(report.dashboards.values()) == {"updated"}
    # nothing is created twice: the folder is only read, the datasource is PUT by uid
    assert ("POST", "/api/folders") not in _writes(state)
    assert ("POST", "/api/datasources") not in _writes(state)
    assert ("PUT", "/api/datasources/uid/qc-stream-pg") in _writes(state)
    assert len(state.folders) == 1 and len(state.datasources) == 1
    assert len(state.dashboards) == len(build_all())
    assert {d["version"] for d in state.dashboards.values()} == {2}


def test_bad_token_is_one_clear_error_and_writes_nothing(grafana):
    url, state = grafana
    with pytest.raises(QcError, match=r"rejected the credentials \(401 Unauthorized.*--token"):
        _push(url, token="wrong")
    assert _writes(state) == [] and not state.dashboards


def test_token_without_permission_says_which_role_it_needs(grafana):
    url, state = grafana
    with pytest.raises(QcError, match=r"403 Forbidden while creating the folder.*Admin"):
        _push(url, token=VIEWER)
    assert not state.folders


def test_closed_port_is_a_clear_error():
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(
        QcError, match=rf"cannot reach Grafana at http://127.0.0.1:{port}: connection refused"
    ):
        _push(f"http://127.0.0.1:{port}")


def test_url_that_is_not_grafana_is_a_clear_error(grafana):
    url, state = grafana
    state.prefix = "/grafana"  # the API lives under a sub-path; the URL given misses it
    with pytest.raises(QcError, match=r"no Grafana API at .*404.*check --url"):
        _push(url)
    assert [p for _, p, _ in state.requests] == ["/api/health"]


def test_grafana_under_a_sub_path_works(grafana):
    url, state = grafana
    state.prefix = "/grafana"
    _push(url + "/grafana")
    assert state.requests[0][1] == "/grafana/api/health" and len(state.dashboards) == len(
        build_all()
    )


@pytest.mark.parametrize("bad", ["grafana:3000", "ftp://grafana", "http://", "http://host:99999"])
def test_malformed_url_is_a_config_error(bad):
    with pytest.raises(ConfigError, match="not a Grafana URL"):
        GrafanaPusher(bad, GOOD)


def test_sqlite_database_is_refused_for_the_datasource():
    with pytest.raises(ConfigError, match="Grafana needs a Postgres URL"):
        datasource_payload("sqlite:///qc.db")


def _cli(*args: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    import os

    env = {**os.environ, "QC_GRAFANA_DB_URL": DB_URL, **(env_extra or {})}
    env.pop("QC_GRAFANA_TOKEN", None)
    return subprocess.run(
        [
            sys.executable,
            "-c",
            "from qc_stream.cli.main import run; run()",
            "dashboards",
            "push",
            *args,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def test_cli_pushes_a_built_folder_and_reports_each_item(grafana, tmp_path: Path):
    url, state = grafana
    write_dashboards(tmp_path)
    done = _cli("--url", url, "--token", GOOD, "--dir", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert "datasource 'qc-stream Postgres': created" in done.stdout
    assert done.stdout.count(": created") == 2 + len(build_all())
    assert set(state.dashboards) == {d["uid"] for d in build_all()}


def test_cli_no_datasource_leaves_datasources_alone(grafana):
    url, state = grafana
    done = _cli("--url", url, "--token", GOOD, "--no-datasource", "--folder", "Quality")
    assert done.returncode == 0, done.stderr
    assert not state.datasources and not [p for _, p, _ in state.requests if "datasources" in p]
    assert state.folders["qc-stream"]["title"] == "Quality"


def test_cli_bad_token_prints_one_line_and_exits_2(grafana):
    url, _ = grafana
    done = _cli("--url", url, "--token", "wrong")
    assert done.returncode == 2
    assert done.stderr.startswith("error: Grafana at") and done.stderr.count("\n") == 1
    assert "Traceback" not in done.stderr
