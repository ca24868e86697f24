"""``qc-stream bench``: bare-model frames/s and end-to-end frames/s, measured in one run.

1. Frames: synthetic JPEGs over several products, encoded once up front.
2. Bare: ``Detector.detect`` on the decoded pictures in batches of ``batch`` (after warm-up
   batches); no Kafka, no decode, no database. Measured before and after step 3 and averaged.
3. End to end: the same frames queued in ``qc.frames`` on the embedded broker, then one real
   worker subprocess (same settings, same batch size) consumes, decodes, infers, stores in the
   database and publishes results. Throughput is taken from the rows' ``processed_at`` over the
   batches after the same number of warm-up batches: steady state, like the bare figure.
4. Latency: a further set of frames sent in bursts of one batch at half the measured end-to-end
   rate; p50/p99 of captured (producer clock) -> processed (worker clock), same machine.
"""

from __future__ import annotations

import gc
import json
import os
import tempfile
import time
import uuid
from pathlib import Path

from qc_stream.errors import QcError
from qc_stream.settings import Settings

WARMUP_BATCHES = 2
PRODUCTS = ("pill", "screw", "wood", "tile")


def _frames(n: int, size: int, seed: int):
    from qc_stream.producers.sources import synthetic

    per = -(-n // len(PRODUCTS))
    out = []
    for i, p in enumerate(PRODUCTS):
        out += [(p, f) for f in synthetic(p, count=per, defect_rate=0.3, seed=seed + i, size=size)]
    return out[:n]


class BareModel:
    """The detector in this process, on decoded frames: the bare-model figure."""

    def __init__(self, settings: Settings, frames, batch: int):
        from qc_stream.inference.decode import decode_image
        from qc_stream.inference.detector import Detector

        self.detector = Detector.from_settings(settings)
        images = [decode_image(f.data) for _, f in frames]
        products = [p for p, _ in frames]
        self.batches = [(images[i : i + batch], products[i : i + batch]) for i in range(0, len(images), batch)]
        for imgs, prods in self.batches[:WARMUP_BATCHES]:
            self.detector.detect(imgs, prods)
        self.info = {"backbone": self.detector.model_version, "prompt_version": self.detector.prompt_version,
                     "device": _device_name(self.detector)}

    def measure(self) -> float:
        timed = self.batches[WARMUP_BATCHES:] or self.batches
        _sync(self.detector)
        t0 = time.perf_counter()
        for imgs, prods in timed:
            self.detector.detect(imgs, prods)
        _sync(self.detector)
        return sum(len(b[0]) for b in timed) / (time.perf_counter() - t0)

    def close(self) -> None:
        del self.detector
        _free_memory()


def _sync(detector) -> None:
    import torch

    if getattr(detector, "_device", None) is not None and detector._device.type == "cuda":
        torch.cuda.synchronize()


def _device_name(detector) -> str:
    import torch

    dev = getattr(detector, "_device", None)
    if dev is not None and dev.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(dev)})"
    return f"cpu ({torch.get_num_threads()} threads)"


def _free_memory() -> None:
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:
        pass


def measure_e2e(settings: Settings, frames, batch: int, workdir: Path, latency_frames: int) -> dict:
    from sqlalchemy import select

    from qc_stream.broker.embedded import EmbeddedBroker
    from qc_stream.producers.camera import run_camera
    from qc_stream.producers.producer import FrameProducer
    from qc_stream.producers.sources import SourceFrame
    from qc_stream.storage.db import make_engine
    from qc_stream.storage.inspections import InspectionRepository
    from qc_stream.storage.migrate import upgrade
    from qc_stream.storage.orm import InspectionRow
    from qc_stream.stream.demo import percentile
    from qc_stream.stream.local import WorkerProcess, wait_for_rows, worker_env
    from qc_stream.stream.topics import ensure_topics

    db_url = settings.database_url if "QC_DATABASE_URL" in os.environ else f"sqlite:///{workdir / 'bench.db'}"
    upgrade(db_url)
    repo = InspectionRepository(make_engine(db_url))
    base = repo.count()
    n = len(frames)
    with EmbeddedBroker(log_path=workdir / "broker.log") as broker:
        ensure_topics(broker.bootstrap, settings.topic_partitions)
        producer = FrameProducer(settings.model_copy(update={"kafka_bootstrap": broker.bootstrap}))

        def send(items, fps=None, tag="bench"):
            for i, (product, f) in enumerate(items):
                cam = f"{tag}-cam-{i % 4}"
                run_camera(producer, [SourceFrame(f.data, f.content_type, product)], camera_id=cam, line_id="bench", product=product)

        # The backlog is queued before the worker starts, so the producer does not compete with it.
        send(frames)
        env = worker_env(broker.bootstrap, db_url, redis_url=None, QC_BATCH_SIZE=batch, QC_HEALTH_PORT="-1",
                         QC_APP_ID=f"qc-bench-{uuid.uuid4().hex[:6]}", QC_MODELS_DIR=str(settings.models_dir))
        worker = WorkerProcess(env, workdir / "worker.log")
        try:
            wait_for_rows(repo, base + n, 300 + n * 2.0, workers=[worker])
            with repo.engine.connect() as c:
                stamps = sorted(c.execute(select(InspectionRow.processed_at).where(InspectionRow.line_id == "bench")).scalars().all())
            e2e_fps, batches_seen = _steady_fps(stamps)
            # Latency at half the sustainable rate, in bursts of one batch (cameras on a line fire
            # together): the queue stays short, so this is the pipeline's own latency.
            pace = max(1.0, 0.5 * e2e_fps)
            lat_items = frames[:latency_frames]
            t_lat = time.monotonic()
            start_mark = time.time()
            for i in range(0, len(lat_items), batch):
                due = t_lat + i / pace
                if due > time.monotonic():
                    time.sleep(due - time.monotonic())
                send(lat_items[i : i + batch], tag="lat")
            wait_for_rows(repo, base + n + len(lat_items), 120 + len(lat_items) * 2.0, workers=[worker])
            with repo.engine.connect() as c:
                lat = c.execute(select(InspectionRow.latency_ms).where(InspectionRow.camera_id.like("lat-%"))).scalars().all()
        finally:
            producer.close()
            worker.stop()
    return {
        "e2e_fps": e2e_fps,
        "p50_ms": percentile(list(lat), 0.5),
        "p99_ms": percentile(list(lat), 0.99),
        "e2e_batches": batches_seen,
        "latency_frames": len(lat),
        "latency_pace_fps": pace,
        "database": db_url.split(":", 1)[0],
        "worker_log": str(workdir / "worker.log"),
        "started_at": start_mark,
    }


def _steady_fps(stamps) -> tuple[float, int]:
    """Frames per second over the batches after the warm-up ones (a batch = one processed_at)."""
    from collections import Counter

    per_batch = sorted(Counter(stamps).items())
    if len(per_batch) <= WARMUP_BATCHES + 1:
        per_batch_used = per_batch
    else:
        per_batch_used = per_batch[WARMUP_BATCHES:]
    if len(per_batch_used) < 2:
        raise QcError("too few batches to measure throughput; raise --frames")
    t0 = per_batch_used[0][0]
    t1 = per_batch_used[-1][0]
    frames_after_first = sum(n for _, n in per_batch_used[1:])
    return frames_after_first / (t1 - t0).total_seconds(), len(per_batch)


def _prompts_fit(settings: Settings) -> bool:
    """Whether the active prompt version can load on the benchmarked backbone."""
    if settings.prompt_version:
        return True  # asked for explicitly: let a mismatch fail loudly
    from qc_stream.dapo.checkpoint import active_version, read_manifest, resolve_version_path

    version = active_version(settings.models_dir)
    if not version:
        return True
    try:
        manifest = read_manifest(resolve_version_path(version, settings.models_dir))
    except Exception:
        return False
    made_for = manifest.get("backbone", {})
    return made_for.get("name") == settings.backbone and (settings.pretrained or None) == (made_for.get("pretrained") or None)


def _untrained_models_dir(settings: Settings, workdir: Path) -> Path:
    """A models dir with the same backbones and no prompt versions: the detector then runs untrained
    prompts, which cost exactly what trained ones cost (same modules, same shapes)."""
    root = workdir / "models"
    root.mkdir()
    (root / "backbones").symlink_to(Path(settings.models_dir).resolve() / "backbones", target_is_directory=True)
    return root


def run_bench(settings: Settings, *, frames: int, batch: int, size: int = 256, json_path: Path | None = None, echo=print) -> dict:
    with tempfile.TemporaryDirectory(prefix="qc-bench-") as tmp:
        return _run_bench(settings, frames=frames, batch=batch, size=size, json_path=json_path, echo=echo, workdir=Path(tmp))


def _run_bench(settings: Settings, *, frames: int, batch: int, size: int, json_path: Path | None, echo, workdir: Path) -> dict:
    if frames < batch * (WARMUP_BATCHES + 3):
        raise QcError(f"--frames must be at least {batch * (WARMUP_BATCHES + 3)} for --batch {batch} (warm-up + steady state)")
    settings = settings.model_copy(update={"batch_size": batch})
    if not _prompts_fit(settings):
        settings = settings.model_copy(update={"models_dir": _untrained_models_dir(settings, workdir)})
        echo(f"note: the active prompt version was made for another backbone; benchmarking {settings.backbone} with untrained prompts (same cost)")
    echo(f"generating {frames} synthetic frames ({size}x{size} JPEG)...")
    items = _frames(frames, size, seed=11)
    echo(f"bare model: Detector.detect on decoded frames, batch {batch}...")
    bare = BareModel(settings, items, batch)
    info = bare.info
    try:
        # Measured before and after the pipeline run and averaged: on a shared machine the load
        # drifts, and the two figures bracket the end-to-end run.
        bare_before = bare.measure()
        echo(f"  {bare_before:.1f} frames/s on {info['device']} ({info['backbone']}, prompts {info['prompt_version']})")
        echo("end to end: broker -> worker -> database...")
        e2e = measure_e2e(settings, items, batch, workdir, latency_frames=min(len(items), max(2 * batch, 64)))
        echo(f"  {e2e['e2e_fps']:.1f} frames/s; bare model again...")
        bare_after = bare.measure()
    finally:
        bare.close()
    bare_fps = (bare_before + bare_after) / 2
    echo(f"  {bare_after:.1f} frames/s (mean of both: {bare_fps:.1f})")
    report = {
        "bare_fps": round(bare_fps, 2),
        "e2e_fps": round(e2e["e2e_fps"], 2),
        "ratio": round(e2e["e2e_fps"] / bare_fps, 3),
        "p50_ms": round(e2e["p50_ms"], 1),
        "p99_ms": round(e2e["p99_ms"], 1),
        "device": info["device"],
        "backbone": info["backbone"],
        "batch": batch,
        "detail": {
            "frames": frames,
            "frame_size": size,
            "prompt_version": info["prompt_version"],
            "image_size": settings.image_size,
            "precision": settings.precision,
            "database": e2e["database"],
            "e2e_batches": e2e["e2e_batches"],
            "latency_frames": e2e["latency_frames"],
            "latency_pace_fps": round(e2e["latency_pace_fps"], 1),
            "warmup_batches": WARMUP_BATCHES,
            "bare_fps_before": round(bare_before, 2),
            "bare_fps_after": round(bare_after, 2),
        },
    }
    echo(f"  {report['e2e_fps']:.1f} frames/s end to end = {report['ratio']:.2f} x bare; latency p50 {report['p50_ms']:.0f} ms, p99 {report['p99_ms']:.0f} ms")
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(report, indent=2) + "\n")
        echo(f"wrote {json_path}")
    return report
