"""Where the shipped assets are, and where a user's models folder lives.

The shipped assets are the repository's ``models/`` and ``migrations/`` in a source checkout; an
installed wheel carries the default backbone, its active prompt version and the Alembic
migrations as data files under ``<prefix>/share/qc-stream/`` (see ``[tool.setuptools.data-files]``
in pyproject.toml). Both are read-only: the models folder the commands write into (``defects add
--refresh``, ``models activate``, ``train``, ``retrain``) defaults to a per-user data directory
(``$XDG_DATA_HOME/qc-stream/models``, else ``~/.local/share/qc-stream/models``), in a checkout too,
so nothing is ever written into the source or install tree. It is seeded with the shipped prompt
versions and ACTIVE (see ``seed_models_dir``); backbones are not copied (weights are read-only and
large): a backbone missing from a models folder is read from the shipped one
(``qc_stream.dapo.backbone``).

Standard library only: imported by ``qc_stream.settings`` on the CLI start-up path.
"""

from __future__ import annotations

import hashlib
import json
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
    per-user folder; a newer install or checkout adds its new versions). A seeded version's side
    files (thresholds.json, calibration logs: not its manifest or weights, which the registry's
    digest covers) follow a newer shipped copy as long as the user has not changed them; what the
    user changed (``models calibrate``) is kept. The ACTIVE file is copied only when ``target`` has
    none: after that it is the user's. Backbones stay in the shipped folder. Safe when several
    processes seed at once."""
    source = shipped_models_dir()
    target = Path(target)
    if not source.is_dir() or source.resolve() == target.resolve():
        return
    if (source / "prompts").is_dir():
        for item in (source / "prompts").iterdir():
            dest = target / "prompts" / item.name
            if not item.is_dir():
                continue
            if dest.exists():
                _follow_shipped(item, dest)
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_name(f".{item.name}.seeding-{os.getpid()}")
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(item, tmp)
            _write_record(tmp, {f.name: _stamp(f) for f in item.iterdir() if f.is_file()})
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


# In each seeded version folder: {file name: [size, mtime_ns, sha256]} of the shipped files copied,
# so a later seeding tells a newer shipped file (follow it) from one the user changed (keep it).
SEED_RECORD = ".seeded.json"
# Covered by the digest the registry records: never replaced under the same version name.
_DIGESTED = ("manifest.json", "prompts.safetensors")


def _stamp(path: Path) -> list:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns, hashlib.sha256(path.read_bytes()).hexdigest()]


def _write_record(folder: Path, record: dict) -> None:
    tmp = folder / f"{SEED_RECORD}.{os.getpid()}"
    tmp.write_text(json.dumps(record, sort_keys=True))
    os.replace(tmp, folder / SEED_RECORD)


def _follow_shipped(shipped: Path, seeded: Path) -> None:
    try:
        record = json.loads((seeded / SEED_RECORD).read_text())
    except (OSError, ValueError):
        return  # not seeded from a shipped copy (the user's own version): nothing to follow
    changed = False
    for f in shipped.iterdir():
        if not f.is_file() or f.name in _DIGESTED:
            continue
        st, old = f.stat(), record.get(f.name)
        if old and old[:2] == [st.st_size, st.st_mtime_ns]:
            continue  # the shipped file did not change (the common case: no hashing)
        new, mine = _stamp(f), seeded / f.name
        before = old[2] if old else None  # the content copied last time, if any
        if new[2] != before:
            untouched = mine.is_file() and hashlib.sha256(mine.read_bytes()).hexdigest() == before
            if mine.exists() and not untouched:
                continue  # the user's own file (e.g. `models calibrate`): kept
            tmp = seeded / f".{f.name}.seeding-{os.getpid()}"
            shutil.copyfile(f, tmp)
            os.replace(tmp, mine)
            log.info("models folder: %s/%s follows the shipped copy", seeded.name, f.name)
        record[f.name] = new
        changed = True
    if changed:
        _write_record(seeded, record)
