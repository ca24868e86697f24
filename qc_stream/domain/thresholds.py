"""Verdict thresholds: the calibration rule (normal scores -> warn/reject) and their precedence.

Pure: numbers in, numbers out. The detector and the calibration command build on these.

**Rule.** Scores of good parts differ a lot per product (textures score higher than plain
objects), so one global threshold either floods some products with false alarms or misses defects
on others. Calibration looks only at the scores of known-good parts of one product:

- ``warn = Q_q(normal)``: the ``q`` quantile of the normal scores (default 0.98), so about
  ``1 - q`` of good parts are flagged for a second look; defects are not needed to set it.
- ``reject = max(normal) + margin``: above every good part seen, by a margin (default 0.05) for the
  good parts that were not in the calibration set, so an automatic rejection of a good part needs
  a score never seen on one.
- both clipped to [0, 1], and ``reject >= warn``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

DEFAULT_QUANTILE = 0.98
DEFAULT_MARGIN = 0.05
# Fewer good parts than this give a quantile that is just the largest of a handful of numbers.
MIN_NORMAL_SCORES = 8


def thresholds_from_normal_scores(
    scores: Sequence[float], quantile: float = DEFAULT_QUANTILE, margin: float = DEFAULT_MARGIN
) -> tuple[float, float]:
    """``(warn, reject)`` from the anomaly scores of good parts of one product (see the module doc)."""
    if not 0.5 <= quantile <= 1.0:
        raise ValueError(f"quantile must be in [0.5, 1], got {quantile}")
    if not 0.0 <= margin <= 1.0:
        raise ValueError(f"margin must be in [0, 1], got {margin}")
    a = np.asarray(scores, dtype=np.float64)
    if a.ndim != 1 or a.size < MIN_NORMAL_SCORES:
        raise ValueError(f"need at least {MIN_NORMAL_SCORES} normal scores, got {a.size}")
    if not np.all(np.isfinite(a)):
        raise ValueError("normal scores must be finite")
    warn = float(np.clip(np.quantile(a, quantile), 0.0, 1.0))
    reject = float(np.clip(a.max() + margin, 0.0, 1.0))
    return warn, max(warn, reject)


def resolve_thresholds(
    product: str | None,
    explicit: Mapping[str, tuple[float, float]],
    calibrated: Mapping[str, tuple[float, float]],
    default: tuple[float, float],
) -> tuple[float, float]:
    """The thresholds that decide a verdict: explicit per-product (``QC_THRESHOLDS``) > the prompt
    version's calibrated ones for the product > the global ``QC_WARN/REJECT_THRESHOLD``."""
    if product is not None:
        if product in explicit:
            return tuple(explicit[product])  # type: ignore[return-value]
        if product in calibrated:
            return tuple(calibrated[product])  # type: ignore[return-value]
    return default
