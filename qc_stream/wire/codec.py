"""Kafka record <-> domain objects: ``qc.frames`` headers <-> ``FrameMeta``, results and dead letters.

Frame values are the raw encoded image bytes; all metadata lives in headers (UTF-8 strings).
"""

from __future__ import annotations

import hashlib
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
# The failed record's value as it came (a dead letter's own value may be cut to a prefix).
ORIGINAL_SIZE_HEADER = "original_size"
ORIGINAL_SHA256_HEADER = "original_sha256"
TRUNCATED_HEADER = "truncated"  # "true" when the dead letter carries only a prefix of the value
DEADLETTER_HEADERS = (
    ERROR_HEADER,
    ERROR_STAGE_HEADER,
    FAILED_AT_HEADER,
    ORIGINAL_SIZE_HEADER,
    ORIGINAL_SHA256_HEADER,
    TRUNCATED_HEADER,
)
# A header value longer than this is cut: a dead letter must stay far below the request limit.
MAX_HEADER_VALUE_BYTES = 4096
MAX_ORIGINAL_HEADER_BYTES = 32 * 1024  # of the original headers copied into a dead letter


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
    keep: Headers = []
    room = MAX_ORIGINAL_HEADER_BYTES
    for k, v in normalize_headers(original):
        if k in DEADLETTER_HEADERS:
            continue
        k, v = k[:256], v[:MAX_HEADER_VALUE_BYTES]
        room -= len(k) + len(v)
        if room < 0:  # a record with megabytes of headers still makes a dead letter that fits
            break
        keep.append((k, v))
    return keep + [
        (ERROR_HEADER, reason.encode("utf-8", "replace")[:MAX_HEADER_VALUE_BYTES]),
        (ERROR_STAGE_HEADER, stage.encode()),
        (FAILED_AT_HEADER, datetime.now(UTC).isoformat().encode()),
    ]


def deadletter_record(
    value: bytes | None, original_headers, reason: str, stage: str, max_bytes: int
) -> tuple[bytes, Headers]:
    """(value, headers) of the dead letter for a failed record: the value cut to ``max_bytes``,
    headers with the reason and the original size and sha256, so the letter always fits the broker."""
    data = value or b""
    kept = data[:max_bytes]
    headers = deadletter_headers(original_headers, reason, stage) + [
        (ORIGINAL_SIZE_HEADER, str(len(data)).encode()),
        (ORIGINAL_SHA256_HEADER, hashlib.sha256(data).hexdigest().encode()),
        (TRUNCATED_HEADER, b"true" if len(kept) < len(data) else b"false"),
    ]
    return kept, headers
