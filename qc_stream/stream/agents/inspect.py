"""The inspection agent: qc.frames micro-batches -> detector -> database, Redis, qc.results.

A small pipeline keeps the model busy: while batch N is on the inference thread, batch N+1 is
decoded on the decode threads and batch N-1 is stored and published. Every batch is acked only
after its results are in the database and its outputs are on the broker (``noack_take`` + explicit
acks), and Faust commits acked offsets only: a crash anywhere replays the batch, and the
idempotent repository makes the replay harmless.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque

from qc_stream.observability import metrics
from qc_stream.stream.runtime import WorkerRuntime
from qc_stream.stream.service import (
    BatchOutcome,
    PreparedBatch,
    RawFrame,
    infer_batch,
    prepare_batch,
)
from qc_stream.wire.codec import deadletter_headers, result_to_json
from qc_stream.wire.topics import AppTopics

log = logging.getLogger(__name__)

# Batches between decode and ack at any time; bounds memory and what a crash replays.
PIPELINE_DEPTH = 2


def register(app, topics: AppTopics, rt: WorkerRuntime):
    settings = rt.settings

    @app.agent(topics.frames, name="inspect")
    async def inspect(stream):
        loop = asyncio.get_running_loop()
        inflight: deque[asyncio.Future] = deque()
        async for events in stream.noack_take(settings.batch_size, within=settings.batch_timeout_s):
            t0 = time.perf_counter()
            frames = [RawFrame.of(e.value, e.headers, e.key) for e in events]
            prepared = await prepare_parallel(loop, rt, frames)
            # rt.detector is read on the inference thread: after it is loaded, between prompt swaps.
            inferred = loop.run_in_executor(
                rt.inference_pool, lambda p=prepared: infer_batch(p, rt.detector, settings)
            )
            previous = inflight[-1] if inflight else None
            inflight.append(
                asyncio.ensure_future(finish(rt, topics, stream, events, inferred, previous, t0))
            )
            while inflight and (len(inflight) > PIPELINE_DEPTH or inflight[0].done()):
                await inflight.popleft()

    return inspect


async def prepare_parallel(loop, rt: WorkerRuntime, frames: list[RawFrame]) -> PreparedBatch:
    """Stage 1 on the decode threads, the batch split in chunks (image decoders release the GIL)."""
    n = rt.decode_threads
    if n <= 1 or len(frames) < 2 * n:
        return await loop.run_in_executor(
            rt.decode_pool, lambda: prepare_batch(frames, rt.settings, decode=rt.decode)
        )
    size = -(-len(frames) // n)
    parts = await asyncio.gather(
        *(
            loop.run_in_executor(
                rt.decode_pool,
                lambda c=frames[i : i + size]: prepare_batch(c, rt.settings, decode=rt.decode),
            )
            for i in range(0, len(frames), size)
        )
    )
    merged = PreparedBatch()
    for p in parts:
        merged.frames += p.frames
        merged.metas += p.metas
        merged.images += p.images
        merged.dead += p.dead
        merged.decode_s = max(merged.decode_s, p.decode_s)
    return merged


async def finish(
    rt: WorkerRuntime, topics: AppTopics, stream, events, inferred, previous, t0: float
) -> None:
    """Stage 3: store, publish, then ack (after the previous batch acked: offsets advance in order)."""
    loop = asyncio.get_running_loop()
    try:
        ta = time.perf_counter()
        outcome: BatchOutcome = await inferred
        tb = time.perf_counter()
        await loop.run_in_executor(rt.store_pool, rt.store_and_publish_live, outcome.results)
        tc = time.perf_counter()
        if outcome.rejects:
            loop.run_in_executor(
                rt.store_pool, rt.write_overlays, outcome.rejects
            )  # cosmetic: not awaited
        await publish(topics, outcome)
        td = time.perf_counter()
        if previous is not None:
            await previous
        for event in events:
            await stream.ack(event)
        log.debug(
            "batch of %d: wait for model %.3f s (model %.3f, decode %.3f), store %.3f s, publish %.3f s",
            len(events),
            tb - ta,
            outcome.model_s,
            outcome.decode_s,
            tc - tb,
            td - tc,
        )
        observe(outcome, len(events), time.perf_counter() - t0)
    except asyncio.CancelledError:
        raise  # worker stopping: the batch stays unacked and is replayed
    except Exception as e:
        rt.fatal(e)


async def publish(topics: AppTopics, outcome: BatchOutcome) -> None:
    """Send results and dead letters and wait until the broker has them all (one round trip per
    batch: the sends are pipelined), so an offset is never committed ahead of its output."""
    pending = []
    for r in outcome.results:
        pending.append(await topics.results.send(key=r.camera_id.encode(), value=result_to_json(r)))
    for d in outcome.dead:
        log.warning("dead letter (%s): %s", d.stage, d.reason)
        pending.append(
            await topics.deadletter.send(
                key=d.frame.key,
                value=d.frame.value or b"",
                headers=deadletter_headers(d.frame.headers, d.reason, d.stage),
            )
        )
    if pending:
        await asyncio.gather(*pending)


def observe(outcome: BatchOutcome, n: int, seconds: float) -> None:
    metrics.BATCH_SIZE.observe(n)
    metrics.BATCH_LATENCY.observe(seconds)
    for r in outcome.results:
        metrics.FRAMES_PROCESSED.labels(product=r.product, verdict=r.verdict.value).inc()
    for d in outcome.dead:
        metrics.DEAD_LETTERS.labels(reason=d.stage).inc()
