"""Day partitions of ``inspections`` (by ``processed_at``) and ``frame_ids`` (by ``captured_at``)
on Postgres, and retention (``prune``) on both backends.

Each partitioned table has one partition per UTC day, named ``<table>_pYYYYMMDD``, plus
``<table>_default`` so an insert for a day nobody created yet still succeeds. Creating a day whose
rows already sit in the default partition moves them into the new partition first (otherwise
Postgres refuses the new partition). All partition DDL runs under one advisory lock, so workers
and the prune job never race each other creating the same day.

Retention drops whole day partitions older than the limit (never row deletes on Postgres). The
roll-up tables are small (one row per minute and camera / prompt version), so their longer limit
is a plain DELETE on both backends.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from sqlalchemy import Engine, text
from sqlalchemy.engine import Connection

# table -> the column it is partitioned by
PARTITIONED = {"inspections": "processed_at", "frame_ids": "captured_at"}
# roll-up table -> its time column
ROLLUPS = {
    "defect_counts": "bucket_start",
    "defect_counts_hour": "bucket_start",
    "camera_minute": "bucket_start",
    "camera_hour": "bucket_start",
    "prompt_minute": "bucket_start",
    "prompt_hour": "bucket_start",
}
# Days created ahead of today by the writer and the prune job, so midnight needs no DDL.
DAYS_AHEAD = 2
_LOCK_KEY = 0x71635F70  # "qc_p": serialises partition DDL across processes


def day_of(t: datetime) -> date:
    return (t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)).date()


def partition_name(table: str, day: date) -> str:
    return f"{table}_p{day:%Y%m%d}"


def default_name(table: str) -> str:
    return f"{table}_default"


def _start(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=UTC)


def existing_days(conn: Connection, table: str) -> set[date]:
    """The days that have their own partition of ``table``."""
    rows = conn.execute(
        text(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = :t"
        ),
        {"t": table},
    ).scalars()
    prefix = f"{table}_p"
    days = set()
    for name in rows:
        if name.startswith(prefix) and name[len(prefix) :].isdigit():
            days.add(datetime.strptime(name[len(prefix) :], "%Y%m%d").date())
    return days


def create_default(conn: Connection, table: str) -> None:
    conn.execute(
        text(f'CREATE TABLE IF NOT EXISTS "{default_name(table)}" PARTITION OF "{table}" DEFAULT')
    )


def ensure_days(conn: Connection, table: str, days: Iterable[date]) -> list[date]:
    """Create the missing day partitions of ``table`` (inside the caller's transaction, under the
    partition lock); rows of those days already in the default partition move in. Returns the
    days created."""
    conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})
    have = existing_days(conn, table)
    column = PARTITIONED[table]
    created = []
    for day in sorted(set(days) - have):
        name, default = partition_name(table, day), default_name(table)
        bounds = {"lo": _start(day), "hi": _start(day + timedelta(days=1))}
        lo, hi = (f"'{bounds[k].isoformat()}'" for k in ("lo", "hi"))
        stranded = conn.execute(
            text(f'SELECT 1 FROM "{default}" WHERE {column} >= :lo AND {column} < :hi LIMIT 1'),
            bounds,
        ).first()
        if stranded is None:
            conn.execute(
                text(
                    f'CREATE TABLE "{name}" PARTITION OF "{table}" FOR VALUES FROM ({lo}) TO ({hi})'
                )
            )
        else:
            conn.execute(
                text(
                    f'CREATE TABLE "{name}" (LIKE "{table}" INCLUDING DEFAULTS INCLUDING CONSTRAINTS)'
                )
            )
            conn.execute(
                text(
                    f'WITH moved AS (DELETE FROM "{default}" WHERE {column} >= :lo AND {column} < :hi '
                    f'RETURNING *) INSERT INTO "{name}" SELECT * FROM moved'
                ),
                bounds,
            )
            conn.execute(
                text(
                    f'ALTER TABLE "{table}" ATTACH PARTITION "{name}" FOR VALUES FROM ({lo}) TO ({hi})'
                )
            )
        created.append(day)
    return created


def ensure_ahead(conn: Connection, today: date | None = None) -> dict[str, list[date]]:
    """Today's and the next ``DAYS_AHEAD`` days' partitions of every partitioned table."""
    today = today or datetime.now(UTC).date()
    days = [today + timedelta(days=i) for i in range(DAYS_AHEAD + 1)]
    return {t: ensure_days(conn, t, days) for t in PARTITIONED}


def stranded_days(conn: Connection, table: str) -> set[date]:
    """Days that have rows in the default partition (inserted before their partition existed)."""
    column = PARTITIONED[table]
    rows = conn.execute(
        text(
            f"SELECT DISTINCT CAST(date_trunc('day', {column} AT TIME ZONE 'UTC') AS date) "
            f'FROM "{default_name(table)}"'
        )
    ).scalars()
    return set(rows)


@dataclass(frozen=True)
class PrunePlan:
    """What ``prune`` removes: day partitions (Postgres) or row counts (SQLite), per table."""

    frames_before: datetime
    rollups_before: datetime
    partitions: dict[str, list[date]]  # Postgres: table -> days whose partitions go
    rows: dict[str, int]  # rows that go: frame tables (SQLite) and roll-ups (both)

    def lines(self) -> list[str]:
        out = [
            f"frames before {self.frames_before:%Y-%m-%d %H:%M} UTC, "
            f"roll-ups before {self.rollups_before:%Y-%m-%d %H:%M} UTC"
        ]
        for table, days in self.partitions.items():
            out += [f"drop partition {partition_name(table, d)}" for d in days]
        out += [f"delete {n} rows from {table}" for table, n in self.rows.items() if n]
        if len(out) == 1:
            out.append("nothing to prune")
        return out


def _cutoffs(
    retention_days: int, rollup_retention_days: int, now: datetime | None
) -> tuple[datetime, datetime]:
    if retention_days < 1 or rollup_retention_days < 1:
        raise ValueError("retention must be at least 1 day (today is never pruned)")
    midnight = _start((now or datetime.now(UTC)).astimezone(UTC).date())
    return (
        midnight - timedelta(days=retention_days),
        midnight - timedelta(days=rollup_retention_days),
    )


def plan_prune(
    conn: Connection,
    retention_days: int,
    rollup_retention_days: int,
    now: datetime | None = None,
) -> PrunePlan:
    """Frames (and frame ids) older than ``retention_days`` full UTC days, roll-ups older than
    ``rollup_retention_days``; a day goes only when all of it is older than the cutoff, so today
    and the last ``retention_days`` days always stay."""
    frames_before, rollups_before = _cutoffs(retention_days, rollup_retention_days, now)
    partitions: dict[str, list[date]] = {}
    rows: dict[str, int] = {}
    postgres = conn.dialect.name == "postgresql"
    for table, column in PARTITIONED.items():
        if postgres:
            days = existing_days(conn, table) | stranded_days(conn, table)
            partitions[table] = sorted(d for d in days if _start(d) < frames_before)
        else:
            rows[table] = _count_before(conn, table, column, frames_before)
    for table, column in ROLLUPS.items():
        rows[table] = _count_before(conn, table, column, rollups_before)
    return PrunePlan(frames_before, rollups_before, partitions, rows)


def _count_before(conn: Connection, table: str, column: str, before: datetime) -> int:
    return int(
        conn.execute(
            text(f"SELECT COUNT(*) FROM {table} WHERE {column} < :t"), {"t": _bind(conn, before)}
        ).scalar_one()
    )


def _bind(conn: Connection, t: datetime):
    # SQLite stores naive UTC text (see orm.UTCDateTime); compare in the same format.
    if conn.dialect.name == "sqlite":
        return t.astimezone(UTC).replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")
    return t


def execute_prune(engine: Engine, plan: PrunePlan) -> None:
    """Carry out ``plan``: on Postgres rows stranded in a default partition are first moved into
    their day partition (so the drop takes them), then day partitions are dropped whole."""
    with engine.begin() as conn:
        for table, days in plan.partitions.items():
            ensure_days(conn, table, days)  # creates days that only existed in the default
            for day in days:
                conn.execute(text(f'DROP TABLE IF EXISTS "{partition_name(table, day)}"'))
        if conn.dialect.name != "postgresql":
            for table, column in PARTITIONED.items():
                conn.execute(
                    text(f"DELETE FROM {table} WHERE {column} < :t"),
                    {"t": _bind(conn, plan.frames_before)},
                )
        for table, column in ROLLUPS.items():
            conn.execute(
                text(f"DELETE FROM {table} WHERE {column} < :t"),
                {"t": _bind(conn, plan.rollups_before)},
            )
        if conn.dialect.name == "postgresql":
            ensure_ahead(conn)


__all__ = [
    "DAYS_AHEAD",
    "PARTITIONED",
    "PrunePlan",
    "create_default",
    "day_of",
    "ensure_ahead",
    "ensure_days",
    "execute_prune",
    "existing_days",
    "partition_name",
    "plan_prune",
]
