"""A prompt version's calibrated verdict thresholds: the side file ``thresholds.json``.

``<models_dir>/prompts/<version>/thresholds.json`` = ``{product: [warn, reject], "_region":
{product: pixel threshold}, "_meta": {method, score, quantile, margin, n_normal: {product: n},
overlap: {product: share}, flagged: [product...], created_at}}``. A file whose ``_meta.score`` is
not the current ``SCORE`` was calibrated on another score function and is ignored (the global
thresholds apply until ``qc-stream models calibrate`` runs again). It is a side file: the version's manifest
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
from qc_stream.domain.thresholds import SCORE_TEMPERATURE
from qc_stream.domain.vocabulary import Vocabulary
from qc_stream.errors import QcError

log = logging.getLogger(__name__)

THRESHOLDS_FILE = "thresholds.json"
META_KEY = "_meta"
REGION_KEY = "_region"
METHOD = "normal-quantile"
# The scale the image scores and anomaly maps are on (qc_stream.domain.thresholds,
# qc_stream.inference.detector): a file calibrated on another scale is ignored.
SCORE = f"sigmoid(logit/{SCORE_TEMPERATURE:g}) image and map"


def read_thresholds(version_dir: str | Path) -> dict[str, tuple[float, float]]:
    """Calibrated ``{product: (warn, reject)}`` of a version folder; ``{}`` when it has none.

    A broken or invalid file is logged and ignored (the global thresholds then apply): it must not
    stop a worker from loading the prompts."""
    data = _read_current(version_dir)
    path = Path(version_dir) / THRESHOLDS_FILE
    try:
        out = {}
        for product, pair in data.items():
            if product.startswith("_"):
                continue
            warn, reject = (float(x) for x in pair)
            if not 0.0 <= warn <= reject <= 1.0:
                raise ValueError(f"{product!r}: expected 0 <= warn <= reject <= 1, got {pair}")
            out[str(product)] = (warn, reject)
        return out
    except (OSError, ValueError, TypeError, AttributeError) as e:
        log.error("ignoring calibrated thresholds %s (%s); the global thresholds apply", path, e)
        return {}


_WARNED: set[tuple[str, int]] = set()  # stale files already reported (once per file version)


def _read_current(version_dir: str | Path) -> dict:
    """The thresholds file of a version, {} when absent, unreadable or on another score."""
    path = Path(version_dir) / THRESHOLDS_FILE
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as e:
        log.error("ignoring calibrated thresholds %s (%s); the global thresholds apply", path, e)
        return {}
    score = (
        (data.get(META_KEY) or {}).get("score") if isinstance(data.get(META_KEY), dict) else None
    )
    if score != SCORE:
        if (str(path), path.stat().st_mtime_ns) in _WARNED:
            return {}
        _WARNED.add((str(path), path.stat().st_mtime_ns))
        log.warning(
            "ignoring calibrated thresholds %s: calibrated on score %r, not %r; the global "
            "thresholds apply until `qc-stream models calibrate` runs for this version",
            path,
            score,
            SCORE,
        )
        return {}
    return data


def read_region_thresholds(version_dir: str | Path) -> dict[str, float]:
    """Calibrated ``{product: pixel threshold}`` of a version folder; ``{}`` when none."""
    raw = _read_current(version_dir).get(REGION_KEY) or {}
    try:
        out = {str(p): float(t) for p, t in dict(raw).items()}
        bad = [p for p, t in out.items() if not 0.0 < t <= 1.0]
        if bad:
            raise ValueError(f"region thresholds outside (0, 1] for {', '.join(bad)}")
        return out
    except (TypeError, ValueError) as e:
        log.error("ignoring calibrated region thresholds of %s (%s)", version_dir, e)
        return {}


def version_thresholds(
    version_dir: str | Path,
    models_dir: str | Path | None = None,
    _depth: int = 0,
    reader=read_thresholds,
) -> dict:
    """The thresholds a loaded version uses: its own ``thresholds.json``; for a zero-shot version
    without one (a registry refresh: the parent's trained parameters, a new vocabulary), the
    parent's calibrated pair of every product whose candidate words are unchanged. Those products'
    scores are the parent's exactly (same parameters, same words), so its calibration still holds;
    products whose words changed score differently and fall back to the global thresholds."""
    version_dir = Path(version_dir)
    if (version_dir / THRESHOLDS_FILE).is_file() or _depth >= 16:
        return reader(version_dir)
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
    inherited = version_thresholds(parent_dir, models_dir, _depth + 1, reader)
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
    region: Mapping[str, float] | None = None,
) -> Path:
    """Write ``thresholds.json`` (atomic replace). ``merge``: keep products already calibrated that
    ``thresholds`` does not mention (calibrating one product leaves the others)."""
    version_dir = Path(version_dir)
    if not version_dir.is_dir():
        raise QcError(f"no prompt version folder {version_dir}")
    pairs = dict(read_thresholds(version_dir)) if merge else {}
    regions = dict(read_region_thresholds(version_dir)) if merge else {}
    old_meta = (read_thresholds_meta(version_dir) if pairs else {}) if merge else {}
    pairs.update({p: (float(w), float(r)) for p, (w, r) in thresholds.items()})
    regions.update({p: float(t) for p, t in (region or {}).items()})
    meta = dict(meta)
    for key in ("n_normal", "overlap"):  # per-product entries: keep the products not recalibrated
        old = old_meta.get(key, {})
        meta[key] = {**(old if isinstance(old, dict) else {}), **dict(meta.get(key) or {})}
    if "flagged" in meta or "flagged" in old_meta:
        redone = set(thresholds)
        kept = [p for p in old_meta.get("flagged") or [] if p not in redone]
        meta["flagged"] = sorted(set(kept) | set(meta.get("flagged") or []))
    meta.setdefault("method", METHOD)
    meta["score"] = SCORE
    meta.setdefault("created_at", datetime.now(UTC).isoformat(timespec="seconds"))
    doc: dict = {p: [round(w, 6), round(r, 6)] for p, (w, r) in sorted(pairs.items())}
    if regions:
        doc[REGION_KEY] = {p: round(t, 6) for p, t in sorted(regions.items())}
    doc[META_KEY] = meta
    path = version_dir / THRESHOLDS_FILE
    tmp = version_dir / f".{THRESHOLDS_FILE}.tmp-{secrets.token_hex(3)}"
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    os.replace(tmp, path)
    return path
