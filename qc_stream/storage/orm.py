"""SQLAlchemy 2 table mappings. The schema changes only through Alembic revisions in migrations/."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Name constraints so Alembic revisions are stable across Postgres and SQLite.
NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    pass


Base.metadata.naming_convention = NAMING


class UTCDateTime(TypeDecorator):
    """A timestamp stored as UTC and always read back timezone-aware (UTC).

    Postgres keeps ``timestamptz``; SQLite has no time zones, so values are stored as naive UTC text
    and get ``tzinfo=UTC`` back on read. Naive inputs are taken to be UTC already.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


TS = UTCDateTime()


class DefectTypeRow(Base):
    """A defect type registered for a product; unique per product ignoring case (``name_key``)."""

    __tablename__ = "defect_types"
    __table_args__ = (UniqueConstraint("product", "name_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    product: Mapped[str] = mapped_column(String(128), nullable=False)
    name: Mapped[str] = mapped_column(String(64), nullable=False)
    name_key: Mapped[str] = mapped_column(String(64), nullable=False)  # casefolded name
    description: Mapped[str] = mapped_column(Text, nullable=False, default="")
    root_cause: Mapped[str | None] = mapped_column(Text)
    corrective_action: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(
        String(16), nullable=False, default="active"
    )  # active|retired
    created_at: Mapped[datetime] = mapped_column(TS, nullable=False, server_default=func.now())
    retired_at: Mapped[datetime | None] = mapped_column(TS)


class ModelVersionRow(Base):
    """A prompt version: which backbone it was made for, its vocabulary and metrics."""

    __tablename__ = "model_versions"

    prompt_version: Mapped[str] = mapped_column(String(64), primary_key=True)
    backbone: Mapped[str] = mapped_column(String(256), nullable=False)
    vocabulary: Mapped[dict] = mapped_column(
        JSON, nullable=False, default=dict
    )  # product -> [words]
    metrics: Mapped[dict] = mapped_column(JSON, nullable=False, default=dict)
    kind: Mapped[str] = mapped_column(
        String(16), nullable=False, default="trained"
    )  # trained|zero-shot
    parent_version: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(TS, nullable=False, server_default=func.now())
    active: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    # sha256 of the version's files at registration (qc_stream.dapo.checkpoint.version_sha256);
    # workers refuse to swap to a version whose files no longer match. NULL: recorded before 0002.
    sha256: Mapped[str | None] = mapped_column(String(64))


# 64-bit ids on Postgres; SQLite keeps INTEGER (its rowid alias, already 64-bit).
BigId = BigInteger().with_variant(Integer(), "sqlite")


class InspectionRow(Base):
    """One row per frame. On Postgres the table is range-partitioned by ``processed_at`` (one
    partition per UTC day plus a default; see ``qc_stream.storage.partitions``), so its primary key
    there is ``(id, processed_at)`` and the one-row-per-frame guarantee lives in ``frame_ids``."""

    __tablename__ = "inspections"
    __table_args__ = (
        Index("ix_inspections_processed_at", "processed_at"),
        Index("ix_inspections_frame_id", "frame_id"),
        # "recent rejects" walks this backwards from the newest partition.
        Index(
            "ix_inspections_rejects",
            "processed_at",
            postgresql_where=text("verdict = 'reject'"),
            sqlite_where=text("verdict = 'reject'"),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    frame_id: Mapped[str] = mapped_column(String(128), nullable=False)
    camera_id: Mapped[str] = mapped_column(String(128), nullable=False)
    line_id: Mapped[str] = mapped_column(String(128), nullable=False)
    product: Mapped[str] = mapped_column(String(128), nullable=False)
    captured_at: Mapped[datetime] = mapped_column(TS, nullable=False)
    processed_at: Mapped[datetime] = mapped_column(TS, nullable=False)
    verdict: Mapped[str] = mapped_column(String(8), nullable=False)  # ok|warn|reject
    anomaly_score: Mapped[float] = mapped_column(Float, nullable=False)
    defect_type: Mapped[str | None] = mapped_column(String(64))
    defect_probs: Mapped[dict] = mapped_column(JSON, nullable=False, default=dict)
    regions: Mapped[list] = mapped_column(JSON, nullable=False, default=list)
    # {warn, reject, source, region, region_source} and the product's words (0005; NULL before).
    thresholds: Mapped[dict | None] = mapped_column(JSON)
    candidate_words: Mapped[list | None] = mapped_column(JSON)
    model_version: Mapped[str] = mapped_column(String(256), nullable=False)
    prompt_version: Mapped[str] = mapped_column(String(64), nullable=False)
    latency_ms: Mapped[float] = mapped_column(Float, nullable=False)


class DefectCountRow(Base):
    """Root-cause counts per (time bucket, line, product, defect type).

    ``defect_type`` is ``""`` for frames without a defect so the key stays a plain unique tuple on
    every backend; ``frames`` counts every inspection, ``defects`` only warn/reject ones.
    """

    __tablename__ = "defect_counts"
    __table_args__ = (UniqueConstraint("bucket_start", "line_id", "product", "defect_type"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    bucket_start: Mapped[datetime] = mapped_column(TS, nullable=False)
    line_id: Mapped[str] = mapped_column(String(128), nullable=False)
    product: Mapped[str] = mapped_column(String(128), nullable=False)
    defect_type: Mapped[str] = mapped_column(String(64), nullable=False, default="")
    frames: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    warn: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    reject: Mapped[int] = mapped_column(Integer, nullable=False, default=0)


class FrameIdRow(Base):
    """The one-row-per-frame guard: inserted first (ON CONFLICT DO NOTHING) in the transaction
    that writes the inspection. Keyed by ``(frame_id, captured_at)`` because a redelivered frame
    carries the same capture time whatever its processing time, and on Postgres the table is
    range-partitioned by ``captured_at`` so retention drops it a day at a time too."""

    __tablename__ = "frame_ids"

    frame_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    captured_at: Mapped[datetime] = mapped_column(TS, primary_key=True)


class _CameraRollup:
    """Per (bucket, line, product, camera): frames, verdicts and a latency histogram.

    ``lat_NN`` counts frames in latency bucket NN (edges in ``qc_stream.storage.rollups``)."""

    bucket_start: Mapped[datetime] = mapped_column(TS, primary_key=True)
    line_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    product: Mapped[str] = mapped_column(String(128), primary_key=True)
    camera_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    frames: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    ok: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    warn: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    reject: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    latency_sum_ms: Mapped[float] = mapped_column(Float, nullable=False, default=0.0)
    lat_00: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    lat_01: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    lat_02: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    lat_03: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    lat_04: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    lat_05: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    lat_06: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    lat_07: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    lat_08: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    lat_09: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    lat_10: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    lat_11: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    lat_12: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    lat_13: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    lat_14: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    lat_15: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    lat_16: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    lat_17: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    lat_18: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    lat_19: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    lat_20: Mapped[int] = mapped_column(Integer, nullable=False, default=0)


class _PromptRollup:
    """Per (bucket, line, product, camera, prompt version, model): frames and the first/last
    processing time seen, so "versions in use" keeps exact first/last seen."""

    bucket_start: Mapped[datetime] = mapped_column(TS, primary_key=True)
    line_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    product: Mapped[str] = mapped_column(String(128), primary_key=True)
    camera_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    prompt_version: Mapped[str] = mapped_column(String(64), primary_key=True)
    model_version: Mapped[str] = mapped_column(String(256), primary_key=True)
    frames: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    first_seen: Mapped[datetime] = mapped_column(TS, nullable=False)
    last_seen: Mapped[datetime] = mapped_column(TS, nullable=False)


class CameraMinuteRow(_CameraRollup, Base):
    """Camera roll-up per processing minute."""

    __tablename__ = "camera_minute"


class CameraHourRow(_CameraRollup, Base):
    """Camera roll-up per processing hour (long dashboard ranges)."""

    __tablename__ = "camera_hour"


class PromptMinuteRow(_PromptRollup, Base):
    """Prompt-version roll-up per processing minute."""

    __tablename__ = "prompt_minute"


class PromptHourRow(_PromptRollup, Base):
    """Prompt-version roll-up per processing hour (long dashboard ranges)."""

    __tablename__ = "prompt_hour"


class DefectHourRow(Base):
    """``defect_counts`` per capture hour (long dashboard ranges); same meaning, no surrogate id."""

    __tablename__ = "defect_counts_hour"

    bucket_start: Mapped[datetime] = mapped_column(TS, primary_key=True)
    line_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    product: Mapped[str] = mapped_column(String(128), primary_key=True)
    defect_type: Mapped[str] = mapped_column(String(64), primary_key=True)
    frames: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    warn: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    reject: Mapped[int] = mapped_column(Integer, nullable=False, default=0)


class RetainedFrameRow(Base):
    """A frame kept in the frame store for review: where its bytes and overlay are (paths relative
    to ``QC_FRAME_STORE_DIR``). Written by the worker before the batch is acked; removed by
    ``qc-stream review cleanup`` with the files."""

    __tablename__ = "retained_frames"
    __table_args__ = (Index("ix_retained_frames_stored_at", "stored_at"),)

    frame_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    captured_at: Mapped[datetime] = mapped_column(TS, nullable=False)
    stored_at: Mapped[datetime] = mapped_column(TS, nullable=False)
    path: Mapped[str] = mapped_column(String(512), nullable=False)
    overlay_path: Mapped[str | None] = mapped_column(String(512))
    size_bytes: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    # The thresholds that decided the verdict ({warn, reject, source, ...}), shown to reviewers.
    thresholds: Mapped[dict | None] = mapped_column(JSON)


class ReviewRow(Base):
    """One decision of a reviewer on a frame. Append-only: the current decision of a frame is its
    newest row; earlier ones (also a concurrent reviewer's) stay. The frame's line, camera,
    product and the model's verdict/type/prompt version are copied so the review dashboard never
    scans ``inspections``."""

    __tablename__ = "reviews"
    __table_args__ = (
        Index("ix_reviews_frame_id", "frame_id", "id"),
        Index("ix_reviews_reviewed_at", "reviewed_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    frame_id: Mapped[str] = mapped_column(String(128), nullable=False)
    reviewer: Mapped[str] = mapped_column(String(64), nullable=False)
    reviewed_at: Mapped[datetime] = mapped_column(TS, nullable=False)
    line_id: Mapped[str] = mapped_column(String(128), nullable=False)
    camera_id: Mapped[str] = mapped_column(String(128), nullable=False)
    product: Mapped[str] = mapped_column(String(128), nullable=False)
    prompt_version: Mapped[str] = mapped_column(String(64), nullable=False)
    original_verdict: Mapped[str] = mapped_column(String(8), nullable=False)
    original_type: Mapped[str | None] = mapped_column(String(64))
    verdict: Mapped[str] = mapped_column(String(8), nullable=False)
    defect_type: Mapped[str | None] = mapped_column(String(64))
    # "confirm" | "verdict" | "type": which action the reviewer took.
    action: Mapped[str] = mapped_column(String(16), nullable=False)
    agrees: Mapped[bool] = mapped_column(Boolean, nullable=False)


class UserRow(Base):
    """A review station account; ``role`` is operator (review) or engineer (also accept proposed
    types and export). Passwords are argon2 hashes."""

    __tablename__ = "users"
    __table_args__ = (UniqueConstraint("name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), nullable=False)
    password_hash: Mapped[str] = mapped_column(String(256), nullable=False)
    role: Mapped[str] = mapped_column(String(16), nullable=False)
    disabled: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    created_at: Mapped[datetime] = mapped_column(TS, nullable=False, server_default=func.now())


class DefectProposalRow(Base):
    """A defect type a reviewer proposed; pending until an engineer accepts it (it is then added to
    the registry, which triggers the usual prompt refresh) or rejects it."""

    __tablename__ = "defect_proposals"
    __table_args__ = (UniqueConstraint("product", "name_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    product: Mapped[str] = mapped_column(String(128), nullable=False)
    name: Mapped[str] = mapped_column(String(64), nullable=False)
    name_key: Mapped[str] = mapped_column(String(64), nullable=False)
    proposed_by: Mapped[str] = mapped_column(String(64), nullable=False)
    proposed_at: Mapped[datetime] = mapped_column(TS, nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="pending")
    decided_by: Mapped[str | None] = mapped_column(String(64))
    decided_at: Mapped[datetime | None] = mapped_column(TS)
