"""Build the Faust app from settings: broker, group timeouts, size limits. No agents here."""

from __future__ import annotations

import tempfile
from pathlib import Path

import faust

from qc_stream.settings import Settings
from qc_stream.wire.security import faust_credentials


def broker_urls(bootstrap: str) -> list[str]:
    return [f"kafka://{hp.strip()}" for hp in bootstrap.split(",") if hp.strip()]


def build_app(settings: Settings, *, broker: str | None = None) -> faust.App:
    """A Faust app for ``settings``; ``broker`` overrides the URL (``memory://`` in unit tests)."""
    session, heartbeat, rebalance = settings.group_timeouts
    faust_dir = Path(tempfile.gettempdir()) / "qc-stream-faust"
    faust_dir.mkdir(parents=True, exist_ok=True)  # Faust creates only the last level
    return faust.App(
        settings.app_id,
        broker=broker or broker_urls(settings.kafka_bootstrap),
        # TLS / SASL from QC_KAFKA_SECURITY_PROTOCOL and friends (None: plaintext).
        broker_credentials=None if broker else faust_credentials(settings),
        store="memory://",
        # No tables are kept on disk; keep Faust's per-app folder out of the working directory.
        datadir=str(faust_dir / "{conf.id}-data"),
        autodiscover=False,
        web_enabled=False,
        topic_partitions=settings.topic_partitions,
        broker_session_timeout=session,
        broker_heartbeat_interval=heartbeat,
        broker_rebalance_timeout=rebalance,
        # Faust's 90 s lets one unanswered consumer request (a fetch the restarted embedded broker
        # never answers) hold every partition of that broker for that long; 10 s on the embedded.
        broker_request_timeout=10.0 if settings.broker_profile == "embedded" else 90.0,
        # A topic recreated with another partition count (the embedded broker after a restart) is
        # noticed at the next refresh: the leader rejoins and the new partitions get consumed.
        consumer_metadata_max_age_ms=int(settings.metadata_max_age_s * 1000),
        producer_metadata_max_age_ms=int(settings.metadata_max_age_s * 1000),
        # Static membership (QC_GROUP_INSTANCE_ID, the pod name): a quick restart keeps its partitions.
        consumer_group_instance_id=settings.group_instance_id,
        # A frame of max_frame_bytes plus record overhead must pass both ways.
        producer_max_request_size=settings.kafka_max_request_bytes,
        consumer_max_fetch_size=settings.kafka_max_request_bytes,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        # Commit often: a crash then replays little (replays are harmless, sinks are idempotent).
        broker_commit_interval=1.0,
        # On stop, the worker finishes its batches in flight itself (worker.py); Faust waiting for
        # every event to be acked would hang forever on a batch held through a database outage.
        stream_wait_empty=False,
    )
