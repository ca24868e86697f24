"""Which prompt version a process starts on, and which source decided: one rule for the workers,
``qc-stream predict`` and the benchmark.

1. ``QC_PROMPT_VERSION`` when set (``untrained``: random prompts, for tests and smoke runs);
2. else the database's active version, where a database is in use (see ``database_in_use``) and
   this process may run that version: registered, its files in this models folder hashing to the
   recorded sha256 (the check a worker makes before a swap);
3. else the models folder's ``prompts/ACTIVE`` file.

No version at all is not decided here: the detector stops with the ``qc-stream train`` line.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qc_stream.dapo.checkpoint import active_version
from qc_stream.settings import Settings
from qc_stream.stream.service import PromptRefused, vet_prompt_version

log = logging.getLogger(__name__)

FROM_SETTING = "QC_PROMPT_VERSION"
FROM_DATABASE = "database"
FROM_FILE = "ACTIVE file"


@dataclass(frozen=True)
class PromptChoice:
    version: str | None  # None: nothing named a version
    source: str  # FROM_SETTING, FROM_DATABASE or FROM_FILE
    # Why the database did not decide although one is in use (a warning for the log), else None.
    note: str | None = None


def database_in_use(settings: Settings) -> bool:
    """Whether ``settings.database_url`` names a database to ask: any server URL; a SQLite URL
    only when its file exists (asking must never create a database as a side effect, e.g. the
    default ``sqlite:///qc-stream.db`` in whatever folder ``predict`` runs in)."""
    from sqlalchemy.engine import make_url

    url = make_url(settings.database_url)
    if url.get_backend_name() != "sqlite":
        return True
    database = url.database or ""
    if database in ("", ":memory:") or database.startswith("file:"):
        return False
    return Path(database).expanduser().is_file()


def choose_prompt_version(
    settings: Settings,
    *,
    active_row: Callable[[], Any] | None = None,
    registered: Callable[[str], Any] | None = None,
) -> PromptChoice:
    """The version to start on (see the module docstring). ``active_row`` / ``registered``: the
    database's active ``model_versions`` row and a row by name (a worker passes its repository);
    without them the database of ``settings`` is opened for the question when it is in use."""
    if settings.prompt_version:
        return PromptChoice(settings.prompt_version, FROM_SETTING)
    engine = None
    if active_row is None and database_in_use(settings):
        from qc_stream.storage.db import make_engine
        from qc_stream.storage.model_versions import ModelVersionRepository

        try:
            engine = make_engine(settings.database_url)
        except Exception as e:
            return _from_file(settings, f"cannot open the database ({_first_line(e)})")
        versions = ModelVersionRepository(engine)
        active_row, registered = versions.active, versions.get
    try:
        return _from_database(settings, active_row, registered)
    finally:
        if engine is not None:
            engine.dispose()


def _from_database(settings, active_row, registered) -> PromptChoice:
    if active_row is None:
        return _from_file(settings, None)
    try:
        row = active_row()
    except Exception as e:  # no schema yet, database down: the ACTIVE file decides
        return _from_file(
            settings, f"cannot read the active prompt version from the database ({_first_line(e)})"
        )
    if row is None:
        return _from_file(settings, None)
    try:
        vet_prompt_version(row.prompt_version, settings.models_dir, registered)
    except PromptRefused as e:
        return _from_file(settings, f"the database's active prompt version is refused ({e})")
    except Exception as e:
        return _from_file(
            settings, f"cannot check prompt version {row.prompt_version} ({_first_line(e)})"
        )
    return PromptChoice(row.prompt_version, FROM_DATABASE)


def _from_file(settings: Settings, note: str | None) -> PromptChoice:
    version = active_version(settings.models_dir)
    if note:
        note = f"{note}; using the models folder's ACTIVE file ({version or 'none'})"
    return PromptChoice(version, FROM_FILE, note)


def _first_line(e: BaseException) -> str:
    return (str(e).splitlines() or [type(e).__name__])[0][:300]
