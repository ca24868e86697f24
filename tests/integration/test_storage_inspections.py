"""InspectionRepository on real Postgres and SQLite: idempotent recording, counts, reads, trends,
and exact totals when several processes record overlapping frames at once."""

from __future__ import annotations

import multiprocessing as mp
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import func, select

from qc_stream.domain.inspection import InspectionResult, Region, Verdict
from qc_stream.storage import migrate
from qc_stream.storage.db import make_engine
from qc_stream.storage.inspections import InspectionRepository, TrendPoint
from qc_stream.storage.orm import DefectCountRow, InspectionRow

T0 = datetime(2026, 11, 26, 12, 0, 0, tzinfo=UTC)
VERDICTS = [Verdict.OK, Verdict.OK, Verdict.WARN, Verdict.REJECT]
DEFECTS = ["crack", "scratch", None]


def make_result(i: int, **over) -> InspectionResult:
    """Frame i: deterministic verdict, defect type, line, product and capture time (5 s apart)."""
    verdict = VERDICTS[i % 4]
    defect = DEFECTS[i % 3]
    fields = dict(
        frame_id=f"frame-{i:05d}",
        camera_id=f"cam-{i % 2}",
        line_id=f"L{i % 2}",
        product=["pill", "screw"][i % 2],
        captured_at=T0 + timedelta(seconds=5 * i),
        processed_at=T0 + timedelta(seconds=5 * i, milliseconds=40),
        verdict=verdict,
        anomaly_score={Verdict.OK: 0.1, Verdict.WARN: 0.6, Verdict.REJECT: 0.9}[verdict],
        defect_type=defect,
        defect_probs={defect: 0.8} if defect else {},
        regions=[Region(defect_type=defect, area_px=42, bbox=(1, 2, 10, 12), score=0.7)]
        if defect
        else [],
        model_version="qc-clip-tiny@1a2b3c4d",
        prompt_version="v1",
        latency_ms=12.5,
    )
    fields.update(over)
    return InspectionResult(**fields)


def expected_counts(indices) -> dict[tuple, tuple[int, int, int]]:
    out: dict[tuple, list[int]] = {}
    for i in set(indices):
        r = make_result(i)
        defect = "" if r.verdict == Verdict.OK else (r.defect_type or "")
        key = (r.captured_at.replace(second=0), r.line_id, r.product, defect)
        acc = out.setdefault(key, [0, 0, 0])
        acc[0] += 1
        acc[1] += r.verdict == Verdict.WARN
        acc[2] += r.verdict == Verdict.REJECT
    return {k: tuple(v) for k, v in out.items()}


def stored_counts(engine) -> dict[tuple, tuple[int, int, int]]:
    t = DefectCountRow
    with engine.connect() as c:
        rows = c.execute(
            select(t.bucket_start, t.line_id, t.product, t.defect_type, t.frames, t.warn, t.reject)
        )
        return {(b, line, p, d): (f, w, r) for b, line, p, d, f, w, r in rows}


@pytest.fixture(params=["postgres", "sqlite"])
def db_url(request):
    url = request.getfixturevalue("pg_url" if request.param == "postgres" else "sqlite_url")
    migrate.upgrade(url)
    return url


@pytest.fixture
def engine(db_url):
    engine = make_engine(db_url)
    yield engine
    engine.dispose()


@pytest.fixture
def repo(engine):
    return InspectionRepository(engine)


def test_recording_the_same_frame_twice_keeps_one_row_and_counts_once(repo, engine):
    first = make_result(3)  # reject, no defect type
    assert repo.record(first) is True
    # A redelivery, even with other values (reprocessed later), changes nothing.
    assert (
        repo.record(make_result(3, anomaly_score=0.95, processed_at=T0 + timedelta(hours=1)))
        is False
    )
    assert repo.count() == 1
    assert repo.get(first.frame_id) == first
    assert stored_counts(engine) == expected_counts([3])


def test_record_many_counts_only_new_frames_and_dedupes_within_a_batch(repo, engine):
    assert repo.record_many([make_result(i) for i in range(10)]) == 10
    assert repo.record_many([make_result(i) for i in [5, 9, 10, 11, 11, 12]]) == 3
    assert repo.record_many([]) == 0
    assert repo.count() == 13
    assert stored_counts(engine) == expected_counts(range(13))
    # ok frames are counted under "" whatever the detector's top type was.
    assert all(d == "" or w + r > 0 for (_, _, _, d), (_, w, r) in stored_counts(engine).items())


def test_large_batch_spans_several_statements(repo, engine):
    assert repo.record_many([make_result(i) for i in range(1200)]) == 1200
    assert repo.count() == 1200
    assert stored_counts(engine) == expected_counts(range(1200))


def test_round_trip_keeps_every_field_and_utc_times(repo):
    cet = timezone(timedelta(hours=1))
    r = make_result(2, captured_at=datetime(2026, 11, 26, 13, 0, 7, 123456, tzinfo=cet))
    repo.record(r)
    got = repo.get(r.frame_id)
    assert got == r
    assert got.captured_at.tzinfo is not None and got.captured_at.utcoffset() == timedelta(0)
    assert repo.get("no-such-frame") is None


def test_recent_and_count_filter_by_product(repo):
    repo.record_many([make_result(i) for i in range(8)])
    assert [r.frame_id for r in repo.recent(3)] == ["frame-00007", "frame-00006", "frame-00005"]
    assert [r.frame_id for r in repo.recent(2, product="pill")] == ["frame-00006", "frame-00004"]
    assert repo.count(product="screw") == 4
    assert repo.recent(0) == []


def test_trends_per_minute_hour_and_filters(repo):
    repo.record_many([make_result(i) for i in range(36)])  # 3 minutes of frames
    minute = repo.trends(since=T0, until=T0 + timedelta(minutes=1))
    assert {p.bucket_start for p in minute} == {T0}
    assert sum(p.frames for p in minute) == 12
    everything = repo.trends(granularity="hour")
    assert sum(p.frames for p in everything) == 36
    assert {p.bucket_start for p in everything} == {T0}
    assert sum(p.reject for p in everything) == 9 and sum(p.warn for p in everything) == 9
    pill_cracks = repo.trends(product="pill", defect_type="crack", granularity="day")
    assert pill_cracks == [
        TrendPoint(T0.replace(hour=0), "L0", "pill", "crack", frames=3, warn=3, reject=0),
    ]
    assert repo.trends(since=T0 + timedelta(hours=2)) == []


# --- several processes at once ---------------------------------------------------------------

WORKERS = 4
PER_WORKER = 60
STRIDE = 30  # worker k records frames [k*STRIDE, k*STRIDE + PER_WORKER): neighbours overlap by half


def _record_worker(url: str, k: int, start, out) -> None:
    engine = make_engine(url)
    repo = InspectionRepository(engine)
    frames = [make_result(i) for i in range(k * STRIDE, k * STRIDE + PER_WORKER)]
    if k % 2:
        frames.reverse()  # opposite orders make lock-ordering bugs show up as deadlocks
    start.wait()
    new = 0
    for j in range(0, len(frames), 20):
        chunk = frames[j : j + 20]
        if j % 40 == 0:
            new += sum(repo.record(r) for r in chunk)
        else:
            new += repo.record_many(chunk + chunk[:3])
    new += sum(repo.record(r) for r in frames[:10])  # a redelivery storm at the end
    engine.dispose()
    out.put(new)


def test_concurrent_processes_record_overlapping_frames_exactly_once(db_url, engine):
    ctx = mp.get_context("spawn")
    start, out = ctx.Barrier(WORKERS), ctx.Queue()  # all processes begin writing together
    procs = [
        ctx.Process(target=_record_worker, args=(db_url, k, start, out)) for k in range(WORKERS)
    ]
    for p in procs:
        p.start()
    news = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0

    distinct = set()
    for k in range(WORKERS):
        distinct.update(range(k * STRIDE, k * STRIDE + PER_WORKER))
    assert sum(news) == len(distinct)  # every frame reported new exactly once across processes
    with engine.connect() as c:
        assert c.execute(select(func.count()).select_from(InspectionRow)).scalar_one() == len(
            distinct
        )
    assert stored_counts(engine) == expected_counts(distinct)


def test_database_gone_mid_run_is_a_storage_error(pg_url):
    from sqlalchemy import create_engine, text

    from qc_stream.errors import StorageError

    migrate.upgrade(pg_url)
    engine = make_engine(pg_url)
    repo = InspectionRepository(engine)
    assert repo.record(make_result(1))
    # Connect to the server's maintenance database to drop ours from under the engine.
    admin = create_engine(engine.url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'DROP DATABASE "{engine.url.database}" WITH (FORCE)'))
    admin.dispose()
    with pytest.raises(StorageError, match="database error"):
        repo.record(make_result(2))
    with pytest.raises(StorageError, match="database error"):
        repo.count()
    engine.dispose()
