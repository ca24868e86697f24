"""Storage benchmark: generate N inspections on Postgres, time every dashboard panel's SQL over 1, 7
and 30 days, and the write path through the repository at the worker's batch size.

    .venv/bin/python scripts/bench_storage.py --url postgresql://postgres@127.0.0.1/qc_bench --rows 3000000

The database at --url is upgraded to the newest revision of whichever ``qc_stream`` is imported
(run with PYTHONPATH=<an older checkout> to measure an older schema and its panel SQL), then
filled in SQL (generate_series, one statement per day) unless it already holds rows. Rows are
spread evenly over --days days ending now, over --cameras cameras on 4 lines and 2 products; the
prompt version changes half-way. Roll-ups are filled from the rows with the same SQL as the
migration's backfill. Panel times are the median of --repeat warm runs, with Grafana's "All"
selection and the interval Grafana picks for the range (1 m, 10 m, 30 m).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import inspect, text

# (days, interval in seconds): what Grafana picks for a ~1000 px wide panel, and 30 days at 1 h
# (what it picks for wider ranges or a panel with fewer data points).
RANGES = [(1, 60), (7, 600), (30, 1800), (30, 3600)]
LINES, PRODUCTS = 4, 2


def _log(msg: str) -> None:
    print(f"[{datetime.now(UTC):%H:%M:%S}] {msg}", file=sys.stderr, flush=True)


def _generate_day(conn, day_start: datetime, n: int, cameras: int, switch_at: datetime) -> None:
    step = 86400.0 / n
    conn.execute(
        text(f"""
        INSERT INTO inspections (frame_id, camera_id, line_id, product, captured_at, processed_at,
            verdict, anomaly_score, defect_type, defect_probs, regions, model_version,
            prompt_version, latency_ms)
        SELECT 'f-' || to_char(CAST(:d AS timestamptz), 'YYYYMMDD') || '-' || g,
               'cam-' || (g % {cameras}),
               'L' || ((g % {cameras}) % {LINES}),
               CASE WHEN (g % {cameras}) % {PRODUCTS} = 0 THEN 'bottle' ELSE 'cable' END,
               t - interval '50 milliseconds',
               t,
               CASE WHEN r < 0.9 THEN 'ok' WHEN r < 0.95 THEN 'warn' ELSE 'reject' END,
               r,
               CASE WHEN r < 0.9 THEN NULL
                    ELSE (ARRAY['crack', 'scratch', 'contamination', 'dent'])[1 + g % 4] END,
               CAST('{{}}' AS json), CAST('[]' AS json),
               CASE WHEN t < :switch THEN 'qc-clip@v1' ELSE 'qc-clip@v2' END,
               CASE WHEN t < :switch THEN 'v1' ELSE 'v2' END,
               20 + 180 * random() * random()
        FROM (SELECT g, CAST(:d AS timestamptz) + g * make_interval(secs => :step) AS t,
                     random() AS r
              FROM generate_series(0, :n - 1) AS g) AS s"""),
        {"d": day_start, "n": n, "step": step, "switch": switch_at},
    )


def _fill_rollups(conn, new_schema: bool) -> None:
    conn.execute(text("DELETE FROM defect_counts"))  # the old schema has it too
    conn.execute(
        text("""
        INSERT INTO defect_counts (bucket_start, line_id, product, defect_type, frames, warn, reject)
        SELECT date_trunc('minute', captured_at), line_id, product,
               CASE WHEN verdict = 'ok' THEN '' ELSE COALESCE(defect_type, '') END,
               COUNT(*), SUM(CASE WHEN verdict = 'warn' THEN 1 ELSE 0 END),
               SUM(CASE WHEN verdict = 'reject' THEN 1 ELSE 0 END)
        FROM inspections GROUP BY 1, 2, 3, 4""")
    )
    if new_schema:
        path = (
            Path(__file__).resolve().parents[1] / "migrations/versions/0003_partitions_rollups.py"
        )
        spec = importlib.util.spec_from_file_location("rev0003", path)
        rev = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(rev)
        for table in ("camera_minute", "prompt_minute", "camera_hour", "prompt_hour"):
            conn.execute(text(f"DELETE FROM {table}"))
        conn.execute(text("DELETE FROM defect_counts_hour"))
        backfill = rev.backfill_rollups_sql(
            lambda c: f"date_trunc('minute', {c}, 'UTC')",
            lambda c: f"date_trunc('hour', {c}, 'UTC')",
        )
        # defect_counts_hour comes from defect_counts, filled above
        for sql in backfill:
            conn.execute(text(sql))
        conn.execute(
            text(
                "INSERT INTO frame_ids (frame_id, captured_at) SELECT frame_id, captured_at FROM inspections"
            )
        )


def generate(engine, rows: int, days: int, cameras: int, now: datetime) -> None:
    new_schema = "frame_ids" in inspect(engine).get_table_names()
    first = (now - timedelta(days=days)).replace(hour=0, minute=0, second=0, microsecond=0)
    day_starts = [first + timedelta(days=i) for i in range(days + 1)]
    switch_at = now - timedelta(days=days / 2)
    per_day = rows // len(day_starts)
    if new_schema:
        from qc_stream.storage import partitions

        with engine.begin() as conn:
            for table in partitions.PARTITIONED:
                partitions.ensure_days(conn, table, {d.date() for d in day_starts})
    for d in day_starts:
        t0 = time.perf_counter()
        with engine.begin() as conn:
            _generate_day(conn, d, per_day, cameras, switch_at)
        _log(f"{d:%Y-%m-%d}: {per_day} rows in {time.perf_counter() - t0:.1f} s")
    t0 = time.perf_counter()
    with engine.begin() as conn:
        _fill_rollups(conn, new_schema)
    _log(f"roll-ups filled in {time.perf_counter() - t0:.1f} s")
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE"))


def time_panels(engine, now: datetime, cameras: int, repeat: int) -> list[dict]:
    from qc_stream.dashboards.catalog import DASHBOARDS
    from qc_stream.dashboards.macros import expand

    variables = {
        "line": [f"L{i}" for i in range(LINES)],
        "product": ["bottle", "cable"],
        "camera": [f"cam-{i}" for i in range(cameras)],
    }
    out = []
    for dashboard in DASHBOARDS:
        for panel in dashboard.panels:
            for days, interval_s in RANGES:
                sql, params = expand(
                    panel.sql,
                    time_from=now - timedelta(days=days),
                    time_to=now,
                    variables=variables,
                    interval_s=interval_s,
                )
                times = []
                with engine.connect() as conn:
                    for _ in range(repeat + 1):  # the first run warms the cache
                        t0 = time.perf_counter()
                        conn.execute(text(sql), params).fetchall()
                        times.append((time.perf_counter() - t0) * 1000)
                out.append(
                    {
                        "dashboard": dashboard.uid,
                        "panel": panel.title,
                        "days": days,
                        "interval_s": interval_s,
                        "ms": round(statistics.median(times[1:]), 1),
                    }
                )
                _log(f"{panel.title} {days} d @{interval_s} s: {out[-1]['ms']} ms")
    return out


def time_writes(engine, rows: int, batch: int, cameras: int) -> float:
    from qc_stream.domain.inspection import InspectionResult, Verdict
    from qc_stream.storage.inspections import InspectionRepository

    repo = InspectionRepository(engine)
    now = datetime.now(UTC)
    run = f"w{int(time.time())}"

    def result(i: int) -> InspectionResult:
        t = now + timedelta(milliseconds=i)
        reject = i % 20 == 0
        return InspectionResult(
            frame_id=f"{run}-{i}",
            camera_id=f"cam-{i % cameras}",
            line_id=f"L{(i % cameras) % LINES}",
            product="bottle",
            captured_at=t - timedelta(milliseconds=50),
            processed_at=t,
            verdict=Verdict.REJECT if reject else Verdict.OK,
            anomaly_score=0.9 if reject else 0.1,
            defect_type="crack" if reject else None,
            defect_probs={"crack": 0.9} if reject else {},
            model_version="qc-clip@v2",
            prompt_version="v2",
            latency_ms=20 + i % 200,
        )

    results = [result(i) for i in range(rows)]
    repo.record_many(results[:batch])  # partitions and connection ready before timing
    t0 = time.perf_counter()
    for i in range(batch, rows, batch):
        repo.record_many(results[i : i + batch])
    return (rows - batch) / (time.perf_counter() - t0)


def _span(seconds: int) -> str:
    return f"{seconds // 3600} h" if seconds % 3600 == 0 else f"{seconds // 60} min"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", required=True, help="Postgres URL of a database the bench may fill")
    ap.add_argument("--rows", type=int, default=100_000_000, help="inspections to generate")
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--cameras", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per panel and range")
    ap.add_argument("--write-rows", type=int, default=20_000, help="rows for the write-path timing")
    ap.add_argument("--no-panels", action="store_true", help="time only the write path")
    ap.add_argument("--out", type=Path, help="write the results as JSON here too")
    args = ap.parse_args()

    from qc_stream.settings import load_settings
    from qc_stream.storage import migrate
    from qc_stream.storage.db import make_engine

    migrate.upgrade(args.url)
    engine = make_engine(args.url)
    now = datetime.now(UTC).replace(microsecond=0)
    with engine.connect() as conn:
        existing = conn.execute(text("SELECT COUNT(*) FROM inspections")).scalar_one()
    if existing == 0:
        generate(engine, args.rows, args.days, args.cameras, now)
    with engine.connect() as conn:
        total = conn.execute(text("SELECT COUNT(*) FROM inspections")).scalar_one()
        revision = migrate.current(args.url)
    _log(f"{total} inspections at revision {revision}")
    panels = [] if args.no_panels else time_panels(engine, now, args.cameras, args.repeat)
    batch = load_settings().batch_size
    rate = time_writes(engine, args.write_rows, batch, args.cameras)
    engine.dispose()

    print(f"revision {revision}, {total} inspections over {args.days} days, {args.cameras} cameras")
    heads = " | ".join(f"{d} d @{_span(i)} ms" for d, i in RANGES)
    print(f"| panel | {heads} |\n|---|" + "---:|" * len(RANGES))
    by_panel: dict[str, dict[tuple, float]] = {}
    for p in panels:
        by_panel.setdefault(f"{p['dashboard']} / {p['panel']}", {})[p["days"], p["interval_s"]] = p[
            "ms"
        ]
    for name, ms in by_panel.items():
        print(f"| {name} | " + " | ".join(str(ms[r]) for r in RANGES) + " |")
    # QC_BATCH_SIZE sets the batch, as it does for the worker.
    print(f"write path: {rate:.0f} rows/s (batches of {batch}, one connection)")
    if args.out:
        args.out.write_text(
            json.dumps(
                {
                    "revision": revision,
                    "rows": total,
                    "panels": panels,
                    "write_rows_per_s": rate,
                    "batch": batch,
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
