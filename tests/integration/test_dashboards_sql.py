"""Every SQL query of the dashboards runs on a migrated Postgres and returns exactly what was seeded.

The database is built by the Alembic migrations (``qc_stream.storage.migrate.upgrade``) and filled
through the real repositories (inspections + their root-cause counts, model versions, defect types).
Grafana is not here: ``qc_stream.dashboards.macros.expand`` stands in for Grafana's macro and
template-variable expansion (documented in that module). The seeded data and the selection were
chosen so each filter matters: line L3 exists but is not selected, one frame lies before the time
range, one model version was created before it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import text

from qc_stream.dashboards import queries as q
from qc_stream.dashboards.catalog import DASHBOARDS
from qc_stream.dashboards.macros import expand
from qc_stream.domain.defects import DefectTypeSpec
from qc_stream.domain.inspection import InspectionResult, Verdict
from qc_stream.storage.db import make_engine
from qc_stream.storage.defect_types import DefectTypeRepository
from qc_stream.storage.inspections import InspectionRepository
from qc_stream.storage.migrate import upgrade
from qc_stream.storage.model_versions import ModelVersion, ModelVersionRepository
from qc_stream.storage.rollups import LATENCY_EDGES, latency_bucket, latency_quantile

T0 = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)
RANGE = (T0, T0 + timedelta(hours=1))
EPOCH0 = int(T0.timestamp())
SELECTION = {
    "line": ["L1", "L2"],
    "product": ["bottle", "cable"],
    "camera": ["cam-1", "cam-2", "cam-3"],
}

OK, WARN, REJECT = Verdict.OK, Verdict.WARN, Verdict.REJECT
# frame, camera, line, product, captured at (seconds after T0), verdict, score, defect type,
# prompt version, latency ms. Each frame is processed 1 s after capture.
FRAMES = [
    ("f01", "cam-1", "L1", "bottle", 10, OK, 0.10, None, "v1", 100),
    ("f02", "cam-1", "L1", "bottle", 20, REJECT, 0.90, "crack", "v1", 200),
    ("f03", "cam-1", "L1", "bottle", 70, WARN, 0.60, "scratch", "v1", 300),
    ("f04", "cam-2", "L1", "bottle", 80, REJECT, 0.95, "crack", "v2", 400),
    ("f05", "cam-2", "L1", "bottle", 300, REJECT, 0.85, "contamination", "v2", 500),
    ("f06", "cam-2", "L1", "bottle", 330, OK, 0.20, None, "v2", 600),
    ("f07", "cam-3", "L2", "cable", 30, REJECT, 0.88, "crack", "v1", 150),
    ("f08", "cam-3", "L2", "cable", 90, OK, 0.05, None, "v1", 250),
    # not selected (line L3), and before the time range:
    ("f09", "cam-9", "L3", "bottle", 40, REJECT, 0.99, "crack", "v1", 999),
    ("f10", "cam-1", "L1", "bottle", -7200, REJECT, 0.99, "crack", "v1", 999),
]


def _result(
    frame, camera, line, product, at_s, verdict, score, defect, version, latency
) -> InspectionResult:
    captured = T0 + timedelta(seconds=at_s)
    probs = {defect: 0.8, "other": 0.2} if defect else {}
    return InspectionResult(
        frame_id=frame,
        camera_id=camera,
        line_id=line,
        product=product,
        captured_at=captured,
        processed_at=captured + timedelta(seconds=1),
        verdict=verdict,
        anomaly_score=score,
        defect_type=defect,
        defect_probs=probs,
        model_version=f"qc-clip-tiny@{version}",
        prompt_version=version,
        latency_ms=latency,
    )


@pytest.fixture
def seeded(pg_url):
    upgrade(pg_url)
    engine = make_engine(pg_url)
    assert InspectionRepository(engine).record_many([_result(*f) for f in FRAMES]) == len(FRAMES)
    versions = ModelVersionRepository(engine)
    versions.add(
        ModelVersion(
            prompt_version="v1", backbone="qc-clip-tiny@aaaa", created_at=T0 - timedelta(days=1)
        )
    )
    versions.add(
        ModelVersion(
            prompt_version="v2",
            backbone="qc-clip-tiny@aaaa",
            kind="zero-shot",
            parent_version="v1",
            created_at=T0 + timedelta(seconds=60),
        ),
        activate=True,
    )
    DefectTypeRepository(engine).add(
        DefectTypeSpec(
            product="bottle",
            name="Crack",
            root_cause="worn mould",
            corrective_action="replace the mould",
        )
    )
    yield engine
    engine.dispose()


def run(engine, sql: str, interval_s: int = 60, **selection) -> tuple[list[str], list[tuple]]:
    variables = {**SELECTION, **selection}
    expanded, params = expand(
        sql, time_from=RANGE[0], time_to=RANGE[1], variables=variables, interval_s=interval_s
    )
    with engine.connect() as conn:
        result = conn.execute(text(expanded), params)
        return list(result.keys()), [tuple(_plain(v) for v in row) for row in result]


def _plain(value):
    return float(value) if isinstance(value, Decimal) else value


def at(minutes: int) -> float:
    return float(EPOCH0 + 60 * minutes)


def _hist_p50_p95(latencies: list[float]) -> tuple[float, float]:
    counts = [0] * len(LATENCY_EDGES)
    for ms in latencies:
        counts[latency_bucket(ms)] += 1
    return latency_quantile(counts, 0.5), latency_quantile(counts, 0.95)


# One check per query: query -> (expected columns, expected rows at a 60 s interval).
EXPECTED: dict[str, tuple[list[str], list[tuple]]] = {
    q.VAR_LINE: (["line_id"], [("L1",), ("L2",), ("L3",)]),
    q.VAR_PRODUCT: (["product"], [("bottle",), ("cable",)]),
    q.VAR_CAMERA: (["camera_id"], [("cam-1",), ("cam-2",), ("cam-3",)]),
    q.DEFECT_TOTALS: (["frames", "warn", "reject", "defect_rate_pct"], [(8, 1, 4, 62.5)]),
    q.DEFECT_RATE_OVER_TIME: (
        ["time", "metric", "defect_rate_pct"],
        [
            (at(0), "L1 / bottle", 50.0),
            (at(0), "L2 / cable", 100.0),
            (at(1), "L1 / bottle", 100.0),
            (at(1), "L2 / cable", 0.0),
            (at(5), "L1 / bottle", 50.0),
        ],
    ),
    q.DEFECT_TYPES_OVER_TIME: (
        ["time", "metric", "defects"],
        [
            (at(0), "crack", 2),
            (at(1), "crack", 1),
            (at(1), "scratch", 1),
            (at(5), "contamination", 1),
        ],
    ),
    q.DEFECT_PARETO: (
        ["defect_type", "defects", "cumulative_pct"],
        [("crack", 3, 60.0), ("contamination", 1, 80.0), ("scratch", 1, 100.0)],
    ),
    q.ROOT_CAUSES: (
        [
            "product",
            "defect_type",
            "defects",
            "rejects",
            "root_cause",
            "corrective_action",
            "status",
        ],
        [
            ("bottle", "crack", 2, 2, "worn mould", "replace the mould", "active"),
            ("bottle", "contamination", 1, 1, None, None, None),
            ("bottle", "scratch", 1, 0, None, None, None),
            ("cable", "crack", 1, 1, None, None, None),
        ],
    ),
    q.VERDICTS_PER_CAMERA: (
        ["camera_id", "ok", "warn", "reject"],
        [("cam-1", 1, 1, 1), ("cam-2", 1, 0, 2), ("cam-3", 1, 0, 1)],
    ),
    q.ACTIVE_PROMPT_VERSION: (
        ["time", "prompt_version"],
        [(T0, "v1"), (T0 + timedelta(minutes=1), "v1"), (T0 + timedelta(minutes=5), "v2")],
    ),
    q.VERSIONS_IN_USE: (
        [
            "prompt_version",
            "model_version",
            "first_seen",
            "last_seen",
            "frames",
            "kind",
            "parent_version",
            "created_at",
            "active",
        ],
        [
            (
                "v1",
                "qc-clip-tiny@v1",
                T0 + timedelta(seconds=11),
                T0 + timedelta(seconds=91),
                5,
                "trained",
                None,
                T0 - timedelta(days=1),
                False,
            ),
            (
                "v2",
                "qc-clip-tiny@v2",
                T0 + timedelta(seconds=81),
                T0 + timedelta(seconds=331),
                3,
                "zero-shot",
                "v1",
                T0 + timedelta(seconds=60),
                True,
            ),
        ],
    ),
    q.PROMPT_VERSION_CREATED: (
        ["time", "text", "tags"],
        [(T0 + timedelta(seconds=60), "prompt version v2 (zero-shot), active now", "zero-shot")],
    ),
    q.THROUGHPUT: (["time", "frames_per_min"], [(at(0), 3.0), (at(1), 3.0), (at(5), 2.0)]),
    # Latency percentiles come from the camera_minute histogram, interpolated inside the bucket:
    # minute 0 holds 100 ms [100,125), 150 ms [150,200) and 200 ms [200,250); the median (rank 1.5)
    # lies half-way into [150,200) = 175, p95 (rank 2.85) 85% into [200,250) = 242.5.
    q.LATENCY: (
        ["time", "p50_ms", "p95_ms"],
        [
            (at(0), 175.0, 242.5),
            (at(1), *_hist_p50_p95([300, 400, 250])),
            (at(5), *_hist_p50_p95([500, 600])),
        ],
    ),
    q.THROUGHPUT_SUMMARY: (
        ["frames", "frames_per_min", "p50_ms", "p95_ms"],
        [(8, 0.13, *_hist_p50_p95([100, 200, 300, 400, 500, 600, 150, 250]))],
    ),
}


def _all_queries() -> set[str]:
    found = set()
    for d in DASHBOARDS:
        found |= (
            {p.sql for p in d.panels}
            | {v.sql for v in d.variables}
            | {a.sql for a in d.annotations}
        )
    return found


def test_every_dashboard_query_has_an_expectation():
    # RECENT_REJECTS has its own test below (its rows carry timestamps and JSON); the review
    # dashboard's queries are checked on seeded reviews in test_review_dashboard_sql.py.
    assert _all_queries() == set(EXPECTED) | {q.RECENT_REJECTS} | q.REVIEW_QUERIES


def test_every_query_returns_the_seeded_counts(seeded, subtests):
    for sql, (columns, rows) in EXPECTED.items():
        with subtests.test(query=sql.splitlines()[0][:60]):
            got_columns, got_rows = run(seeded, sql)
            assert got_columns == columns
            assert got_rows == [pytest.approx(r) if _numeric(r) else r for r in rows]


def _numeric(row: tuple) -> bool:
    return all(isinstance(v, (int, float)) for v in row)


def test_recent_rejects_lists_the_selected_rejects_newest_first(seeded):
    columns, rows = run(seeded, q.RECENT_REJECTS)
    assert columns == [
        "time",
        "captured_at",
        "frame_id",
        "camera_id",
        "line_id",
        "product",
        "defect_type",
        "anomaly_score",
        "defect_prob",
        "defect_probs",
        "prompt_version",
    ]
    by_name = [dict(zip(columns, r)) for r in rows]
    assert [r["frame_id"] for r in by_name] == ["f05", "f04", "f07", "f02"]
    first = by_name[0]
    assert first["time"] == T0 + timedelta(seconds=301)
    assert (first["defect_type"], first["anomaly_score"], first["defect_prob"]) == (
        "contamination",
        0.85,
        0.8,
    )
    assert '"contamination": 0.8' in first["defect_probs"]


def test_variables_narrow_every_kind_of_query(seeded):
    _, rows = run(seeded, q.VERDICTS_PER_CAMERA, camera=["cam-2"])
    assert rows == [("cam-2", 1, 0, 2)]
    _, rows = run(seeded, q.DEFECT_TOTALS, line=["L2"])
    assert rows == [(2, 0, 1, 50.0)]
    _, rows = run(seeded, q.DEFECT_PARETO, product=["cable"])
    assert rows == [("crack", 1, 100.0)]
    _, rows = run(seeded, q.VAR_CAMERA, line=["L3"], product=["bottle"])
    assert rows == [("cam-9",)]
    # Nothing selected: Grafana would send an empty list; no rows, no SQL error.
    _, rows = run(seeded, q.VERDICTS_PER_CAMERA, camera=[])
    assert rows == []


def test_a_coarser_interval_regroups_the_same_counts(seeded):
    _, rows = run(seeded, q.DEFECT_RATE_OVER_TIME, interval_s=300)
    assert rows == [
        (at(0), "L1 / bottle", 75.0),
        (at(0), "L2 / cable", 50.0),
        (at(5), "L1 / bottle", 50.0),
    ]
    _, rows = run(seeded, q.THROUGHPUT, interval_s=300)
    assert rows == [(at(0), pytest.approx(1.2)), (at(5), pytest.approx(0.4))]


def test_hour_rollups_and_minute_edges_give_the_same_answers(seeded):
    """The 1-hour range above is one whole hour, read from the hour tables; a range with ragged
    ends (minute rows) and a time series at a whole-hour interval (hour rows) agree with it."""
    ragged = (T0 - timedelta(minutes=7), T0 + timedelta(minutes=67, seconds=30))
    for sql in (q.DEFECT_TOTALS, q.VERDICTS_PER_CAMERA, q.DEFECT_PARETO, q.VERSIONS_IN_USE):
        expanded, params = expand(
            sql, time_from=ragged[0], time_to=ragged[1], variables=SELECTION, interval_s=60
        )
        with seeded.connect() as conn:
            rows = [tuple(_plain(v) for v in r) for r in conn.execute(text(expanded), params)]
        assert rows == run(seeded, sql)[1], sql.splitlines()[0]
    _, rows = run(seeded, q.THROUGHPUT, interval_s=3600)
    assert rows == [(at(0), pytest.approx(8 * 60000.0 / 3_600_000))]
    _, rows = run(seeded, q.LATENCY, interval_s=3600)
    assert rows == [(at(0), *map(pytest.approx, EXPECTED[q.THROUGHPUT_SUMMARY][1][0][2:]))]
    _, rows = run(seeded, q.DEFECT_TYPES_OVER_TIME, interval_s=3600)
    assert rows == [(at(0), "contamination", 1), (at(0), "crack", 3), (at(0), "scratch", 1)]
