"""The calibration job: per-product verdict thresholds from good parts, for a prompt version.

scores, maps = scores_and_maps(detector, images, "wood")   # the detector's scores and maps
warn, reject = thresholds_from_normal_scores(scores)       # the rule: qc_stream.domain.thresholds
region = pixel_threshold_from_normal_maps(maps)            # regions: same rule, on pixels
write_thresholds(version_dir, {"wood": (warn, reject)}, meta, region={"wood": region})

Each product's row says how well its thresholds separate on a check set (fresh synthetic parts,
half defective): good parts flagged (false alarms), defective parts flagged (caught) and rejected,
and the overlap (defective parts scoring under warn). A product whose overlap exceeds the limit is
flagged in the report and in thresholds.json's ``_meta.flagged``: its thresholds are written (both
warn and reject stay reachable) but the detector cannot tell its good and defective parts apart.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from qc_stream.dapo.checkpoint import resolve_version_path
from qc_stream.dapo.thresholds import METHOD, write_thresholds
from qc_stream.domain.inspection import decide_verdict
from qc_stream.domain.thresholds import (
    DEFAULT_MARGIN,
    DEFAULT_MAX_OVERLAP,
    DEFAULT_QUANTILE,
    pixel_threshold_from_normal_maps,
    rate_at,
    thresholds_from_normal_scores,
)
from qc_stream.errors import InputError, QcError
from qc_stream.inference.decode import decode_image
from qc_stream.inference.detector import Detector
from qc_stream.producers.sources import encode_jpeg, regular_files
from qc_stream.stream.prompt_source import choose_prompt_version
from qc_stream.synth import PRODUCTS, generate

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------- scoring


def normal_scores(
    detector, images: Sequence, product: str | None, batch_size: int = 16
) -> np.ndarray:
    """The detector's image-level anomaly scores of ``images`` (PIL RGB) shown as ``product``."""
    return scores_and_maps(detector, images, product, batch_size)[0]


def scores_and_maps(
    detector, images: Sequence, product: str | None, batch_size: int = 16
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Image scores and the anomaly maps of ``images`` at the model's resolution: the maps region
    cuts are applied to (a result carries them at OVERLAY_MAP_PX at most), read off the device."""
    scores: list[float] = []
    maps: list[np.ndarray] = []
    for start in range(0, len(images), batch_size):
        chunk = list(images[start : start + batch_size])
        result = detector.forward(detector.prepare(chunk, [product] * len(chunk)))
        for i, o in enumerate(detector.finish(result)):
            scores.append(o.detection.anomaly_score)
            maps.append(result.amap[i].float().cpu().numpy())
    return np.asarray(scores, dtype=np.float64), maps


def flag_rate(scores: Sequence[float], thresholds: tuple[float, float]) -> float:
    """Share of ``scores`` whose verdict is not ok (warn or reject); nan without scores."""
    if len(scores) == 0:
        return float("nan")
    return float(np.mean([decide_verdict(float(s), *thresholds).value != "ok" for s in scores]))


# ---------------------------------------------------------------------- synthetic parts


def synthetic_images(
    product: str, n: int, *, seed: int, size: int = 256, defect_rate: float = 0.0
) -> tuple[list, list]:
    """``(normal, defective)`` PIL images of a catalog product, JPEG-encoded and decoded as a camera
    would send them (so calibration sees the same compression the workers see)."""
    normal, defective = [], []
    for sample in generate(product, n=n, seed=seed, size=size, defect_rate=defect_rate):
        (defective if sample.defect_type else normal).append(
            decode_image(encode_jpeg(sample.image))
        )
    return normal, defective


def load_images(folder: Path) -> list:
    """Every decodable image of ``folder`` (not recursive); undecodable files are skipped with a warning."""
    images = []
    for p in regular_files(folder):
        try:
            images.append(decode_image(p.read_bytes()))
        except (InputError, OSError) as e:
            log.warning("skipping %s: %s", p, e)
    return images


# ---------------------------------------------------------------------- report rows


@dataclass(frozen=True)
class ProductCalibration:
    product: str
    n_normal: int
    warn: float
    reject: float
    normal_median: float
    normal_max: float
    # Flag rates (verdict warn or reject) on a separate check set, with these and with the global
    # thresholds; nan without a check set.
    check_normal: int = 0
    check_defective: int = 0
    false_alarm_rate: float = float("nan")
    recall: float = float("nan")
    global_false_alarm_rate: float = float("nan")
    global_recall: float = float("nan")
    # Share of defective check parts at or above reject; share under warn (the overlap), and
    # whether it exceeds the limit (the thresholds cannot separate this product).
    reject_rate: float = float("nan")
    overlap: float = float("nan")
    flagged: bool = False
    region_threshold: float | None = None  # pixel threshold of regions (None: not calibrated)


def calibrate_product(
    product: str,
    scores: Sequence[float],
    quantile: float,
    margin: float,
    *,
    check_normal: Sequence[float] = (),
    check_defective: Sequence[float] = (),
    global_thresholds: tuple[float, float] = (0.5, 0.8),
    normal_maps: Sequence[np.ndarray] = (),
    max_overlap: float = DEFAULT_MAX_OVERLAP,
) -> ProductCalibration:
    """Thresholds from ``scores`` (good parts), flag rates and overlap on the check scores, and
    the pixel threshold from ``normal_maps`` (good parts' anomaly maps) when given."""
    try:
        warn, reject = thresholds_from_normal_scores(scores, quantile, margin)
        region = pixel_threshold_from_normal_maps(normal_maps) if len(normal_maps) else None
    except ValueError as e:
        raise QcError(f"{product}: {e}") from None
    a = np.asarray(scores, dtype=np.float64)
    recall = flag_rate(check_defective, (warn, reject))
    overlap = 1.0 - recall if len(check_defective) else float("nan")
    return ProductCalibration(
        product=product,
        n_normal=int(a.size),
        warn=warn,
        reject=reject,
        normal_median=float(np.median(a)),
        normal_max=float(a.max()),
        check_normal=len(check_normal),
        check_defective=len(check_defective),
        false_alarm_rate=flag_rate(check_normal, (warn, reject)),
        recall=recall,
        global_false_alarm_rate=flag_rate(check_normal, global_thresholds),
        global_recall=flag_rate(check_defective, global_thresholds),
        reject_rate=rate_at(check_defective, reject),
        overlap=overlap,
        flagged=bool(overlap > max_overlap),
        region_threshold=region,
    )


# ---------------------------------------------------------------------- the whole calibration

CALIBRATION_SEED = (
    7001  # the demo's cameras use seeds 0, 1, 2...: calibrate and check on other parts
)
CHECK_SEED = 7002


def calibrate_version(
    settings,
    *,
    version: str | None = None,
    products: Sequence[str] = (),
    images_dir: Path | None = None,
    synthetic: int = 64,
    check: int = 64,
    quantile: float | None = None,
    margin: float | None = None,
    size: int = 256,
    write: bool = True,
    max_overlap: float = DEFAULT_MAX_OVERLAP,
) -> tuple[str, list[ProductCalibration], Path | None]:
    """Calibrate ``version`` (default: the active one) and write its ``thresholds.json``.

    Good parts: the images of ``images_dir`` (exactly one product), else ``synthetic`` generated
    normal parts of each product (default: every catalog product). Check set (synthetic mode
    only): ``check`` fresh synthetic parts, half defective, scored with the new and the global
    thresholds. Returns (version, rows, path written)."""
    quantile = DEFAULT_QUANTILE if quantile is None else quantile
    margin = DEFAULT_MARGIN if margin is None else margin
    if not 0.5 <= quantile <= 1.0:
        raise QcError(f"--quantile must be in [0.5, 1], got {quantile}")
    if not 0.0 <= margin <= 1.0:
        raise QcError(f"--margin must be in [0, 1], got {margin}")
    # the version a worker or predict would start on (QC_PROMPT_VERSION, the database's, ACTIVE)
    version = version or choose_prompt_version(settings).version
    if not version:
        raise QcError(
            "no prompt version to calibrate: give --prompt-version, or activate one (`qc-stream models activate`)"
        )
    version_dir = resolve_version_path(version, settings.models_dir)
    products = list(dict.fromkeys(products))
    if images_dir is not None:
        if len(products) != 1:
            raise QcError(
                "--images DIR holds good parts of one product: give exactly one --product"
            )
        normals = {products[0]: load_images(Path(images_dir))}
        if not normals[products[0]]:
            raise QcError(f"no decodable image in {images_dir}")
    else:
        unknown = [p for p in products if p not in PRODUCTS]
        if unknown:
            raise QcError(
                f"no synthetic parts for {', '.join(map(repr, unknown))}: known products are "
                f"{', '.join(sorted(PRODUCTS))}; use --images DIR for others"
            )
        products = products or list(PRODUCTS)
        normals = {
            p: synthetic_images(p, synthetic, seed=CALIBRATION_SEED, size=size)[0] for p in products
        }

    detector = Detector.from_settings(
        settings.model_copy(update={"prompt_version": str(version_dir)})
    )
    default = (settings.warn_threshold, settings.reject_threshold)
    rows = []
    for product, images in normals.items():
        scores, maps = scores_and_maps(detector, images, product)
        check_n = check_d = np.array([])
        if check > 0 and images_dir is None:  # synthetic checks say nothing about real parts
            cn, cd = synthetic_images(product, check, seed=CHECK_SEED, size=size, defect_rate=0.5)
            check_n, check_d = (
                normal_scores(detector, cn, product),
                normal_scores(detector, cd, product),
            )
        rows.append(
            calibrate_product(
                product,
                scores,
                quantile,
                margin,
                check_normal=check_n,
                check_defective=check_d,
                global_thresholds=default,
                normal_maps=maps,
                max_overlap=max_overlap,
            )
        )
    path = None
    if write:
        meta = {
            "method": METHOD,
            "quantile": quantile,
            "margin": margin,
            "source": f"images:{images_dir}"
            if images_dir is not None
            else f"synthetic:{size}px:seed{CALIBRATION_SEED}",
            "n_normal": {r.product: r.n_normal for r in rows},
            "overlap": {r.product: round(r.overlap, 4) for r in rows if not np.isnan(r.overlap)},
            "flagged": [r.product for r in rows if r.flagged],
            "max_overlap": max_overlap,
            "backbone_id": detector.backbone_id,
        }
        path = write_thresholds(
            version_dir,
            {r.product: (r.warn, r.reject) for r in rows},
            meta,
            region={r.product: r.region_threshold for r in rows if r.region_threshold is not None},
        )
    return detector.prompt_version, rows, path


def pooled_rate(rows: Sequence[ProductCalibration], rate: str, count: str) -> float:
    """``rate`` (e.g. ``"recall"``) over every product's check set together: the per-product rates
    weighted by ``count`` (``"check_defective"``); nan without check parts."""
    total = sum(getattr(r, count) for r in rows)
    if not total:
        return float("nan")
    return sum(getattr(r, rate) * getattr(r, count) for r in rows if getattr(r, count)) / total
