"""Defect types in the ``defect_types`` table (one row per product and case-folded name)."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError

from qc_stream.domain.defects import DefectStatus, DefectType, DefectTypeSpec, name_key
from qc_stream.errors import InputError
from qc_stream.storage.db import storage_errors, write_transaction
from qc_stream.storage.orm import DefectTypeRow


def _utc(ts: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes; every timestamp we write is UTC.
    if ts is not None and ts.tzinfo is None:
        return ts.replace(tzinfo=UTC)
    return ts


def _to_domain(row: DefectTypeRow) -> DefectType:
    return DefectType(
        product=row.product,
        name=row.name,
        description=row.description or "",
        root_cause=row.root_cause,
        corrective_action=row.corrective_action,
        status=DefectStatus(row.status),
        created_at=_utc(row.created_at),
        retired_at=_utc(row.retired_at),
    )


class DefectTypeRepository:
    """Add, read and retire defect types. Each call is one transaction; an error writes nothing."""

    def __init__(self, engine: Engine):
        self.engine = engine

    def add(self, spec: DefectTypeSpec, *, now: datetime | None = None) -> DefectType:
        """Register ``spec``; a retired type of the same name comes back as active with the new text.

        Raises ``InputError`` when an active type of that name (ignoring case) exists for the product.
        """
        now = now or datetime.now(UTC)
        duplicate = InputError(
            f"defect type {spec.name!r} is already registered for product {spec.product!r}"
        )
        with storage_errors("register the defect type"):
            try:
                with write_transaction(self.engine) as conn:
                    row = self._find(conn, spec.product, spec.name, lock=True)
                    if row is not None and row.status == DefectStatus.ACTIVE.value:
                        raise InputError(
                            f"defect type {row.name!r} is already registered for product {spec.product!r}"
                        )
                    values = dict(
                        name=spec.name,
                        description=spec.description,
                        root_cause=spec.root_cause,
                        corrective_action=spec.corrective_action,
                        status=DefectStatus.ACTIVE.value,
                        retired_at=None,
                        created_at=now,
                    )
                    table = DefectTypeRow.__table__
                    if row is None:
                        conn.execute(
                            table.insert().values(
                                product=spec.product, name_key=spec.name_key, **values
                            )
                        )
                    else:
                        conn.execute(table.update().where(table.c.id == row.id).values(**values))
                    return _to_domain(self._find(conn, spec.product, spec.name))
            except IntegrityError:
                # A concurrent writer registered the same name between our read and our insert.
                raise duplicate from None

    def get(self, product: str, name: str) -> DefectType | None:
        with storage_errors("read defect types"), self.engine.connect() as conn:
            row = self._find(conn, product, name)
            return _to_domain(row) if row is not None else None

    def list(
        self, product: str | None = None, *, include_retired: bool = False
    ) -> list[DefectType]:
        query = select(DefectTypeRow.__table__)
        if product is not None:
            query = query.where(DefectTypeRow.product == product)
        if not include_retired:
            query = query.where(DefectTypeRow.status == DefectStatus.ACTIVE.value)
        query = query.order_by(DefectTypeRow.product, DefectTypeRow.name_key)
        with storage_errors("read defect types"), self.engine.connect() as conn:
            return [_to_domain(r) for r in conn.execute(query)]

    def retire(self, product: str, name: str, *, now: datetime | None = None) -> DefectType:
        """Mark a type retired (kept for history: past inspections still name it)."""
        now = now or datetime.now(UTC)
        with storage_errors("retire the defect type"), write_transaction(self.engine) as conn:
            row = self._find(conn, product, name, lock=True)
            if row is None:
                raise InputError(f"no defect type {name!r} for product {product!r}")
            if row.status == DefectStatus.RETIRED.value:
                raise InputError(
                    f"defect type {row.name!r} of product {product!r} is already retired"
                )
            table = DefectTypeRow.__table__
            conn.execute(
                table.update()
                .where(table.c.id == row.id)
                .values(status=DefectStatus.RETIRED.value, retired_at=now)
            )
            return _to_domain(self._find(conn, product, name))

    # --- helpers ---
    @staticmethod
    def _find(conn, product: str, name: str, *, lock: bool = False):
        query = select(DefectTypeRow.__table__).where(
            DefectTypeRow.product == product, DefectTypeRow.name_key == name_key(name)
        )
        if lock and conn.dialect.name == "postgresql":
            query = query.with_for_update()
        return conn.execute(query).first()
