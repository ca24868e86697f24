"""The generated Grafana JSON: structure, stable ids, variables, layout, files, provisioning."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from qc_stream.dashboards.build import build_all, build_postgres, dump, read_dashboards
from qc_stream.dashboards.model import DATASOURCE_NAME, DATASOURCE_TYPE, DATASOURCE_UID, FOLDER_UID
from qc_stream.errors import InputError

REPO = Path(__file__).resolve().parents[2]
GRAFANA_DEPLOY = REPO / "deploy" / "grafana"
VARIABLE = re.compile(r"\$\{?([a-z]\w*)")


def _queries(dashboard: dict) -> list[str]:
    return (
        [t["rawSql"] for p in dashboard["panels"] for t in p["targets"]]
        + [v["query"] for v in dashboard["templating"]["list"]]
        + [a["target"]["rawSql"] for a in dashboard["annotations"]["list"] if "target" in a]
    )


def test_seven_dashboards_with_stable_unique_uids():
    uids = [d["uid"] for d in build_all()]
    assert uids == [
        "qc-defect-trends",
        "qc-root-causes",
        "qc-cameras",
        "qc-models",
        "qc-throughput",
        "qc-reviews",
        "qc-workers",
    ]
    assert [dump(d) for d in build_all()] == [dump(d) for d in build_all()]  # deterministic


@pytest.mark.parametrize("dashboard", build_postgres(), ids=lambda d: d["uid"])
def test_panels_query_the_postgres_datasource_with_raw_sql(dashboard):
    ids = [p["id"] for p in dashboard["panels"]]
    assert ids == list(range(1, len(ids) + 1))
    for panel in dashboard["panels"]:
        assert panel["datasource"] == {"type": DATASOURCE_TYPE, "uid": DATASOURCE_UID}
        (target,) = panel["targets"]
        assert (
            target["rawQuery"] is True
            and target["editorMode"] == "code"
            and target["rawSql"].strip()
        )
        if panel["type"] == "timeseries":
            # Grafana needs a time column; multi-series panels name the series in "metric"
            assert target["format"] == "time_series" and "$__timeGroupAlias(" in target["rawSql"]


@pytest.mark.parametrize("dashboard", build_postgres(), ids=lambda d: d["uid"])
def test_every_variable_used_is_defined_before_use_multi_select_with_all(dashboard):
    variables = dashboard["templating"]["list"]
    names = [v["name"] for v in variables]
    assert set(names) <= {"line", "product", "camera"} and "line" in names
    used = {name for sql in _queries(dashboard) for name in VARIABLE.findall(sql)}
    assert used == set(names)
    for i, v in enumerate(variables):
        assert (v["type"], v["multi"], v["includeAll"]) == ("query", True, True)
        assert v["datasource"]["uid"] == DATASOURCE_UID
        # a variable's query may only use variables defined above it (Grafana resolves in order)
        assert set(VARIABLE.findall(v["query"])) <= set(names[:i])


@pytest.mark.parametrize("dashboard", build_all(), ids=lambda d: d["uid"])
def test_panels_fit_the_grid_without_overlapping(dashboard):
    cells = set()
    for panel in dashboard["panels"]:
        pos = panel["gridPos"]
        assert 0 <= pos["x"] and pos["x"] + pos["w"] <= 24
        area = {
            (x, y)
            for x in range(pos["x"], pos["x"] + pos["w"])
            for y in range(pos["y"], pos["y"] + pos["h"])
        }
        assert not cells & area, f"panel {panel['title']!r} overlaps another"
        cells |= area


def test_the_asked_for_views_are_all_there():
    titles = {p["title"] for d in build_all() for p in d["panels"]}
    for wanted in [
        "Defect rate per line / product",
        "Defects per type (Pareto)",
        "Defect types over time",
        "Verdicts per camera",
        "Recent rejects",
        "Prompt version in use",
        "Throughput (frames/min)",
        "Latency p50 / p95",
    ]:
        assert wanted in titles
    stacked = next(
        p for d in build_all() for p in d["panels"] if p["title"] == "Defect types over time"
    )
    assert stacked["fieldConfig"]["defaults"]["custom"]["stacking"]["mode"] == "normal"


def test_cli_build_writes_one_file_per_dashboard_and_rebuilds_identically(tmp_path: Path):
    from qc_stream.cli.main import app

    runner = CliRunner()
    first = runner.invoke(app, ["dashboards", "build", "--out", str(tmp_path / "out")])
    assert first.exit_code == 0, first.output
    files = sorted((tmp_path / "out").glob("*.json"))
    assert [f.stem for f in files] == sorted(d["uid"] for d in build_all())
    before = {f.name: f.read_bytes() for f in files}
    runner.invoke(app, ["dashboards", "build", "--out", str(tmp_path / "out")])
    assert {f.name: f.read_bytes() for f in files} == before
    assert read_dashboards(tmp_path / "out") == sorted(build_all(), key=lambda d: d["uid"])


def test_the_copy_in_deploy_is_up_to_date():
    """deploy/grafana/dashboards/ is what Grafana provisioning loads: rebuild it after editing the code."""
    shipped = {
        p.name: p.read_text(encoding="utf-8")
        for p in (GRAFANA_DEPLOY / "dashboards").glob("*.json")
    }
    assert shipped == {f"{d['uid']}.json": dump(d) for d in build_all()}, (
        "run: qc-stream dashboards build --out deploy/grafana/dashboards"
    )


def test_provisioning_points_at_the_same_datasource_and_folder():
    (ds,) = yaml.safe_load(
        (GRAFANA_DEPLOY / "provisioning/datasources/qc-stream.yaml").read_text()
    )["datasources"]
    assert (ds["uid"], ds["type"], ds["name"]) == (DATASOURCE_UID, DATASOURCE_TYPE, DATASOURCE_NAME)
    assert ds["editable"] is False and "password" in ds["secureJsonData"]
    (provider,) = yaml.safe_load(
        (GRAFANA_DEPLOY / "provisioning/dashboards/qc-stream.yaml").read_text()
    )["providers"]
    assert provider["folderUid"] == FOLDER_UID and provider["type"] == "file"
    assert provider["options"]["path"].startswith("/")


@pytest.mark.parametrize(
    "setup, message",
    [
        (lambda d: None, "not a folder"),
        (lambda d: d.mkdir(), "no dashboard JSON files"),
        (lambda d: (d.mkdir(), (d / "x.json").write_text("{nope")), "not a readable JSON file"),
        (
            lambda d: (d.mkdir(), (d / "x.json").write_text('{"title": "no uid"}')),
            "not a Grafana dashboard",
        ),
    ],
)
def test_reading_a_bad_folder_is_a_clear_error(tmp_path: Path, setup, message):
    folder = tmp_path / "dash"
    setup(folder)
    with pytest.raises(InputError, match=message):
        read_dashboards(folder)


def test_cli_module_imports_no_http_client_or_database_engine():
    code = (
        "import sys, qc_stream.cli.cmd_dashboards; "
        "print([m for m in ('grafana_client', 'niquests', 'sqlalchemy', 'psycopg') if m in sys.modules])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert json.loads(out.strip().replace("'", '"')) == []
