"""Camera producers against the real embedded broker: headers/key per the contract, the size limit
enforced at the producer, and retries-then-a-clear-error when no broker is listening.

Each test that reads ``qc.frames`` gets its own broker (``own_broker``): the topic names are a
contract, so isolation comes from the broker, not from renamed topics.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys

import numpy as np
import pytest
from kafka import KafkaConsumer
from PIL import Image

from qc_stream.devtools.broker import free_port
from qc_stream.errors import QcError
from qc_stream.producers.camera import run_camera
from qc_stream.producers.producer import FrameProducer
from qc_stream.settings import load_settings
from qc_stream.synth.source import synthetic
from qc_stream.wire.codec import headers_to_meta
from qc_stream.wire.topics import FRAMES, ensure_topics


def read_frames(bootstrap: str, expected: int, timeout_ms: int = 8000):
    consumer = KafkaConsumer(
        FRAMES,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        consumer_timeout_ms=timeout_ms,
    )
    records = []
    for r in consumer:
        records.append(r)
        if len(records) >= expected:
            break
    consumer.close()
    return records


def cli(*args, env=None, timeout=60):
    return subprocess.run(
        [sys.executable, "-c", "from qc_stream.cli.main import run; run()", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def test_synthetic_camera_sends_keyed_frames_with_metadata_headers(own_broker):
    settings = load_settings(kafka_bootstrap=own_broker.bootstrap, topic_partitions=2)
    ensure_topics(own_broker.bootstrap, 2)
    producer = FrameProducer(settings)
    stats = run_camera(
        producer,
        synthetic("pill", count=5, defect_rate=0.5, seed=3),
        camera_id="cam-7",
        line_id="line-2",
        product="pill",
    )
    producer.close()
    assert stats.sent == 5
    records = read_frames(own_broker.bootstrap, 5)
    assert len(records) == 5
    metas = [headers_to_meta(r.headers) for r in records]
    assert {r.key for r in records} == {b"cam-7"}
    assert {(m.camera_id, m.line_id, m.product, m.content_type) for m in metas} == {
        ("cam-7", "line-2", "pill", "image/jpeg")
    }
    assert len({m.frame_id for m in metas}) == 5
    assert all(Image.open(io.BytesIO(r.value)).size == (256, 256) for r in records)


def test_frame_over_the_size_limit_is_refused_at_the_producer(own_broker, tmp_path):
    small = io.BytesIO()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(small, format="PNG")
    (tmp_path / "a-small.png").write_bytes(small.getvalue())
    (tmp_path / "b-huge.bin").write_bytes(os.urandom(4096))
    (tmp_path / ".DS_Store").write_bytes(b"finder")  # skipped, and said so
    env = {"QC_KAFKA_BOOTSTRAP": own_broker.bootstrap, "QC_MAX_FRAME_BYTES": "2048"}
    out = cli("camera", "--source", str(tmp_path), "--camera-id", "cam-x", env=env)
    assert out.returncode == 0, out.stderr
    assert "b-huge.bin is 4,096 bytes, over the frame limit QC_MAX_FRAME_BYTES=2,048" in out.stderr
    assert "1 frame(s) delivered" in out.stdout and "1 refused" in out.stdout
    assert "cam-x: skipping 1 hidden file(s): .DS_Store" in out.stderr
    records = read_frames(own_broker.bootstrap, 2, timeout_ms=4000)
    assert [r.value for r in records] == [small.getvalue()]


def test_broker_down_retries_with_backoff_then_a_clear_error():
    dead = f"127.0.0.1:{free_port()}"
    settings = load_settings(kafka_bootstrap=dead, producer_connect_timeout_s=4.0)
    retries = []
    with pytest.raises(
        QcError, match=rf"cannot reach the Kafka broker at {dead} after \d+ attempt"
    ):
        FrameProducer(settings, on_retry=lambda attempt, wait, why: retries.append(wait))
    assert len(retries) >= 2 and retries[1] >= retries[0]  # backoff grows

    out = cli(
        "camera",
        "--source",
        "synthetic",
        "--product",
        "pill",
        "--count",
        "1",
        env={"QC_KAFKA_BOOTSTRAP": dead, "QC_PRODUCER_CONNECT_TIMEOUT_S": "3"},
    )
    assert out.returncode == 2
    assert "retry 1" in out.stderr
    assert (
        out.stderr.strip()
        .splitlines()[-1]
        .startswith(f"error: cannot reach the Kafka broker at {dead}")
    )
    assert "Traceback" not in out.stderr


def test_camera_survives_a_broker_restart_and_every_frame_is_acknowledged(own_broker):
    """The broker is killed mid-stream and started again on the same port (memory storage: empty).
    The camera keeps sending into its backlog, replaces its client, re-sends what was not
    acknowledged, and ends with every frame acknowledged; qc.frames of the new broker holds every
    frame sent after the last acknowledgement before the crash (earlier ones died with the broker's
    memory), each at least once."""
    import threading
    import time

    from qc_stream.devtools.local import read_topic_to_end

    ensure_topics(own_broker.bootstrap, 2)
    settings = load_settings(
        kafka_bootstrap=own_broker.bootstrap, topic_partitions=2, producer_give_up_s=60
    )
    recovered = []
    producer = FrameProducer(settings, on_recover=lambda why, n: recovered.append((why, n)))
    producer.stall_s = 3.0
    sent_ids: list[str] = []
    acked_before_crash: list[int] = []
    progress_lines: list[tuple[int, int, int]] = []

    def crash_and_restart():
        while len(sent_ids) < 15:
            time.sleep(0.01)
        acked_before_crash.append(producer.acked)
        own_broker.restart(down_s=2.0)

    chaos = threading.Thread(target=crash_and_restart)
    chaos.start()
    stats = run_camera(
        producer,
        synthetic("pill", count=40, defect_rate=0.3, seed=5, size=64),
        camera_id="cam-r",
        line_id="line-1",
        product="pill",
        fps=10,
        progress=lambda s: progress_lines.append((s.acked, s.backlog, s.retries)),
        progress_every_s=0.5,
        on_sent=lambda meta, _frame: sent_ids.append(meta.frame_id),
    )
    chaos.join()
    producer.close()
    assert stats.sent == stats.acked == 40 and stats.retries >= 1 and recovered
    assert producer.resent >= 1
    # progress counted acknowledgements only: during the outage a backlog showed, acks stalled
    assert any(backlog > 0 for _, backlog, _ in progress_lines)
    assert all(a <= b for (a, _, _), (b, _, _) in zip(progress_lines, progress_lines[1:]))
    stored = [
        headers_to_meta(r.headers).frame_id for r in read_topic_to_end(own_broker.bootstrap, FRAMES)
    ]
    unacked_at_crash = set(sent_ids[acked_before_crash[0] :])
    assert unacked_at_crash <= set(stored)  # nothing the camera was still holding was lost
    assert set(stored) <= set(sent_ids)


def test_camera_gives_up_with_a_clear_error_when_the_broker_never_returns(own_broker):
    settings = load_settings(
        kafka_bootstrap=own_broker.bootstrap, producer_give_up_s=4, producer_connect_timeout_s=2
    )
    ensure_topics(own_broker.bootstrap, 1)
    producer = FrameProducer(settings)
    producer.stall_s = 1.0
    frames = synthetic("pill", count=6, defect_rate=0.0, seed=1, size=64)
    first = next(frames)
    producer.send(first.data, first_meta := _meta("cam-g"))
    producer.flush()
    own_broker.kill()
    with pytest.raises(
        QcError, match=r"no frame acknowledged by .* for 4 s \(QC_PRODUCER_GIVE_UP_S"
    ):
        run_camera(producer, frames, camera_id="cam-g", line_id="l", product="pill")
    assert producer.acked == 1 and producer.backlog == 5 and first_meta.frame_id
    producer.close(timeout_s=0)


def test_an_idle_camera_is_not_mistaken_for_a_stalled_one(own_broker):
    """The stall and give-up clocks run only while frames are owed: a slow line is not a dead broker."""
    import time

    ensure_topics(own_broker.bootstrap, 1)
    producer = FrameProducer(
        load_settings(kafka_bootstrap=own_broker.bootstrap, producer_give_up_s=1)
    )
    producer.stall_s = 0.5
    for frame in synthetic("pill", count=2, defect_rate=0.0, seed=2, size=64):
        time.sleep(1.2)  # idle longer than both clocks
        producer.send(frame.data, _meta("cam-i"))
        producer.flush()
    producer.close()
    assert producer.acked == 2 and producer.recoveries == 0


def _meta(camera_id: str):
    from qc_stream.producers.camera import new_frame_id
    from qc_stream.producers.producer import frame_meta

    return frame_meta(camera_id, "l", "pill", "image/jpeg", new_frame_id(camera_id))
