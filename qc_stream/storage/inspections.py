"""The inspections repository: idempotent recording of results, plus the reads that trends need.

``record_many`` writes a batch in one transaction: it inserts the frame ids into ``frame_ids``
with ``ON CONFLICT DO NOTHING RETURNING``, and only for the ids that came back (new frames) inserts
the inspection rows and adds them to every roll-up (``defect_counts`` per capture minute,
``camera_minute`` and ``prompt_minute`` per processing minute). Redelivered frames therefore
never make a second row nor move a count, even with several processes writing the same frames at
once (Postgres serialises the conflicting inserts on the ``frame_ids`` key; SQLite holds the write
lock for the whole transaction). ``frame_ids`` is keyed by ``(frame_id, captured_at)``: a replay
carries the frame's capture time unchanged, so it conflicts even when it is processed after
midnight, in another ``inspections`` partition.

On Postgres the writer creates the day partitions its batch needs (and the next days) before
writing, once per day per process; see ``qc_stream.storage.partitions``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from sqlalchemy import Engine, func, select
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from qc_stream.domain.inspection import InspectionResult, Verdict
from qc_stream.storage import partitions
from qc_stream.storage.db import retry_transient, storage_errors, write_transaction
from qc_stream.storage.orm import (
    CameraHourRow,
    CameraMinuteRow,
    DefectCountRow,
    DefectHourRow,
    FrameIdRow,
    InspectionRow,
    PromptHourRow,
    PromptMinuteRow,
)
from qc_stream.storage.rollups import LATENCY_COLUMNS, latency_bucket

# Rows per INSERT statement: far below SQLite's bound-parameter limit (15 columns per row).
CHUNK = 500
CountKey = tuple[datetime, str, str, str]  # (bucket_start, line_id, product, defect_type)
Granularity = Literal["minute", "hour", "day"]
PROMPT_KEY = ("bucket_start", "line_id", "product", "camera_id", "prompt_version", "model_version")


@dataclass(frozen=True)
class TrendPoint:
    """Counts for one (bucket, line, product, defect type); ``defect_type`` is "" for ok frames."""

    bucket_start: datetime
    line_id: str
    product: str
    defect_type: str
    frames: int
    warn: int
    reject: int


def bucket_of(captured_at: datetime) -> datetime:
    """The count bucket of a frame: its capture time in UTC, floored to the minute."""
    t = (
        captured_at.replace(tzinfo=UTC)
        if captured_at.tzinfo is None
        else captured_at.astimezone(UTC)
    )
    return t.replace(second=0, microsecond=0)


def hour_of(t: datetime) -> datetime:
    """The hour roll-up bucket of a time: UTC, floored to the hour."""
    return bucket_of(t).replace(minute=0)


def count_key(result: InspectionResult) -> CountKey:
    """Where a result is counted: ok frames count under defect type ""."""
    defect = "" if result.verdict == Verdict.OK else (result.defect_type or "")
    return (bucket_of(result.captured_at), result.line_id, result.product, defect)


def _insert_for(conn: Connection):
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert


@contextmanager
def _pipeline(conn: Connection) -> Iterator[None]:
    """psycopg's pipeline mode on Postgres (statements sent without waiting for each result);
    nothing on SQLite, which has no round trips. A server error that surfaces only when the
    pipeline syncs is raised as SQLAlchemy's ``DBAPIError``, like any other, so deadlocks are
    retried and the rest become ``StorageError``."""
    if conn.dialect.name != "postgresql":
        yield
        return
    import psycopg

    try:
        with conn.connection.driver_connection.pipeline():
            yield
    except psycopg.Error as e:
        raise DBAPIError.instance(None, None, e, psycopg.Error) from e


def _row(result: InspectionResult) -> dict:
    return {
        "frame_id": result.frame_id,
        "camera_id": result.camera_id,
        "line_id": result.line_id,
        "product": result.product,
        "captured_at": result.captured_at,
        "processed_at": result.processed_at,
        "verdict": result.verdict.value,
        "anomaly_score": result.anomaly_score,
        "defect_type": result.defect_type,
        "defect_probs": dict(result.defect_probs),
        "regions": [r.model_dump(mode="json") for r in result.regions],
        "thresholds": result.thresholds.model_dump(mode="json") if result.thresholds else None,
        "candidate_words": list(result.candidate_words),
        "model_version": result.model_version,
        "prompt_version": result.prompt_version,
        "latency_ms": result.latency_ms,
    }


def _result(row: InspectionRow) -> InspectionResult:
    return InspectionResult(
        frame_id=row.frame_id,
        camera_id=row.camera_id,
        line_id=row.line_id,
        product=row.product,
        captured_at=row.captured_at,
        processed_at=row.processed_at,
        verdict=Verdict(row.verdict),
        anomaly_score=row.anomaly_score,
        defect_type=row.defect_type,
        defect_probs=row.defect_probs or {},
        regions=row.regions or [],
        thresholds=row.thresholds,
        candidate_words=row.candidate_words or [],
        model_version=row.model_version,
        prompt_version=row.prompt_version,
        latency_ms=row.latency_ms,
    )


class InspectionRepository:
    def __init__(self, engine: Engine, *, create_partitions: bool = True):
        """``create_partitions=False`` leaves partition DDL to the prune job (rows of a day
        without a partition then land in the default partition)."""
        self.engine = engine
        self.create_partitions = create_partitions and engine.dialect.name == "postgresql"
        self._days_ready: dict[str, set] = {t: set() for t in partitions.PARTITIONED}

    # --- writes ---
    def record(self, result: InspectionResult) -> bool:
        """Store one inspection; True when the frame was new (and its counts moved)."""
        return self.record_many([result]) == 1

    def record_many(self, results: Iterable[InspectionResult]) -> int:
        """Store a batch in one transaction; returns how many frames were new."""
        unique: dict[str, InspectionResult] = {}
        for r in results:
            unique.setdefault(r.frame_id, r)
        if not unique:
            return 0
        # A fixed lock order (frame ids, then count keys, both sorted) keeps concurrent Postgres
        # writers of overlapping batches from deadlocking each other.
        batch = [unique[k] for k in sorted(unique)]
        return retry_transient(lambda: self._write(batch))

    def _ensure_partitions(self, batch: list[InspectionResult]) -> None:
        needed = {
            "inspections": {partitions.day_of(r.processed_at) for r in batch},
            "frame_ids": {partitions.day_of(r.captured_at) for r in batch},
        }
        missing = {t: days - self._days_ready[t] for t, days in needed.items()}
        if not any(missing.values()):
            return
        today = datetime.now(UTC).date()
        ahead = {today + timedelta(days=i) for i in range(partitions.DAYS_AHEAD + 1)}
        with self.engine.begin() as conn:
            for table, days in missing.items():
                if days:
                    have = partitions.existing_days(conn, table)
                    if not days <= have:
                        partitions.ensure_days(conn, table, days | ahead)
                        have |= days | ahead
                    self._days_ready[table] |= have

    def _write(self, batch: list[InspectionResult]) -> int:
        if self.create_partitions:
            self._ensure_partitions(batch)
        with write_transaction(self.engine) as conn:
            insert = _insert_for(conn)
            # One statement per table, executed with a list of rows, so each is compiled once
            # (SQLAlchemy's cache). The guard's RETURNING needs its own round trip; on Postgres
            # everything after it goes in one psycopg pipeline: one round trip for seven tables.
            guard = (
                insert(FrameIdRow)
                .on_conflict_do_nothing(index_elements=["frame_id", "captured_at"])
                .returning(FrameIdRow.frame_id)
            )
            ids = [{"frame_id": r.frame_id, "captured_at": r.captured_at} for r in batch]
            new_ids = set(conn.execute(guard, ids).scalars())
            fresh = [r for r in batch if r.frame_id in new_ids]
            if not fresh:
                return 0
            with _pipeline(conn):
                # inline(): no RETURNING of the new id, which a pipeline cannot wait for.
                conn.execute(insert(InspectionRow).inline(), [_row(r) for r in fresh])
                for table, floor in ((DefectCountRow, bucket_of), (DefectHourRow, hour_of)):
                    self._bump_counts(conn, insert, fresh, table, floor)
                for table, floor in ((CameraMinuteRow, bucket_of), (CameraHourRow, hour_of)):
                    self._bump_cameras(conn, insert, fresh, table, floor)
                for table, floor in ((PromptMinuteRow, bucket_of), (PromptHourRow, hour_of)):
                    self._bump_prompts(conn, insert, fresh, table, floor)
            return len(fresh)

    @staticmethod
    def _bump_cameras(
        conn: Connection, insert, fresh: list[InspectionResult], table, floor
    ) -> None:
        acc: dict[tuple, dict] = {}
        for r in fresh:
            key = (floor(r.processed_at), r.line_id, r.product, r.camera_id)
            row = acc.get(key)
            if row is None:
                row = acc[key] = dict(
                    zip(("bucket_start", "line_id", "product", "camera_id"), key, strict=True),
                    frames=0,
                    ok=0,
                    warn=0,
                    reject=0,
                    latency_sum_ms=0.0,
                    **dict.fromkeys(LATENCY_COLUMNS, 0),
                )
            row["frames"] += 1
            row[r.verdict.value] += 1
            row["latency_sum_ms"] += r.latency_ms
            row[LATENCY_COLUMNS[latency_bucket(r.latency_ms)]] += 1
        rows = [acc[k] for k in sorted(acc)]
        t = table.__table__
        added = ["frames", "ok", "warn", "reject", "latency_sum_ms", *LATENCY_COLUMNS]
        stmt = insert(table).inline()
        stmt = stmt.on_conflict_do_update(
            index_elements=["bucket_start", "line_id", "product", "camera_id"],
            set_={c: t.c[c] + stmt.excluded[c] for c in added},
        )
        conn.execute(stmt, rows)

    @staticmethod
    def _bump_prompts(
        conn: Connection, insert, fresh: list[InspectionResult], table, floor
    ) -> None:
        acc: dict[tuple, dict] = {}
        for r in fresh:
            key = (
                floor(r.processed_at),
                r.line_id,
                r.product,
                r.camera_id,
                r.prompt_version,
                r.model_version,
            )
            row = acc.get(key)
            if row is None:
                row = acc[key] = dict(
                    zip(PROMPT_KEY, key, strict=True),
                    frames=0,
                    first_seen=r.processed_at,
                    last_seen=r.processed_at,
                )
            row["frames"] += 1
            row["first_seen"] = min(row["first_seen"], r.processed_at)
            row["last_seen"] = max(row["last_seen"], r.processed_at)
        rows = [acc[k] for k in sorted(acc)]
        t = table.__table__.c
        # SQLite's two-argument min()/max() are Postgres' least()/greatest().
        least, greatest = (
            (func.least, func.greatest)
            if conn.dialect.name == "postgresql"
            else (func.min, func.max)
        )
        stmt = insert(table).inline()
        stmt = stmt.on_conflict_do_update(
            index_elements=list(PROMPT_KEY),
            set_={
                "frames": t.frames + stmt.excluded.frames,
                "first_seen": least(t.first_seen, stmt.excluded.first_seen),
                "last_seen": greatest(t.last_seen, stmt.excluded.last_seen),
            },
        )
        conn.execute(stmt, rows)

    @staticmethod
    def _bump_counts(conn: Connection, insert, fresh: list[InspectionResult], table, floor) -> None:
        frames: Counter[CountKey] = Counter()
        warn: Counter[CountKey] = Counter()
        reject: Counter[CountKey] = Counter()
        for r in fresh:
            minute, line, product, defect = count_key(r)
            key = (floor(minute), line, product, defect)
            frames[key] += 1
            warn[key] += r.verdict == Verdict.WARN
            reject[key] += r.verdict == Verdict.REJECT
        rows = [
            {
                "bucket_start": k[0],
                "line_id": k[1],
                "product": k[2],
                "defect_type": k[3],
                "frames": frames[k],
                "warn": warn[k],
                "reject": reject[k],
            }
            for k in sorted(frames)
        ]
        t = table.__table__.c
        stmt = insert(table).inline()
        stmt = stmt.on_conflict_do_update(
            index_elements=["bucket_start", "line_id", "product", "defect_type"],
            set_={
                "frames": t.frames + stmt.excluded.frames,
                "warn": t.warn + stmt.excluded.warn,
                "reject": t.reject + stmt.excluded.reject,
            },
        )
        conn.execute(stmt, rows)

    # --- reads ---
    def get(self, frame_id: str) -> InspectionResult | None:
        with storage_errors(), self.engine.connect() as conn:
            row = conn.execute(
                select(InspectionRow).where(InspectionRow.frame_id == frame_id)
            ).first()
        return _result(row) if row else None

    def recent(self, limit: int = 50, product: str | None = None) -> list[InspectionResult]:
        """The newest inspections (by processed time), optionally for one product."""
        stmt = select(InspectionRow).order_by(
            InspectionRow.processed_at.desc(), InspectionRow.id.desc()
        )
        if product is not None:
            stmt = stmt.where(InspectionRow.product == product)
        with storage_errors(), self.engine.connect() as conn:
            return [_result(r) for r in conn.execute(stmt.limit(max(0, limit)))]

    def count(self, product: str | None = None) -> int:
        stmt = select(func.count()).select_from(InspectionRow)
        if product is not None:
            stmt = stmt.where(InspectionRow.product == product)
        with storage_errors(), self.engine.connect() as conn:
            return int(conn.execute(stmt).scalar_one())

    def trends(
        self,
        since: datetime | None = None,
        until: datetime | None = None,
        *,
        granularity: Granularity = "minute",
        line_id: str | None = None,
        product: str | None = None,
        defect_type: str | None = None,
    ) -> list[TrendPoint]:
        """Counts per (bucket, line, product, defect type) with ``since <= bucket < until``.

        Stored buckets are minutes; ``hour`` and ``day`` roll them up (portably, in Python).
        Sorted by bucket, line, product, defect type.
        """
        t = DefectCountRow
        stmt = select(
            t.bucket_start, t.line_id, t.product, t.defect_type, t.frames, t.warn, t.reject
        )
        if since is not None:
            stmt = stmt.where(t.bucket_start >= bucket_of(since))
        if until is not None:
            stmt = stmt.where(t.bucket_start < until)
        if line_id is not None:
            stmt = stmt.where(t.line_id == line_id)
        if product is not None:
            stmt = stmt.where(t.product == product)
        if defect_type is not None:
            stmt = stmt.where(t.defect_type == defect_type)
        _floor(datetime.now(UTC), granularity)  # reject a bad granularity up front
        totals: dict[CountKey, list[int]] = {}
        with storage_errors(), self.engine.connect() as conn:
            for b, line, prod, defect, frames, warn, reject in conn.execute(stmt):
                key = (_floor(b, granularity), line, prod, defect)
                acc = totals.setdefault(key, [0, 0, 0])
                acc[0] += frames
                acc[1] += warn
                acc[2] += reject
        return [TrendPoint(*k, *v) for k, v in sorted(totals.items())]


def _floor(t: datetime, granularity: Granularity) -> datetime:
    t = t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)
    if granularity == "minute":
        return t.replace(second=0, microsecond=0)
    if granularity == "hour":
        return t.replace(minute=0, second=0, microsecond=0)
    if granularity == "day":
        return t.replace(hour=0, minute=0, second=0, microsecond=0)
    raise ValueError(f"granularity must be minute, hour or day, not {granularity!r}")


__all__ = ["InspectionRepository", "TrendPoint", "bucket_of", "count_key"]
