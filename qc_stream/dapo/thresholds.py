"""A prompt version's calibrated verdict thresholds: the side file ``thresholds.json``.

``<models_dir>/prompts/<version>/thresholds.json`` = ``{product: [warn, reject], "_meta": {method,
quantile, margin, n_normal: {product: n}, created_at}}``. It is a side file: the version's manifest
and weights stay immutable, and calibrating again only rewrites this file (atomically). The
detector reads it with the version, so ``swap_prompts`` swaps thresholds and prompts together.
The calibration job that writes it is ``qc_stream.registry.calibration``.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

from qc_stream.dapo.checkpoint import resolve_version_path
from qc_stream.domain.vocabulary import Vocabulary
from qc_stream.errors import QcError

log = logging.getLogger(__name__)

THRESHOLDS_FILE = "thresholds.json"
META_KEY = "_meta"
METHOD = "normal-quantile"


def read_thresholds(version_dir: str | Path) -> dict[str, tuple[float, float]]:
    """Calibrated ``{product: (warn, reject)}`` of a version folder; ``{}`` when it has none.

    A broken or invalid file is logged and ignored (the global thresholds then apply): it must not
    stop a worker from loading the prompts."""
    path = Path(version_dir) / THRESHOLDS_FILE
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
        out = {}
        for product, pair in data.items():
            if product == META_KEY:
                continue
            warn, reject = (float(x) for x in pair)
            if not 0.0 <= warn <= reject <= 1.0:
                raise ValueError(f"{product!r}: expected 0 <= warn <= reject <= 1, got {pair}")
            out[str(product)] = (warn, reject)
        return out
    except (OSError, ValueError, TypeError, AttributeError) as e:
        log.error("ignoring calibrated thresholds %s (%s); the global thresholds apply", path, e)
        return {}


def version_thresholds(
    version_dir: str | Path, models_dir: str | Path | None = None, _depth: int = 0
) -> dict[str, tuple[float, float]]:
    """The thresholds a loaded version uses: its own ``thresholds.json``; for a zero-shot version
    without one (a registry refresh: the parent's trained parameters, a new vocabulary), the
    parent's calibrated pair of every product whose candidate words are unchanged. Those products'
    scores are the parent's exactly (same parameters, same words), so its calibration still holds;
    products whose words changed score differently and fall back to the global thresholds."""
    version_dir = Path(version_dir)
    if (version_dir / THRESHOLDS_FILE).is_file() or _depth >= 16:
        return read_thresholds(version_dir)
    try:
        manifest = json.loads((version_dir / "manifest.json").read_text())
        if manifest.get("kind") != "zero-shot" or not manifest.get("parent"):
            return {}
        parent_dir = resolve_version_path(
            manifest["parent"], models_dir if models_dir is not None else version_dir.parent.parent
        )
        parent = json.loads((parent_dir / "manifest.json").read_text())
    except (OSError, ValueError, QcError):
        return {}
    inherited = version_thresholds(parent_dir, models_dir, _depth + 1)
    mine, theirs = _vocabulary(manifest), _vocabulary(parent)
    if mine is None or theirs is None:
        return {}
    kept = {p: pair for p, pair in inherited.items() if mine.words_for(p) == theirs.words_for(p)}
    if kept:
        log.info(
            "prompt version %s: calibrated thresholds of %s from parent %s",
            manifest.get("version"),
            ", ".join(sorted(kept)),
            manifest["parent"],
        )
    return kept


def _vocabulary(manifest: dict) -> Vocabulary | None:
    try:
        return Vocabulary.from_manifest(manifest.get("vocabulary") or {})
    except QcError:
        return None


def read_thresholds_meta(version_dir: str | Path) -> dict:
    path = Path(version_dir) / THRESHOLDS_FILE
    try:
        return dict(json.loads(path.read_text()).get(META_KEY) or {})
    except (OSError, ValueError, AttributeError):
        return {}


def write_thresholds(
    version_dir: str | Path,
    thresholds: Mapping[str, tuple[float, float]],
    meta: Mapping,
    *,
    merge: bool = True,
) -> Path:
    """Write ``thresholds.json`` (atomic replace). ``merge``: keep products already calibrated that
    ``thresholds`` does not mention (calibrating one product leaves the others)."""
    version_dir = Path(version_dir)
    if not version_dir.is_dir():
        raise QcError(f"no prompt version folder {version_dir}")
    pairs = dict(read_thresholds(version_dir)) if merge else {}
    old_n = read_thresholds_meta(version_dir).get("n_normal", {}) if merge else {}
    pairs.update({p: (float(w), float(r)) for p, (w, r) in thresholds.items()})
    meta = dict(meta)
    meta["n_normal"] = {
        **(old_n if isinstance(old_n, dict) else {}),
        **dict(meta.get("n_normal") or {}),
    }
    meta.setdefault("method", METHOD)
    meta.setdefault("created_at", datetime.now(UTC).isoformat(timespec="seconds"))
    doc = {p: [round(w, 6), round(r, 6)] for p, (w, r) in sorted(pairs.items())}
    doc[META_KEY] = meta
    path = version_dir / THRESHOLDS_FILE
    tmp = version_dir / f".{THRESHOLDS_FILE}.tmp-{secrets.token_hex(3)}"
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    os.replace(tmp, path)
    return path
