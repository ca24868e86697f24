"""The HealthServer over real HTTP, the container probe against it, and the consumer-lag gauge
against the embedded Kafka-protocol broker (tansu)."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from qc_stream.observability import metrics
from qc_stream.observability.lag import LagMonitor, read_lag
from qc_stream.observability.probe import main as probe_main
from qc_stream.observability.probe import probe
from qc_stream.observability.server import HealthServer


def get(port: int, path: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.headers["Content-Type"], r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers["Content-Type"], e.read().decode()


@pytest.fixture
def server():
    with HealthServer(host="127.0.0.1", port=0) as s:
        yield s


def sample(text: str, name: str, **labels) -> float | None:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return None


def test_liveness_and_readiness(server):
    assert get(server.port, "/healthz")[0] == 200
    assert get(server.port, "/readyz")[:1] == (503,)
    server.set_ready()
    assert get(server.port, "/readyz")[0] == 200
    server.set_ready(False)  # e.g. partitions revoked during a rebalance
    assert get(server.port, "/readyz")[0] == 503
    assert get(server.port, "/nope")[0] == 404


def test_metrics_expose_the_worker_series(server):
    metrics.FRAMES_PROCESSED.labels(product="wood", verdict="reject").inc(3)
    metrics.DEAD_LETTERS.labels(reason="undecodable").inc()
    metrics.BATCH_LATENCY.observe(0.04)
    metrics.CONSUMER_LAG.labels(partition="0").set(17)
    server.set_ready()
    status, ctype, body = get(server.port, "/metrics")
    assert status == 200 and ctype.startswith("text/plain; version=")
    assert sample(body, "qc_frames_processed_total", product="wood", verdict="reject") >= 3
    assert sample(body, "qc_dead_letters_total", reason="undecodable") >= 1
    assert sample(body, "qc_batch_latency_seconds_count") >= 1
    assert sample(body, "qc_consumer_lag_records", partition="0") == 17
    assert sample(body, "qc_worker_ready") == 1


def test_liveness_turns_503_when_the_worker_stops_beating():
    with HealthServer(host="127.0.0.1", port=0, stale_after_s=0.0) as s:
        status, _, body = get(s.port, "/healthz")
        assert status == 503 and body.startswith("stale")
    with HealthServer(host="127.0.0.1", port=0, stale_after_s=3600) as s:
        s.beat()
        assert get(s.port, "/healthz")[0] == 200


def test_head_requests_answer_without_a_body(server):
    req = urllib.request.Request(f"http://127.0.0.1:{server.port}/healthz", method="HEAD")
    with urllib.request.urlopen(req, timeout=5) as r:
        assert r.status == 200 and r.read() == b""


def test_container_probe_follows_the_server(server, monkeypatch, capsys):
    monkeypatch.setenv("QC_HEALTH_PORT", str(server.port))
    assert probe_main(["/healthz"]) == 0
    assert probe_main(["/readyz"]) == 1
    server.set_ready()
    assert probe_main(["/readyz"]) == 0
    assert "/readyz: 200" in capsys.readouterr().out


def test_probe_reports_an_unreachable_server():
    from qc_stream.devtools.broker import free_port

    healthy, line = probe("/healthz", port=free_port())
    assert not healthy and "unreachable" in line
    assert probe("/healthz", port=-1)[0]  # server disabled: nothing to check


def test_consumer_lag_counts_records_behind_the_groups_commit(broker, unique_app_id):
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.structs import OffsetAndMetadata

    topic = f"lag-{unique_app_id}"
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])
    admin.close()
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap)
    for i in range(10):
        producer.send(topic, value=b"x", partition=i % 2).get(
            timeout=10
        )  # 5 per partition, 1 per batch
    producer.flush()
    producer.close()

    assert read_lag(broker.bootstrap, unique_app_id, topic) == {0: 5, 1: 5}  # nothing committed yet

    consumer = KafkaConsumer(
        bootstrap_servers=broker.bootstrap, group_id=unique_app_id, enable_auto_commit=False
    )
    consumer.commit({TopicPartition(topic, 0): OffsetAndMetadata(3, "", -1)})
    consumer.close(autocommit=False)
    # The stall watchdog's reading: behind, committed offset (-1: none), log start and end.
    assert read_lag(broker.bootstrap, unique_app_id, topic, committed=True) == {
        0: (2, 3, 0, 5),
        1: (5, -1, 0, 5),
    }

    monitor = LagMonitor(broker.bootstrap, unique_app_id, topic, interval_s=60)
    assert monitor.refresh() == {0: 2, 1: 5}
    from prometheus_client import REGISTRY

    assert REGISTRY.get_sample_value("qc_consumer_lag_records", {"partition": "0"}) == 2
    assert REGISTRY.get_sample_value("qc_consumer_lag_records", {"partition": "1"}) == 5


def test_lag_monitor_survives_an_unreachable_broker(caplog):
    from qc_stream.devtools.broker import free_port

    monitor = LagMonitor(f"127.0.0.1:{free_port()}", "g", "qc.frames", interval_s=60, timeout_s=1.0)
    assert monitor.refresh() == {}
    assert monitor.refresh() == {}
    assert sum("consumer lag unavailable" in r.message for r in caplog.records) == 1  # logged once
