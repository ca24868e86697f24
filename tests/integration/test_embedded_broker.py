"""The embedded broker really speaks Kafka: a record produced with kafka-python comes back."""

from kafka import KafkaConsumer, KafkaProducer


def test_roundtrip_through_embedded_broker(broker):
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap)
    producer.send("qc.test-roundtrip", key=b"cam-1", value=b"hello", headers=[("h", b"v")]).get(10)
    producer.close()
    consumer = KafkaConsumer(
        "qc.test-roundtrip",
        bootstrap_servers=broker.bootstrap,
        auto_offset_reset="earliest",
        consumer_timeout_ms=10_000,
    )
    records = [r for r in consumer]
    consumer.close()
    assert [(r.key, r.value, r.headers) for r in records] == [(b"cam-1", b"hello", [("h", b"v")])]
