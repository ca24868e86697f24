"""kafka-python producer for ``qc.frames``: key = camera_id, metadata in headers, size-checked.

Size limits are aligned end to end: a frame above ``QC_MAX_FRAME_BYTES`` is refused here with a
clear message, and the client request limit is ``QC_KAFKA_MAX_REQUEST_BYTES`` (validated by the
settings to carry a whole frame plus record overhead), the same limit the worker fetches with.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime

from qc_stream.domain.inspection import FrameMeta
from qc_stream.errors import InputError, QcError
from qc_stream.settings import Settings
from qc_stream.wire.codec import meta_to_headers
from qc_stream.wire.topics import FRAMES

log = logging.getLogger(__name__)


class FrameTooLarge(InputError):
    pass


def connect(
    settings: Settings,
    *,
    connect_timeout_s: float | None = None,
    on_retry: Callable[[int, float, str], None] | None = None,
    **extra,
):
    """A connected ``KafkaProducer``; retries with exponential backoff, then a clear ``QcError``."""
    from kafka import KafkaProducer
    from kafka.errors import KafkaError

    budget = settings.producer_connect_timeout_s if connect_timeout_s is None else connect_timeout_s
    deadline = time.monotonic() + budget
    delay, attempt = 0.25, 0
    while True:
        attempt += 1
        try:
            return KafkaProducer(
                bootstrap_servers=[hp.strip() for hp in settings.kafka_bootstrap.split(",")],
                client_id=extra.pop("client_id", "qc-camera"),
                acks="all",
                compression_type=None
                if settings.kafka_compression == "none"
                else settings.kafka_compression,
                max_request_size=settings.kafka_max_request_bytes,
                linger_ms=5,
                retries=5,
                retry_backoff_ms=200,
                request_timeout_ms=30_000,
                # Short tries, our own backoff between them: the user sees each retry.
                bootstrap_timeout_ms=max(
                    200, min(1_000, int((deadline - time.monotonic()) * 1000))
                ),
                max_block_ms=60_000,
                **extra,
            )
        except KafkaError as e:
            left = deadline - time.monotonic()
            if left <= 0:
                raise QcError(
                    f"cannot reach the Kafka broker at {settings.kafka_bootstrap} after {attempt} attempt(s) "
                    f"over {budget:.0f} s ({type(e).__name__}); is it running? (QC_KAFKA_BOOTSTRAP)"
                ) from None
            wait = min(delay, left)
            if on_retry:
                on_retry(attempt, wait, type(e).__name__)
            log.info(
                "broker %s unreachable (%s); retrying in %.1f s", settings.kafka_bootstrap, e, wait
            )
            time.sleep(wait)
            delay = min(delay * 2, 5.0)


class FrameProducer:
    """Sends frames asynchronously; ``flush()`` waits and reports failed deliveries."""

    def __init__(
        self, settings: Settings, *, connect_timeout_s: float | None = None, on_retry=None
    ):
        self.settings = settings
        self._producer = connect(settings, connect_timeout_s=connect_timeout_s, on_retry=on_retry)
        self.sent = 0
        self.delivered = 0
        self.failed: list[str] = []

    def check_size(self, data: bytes, what: str = "frame") -> None:
        limit = self.settings.max_frame_bytes
        if len(data) > limit:
            raise FrameTooLarge(
                f"{what} is {len(data):,} bytes, over the frame limit QC_MAX_FRAME_BYTES={limit:,}; "
                "lower the resolution/JPEG quality or raise QC_MAX_FRAME_BYTES (and QC_KAFKA_MAX_REQUEST_BYTES)"
            )

    def send(self, data: bytes, meta: FrameMeta, *, what: str = "frame"):
        """Queue one frame (non-blocking unless the client buffer is full)."""
        from kafka.errors import KafkaError

        self.check_size(data, what)
        try:
            future = self._producer.send(
                FRAMES, key=meta.camera_id.encode(), value=data, headers=meta_to_headers(meta)
            )
        except KafkaError as e:  # metadata/buffer wait timed out: the broker went away mid-run
            raise QcError(
                f"could not send to {self.settings.kafka_bootstrap} ({type(e).__name__}: {e}); "
                f"{self.delivered} frame(s) were delivered before"
            ) from None
        self.sent += 1
        future.add_callback(self._ok)
        future.add_errback(self._err, meta.frame_id)
        return future

    def _ok(self, _md) -> None:
        self.delivered += 1

    def _err(self, exc, frame_id: str) -> None:
        self.failed.append(f"{frame_id}: {type(exc).__name__}: {exc}")

    def flush(self, timeout_s: float = 60.0) -> None:
        from kafka.errors import KafkaTimeoutError

        try:
            self._producer.flush(timeout=timeout_s)
        except KafkaTimeoutError:
            raise QcError(
                f"{self.sent - self.delivered} frame(s) not delivered within {timeout_s:.0f} s; is the broker up?"
            ) from None
        if self.failed:
            raise QcError(
                f"{len(self.failed)} frame(s) could not be delivered, e.g. {self.failed[0]}"
            )

    def close(self, timeout_s: float = 10.0) -> None:
        self._producer.close(timeout=timeout_s)


def frame_meta(
    camera_id: str,
    line_id: str,
    product: str,
    content_type: str,
    frame_id: str,
    captured_at: datetime | None = None,
) -> FrameMeta:
    return FrameMeta(
        frame_id=frame_id,
        camera_id=camera_id,
        line_id=line_id,
        product=product,
        captured_at=captured_at or datetime.now(UTC),
        content_type=content_type,
    )
