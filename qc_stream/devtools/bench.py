"""``qc-stream bench``: bare image encoder, bare model and end-to-end frames/s, measured in one run.

1. Frames: synthetic JPEGs over several products, encoded once up front.
2. One worker subprocess (same settings, same batch size) on an embedded broker and a database,
   warmed up with a few batches; the bare model (``Detector.detect`` on already decoded frames, no
   Kafka, no decode, no database) is loaded in this process and warmed up too.
3. Interleaved rounds: the backbone's image encoder alone (``Detector.encode_images``, the floor
   any CLIP-based detector pays), the bare model on the same chunk of frames, then the same chunk
   through broker -> worker -> database. Alternating keeps the three figures in the same time
   window, which matters on a shared machine whose load drifts. End-to-end throughput per round
   comes from the stored rows'
   ``processed_at`` (steady state: frames after the round's first batch over the span).
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

import cv2
import numpy as np

from qc_stream.errors import QcError
from qc_stream.settings import Settings

WARMUP_BATCHES = 2
PRODUCTS = ("pill", "screw", "wood", "tile")


# JPEG quality of the frames: what line cameras are usually set to.
CAMERA_JPEG_QUALITY = 90
# Sensor noise (grey levels, 1 sigma) added after scaling a rendering up to a camera's frame size:
# an upscaled rendering is smoother than a sensor's picture, so its JPEG would be smaller and
# quicker to decode than a real frame of that size.
SENSOR_NOISE = 3.0
# Side at which frames larger than it are rendered before being scaled to the frame size.
RENDER_MAX_SIDE = 512


def parse_frame_size(text: str) -> tuple[int, int]:
    """``"256"`` -> (256, 256); ``"1280x1024"`` -> (1280, 1024) (width x height)."""
    parts = text.lower().split("x")
    try:
        if len(parts) == 1:
            w = h = int(parts[0])
        elif len(parts) == 2:
            w, h = int(parts[0]), int(parts[1])
        else:
            raise ValueError
    except ValueError:
        raise QcError(
            f"--frame-size must be N or WxH (e.g. 256, 1280x1024), not {text!r}"
        ) from None
    if not (32 <= w <= 8192 and 32 <= h <= 8192):
        raise QcError(f"--frame-size sides must be 32..8192 px, not {w}x{h}")
    return w, h


def _frames(n: int, size: int | tuple[int, int], seed: int):
    """``n`` (product, SourceFrame) JPEGs of ``size`` (side, or (width, height)) over PRODUCTS.

    Square frames up to RENDER_MAX_SIDE are rendered at their size; larger or non-square ones are
    rendered at min(short side, RENDER_MAX_SIDE), scaled to the frame size, given sensor noise and
    encoded at CAMERA_JPEG_QUALITY, as a camera would send them."""
    from qc_stream.producers.sources import SourceFrame, encode_jpeg
    from qc_stream.synth import frames as render

    w, h = (size, size) if isinstance(size, int) else size
    side = min(w, h, RENDER_MAX_SIDE)
    rng = np.random.default_rng(seed)
    per = -(-n // len(PRODUCTS))
    out = []
    for i, p in enumerate(PRODUCTS):
        for k, sample in enumerate(render(p, seed=seed + i, size=side, defect_rate=0.3)):
            if k >= per:
                break
            image = sample.image
            if (w, h) != (side, side):
                image = cv2.resize(image, (w, h), interpolation=cv2.INTER_CUBIC)
                noise = rng.normal(0.0, SENSOR_NOISE, image.shape).astype(np.float32)
                image = np.clip(image + noise, 0, 255).astype(np.uint8)
            data = encode_jpeg(image, quality=CAMERA_JPEG_QUALITY)
            out.append((p, SourceFrame(data, "image/jpeg", p, sample.defect_type)))
    return out[:n]


class BareModel:
    """The detector in this process, on decoded frames: the bare-model figure."""

    def __init__(self, settings: Settings, frames, batch: int):
        from qc_stream.inference.decode import decode_image
        from qc_stream.inference.detector import Detector

        self.detector = Detector.from_settings(settings)
        self.batch = batch
        self.images = [decode_image(f.data) for _, f in frames]
        self.products = [p for p, _ in frames]
        for i in range(0, min(len(self.images), WARMUP_BATCHES * batch), batch):
            self.detector.detect(self.images[i : i + batch], self.products[i : i + batch])
        self.measure_encoder(0, min(len(self.images), WARMUP_BATCHES * batch))
        self.info = {
            "backbone": self.detector.model_version,
            "prompt_version": self.detector.prompt_version,
            "device": _device_name(self.detector),
        }

    def measure(self, start: int, stop: int) -> tuple[int, float]:
        """(frames, seconds) for frames[start:stop] in batches."""
        _sync(self.detector)
        t0 = time.perf_counter()
        for i in range(start, stop, self.batch):
            j = min(i + self.batch, stop)
            self.detector.detect(self.images[i:j], self.products[i:j])
        _sync(self.detector)
        return stop - start, time.perf_counter() - t0

    def measure_pipelined(self, start: int, stop: int) -> tuple[int, float]:
        """(frames, seconds) for frames[start:stop] through ``PipelinedDetector.run``: the same
        batches with prepare / forward / finish of consecutive batches overlapping."""
        from qc_stream.inference.pipeline import PipelinedDetector

        piped = PipelinedDetector(self.detector)
        try:
            batches = [
                (
                    self.images[i : min(i + self.batch, stop)],
                    self.products[i : min(i + self.batch, stop)],
                )
                for i in range(start, stop, self.batch)
            ]
            _sync(self.detector)
            t0 = time.perf_counter()
            for _ in piped.run(batches):
                pass
            _sync(self.detector)
            return stop - start, time.perf_counter() - t0
        finally:
            piped.close()

    def measure_encoder(self, start: int, stop: int) -> tuple[int, float]:
        """(frames, seconds) for the image encoder alone (``Detector.encode_images``) on frames[start:stop]."""
        _sync(self.detector)
        t0 = time.perf_counter()
        for i in range(start, stop, self.batch):
            self.detector.encode_images(self.images[i : min(i + self.batch, stop)])
        _sync(self.detector)
        return stop - start, time.perf_counter() - t0

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


def _rounds(n: int, batch: int) -> list[tuple[int, int]]:
    """Chunks of whole batches, up to 3 rounds of at least 3 batches each."""
    per = max(3, min(n // batch // 3, n // batch))
    k = max(1, min(3, (n // batch) // per))
    size = (n // k // batch) * batch
    return [(i * size, (i + 1) * size if i < k - 1 else n) for i in range(k)]


def measure(
    settings: Settings,
    frames,
    bare: BareModel,
    batch: int,
    workdir: Path,
    latency_frames: int,
    echo,
    workers: int = 1,
) -> dict:
    """Rounds of encoder / bare / end to end with ``workers`` worker processes in one consumer group
    (partitions: at least ``workers``), then the latency run."""
    from sqlalchemy import select

    from qc_stream.devtools.broker import EmbeddedBroker
    from qc_stream.devtools.demo import percentile
    from qc_stream.devtools.local import WorkerProcess, wait_for_rows, worker_env
    from qc_stream.producers.camera import run_camera
    from qc_stream.producers.producer import FrameProducer
    from qc_stream.producers.sources import SourceFrame
    from qc_stream.storage.db import make_engine
    from qc_stream.storage.inspections import InspectionRepository
    from qc_stream.storage.migrate import upgrade
    from qc_stream.storage.orm import InspectionRow
    from qc_stream.wire.topics import ensure_topics

    db_url = (
        settings.database_url
        if "QC_DATABASE_URL" in os.environ
        else f"sqlite:///{workdir / 'bench.db'}"
    )
    upgrade(db_url)
    repo = InspectionRepository(make_engine(db_url))
    expected = repo.count()
    run = uuid.uuid4().hex[:6]
    with EmbeddedBroker(log_path=workdir / "broker.log") as broker:
        partitions = max(settings.topic_partitions, workers)
        ensure_topics(broker.bootstrap, partitions)
        producer = FrameProducer(settings.model_copy(update={"kafka_bootstrap": broker.bootstrap}))

        def send(items, tag):
            for i, (product, f) in enumerate(items):
                run_camera(
                    producer,
                    [SourceFrame(f.data, f.content_type, product)],
                    camera_id=f"{run}-{tag}-cam-{i % CAMERAS}",
                    line_id="bench",
                    product=product,
                )

        def stamps_of(tag):
            with repo.engine.connect() as c:
                return (
                    c.execute(
                        select(InspectionRow.processed_at).where(
                            InspectionRow.camera_id.like(f"{run}-{tag}-%")
                        )
                    )
                    .scalars()
                    .all()
                )

        ports = [_free_port() for _ in range(workers)]
        procs = [
            WorkerProcess(
                worker_env(
                    broker.bootstrap,
                    db_url,
                    redis_url=None,
                    QC_BATCH_SIZE=batch,
                    QC_HEALTH_PORT=str(port),
                    QC_TOPIC_PARTITIONS=str(partitions),
                    QC_APP_ID=f"qc-bench-{run}",
                    QC_MODELS_DIR=str(settings.models_dir),
                    QC_PROMPT_VERSION=settings.prompt_version,  # the bare model's
                ),
                workdir / f"worker-{run}-{k}.log",
            )
            for k, port in enumerate(ports)
        ]
        try:
            _wait_ready(procs, ports, timeout_s=300.0)
            # Enough warm-up frames that every worker gets batches on its partitions.
            warm = (frames * workers)[: WARMUP_BATCHES * batch * workers]
            send(warm, "warm")
            expected += len(warm)
            wait_for_rows(repo, expected, 300 + len(warm) * 2.0, workers=procs)
            cpu_s = wall_s = 0.0
            enc_frames = enc_s = bare_frames = bare_s = e2e_frames = e2e_s = 0.0
            piped_frames = piped_s = 0.0
            rounds = []
            for r, (a, b) in enumerate(_rounds(len(frames), batch)):
                n_x, t_x = bare.measure_encoder(a, b)
                n_b, t_b = bare.measure(a, b)
                n_p, t_p = bare.measure_pipelined(a, b)
                piped_frames, piped_s = piped_frames + n_p, piped_s + t_p
                cpu0, wall0 = _cpu_seconds(procs), time.monotonic()
                send(frames[a:b], f"r{r}")
                expected += b - a
                wait_for_rows(repo, expected, 120 + (b - a) * 2.0, workers=procs, poll_s=0.1)
                cpu_s += _cpu_seconds(procs) - cpu0
                wall_s += time.monotonic() - wall0
                n_e, t_e = _steady(stamps_of(f"r{r}"))
                enc_frames, enc_s = enc_frames + n_x, enc_s + t_x
                bare_frames, bare_s, e2e_frames, e2e_s = (
                    bare_frames + n_b,
                    bare_s + t_b,
                    e2e_frames + n_e,
                    e2e_s + t_e,
                )
                rounds.append(
                    {
                        "encoder_fps": round(n_x / t_x, 2),
                        "bare_fps": round(n_b / t_b, 2),
                        "bare_pipelined_fps": round(n_p / t_p, 2),
                        "e2e_fps": round(n_e / t_e, 2),
                    }
                )
                echo(
                    f"  round {r + 1}: image encoder {n_x / t_x:.1f}, bare model {n_b / t_b:.1f} "
                    f"(pipelined {n_p / t_p:.1f}), "
                    f"end to end {n_e / t_e:.1f} frames/s"
                )
            e2e_fps = e2e_frames / e2e_s
            # Latency at half the sustainable rate, in bursts of one batch (cameras on a line fire
            # together): the queue stays short, so this is the pipeline's own latency.
            pace = max(1.0, 0.5 * e2e_fps)
            lat_items = frames[:latency_frames]
            t_lat = time.monotonic()
            for i in range(0, len(lat_items), batch):
                due = t_lat + i / pace
                if due > time.monotonic():
                    time.sleep(due - time.monotonic())
                send(lat_items[i : i + batch], "lat")
            expected += len(lat_items)
            wait_for_rows(repo, expected, 120 + len(lat_items) * 2.0, workers=procs)
            with repo.engine.connect() as c:
                lat = list(
                    c.execute(
                        select(InspectionRow.latency_ms).where(
                            InspectionRow.camera_id.like(f"{run}-lat-%")
                        )
                    )
                    .scalars()
                    .all()
                )
        finally:
            producer.close()
            for w in procs:
                w.stop()
    return {
        "encoder_fps": enc_frames / enc_s,
        "bare_fps": bare_frames / bare_s,
        "bare_pipelined_fps": piped_frames / piped_s,
        "e2e_fps": e2e_fps,
        "p50_ms": percentile(lat, 0.5),
        "p99_ms": percentile(lat, 0.99),
        "rounds": rounds,
        "latency_frames": len(lat),
        "latency_pace_fps": pace,
        "database": db_url.split(":", 1)[0],
        "workers": workers,
        "partitions": partitions,
        # CPU seconds of the worker processes per second of the end-to-end rounds (1.0 = one core).
        "worker_cpu_cores": cpu_s / wall_s if wall_s > 0 else None,
    }


# Camera ids the frames are spread over (the record key): enough that every partition gets frames.
CAMERAS = 16


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_ready(procs, ports, timeout_s: float) -> None:
    """Until every worker's /readyz answers 200 (model loaded, partitions assigned), then once more
    after a pause: a worker joining later moves partitions, and all must hold theirs."""
    import urllib.error
    import urllib.request

    def ready(port: int) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError):
            return False

    deadline = time.monotonic() + timeout_s
    for attempt in range(2):
        while not all(ready(p) for p in ports):
            if time.monotonic() > deadline:
                tail = "\n".join(w.log_tail() for w in procs)
                raise QcError(f"workers not ready after {timeout_s:.0f} s; logs:\n{tail}")
            if not all(w.alive for w in procs):
                tail = "\n".join(w.log_tail() for w in procs)
                raise QcError(f"a worker exited before it was ready; logs:\n{tail}")
            time.sleep(0.5)
        if attempt == 0 and len(procs) > 1:
            time.sleep(3.0)


def _cpu_seconds(procs) -> float:
    """User + system CPU seconds of the worker processes so far (Linux /proc; 0 elsewhere)."""
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    total = 0.0
    for w in procs:
        try:
            fields = Path(f"/proc/{w.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # After the ")" of the command name: field 14 (utime) and 15 (stime) are at 11 and 12.
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


def _round(x, digits: int):
    return None if x is None else round(x, digits)


def _steady(stamps) -> tuple[int, float]:
    """(frames after the first batch, seconds from the first batch to the last): one batch = one
    ``processed_at``, so this is the throughput of the batches between, like the bare timing."""
    from collections import Counter

    per_batch = sorted(Counter(stamps).items())
    if len(per_batch) < 2:
        raise QcError("too few batches to measure throughput; raise --frames")
    return sum(n for _, n in per_batch[1:]), (per_batch[-1][0] - per_batch[0][0]).total_seconds()


def bench_prompts(settings: Settings) -> tuple[Settings, str | None]:
    """``settings`` pinned to the prompt version the bare model and the workers both run: the one
    a worker would start on (``qc_stream.stream.prompt_source``), or QC_PROMPT_VERSION=untrained
    (random prompts cost exactly what trained ones cost: same modules, same shapes) when there is
    none or it was made for another backbone; with a note saying so."""
    from qc_stream.dapo.checkpoint import read_manifest, resolve_version_path
    from qc_stream.inference.detector import UNTRAINED
    from qc_stream.stream.prompt_source import FROM_SETTING, choose_prompt_version

    choice = choose_prompt_version(settings)
    if choice.source == FROM_SETTING:
        return settings, None  # asked for explicitly: let a mismatch fail loudly
    why = "there is no prompt version"
    if choice.version:
        try:
            manifest = read_manifest(resolve_version_path(choice.version, settings.models_dir))
        except Exception:
            manifest = {}
        # Same architecture name: load it (other weights then fail with the checkpoint's message).
        if manifest.get("backbone", {}).get("name") == settings.backbone:
            return settings.model_copy(update={"prompt_version": choice.version}), None
        why = f"the active prompt version ({choice.source}) was made for another backbone"
    return (
        settings.model_copy(update={"prompt_version": UNTRAINED}),
        f"note: {why}; benchmarking {settings.backbone} with untrained prompts (same cost)",
    )


def run_bench(
    settings: Settings,
    *,
    frames: int,
    batch: int,
    frame_size: tuple[int, int] = (256, 256),
    workers: int = 1,
    json_path: Path | None = None,
    echo=print,
) -> dict:
    with tempfile.TemporaryDirectory(prefix="qc-bench-") as tmp:
        return _run_bench(
            settings,
            frames=frames,
            batch=batch,
            frame_size=frame_size,
            workers=workers,
            json_path=json_path,
            echo=echo,
            workdir=Path(tmp),
        )


def _run_bench(
    settings: Settings,
    *,
    frames: int,
    batch: int,
    frame_size: tuple[int, int],
    workers: int,
    json_path: Path | None,
    echo,
    workdir: Path,
) -> dict:
    from qc_stream.inference.device_decode import device_decode_on

    if frames < 3 * batch:
        raise QcError(
            f"--frames must be at least {3 * batch} for --batch-size {batch} (three batches per round)"
        )
    settings = settings.model_copy(update={"batch_size": batch})
    settings, note = bench_prompts(settings)
    if note:
        echo(note)
    size_text = f"{frame_size[0]}x{frame_size[1]}"
    echo(
        f"generating {frames} synthetic frames ({size_text} JPEG, quality {CAMERA_JPEG_QUALITY})..."
    )
    items = _frames(frames, frame_size, seed=11)
    echo(f"loading the model here (bare) and a worker (end to end), batch {batch}...")
    bare = BareModel(settings, items, batch)
    info = bare.info
    echo(f"  {info['backbone']} on {info['device']}, prompts {info['prompt_version']}")
    device_decode = device_decode_on(settings)
    echo(
        f"  the worker decodes JPEGs on {'the model device' if device_decode else 'the CPU'} "
        f"(QC_DEVICE_DECODE={settings.device_decode})"
    )
    try:
        m = measure(
            settings,
            items,
            bare,
            batch,
            workdir,
            latency_frames=min(len(items), max(2 * batch, 64)),
            echo=echo,
        )
        scaled = None
        if workers > 1:
            echo(f"again with {workers} workers in one consumer group...")
            scaled = measure(
                settings,
                items,
                bare,
                batch,
                workdir,
                latency_frames=min(len(items), max(2 * batch, 64)),
                echo=echo,
                workers=workers,
            )
    finally:
        bare.close()
    report = {
        "encoder_fps": round(m["encoder_fps"], 2),
        "bare_fps": round(m["bare_fps"], 2),
        "e2e_fps": round(m["e2e_fps"], 2),
        "ratio": round(m["e2e_fps"] / m["bare_fps"], 3),
        "encoder_ratio": round(m["e2e_fps"] / m["encoder_fps"], 3),
        # the bare model through PipelinedDetector.run (stages of consecutive batches overlapping)
        "bare_pipelined_fps": round(m["bare_pipelined_fps"], 2),
        "p50_ms": round(m["p50_ms"], 1),
        "p99_ms": round(m["p99_ms"], 1),
        "device": info["device"],
        "backbone": info["backbone"],
        "batch": batch,
        "frame_size": size_text,
        "worker_cpu_cores": _round(m["worker_cpu_cores"], 2),
        "detail": {
            "frames": frames,
            "frame_bytes_mean": round(sum(len(f.data) for _, f in items) / len(items)),
            "jpeg_quality": CAMERA_JPEG_QUALITY,
            "prompt_version": info["prompt_version"],
            "image_size": settings.image_size,
            "precision": settings.precision,
            # the worker's JPEG decode: on the model's device (QC_DEVICE_DECODE) or the CPU
            "device_decode": "on" if device_decode else "off",
            "database": m["database"],
            "rounds": m["rounds"],
            "latency_frames": m["latency_frames"],
            "latency_pace_fps": round(m["latency_pace_fps"], 1),
            "warmup_batches": WARMUP_BATCHES,
            "partitions": m["partitions"],
        },
    }
    if scaled is not None:
        # Same frames, a fresh broker and consumer group of ``workers`` processes; bare figures of
        # that run's rounds beside it, so the speed-up is read against the same time window.
        report["scaling"] = {
            "workers": workers,
            "partitions": scaled["partitions"],
            "e2e_fps": round(scaled["e2e_fps"], 2),
            "e2e_fps_one_worker": report["e2e_fps"],
            "speedup": round(scaled["e2e_fps"] / m["e2e_fps"], 3),
            # The same against the bare model timed in each run's own rounds: on a shared machine
            # whose load drifts between the two runs, this is the comparable figure.
            "speedup_vs_bare": round(
                (scaled["e2e_fps"] / scaled["bare_fps"]) / (m["e2e_fps"] / m["bare_fps"]), 3
            ),
            "bare_fps": round(scaled["bare_fps"], 2),
            "worker_cpu_cores": _round(scaled["worker_cpu_cores"], 2),
            "p50_ms": round(scaled["p50_ms"], 1),
            "p99_ms": round(scaled["p99_ms"], 1),
        }
    echo(
        f"image encoder {report['encoder_fps']:.1f} frames/s, bare model {report['bare_fps']:.1f} "
        f"frames/s, end to end {report['e2e_fps']:.1f} frames/s = {report['ratio']:.2f} x bare; "
        f"latency p50 {report['p50_ms']:.0f} ms, p99 {report['p99_ms']:.0f} ms; "
        f"worker CPU {report['worker_cpu_cores']} cores"
    )
    if scaled is not None:
        sc = report["scaling"]
        echo(
            f"{workers} workers: end to end {sc['e2e_fps']:.1f} frames/s = {sc['speedup']:.2f} x one "
            f"worker, {sc['speedup_vs_bare']:.2f} x against each run's bare model "
            f"({sc['partitions']} partitions, {sc['worker_cpu_cores']} cores)"
        )
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(report, indent=2) + "\n")
        echo(f"wrote {json_path}")
    return report
