"""The inspections repository: idempotent recording of results, plus the reads that trends need.

``record`` inserts with ``INSERT ... ON CONFLICT (frame_id) DO NOTHING RETURNING`` and, only when a
row came back (the frame is new), upserts the root-cause counts in the same transaction. Redelivered
frames therefore never make a second row nor move a count, even with several processes writing the
same frames at once (Postgres serialises the conflicting inserts on the unique index; SQLite holds
the write lock for the whole transaction).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from sqlalchemy import Engine, func, select
from sqlalchemy.engine import Connection

from qc_stream.domain.inspection import InspectionResult, Verdict
from qc_stream.storage.db import retry_transient, storage_errors, write_transaction
from qc_stream.storage.orm import DefectCountRow, InspectionRow

# Rows per INSERT statement: far below SQLite's bound-parameter limit (15 columns per row).
CHUNK = 500
CountKey = tuple[datetime, str, str, str]  # (bucket_start, line_id, product, defect_type)
Granularity = Literal["minute", "hour", "day"]


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
        model_version=row.model_version,
        prompt_version=row.prompt_version,
        latency_ms=row.latency_ms,
    )


class InspectionRepository:
    def __init__(self, engine: Engine):
        self.engine = engine

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

    def _write(self, batch: list[InspectionResult]) -> int:
        with write_transaction(self.engine) as conn:
            insert = _insert_for(conn)
            new_ids: set[str] = set()
            for i in range(0, len(batch), CHUNK):
                stmt = (
                    insert(InspectionRow)
                    .values([_row(r) for r in batch[i : i + CHUNK]])
                    .on_conflict_do_nothing(index_elements=["frame_id"])
                    .returning(InspectionRow.frame_id)
                )
                new_ids.update(conn.execute(stmt).scalars())
            fresh = [r for r in batch if r.frame_id in new_ids]
            self._bump_counts(conn, insert, fresh)
            return len(fresh)

    @staticmethod
    def _bump_counts(conn: Connection, insert, fresh: list[InspectionResult]) -> None:
        frames: Counter[CountKey] = Counter()
        warn: Counter[CountKey] = Counter()
        reject: Counter[CountKey] = Counter()
        for r in fresh:
            key = count_key(r)
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
        for i in range(0, len(rows), CHUNK):
            stmt = insert(DefectCountRow).values(rows[i : i + CHUNK])
            stmt = stmt.on_conflict_do_update(
                index_elements=["bucket_start", "line_id", "product", "defect_type"],
                set_={
                    "frames": DefectCountRow.frames + stmt.excluded.frames,
                    "warn": DefectCountRow.warn + stmt.excluded.warn,
                    "reject": DefectCountRow.reject + stmt.excluded.reject,
                },
            )
            conn.execute(stmt)

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
