"""A small typed description of SQL dashboards and its rendering to Grafana dashboard JSON.

Plain frozen dataclasses instead of grafana-foundation-sdk: that SDK publishes every release under a
new version epoch (``1769699379!11.6.0``), which makes a stable pin awkward, and our dashboards need
only a handful of panel kinds. ``render`` emits the JSON model Grafana 10/11 stores
(schemaVersion 39); every uid and panel id is stable so a push or a provisioning reload updates in
place instead of duplicating.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

PanelType = Literal["timeseries", "barchart", "table", "stat", "state-timeline"]
QueryFormat = Literal["time_series", "table"]

# Grafana's plugin id for its built-in PostgreSQL datasource (the alias "postgres" also works).
DATASOURCE_TYPE = "grafana-postgresql-datasource"
DATASOURCE_UID = "qc-stream-pg"
DATASOURCE_NAME = "qc-stream Postgres"
FOLDER_UID = "qc-stream"
DASHBOARD_TAG = "qc-stream"
SCHEMA_VERSION = 39
GRID_WIDTH = 24


@dataclass(frozen=True)
class Panel:
    """One panel with one SQL query. ``key`` is a stable name used by tests and docs."""

    key: str
    title: str
    type: PanelType
    sql: str
    format: QueryFormat = "table"
    description: str = ""
    width: int = 12
    height: int = 8
    unit: str | None = None
    # Smallest GROUP BY bucket: the counts table is per minute, so finer buckets only add noise.
    min_interval: str | None = "1m"
    options: dict[str, Any] = field(default_factory=dict)
    custom: dict[str, Any] = field(default_factory=dict)  # fieldConfig.defaults.custom
    overrides: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True)
class Variable:
    """A query variable, multi-select with All. ``refresh_on_time``: re-query when the range changes."""

    name: str
    label: str
    sql: str
    refresh_on_time: bool = False


@dataclass(frozen=True)
class Annotation:
    name: str
    sql: str
    color: str = "purple"


@dataclass(frozen=True)
class Dashboard:
    uid: str
    title: str
    description: str
    variables: tuple[Variable, ...]
    panels: tuple[Panel, ...]
    annotations: tuple[Annotation, ...] = ()
    time_from: str = "now-6h"
    refresh: str = "30s"


def datasource_ref() -> dict[str, str]:
    return {"type": DATASOURCE_TYPE, "uid": DATASOURCE_UID}


def sql_target(sql: str, fmt: QueryFormat, ref_id: str = "A") -> dict[str, Any]:
    return {
        "refId": ref_id,
        "datasource": datasource_ref(),
        "editorMode": "code",
        "format": fmt,
        "rawQuery": True,
        "rawSql": sql,
    }


def _layout(panels: tuple[Panel, ...]) -> list[dict[str, int]]:
    """Left-to-right rows of 24 grid units; a panel that does not fit starts a new row."""
    positions, x, y, row_height = [], 0, 0, 0
    for p in panels:
        if x + p.width > GRID_WIDTH:
            x, y, row_height = 0, y + row_height, 0
        positions.append({"x": x, "y": y, "w": p.width, "h": p.height})
        x += p.width
        row_height = max(row_height, p.height)
    return positions


def render_panel(panel: Panel, panel_id: int, grid_pos: dict[str, int]) -> dict[str, Any]:
    defaults: dict[str, Any] = {"custom": dict(panel.custom)}
    if panel.unit:
        defaults["unit"] = panel.unit
    out: dict[str, Any] = {
        "id": panel_id,
        "type": panel.type,
        "title": panel.title,
        "description": panel.description,
        "datasource": datasource_ref(),
        "gridPos": grid_pos,
        "targets": [sql_target(panel.sql, panel.format)],
        "fieldConfig": {"defaults": defaults, "overrides": list(panel.overrides)},
        "options": dict(panel.options),
    }
    if panel.min_interval:
        out["interval"] = panel.min_interval
    return out


def render_variable(var: Variable) -> dict[str, Any]:
    return {
        "name": var.name,
        "label": var.label,
        "type": "query",
        "datasource": datasource_ref(),
        "query": var.sql,
        "definition": var.sql,
        "refresh": 2 if var.refresh_on_time else 1,  # 1: on load, 2: on time-range change
        "multi": True,
        "includeAll": True,
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "options": [],
        "regex": "",
        "sort": 1,
        "hide": 0,
    }


def render_annotation(annotation: Annotation) -> dict[str, Any]:
    return {
        "name": annotation.name,
        "datasource": datasource_ref(),
        "enable": True,
        "hide": False,
        "iconColor": annotation.color,
        "target": sql_target(annotation.sql, "table", ref_id="Anno"),
    }


# Grafana adds this to every dashboard; keeping it avoids a diff on the first save in the UI.
BUILTIN_ANNOTATION = {
    "builtIn": 1,
    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
    "enable": True,
    "hide": True,
    "iconColor": "rgba(0, 211, 255, 1)",
    "name": "Annotations & Alerts",
    "type": "dashboard",
}


def render(dashboard: Dashboard) -> dict[str, Any]:
    """The Grafana dashboard JSON model (what provisioning loads and the HTTP API stores)."""
    positions = _layout(dashboard.panels)
    return {
        "uid": dashboard.uid,
        "title": dashboard.title,
        "description": dashboard.description,
        "tags": [DASHBOARD_TAG],
        "timezone": "utc",
        "editable": True,
        "graphTooltip": 1,  # shared crosshair
        "schemaVersion": SCHEMA_VERSION,
        "time": {"from": dashboard.time_from, "to": "now"},
        "refresh": dashboard.refresh,
        "templating": {"list": [render_variable(v) for v in dashboard.variables]},
        "annotations": {
            "list": [BUILTIN_ANNOTATION] + [render_annotation(a) for a in dashboard.annotations]
        },
        "links": [
            {
                "type": "dashboards",
                "tags": [DASHBOARD_TAG],
                "asDropdown": True,
                "title": "qc-stream",
                "includeVars": True,
                "keepTime": True,
            }
        ],
        "panels": [
            render_panel(p, i + 1, pos)
            for i, (p, pos) in enumerate(zip(dashboard.panels, positions))
        ],
    }
