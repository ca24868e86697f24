"""The worker's agents without a broker (Faust ``agent.test_context()`` on the memory transport).

The detector here is a small deterministic stand-in (score = mean brightness): these tests pin the
agent's wiring — micro-batching, storage before ack, dead letters, results, prompt swaps — and the
real detector runs in the integration and end-to-end tests.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import threading
from datetime import UTC, datetime

import numpy as np
import pytest
from PIL import Image

from qc_stream.domain.inspection import Detection, FrameMeta
from qc_stream.settings import load_settings
from qc_stream.stream.agents import inspect, model_updates
from qc_stream.stream.app import build_app
from qc_stream.stream.runtime import WorkerRuntime
from qc_stream.wire.codec import meta_to_headers
from qc_stream.wire.topics import AppTopics


class BrightnessDetector:
    """Stand-in detector: anomaly score = mean brightness; records the thread and batch of each call."""

    model_version = "test-backbone@0000"
    backbone_id = "test-backbone@0000"

    def __init__(self):
        self.prompt_version = "v1"
        self.calls: list[tuple[str, int, str]] = []

    def detect(self, images, products):
        self.calls.append((threading.current_thread().name, len(images), self.prompt_version))
        out = []
        for img in images:
            score = float(np.asarray(img).mean() / 255.0)
            out.append(
                Detection(anomaly_score=score, defect_type="scratch" if score >= 0.8 else None)
            )
        return out

    def swap_prompts(self, version):
        # Like the real detector: a name or a version folder; the version is the folder's name.
        name = os.path.basename(version)
        self.calls.append((threading.current_thread().name, 0, f"swap:{name}"))
        self.prompt_version = name


class Sent:
    def __init__(self, key, value, headers):
        self.key, self.value, self.headers = key, value, headers or []


class RecordingTopic:
    """Stands in for a Faust topic's ``send``: records the record, returns a delivered future."""

    def __init__(self):
        self.sent: list[Sent] = []

    async def send(self, key=None, value=None, headers=None):
        import asyncio

        self.sent.append(Sent(key, value, headers))
        fut = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut


def png(level: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((32, 32, 3), level, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def headers(frame_id: str, product: str = "screw") -> list[tuple[str, bytes]]:
    meta = FrameMeta(
        frame_id=frame_id,
        camera_id="cam-1",
        line_id="line-1",
        product=product,
        captured_at=datetime.now(UTC),
    )
    return meta_to_headers(meta)


class Registered:
    """A model_versions row as the worker reads it (name and recorded digest)."""

    def __init__(self, prompt_version: str, sha256: str | None):
        self.prompt_version, self.sha256 = prompt_version, sha256


def make_version(models_dir, name: str) -> str:
    """A version folder with the two files a digest covers; returns its sha256."""
    from qc_stream.dapo.checkpoint import version_sha256

    folder = models_dir / "prompts" / name
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text(json.dumps({"version": name}))
    (folder / "prompts.safetensors").write_bytes(name.encode() * 10)
    return version_sha256(folder)


@pytest.fixture
def harness(tmp_path):
    models_dir = tmp_path / "models"
    settings = load_settings(
        batch_size=4,
        batch_timeout_s=0.05,
        database_url="sqlite://",
        redis_url="off",
        models_dir=models_dir,
        worker_retry_base_s=0.01,
        worker_retry_cap_s=0.05,
    )
    stored: list = []
    lock = threading.Lock()

    def store(results):
        with lock:
            before = {r.frame_id for r in stored}
            stored.extend(r for r in results if r.frame_id not in before)
            return len({r.frame_id for r in results} - before)

    detector = BrightnessDetector()
    # v1..v3 on disk and registered with their digests, as `qc-stream models` would leave them.
    registry = {v: Registered(v, make_version(models_dir, v)) for v in ("v1", "v2", "v3")}
    rt = WorkerRuntime(
        settings=settings, detector=detector, store=store, registered_version=registry.get
    )
    fatal: list[BaseException] = []
    rt.on_fatal = fatal.append  # the default would end the process (pytest with it)
    app = build_app(settings, broker="kafka://127.0.0.1:9")  # never contacted
    topics = AppTopics(app, 1)
    # Output topics replaced by recorders: what the agent sends is read back without a broker.
    topics.results, topics.deadletter = RecordingTopic(), RecordingTopic()
    agent = inspect.register(app, topics, rt)
    yield app, agent, rt, detector, stored, topics
    rt.close()
    assert fatal == []


async def wait_for(cond, timeout=10.0):
    for _ in range(int(timeout / 0.02)):
        if cond():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met in time")


def test_frames_are_batched_inferred_off_loop_and_stored(harness):
    app, agent, rt, detector, stored, topics = harness

    async def scenario():
        async with agent.test_context() as ag:
            for i in range(6):
                await ag.put(png(30 if i % 2 else 240), key=b"cam-1", headers=headers(f"f{i}"))
            await wait_for(lambda: len(stored) == 6)

    asyncio.run(scenario())
    assert sorted(r.frame_id for r in stored) == [f"f{i}" for i in range(6)]
    verdicts = {r.frame_id: r.verdict.value for r in stored}
    assert verdicts["f0"] == "reject" and verdicts["f1"] == "ok"
    assert all(r.prompt_version == "v1" and r.model_version == "test-backbone@0000" for r in stored)
    # Inference ran on the inference thread, in batches of at most batch_size.
    assert all(name.startswith("qc-inference") for name, _, _ in detector.calls)
    assert max(n for _, n, _ in detector.calls) <= 4


def test_offsets_are_acked_only_after_the_batch_is_stored(harness):
    app, agent, rt, detector, stored, topics = harness
    gate, entered = threading.Event(), threading.Event()
    inner = rt.store

    def slow_store(results):
        entered.set()
        gate.wait(10)
        return inner(results)

    rt.store = slow_store

    async def scenario():
        async with agent.test_context() as ag:
            events = [
                await ag.put(png(100), key=b"cam-1", headers=headers(f"s{i}")) for i in range(3)
            ]
            await wait_for(entered.is_set)
            await asyncio.sleep(0.2)
            assert not any(e.message.acked for e in events)  # inferred, not yet stored: not acked
            gate.set()
            await wait_for(lambda: all(e.message.acked for e in events))
        assert sorted(r.frame_id for r in stored) == ["s0", "s1", "s2"]

    asyncio.run(scenario())


def test_bad_frames_go_to_dead_letters_with_reason_and_good_ones_still_pass(harness):
    from qc_stream.wire.codec import header_value

    app, agent, rt, detector, stored, topics = harness

    async def scenario():
        async with agent.test_context() as ag:
            await ag.put(b"garbage", key=b"cam-1", headers=headers("bad-1"))
            await ag.put(png(100), key=b"cam-1", headers=[("camera_id", b"cam-1")])
            await ag.put(png(100), key=b"cam-1", headers=headers("good-1"))
            await wait_for(
                lambda: (
                    len(stored) == 1 and len(topics.deadletter.sent) == 2 and topics.results.sent
                )
            )

    asyncio.run(scenario())
    dead, [result] = topics.deadletter.sent, topics.results.sent
    reasons = sorted(header_value(d.headers, "error") for d in dead)
    assert reasons[0].startswith("missing header(s): frame_id, line_id, product, captured_at")
    assert reasons[1].startswith("undecodable image: not a decodable image")
    assert sorted(d.value for d in dead) == sorted([b"garbage", png(100)])
    assert [r.frame_id for r in stored] == ["good-1"]
    assert json.loads(result.value)["frame_id"] == "good-1"


def test_a_prompt_swap_lands_between_batches_on_the_inference_thread(harness):
    app, agent, rt, detector, stored, topics = harness

    async def scenario():
        async with agent.test_context() as ag:
            await ag.put(png(100), key=b"cam-1", headers=headers("before"))
            await wait_for(lambda: len(stored) == 1)
            update = json.dumps(
                {
                    "prompt_version": "v2",
                    "backbone_id": detector.backbone_id,
                    "created_at": "2026-01-01T00:00:00Z",
                }
            )
            await asyncio.get_running_loop().run_in_executor(
                rt.inference_pool, model_updates.apply_update, rt, update.encode()
            )
            await ag.put(png(100), key=b"cam-1", headers=headers("after"))
            await wait_for(lambda: len(stored) == 2)

    asyncio.run(scenario())
    assert {r.frame_id: r.prompt_version for r in stored} == {"before": "v1", "after": "v2"}
    swap = [c for c in detector.calls if c[2].startswith("swap:")]
    assert swap and swap[0][0].startswith("qc-inference")


def test_model_updates_for_another_backbone_or_malformed_are_ignored(harness):
    app, agent, rt, detector, stored, topics = harness
    other = json.dumps({"prompt_version": "v9", "backbone_id": "ViT-L-14@ffff"}).encode()
    assert model_updates.apply_update(rt, other) is None
    assert model_updates.apply_update(rt, b"{not json") is None
    assert model_updates.apply_update(rt, b'{"backbone_id": "x"}') is None
    assert (
        model_updates.apply_update(rt, json.dumps({"prompt_version": "v1"}).encode()) is None
    )  # already active
    assert detector.prompt_version == "v1"
    assert model_updates.apply_update(rt, json.dumps({"prompt_version": "v3"}).encode()) == "v3"
    assert detector.prompt_version == "v3"


def test_a_batch_that_cannot_be_stored_is_fatal_and_never_acked(harness):
    app, agent, rt, detector, stored, topics = harness
    errors: list[BaseException] = []
    rt.on_fatal = errors.append

    def broken_store(results):
        raise RuntimeError("database gone")

    rt.store = broken_store

    async def scenario():
        async with agent.test_context() as ag:
            event = await ag.put(png(100), key=b"cam-1", headers=headers("lost?"))
            await wait_for(lambda: errors)
            await asyncio.sleep(0.1)
            assert not event.message.acked  # replayed by whoever gets the partition next
        assert topics.results.sent == []

    asyncio.run(scenario())
    assert "database gone" in str(errors[0])


def refused_swaps(reason: str) -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value("qc_prompt_swap_refused_total", {"reason": reason}) or 0.0


def update(version: str) -> bytes:
    return json.dumps({"prompt_version": version, "backbone_id": "test-backbone@0000"}).encode()


@pytest.mark.parametrize(
    "name, reason",
    [
        ("/etc", "bad_name"),  # an absolute path
        ("{models}/prompts/v2", "bad_name"),  # an absolute path to a real, registered version
        ("../prompts/v2", "bad_name"),
        ("..", "bad_name"),
        ("evil-v9", "unregistered"),  # on disk, not registered
        ("v2", "digest_mismatch"),  # registered, then its weights were replaced
        ("v3", "no_digest"),  # registered before digests were recorded
    ],
)
def test_model_updates_name_registered_untampered_versions_only(harness, name, reason, caplog):
    app, agent, rt, detector, stored, topics = harness
    models = rt.settings.models_dir
    make_version(models, "evil-v9")
    (models / "prompts" / "v2" / "prompts.safetensors").write_bytes(b"tampered")
    registry = {"v2": Registered("v2", "0" * 64), "v3": Registered("v3", None)}
    rt.registered_version = registry.get
    before = refused_swaps(reason)
    with caplog.at_level("ERROR", logger="qc_stream.stream.agents.model_updates"):
        assert model_updates.apply_update(rt, update(name.format(models=models))) is None
    assert refused_swaps(reason) == before + 1
    assert detector.prompt_version == "v1"
    assert not [c for c in detector.calls if c[2].startswith("swap:")]
    [line] = [r.getMessage() for r in caplog.records]
    assert line.startswith("refused model update:")


def test_a_registered_untampered_version_is_swapped_to(harness):
    app, agent, rt, detector, stored, topics = harness
    assert model_updates.apply_update(rt, update("v2")) == "v2"
    assert detector.prompt_version == "v2"


def test_a_registry_outage_is_raised_for_the_caller_to_retry_not_refused(harness):
    from sqlalchemy.exc import OperationalError

    from qc_stream.storage.db import is_connection_error

    app, agent, rt, detector, stored, topics = harness

    def down(name):
        raise OperationalError("SELECT", {}, Exception("connection refused"))

    rt.registered_version, rt.is_store_outage = down, is_connection_error
    with pytest.raises(OperationalError):
        model_updates.apply_update(rt, update("v2"))
    assert detector.prompt_version == "v1"


class FailingTopic(RecordingTopic):
    """A topic whose first ``fails`` sends fail with ``error`` (raised by ``send`` or by its future)."""

    def __init__(self, error_factory, fails: int, in_future: bool = True):
        super().__init__()
        self.error_factory, self.fails, self.in_future, self.attempts = (
            error_factory,
            fails,
            in_future,
            0,
        )

    async def send(self, key=None, value=None, headers=None):
        self.attempts += 1
        if self.attempts <= self.fails:
            if not self.in_future:
                raise self.error_factory()
            fut = asyncio.get_running_loop().create_future()
            fut.set_exception(self.error_factory())
            return fut
        return await super().send(key, value, headers)


def test_an_oversized_record_is_dead_lettered_truncated_with_its_size_and_sha256(harness):
    import hashlib

    from qc_stream.wire.codec import header_value

    app, agent, rt, detector, stored, topics = harness
    big = b"\x00" * (rt.settings.max_frame_bytes + 1)

    async def scenario():
        async with agent.test_context() as ag:
            await ag.put(big, key=b"cam-1", headers=headers("huge"))
            await ag.put(png(100), key=b"cam-1", headers=headers("next"))
            await wait_for(lambda: len(stored) == 1 and topics.deadletter.sent)

    asyncio.run(scenario())
    [dead] = topics.deadletter.sent
    assert len(dead.value) == rt.settings.deadletter_max_bytes
    assert dead.value == big[: rt.settings.deadletter_max_bytes]
    assert header_value(dead.headers, "original_size") == str(len(big))
    assert header_value(dead.headers, "original_sha256") == hashlib.sha256(big).hexdigest()
    assert header_value(dead.headers, "truncated") == "true"
    assert header_value(dead.headers, "frame_id") == "huge"
    assert "exceeds QC_MAX_FRAME_BYTES" in header_value(dead.headers, "error")
    assert [r.frame_id for r in stored] == ["next"]


@pytest.mark.parametrize("in_future", [True, False])
def test_a_dead_letter_the_broker_refuses_is_logged_with_its_offset_and_skipped(
    harness, in_future, caplog
):
    from aiokafka.errors import MessageSizeTooLargeError

    app, agent, rt, detector, stored, topics = harness
    topics.deadletter = FailingTopic(MessageSizeTooLargeError, fails=1, in_future=in_future)

    async def scenario():
        async with agent.test_context() as ag:
            poison = await ag.put(b"garbage", key=b"cam-1", headers=headers("poison"))
            good = await ag.put(png(100), key=b"cam-1", headers=headers("good"))
            await wait_for(lambda: poison.message.acked and good.message.acked)

    with caplog.at_level("ERROR"):
        asyncio.run(scenario())
    assert [r.frame_id for r in stored] == ["good"]
    assert topics.deadletter.sent == []  # skipped, not retried forever
    [line] = [r.getMessage() for r in caplog.records if "refused by the broker" in r.getMessage()]
    assert line.startswith("dead letter for ") and "[0]@0" in line


def test_a_database_outage_holds_the_batch_reports_not_ready_and_recovers(harness):
    from sqlalchemy.exc import OperationalError

    from qc_stream.observability.server import HealthServer
    from qc_stream.storage.db import is_connection_error

    app, agent, rt, detector, stored, topics = harness
    health = HealthServer(port=0)
    health.set_ready(True)
    rt.health, rt.is_store_outage = health, is_connection_error
    inner, attempts = rt.store, []
    down = threading.Event()
    down.set()

    def flaky_store(results):
        attempts.append(len(results))
        if down.is_set():
            raise OperationalError("INSERT", {}, Exception("server closed the connection"))
        return inner(results)

    rt.store = flaky_store

    async def scenario():
        async with agent.test_context() as ag:
            events = [
                await ag.put(png(100), key=b"cam-1", headers=headers(f"o{i}")) for i in range(3)
            ]
            await wait_for(lambda: len(attempts) >= 3)
            assert not any(e.message.acked for e in events)
            ready, why = health.readiness()
            assert not ready and "database" in why and "OperationalError" in why
            assert health.alive()[0]  # retrying is alive; only stuck_s of it is not
            down.clear()
            await wait_for(lambda: all(e.message.acked for e in events))

    asyncio.run(scenario())
    assert sorted(r.frame_id for r in stored) == ["o0", "o1", "o2"]
    assert health.readiness() == (True, "ready")


def test_a_batch_retried_past_the_stuck_limit_fails_liveness(harness):
    from qc_stream.observability.server import HealthServer

    health = HealthServer(port=0)
    health.set_problem("database", "down", stuck_after_s=0.0)
    time_ok, why = health.alive()
    assert not time_ok and why.startswith("stuck: database: down")
    health.clear_problem("database")
    assert health.alive() == (True, "ok")


def test_a_results_topic_outage_is_retried_without_losing_or_repeating_outputs(harness):
    from aiokafka.errors import KafkaConnectionError

    app, agent, rt, detector, stored, topics = harness
    topics.results = FailingTopic(KafkaConnectionError, fails=2)

    async def scenario():
        async with agent.test_context() as ag:
            events = [
                await ag.put(png(100), key=b"cam-1", headers=headers(f"p{i}")) for i in range(3)
            ]
            await ag.put(b"garbage", key=b"cam-1", headers=headers("bad"))
            await wait_for(lambda: all(e.message.acked for e in events))

    asyncio.run(scenario())
    sent = sorted(json.loads(s.value)["frame_id"] for s in topics.results.sent)
    assert sent == ["p0", "p1", "p2"]  # each once: only unsent outputs are sent again
    assert len(topics.deadletter.sent) == 1
