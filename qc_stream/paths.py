"""Where the shipped assets are, and where a user's models folder lives.

A source checkout keeps them at the repository root (``models/``, ``migrations/``). An installed
wheel carries the default backbone, its active prompt version and the Alembic migrations as data
files under ``<prefix>/share/qc-stream/`` (see ``[tool.setuptools.data-files]`` in
pyproject.toml); there, the models folder defaults to a per-user data directory
(``$XDG_DATA_HOME/qc-stream/models``, else ``~/.local/share/qc-stream/models``) seeded once from
the shipped copy, so nothing is ever written into the install tree.

Standard library only: imported by ``qc_stream.settings`` on the CLI start-up path.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from pathlib import Path

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARE_DIR = Path(sys.prefix) / "share" / "qc-stream"


def is_checkout() -> bool:
    """Running from a source checkout (the repository's models/ and migrations/ are beside us)."""
    return (REPO_ROOT / "models" / "backbones").is_dir() and (REPO_ROOT / "migrations").is_dir()


def shipped_models_dir() -> Path:
    """The models folder that came with the code: the checkout's, else the wheel's data copy."""
    return REPO_ROOT / "models" if is_checkout() else SHARE_DIR / "models"


def user_models_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "qc-stream" / "models"


def default_models_dir() -> Path:
    """``QC_MODELS_DIR``'s default: the checkout's models/ (developers), else the per-user folder."""
    return REPO_ROOT / "models" if is_checkout() else user_models_dir()


def shipped_migrations_dir() -> Path:
    return REPO_ROOT / "migrations" if is_checkout() else SHARE_DIR / "migrations"


def seed_models_dir(target: Path) -> None:
    """Copy the shipped backbones and prompt versions into ``target`` where they are missing
    (first use of a per-user folder; a newer install adds its new versions, never overwrites).
    The ACTIVE file is copied only when ``target`` has none: after that it is the user's."""
    source = shipped_models_dir()
    if source.resolve() == Path(target).resolve() or not source.is_dir():
        return
    for kind in ("backbones", "prompts"):
        if not (source / kind).is_dir():
            continue
        for item in (source / kind).iterdir():
            dest = Path(target) / kind / item.name
            if item.is_dir() and not dest.exists():
                dest.parent.mkdir(parents=True, exist_ok=True)
                tmp = dest.with_name(f".{item.name}.seeding")
                shutil.rmtree(tmp, ignore_errors=True)
                shutil.copytree(item, tmp)
                os.replace(tmp, dest)  # a half-copied version never looks complete
                log.info("models folder %s: seeded %s/%s from %s", target, kind, item.name, source)
    active = source / "prompts" / "ACTIVE"
    if active.is_file() and not (Path(target) / "prompts" / "ACTIVE").exists():
        shutil.copyfile(active, Path(target) / "prompts" / "ACTIVE")
