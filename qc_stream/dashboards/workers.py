"""The "workers" dashboard: the workers' Prometheus metrics (qc_stream/observability/metrics.py).

The other dashboards read Postgres (model.py renders those); this one queries the Prometheus
datasource provisioned from deploy/grafana/provisioning/datasources/prometheus.yaml, so it is a
small renderer of its own. Same conventions: stable uid and panel ids, the qc-stream tag and links.
"""

from __future__ import annotations

from typing import Any

from qc_stream.dashboards.model import DASHBOARD_TAG, SCHEMA_VERSION

PROMETHEUS_TYPE = "prometheus"
PROMETHEUS_UID = "qc-stream-prom"
PROMETHEUS_NAME = "qc-stream Prometheus"
UID = "qc-workers"
# Worker pods only (PodMonitor job "<namespace>/qc-worker"; compose job "qc-worker").
WORKERS = 'job=~".*qc-worker"'

# (key, title, type, [(legend, PromQL)], unit, width, height)
PANELS: tuple[tuple[str, str, str, list[tuple[str, str]], str, int, int], ...] = (
    (
        "ready",
        "Ready workers",
        "stat",
        [("ready", f"sum(qc_worker_ready{{{WORKERS}}})")],
        "short",
        6,
        4,
    ),
    (
        "lag",
        "Consumer lag (frames behind on qc.frames)",
        "stat",
        [("lag", f"sum(max by (partition) (qc_consumer_lag_records{{{WORKERS}}}))")],
        "short",
        6,
        4,
    ),
    (
        "fps",
        "Frames inspected / s",
        "stat",
        [("frames/s", f"sum(rate(qc_frames_processed_total{{{WORKERS}}}[$__rate_interval]))")],
        "short",
        6,
        4,
    ),
    (
        "prompt_version",
        "Prompt version in use",
        "stat",
        [
            (
                "{{prompt_version}}",
                f"count by (prompt_version) (qc_prompt_version_info{{{WORKERS}}} == 1)",
            )
        ],
        "short",
        6,
        4,
    ),
    (
        "verdicts",
        "Frames / s per verdict",
        "timeseries",
        [
            (
                "{{verdict}}",
                f"sum by (verdict) (rate(qc_frames_processed_total{{{WORKERS}}}[$__rate_interval]))",
            )
        ],
        "short",
        12,
        8,
    ),
    (
        "lag_per_partition",
        "Lag per partition",
        "timeseries",
        [("p{{partition}}", f"max by (partition) (qc_consumer_lag_records{{{WORKERS}}})")],
        "short",
        12,
        8,
    ),
    (
        "batch_latency",
        "Batch latency p50 / p95",
        "timeseries",
        [
            (
                f"p{q}",
                f"histogram_quantile(0.{q}, sum by (le) "
                f"(rate(qc_batch_latency_seconds_bucket{{{WORKERS}}}[$__rate_interval])))",
            )
            for q in (50, 95)
        ],
        "s",
        12,
        8,
    ),
    (
        "batch_size",
        "Frames per batch (mean)",
        "timeseries",
        [
            (
                "mean",
                f"sum(rate(qc_batch_size_frames_sum{{{WORKERS}}}[$__rate_interval])) / "
                f"sum(rate(qc_batch_size_frames_count{{{WORKERS}}}[$__rate_interval]))",
            )
        ],
        "short",
        12,
        8,
    ),
    (
        "dead_letters",
        "Dead letters per reason",
        "timeseries",
        [
            (
                "{{reason}}",
                f"sum by (reason) (increase(qc_dead_letters_total{{{WORKERS}}}[$__rate_interval]))",
            )
        ],
        "short",
        8,
        8,
    ),
    (
        "retries",
        "Store / publish retries, frame store failures",
        "timeseries",
        [
            (
                "retry {{what}}",
                f"sum by (what) (increase(qc_worker_retries_total{{{WORKERS}}}[$__rate_interval]))",
            ),
            (
                "frame store failures",
                f"sum(increase(qc_frame_store_failures_total{{{WORKERS}}}[$__rate_interval]))",
            ),
        ],
        "short",
        8,
        8,
    ),
    (
        "prompt_swaps_refused",
        "Prompt swaps refused",
        "timeseries",
        [
            (
                "{{reason}}",
                f"sum by (reason) (increase(qc_prompt_swap_refused_total{{{WORKERS}}}[$__rate_interval]))",
            )
        ],
        "short",
        8,
        8,
    ),
)


def datasource_ref() -> dict[str, str]:
    return {"type": PROMETHEUS_TYPE, "uid": PROMETHEUS_UID}


def _layout() -> list[dict[str, int]]:
    positions, x, y, row_h = [], 0, 0, 0
    for *_, width, height in PANELS:
        if x + width > 24:
            x, y, row_h = 0, y + row_h, 0
        positions.append({"x": x, "y": y, "w": width, "h": height})
        x, row_h = x + width, max(row_h, height)
    return positions


def render_workers() -> dict[str, Any]:
    panels = []
    for i, ((key, title, kind, queries, unit, _, _), pos) in enumerate(zip(PANELS, _layout())):
        panels.append(
            {
                "id": i + 1,
                "title": title,
                "type": kind,
                "datasource": datasource_ref(),
                "gridPos": pos,
                "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
                "options": {},
                "targets": [
                    {
                        "refId": chr(ord("A") + n),
                        "datasource": datasource_ref(),
                        "expr": expr,
                        "legendFormat": legend,
                        "editorMode": "code",
                        "range": True,
                    }
                    for n, (legend, expr) in enumerate(queries)
                ],
                "description": f"qc-stream worker metric panel `{key}`.",
            }
        )
    return {
        "uid": UID,
        "title": "qc-stream / Workers",
        "description": "Worker health and throughput from Prometheus: readiness, lag, batches, "
        "dead letters, retries, prompt swaps.",
        "tags": [DASHBOARD_TAG],
        "timezone": "utc",
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": SCHEMA_VERSION,
        "time": {"from": "now-6h", "to": "now"},
        "refresh": "30s",
        "templating": {"list": []},
        "annotations": {"list": []},
        "links": [
            {
                "type": "dashboards",
                "tags": [DASHBOARD_TAG],
                "asDropdown": True,
                "title": "qc-stream",
                "includeVars": False,
                "keepTime": True,
            }
        ],
        "panels": panels,
    }
