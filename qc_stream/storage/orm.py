"""SQLAlchemy 2 table mappings. The schema changes only through Alembic revisions in migrations/."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
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


class InspectionRow(Base):
    """One row per frame (unique ``frame_id``): a redelivered frame never makes a second row."""

    __tablename__ = "inspections"
    __table_args__ = (
        Index("ix_inspections_processed_at", "processed_at"),
        Index("ix_inspections_line_product_processed", "line_id", "product", "processed_at"),
        Index("ix_inspections_camera_processed", "camera_id", "processed_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    frame_id: Mapped[str] = mapped_column(String(128), nullable=False, unique=True)
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

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    bucket_start: Mapped[datetime] = mapped_column(TS, nullable=False)
    line_id: Mapped[str] = mapped_column(String(128), nullable=False)
    product: Mapped[str] = mapped_column(String(128), nullable=False)
    defect_type: Mapped[str] = mapped_column(String(64), nullable=False, default="")
    frames: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    warn: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    reject: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
