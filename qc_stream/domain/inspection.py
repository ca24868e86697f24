"""What an inspection is: frame metadata, the detector's findings, the verdict."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import Enum

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = 1


class Verdict(str, Enum):
    OK = "ok"
    WARN = "warn"
    REJECT = "reject"


def decide_verdict(anomaly_score: float, warn: float, reject: float) -> Verdict:
    """Per-product thresholds turn a score into a verdict (``warn <= reject``)."""
    if anomaly_score >= reject:
        return Verdict.REJECT
    if anomaly_score >= warn:
        return Verdict.WARN
    return Verdict.OK


class Region(BaseModel):
    """One connected anomalous region of a frame (pixels of the input image)."""

    model_config = ConfigDict(frozen=True)

    defect_type: str | None
    area_px: int = Field(ge=0)
    # x0, y0, x1, y1 (inclusive-exclusive)
    bbox: tuple[int, int, int, int]
    score: float = Field(ge=0, le=1)  # the region's peak anomaly value
    mean_score: float | None = Field(None, ge=0, le=1)  # mean anomaly value over its pixels
    centroid: tuple[float, float] | None = None  # x, y
    # Closed outline polygon [[x, y], ...] (simplified; at most a few dozen vertices).
    outline: list[tuple[int, int]] = Field(default_factory=list)


class Thresholds(BaseModel):
    """The thresholds that decided one verdict and where each came from, so a verdict explains
    itself. ``source``/``region_source``: ``setting`` (QC_THRESHOLDS / QC_REGION_THRESHOLD),
    ``calibrated:<prompt version>``, or ``global`` (QC_WARN/REJECT_THRESHOLD, the built-in region
    default)."""

    model_config = ConfigDict(frozen=True)

    warn: float = Field(ge=0, le=1)
    reject: float = Field(ge=0, le=1)
    source: str
    region: float | None = Field(None, ge=0, le=1)  # anomaly-map value a region pixel reaches
    region_source: str | None = None


class Detection(BaseModel):
    """What the detector says about one image (no frame or stream context)."""

    model_config = ConfigDict(frozen=True)

    anomaly_score: float = Field(ge=0, le=1)
    defect_type: str | None = None
    defect_probs: dict[str, float] = Field(default_factory=dict)
    regions: list[Region] = Field(default_factory=list)
    thresholds: Thresholds | None = None  # what the detector applied (None: a bare detection)


class FrameMeta(BaseModel):
    """Metadata that travels in the Kafka headers of a ``qc.frames`` record."""

    model_config = ConfigDict(frozen=True)

    frame_id: str = Field(min_length=1, max_length=128)
    camera_id: str = Field(min_length=1, max_length=128)
    line_id: str = Field(min_length=1, max_length=128)
    product: str = Field(min_length=1, max_length=128)
    captured_at: datetime
    content_type: str = "image/jpeg"
    schema_version: int = SCHEMA_VERSION


class InspectionResult(BaseModel):
    """One ``qc.results`` message and one ``inspections`` row."""

    model_config = ConfigDict(frozen=True)

    frame_id: str
    camera_id: str
    line_id: str
    product: str
    captured_at: datetime
    processed_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    verdict: Verdict
    anomaly_score: float = Field(ge=0, le=1)
    defect_type: str | None = None
    defect_probs: dict[str, float] = Field(default_factory=dict)
    regions: list[Region] = Field(default_factory=list)
    # The thresholds that decided and their source; the product's candidate defect words.
    thresholds: Thresholds | None = None
    candidate_words: list[str] = Field(default_factory=list)
    model_version: str
    prompt_version: str
    latency_ms: float = Field(ge=0)

    @classmethod
    def from_detection(
        cls,
        frame: FrameMeta,
        detection: Detection,
        *,
        thresholds: tuple[float, float],
        model_version: str,
        prompt_version: str,
        latency_ms: float,
        processed_at: datetime | None = None,
    ) -> InspectionResult:
        return cls(
            frame_id=frame.frame_id,
            camera_id=frame.camera_id,
            line_id=frame.line_id,
            product=frame.product,
            captured_at=frame.captured_at,
            processed_at=processed_at or datetime.now(UTC),
            verdict=decide_verdict(detection.anomaly_score, *thresholds),
            anomaly_score=detection.anomaly_score,
            defect_type=detection.defect_type,
            defect_probs=detection.defect_probs,
            regions=detection.regions,
            thresholds=_explained(detection.thresholds, thresholds),
            candidate_words=list(detection.defect_probs),
            model_version=model_version,
            prompt_version=prompt_version,
            latency_ms=latency_ms,
        )


def _explained(applied: Thresholds | None, pair: tuple[float, float]) -> Thresholds:
    """The detector's account of its thresholds when it gave one for this pair, else the bare pair
    (a caller that decided with other thresholds, e.g. a test detector)."""
    if applied is not None and (applied.warn, applied.reject) == tuple(pair):
        return applied
    return Thresholds(warn=pair[0], reject=pair[1], source="caller")
