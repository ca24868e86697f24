"""``DefectRegistry``: the Python API behind ``qc-stream defects``.

Order of effects for a change: validate (pure) -> one DB transaction -> invalidate the cached
vocabulary -> publish the event on ``qc.defect-types``. Nothing is written when validation or the
DB step fails; a broker that is down does not undo a committed change (see ``events.py``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from qc_stream.domain.defects import (
    DefectType,
    DefectTypeEvent,
    normalise_product,
    validate_defect_type,
    vocabulary,
)
from qc_stream.errors import InputError
from qc_stream.registry.events import EventPublisher
from qc_stream.registry.wiring import make_cache, make_engine_for
from qc_stream.storage.defect_types import DefectTypeRepository
from qc_stream.wire.security import kafka_python_kwargs

if TYPE_CHECKING:
    from qc_stream.settings import Settings

log = logging.getLogger(__name__)

VOCABULARY_CACHE_KEY = "registry:vocabulary"


@dataclass(frozen=True)
class RegistryChange:
    defect: DefectType
    published: bool  # the qc.defect-types event was acknowledged by the broker
    publish_error: str | None = None


class DefectRegistry:
    def __init__(
        self,
        repo: DefectTypeRepository,
        *,
        publisher: EventPublisher | None = None,
        cache=None,
        allowed_products: frozenset[str] | None = None,
    ):
        self.repo = repo
        self.publisher = publisher
        self.cache = cache
        self.allowed_products = allowed_products

    @classmethod
    def from_settings(cls, settings: Settings, *, publish: bool = True) -> DefectRegistry:
        return cls(
            DefectTypeRepository(make_engine_for(settings)),
            publisher=EventPublisher(
                settings.kafka_bootstrap, client_kwargs=kafka_python_kwargs(settings)
            )
            if publish
            else None,
            cache=make_cache(settings),
            allowed_products=settings.allowed_products,
        )

    # --- changes ---
    def add(
        self,
        product: str,
        name: str,
        description: str | None = None,
        root_cause: str | None = None,
        corrective_action: str | None = None,
    ) -> RegistryChange:
        spec = validate_defect_type(
            product,
            name,
            description,
            root_cause,
            corrective_action,
            allowed_products=self.allowed_products,
        )
        now = datetime.now(UTC)
        defect = self.repo.add(spec, now=now)
        return self._after_change(defect, now)

    def retire(self, product: str, name: str) -> RegistryChange:
        product = normalise_product(product)
        now = datetime.now(UTC)
        defect = self.repo.retire(product, name.strip(), now=now)
        return self._after_change(defect, now)

    def publish_all(self) -> tuple[int, int]:
        """Re-send the current state of every type (active and retired): (sent, failed)."""
        sent = failed = 0
        for d in self.repo.list(include_retired=True):
            changed = d.retired_at or d.created_at or datetime.now(UTC)
            if self.publisher is not None and self.publisher.publish_defect(
                DefectTypeEvent.of(d, changed)
            ):
                sent += 1
            else:
                failed += 1
        return sent, failed

    # --- reads ---
    def get(self, product: str, name: str) -> DefectType:
        defect = self.repo.get(normalise_product(product), name.strip())
        if defect is None:
            raise InputError(f"no defect type {name.strip()!r} for product {product.strip()!r}")
        return defect

    def list(
        self, product: str | None = None, *, include_retired: bool = False
    ) -> list[DefectType]:
        if product is not None:
            product = normalise_product(product)
        return self.repo.list(product, include_retired=include_retired)

    def vocabulary(self) -> dict[str, list[str]]:
        """Active defect words per product; cache-aside through Redis when a cache is configured."""

        def load() -> dict[str, list[str]]:
            return vocabulary(self.repo.list())

        if self.cache is None:
            return load()
        return self.cache.get_or_load(VOCABULARY_CACHE_KEY, load)

    def words_for(self, product: str) -> list[str]:
        return self.vocabulary().get(product, [])

    def close(self) -> None:
        if self.publisher is not None:
            self.publisher.close()

    # --- internals ---
    def _after_change(self, defect: DefectType, now: datetime) -> RegistryChange:
        if self.cache is not None:
            self.cache.invalidate(VOCABULARY_CACHE_KEY)
        if self.publisher is None:
            return RegistryChange(defect, published=False, publish_error="publishing disabled")
        ok = self.publisher.publish_defect(DefectTypeEvent.of(defect, now))
        return RegistryChange(
            defect, published=ok, publish_error=None if ok else self.publisher.last_error
        )
