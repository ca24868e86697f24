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
from datetime import datetime, timezone

import numpy as np
import pytest
from PIL import Image

from qc_stream.domain.inspection import Detection, FrameMeta
from qc_stream.settings import load_settings
from qc_stream.stream.agents import inspect, model_updates
from qc_stream.stream.app import build_app
from qc_stream.stream.codec import meta_to_headers
from qc_stream.stream.runtime import WorkerRuntime
from qc_stream.stream.topics import AppTopics


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
            out.append(Detection(anomaly_score=score, defect_type="scratch" if score >= 0.8 else None))
        return out

    def swap_prompts(self, version):
        self.calls.append((threading.current_thread().name, 0, f"swap:{version}"))
        self.prompt_version = version


def png(level: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((32, 32, 3), level, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def headers(frame_id: str, product: str = "screw") -> list[tuple[str, bytes]]:
    meta = FrameMeta(frame_id=frame_id, camera_id="cam-1", line_id="line-1", product=product, captured_at=datetime.now(timezone.utc))
    return meta_to_headers(meta)


@pytest.fixture
def harness():
    settings = load_settings(batch_size=4, batch_timeout_s=0.05, database_url="sqlite://", redis_url="off")
    stored: list = []
    lock = threading.Lock()

    def store(results):
        with lock:
            before = {r.frame_id for r in stored}
            stored.extend(r for r in results if r.frame_id not in before)
            return len({r.frame_id for r in results} - before)

    detector = BrightnessDetector()
    rt = WorkerRuntime(settings=settings, detector=detector, store=store)
    app = build_app(settings, broker="kafka://127.0.0.1:9")  # never contacted
    topics = AppTopics(app, 1)
    # Sinks as in-memory channels: what the agent sends can be read back without a broker.
    topics.results, topics.deadletter = app.channel(), app.channel()
    agent = inspect.register(app, topics, rt)
    yield app, agent, rt, detector, stored, topics
    rt.close()


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
