"""Live prompt refresh: qc.model-updates -> ``Detector.swap_prompts`` between batches.

Every worker must see every update, so this is not a group-consumed Faust agent (the group would
hand the one partition to a single worker): each worker reads the topic with its own group-less
consumer, starting from offsets noted *before* its detector was loaded, so no update slips through
start-up. The swap runs on the inference thread, hence always between two batches.

An update is a version *name*: the worker swaps only to a version registered in the database whose
files still hash to the recorded sha256 (``service.vet_prompt_version``); anything else is refused
with one log line and ``qc_prompt_swap_refused_total{reason}``, and the prompts stay as they are.
"""

from __future__ import annotations

import asyncio
import json
import logging

from qc_stream.errors import InputError
from qc_stream.observability import metrics
from qc_stream.stream.runtime import WorkerRuntime
from qc_stream.stream.service import PromptRefused, vet_prompt_version
from qc_stream.wire.topics import MODEL_UPDATES

log = logging.getLogger(__name__)


def parse_update(data: bytes) -> dict:
    """``{"prompt_version": str, "backbone_id": str, "created_at": iso}``; InputError when malformed."""
    try:
        msg = json.loads(data)
    except (ValueError, TypeError) as e:
        raise InputError(f"model update is not JSON: {e}") from None
    if (
        not isinstance(msg, dict)
        or not isinstance(msg.get("prompt_version"), str)
        or not msg["prompt_version"]
    ):
        raise InputError("model update lacks a 'prompt_version' string")
    return msg


def refuse(reason: str, message: str) -> None:
    metrics.PROMPT_SWAP_REFUSED.labels(reason=reason).inc()
    log.error("refused model update: %s", message)


def apply_update(rt: WorkerRuntime, data: bytes) -> str | None:
    """Swap to the announced version when it fits this worker; returns the version swapped to.

    Called on the inference thread. A bad update is logged and ignored: the worker keeps its prompts.
    An error reading the registry (database down) is raised, for the caller to retry.
    """
    try:
        msg = parse_update(data)
    except InputError as e:
        refuse("malformed", str(e))
        return None
    version = msg["prompt_version"]
    detector = rt.detector
    mine = getattr(detector, "backbone_id", None)
    theirs = msg.get("backbone_id")
    if mine and theirs and theirs != mine:
        log.warning(
            "ignoring prompt version %s: made for backbone %s, this worker runs %s",
            version,
            theirs,
            mine,
        )
        return None
    if version == detector.prompt_version:
        return None
    try:
        folder = vet_prompt_version(version, rt.settings.models_dir, rt.registered_version)
    except PromptRefused as e:
        refuse(e.reason, str(e))
        return None
    except Exception as e:
        if rt.is_store_outage(e):
            raise
        refuse("registry_error", f"{version!r}: cannot check model_versions: {e}")
        return None
    old = detector.prompt_version
    try:
        detector.swap_prompts(str(folder))  # the vetted folder, never a path from the message
    except Exception as e:
        log.error("could not swap to prompt version %s (keeping %s): %s", version, old, e)
        return None
    log.warning("prompt version %s -> %s", old, detector.prompt_version)
    metrics.PROMPT_VERSION.labels(prompt_version=old).set(0)
    metrics.PROMPT_VERSION.labels(prompt_version=detector.prompt_version).set(1)
    return version


def end_offsets(bootstrap: str, client_kwargs: dict | None = None) -> dict[int, int]:
    """Current end offset of every qc.model-updates partition (call before loading the detector)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, **(client_kwargs or {})
    )
    try:
        parts = consumer.partitions_for_topic(MODEL_UPDATES) or set()
        tps = [TopicPartition(MODEL_UPDATES, p) for p in parts]
        return {tp.partition: off for tp, off in consumer.end_offsets(tps).items()} if tps else {}
    finally:
        consumer.close()


def register(app, rt: WorkerRuntime, start_offsets: dict[int, int]):
    """Add the update listener to ``app`` as a background task."""

    @app.task
    async def model_updates() -> None:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        from qc_stream.wire.security import aiokafka_kwargs

        loop = asyncio.get_running_loop()
        consumer = AIOKafkaConsumer(
            bootstrap_servers=rt.settings.kafka_bootstrap,
            enable_auto_commit=False,
            group_id=None,
            **aiokafka_kwargs(rt.settings),
        )
        await consumer.start()
        try:
            parts = consumer.partitions_for_topic(MODEL_UPDATES) or {0}
            tps = [TopicPartition(MODEL_UPDATES, p) for p in sorted(parts)]
            consumer.assign(tps)
            for tp in tps:
                consumer.seek(tp, start_offsets.get(tp.partition, 0))
            async for record in consumer:
                # A database outage while checking the registry is waited out, not a refusal.
                await rt.until_done(
                    "registry",
                    lambda v=record.value: loop.run_in_executor(
                        rt.inference_pool, apply_update, rt, v
                    ),
                    rt.is_store_outage,
                )
        finally:
            await consumer.stop()

    return model_updates
