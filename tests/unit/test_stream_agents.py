"""The worker's agents without a broker (Faust ``agent.test_context()`` on the memory transport).

The detector here is a small deterministic stand-in (score = mean brightness): these tests pin the
agent's wiring — micro-batching, storage before ack, dead letters, results, prompt swaps — and the
real detector runs in the integration and end-to-end tests.
"""

from __future__ import annotations

import asyncio
import io
import json
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
        self.calls.append((threading.current_thread().name, 0, f"swap:{version}"))
        self.prompt_version = version


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


@pytest.fixture
def harness():
    settings = load_settings(
        batch_size=4, batch_timeout_s=0.05, database_url="sqlite://", redis_url="off"
    )
    stored: list = []
    lock = threading.Lock()

    def store(results):
        with lock:
            before = {r.frame_id for r in stored}
            stored.extend(r for r in results if r.frame_id not in before)
            return len({r.frame_id for r in results} - before)

    detector = BrightnessDetector()
    rt = WorkerRuntime(settings=settings, detector=detector, store=store)
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
