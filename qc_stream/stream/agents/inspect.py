"""The inspection agent: qc.frames micro-batches -> detector -> database, Redis, qc.results.

Offsets: the stream is taken with ``noack_take`` and each event is acked only after its batch is in
the database (and its result / dead letter handed to the producer). Faust commits acked offsets
only, so a crash at any point replays the batch; the repository makes the replay harmless.
"""

from __future__ import annotations

import asyncio
import logging
import time

from qc_stream.observability import metrics
from qc_stream.stream.codec import deadletter_headers, result_to_json
from qc_stream.stream.runtime import WorkerRuntime
from qc_stream.stream.service import BatchOutcome, RawFrame, inspect_batch
from qc_stream.stream.topics import AppTopics

log = logging.getLogger(__name__)


def register(app, topics: AppTopics, rt: WorkerRuntime):
    settings = rt.settings

    @app.agent(topics.frames, name="inspect")
    async def inspect(stream):
        loop = asyncio.get_running_loop()
        async for events in stream.noack_take(settings.batch_size, within=settings.batch_timeout_s):
            t0 = time.perf_counter()
            frames = [RawFrame.of(e.value, e.headers, e.key) for e in events]
            outcome: BatchOutcome = await loop.run_in_executor(
                rt.inference_pool, lambda: inspect_batch(frames, rt.detector, settings, decode=rt.decode)
            )
            await loop.run_in_executor(rt.store_pool, rt.store_and_publish_live, outcome.results)
            if outcome.rejects:
                loop.run_in_executor(rt.store_pool, rt.write_overlays, outcome.rejects)  # not awaited: cosmetic
            await publish(topics, outcome)
            for event in events:
                await stream.ack(event)
            observe(outcome, len(frames), time.perf_counter() - t0)

    return inspect


async def publish(topics: AppTopics, outcome: BatchOutcome) -> None:
    """Hand results and dead letters to the producer (it batches and sends them in the background)."""
    for r in outcome.results:
        await topics.results.send(key=r.camera_id.encode(), value=result_to_json(r))
    for d in outcome.dead:
        log.warning("dead letter (%s): %s", d.stage, d.reason)
        await topics.deadletter.send(
            key=d.frame.key, value=d.frame.value or b"", headers=deadletter_headers(d.frame.headers, d.reason, d.stage)
        )


def observe(outcome: BatchOutcome, n: int, seconds: float) -> None:
    metrics.BATCH_SIZE.observe(n)
    metrics.BATCH_LATENCY.observe(seconds)
    for r in outcome.results:
        metrics.FRAMES_PROCESSED.labels(product=r.product, verdict=r.verdict.value).inc()
    for d in outcome.dead:
        metrics.DEAD_LETTERS.labels(reason=d.stage).inc()
