"""Consumer lag of the worker group on qc.frames, published as ``qc_consumer_lag_records``.

Lag per partition = log end offset - committed offset of the group. It is read from the broker
(the same numbers KEDA's kafka scaler uses), so it counts frames waiting for *any* worker and
stays right across rebalances. A daemon thread refreshes the gauge every few seconds; the broker
being unreachable is logged once and retried, never raised into the worker.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from kafka import KafkaConsumer, TopicPartition

from qc_stream.observability.metrics import CONSUMER_LAG
from qc_stream.wire.security import kafka_python_kwargs

log = logging.getLogger(__name__)


def read_lag(
    bootstrap: str,
    group_id: str,
    topic: str,
    timeout_s: float = 10.0,
    client_kwargs: dict | None = None,
    *,
    committed: bool = False,
) -> dict[int, Any]:
    """Return {partition: records behind} for ``group_id`` on ``topic``; with ``committed``,
    {partition: (records behind, committed offset or -1, log start offset, log end offset)}.

    A partition the group has never committed counts from the log start offset (all of it waits).
    """
    # A consumer that carries the group id but never subscribes: committed() reads the group's
    # offsets (OffsetFetch) without joining the group, so measuring never triggers a rebalance.
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=group_id,
        enable_auto_commit=False,
        client_id="qc-lag",
        request_timeout_ms=max(int(timeout_s * 1000), 11_000),
        bootstrap_timeout_ms=int(timeout_s * 1000),
        **(client_kwargs or {}),  # TLS/SASL (wire.security.kafka_python_kwargs)
    )
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        if not tps:
            return {}
        ends = consumer.end_offsets(tps)
        starts = consumer.beginning_offsets(tps)
        lag = {}
        for tp in tps:
            done = consumer.committed(tp)
            mark = -1 if done is None else done
            if done is None or done < 0:
                done = starts[tp]
            behind = max(0, ends[tp] - done)
            lag[tp.partition] = (behind, mark, starts[tp], ends[tp]) if committed else behind
        return lag
    finally:
        consumer.close(autocommit=False)


def publish_lag(lag: dict[int, int]) -> None:
    for partition, behind in lag.items():
        CONSUMER_LAG.labels(partition=str(partition)).set(behind)


class LagMonitor:
    """Refresh ``qc_consumer_lag_records`` from the broker every ``interval_s`` in a daemon thread."""

    def __init__(
        self,
        bootstrap: str,
        group_id: str,
        topic: str = "qc.frames",
        interval_s: float = 15.0,
        timeout_s: float = 10.0,
        client_kwargs: dict | None = None,
    ):
        self.client_kwargs = client_kwargs
        self.bootstrap, self.group_id, self.topic, self.interval_s = (
            bootstrap,
            group_id,
            topic,
            interval_s,
        )
        self.timeout_s = timeout_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing = False

    @classmethod
    def from_settings(
        cls, settings, topic: str = "qc.frames", interval_s: float = 15.0
    ) -> LagMonitor:
        # Faust's consumer group id is the app id.
        return cls(
            settings.kafka_bootstrap,
            settings.app_id,
            topic,
            interval_s,
            client_kwargs=kafka_python_kwargs(settings),
        )

    def refresh(self) -> dict[int, int]:
        """One measurement, published; returns it (empty when the broker could not be read)."""
        try:
            lag = read_lag(
                self.bootstrap, self.group_id, self.topic, self.timeout_s, self.client_kwargs
            )
        except Exception as e:  # a broker hiccup must not kill the worker's metrics thread
            if not self._failing:
                log.warning(
                    "consumer lag unavailable (%s: %s); will keep trying", type(e).__name__, e
                )
            self._failing = True
            return {}
        if self._failing:
            log.info("consumer lag readable again")
        self._failing = False
        publish_lag(lag)
        return lag

    def _run(self) -> None:
        while not self._stop.is_set():
            self.refresh()
            self._stop.wait(self.interval_s)

    def start(self) -> LagMonitor:
        self._thread = threading.Thread(target=self._run, name="qc-lag-monitor", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout_s)
            self._thread = None
