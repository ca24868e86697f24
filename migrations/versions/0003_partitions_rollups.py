"""64-bit ids, day-partitioned inspections and frame_ids (Postgres), per-minute roll-ups

Postgres: ``inspections`` is rebuilt as a table range-partitioned by ``processed_at`` (a partition
per UTC day holding rows, today and the next days, and a default), keeping every row and id; its
unique ``frame_id`` becomes the ``frame_ids`` table (partitioned by ``captured_at``), which the
repository inserts into first. ``defect_counts.id`` becomes bigint. SQLite keeps plain tables.
Both: ``camera_minute`` and ``prompt_minute`` are created and filled from the existing rows, and
Postgres gets ``qc_latency_quantile`` for the latency panels.

Downgrade restores the 0002 tables with every row (one per frame id); it fails if an id no longer
fits a 32-bit integer.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

from qc_stream.storage import partitions
from qc_stream.storage.rollups import (
    LATENCY_COLUMNS,
    latency_bucket_sql,
    latency_quantile_function_sql,
)

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
INSPECTION_COLUMNS = (
    "id, frame_id, camera_id, line_id, product, captured_at, processed_at, verdict, "
    "anomaly_score, defect_type, defect_probs, regions, model_version, prompt_version, latency_ms"
)
OLD_INDEXES = {
    "ix_inspections_processed_at": ["processed_at"],
    "ix_inspections_line_product_processed": ["line_id", "product", "processed_at"],
    "ix_inspections_camera_processed": ["camera_id", "processed_at"],
}


def _is_pg() -> bool:
    return op.get_bind().dialect.name == "postgresql"


def _minute(column: str) -> str:
    if _is_pg():
        return f"date_trunc('minute', {column}, 'UTC')"
    # SQLite keeps naive UTC text in SQLAlchemy's format; a minute bucket is the same text.
    return f"strftime('%Y-%m-%d %H:%M:00.000000', {column})"


def _hour(column: str) -> str:
    if _is_pg():
        return f"date_trunc('hour', {column}, 'UTC')"
    return f"strftime('%Y-%m-%d %H:00:00.000000', {column})"


def _create_rollup_tables() -> None:
    for grain in ("minute", "hour"):
        _create_rollups(grain)
    op.create_table(
        "defect_counts_hour",
        sa.Column("bucket_start", TS, nullable=False),
        sa.Column("line_id", sa.String(128), nullable=False),
        sa.Column("product", sa.String(128), nullable=False),
        sa.Column("defect_type", sa.String(64), nullable=False),
        sa.Column("frames", sa.Integer(), nullable=False),
        sa.Column("warn", sa.Integer(), nullable=False),
        sa.Column("reject", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint(
            "bucket_start", "line_id", "product", "defect_type", name="pk_defect_counts_hour"
        ),
    )


def _create_rollups(grain: str) -> None:
    op.create_table(
        f"camera_{grain}",
        sa.Column("bucket_start", TS, nullable=False),
        sa.Column("line_id", sa.String(128), nullable=False),
        sa.Column("product", sa.String(128), nullable=False),
        sa.Column("camera_id", sa.String(128), nullable=False),
        sa.Column("frames", sa.Integer(), nullable=False),
        sa.Column("ok", sa.Integer(), nullable=False),
        sa.Column("warn", sa.Integer(), nullable=False),
        sa.Column("reject", sa.Integer(), nullable=False),
        sa.Column("latency_sum_ms", sa.Float(), nullable=False),
        *[sa.Column(c, sa.Integer(), nullable=False) for c in LATENCY_COLUMNS],
        sa.PrimaryKeyConstraint(
            "bucket_start", "line_id", "product", "camera_id", name=f"pk_camera_{grain}"
        ),
    )
    op.create_table(
        f"prompt_{grain}",
        sa.Column("bucket_start", TS, nullable=False),
        sa.Column("line_id", sa.String(128), nullable=False),
        sa.Column("product", sa.String(128), nullable=False),
        sa.Column("camera_id", sa.String(128), nullable=False),
        sa.Column("prompt_version", sa.String(64), nullable=False),
        sa.Column("model_version", sa.String(256), nullable=False),
        sa.Column("frames", sa.Integer(), nullable=False),
        sa.Column("first_seen", TS, nullable=False),
        sa.Column("last_seen", TS, nullable=False),
        sa.PrimaryKeyConstraint(
            "bucket_start",
            "line_id",
            "product",
            "camera_id",
            "prompt_version",
            "model_version",
            name=f"pk_prompt_{grain}",
        ),
    )


def backfill_rollups_sql(minute, hour) -> list[str]:
    """INSERT ... SELECT statements filling the roll-ups from ``inspections`` (minutes) and the
    hour roll-ups from the minute ones (``defect_counts_hour`` from ``defect_counts``)."""
    buckets = ", ".join(
        f"SUM(CASE WHEN {latency_bucket_sql('latency_ms', i)} THEN 1 ELSE 0 END)"
        for i in range(len(LATENCY_COLUMNS))
    )
    return [
        f"""INSERT INTO camera_minute (bucket_start, line_id, product, camera_id, frames, ok, warn,
            reject, latency_sum_ms, {", ".join(LATENCY_COLUMNS)})
        SELECT {minute("processed_at")}, line_id, product, camera_id, COUNT(*),
            SUM(CASE WHEN verdict = 'ok' THEN 1 ELSE 0 END),
            SUM(CASE WHEN verdict = 'warn' THEN 1 ELSE 0 END),
            SUM(CASE WHEN verdict = 'reject' THEN 1 ELSE 0 END),
            SUM(latency_ms), {buckets}
        FROM inspections GROUP BY 1, 2, 3, 4""",
        f"""INSERT INTO prompt_minute (bucket_start, line_id, product, camera_id, prompt_version,
            model_version, frames, first_seen, last_seen)
        SELECT {minute("processed_at")}, line_id, product, camera_id, prompt_version,
            model_version, COUNT(*), MIN(processed_at), MAX(processed_at)
        FROM inspections GROUP BY 1, 2, 3, 4, 5, 6""",
        f"""INSERT INTO camera_hour (bucket_start, line_id, product, camera_id, frames, ok, warn,
            reject, latency_sum_ms, {", ".join(LATENCY_COLUMNS)})
        SELECT {hour("bucket_start")}, line_id, product, camera_id, SUM(frames), SUM(ok),
            SUM(warn), SUM(reject), SUM(latency_sum_ms),
            {", ".join(f"SUM({c})" for c in LATENCY_COLUMNS)}
        FROM camera_minute GROUP BY 1, 2, 3, 4""",
        f"""INSERT INTO prompt_hour (bucket_start, line_id, product, camera_id, prompt_version,
            model_version, frames, first_seen, last_seen)
        SELECT {hour("bucket_start")}, line_id, product, camera_id, prompt_version,
            model_version, SUM(frames), MIN(first_seen), MAX(last_seen)
        FROM prompt_minute GROUP BY 1, 2, 3, 4, 5, 6""",
        f"""INSERT INTO defect_counts_hour (bucket_start, line_id, product, defect_type, frames,
            warn, reject)
        SELECT {hour("bucket_start")}, line_id, product, defect_type, SUM(frames), SUM(warn),
            SUM(reject)
        FROM defect_counts GROUP BY 1, 2, 3, 4""",
    ]


def _create_partitioned_pg() -> None:
    bind = op.get_bind()
    op.execute("""
        CREATE TABLE inspections (
            id bigserial NOT NULL,
            frame_id varchar(128) NOT NULL,
            camera_id varchar(128) NOT NULL,
            line_id varchar(128) NOT NULL,
            product varchar(128) NOT NULL,
            captured_at timestamptz NOT NULL,
            processed_at timestamptz NOT NULL,
            verdict varchar(8) NOT NULL,
            anomaly_score double precision NOT NULL,
            defect_type varchar(64),
            defect_probs json NOT NULL,
            regions json NOT NULL,
            model_version varchar(256) NOT NULL,
            prompt_version varchar(64) NOT NULL,
            latency_ms double precision NOT NULL,
            CONSTRAINT pk_inspections PRIMARY KEY (id, processed_at)
        ) PARTITION BY RANGE (processed_at)""")
    op.execute("CREATE INDEX ix_inspections_processed_at ON inspections (processed_at)")
    op.execute("CREATE INDEX ix_inspections_frame_id ON inspections (frame_id)")
    op.execute(
        "CREATE INDEX ix_inspections_rejects ON inspections (processed_at) WHERE verdict = 'reject'"
    )
    op.execute("""
        CREATE TABLE frame_ids (
            frame_id varchar(128) NOT NULL,
            captured_at timestamptz NOT NULL,
            CONSTRAINT pk_frame_ids PRIMARY KEY (frame_id, captured_at)
        ) PARTITION BY RANGE (captured_at)""")
    for table in partitions.PARTITIONED:
        partitions.create_default(bind, table)


def _day_set(table: str, column: str) -> set:
    rows = op.get_bind().execute(
        sa.text(
            f"SELECT DISTINCT CAST(date_trunc('day', {column} AT TIME ZONE 'UTC') AS date) "
            f"FROM {table}"
        )
    )
    return set(rows.scalars())


def _upgrade_pg() -> None:
    bind = op.get_bind()
    op.execute("ALTER TABLE defect_counts ALTER COLUMN id TYPE bigint")
    op.execute("ALTER SEQUENCE defect_counts_id_seq AS bigint")

    op.execute("ALTER TABLE inspections RENAME TO inspections_0002")
    op.execute("ALTER SEQUENCE inspections_id_seq RENAME TO inspections_0002_id_seq")
    for name in ["pk_inspections", "uq_inspections_frame_id", *OLD_INDEXES]:
        op.execute(f"ALTER INDEX {name} RENAME TO {name}_0002")
    _create_partitioned_pg()
    today = datetime.now(UTC).date()
    partitions.ensure_days(
        bind, "inspections", _day_set("inspections_0002", "processed_at") | {today}
    )
    partitions.ensure_days(bind, "frame_ids", _day_set("inspections_0002", "captured_at") | {today})
    partitions.ensure_ahead(bind, today)
    op.execute(
        f"INSERT INTO inspections ({INSPECTION_COLUMNS}) "
        f"SELECT {INSPECTION_COLUMNS} FROM inspections_0002"
    )
    op.execute(
        "SELECT setval('inspections_id_seq', COALESCE(MAX(id), 1), MAX(id) IS NOT NULL) "
        "FROM inspections"
    )
    op.execute(
        "INSERT INTO frame_ids (frame_id, captured_at) SELECT frame_id, captured_at FROM inspections_0002"
    )
    op.execute("DROP TABLE inspections_0002")
    op.execute(latency_quantile_function_sql())


def _upgrade_sqlite() -> None:
    with op.batch_alter_table("inspections") as batch:
        batch.drop_constraint("uq_inspections_frame_id", type_="unique")
        batch.drop_index("ix_inspections_line_product_processed")
        batch.drop_index("ix_inspections_camera_processed")
        batch.create_index("ix_inspections_frame_id", ["frame_id"])
        batch.create_index(
            "ix_inspections_rejects", ["processed_at"], sqlite_where=sa.text("verdict = 'reject'")
        )
    op.create_table(
        "frame_ids",
        sa.Column("frame_id", sa.String(128), nullable=False),
        sa.Column("captured_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("frame_id", "captured_at", name="pk_frame_ids"),
    )
    op.execute(
        "INSERT INTO frame_ids (frame_id, captured_at) SELECT frame_id, captured_at FROM inspections"
    )


def upgrade() -> None:
    if _is_pg():
        _upgrade_pg()
    else:
        _upgrade_sqlite()
    _create_rollup_tables()
    for statement in backfill_rollups_sql(_minute, _hour):
        op.execute(statement)


def downgrade() -> None:
    for table in ("defect_counts_hour", "prompt_hour", "camera_hour", "prompt_minute"):
        op.drop_table(table)
    op.drop_table("camera_minute")
    if _is_pg():
        _downgrade_pg()
    else:
        _downgrade_sqlite()


def _create_plain_inspections() -> None:
    op.create_table(
        "inspections",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("frame_id", sa.String(128), nullable=False),
        sa.Column("camera_id", sa.String(128), nullable=False),
        sa.Column("line_id", sa.String(128), nullable=False),
        sa.Column("product", sa.String(128), nullable=False),
        sa.Column("captured_at", TS, nullable=False),
        sa.Column("processed_at", TS, nullable=False),
        sa.Column("verdict", sa.String(8), nullable=False),
        sa.Column("anomaly_score", sa.Float(), nullable=False),
        sa.Column("defect_type", sa.String(64), nullable=True),
        sa.Column("defect_probs", sa.JSON(), nullable=False),
        sa.Column("regions", sa.JSON(), nullable=False),
        sa.Column("model_version", sa.String(256), nullable=False),
        sa.Column("prompt_version", sa.String(64), nullable=False),
        sa.Column("latency_ms", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_inspections"),
        sa.UniqueConstraint("frame_id", name="uq_inspections_frame_id"),
    )
    for name, columns in OLD_INDEXES.items():
        op.create_index(name, "inspections", columns)


def _downgrade_pg() -> None:
    op.execute("DROP FUNCTION IF EXISTS qc_latency_quantile(bigint[], double precision)")
    op.execute("ALTER TABLE inspections RENAME TO inspections_0003")
    op.execute("ALTER SEQUENCE inspections_id_seq RENAME TO inspections_0003_id_seq")
    for name in ["pk_inspections", "ix_inspections_processed_at"]:
        op.execute(f"ALTER INDEX {name} RENAME TO {name}_0003")
    _create_plain_inspections()
    # One row per frame id, as the 0002 unique constraint demands (the first recorded wins).
    op.execute(
        f"INSERT INTO inspections ({INSPECTION_COLUMNS}) "
        f"SELECT DISTINCT ON (frame_id) {INSPECTION_COLUMNS} FROM inspections_0003 "
        "ORDER BY frame_id, id"
    )
    op.execute(
        "SELECT setval('inspections_id_seq', COALESCE(MAX(id), 1), MAX(id) IS NOT NULL) "
        "FROM inspections"
    )
    op.execute("DROP TABLE inspections_0003")
    op.execute("DROP TABLE frame_ids")
    op.execute("ALTER TABLE defect_counts ALTER COLUMN id TYPE integer")
    op.execute("ALTER SEQUENCE defect_counts_id_seq AS integer")


def _downgrade_sqlite() -> None:
    op.drop_table("frame_ids")
    op.execute(
        "DELETE FROM inspections WHERE id NOT IN (SELECT MIN(id) FROM inspections GROUP BY frame_id)"
    )
    with op.batch_alter_table("inspections") as batch:
        batch.drop_index("ix_inspections_rejects")
        batch.drop_index("ix_inspections_frame_id")
        batch.create_unique_constraint("uq_inspections_frame_id", ["frame_id"])
        batch.create_index(
            "ix_inspections_line_product_processed", ["line_id", "product", "processed_at"]
        )
        batch.create_index("ix_inspections_camera_processed", ["camera_id", "processed_at"])
