"""The qc-stream dashboards: which panels, on which queries, with which template variables."""

from __future__ import annotations

from qc_stream.dashboards import queries as q
from qc_stream.dashboards.model import Annotation, Dashboard, Panel, Variable

LINE = Variable("line", "Line", q.VAR_LINE)
PRODUCT = Variable("product", "Product", q.VAR_PRODUCT)
CAMERA = Variable("camera", "Camera", q.VAR_CAMERA, refresh_on_time=True)

VERSION_CREATED = Annotation("Prompt versions", q.PROMPT_VERSION_CREATED)

_LINES = {
    "drawStyle": "line",
    "lineWidth": 2,
    "fillOpacity": 10,
    "showPoints": "auto",
    "spanNulls": False,
}
_STACKED_BARS = {
    "drawStyle": "bars",
    "fillOpacity": 80,
    "stacking": {"mode": "normal", "group": "A"},
}


def _right_axis_percent(field_name: str) -> dict:
    return {
        "matcher": {"id": "byName", "options": field_name},
        "properties": [
            {"id": "unit", "value": "percent"},
            {"id": "min", "value": 0},
            {"id": "max", "value": 100},
            {"id": "custom.axisPlacement", "value": "right"},
            {"id": "color", "value": {"mode": "fixed", "fixedColor": "orange"}},
        ],
    }


DEFECT_TRENDS = Dashboard(
    uid="qc-defect-trends",
    title="qc-stream / Defect trends",
    description="Defect rate and defect types over time per line and product (from defect_counts).",
    variables=(LINE, PRODUCT),
    annotations=(VERSION_CREATED,),
    panels=(
        Panel(
            key="defect_totals",
            title="Frames and defects in range",
            type="stat",
            sql=q.DEFECT_TOTALS,
            description="Frames inspected, warn and reject verdicts, and the defect rate (warn + reject).",
            width=24,
            height=4,
            options={
                "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                "textMode": "value_and_name",
            },
        ),
        Panel(
            key="defect_rate",
            title="Defect rate per line / product",
            type="timeseries",
            sql=q.DEFECT_RATE_OVER_TIME,
            format="time_series",
            description="Share of frames with verdict warn or reject, per line and product.",
            unit="percent",
            width=24,
            custom=_LINES,
        ),
        Panel(
            key="defect_types_over_time",
            title="Defect types over time",
            type="timeseries",
            sql=q.DEFECT_TYPES_OVER_TIME,
            format="time_series",
            description="Defective frames per defect type, stacked.",
            unit="short",
            width=24,
            custom=_STACKED_BARS,
        ),
    ),
)

ROOT_CAUSES = Dashboard(
    uid="qc-root-causes",
    title="qc-stream / Root causes",
    description="Which defect types cause most rejects (Pareto) and what the line should do about them.",
    variables=(LINE, PRODUCT),
    time_from="now-24h",
    panels=(
        Panel(
            key="defect_pareto",
            title="Defects per type (Pareto)",
            type="barchart",
            sql=q.DEFECT_PARETO,
            description="Defect types sorted by count, with the cumulative share of all defects (right axis).",
            width=24,
            height=10,
            min_interval=None,
            options={
                "xField": "defect_type",
                "orientation": "vertical",
                "showValue": "auto",
                "stacking": "none",
            },
            overrides=(_right_axis_percent("cumulative_pct"),),
        ),
        Panel(
            key="root_causes",
            title="Root causes and corrective actions",
            type="table",
            sql=q.ROOT_CAUSES,
            description="Defect counts per product and type, with the registry's root cause and action.",
            width=24,
            height=10,
            min_interval=None,
        ),
    ),
)

CAMERAS = Dashboard(
    uid="qc-cameras",
    title="qc-stream / Cameras and rejects",
    description="Verdicts per camera and the most recent rejected frames (from inspections).",
    variables=(LINE, PRODUCT, CAMERA),
    panels=(
        Panel(
            key="verdicts_per_camera",
            title="Verdicts per camera",
            type="barchart",
            sql=q.VERDICTS_PER_CAMERA,
            description="ok / warn / reject verdicts per camera in the selected range.",
            width=24,
            min_interval=None,
            options={
                "xField": "camera_id",
                "orientation": "horizontal",
                "stacking": "normal",
                "showValue": "auto",
            },
        ),
        Panel(
            key="recent_rejects",
            title="Recent rejects",
            type="table",
            sql=q.RECENT_REJECTS,
            description="The last 100 rejected frames with their defect type, anomaly score and type probability.",
            width=24,
            height=12,
            min_interval=None,
        ),
    ),
)

MODELS = Dashboard(
    uid="qc-models",
    title="qc-stream / Model and prompt versions",
    description="Which prompt version decided the frames when; markers where a version was created.",
    variables=(LINE, PRODUCT, CAMERA),
    annotations=(VERSION_CREATED,),
    time_from="now-7d",
    panels=(
        Panel(
            key="active_prompt_version",
            title="Prompt version in use",
            type="state-timeline",
            sql=q.ACTIVE_PROMPT_VERSION,
            description="The prompt version that decided most frames in each interval.",
            width=24,
            height=5,
            options={"showValue": "auto", "mergeValues": True, "rowHeight": 0.9},
        ),
        Panel(
            key="versions_in_use",
            title="Versions seen in range",
            type="table",
            sql=q.VERSIONS_IN_USE,
            description="Each prompt / model version with its first and last frame, frame count and registry data.",
            width=24,
            height=10,
            min_interval=None,
        ),
    ),
)

THROUGHPUT = Dashboard(
    uid="qc-throughput",
    title="qc-stream / Throughput and latency",
    description="Frames per minute and end-to-end latency percentiles from the stored results.",
    variables=(LINE, PRODUCT, CAMERA),
    annotations=(VERSION_CREATED,),
    time_from="now-1h",
    panels=(
        Panel(
            key="throughput_summary",
            title="In range",
            type="stat",
            sql=q.THROUGHPUT_SUMMARY,
            description="Frames, mean frames per minute over the range, latency p50 / p95 (ms).",
            width=24,
            height=4,
            min_interval=None,
            options={
                "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                "textMode": "value_and_name",
            },
        ),
        Panel(
            key="throughput",
            title="Throughput (frames/min)",
            type="timeseries",
            sql=q.THROUGHPUT,
            format="time_series",
            unit="short",
            custom=_LINES,
        ),
        Panel(
            key="latency",
            title="Latency p50 / p95",
            type="timeseries",
            sql=q.LATENCY,
            format="time_series",
            description="Per-frame latency the workers record with each result (inspections.latency_ms).",
            unit="ms",
            custom=_LINES,
        ),
    ),
)

REVIEWS = Dashboard(
    uid="qc-reviews",
    title="qc-stream / Operator reviews",
    description="How often reviewers agree with the model (its field precision), overrides over "
    "time, the review queue, and defect counts as the model gave them vs as reviewed.",
    variables=(LINE, PRODUCT),
    annotations=(VERSION_CREATED,),
    time_from="now-7d",
    panels=(
        Panel(
            key="review_queue",
            title="Review queue",
            type="stat",
            sql=q.REVIEW_QUEUE,
            description="Kept frames nobody has reviewed yet, and how old the oldest is (minutes).",
            width=24,
            height=4,
            min_interval=None,
            options={
                "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                "textMode": "value_and_name",
            },
        ),
        Panel(
            key="review_agreement",
            title="Agreement per product / line / prompt version",
            type="table",
            sql=q.REVIEW_AGREEMENT,
            description="Reviewed frames whose current decision keeps the model's verdict and type.",
            width=24,
            min_interval=None,
        ),
        Panel(
            key="review_overrides",
            title="Overrides over time",
            type="timeseries",
            sql=q.REVIEW_OVERRIDES_OVER_TIME,
            format="time_series",
            description="Decisions that changed the verdict or type, and confirmations.",
            unit="short",
            width=24,
            custom=_STACKED_BARS,
        ),
        Panel(
            key="reviewed_defect_counts",
            title="Defect counts: model vs reviewed",
            type="table",
            sql=q.REVIEWED_DEFECT_COUNTS,
            description="Per defect type on reviewed frames: as the model counted them (raw) and "
            "after review.",
            width=24,
            min_interval=None,
        ),
    ),
)

DASHBOARDS: tuple[Dashboard, ...] = (
    DEFECT_TRENDS,
    ROOT_CAUSES,
    CAMERAS,
    MODELS,
    THROUGHPUT,
    REVIEWS,
)
