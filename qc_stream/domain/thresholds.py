"""Verdict thresholds: the image score, the calibration rule (scores -> warn/reject), the pixel
threshold of regions, and their precedence.

Pure: numbers in, numbers out. The detector and the calibration command build on these.

**Score.** The model's probability of "abnormal" saturates: good parts of some products already
score 0.98-1.00, and a threshold above them can only be 1.0 (reject unreachable). The image score
is therefore ``sigmoid(logit / SCORE_TEMPERATURE)``, where ``logit`` is the model's abnormal-minus-
normal logit: the same ranking, in [0, 1], but a logit of 8 is 0.88, not 0.9997.

**Rule.** Scores of good parts differ a lot per product (textures score higher than plain
objects), so one global threshold either floods some products with false alarms or misses defects
on others. Calibration looks at the scores of known-good parts of one product:

- ``warn = Q_q(normal)``: the ``q`` quantile of the normal scores (default 0.98), so about
  ``1 - q`` of good parts are flagged for a second look; defects are not needed to set it.
- ``reject``: above every good part seen by a margin measured in logits (default 0.25, i.e. one
  raw logit), so an automatic rejection of a good part needs a score never seen on one. Margins
  in logit space never reach 1.0: reject stays reachable however high good parts score.
- ``warn <= reject <= REJECT_CAP``.

**Pixels.** Anomaly maps are put on the same scale (``sigmoid(logit(p) / SCORE_TEMPERATURE)``
per pixel; raw per-pixel probabilities of good parts are ~1e-7, so a fixed 0.5 found nothing).
A region is the pixels whose map value reaches the product's pixel threshold:
a high quantile of the good parts' map values (default 0.999 of every pixel), never below
``REGION_FLOOR``, and at least ``RELATIVE_REGION`` of the frame's peak: the maps are coarse and
blurred, so the product threshold alone draws regions several times the defect's size (mean IoU
with the true masks 0.10 at the threshold alone, 0.21-0.25 with a cut at 0.7-0.8 of the peak, on
40 flagged held-out frames). On a flagged frame whose map peaks below the product threshold but
above the floor the same share of the peak still gives a region, so a flagged frame with any peak
shows where the model looked.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

DEFAULT_QUANTILE = 0.98
DEFAULT_MARGIN = 0.25  # in logits of the score (= SCORE_TEMPERATURE * 0.25 raw logits)
# Fewer good parts than this give a quantile that is just the largest of a handful of numbers.
MIN_NORMAL_SCORES = 8
# A raw logit of 4 moves the score from 0.5 to 0.73; the model's logits span about -5..8.
SCORE_TEMPERATURE = 4.0
REJECT_CAP = 0.999  # a calibrated reject is never 1.0
# A product whose defective parts mostly score below warn is flagged: its thresholds cannot
# separate good from defective parts (share of defective check parts under warn).
DEFAULT_MAX_OVERLAP = 0.5
# Pixel thresholds: quantile of good parts' map values, floor, and the relative fallback.
DEFAULT_PIXEL_QUANTILE = 0.999
# A map without response sits at ~0.001 and good parts peak at ~0.03-0.1 on the map scale; below
# this floor a map has no peak worth a region.
REGION_FLOOR = 0.02
DEFAULT_REGION_THRESHOLD = 0.05  # no calibration and no QC_REGION_THRESHOLD
RELATIVE_REGION = 0.75  # region pixels reach at least this share of the frame's peak


def score_from_logit(logit: float) -> float:
    """The image score of a raw abnormal-minus-normal logit (see the module doc)."""
    return float(1.0 / (1.0 + np.exp(-float(logit) / SCORE_TEMPERATURE)))


def _logit(p: np.ndarray | float) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-9, 1 - 1e-9)
    return np.log(p / (1.0 - p))


def _sigmoid(x: np.ndarray | float) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))


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
    warn = float(np.clip(np.quantile(a, quantile), 0.0, REJECT_CAP))
    top = float(a.max())
    reject = top if margin == 0 else float(np.clip(_sigmoid(_logit(top) + margin), 0.0, REJECT_CAP))
    return warn, max(warn, reject)


def rate_at(scores: Sequence[float], threshold: float) -> float:
    """Share of ``scores`` at or above ``threshold``; nan without scores."""
    a = np.asarray(scores, dtype=np.float64)
    return float(np.mean(a >= threshold)) if a.size else float("nan")


def pixel_threshold_from_normal_maps(
    maps: Sequence[np.ndarray], quantile: float = DEFAULT_PIXEL_QUANTILE
) -> float:
    """The region threshold of one product: the ``quantile`` of every pixel of its good parts'
    anomaly maps, at least ``REGION_FLOOR`` (see the module doc)."""
    if not 0.5 <= quantile <= 1.0:
        raise ValueError(f"pixel quantile must be in [0.5, 1], got {quantile}")
    if len(maps) < MIN_NORMAL_SCORES:
        raise ValueError(f"need at least {MIN_NORMAL_SCORES} normal maps, got {len(maps)}")
    values = np.concatenate([np.asarray(m, dtype=np.float32).ravel() for m in maps])
    return max(REGION_FLOOR, min(1.0, float(np.quantile(values, quantile))))


def region_cut(peak: float, threshold: float, flagged: bool) -> float | None:
    """The map value region pixels must reach on a frame whose map peaks at ``peak``: the
    product's ``threshold`` and ``RELATIVE_REGION * peak``, whichever is higher; on a flagged frame
    whose peak is under the threshold but above the floor, ``RELATIVE_REGION * peak`` (at least
    the floor); None when the frame gets no region."""
    if peak >= threshold:
        return max(threshold, RELATIVE_REGION * peak)
    if flagged and peak >= REGION_FLOOR:
        return max(REGION_FLOOR, RELATIVE_REGION * peak)
    return None


def resolve_with_source(
    product: str | None,
    explicit: Mapping[str, tuple[float, float]],
    calibrated: Mapping[str, tuple[float, float]],
    default: tuple[float, float],
    version: str,
) -> tuple[tuple[float, float], str]:
    """``resolve_thresholds`` and where the pair came from: ``setting``, ``calibrated:<version>``
    or ``global``."""
    if product is not None:
        if product in explicit:
            return tuple(explicit[product]), "setting"  # type: ignore[return-value]
        if product in calibrated:
            return tuple(calibrated[product]), f"calibrated:{version}"  # type: ignore[return-value]
    return default, "global"


def resolve_region_threshold(
    product: str | None, setting: float | None, calibrated: Mapping[str, float], version: str
) -> tuple[float, str]:
    """The pixel threshold of regions: ``QC_REGION_THRESHOLD`` when set > the version's
    calibrated one for the product > ``DEFAULT_REGION_THRESHOLD``; with its source."""
    if setting is not None:
        return float(setting), "setting"
    if product is not None and product in calibrated:
        return float(calibrated[product]), f"calibrated:{version}"
    return DEFAULT_REGION_THRESHOLD, "global"


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
