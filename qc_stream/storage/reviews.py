"""Review station storage: retained frames, the review queue, decisions, accounts, proposals.

``reviews`` is append-only: a decision never updates or deletes a row, the current decision of a
frame is its newest row (highest id). Two reviewers deciding the same frame at once both get a row;
the later one is current.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Engine, and_, delete, exists, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from qc_stream.domain.defects import name_key
from qc_stream.errors import InputError
from qc_stream.storage.db import write_transaction
from qc_stream.storage.frame_store import StoredFrame
from qc_stream.storage.orm import (
    DefectProposalRow,
    InspectionRow,
    RetainedFrameRow,
    ReviewRow,
    UserRow,
)

VERDICTS = ("ok", "warn", "reject")
ROLES = ("operator", "engineer")
QUEUE_FILTERS = ("line_id", "camera_id", "product", "verdict", "defect_type")


@dataclass(frozen=True)
class QueueItem:
    frame_id: str
    line_id: str
    camera_id: str
    product: str
    captured_at: datetime
    verdict: str
    anomaly_score: float
    defect_type: str | None


@dataclass(frozen=True)
class FrameDetail:
    inspection: InspectionRow
    retained: RetainedFrameRow
    reviews: list[ReviewRow]  # oldest first; the last is current

    @property
    def current(self) -> ReviewRow | None:
        return self.reviews[-1] if self.reviews else None


def _insert_for(conn):
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert


class ReviewRepository:
    def __init__(self, engine: Engine):
        self.engine = engine

    # --- frame store pointers (worker, cleanup) ---
    def record_retained(self, frames: Sequence[StoredFrame]) -> int:
        """Idempotent: a replayed frame keeps its first row. Returns how many rows were new."""
        if not frames:
            return 0
        now = datetime.now(UTC)
        rows = [
            {
                "frame_id": f.frame_id,
                "captured_at": f.captured_at,
                "stored_at": now,
                "path": f.path,
                "overlay_path": f.overlay_path,
                "size_bytes": f.size_bytes,
                "thresholds": f.thresholds,
            }
            for f in sorted(frames, key=lambda f: f.frame_id)
        ]
        with write_transaction(self.engine) as conn:
            stmt = (
                _insert_for(conn)(RetainedFrameRow)
                .on_conflict_do_nothing(index_elements=["frame_id"])
                .returning(RetainedFrameRow.frame_id)
            )
            return len(list(conn.execute(stmt, rows).scalars()))

    def forget_paths(self, paths: Iterable[str]) -> int:
        """Drop the rows of frames whose file the cleanup removed."""
        paths = list(paths)
        if not paths:
            return 0
        n = 0
        with write_transaction(self.engine) as conn:
            for i in range(0, len(paths), 500):
                chunk = paths[i : i + 500]
                n += conn.execute(
                    delete(RetainedFrameRow).where(RetainedFrameRow.path.in_(chunk))
                ).rowcount
        return n

    # --- queue ---
    def queue(
        self,
        *,
        filters: dict[str, str] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 50,
    ) -> tuple[list[QueueItem], int]:
        """Unreviewed retained frames, newest capture first, and how many match in all."""
        i, r = InspectionRow, RetainedFrameRow
        reviewed = exists().where(ReviewRow.frame_id == r.frame_id)
        where = [~reviewed]
        for name, value in (filters or {}).items():
            if value and name in QUEUE_FILTERS:
                where.append(getattr(i, name) == value)
        if since is not None:
            where.append(r.captured_at >= since)
        if until is not None:
            where.append(r.captured_at < until)
        joined = select(r).join(i, i.frame_id == r.frame_id)
        cols = select(
            r.frame_id,
            i.line_id,
            i.camera_id,
            i.product,
            r.captured_at,
            i.verdict,
            i.anomaly_score,
            i.defect_type,
        ).join(i, i.frame_id == r.frame_id)
        with self.engine.connect() as conn:
            total = conn.execute(
                select(func.count()).select_from(joined.where(*where).subquery())
            ).scalar_one()
            rows = conn.execute(
                cols.where(*where).order_by(r.captured_at.desc(), r.frame_id.desc()).limit(limit)
            ).all()
        return [QueueItem(*row) for row in rows], total

    def filter_values(self) -> dict[str, list[str]]:
        """The values each queue filter can take (from the retained frames)."""
        i, r = InspectionRow, RetainedFrameRow
        out: dict[str, list[str]] = {}
        with self.engine.connect() as conn:
            for name in QUEUE_FILTERS:
                col = getattr(i, name)
                out[name] = sorted(
                    v
                    for v in conn.execute(
                        select(col).join(r, i.frame_id == r.frame_id).distinct()
                    ).scalars()
                    if v
                )
        return out

    def detail(self, frame_id: str) -> FrameDetail | None:
        with Session(self.engine) as conn:
            retained = conn.execute(
                select(RetainedFrameRow).where(RetainedFrameRow.frame_id == frame_id)
            ).first()
            inspection = conn.execute(
                select(InspectionRow).where(InspectionRow.frame_id == frame_id).limit(1)
            ).first()
            if retained is None or inspection is None:
                return None
            reviews = conn.execute(
                select(ReviewRow).where(ReviewRow.frame_id == frame_id).order_by(ReviewRow.id)
            ).all()
        return FrameDetail(inspection[0], retained[0], [row[0] for row in reviews])

    def next_in_queue(self, after: QueueItem | None, filters: dict[str, str] | None = None):
        items, _ = self.queue(filters=filters, limit=1)
        return items[0] if items else None

    # --- decisions ---
    def decide(
        self,
        frame_id: str,
        reviewer: str,
        *,
        verdict: str,
        defect_type: str | None,
        action: str,
        now: datetime | None = None,
    ) -> ReviewRow:
        """Append a decision (never updates one). ``InputError`` for an unknown frame or verdict."""
        if verdict not in VERDICTS:
            raise InputError(f"verdict must be one of {', '.join(VERDICTS)}")
        detail = self.detail(frame_id)
        if detail is None:
            raise InputError(f"unknown frame {frame_id!r}")
        i = detail.inspection
        if verdict == "ok":
            defect_type = None
        row = {
            "frame_id": frame_id,
            "reviewer": reviewer,
            "reviewed_at": now or datetime.now(UTC),
            "line_id": i.line_id,
            "camera_id": i.camera_id,
            "product": i.product,
            "prompt_version": i.prompt_version,
            "original_verdict": i.verdict,
            "original_type": i.defect_type if i.verdict != "ok" else None,
            "verdict": verdict,
            "defect_type": defect_type,
            "action": action,
        }
        row["agrees"] = verdict == i.verdict and (
            verdict == "ok" or name_key(defect_type or "") == name_key(i.defect_type or "")
        )
        with write_transaction(self.engine) as conn:
            new_id = conn.execute(
                _insert_for(conn)(ReviewRow).values(**row).returning(ReviewRow.id)
            ).scalar_one()
        return ReviewRow(id=new_id, **row)

    def current_decisions(self) -> list[tuple[ReviewRow, RetainedFrameRow]]:
        """The newest decision of every reviewed frame still in the store."""
        newest = select(func.max(ReviewRow.id).label("id")).group_by(ReviewRow.frame_id).subquery()
        stmt = (
            select(ReviewRow, RetainedFrameRow)
            .join(newest, newest.c.id == ReviewRow.id)
            .join(RetainedFrameRow, RetainedFrameRow.frame_id == ReviewRow.frame_id)
            .order_by(ReviewRow.id)
        )
        with Session(self.engine) as conn:
            return [(a, b) for a, b in conn.execute(stmt).all()]

    # --- proposals ---
    def propose(self, product: str, name: str, by: str) -> DefectProposalRow | None:
        """A pending proposal (the existing one when the name was proposed before)."""
        key = name_key(name)
        with write_transaction(self.engine) as conn:
            stmt = (
                _insert_for(conn)(DefectProposalRow)
                .values(
                    product=product,
                    name=name,
                    name_key=key,
                    proposed_by=by,
                    proposed_at=datetime.now(UTC),
                    status="pending",
                )
                .on_conflict_do_nothing(index_elements=["product", "name_key"])
            )
            conn.execute(stmt)
        with Session(self.engine) as session:
            row = session.execute(
                select(DefectProposalRow).where(
                    and_(DefectProposalRow.product == product, DefectProposalRow.name_key == key)
                )
            ).first()
        return row[0] if row else None

    def proposals(self, status: str | None = "pending") -> list[DefectProposalRow]:
        stmt = select(DefectProposalRow).order_by(DefectProposalRow.id)
        if status:
            stmt = stmt.where(DefectProposalRow.status == status)
        with Session(self.engine) as conn:
            return [r[0] for r in conn.execute(stmt).all()]

    def proposal(self, proposal_id: int) -> DefectProposalRow | None:
        with Session(self.engine) as conn:
            row = conn.execute(
                select(DefectProposalRow).where(DefectProposalRow.id == proposal_id)
            ).first()
        return row[0] if row else None

    def decide_proposal(self, proposal_id: int, status: str, by: str) -> bool:
        with write_transaction(self.engine) as conn:
            n = conn.execute(
                update(DefectProposalRow)
                .where(DefectProposalRow.id == proposal_id, DefectProposalRow.status == "pending")
                .values(status=status, decided_by=by, decided_at=datetime.now(UTC))
            ).rowcount
        return n == 1


class UserRepository:
    def __init__(self, engine: Engine):
        self.engine = engine

    def get(self, name: str) -> UserRow | None:
        with Session(self.engine) as conn:
            row = conn.execute(select(UserRow).where(UserRow.name == name)).first()
        return row[0] if row else None

    def add(self, name: str, password_hash: str, role: str) -> None:
        if role not in ROLES:
            raise InputError(f"role must be one of {', '.join(ROLES)}")
        try:
            with write_transaction(self.engine) as conn:
                conn.execute(
                    _insert_for(conn)(UserRow).values(
                        name=name,
                        password_hash=password_hash,
                        role=role,
                        disabled=False,
                        created_at=datetime.now(UTC),
                    )
                )
        except IntegrityError:
            raise InputError(f"user {name!r} exists (qc-stream review user passwd)") from None

    def set(self, name: str, **values) -> None:
        with write_transaction(self.engine) as conn:
            n = conn.execute(update(UserRow).where(UserRow.name == name).values(**values)).rowcount
        if n != 1:
            raise InputError(f"no user {name!r}")
