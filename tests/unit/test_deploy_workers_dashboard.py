"""The "workers" dashboard (qc_stream/dashboards/workers.py): built by `qc-stream dashboards build`,
on the provisioned Prometheus datasource, querying only metrics the workers export."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from typer.testing import CliRunner

from qc_stream.cli.main import app
from qc_stream.dashboards.workers import PROMETHEUS_TYPE, PROMETHEUS_UID, UID, render_workers

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def exported_metrics() -> set[str]:
    from prometheus_client import REGISTRY

    import qc_stream.observability.metrics  # noqa: F401  (registers them)

    names = set()
    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}
    for family in REGISTRY.collect():
        names.add(family.name)
        names.update(family.name + s for s in suffixes.get(family.type, []))
    return names


def test_cli_build_writes_the_workers_dashboard(tmp_path):
    result = CliRunner().invoke(app, ["dashboards", "build", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / f"{UID}.json").exists()


def test_every_panel_queries_real_worker_metrics_on_prometheus():
    dashboard = render_workers()
    metrics = exported_metrics()
    titles = set()
    for panel in dashboard["panels"]:
        titles.add(panel["title"])
        assert panel["datasource"] == {"type": PROMETHEUS_TYPE, "uid": PROMETHEUS_UID}
        for target in panel["targets"]:
            used = set(re.findall(r"\b(qc_[a-z_]+)", target["expr"]))
            assert used and used <= metrics, f"{panel['title']}: {sorted(used - metrics)}"
            assert target["expr"].count("(") == target["expr"].count(")")
    for wanted in ("Ready workers", "Consumer lag (frames behind on qc.frames)",
                   "Dead letters per reason", "Prompt swaps refused", "Batch latency p50 / p95"):  # fmt: skip
        assert wanted in titles
    assert [p["id"] for p in dashboard["panels"]] == list(range(1, len(dashboard["panels"]) + 1))


def test_the_datasource_it_names_is_provisioned():
    (ds,) = yaml.safe_load(
        (DEPLOY / "grafana/provisioning/datasources/prometheus.yaml").read_text()
    )["datasources"]
    assert (ds["uid"], ds["type"]) == (PROMETHEUS_UID, PROMETHEUS_TYPE)
    assert ds["url"] == "${QC_PROMETHEUS_URL}"
