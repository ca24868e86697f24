"""The review dashboard's SQL on a migrated Postgres with seeded decisions (Grafana is not here:
``qc_stream.dashboards.macros.expand`` stands in for its macro expansion). The seed has a frame
decided twice (only the newest decision counts for agreement), a line that is not selected, a
decision before the time range, and kept frames still in the queue."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from sqlalchemy import text

from qc_stream.dashboards import queries as q
from qc_stream.dashboards.macros import expand
from qc_stream.storage.db import make_engine
from qc_stream.storage.frame_store import FrameStore
from qc_stream.storage.migrate import upgrade
from qc_stream.storage.reviews import ReviewRepository
from tests.support.review import keep_frames

T0 = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)
RANGE = (T0, T0 + timedelta(hours=1))
SELECTION = {"line": ["line-1"], "product": ["pill"]}


def run(engine, sql: str, **selection):
    expanded, params = expand(
        sql, time_from=RANGE[0], time_to=RANGE[1], variables={**SELECTION, **selection}
    )
    with engine.connect() as conn:
        result = conn.execute(text(expanded), params)
        return list(result.keys()), [
            tuple(float(v) if isinstance(v, Decimal) else v for v in row) for row in result
        ]


def test_review_dashboard_queries(pg_url, tmp_path):
    upgrade(pg_url)
    engine = make_engine(pg_url)
    store = FrameStore(tmp_path / "frames")
    store.root.mkdir()
    keep_frames(
        engine,
        store,
        [
            ("f-6", "ok", None),
            ("f-5", "ok", None),
            ("f-4", "reject", "crack"),
            ("f-3", "reject", "crack"),
            ("f-2", "warn", "stain"),
            ("f-1", "reject", "crack"),
        ],
    )
    reviews = ReviewRepository(engine)

    def decide(frame, minute, verdict, defect_type, action="verdict", who="olga"):
        reviews.decide(
            frame,
            who,
            verdict=verdict,
            defect_type=defect_type,
            action=action,
            now=T0 + timedelta(minutes=minute),
        )

    decide("f-1", 1, "reject", "crack", "confirm")  # agrees
    decide("f-2", 2, "ok", None)  # override: not a defect
    decide("f-3", 3, "reject", "stain", "type")  # override of the type...
    decide("f-3", 30, "reject", "crack", "confirm", who="emil")  # ...then confirmed: current
    decide("f-4", -30, "ok", None)  # before the range
    _, queue = run(engine, q.REVIEW_QUEUE)
    assert queue[0][0] == 2  # f-5, f-6 wait
    assert queue[0][1] >= 0

    assert run(engine, q.REVIEW_AGREEMENT) == (
        ["product", "line_id", "prompt_version", "reviewed", "agreed", "agreement_pct"],
        [("pill", "line-1", "v-test", 3, 2, 66.67)],
    )
    columns, rows = run(engine, q.REVIEW_OVERRIDES_OVER_TIME)
    assert columns == ["time", "overrides", "confirmations"]
    assert sum(r[1] for r in rows) == 2 and sum(r[2] for r in rows) == 2  # every decision in range
    assert run(engine, q.REVIEWED_DEFECT_COUNTS) == (
        ["product", "defect_type", "raw", "reviewed"],
        [("pill", "crack", 2, 2), ("pill", "stain", 1, 0)],
    )
    # Another line selected: nothing of line-1 shows.
    assert run(engine, q.REVIEW_AGREEMENT, line=["line-9"])[1] == []
    assert run(engine, q.REVIEW_QUEUE, line=["line-9"])[1][0][0] == 0
