"""Kafka record <-> domain objects: ``qc.frames`` headers <-> ``FrameMeta``, results and dead letters.

Frame values are the raw encoded image bytes; all metadata lives in headers (UTF-8 strings).
"""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import ValidationError

from qc_stream.domain.inspection import SCHEMA_VERSION, FrameMeta, InspectionResult
from qc_stream.errors import InputError

Headers = list[tuple[str, bytes]]

# Header names on qc.frames (one per FrameMeta field).
FRAME_HEADERS = (
    "frame_id",
    "camera_id",
    "line_id",
    "product",
    "captured_at",
    "content_type",
    "schema_version",
)
# Extra headers a dead letter carries on top of the original ones.
ERROR_HEADER = "error"
ERROR_STAGE_HEADER = "error_stage"
FAILED_AT_HEADER = "failed_at"


def meta_to_headers(meta: FrameMeta) -> Headers:
    return [
        ("frame_id", meta.frame_id.encode()),
        ("camera_id", meta.camera_id.encode()),
        ("line_id", meta.line_id.encode()),
        ("product", meta.product.encode()),
        ("captured_at", meta.captured_at.astimezone(UTC).isoformat().encode()),
        ("content_type", meta.content_type.encode()),
        ("schema_version", str(meta.schema_version).encode()),
    ]


def normalize_headers(headers) -> Headers:
    """Faust gives headers as a list of pairs or a dict; values may be bytes or str."""
    if headers is None:
        return []
    items = headers.items() if isinstance(headers, dict) else headers
    out: Headers = []
    for k, v in items:
        key = k.decode("utf-8", "replace") if isinstance(k, (bytes, bytearray)) else str(k)
        val = bytes(v) if isinstance(v, (bytes, bytearray)) else str(v).encode()
        out.append((key, val))
    return out


def headers_to_meta(headers) -> FrameMeta:
    """Read and validate the frame metadata; ``InputError`` says exactly what is wrong."""
    found: dict[str, str] = {}
    for k, v in normalize_headers(headers):
        if k in FRAME_HEADERS:
            try:
                found[k] = v.decode("utf-8")
            except UnicodeDecodeError:
                raise InputError(f"header {k!r} is not UTF-8") from None
    missing = [
        h for h in ("frame_id", "camera_id", "line_id", "product", "captured_at") if h not in found
    ]
    if missing:
        raise InputError(f"missing header(s): {', '.join(missing)}")
    version = found.get("schema_version", str(SCHEMA_VERSION))
    if version != str(SCHEMA_VERSION):
        raise InputError(
            f"unsupported schema_version {version!r} (this worker reads {SCHEMA_VERSION})"
        )
    try:
        captured = datetime.fromisoformat(found["captured_at"])
    except ValueError:
        raise InputError(f"captured_at is not an ISO-8601 time: {found['captured_at']!r}") from None
    if captured.tzinfo is None:
        captured = captured.replace(tzinfo=UTC)
    try:
        return FrameMeta(
            frame_id=found["frame_id"],
            camera_id=found["camera_id"],
            line_id=found["line_id"],
            product=found["product"],
            captured_at=captured,
            content_type=found.get("content_type", "image/jpeg"),
        )
    except ValidationError as e:
        first = e.errors()[0]
        raise InputError(f"bad header {first['loc'][0]!r}: {first['msg']}") from None


def header_value(headers, name: str) -> str | None:
    for k, v in normalize_headers(headers):
        if k == name:
            return v.decode("utf-8", "replace")
    return None


def result_to_json(result: InspectionResult) -> bytes:
    return result.model_dump_json().encode()


def result_from_json(data: bytes) -> InspectionResult:
    return InspectionResult.model_validate_json(data)


def deadletter_headers(original, reason: str, stage: str) -> Headers:
    """The original headers plus why, where and when the frame failed."""
    keep = [
        (k, v)
        for k, v in normalize_headers(original)
        if k not in (ERROR_HEADER, ERROR_STAGE_HEADER, FAILED_AT_HEADER)
    ]
    return keep + [
        (ERROR_HEADER, reason.encode("utf-8", "replace")[:4096]),
        (ERROR_STAGE_HEADER, stage.encode()),
        (FAILED_AT_HEADER, datetime.now(UTC).isoformat().encode()),
    ]
