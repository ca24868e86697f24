"""Write the dashboards as JSON files (one per dashboard) and read such a folder back."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from qc_stream.dashboards.catalog import DASHBOARDS
from qc_stream.dashboards.model import render
from qc_stream.dashboards.workers import render_workers
from qc_stream.errors import InputError


def build_postgres() -> list[dict[str, Any]]:
    """The SQL dashboards (catalog.py) on the Postgres datasource."""
    return [render(d) for d in DASHBOARDS]


def build_all() -> list[dict[str, Any]]:
    """Every dashboard: the SQL ones and the "workers" one on Prometheus (workers.py)."""
    return build_postgres() + [render_workers()]


def dump(dashboard: dict[str, Any]) -> str:
    # Sorted keys and a trailing newline: rebuilding gives byte-identical files (clean diffs).
    return json.dumps(dashboard, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write_dashboards(out_dir: Path) -> list[Path]:
    """Write ``<uid>.json`` per dashboard into ``out_dir`` (created if missing)."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"cannot create output folder {out_dir}: {e.strerror}") from None
    if not out_dir.is_dir():
        raise InputError(f"not a folder: {out_dir}")
    written = []
    for dashboard in build_all():
        path = out_dir / f"{dashboard['uid']}.json"
        try:
            path.write_text(dump(dashboard), encoding="utf-8")
        except OSError as e:
            raise InputError(f"cannot write {path}: {e.strerror}") from None
        written.append(path)
    return written


def read_dashboards(folder: Path) -> list[dict[str, Any]]:
    """Every ``*.json`` dashboard in ``folder``; each must be an object with ``uid`` and ``title``."""
    if not folder.is_dir():
        raise InputError(
            f"not a folder: {folder} (build it with `qc-stream dashboards build --out {folder}`)"
        )
    files = sorted(folder.glob("*.json"))
    if not files:
        raise InputError(f"no dashboard JSON files in {folder}")
    dashboards = []
    for path in files:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise InputError(f"{path}: not a readable JSON file ({e})") from None
        if not isinstance(data, dict) or not data.get("uid") or not data.get("title"):
            raise InputError(
                f"{path}: not a Grafana dashboard (needs an object with 'uid' and 'title')"
            )
        dashboards.append(data)
    return dashboards
