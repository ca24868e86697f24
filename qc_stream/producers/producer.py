"""kafka-python producer for ``qc.frames``: key = camera_id, metadata in headers, size-checked.

Size limits are aligned end to end: a frame above ``QC_MAX_FRAME_BYTES`` is refused here with a
clear message, and the client request limit is ``QC_KAFKA_MAX_REQUEST_BYTES`` (validated by the
settings to carry a whole frame plus record overhead), the same limit the worker fetches with.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from qc_stream.domain.inspection import FrameMeta
from qc_stream.errors import InputError, QcError
from qc_stream.settings import Settings
from qc_stream.wire.codec import meta_to_headers
from qc_stream.wire.security import kafka_python_kwargs
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
                # A restarted broker is found again within a second (the default backoff grows to
                # 30 s), and a batch stuck on a dead broker fails within 30 s, so FrameProducer
                # replaces the client and re-sends.
                reconnect_backoff_max_ms=1_000,
                request_timeout_ms=15_000,
                delivery_timeout_ms=30_000,
                # Short tries, our own backoff between them: the user sees each retry.
                bootstrap_timeout_ms=max(
                    200, min(1_000, int((deadline - time.monotonic()) * 1000))
                ),
                max_block_ms=10_000,
                **kafka_python_kwargs(settings),
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


@dataclass
class _Unacked:
    """A frame handed to the producer and not acknowledged yet: kept to be re-sent."""

    data: bytes
    meta: FrameMeta
    what: str


class FrameProducer:
    """Sends frames and keeps each one until the broker acknowledges it.

    A fatal producer error (after a broker restart: ``UnknownProducerIdError``, expired batches,
    a dead connection) replaces the Kafka client and re-sends every unacknowledged frame, with its
    original frame id, so delivery is at-least-once and the worker's de-duplication makes it
    exactly-once in the database. The unacknowledged backlog is bounded
    (``QC_PRODUCER_BUFFER_FRAMES`` / ``QC_PRODUCER_BUFFER_BYTES``): when it is full, ``send`` waits.
    Only ``QC_PRODUCER_GIVE_UP_S`` without a single acknowledgement while frames are owed ends in
    a ``QcError``.
    """

    # A backlog with no acknowledgement for this long means the client is stuck: replace it.
    stall_s = 10.0

    def __init__(
        self,
        settings: Settings,
        *,
        connect_timeout_s: float | None = None,
        on_retry=None,
        on_recover: Callable[[str, int], None] | None = None,
    ):
        self.settings = settings
        self.on_retry = on_retry
        self.on_recover = on_recover  # (why, backlog) each time the client is replaced
        self.heartbeat: Callable[[], None] | None = None  # called while send/flush wait
        self._lock = threading.Lock()
        self._unacked: OrderedDict[str, _Unacked] = OrderedDict()
        self._unacked_bytes = 0
        self._generation = 0  # callbacks of a replaced client are ignored (but acks still count)
        self._broken: str | None = None  # why the current client must be replaced
        self.sent = 0  # frames accepted by send()
        self.acked = 0  # frames the broker acknowledged (each frame once)
        self.recoveries = 0  # clients replaced
        self.resent = 0  # frames sent again by a new client
        self.last_progress = self._last_recovery = time.monotonic()
        self._producer = connect(settings, connect_timeout_s=connect_timeout_s, on_retry=on_retry)

    # -- accounting ------------------------------------------------------------------------
    @property
    def delivered(self) -> int:
        return self.acked

    @property
    def backlog(self) -> int:
        """Frames sent but not acknowledged yet."""
        return len(self._unacked)

    @property
    def backlog_bytes(self) -> int:
        return self._unacked_bytes

    def check_size(self, data: bytes, what: str = "frame") -> None:
        limit = self.settings.max_frame_bytes
        if len(data) > limit:
            raise FrameTooLarge(
                f"{what} is {len(data):,} bytes, over the frame limit QC_MAX_FRAME_BYTES={limit:,}; "
                "lower the resolution/JPEG quality or raise QC_MAX_FRAME_BYTES (and QC_KAFKA_MAX_REQUEST_BYTES)"
            )

    # -- sending ---------------------------------------------------------------------------
    def send(self, data: bytes, meta: FrameMeta, *, what: str = "frame") -> None:
        """Queue one frame; waits while the unacknowledged backlog is full."""
        self.check_size(data, what)
        self._wait_until(lambda: self._has_room(len(data)), "room in the backlog")
        with self._lock:
            if not self._unacked:  # nothing was owed until now: the stall/give-up clocks start here
                self.last_progress = time.monotonic()
            self._unacked[meta.frame_id] = _Unacked(data, meta, what)
            self._unacked_bytes += len(data)
        self.sent += 1
        self._submit(meta.frame_id)

    def _has_room(self, size: int) -> bool:
        with self._lock:
            if not self._unacked:
                return True
            return (
                len(self._unacked) < self.settings.producer_buffer_frames
                and self._unacked_bytes + size <= self.settings.producer_buffer_bytes
            )

    def _submit(self, frame_id: str) -> None:
        from kafka.errors import KafkaError

        with self._lock:
            item = self._unacked.get(frame_id)
            generation = self._generation
        if item is None or self._broken:
            return  # acknowledged meanwhile, or the next recovery re-sends it
        meta = item.meta
        try:
            future = self._producer.send(
                FRAMES, key=meta.camera_id.encode(), value=item.data, headers=meta_to_headers(meta)
            )
        except KafkaError as e:  # metadata/buffer wait timed out, or the client is in a fatal state
            self._mark_broken(generation, e)
            return
        future.add_callback(self._ok, frame_id)
        future.add_errback(self._err, frame_id, generation)

    def _ok(self, frame_id: str, _md) -> None:
        with self._lock:
            item = self._unacked.pop(frame_id, None)
            if item is None:
                return  # a second copy (sent again after a recovery) was acknowledged too
            self._unacked_bytes -= len(item.data)
            self.acked += 1
            self.last_progress = time.monotonic()

    def _err(self, exc, frame_id: str, generation: int) -> None:
        self._mark_broken(generation, exc)

    def _mark_broken(self, generation: int, exc: BaseException) -> None:
        with self._lock:
            if generation == self._generation and self._broken is None:
                self._broken = f"{type(exc).__name__}: {exc}"

    # -- recovery --------------------------------------------------------------------------
    def service(self) -> None:
        """Replace a failed client and re-send the backlog (called from send/flush; cheap).

        A client is failed when a record errored, or when it holds a backlog and nothing was
        acknowledged for ``stall_s``: after a broker restart kafka-python can sit on its in-flight
        batches without ever failing them."""
        if (
            not self._broken
            and self.backlog
            and time.monotonic() - max(self.last_progress, self._last_recovery) > self.stall_s
        ):
            with self._lock:
                self._broken = f"no acknowledgement for {self.stall_s:g} s"
        if self._broken:
            self._recover()

    def _give_up_error(self, why: str) -> QcError:
        return QcError(
            f"no frame acknowledged by {self.settings.kafka_bootstrap} for "
            f"{self.settings.producer_give_up_s:.0f} s (QC_PRODUCER_GIVE_UP_S; last error: {why}); "
            f"{self.backlog} frame(s) not delivered, {self.acked} delivered before"
        )

    def _recover(self) -> None:
        from qc_stream.wire.topics import ensure_topics

        why = self._broken or "unknown"
        log.log(
            logging.INFO if self.on_recover else logging.WARNING,  # the callback tells the user
            "producer failed (%s); reconnecting and re-sending %d frame(s)",
            why,
            self.backlog,
        )
        self._close_client(self._producer)
        self._producer = None
        self.recoveries += 1
        if self.on_recover:
            self.on_recover(why, self.backlog)
        while True:
            left = self.last_progress + self.settings.producer_give_up_s - time.monotonic()
            if left <= 0:
                raise self._give_up_error(why)
            try:
                client = connect(self.settings, connect_timeout_s=left, on_retry=self.on_retry)
            except QcError:
                continue  # the loop ends it at the give-up deadline
            try:
                # Memory-storage brokers (tansu) lose topics on restart: recreate them with the
                # intended partition count before auto-creation picks another.
                ensure_topics(
                    self.settings.kafka_bootstrap,
                    self.settings.topic_partitions,
                    replication_factor=self.settings.topic_replication_factor,
                    timeout_s=max(1.0, min(10.0, left)),
                    client_kwargs=kafka_python_kwargs(self.settings),
                )
            except QcError as e:
                log.info("topics not checked after reconnecting: %s", e)
            break
        with self._lock:
            self._producer = client
            self._generation += 1
            self._broken = None
            self._last_recovery = time.monotonic()
            backlog = list(self._unacked)
        for frame_id in backlog:
            self.resent += 1
            self._submit(frame_id)

    @staticmethod
    def _close_client(client) -> None:
        if client is None:
            return
        try:
            client.close(timeout=0)
        except Exception:  # a client in a fatal state may fail to flush; stop its thread anyway
            sender = getattr(client, "_sender", None)
            if sender is not None:
                sender.force_close()

    def _wait_until(self, done: Callable[[], bool], what: str) -> None:
        while True:
            self.service()
            if done():
                return
            if time.monotonic() - self.last_progress > self.settings.producer_give_up_s:
                raise self._give_up_error(self._broken or f"waited for {what}")
            if self.heartbeat:
                self.heartbeat()
            time.sleep(0.02)

    def flush(self) -> None:
        """Wait until every frame sent is acknowledged (recovering as needed), or give up."""
        from kafka.errors import KafkaError

        while True:
            self.service()
            if not self.backlog:
                return
            if time.monotonic() - self.last_progress > self.settings.producer_give_up_s:
                raise self._give_up_error(self._broken or "waited for acknowledgements")
            if self.heartbeat:
                self.heartbeat()
            try:
                self._producer.flush(timeout=0.2)
            except KafkaError:
                pass  # not done yet; a failed batch marks the client broken through its errback

    def close(self, timeout_s: float = 10.0) -> None:
        """Close the client; after a give-up (a backlog left) without waiting for a dead broker."""
        if self._producer is not None:
            try:
                self._producer.close(timeout=0 if self.backlog else timeout_s)
            except Exception:
                self._close_client(self._producer)
            self._producer = None


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
