"""Migration 0003 and the partitioned, rolled-up storage on real Postgres (and SQLite where it
applies): upgrade from 0002 holding rows and counts, downgrade, day partitions and the default
partition, replays across midnight, prune, and roll-ups against aggregates of the raw rows."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text

from qc_stream.domain.inspection import InspectionResult, Verdict
from qc_stream.storage import migrate, partitions
from qc_stream.storage.db import make_engine
from qc_stream.storage.inspections import InspectionRepository
from qc_stream.storage.rollups import LATENCY_COLUMNS, latency_bucket, latency_quantile

MIDNIGHT = datetime(2026, 3, 10, tzinfo=UTC)
QC_STREAM = Path(sys.executable).with_name("qc-stream")


def result(i: int, processed_at: datetime, **over) -> InspectionResult:
    verdict = [Verdict.OK, Verdict.WARN, Verdict.REJECT][i % 3]
    fields = dict(
        frame_id=f"frame-{i:05d}",
        camera_id=f"cam-{i % 3}",
        line_id=f"L{i % 2}",
        product="bottle",
        captured_at=processed_at - timedelta(milliseconds=200),
        processed_at=processed_at,
        verdict=verdict,
        anomaly_score=0.5,
        defect_type=None if verdict == Verdict.OK else "crack",
        model_version="qc-clip@v1",
        prompt_version="v1",
        latency_ms=10.0 + 7 * i,
    )
    fields.update(over)
    return InspectionResult(**fields)


@pytest.fixture(params=["postgres", "sqlite"])
def db_url(request):
    return request.getfixturevalue("pg_url" if request.param == "postgres" else "sqlite_url")


def _scalar(engine, sql: str, **params):
    with engine.connect() as conn:
        return conn.execute(text(sql), params).scalar_one()


def _rows(engine, sql: str, **params) -> list[tuple]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(sql), params)]


def _seed_0002(engine) -> None:
    """Rows and counts as the 0002 schema holds them, over two days, written as 0002 did."""
    with engine.begin() as conn:
        for i in range(40):
            t = MIDNIGHT + timedelta(minutes=37 * i - 600)
            conn.execute(
                text(
                    "INSERT INTO inspections (frame_id, camera_id, line_id, product, captured_at,"
                    " processed_at, verdict, anomaly_score, defect_type, defect_probs, regions,"
                    " model_version, prompt_version, latency_ms) VALUES (:f, :c, 'L1', 'bottle',"
                    " :t, :t, :v, 0.5, NULL, '{}', '[]', 'm@1', :p, :lat)"
                ),
                {
                    "f": f"old-{i}",
                    "c": f"cam-{i % 2}",
                    "t": t if engine.dialect.name == "postgresql" else _naive(t),
                    "v": ["ok", "reject"][i % 2],
                    "p": "v1" if i < 20 else "v2",
                    "lat": 20.0 + i,
                },
            )
        conn.execute(
            text(
                "INSERT INTO defect_counts (bucket_start, line_id, product, defect_type, frames,"
                " warn, reject) VALUES (:t, 'L1', 'bottle', '', 7, 1, 2)"
            ),
            {"t": MIDNIGHT if engine.dialect.name == "postgresql" else _naive(MIDNIGHT)},
        )


def _naive(t: datetime) -> str:
    return t.astimezone(UTC).replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")


def test_upgrade_from_0002_keeps_every_row_and_count_and_downgrades(db_url):
    migrate.upgrade(db_url, "0002")
    engine = make_engine(db_url)
    _seed_0002(engine)
    before = _rows(
        engine, "SELECT id, frame_id, processed_at, verdict FROM inspections ORDER BY id"
    )

    migrate.upgrade(db_url)
    assert migrate.current(db_url) == migrate.head()
    assert (
        _rows(engine, "SELECT id, frame_id, processed_at, verdict FROM inspections ORDER BY id")
        == before
    )
    assert _scalar(engine, "SELECT COUNT(*) FROM frame_ids") == 40
    assert _rows(engine, "SELECT frames, warn, reject FROM defect_counts") == [(7, 1, 2)]
    # Roll-ups were filled from the rows that were there.
    assert _scalar(engine, "SELECT SUM(frames) FROM camera_minute") == 40
    assert _scalar(engine, "SELECT SUM(reject) FROM camera_minute") == 20
    assert _scalar(engine, "SELECT SUM(reject) FROM camera_hour") == 20
    assert _scalar(engine, "SELECT SUM(frames) FROM prompt_hour") == 40
    assert _scalar(engine, "SELECT SUM(frames) FROM defect_counts_hour") == 7
    assert _rows(
        engine, "SELECT prompt_version, SUM(frames) FROM prompt_minute GROUP BY 1 ORDER BY 1"
    ) == [("v1", 20), ("v2", 20)]
    if engine.dialect.name == "postgresql":
        # the rows sit in their day partitions, none in the default, and ids are 64-bit
        days = {MIDNIGHT.date() - timedelta(days=1), MIDNIGHT.date()}
        assert days <= partitions.existing_days(engine.connect(), "inspections")
        assert _scalar(engine, "SELECT COUNT(*) FROM inspections_default") == 0
        assert (
            _scalar(
                engine,
                "SELECT data_type FROM information_schema.columns"
                " WHERE table_name = 'inspections' AND column_name = 'id'",
            )
            == "bigint"
        )
    # New frames get ids after the old ones; a replay of an old frame makes no row.
    repo = InspectionRepository(engine)
    assert repo.record(result(1, MIDNIGHT + timedelta(hours=3))) is True
    old = _rows(engine, "SELECT captured_at FROM inspections WHERE frame_id = 'old-3'")[0][0]
    replay = result(1, MIDNIGHT + timedelta(days=1), frame_id="old-3", captured_at=old)
    assert repo.record(replay) is False
    assert _scalar(engine, "SELECT MIN(id) FROM inspections WHERE frame_id = 'frame-00001'") > max(
        r[0] for r in before
    )

    migrate.downgrade(db_url, "0002")
    assert migrate.current(db_url) == "0002"
    assert _scalar(engine, "SELECT COUNT(*) FROM inspections") == 41
    assert _scalar(engine, "SELECT SUM(frames) FROM defect_counts") == 7 + 1  # + the new frame
    with pytest.raises(Exception, match="(?i)unique"), engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO inspections (frame_id, camera_id, line_id, product, captured_at,"
                " processed_at, verdict, anomaly_score, defect_probs, regions, model_version,"
                " prompt_version, latency_ms) SELECT frame_id, camera_id, line_id, product,"
                " captured_at, processed_at, verdict, anomaly_score, defect_probs, regions,"
                " model_version, prompt_version, latency_ms FROM inspections WHERE frame_id = 'old-3'"
            )
        )
    engine.dispose()


@pytest.fixture
def pg(pg_url):
    migrate.upgrade(pg_url)
    engine = make_engine(pg_url)
    yield engine
    engine.dispose()


def _rollup_totals(engine) -> tuple:
    return (
        _scalar(engine, "SELECT COUNT(*) FROM inspections"),
        _scalar(engine, "SELECT COALESCE(SUM(frames), 0) FROM defect_counts"),
        _scalar(engine, "SELECT COALESCE(SUM(frames), 0) FROM camera_minute"),
        _scalar(engine, "SELECT COALESCE(SUM(frames), 0) FROM prompt_minute"),
    )


def test_a_replay_across_midnight_lands_nowhere_and_counts_stay_exact(pg):
    repo = InspectionRepository(pg)
    # processed in the last seconds of the day ...
    batch = [result(i, MIDNIGHT - timedelta(seconds=10 - i)) for i in range(8)]
    assert repo.record_many(batch) == 8
    totals = _rollup_totals(pg)
    assert totals == (8, 8, 8, 8)
    # ... and redelivered after midnight: same frames, same capture times, new processing times
    replay = [r.model_copy(update={"processed_at": MIDNIGHT + timedelta(seconds=5)}) for r in batch]
    assert repo.record_many(replay) == 0
    assert repo.record_many(batch + replay) == 0
    assert _rollup_totals(pg) == totals
    day_before = partitions.partition_name("inspections", MIDNIGHT.date() - timedelta(days=1))
    assert _scalar(pg, f"SELECT COUNT(*) FROM {day_before}") == 8
    after = partitions.partition_name("inspections", MIDNIGHT.date())
    assert _scalar(pg, f"SELECT COUNT(*) FROM {after}") == 0
    # a batch straddling midnight goes to both days
    assert (
        repo.record_many([result(100 + i, MIDNIGHT + timedelta(seconds=i - 2)) for i in range(4)])
        == 4
    )
    assert _scalar(pg, f"SELECT COUNT(*) FROM {after}") == 2


def test_a_day_without_partition_goes_to_default_and_moves_out_when_created(pg):
    far = datetime(2031, 7, 4, 12, tzinfo=UTC)
    repo = InspectionRepository(pg, create_partitions=False)
    frames = [result(i, far + timedelta(minutes=i)) for i in range(5)]
    assert repo.record_many(frames) == 5
    assert _scalar(pg, "SELECT COUNT(*) FROM inspections_default") == 5
    assert _scalar(pg, "SELECT COUNT(*) FROM frame_ids_default") == 5
    replay = [r.model_copy(update={"processed_at": far + timedelta(hours=1)}) for r in frames]
    assert repo.record_many(replay) == 0  # still idempotent there
    with pg.begin() as conn:
        assert partitions.ensure_days(conn, "inspections", {far.date()}) == [far.date()]
        partitions.ensure_days(conn, "frame_ids", {far.date()})
    assert _scalar(pg, "SELECT COUNT(*) FROM inspections_default") == 0
    assert _scalar(pg, "SELECT COUNT(*) FROM inspections_p20310704") == 5
    assert _scalar(pg, "SELECT COUNT(*) FROM frame_ids_p20310704") == 5
    # the default repository creates the day itself
    later = far + timedelta(days=3)
    assert InspectionRepository(pg).record(result(50, later)) is True
    assert _scalar(pg, "SELECT COUNT(*) FROM inspections_p20310707") == 1
    assert _scalar(pg, "SELECT COUNT(*) FROM inspections_default") == 0


def test_prune_drops_only_whole_days_older_than_the_limit_never_today(pg):
    now = datetime.now(UTC)
    today = now.date()
    repo = InspectionRepository(pg)
    results = [result(i, now - timedelta(days=i)) for i in range(8)]  # one frame per day, 0..7 back
    assert repo.record_many(results) == 8
    # one stray row in the default partition, 9 days back
    InspectionRepository(pg, create_partitions=False).record(result(9, now - timedelta(days=9)))

    with pg.connect() as conn:
        plan = partitions.plan_prune(conn, retention_days=3, rollup_retention_days=5, now=now)
    old_days = [today - timedelta(days=d) for d in (9, 7, 6, 5, 4)]
    assert plan.partitions["inspections"] == old_days
    assert "drop partition inspections_p" + f"{today - timedelta(days=4):%Y%m%d}" in plan.lines()
    assert _scalar(pg, "SELECT COUNT(*) FROM inspections") == 9  # planning changed nothing

    partitions.execute_prune(pg, plan)
    with pg.connect() as conn:
        kept = partitions.existing_days(conn, "inspections")
    assert today in kept and today - timedelta(days=3) in kept
    assert not kept & set(old_days)
    assert _rows(pg, "SELECT frame_id FROM inspections ORDER BY frame_id") == [
        (f"frame-{i:05d}",) for i in range(4)
    ]
    assert _scalar(pg, "SELECT COUNT(*) FROM inspections_default") == 0
    # roll-ups: 5 days kept (rows of days 6, 7 and 9 gone)
    assert _scalar(pg, "SELECT SUM(frames) FROM camera_minute") == 6
    # a retention of 1 day still keeps today
    with pg.connect() as conn:
        plan = partitions.plan_prune(conn, retention_days=1, rollup_retention_days=1, now=now)
    assert today not in plan.partitions["inspections"]


def test_prune_on_sqlite_deletes_old_rows(sqlite_url):
    migrate.upgrade(sqlite_url)
    engine = make_engine(sqlite_url)
    now = datetime.now(UTC)
    InspectionRepository(engine).record_many([result(i, now - timedelta(days=i)) for i in range(6)])
    with engine.connect() as conn:
        plan = partitions.plan_prune(conn, retention_days=2, rollup_retention_days=4, now=now)
    assert plan.rows["inspections"] == 3 and plan.rows["frame_ids"] == 3
    partitions.execute_prune(engine, plan)
    assert _scalar(engine, "SELECT COUNT(*) FROM inspections") == 3
    assert _scalar(engine, "SELECT SUM(frames) FROM camera_minute") == 5
    engine.dispose()


def test_rollups_equal_aggregates_of_the_raw_rows_for_random_data(pg):
    rnd = random.Random(26)
    repo = InspectionRepository(pg)
    t0 = MIDNIGHT - timedelta(minutes=30)
    pool = []
    for i in range(600):
        pool.append(
            result(
                i,
                t0 + timedelta(seconds=rnd.uniform(0, 3600)),
                camera_id=f"cam-{rnd.randrange(4)}",
                line_id=f"L{rnd.randrange(2)}",
                prompt_version=rnd.choice(["v1", "v2"]),
                verdict=rnd.choice(list(Verdict)),
                latency_ms=rnd.lognormvariate(4.5, 0.8),
            )
        )
    # random batches, with replays of earlier frames mixed in
    for _ in range(60):
        batch = rnd.sample(pool, 25)
        repo.record_many(batch)
    cols = ", ".join(f"SUM({c})" for c in LATENCY_COLUMNS)
    rolled = {
        r[:4]: r[4:]
        for r in _rows(
            pg,
            "SELECT bucket_start, line_id, product, camera_id, SUM(frames), SUM(ok), SUM(warn),"
            f" SUM(reject), {cols} FROM camera_minute GROUP BY 1, 2, 3, 4",
        )
    }
    raw = _rows(
        pg,
        "SELECT date_trunc('minute', processed_at), line_id, product, camera_id, verdict,"
        " latency_ms FROM inspections",
    )
    expected: dict[tuple, list[int]] = defaultdict(lambda: [0] * (4 + len(LATENCY_COLUMNS)))
    for minute, line, product, camera, verdict, latency in raw:
        acc = expected[(minute, line, product, camera)]
        acc[0] += 1
        acc[1 + ["ok", "warn", "reject"].index(verdict)] += 1
        acc[4 + latency_bucket(latency)] += 1
    assert rolled == {k: tuple(v) for k, v in expected.items()}
    assert len(raw) == _scalar(pg, "SELECT COUNT(*) FROM frame_ids")
    # the hour roll-ups hold the same frames, per hour
    per_hour = (
        "SELECT date_trunc('hour', bucket_start, 'UTC'), camera_id, SUM(frames), SUM(reject),"
        f" {cols} FROM {{}} GROUP BY 1, 2 ORDER BY 1, 2"
    )
    assert _rows(pg, per_hour.format("camera_hour")) == _rows(pg, per_hour.format("camera_minute"))
    per_hour = (
        "SELECT date_trunc('hour', bucket_start, 'UTC'), prompt_version, SUM(frames),"
        " MIN(first_seen), MAX(last_seen) FROM {} GROUP BY 1, 2 ORDER BY 1, 2"
    )
    assert _rows(pg, per_hour.format("prompt_hour")) == _rows(pg, per_hour.format("prompt_minute"))
    per_hour = (
        "SELECT date_trunc('hour', bucket_start, 'UTC'), line_id, defect_type, SUM(frames),"
        " SUM(warn), SUM(reject) FROM {} GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
    )
    assert _rows(pg, per_hour.format("defect_counts_hour")) == _rows(
        pg, per_hour.format("defect_counts")
    )

    prompt = _rows(
        pg,
        "SELECT bucket_start, camera_id, prompt_version, SUM(frames), MIN(first_seen),"
        " MAX(last_seen) FROM prompt_minute GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
    )
    assert prompt == _rows(
        pg,
        "SELECT date_trunc('minute', processed_at), camera_id, prompt_version, COUNT(*),"
        " MIN(processed_at), MAX(processed_at) FROM inspections GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
    )
    assert _rows(
        pg,
        "SELECT bucket_start, line_id, SUM(frames), SUM(reject) FROM defect_counts"
        " GROUP BY 1, 2 ORDER BY 1, 2",
    ) == _rows(
        pg,
        "SELECT date_trunc('minute', captured_at), line_id, COUNT(*),"
        " SUM(CASE WHEN verdict = 'reject' THEN 1 ELSE 0 END) FROM inspections"
        " GROUP BY 1, 2 ORDER BY 1, 2",
    )
    # Postgres' qc_latency_quantile agrees with the Python twin on every camera's histogram.
    for key, values in rolled.items():
        counts = list(values[4:])
        for q in (0.5, 0.95):
            got = _scalar(pg, "SELECT qc_latency_quantile(CAST(:c AS bigint[]), :q)", c=counts, q=q)
            assert got == pytest.approx(latency_quantile(counts, q)), key


def test_cli_prune_prints_the_plan_first_and_dry_run_changes_nothing(pg, pg_url):
    now = datetime.now(UTC)
    InspectionRepository(pg).record_many([result(i, now - timedelta(days=2 * i)) for i in range(3)])
    env = {**os.environ, "QC_DATABASE_URL": pg_url, "QC_RETENTION_DAYS": "1"}
    old = f"inspections_p{(now - timedelta(days=4)).date():%Y%m%d}"

    dry = subprocess.run(
        [str(QC_STREAM), "db", "prune", "--dry-run"], capture_output=True, text=True, env=env
    )
    assert dry.returncode == 0, dry.stderr
    assert f"would drop partition {old}" in dry.stdout
    assert "pruned" not in dry.stdout
    assert _scalar(pg, "SELECT COUNT(*) FROM inspections") == 3

    real = subprocess.run([str(QC_STREAM), "db", "prune"], capture_output=True, text=True, env=env)
    assert real.returncode == 0, real.stderr
    lines = real.stdout.splitlines()
    assert lines.index(f"drop partition {old}") < lines.index(
        next(x for x in lines if x.startswith("pruned"))
    )
    assert _scalar(pg, "SELECT COUNT(*) FROM inspections") == 1
