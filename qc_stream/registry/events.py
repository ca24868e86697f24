"""Registry events on Kafka (kafka-python): ``qc.defect-types`` (compacted) and ``qc.model-updates``.

Publishing is best effort by design: the database is the source of truth, so a registration that
committed stays committed when the broker is down; the caller is told the event was not published
and ``qc-stream defects publish`` re-sends the current state of every type later (the topic is
compacted by key, so re-sending is harmless).
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

from qc_stream.domain.defects import DefectTypeEvent

# kafka-python stays a function-local import (where an event is sent): `qc-stream defects list`
# and the other registry readers import this module for the topic names and never reach a broker.

log = logging.getLogger(__name__)

DEFECT_TYPES_TOPIC = "qc.defect-types"
MODEL_UPDATES_TOPIC = "qc.model-updates"


def model_update_value(
    prompt_version: str, backbone_id: str, created_at: datetime | None = None
) -> dict:
    created_at = created_at or datetime.now(UTC)
    return {
        "prompt_version": prompt_version,
        "backbone_id": backbone_id,
        "created_at": created_at.isoformat(),
    }


class EventPublisher:
    """Sends registry events; every method returns True when the broker acknowledged the record."""

    def __init__(
        self,
        bootstrap: str,
        *,
        timeout_s: float = 5.0,
        partitions: int = 1,
        client_kwargs: dict | None = None,
    ):
        self.bootstrap = bootstrap
        self.client_kwargs = client_kwargs or {}  # TLS/SASL (wire.security.kafka_python_kwargs)
        self.timeout_s = timeout_s
        self.partitions = partitions
        self._producer = None
        self._topics_ready: set[str] = set()
        self.last_error: str | None = None

    def publish_defect(self, event: DefectTypeEvent) -> bool:
        return self._send(
            DEFECT_TYPES_TOPIC, event.key, event.model_dump(mode="json"), compacted=True
        )

    def publish_model_update(
        self, prompt_version: str, backbone_id: str, created_at: datetime | None = None
    ) -> bool:
        value = model_update_value(prompt_version, backbone_id, created_at)
        return self._send(MODEL_UPDATES_TOPIC, prompt_version, value, compacted=False)

    def close(self) -> None:
        if self._producer is not None:
            try:
                self._producer.close(timeout=self.timeout_s)
            except Exception:  # noqa: BLE001 - closing a broken producer must not mask the result
                pass
            self._producer = None

    def __enter__(self) -> EventPublisher:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- internals ---
    def _send(self, topic: str, key: str, value: dict, *, compacted: bool) -> bool:
        from kafka.errors import KafkaError

        try:
            producer = self._get_producer()
            self._ensure_topic(topic, compacted)
            future = producer.send(
                topic, key=key.encode(), value=json.dumps(value, separators=(",", ":")).encode()
            )
            future.get(timeout=self.timeout_s)
            return True
        except (KafkaError, OSError, ValueError) as e:
            text = str(e)
            self.last_error = (
                text if text.startswith(e.__class__.__name__) else f"{e.__class__.__name__}: {text}"
            )
            log.warning(
                "event on %s not published (broker %s): %s", topic, self.bootstrap, self.last_error
            )
            self.close()
            return False

    def _get_producer(self):
        if self._producer is None:
            from kafka import KafkaProducer

            self._producer = KafkaProducer(
                bootstrap_servers=self.bootstrap.split(","),
                acks="all",
                retries=2,
                request_timeout_ms=int(self.timeout_s * 1000),
                max_block_ms=int(self.timeout_s * 1000),
                delivery_timeout_ms=int(self.timeout_s * 1000) + 1000,
                bootstrap_timeout_ms=int(self.timeout_s * 1000),
                **self.client_kwargs,
            )
        return self._producer

    def _ensure_topic(self, topic: str, compacted: bool) -> None:
        """Create the topic when missing (compacted for the registry); an existing one is left as is."""
        if topic in self._topics_ready:
            return
        from kafka.admin import KafkaAdminClient, NewTopic
        from kafka.errors import TopicAlreadyExistsError

        admin = KafkaAdminClient(
            bootstrap_servers=self.bootstrap.split(","),
            request_timeout_ms=int(self.timeout_s * 1000),
            bootstrap_timeout_ms=int(self.timeout_s * 1000),
            **self.client_kwargs,
        )
        try:
            if topic not in admin.list_topics():
                configs = {"cleanup.policy": "compact"} if compacted else {}
                try:
                    admin.create_topics(
                        [
                            NewTopic(
                                topic,
                                num_partitions=self.partitions,
                                replication_factor=1,
                                topic_configs=configs,
                            )
                        ]
                    )
                except TopicAlreadyExistsError:
                    pass
        finally:
            admin.close()
        self._topics_ready.add(topic)
