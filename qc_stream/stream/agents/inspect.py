"""The inspection agent: qc.frames micro-batches -> detector -> database, Redis, qc.results.

A small pipeline keeps the model busy: while batch N is on the inference thread, batch N+1 is
decoded on the decode threads and batch N-1 is stored and published. Every batch is acked only
after its results are in the database and its outputs are on the broker (``noack_take`` + explicit
acks), and Faust commits acked offsets only: a crash anywhere replays the batch, and the
idempotent repository makes the replay harmless. When the database or the broker is unreachable the
batch is held and retried (``WorkerRuntime.until_done``) and the pipeline, full, stops consuming; an
output the broker refuses for good (a dead letter still too large) is logged with its offset and
skipped, so no record can stop a partition.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque

from qc_stream.observability import metrics
from qc_stream.stream.retention import raw_frames
from qc_stream.stream.runtime import WorkerRuntime, is_refused_record
from qc_stream.stream.service import (
    BatchOutcome,
    Outgoing,
    PreparedBatch,
    RawFrame,
    infer_batch,
    outputs_of,
    prepare_batch,
)
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
            if rt.stopping.is_set():
                continue  # stopping: left unacked, replayed by whoever gets the partition
            t0 = time.perf_counter()
            frames = [RawFrame.of(e.value, e.headers, e.key, origin_of(e)) for e in events]
            prepared = await prepare_parallel(loop, rt, frames)
            # rt.detector is read on the inference thread: after it is loaded, between prompt swaps.
            inferred = loop.run_in_executor(
                rt.inference_pool, lambda p=prepared: infer_batch(p, rt.detector, settings)
            )
            previous = inflight[-1] if inflight else None
            inflight.append(
                rt.track(
                    asyncio.ensure_future(
                        finish(rt, topics, stream, events, inferred, previous, t0)
                    )
                )
            )
            while inflight and (len(inflight) > PIPELINE_DEPTH or inflight[0].done()):
                await inflight.popleft()

    return inspect


def origin_of(event) -> str:
    m = getattr(event, "message", None)
    return f"{m.topic}[{m.partition}]@{m.offset}" if m is not None else "?"


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
        if outcome.retained and rt.retention is not None:
            # Kept for review before the ack: the files first (never raises), then their rows.
            kept = await loop.run_in_executor(
                rt.store_pool, rt.retention.keep, outcome.retained, raw_frames(events)
            )
            if kept:
                await rt.until_done(
                    "database",
                    lambda: loop.run_in_executor(rt.store_pool, rt.retention.record, kept),
                    rt.is_store_outage,
                )
        await rt.until_done(
            "database",
            lambda: loop.run_in_executor(rt.store_pool, rt.store_and_publish_live, outcome.results),
            rt.is_store_outage,
        )
        tc = time.perf_counter()
        if outcome.rejects:
            loop.run_in_executor(
                rt.store_pool, rt.write_overlays, outcome.rejects
            )  # cosmetic: not awaited
        for d in outcome.dead:
            rt.repeats.log(
                log,
                logging.WARNING,
                ("dead letter", d.stage),
                "dead letter for %s (%s): %s",
                d.frame.origin,
                d.stage,
                d.reason,
            )
        outputs = outputs_of(outcome, rt.settings)
        await rt.until_done(
            "broker", lambda: publish(rt, topics, outputs), lambda e: isinstance(e, PublishFailed)
        )
        td = time.perf_counter()
        if previous is not None:
            await previous
        for event in events:
            await stream.ack(event)
        rt.last_ack = time.monotonic()  # progress, for the stall watchdog (stream/stall.py)
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


class PublishFailed(Exception):
    """Some outputs of a batch are not on the broker yet (it is unreachable, or restarting)."""


async def publish(rt: WorkerRuntime, topics: AppTopics, outputs: list[Outgoing]) -> None:
    """Send the outputs not sent yet and wait until the broker has them all (one round trip per
    batch: the sends are pipelined), so an offset is never committed ahead of its output.

    An output the broker refuses for good is logged with its source offset and skipped; any other
    failure raises ``PublishFailed`` and the caller retries what is still unsent."""
    pending: list[tuple[Outgoing, asyncio.Future]] = []
    failures: list[tuple[Outgoing, BaseException]] = []
    for out in outputs:
        if out.sent:
            continue
        topic = topics.results if out.kind == "result" else topics.deadletter
        try:
            fut = await topic.send(key=out.key, value=out.value, headers=out.headers)
        except Exception as e:
            failures.append((out, e))
            continue
        pending.append((out, fut))
    for out, fut in pending:
        try:
            await fut
            out.sent = True
        except Exception as e:
            failures.append((out, e))
    retry = None
    for out, e in failures:
        if is_refused_record(e):
            out.sent = True  # nothing to wait for: the broker will never take this record
            metrics.RECORDS_SKIPPED.labels(kind=out.kind).inc()
            log.error(
                "%s for %s (%d bytes) refused by the broker (%s: %s); logged and skipped",
                out.kind,
                out.origin,
                len(out.value),
                type(e).__name__,
                e,
            )
        elif retry is None:
            retry = e
    if retry is not None:
        unsent = sum(not o.sent for o in outputs)
        raise PublishFailed(
            f"{unsent} output(s) not on the broker: {type(retry).__name__}: {retry}"
        ) from retry


def observe(outcome: BatchOutcome, n: int, seconds: float) -> None:
    metrics.BATCH_SIZE.observe(n)
    metrics.BATCH_LATENCY.observe(seconds)
    for r in outcome.results:
        metrics.FRAMES_PROCESSED.labels(product=r.product, verdict=r.verdict.value).inc()
    for d in outcome.dead:
        metrics.DEAD_LETTERS.labels(reason=d.stage).inc()
