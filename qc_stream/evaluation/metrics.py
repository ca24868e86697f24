"""Detection quality metrics: one implementation used for DAPO and every baseline.

Image level (``image_metrics``): AUROC, AP, F1-max, from scikit-learn's ROC / PR curves.
Pixel level (``pixel_metrics``): AUROC, AUPRO (FPR limit 0.3), F1-max.
Defect type (``type_metrics``): one-vs-rest over {normal + the product's types}: macro AUROC,
macro AP, macro F1 of the argmax, and image-level defect-type accuracy.

Degenerate inputs give ``nan`` rather than an exception or a misleading number: a ranking metric
needs both classes (AUROC/AP/F1-max with only normals or only defects -> nan; AUPRO with no defect
region or no normal pixel -> nan). Macro averages skip the classes whose value is nan; when none is
left they are nan too. ``mean_over_products`` averages with ``nanmean`` for the same reason.

Pixel metrics are memory-bounded: every map is turned, one image at a time, into histogram counts
over a fixed set of score thresholds (positive pixels, negative pixels and, for AUPRO, pixels of
each connected defect region), so the cost is O(thresholds x regions), not O(pixels). When the maps
hold at most ``max_thresholds`` distinct values the thresholds are exactly those values and the
result equals the exact curve (what scikit-learn would compute); otherwise the thresholds are
quantiles of a random subsample of the scores (``max_thresholds`` levels), a close approximation.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from scipy import ndimage
from sklearn.metrics import average_precision_score, f1_score, precision_recall_curve, roc_auc_score

NAN = float("nan")
AUPRO_FPR_LIMIT = 0.3
DEFAULT_MAX_THRESHOLDS = 4096
# Above this many pixels, the distinct-values check and the quantile edges use a subsample.
_EXACT_SCAN_PIXELS = 4_000_000
_QUANTILE_SAMPLE = 1_000_000


# ---------------------------------------------------------------- image level


def _both_classes(labels: np.ndarray) -> bool:
    return labels.size > 0 and 0 < int(labels.sum()) < labels.size


def f1_max(labels: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray) -> float:
    """Best F1 over all thresholds (nan without positives)."""
    y = np.asarray(labels).astype(bool).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.size == 0 or not y.any():
        return NAN
    precision, recall, _ = precision_recall_curve(y, s)
    return _best_f1(precision, recall)


def _best_f1(precision: np.ndarray, recall: np.ndarray) -> float:
    denom = precision + recall
    f1 = np.divide(
        2 * precision * recall, denom, out=np.zeros_like(denom, dtype=np.float64), where=denom > 0
    )
    return float(f1.max())


def image_metrics(
    labels: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray
) -> dict[str, float]:
    """``image_auroc``, ``image_ap``, ``image_f1_max`` for binary labels (1 = defective)."""
    y = np.asarray(labels).astype(int).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"labels {y.shape} and scores {s.shape} differ in length")
    if not _both_classes(y):
        return {"image_auroc": NAN, "image_ap": NAN, "image_f1_max": f1_max(y, s)}
    return {
        "image_auroc": float(roc_auc_score(y, s)),
        "image_ap": float(average_precision_score(y, s)),
        "image_f1_max": f1_max(y, s),
    }


# ---------------------------------------------------------------- pixel level


def _thresholds(maps: Sequence[np.ndarray], max_thresholds: int, seed: int = 0) -> np.ndarray:
    """Ascending score edges: the distinct values when few, else subsample quantiles."""
    total = sum(int(m.size) for m in maps)
    rng = np.random.default_rng(seed)
    if total <= _EXACT_SCAN_PIXELS:
        values = np.concatenate([np.asarray(m, dtype=np.float32).ravel() for m in maps])
    else:
        # Sample each map in proportion to its size; bounded memory whatever the data set size.
        per_pixel = _QUANTILE_SAMPLE / total
        values = np.concatenate(
            [
                rng.choice(
                    np.asarray(m, dtype=np.float32).ravel(), size=max(1, int(m.size * per_pixel))
                )
                for m in maps
            ]
        )
    distinct = np.unique(values)
    if distinct.size <= max_thresholds and total <= _EXACT_SCAN_PIXELS:
        return distinct
    edges = np.unique(np.quantile(values, np.linspace(0.0, 1.0, max_thresholds)).astype(np.float32))
    return edges


def _bin_index(scores: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Index of the highest edge <= score (scores below every edge fall in bin 0)."""
    idx = np.searchsorted(edges, scores.astype(np.float32, copy=False), side="right") - 1
    return np.clip(idx, 0, edges.size - 1)


def _at_or_above(hist: np.ndarray) -> np.ndarray:
    """hist[..., t] counts scores in bin t -> counts of scores >= edge t, along the last axis."""
    return np.flip(np.cumsum(np.flip(hist, axis=-1), axis=-1), axis=-1)


class PixelCounts:
    """Histogram counts of positive, negative and per-region pixels over fixed score edges.

    Feed it one image at a time with :meth:`add`; memory stays O(edges x regions).
    """

    def __init__(self, edges: np.ndarray):

        self._label = ndimage.label
        self.edges = edges
        n = edges.size
        self.pos = np.zeros(n, dtype=np.int64)
        self.neg = np.zeros(n, dtype=np.int64)
        self.region_hists: list[np.ndarray] = []  # one [n_regions_of_image, n] block per image

    def add(self, mask: np.ndarray, score_map: np.ndarray) -> None:
        mask = np.asarray(mask).astype(bool)
        score_map = np.asarray(score_map)
        if mask.shape != score_map.shape:
            raise ValueError(f"mask {mask.shape} and map {score_map.shape} differ in shape")
        n = self.edges.size
        bins = _bin_index(score_map, self.edges)
        self.pos += np.bincount(bins[mask], minlength=n)
        self.neg += np.bincount(bins[~mask], minlength=n)
        # Connected defect regions (8-connectivity, like anomalib's component labelling of GT masks).
        regions, k = self._label(mask, structure=np.ones((3, 3), dtype=int))
        if k:
            inside = regions > 0
            flat = (regions[inside].astype(np.int64) - 1) * n + bins[inside]
            self.region_hists.append(np.bincount(flat, minlength=k * n).reshape(k, n))

    # -- curves, ordered by descending threshold (ascending FPR); a (0, 0) start is prepended
    def roc(self) -> tuple[np.ndarray, np.ndarray]:
        tp, fp = _at_or_above(self.pos), _at_or_above(self.neg)
        fpr = np.concatenate([[0.0], (fp / max(fp[0], 1))[::-1]])
        tpr = np.concatenate([[0.0], (tp / max(tp[0], 1))[::-1]])
        return fpr, tpr

    def pro(self) -> tuple[np.ndarray, np.ndarray]:
        fp = _at_or_above(self.neg)
        regions = np.concatenate(self.region_hists, axis=0)
        overlap = _at_or_above(regions) / regions.sum(axis=1, keepdims=True)
        fpr = np.concatenate([[0.0], (fp / max(fp[0], 1))[::-1]])
        pro = np.concatenate([[0.0], overlap.mean(axis=0)[::-1]])
        return fpr, pro

    def auroc(self) -> float:
        if not (self.pos.sum() and self.neg.sum()):
            return NAN
        fpr, tpr = self.roc()
        return float(np.trapezoid(tpr, fpr))

    def aupro(self, fpr_limit: float = AUPRO_FPR_LIMIT) -> float:
        if not (self.region_hists and self.neg.sum()):
            return NAN
        fpr, pro = self.pro()
        return _truncated_auc(fpr, pro, fpr_limit) / fpr_limit

    def f1_max(self) -> float:
        if not self.pos.sum():
            return NAN
        tp, fp = _at_or_above(self.pos), _at_or_above(self.neg)
        precision = tp / np.maximum(tp + fp, 1)
        recall = tp / tp[0]
        return _best_f1(precision, recall)


def _truncated_auc(x: np.ndarray, y: np.ndarray, limit: float) -> float:
    """Area under the piecewise-linear curve (x ascending) from x=0 to x=limit.

    The curve is cut at ``limit`` with y linearly interpolated there (anomalib's AUPRO does the same).
    Repeated x values (a vertical jump) are fine: the trapezoid over them has zero width.
    """
    keep = x <= limit
    xs, ys = x[keep], y[keep]
    if xs[-1] < limit and keep.size > keep.sum():
        j = int(np.argmax(~keep))  # first point past the limit (x ascending)
        x0, y0, x1, y1 = x[j - 1], y[j - 1], x[j], y[j]
        y_lim = y0 + (y1 - y0) * (limit - x0) / (x1 - x0)
        xs, ys = np.append(xs, limit), np.append(ys, y_lim)
    return float(np.trapezoid(ys, xs))


def pixel_counts(
    masks: Sequence[np.ndarray] | np.ndarray,
    maps: Sequence[np.ndarray] | np.ndarray,
    max_thresholds: int = DEFAULT_MAX_THRESHOLDS,
) -> PixelCounts:
    if len(masks) != len(maps):
        raise ValueError(f"{len(masks)} masks but {len(maps)} maps")
    if len(maps) == 0:
        raise ValueError("no maps")
    counts = PixelCounts(_thresholds(list(maps), max_thresholds))
    for mask, score_map in zip(masks, maps):
        counts.add(mask, score_map)
    return counts


def aupro(
    masks: Sequence[np.ndarray] | np.ndarray,
    maps: Sequence[np.ndarray] | np.ndarray,
    fpr_limit: float = AUPRO_FPR_LIMIT,
    max_thresholds: int = DEFAULT_MAX_THRESHOLDS,
) -> float:
    """Area under the per-region-overlap curve up to ``fpr_limit``, divided by ``fpr_limit`` (0..1)."""
    return pixel_counts(masks, maps, max_thresholds).aupro(fpr_limit)


def pixel_metrics(
    masks: Sequence[np.ndarray] | np.ndarray,
    maps: Sequence[np.ndarray] | np.ndarray,
    fpr_limit: float = AUPRO_FPR_LIMIT,
    max_thresholds: int = DEFAULT_MAX_THRESHOLDS,
) -> dict[str, float]:
    """``pixel_auroc``, ``pixel_aupro``, ``pixel_f1_max`` over all pixels of all images.

    ``masks`` are binary ground-truth masks (HxW, nonzero = defect), ``maps`` anomaly maps of the
    same shapes (any real scale; 0..1 for the detectors here).
    """
    counts = pixel_counts(masks, maps, max_thresholds)
    return {
        "pixel_auroc": counts.auroc(),
        "pixel_aupro": counts.aupro(fpr_limit),
        "pixel_f1_max": counts.f1_max(),
    }


# ---------------------------------------------------------------- defect type

NORMAL = "normal"


def type_scores(image_score: np.ndarray, image_type_probs: np.ndarray) -> np.ndarray:
    """[B] abnormal prob + [B,N] type distribution -> [B,1+N] scores over {normal, types...}."""
    s = np.asarray(image_score, dtype=np.float64).reshape(-1, 1)
    p = np.asarray(image_type_probs, dtype=np.float64)
    return np.concatenate([1.0 - s, s * p], axis=1)


def type_metrics(
    true_types: Sequence[str | None],
    scores: np.ndarray,
    types: Sequence[str],
) -> dict[str, float]:
    """One-vs-rest metrics over the classes ``[normal, *types]`` for one product.

    ``true_types[i]`` is the defect word of image i, or None for a normal image; ``scores[i]`` has
    one column per class in that order (see :func:`type_scores`). Returns ``type_auroc`` and
    ``type_ap`` (macro over classes present in the ground truth, each one-vs-rest), ``type_f1``
    (macro F1 of the argmax over the classes present in the ground truth) and ``type_accuracy``
    (defective images only: argmax over the defect columns equals the true type; nan without any).
    """
    classes = [NORMAL, *types]
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2 or scores.shape != (len(true_types), len(classes)):
        raise ValueError(
            f"scores must be [{len(true_types)}, {len(classes)}], got {list(scores.shape)}"
        )
    index = {c: i for i, c in enumerate(classes)}
    unknown = {t for t in true_types if t is not None and t not in index}
    if unknown:
        raise ValueError(f"true types not among the classes {classes}: {sorted(unknown)}")
    y = np.array([0 if t is None else index[t] for t in true_types], dtype=int)
    present = sorted(set(y.tolist()))

    aurocs, aps = [], []
    for c in present:
        yc = (y == c).astype(int)
        if _both_classes(yc):
            aurocs.append(roc_auc_score(yc, scores[:, c]))
            aps.append(average_precision_score(yc, scores[:, c]))
    predicted = scores.argmax(axis=1)
    f1 = (
        f1_score(y, predicted, labels=present, average="macro", zero_division=0) if present else NAN
    )

    defective = y > 0
    if defective.any():
        type_pred = scores[defective, 1:].argmax(axis=1) + 1
        accuracy = float((type_pred == y[defective]).mean())
    else:
        accuracy = NAN
    return {
        "type_auroc": float(np.mean(aurocs)) if aurocs else NAN,
        "type_ap": float(np.mean(aps)) if aps else NAN,
        "type_f1": float(f1),
        "type_accuracy": accuracy,
    }


# ---------------------------------------------------------------- aggregation


def mean_over_products(per_product: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """Metric-wise mean over products, ignoring nan entries (nan when all are nan)."""
    keys = sorted({k for m in per_product.values() for k in m})
    out = {}
    for k in keys:
        vals = [float(m[k]) for m in per_product.values() if k in m and not math.isnan(float(m[k]))]
        out[k] = float(np.mean(vals)) if vals else NAN
    return out


# ---------------------------------------------------------------- defect type, pixel level


class PixelTypeCounts:
    """Pixel-level multi-type metrics, one-vs-rest over the classes ``[normal, *types]``.

    Feed it one image at a time with :meth:`add` (the true class of every pixel, and a score per
    class and pixel in [0, 1]); memory stays O(classes x bins). Per class: AUROC and AP of its score
    against "this class or not", from histograms over ``bins`` equal-width bins of [0, 1] (exact
    when every score is a multiple of 1/bins); F1 from the argmax confusion matrix. Macro averages
    run over the classes present in the ground truth, as :func:`type_metrics` does per image.
    """

    def __init__(self, n_classes: int, bins: int = 1000):
        self.n = n_classes
        self.edges = np.linspace(0.0, 1.0, bins + 1, dtype=np.float32)
        self.pos = np.zeros((n_classes, self.edges.size), dtype=np.int64)
        self.neg = np.zeros((n_classes, self.edges.size), dtype=np.int64)
        self.confusion = np.zeros((n_classes, n_classes), dtype=np.int64)

    def add(self, true_class: np.ndarray, scores: np.ndarray) -> None:
        """``true_class`` HxW ints in [0, n); ``scores`` [n, H, W]."""
        self.add_counts(self.counts(true_class, scores))

    def counts(
        self, true_class: np.ndarray, scores: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One image's (positive, negative, confusion) counts, for ``add_counts`` (an image that
        belongs to several subsets is binned once)."""
        true_class = np.asarray(true_class).astype(np.int64)
        scores = np.asarray(scores, dtype=np.float32)
        if scores.shape != (self.n, *true_class.shape):
            raise ValueError(
                f"scores {scores.shape} do not fit {self.n} classes x {true_class.shape}"
            )
        pred = scores.argmax(axis=0)
        confusion = np.bincount(
            (true_class * self.n + pred).ravel(), minlength=self.n * self.n
        ).reshape(self.n, self.n)
        size = self.edges.size
        pos = np.zeros_like(self.pos)
        neg = np.zeros_like(self.neg)
        for c in range(self.n):
            bins = _bin_index(scores[c], self.edges)
            is_c = true_class == c
            pos[c] = np.bincount(bins[is_c], minlength=size)
            neg[c] = np.bincount(bins[~is_c], minlength=size)
        return pos, neg, confusion

    def add_counts(self, counts: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
        pos, neg, confusion = counts
        self.pos += pos
        self.neg += neg
        self.confusion += confusion

    def _auroc(self, c: int) -> float:
        tp, fp = _at_or_above(self.pos[c]), _at_or_above(self.neg[c])
        if not (tp[0] and fp[0]):
            return NAN
        fpr = np.concatenate([[0.0], (fp / fp[0])[::-1]])
        tpr = np.concatenate([[0.0], (tp / tp[0])[::-1]])
        return float(np.trapezoid(tpr, fpr))

    def _ap(self, c: int) -> float:
        tp, fp = _at_or_above(self.pos[c]), _at_or_above(self.neg[c])
        if not tp[0]:
            return NAN
        keep = (tp + fp) > 0
        precision = np.where(keep, tp / np.maximum(tp + fp, 1), 0.0)
        recall = tp / tp[0]
        # sum over descending thresholds of (recall step) x precision, as scikit-learn's AP
        step = recall - np.append(recall[1:], 0.0)
        return float(np.sum(step * precision))

    def metrics(self, prefix: str = "pixel_type") -> dict[str, float]:
        present = [c for c in range(self.n) if self.pos[c].sum() > 0]
        aurocs = [v for v in (self._auroc(c) for c in present) if not math.isnan(v)]
        aps = [v for v in (self._ap(c) for c in present) if not math.isnan(v)]
        f1s = []
        for c in present:
            tp = self.confusion[c, c]
            fp = self.confusion[:, c].sum() - tp
            fn = self.confusion[c, :].sum() - tp
            f1s.append(2 * tp / (2 * tp + fp + fn) if (2 * tp + fp + fn) else 0.0)
        return {
            f"{prefix}_auroc": float(np.mean(aurocs)) if aurocs else NAN,
            f"{prefix}_ap": float(np.mean(aps)) if aps else NAN,
            f"{prefix}_f1": float(np.mean(f1s)) if f1s else NAN,
        }
