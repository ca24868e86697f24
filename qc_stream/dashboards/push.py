"""Push the folder, the PostgreSQL datasource and the dashboards through Grafana's HTTP API.

Idempotent: everything has a stable uid; the folder and datasource are looked up by uid and created
or updated, dashboards are posted with ``overwrite: true``. A second push updates, never duplicates.
Every failure a user can cause (bad URL, bad token, server down, missing permission) becomes one
``QcError`` line.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlparse

import niquests
from grafana_client import GrafanaApi
from grafana_client.client import GrafanaClientError, GrafanaException, GrafanaTimeoutError
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from qc_stream.dashboards.model import DATASOURCE_NAME, DATASOURCE_TYPE, DATASOURCE_UID, FOLDER_UID
from qc_stream.errors import ConfigError, QcError

T = TypeVar("T")


@dataclass
class PushReport:
    folder: str = ""  # "created" | "updated"
    datasource: str = ""
    dashboards: dict[str, str] = field(default_factory=dict)  # uid -> "created" | "updated"


def datasource_payload(db_url: str) -> dict[str, Any]:
    """The Grafana datasource for a Postgres URL (the read-only role Grafana should log in as)."""
    try:
        url = make_url(db_url)
    except ArgumentError:
        raise ConfigError(
            f"not a database URL for Grafana: {db_url!r} (e.g. postgresql://qc_grafana@db:5432/qc)"
        ) from None
    if url.get_backend_name() != "postgresql" or not url.host or not url.database:
        raise ConfigError(
            "Grafana needs a Postgres URL with host and database (set QC_GRAFANA_DB_URL, "
            f"e.g. postgresql://qc_grafana:secret@db:5432/qc); got {url.render_as_string(hide_password=True)!r}"
        )
    payload: dict[str, Any] = {
        "uid": DATASOURCE_UID,
        "name": DATASOURCE_NAME,
        "type": DATASOURCE_TYPE,
        "access": "proxy",
        "url": f"{url.host}:{url.port or 5432}",
        "user": url.username or "",
        "isDefault": False,
        "jsonData": {
            "database": url.database,
            "sslmode": str(url.query.get("sslmode", "disable")),
            "postgresVersion": 1500,
            "timescaledb": False,
            "maxOpenConns": 10,
        },
    }
    if url.password:
        payload["secureJsonData"] = {"password": url.password}
    return payload


def _check_url(url: str) -> str:
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ConfigError(f"not a Grafana URL: {url!r} (e.g. http://grafana:3000)")
    try:
        _ = parsed.port  # raises ValueError on a bad port
    except ValueError:
        raise ConfigError(f"not a Grafana URL: {url!r} (bad port)") from None
    # grafana-client appends "api" to the path: keep a sub-path ("/grafana") a folder.
    return url if url.endswith("/") else url + "/"


class GrafanaPusher:
    def __init__(self, url: str, token: str | None, timeout_s: float = 10.0):

        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        if not token and not urlparse(url).password:
            raise ConfigError(
                "no Grafana credentials: pass --token (or QC_GRAFANA_TOKEN), or user:password in the URL"
            )
        self.api = GrafanaApi.from_url(_check_url(url), credential=token or None, timeout=timeout_s)

    # --- error translation -------------------------------------------------------------------------
    def _call(self, what: str, fn: Callable[..., T], *args, **kwargs) -> T:

        try:
            return fn(*args, **kwargs)
        except GrafanaTimeoutError:
            raise QcError(
                f"Grafana at {self.url} did not answer within {self.timeout_s:g} s ({what})"
            ) from None
        except GrafanaClientError as e:
            if e.status_code == 401:
                raise QcError(
                    f"Grafana at {self.url} rejected the credentials (401 Unauthorized while {what}); "
                    "check --token / QC_GRAFANA_TOKEN"
                ) from None
            if e.status_code == 403:
                raise QcError(
                    f"the Grafana token may not do this (403 Forbidden while {what}); "
                    "it needs the Admin role (datasources) or Editor (folders, dashboards)"
                ) from None
            raise QcError(f"Grafana refused {what}: {e.status_code} {_message(e)}") from None
        except GrafanaException as e:
            raise QcError(f"Grafana failed while {what}: {_message(e)}") from None
        except (
            ValueError
        ):  # a non-JSON answer (niquests' JSONDecodeError is one): not Grafana's API
            raise QcError(
                f"no Grafana API at {self.url} (non-JSON answer while {what}); check --url"
            ) from None
        except niquests.exceptions.RequestException as e:
            raise QcError(f"cannot reach Grafana at {self.url}: {_reason(e)}") from None

    def _exists(self, what: str, fn: Callable[..., T], *args) -> T | None:
        """``fn(*args)``, or None when Grafana answers 404 (a lookup that found nothing)."""
        try:
            return self._call(what, _raw(fn), *args)
        except _NotFound:
            return None

    # --- steps ------------------------------------------------------------------------------------
    def check_server(self) -> str:
        """GET /api/health: is this Grafana at all? Returns its version."""
        health = self._exists("checking /api/health", self.api.client.GET, "/health")
        if health is None:
            raise QcError(
                f"no Grafana API at {self.url} (GET /api/health answered 404); check --url"
            )
        if not isinstance(health, dict) or "database" not in health:
            raise QcError(
                f"no Grafana API at {self.url} (GET /api/health is not Grafana's answer); check --url"
            )
        return str(health.get("version", "?"))

    def ensure_folder(self, uid: str, title: str) -> str:
        current = self._exists("reading the folder", self.api.folder.get_folder, uid)
        if current is None:
            self._call("creating the folder", self.api.folder.create_folder, title, uid=uid)
            return "created"
        if current.get("title") != title:
            self._call(
                "renaming the folder",
                self.api.folder.update_folder,
                uid,
                title=title,
                overwrite=True,
            )
        return "updated"

    def ensure_datasource(self, payload: dict[str, Any]) -> str:
        uid = payload["uid"]
        current = self._exists(
            "reading the datasource", self.api.datasource.get_datasource_by_uid, uid
        )
        if current is None:
            self._call("creating the datasource", self.api.datasource.create_datasource, payload)
            return "created"
        self._call(
            "updating the datasource", self.api.datasource.update_datasource_by_uid, uid, payload
        )
        return "updated"

    def put_dashboard(self, dashboard: dict[str, Any], folder_uid: str) -> str:
        body = dict(dashboard)
        body.pop("id", None)  # Grafana matches on uid; a foreign numeric id would be refused
        body.pop("version", None)
        answer = self._call(
            f"saving dashboard {dashboard['uid']!r}",
            self.api.dashboard.update_dashboard,
            {
                "dashboard": body,
                "folderUid": folder_uid,
                "overwrite": True,
                "message": "qc-stream dashboards push",
            },
        )
        return "created" if isinstance(answer, dict) and answer.get("version") == 1 else "updated"

    def push(
        self,
        dashboards: list[dict[str, Any]],
        datasource: dict[str, Any] | None,
        folder_title: str = "qc-stream",
        folder_uid: str = FOLDER_UID,
    ) -> PushReport:
        report = PushReport()
        self.check_server()
        report.folder = self.ensure_folder(folder_uid, folder_title)
        if datasource is not None:
            report.datasource = self.ensure_datasource(datasource)
        for dashboard in dashboards:
            report.dashboards[dashboard["uid"]] = self.put_dashboard(dashboard, folder_uid)
        return report


class _NotFound(Exception):
    pass


def _raw(fn: Callable[..., T]) -> Callable[..., T]:
    """Wrap ``fn`` so a 404 surfaces as ``_NotFound`` (not an error for a lookup)."""

    def run(*args):
        try:
            return fn(*args)
        except GrafanaClientError as e:
            if e.status_code == 404:
                raise _NotFound() from None
            raise

    return run


def _message(e: Exception) -> str:
    response = getattr(e, "response", None)
    if isinstance(response, dict) and response.get("message"):
        return str(response["message"])
    return str(getattr(e, "message", "") or e).splitlines()[0][:200]


def _reason(e: Exception) -> str:
    text = str(e)
    for marker in (
        "Connection refused",
        "Name or service not known",
        "No address associated",
        "nodename nor servname",
        "timed out",
        "certificate verify failed",
    ):
        if marker.lower() in text.lower():
            return marker.lower()
    return type(e).__name__ + (": " + text.splitlines()[0][:160] if text else "")
