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
    """One connected anomalous region of a frame."""

    model_config = ConfigDict(frozen=True)

    defect_type: str | None
    area_px: int = Field(ge=0)
    bbox: tuple[
        int, int, int, int
    ]  # x0, y0, x1, y1 (inclusive-exclusive, pixels of the input image)
    score: float = Field(ge=0, le=1)


class Detection(BaseModel):
    """What the detector says about one image (no frame or stream context)."""

    model_config = ConfigDict(frozen=True)

    anomaly_score: float = Field(ge=0, le=1)
    defect_type: str | None = None
    defect_probs: dict[str, float] = Field(default_factory=dict)
    regions: list[Region] = Field(default_factory=list)


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
            model_version=model_version,
            prompt_version=prompt_version,
            latency_ms=latency_ms,
        )
