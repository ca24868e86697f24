"""Prompt versions in the ``model_versions`` table; exactly one is active once any exists."""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError

from qc_stream.errors import InputError
from qc_stream.storage.db import storage_errors, write_transaction
from qc_stream.storage.orm import ModelVersionRow


class ModelVersion(BaseModel):
    model_config = ConfigDict(frozen=True)

    prompt_version: str
    backbone: str  # backbone_id, e.g. "qc-clip-tiny@1a2b3c4d"
    vocabulary: dict = Field(default_factory=dict)  # product -> [words]
    metrics: dict = Field(default_factory=dict)
    kind: str = "trained"  # trained | zero-shot
    parent_version: str | None = None
    created_at: datetime | None = None
    active: bool = False
    # sha256 of the version's files at registration; None for rows recorded before it was kept.
    sha256: str | None = None


def _to_domain(row) -> ModelVersion:
    created = row.created_at
    if created is not None and created.tzinfo is None:
        created = created.replace(tzinfo=UTC)
    return ModelVersion(
        prompt_version=row.prompt_version,
        backbone=row.backbone,
        vocabulary=row.vocabulary or {},
        metrics=row.metrics or {},
        kind=row.kind,
        parent_version=row.parent_version,
        created_at=created,
        active=bool(row.active),
        sha256=row.sha256,
    )


class ModelVersionRepository:
    def __init__(self, engine: Engine):
        self.engine = engine
        self.table = ModelVersionRow.__table__

    def add(self, version: ModelVersion, *, activate: bool = False) -> ModelVersion:
        """Insert a version (inactive unless ``activate``, which deactivates every other one)."""
        values = version.model_dump(exclude={"active"})
        values["created_at"] = version.created_at or datetime.now(UTC)
        with storage_errors("record the prompt version"):
            try:
                with write_transaction(self.engine) as conn:
                    conn.execute(self.table.insert().values(active=False, **values))
                    if activate:
                        self._activate(conn, version.prompt_version)
                    return _to_domain(self._get(conn, version.prompt_version))
            except IntegrityError:
                raise InputError(
                    f"prompt version {version.prompt_version!r} already exists"
                ) from None

    def get(self, prompt_version: str) -> ModelVersion | None:
        with storage_errors("read prompt versions"), self.engine.connect() as conn:
            row = self._get(conn, prompt_version)
            return _to_domain(row) if row is not None else None

    def list(self) -> list[ModelVersion]:
        query = select(self.table).order_by(self.table.c.created_at, self.table.c.prompt_version)
        with storage_errors("read prompt versions"), self.engine.connect() as conn:
            return [_to_domain(r) for r in conn.execute(query)]

    def active(self) -> ModelVersion | None:
        with storage_errors("read prompt versions"), self.engine.connect() as conn:
            row = conn.execute(select(self.table).where(self.table.c.active.is_(True))).first()
            return _to_domain(row) if row is not None else None

    def activate(self, prompt_version: str) -> ModelVersion:
        with storage_errors("activate the prompt version"), write_transaction(self.engine) as conn:
            if self._get(conn, prompt_version) is None:
                raise InputError(
                    f"unknown prompt version {prompt_version!r} (see `qc-stream models list`)"
                )
            self._activate(conn, prompt_version)
            return _to_domain(self._get(conn, prompt_version))

    def record_sha256(self, prompt_version: str, sha256: str) -> None:
        """Fill the digest of a row recorded without one (rows from before migration 0002)."""
        t = self.table
        with storage_errors("record the prompt version digest"):
            with write_transaction(self.engine) as conn:
                conn.execute(
                    t.update()
                    .where(t.c.prompt_version == prompt_version, t.c.sha256.is_(None))
                    .values(sha256=sha256)
                )

    def _get(self, conn, prompt_version: str):
        return conn.execute(
            select(self.table).where(self.table.c.prompt_version == prompt_version)
        ).first()

    def _activate(self, conn, prompt_version: str) -> None:
        # One statement flips every row, so readers never see zero or two active versions.
        conn.execute(
            self.table.update().values(active=self.table.c.prompt_version == prompt_version)
        )
