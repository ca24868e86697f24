"""Topic names (the public contract) and their creation with the intended partition count.

The embedded broker auto-creates unknown topics with 4 partitions; we create ours explicitly so the
partition count is a setting, and so producers and workers agree on it.
"""

from __future__ import annotations

import logging

from qc_stream.errors import QcError

# kafka-python stays a function-local import (ensure_topics): the topic names are the contract
# every producer, worker and CLI module imports, most of them without an admin client.

FRAMES = "qc.frames"
RESULTS = "qc.results"
DEADLETTER = "qc.deadletter"
DEFECT_TYPES = "qc.defect-types"
MODEL_UPDATES = "qc.model-updates"

ALL = (FRAMES, RESULTS, DEADLETTER, DEFECT_TYPES, MODEL_UPDATES)

log = logging.getLogger(__name__)


def ensure_topics(
    bootstrap: str,
    partitions: int,
    *,
    replication_factor: int = 1,
    timeout_s: float = 10.0,
    client_kwargs: dict | None = None,
) -> None:
    """Create the qc.* topics that do not exist yet (idempotent; safe with concurrent callers).

    ``replication_factor`` is 1 on the embedded broker; a Kafka cluster wants its real factor
    (``QC_TOPIC_REPLICATION_FACTOR``) in case a worker creates the topics before the topic operator.
    ``client_kwargs``: TLS/SASL for the admin client (``wire.security.kafka_python_kwargs``).
    """
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import (
        ClusterAuthorizationFailedError,
        KafkaError,
        TopicAlreadyExistsError,
        TopicAuthorizationFailedError,
    )

    try:
        admin = KafkaAdminClient(
            bootstrap_servers=bootstrap,
            request_timeout_ms=int(timeout_s * 1000),
            bootstrap_timeout_ms=int(timeout_s * 1000),
            **(client_kwargs or {}),
        )
    except KafkaError as e:
        raise QcError(
            f"cannot reach the Kafka broker at {bootstrap} ({type(e).__name__}); is it running? (QC_KAFKA_BOOTSTRAP)"
        ) from None
    try:
        existing = set(admin.list_topics())
        wanted = []
        for name in ALL:
            if name in existing:
                continue
            # Frames are spread over partitions by camera; the small control topics need one.
            n = partitions if name in (FRAMES, RESULTS, DEADLETTER) else 1
            configs = {"cleanup.policy": "compact"} if name == DEFECT_TYPES else {}
            wanted.append(
                NewTopic(
                    name,
                    num_partitions=n,
                    replication_factor=replication_factor,
                    topic_configs=configs,
                )
            )
        for topic in wanted:  # one by one: an "already exists" from a racing creator is fine
            try:
                admin.create_topics([topic])
            except TopicAlreadyExistsError:
                pass
            except (TopicAuthorizationFailedError, ClusterAuthorizationFailedError):
                # A secured cluster: topics belong to the operator (Strimzi KafkaTopic), and this
                # client's ACLs hide or forbid the ones it does not use. Not ours to create.
                log.info("not allowed to create topic %s; left to the cluster", topic.name)
    finally:
        admin.close()


class AppTopics:
    """The Faust topic objects of one app: raw bytes in and out (no serializer overhead)."""

    def __init__(self, app, partitions: int):
        raw = dict(key_serializer="raw", value_serializer="raw")
        self.frames = app.topic(FRAMES, partitions=partitions, **raw)
        self.results = app.topic(RESULTS, partitions=partitions, **raw)
        self.deadletter = app.topic(DEADLETTER, partitions=partitions, **raw)
