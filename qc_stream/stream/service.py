"""The one service function of a worker: a micro-batch of raw frame records -> results + dead letters.

Pure of Kafka and of the database: it decodes and validates each record, runs the detector once on
the valid frames of the batch and turns each detection into an ``InspectionResult``. Records that
cannot be inspected become ``DeadLetter``s with a reason; nothing is dropped.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from qc_stream.domain.inspection import FrameMeta, InspectionResult
from qc_stream.errors import InputError, QcError
from qc_stream.settings import Settings
from qc_stream.storage.frame_store import keeps
from qc_stream.wire.codec import (
    Headers,
    deadletter_record,
    headers_to_meta,
    normalize_headers,
    result_to_json,
)

log = logging.getLogger(__name__)


class DetectorLike(Protocol):
    model_version: str
    prompt_version: str

    def detect(self, images: list, products: list[str | None]) -> list: ...


@dataclass(frozen=True)
class RawFrame:
    """One ``qc.frames`` record as it came off the broker."""

    value: bytes | None
    headers: Headers
    key: bytes | None = None
    origin: str = "?"  # "topic[partition]@offset", for log lines about this record

    @classmethod
    def of(cls, value: Any, headers: Any, key: Any = None, origin: str = "?") -> RawFrame:
        return cls(
            value=value if value is None else bytes(value),
            headers=normalize_headers(headers),
            key=key,
            origin=origin,
        )


@dataclass(frozen=True)
class DeadLetter:
    frame: RawFrame
    reason: str
    stage: str  # "headers" | "decode" | "inference"


@dataclass
class BatchOutcome:
    results: list[InspectionResult] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    # (result, picture, anomaly map) of rejected frames, kept only when overlays are asked for.
    rejects: list[tuple[InspectionResult, Any, Any]] = field(default_factory=list)
    # (result, picture, anomaly map) of frames the frame store keeps for review (QC_FRAME_STORE_DIR).
    retained: list[tuple[InspectionResult, Any, Any]] = field(default_factory=list)
    # Wall seconds spent in decode and in the model, for metrics and the benchmark.
    decode_s: float = 0.0
    model_s: float = 0.0


@dataclass
class Outgoing:
    """One record a batch must publish: a result on qc.results or a dead letter on qc.deadletter."""

    kind: str  # "result" | "dead letter"
    key: bytes | None
    value: bytes
    headers: Headers | None
    origin: str  # the qc.frames record it comes from
    sent: bool = False


def outputs_of(outcome: BatchOutcome, settings: Settings) -> list[Outgoing]:
    """What a batch publishes; dead letters carry at most QC_DEADLETTER_MAX_BYTES of the value."""
    out = [
        Outgoing("result", r.camera_id.encode(), result_to_json(r), None, r.frame_id)
        for r in outcome.results
    ]
    for d in outcome.dead:
        value, headers = deadletter_record(
            d.frame.value, d.frame.headers, d.reason, d.stage, settings.deadletter_max_bytes
        )
        out.append(Outgoing("dead letter", d.frame.key, value, headers, d.frame.origin))
    return out


def _default_decoder(settings: Settings) -> Callable[[bytes], Any]:
    """The CPU decoder, or with QC_DEVICE_DECODE on, one that leaves the frames the model's device
    decodes encoded (they are decoded in the detector's batch; see inference.device_decode)."""
    from qc_stream.inference.decode import decode_image
    from qc_stream.inference.device_decode import defer_decode, device_decode_on

    return defer_decode if device_decode_on(settings) else decode_image


@dataclass
class PreparedBatch:
    """A micro-batch after stage 1: decoded pictures of the valid frames, dead letters for the rest."""

    frames: list[RawFrame] = field(default_factory=list)
    metas: list[FrameMeta] = field(default_factory=list)
    images: list[Any] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    decode_s: float = 0.0


def inspect_batch(
    frames: Sequence[RawFrame],
    detector: DetectorLike,
    settings: Settings,
    *,
    decode: Callable[[bytes], Any] | None = None,
) -> BatchOutcome:
    """Decode + validate a micro-batch, run one batched ``detect`` and build the results."""
    return infer_batch(prepare_batch(frames, settings, decode=decode), detector, settings)


def prepare_batch(
    frames: Sequence[RawFrame], settings: Settings, *, decode: Callable[[bytes], Any] | None = None
) -> PreparedBatch:
    """Stage 1 (CPU, any thread): validate headers and size, decode the images."""
    decode = decode or _default_decoder(settings)
    out = PreparedBatch()
    t0 = time.perf_counter()
    for frame in frames:
        try:
            meta = headers_to_meta(frame.headers)
        except QcError as e:
            out.dead.append(DeadLetter(frame, str(e), "headers"))
            continue
        allowed = settings.allowed_products
        if allowed is not None and meta.product not in allowed:
            out.dead.append(
                DeadLetter(
                    frame,
                    f"unknown product {meta.product!r} (QC_PRODUCTS lists the known ones)",
                    "headers",
                )
            )
            continue
        if not frame.value:
            out.dead.append(DeadLetter(frame, "empty frame (no image bytes)", "decode"))
            continue
        if len(frame.value) > settings.max_frame_bytes:
            out.dead.append(
                DeadLetter(
                    frame,
                    f"frame of {len(frame.value)} bytes exceeds QC_MAX_FRAME_BYTES={settings.max_frame_bytes}",
                    "decode",
                )
            )
            continue
        try:
            out.images.append(decode(frame.value))
        except QcError as e:
            out.dead.append(DeadLetter(frame, f"undecodable image: {e}", "decode"))
            continue
        except Exception as e:  # a decoder bug must not stop the line either
            out.dead.append(
                DeadLetter(frame, f"undecodable image: {type(e).__name__}: {e}", "decode")
            )
            continue
        out.metas.append(meta)
        out.frames.append(frame)
    out.decode_s = time.perf_counter() - t0
    return out


def infer_batch(
    prepared: PreparedBatch, detector: DetectorLike, settings: Settings
) -> BatchOutcome:
    """Stage 2 (the inference thread): one batched ``detect``, then the results."""
    out = BatchOutcome(dead=list(prepared.dead), decode_s=prepared.decode_s)
    metas, images, valid = _refuse_unknown_products(prepared, detector, out)
    if not images:
        return out
    t1 = time.perf_counter()
    # Versions are read once per batch: swaps happen between batches, so one batch = one version.
    model_version, prompt_version = detector.model_version, detector.prompt_version
    products = [m.product for m in metas]
    triples = _detect_isolating_failures(detector, images, products, metas, valid, out)
    out.model_s = time.perf_counter() - t1
    processed_at = datetime.now(UTC)
    for meta, output, image in triples:
        detection = _detection_of(output)
        latency_ms = max(0.0, (processed_at - meta.captured_at).total_seconds() * 1000.0)
        out.results.append(
            InspectionResult.from_detection(
                meta,
                detection,
                thresholds=_thresholds_of(output, detector, meta.product, settings),
                model_version=model_version,
                prompt_version=prompt_version,
                latency_ms=latency_ms,
                processed_at=processed_at,
            )
        )
        result = out.results[-1]
        if (
            settings.overlay_dir is not None
            and result.verdict.value == "reject"
            and hasattr(output, "anomaly_map")
        ):
            out.rejects.append((result, image, output.anomaly_map))
        if (
            settings.frame_store_dir is not None
            and hasattr(output, "anomaly_map")
            and keeps(result.verdict.value, result.frame_id, settings.review_sample_ok)
        ):
            out.retained.append((result, image, output.anomaly_map))
    return out


def _refuse_unknown_products(prepared: PreparedBatch, detector: Any, out: BatchOutcome):
    """(metas, images, frames) of the frames whose product the detector's prompt version knows;
    the others become dead letters with the detector's reason (a detector that cannot tell
    accepts every product)."""
    unknown = getattr(detector, "unknown_product", None)
    if unknown is None:
        return prepared.metas, prepared.images, prepared.frames
    metas, images, frames = [], [], []
    reasons: dict[str, str | None] = {}
    for meta, image, frame in zip(prepared.metas, prepared.images, prepared.frames, strict=True):
        if meta.product not in reasons:
            reasons[meta.product] = unknown(meta.product)
        if reasons[meta.product]:
            out.dead.append(DeadLetter(frame, reasons[meta.product], "product"))
            continue
        metas.append(meta)
        images.append(image)
        frames.append(frame)
    return metas, images, frames


def _thresholds_of(
    output: Any, detector: Any, product: str, settings: Settings
) -> tuple[float, float]:
    """The (warn, reject) the detector applied to this output (QC_THRESHOLDS > the prompt version's
    calibrated thresholds > global, from the same version as the score); for a detector that does
    not say, its ``thresholds_for``, else the settings alone."""
    thresholds = getattr(output, "thresholds", None)
    if thresholds is not None:
        return thresholds
    if hasattr(detector, "thresholds_for"):
        return detector.thresholds_for(product, settings)
    return settings.thresholds_for(product)


def _detection_of(output: Any):
    # DetectorOutput carries .detection; accept a bare Detection too.
    return getattr(output, "detection", output)


def _detect_isolating_failures(detector, images, products, metas, frames, out: BatchOutcome):
    """One batched call; if it fails, retry frame by frame so only the culprit is dead-lettered."""
    try:
        outputs = detector.detect(images, products)
        return list(zip(metas, outputs, images, strict=True))
    except Exception as batch_error:
        if len(images) > 1:
            log.warning("batch inference failed (%s); retrying frame by frame", batch_error)
        pairs = []
        for image, product, meta, frame in zip(images, products, metas, frames):
            error: Exception = batch_error
            if len(images) > 1:
                try:
                    pairs.append((meta, detector.detect([image], [product])[0], image))
                    continue
                except Exception as e:
                    error = e
            if isinstance(error, InputError):  # a frame left encoded for the device is corrupt
                out.dead.append(DeadLetter(frame, f"undecodable image: {error}", "decode"))
                continue
            out.dead.append(
                DeadLetter(frame, f"inference failed: {type(error).__name__}: {error}", "inference")
            )
        return pairs


class PromptRefused(Exception):
    """A qc.model-updates announcement this worker will not act on; ``reason`` is the metric label."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def vet_prompt_version(
    name: str, models_dir: Path, registered: Callable[[str], Any] | None
) -> Path:
    """The folder of prompt version ``name`` if a worker may swap to it, else ``PromptRefused``.

    A name from the broker is only a name: it must match ``VERSION_NAME`` and resolve to a folder
    directly under ``<models_dir>/prompts``; the version must be registered in ``model_versions``
    (``registered(name)`` returns its row or None) and its files must still hash to the sha256
    recorded at registration. Errors of ``registered`` itself propagate (the caller retries them).
    """
    from qc_stream.dapo.checkpoint import VERSION_NAME, prompts_dir, version_sha256

    if not VERSION_NAME.match(name):
        raise PromptRefused(
            "bad_name", f"{name[:80]!r} is not a prompt version name ({VERSION_NAME.pattern})"
        )
    root = prompts_dir(models_dir).resolve()
    folder = (root / name).resolve()
    if folder.parent != root:
        raise PromptRefused("outside_models_dir", f"{name!r} resolves outside {root}")
    row = registered(name) if registered is not None else None
    if row is None:
        raise PromptRefused("unregistered", f"{name!r} is not registered in model_versions")
    if not getattr(row, "sha256", None):
        raise PromptRefused(
            "no_digest",
            f"{name!r} was registered without a sha256 (before migration 0002); "
            "`qc-stream models list` records it",
        )
    try:
        actual = version_sha256(folder)
    except OSError as e:
        raise PromptRefused("missing_files", f"{name!r}: cannot read its files: {e}") from None
    if actual != row.sha256:
        raise PromptRefused(
            "digest_mismatch",
            f"{name!r}: files hash to {actual[:12]}…, registered as {row.sha256[:12]}…",
        )
    return folder
