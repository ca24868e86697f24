"""Where the shipped assets are, and where a user's models folder lives.

The shipped assets are the repository's ``models/`` and ``migrations/`` in a source checkout; an
installed wheel carries the default backbone, its active prompt version and the Alembic
migrations as data files under ``<prefix>/share/qc-stream/`` (see ``[tool.setuptools.data-files]``
in pyproject.toml). Both are read-only: the models folder the commands write into (``defects add
--refresh``, ``models activate``, ``train``, ``retrain``) defaults to a per-user data directory
(``$XDG_DATA_HOME/qc-stream/models``, else ``~/.local/share/qc-stream/models``), in a checkout too,
so nothing is ever written into the source or install tree. It is seeded with the shipped prompt
versions and ACTIVE; backbones are not copied (weights are read-only and large): a backbone missing
from a models folder is read from the shipped one (``qc_stream.dapo.backbone``).

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
    """``QC_MODELS_DIR``'s default: the per-user folder, in a checkout as in an install."""
    return user_models_dir()


def shipped_migrations_dir() -> Path:
    return REPO_ROOT / "migrations" if is_checkout() else SHARE_DIR / "migrations"


def seed_models_dir(target: Path) -> None:
    """Copy the shipped prompt versions into ``target`` where they are missing (first use of a
    per-user folder; a newer install or checkout adds its new versions, never overwrites). The
    ACTIVE file is copied only when ``target`` has none: after that it is the user's. Backbones
    stay in the shipped folder. Safe when several processes seed at once."""
    source = shipped_models_dir()
    target = Path(target)
    if not source.is_dir() or source.resolve() == target.resolve():
        return
    if (source / "prompts").is_dir():
        for item in (source / "prompts").iterdir():
            dest = target / "prompts" / item.name
            if item.is_dir() and not dest.exists():
                dest.parent.mkdir(parents=True, exist_ok=True)
                tmp = dest.with_name(f".{item.name}.seeding-{os.getpid()}")
                shutil.rmtree(tmp, ignore_errors=True)
                shutil.copytree(item, tmp)
                try:
                    os.replace(tmp, dest)  # a half-copied version never looks complete
                except OSError:  # another process seeded it first
                    shutil.rmtree(tmp, ignore_errors=True)
                    if not dest.is_dir():
                        raise
                    continue
                log.info("models folder %s: seeded prompts/%s from %s", target, item.name, source)
    active = source / "prompts" / "ACTIVE"
    dest = target / "prompts" / "ACTIVE"
    if active.is_file() and not dest.exists():
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".ACTIVE.seeding-{os.getpid()}")
        shutil.copyfile(active, tmp)
        try:
            os.link(tmp, dest)  # only when still missing: never replaces the user's choice
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
