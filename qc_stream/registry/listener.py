"""The registry listener: ``qc.defect-types`` -> (debounced) zero-shot refresh [-> full retrain].

A burst of registrations (a script adding ten types) becomes one new prompt version: each event
pushes the deadline ``debounce_s`` further; when the topic has been quiet that long, the listener
runs one zero-shot refresh (seconds) and, with ``retrain=True``, a full retrain afterwards (gated).

It reads without a consumer group (assign + seek to the end), so it starts fast; on start it runs one
refresh, which covers changes made while no listener ran (a refresh with an unchanged vocabulary
writes nothing). Run one listener per deployment.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from qc_stream.errors import QcError
from qc_stream.registry.events import DEFECT_TYPES_TOPIC
from qc_stream.wire.topics import ensure_topics

log = logging.getLogger(__name__)


class DebouncedTrigger:
    """Pure timing: ``poke(now)`` on each event, ``due(now)`` is True once after a quiet period."""

    def __init__(self, debounce_s: float):
        self.debounce_s = debounce_s
        self._deadline: float | None = None

    def poke(self, now: float) -> None:
        self._deadline = now + self.debounce_s

    def due(self, now: float) -> bool:
        if self._deadline is not None and now >= self._deadline:
            self._deadline = None
            return True
        return False

    @property
    def pending(self) -> bool:
        return self._deadline is not None


class RegistryListener:
    def __init__(
        self,
        bootstrap: str,
        on_change: Callable[[], None],
        *,
        debounce_s: float = 2.0,
        poll_ms: int = 200,
        partitions: int = 4,
        replication_factor: int = 1,
        client_kwargs: dict | None = None,
        heartbeat: Callable[[], None] | None = None,
    ):
        self.bootstrap = bootstrap
        # TLS/SASL for the Kafka clients (wire.security.kafka_python_kwargs); a liveness beat per poll.
        self.client_kwargs = client_kwargs or {}
        self.heartbeat = heartbeat
        self.partitions, self.replication_factor = partitions, replication_factor
        self.on_change = on_change
        self.trigger = DebouncedTrigger(debounce_s)
        self.poll_ms = poll_ms
        self.stop_event = threading.Event()
        self.ready = threading.Event()  # set once positioned at the end of the topic
        self.runs = 0

    def stop(self) -> None:
        self.stop_event.set()

    def run(self, *, refresh_at_start: bool = True) -> None:

        try:
            ensure_topics(
                self.bootstrap,
                self.partitions,
                replication_factor=self.replication_factor,
                client_kwargs=self.client_kwargs,
            )
            consumer = KafkaConsumer(
                bootstrap_servers=self.bootstrap, enable_auto_commit=False, **self.client_kwargs
            )
        except KafkaError as e:
            raise QcError(
                f"cannot reach the Kafka broker at {self.bootstrap} (QC_KAFKA_BOOTSTRAP): {e}"
            ) from None
        try:
            parts = consumer.partitions_for_topic(DEFECT_TYPES_TOPIC) or {0}
            tps = [TopicPartition(DEFECT_TYPES_TOPIC, p) for p in sorted(parts)]
            consumer.assign(tps)
            consumer.seek_to_end(*tps)
            for tp in tps:
                consumer.position(tp)  # resolve the end offset now, before we say we are ready
            self.ready.set()
            if refresh_at_start:
                self._fire()
            while not self.stop_event.is_set():
                if self.heartbeat is not None:
                    self.heartbeat()
                batch = consumer.poll(timeout_ms=self.poll_ms)
                events = sum(len(v) for v in batch.values())
                now = time.monotonic()
                if events:
                    log.info(
                        "%d defect-type event(s); refresh in %.1f s unless more arrive",
                        events,
                        self.trigger.debounce_s,
                    )
                    self.trigger.poke(now)
                if self.trigger.due(now):
                    self._fire()
        finally:
            consumer.close()

    def _fire(self) -> None:
        self.runs += 1
        try:
            self.on_change()
        except Exception as e:  # one failed refresh must not stop the listener
            log.error("refresh after registry change failed: %s", e)
