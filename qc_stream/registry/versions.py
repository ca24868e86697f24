"""Prompt versions: zero-shot refresh, recording trained versions, activation (rollback), listing.

Files live under ``models/prompts/<version>/`` (the DAPO checkpoint API), one row per version in
``model_versions``; the active version is the DB row with ``active`` and the ``models/prompts/ACTIVE``
file, kept in step here. Every activation is announced on ``qc.model-updates`` so running workers
swap between batches.

Zero-shot refresh = a new version with the active version's trained parameters and the registry's
current vocabulary (text features re-encoded, no gradient step). It takes seconds.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from qc_stream.dapo.backbone import load_backbone
from qc_stream.dapo.checkpoint import (
    active_version,
    list_versions,
    load_prompt_version,
    prompts_dir,
    read_manifest,
    save_prompt_version,
    set_active_version,
    version_sha256,
)
from qc_stream.domain.defects import merge_vocabulary
from qc_stream.errors import ConfigError, QcError
from qc_stream.registry.events import EventPublisher
from qc_stream.registry.wiring import make_cache, make_engine_for
from qc_stream.storage.defect_types import DefectTypeRepository
from qc_stream.storage.model_versions import ModelVersion, ModelVersionRepository
from qc_stream.wire.security import kafka_python_kwargs

if TYPE_CHECKING:
    from qc_stream.settings import Settings

log = logging.getLogger(__name__)

ACTIVE_CACHE_KEY = "models:active"


@dataclass(frozen=True)
class VersionOutcome:
    version: str | None  # the version now active (None: nothing to do and nothing active)
    created: bool  # a new version was written
    published: bool  # qc.model-updates acknowledged the announcement
    message: str


class PromptVersions:
    def __init__(
        self,
        settings: Settings,
        *,
        defects: DefectTypeRepository,
        versions: ModelVersionRepository,
        publisher: EventPublisher | None = None,
        cache=None,
    ):
        self.settings = settings
        self.models_dir = settings.models_dir
        self.defects = defects
        self.versions = versions
        self.publisher = publisher
        self.cache = cache
        self._backbone = None

    @classmethod
    def from_settings(cls, settings: Settings, *, publish: bool = True) -> PromptVersions:
        engine = make_engine_for(settings)
        return cls(
            settings,
            defects=DefectTypeRepository(engine),
            versions=ModelVersionRepository(engine),
            publisher=EventPublisher(
                settings.kafka_bootstrap, client_kwargs=kafka_python_kwargs(settings)
            )
            if publish
            else None,
            cache=make_cache(settings),
        )

    def __enter__(self) -> PromptVersions:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self.publisher is not None:
            self.publisher.close()

    # --- reads ---
    def list(self) -> list[ModelVersion]:
        self.sync_from_disk()
        return self.versions.list()

    def active_name(self) -> str | None:
        """The active version: the DB row, else the ACTIVE file (adopted into the DB on the way)."""

        def load() -> str | None:
            self.sync_from_disk()
            row = self.versions.active()
            return row.prompt_version if row else None

        if self.cache is None:
            return load()
        cached = self.cache.get_or_load(ACTIVE_CACHE_KEY, load)
        if cached is None or self._is_known(cached):
            return cached
        # A cached name this database or models folder does not have (another deployment's
        # key, or a version removed since): the source of truth decides, and the cache follows.
        log.warning("ignoring cached active prompt version %s: not in this database/models", cached)
        self.cache.invalidate(ACTIVE_CACHE_KEY)
        return self.cache.get_or_load(ACTIVE_CACHE_KEY, load)

    def _is_known(self, version: str) -> bool:
        """``version`` has a row in this database and its files in this models folder."""
        return (
            self.versions.get(version) is not None
            and (prompts_dir(self.models_dir) / version / "manifest.json").is_file()
        )

    def sync_from_disk(self) -> None:
        """Record versions found under models/prompts/ but missing from the DB (e.g. shipped ones).

        When the DB has no active version yet, the ACTIVE file's version becomes the active row.
        Rows recorded before digests were kept (sha256 NULL) get the digest of their files now.
        """
        rows = {v.prompt_version: v for v in self.versions.list()}
        has_active = any(v.active for v in rows.values())
        on_disk_active = active_version(self.models_dir)
        for manifest in list_versions(self.models_dir):
            name = manifest["version"]
            folder = prompts_dir(self.models_dir) / name
            if name in rows:
                if rows[name].sha256 is None and folder.is_dir():
                    self.versions.record_sha256(name, _sha256_of(folder))
                continue
            try:
                self.versions.add(
                    _row_from_manifest(manifest, folder),
                    activate=not has_active and name == on_disk_active,
                )
            except QcError:  # a concurrent process recorded it first
                pass

    # --- changes ---
    def activate(self, version: str) -> VersionOutcome:
        """Make ``version`` active (rollback or promotion) and announce it."""
        self.sync_from_disk()
        manifest = read_manifest(version, self.models_dir)  # files must exist before the DB says so
        made_for = (manifest.get("backbone") or {}).get("backbone_id")
        running = self.backbone().backbone_id
        if made_for != running:  # predict and every worker would fail to load it
            raise ConfigError(
                f"prompt version {version} was made for backbone {made_for}, not the running "
                f"{running} (QC_BACKBONE={self.settings.backbone}); nothing changed"
            )
        self.versions.activate(version)
        set_active_version(version, self.models_dir)
        if self.cache is not None:
            self.cache.invalidate(ACTIVE_CACHE_KEY)
        published = self._announce(version, manifest["backbone"]["backbone_id"])
        return VersionOutcome(
            version, False, published, f"prompt version {version} is active" + _note(published)
        )

    def zero_shot_refresh(self) -> VersionOutcome:
        """A new version for the registry's current vocabulary on the active trained parameters."""
        parent = self.active_name()
        if parent is None:
            raise QcError(
                "no active prompt version to refresh; train one first with `qc-stream retrain`"
            )
        parent_manifest = read_manifest(parent, self.models_dir)
        merged = merge_vocabulary(
            parent_manifest.get("vocabulary", {}), self.defects.list(include_retired=True)
        )
        if _same_vocabulary(merged, parent_manifest.get("vocabulary", {})):
            return VersionOutcome(
                parent, False, False, f"vocabulary unchanged; prompt version {parent} stays active"
            )
        if not merged["words"]:
            raise QcError("the refreshed vocabulary would be empty; register a defect type first")

        loaded = load_prompt_version(parent, self.backbone(), self.models_dir)
        model = loaded.model
        model.vocabulary = list(merged["words"])
        model.product_words = {p: list(ws) for p, ws in merged["products"].items()}
        # Re-encode the text side for the new words: proves every word tokenizes and scores finitely
        # before any worker is told to swap.
        feats = model.text_features(model.vocabulary)
        if not all(bool(t.isfinite().all()) for t in (feats.normal, feats.abnormal)):
            raise QcError(
                "re-encoded text features are not finite; the active prompt version is kept"
            )
        path = save_prompt_version(
            model,
            self.models_dir,
            metrics=parent_manifest.get("metrics") or {},
            products=merged["products"],
            parent=parent,
            kind="zero-shot",
            train_config=parent_manifest.get("train_config"),
        )
        manifest = read_manifest(path)
        version = manifest["version"]
        self.versions.add(_row_from_manifest(manifest, path))
        outcome = self.activate(version)
        added = sorted(
            set(merged["words"]) - set(parent_manifest.get("vocabulary", {}).get("words", []))
        )
        return VersionOutcome(
            version,
            True,
            outcome.published,
            f"zero-shot prompt version {version} (from {parent}; {len(merged['words'])} words"
            + (f", new: {', '.join(added)}" if added else "")
            + ") is active"
            + _note(outcome.published),
        )

    def record(self, path, *, activate: bool) -> VersionOutcome:
        """Record a version folder written by training; activate and announce it when asked."""
        manifest = read_manifest(path)
        self.versions.add(_row_from_manifest(manifest, path))
        if activate:
            return self.activate(manifest["version"])
        return VersionOutcome(
            self.active_name(),
            True,
            False,
            f"prompt version {manifest['version']} recorded (inactive)",
        )

    # --- helpers ---
    def backbone(self):
        if self._backbone is None:
            s = self.settings
            self._backbone = load_backbone(
                s.backbone,
                pretrained=s.pretrained,
                image_size=s.image_size,
                models_dir=s.models_dir,
            )
        return self._backbone

    def _announce(self, version: str, backbone_id: str) -> bool:
        if self.publisher is None:
            return False
        return self.publisher.publish_model_update(version, backbone_id)


def _note(published: bool) -> str:
    return (
        "; announced on qc.model-updates"
        if published
        else "; NOT announced on qc.model-updates (broker unreachable or publishing off): "
        "re-announce with `qc-stream models activate VERSION`"
    )


def _same_vocabulary(a: dict, b: dict) -> bool:
    return list(a.get("words") or []) == list(b.get("words") or []) and {
        p: list(ws) for p, ws in (a.get("products") or {}).items()
    } == {p: list(ws) for p, ws in (b.get("products") or {}).items()}


def _clean_metrics(metrics: dict) -> dict:
    # JSON columns cannot hold NaN on Postgres; a missing metric reads as null.
    out = {}
    for k, v in (metrics or {}).items():
        if isinstance(v, float) and not math.isfinite(v):
            out[k] = None
        elif isinstance(v, dict):
            out[k] = _clean_metrics(v)
        else:
            out[k] = v
    return out


def _sha256_of(folder) -> str:
    return version_sha256(folder)


def _row_from_manifest(manifest: dict, folder) -> ModelVersion:
    """The row for a version folder, with the digest of its files as they are now."""
    return ModelVersion(
        sha256=_sha256_of(folder),
        prompt_version=manifest["version"],
        backbone=manifest["backbone"]["backbone_id"],
        vocabulary=manifest.get("vocabulary") or {},
        metrics=_clean_metrics(manifest.get("metrics") or {}),
        kind=manifest.get("kind", "trained"),
        parent_version=manifest.get("parent"),
    )
