"""``qc-stream demo``: broker, database, Redis (if up), synthetic cameras, one worker, a live line, a summary.

Everything embedded: tansu on a free port, SQLite under the output folder unless QC_DATABASE_URL,
Redis only when reachable. The worker is the real one (``python -m qc_stream.stream.worker``),
writing overlay PNGs of rejected frames to ``OUT/overlays`` and keeping frames for review in
``OUT/frames``; the summary ends with how to log in to ``qc-stream review``.
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from qc_stream.errors import QcError
from qc_stream.settings import Settings

DEMO_PRODUCTS = ("pill", "screw", "wood", "tile", "bottle", "hex_nut", "carpet", "capsule")


@dataclass
class DemoPlan:
    frames: int = 120
    cameras: int = 3
    fps: float | None = 2.0  # per camera
    defect_rate: float = 0.25
    size: int = 256
    out: Path = Path("demo-out")
    timeout_s: float | None = None


@dataclass
class Truth:
    """Ground truth of the synthetic frames that were sent (frame_id -> defect type or None)."""

    defect: dict[str, str | None] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, meta, frame) -> None:
        with self.lock:
            self.defect[meta.frame_id] = frame.defect_type


def _echo(msg: str = "", end: str = "\n") -> None:
    sys.stdout.write(msg + end)
    sys.stdout.flush()


def run_demo(settings: Settings, plan: DemoPlan) -> dict:
    from qc_stream.devtools.broker import EmbeddedBroker
    from qc_stream.devtools.local import WorkerProcess, redis_reachable, worker_env
    from qc_stream.producers.camera import run_camera
    from qc_stream.producers.producer import FrameProducer
    from qc_stream.storage.db import make_engine, safe_url
    from qc_stream.storage.inspections import InspectionRepository
    from qc_stream.storage.migrate import upgrade
    from qc_stream.synth.source import synthetic
    from qc_stream.wire.topics import ensure_topics

    if plan.cameras < 1 or plan.frames < plan.cameras:
        raise QcError("--frames must be at least --cameras (and --cameras at least 1)")
    out = plan.out.resolve()
    overlays = out / "overlays"
    overlays.mkdir(parents=True, exist_ok=True)
    for old in overlays.glob("*.png"):  # our own output of an earlier run
        old.unlink()
    frames_dir = out / "frames"  # frames kept for the review station

    own_db = "QC_DATABASE_URL" not in os.environ
    if not own_db:
        db_url = settings.database_url
    else:
        db_file = out / "demo.db"
        for suffix in ("", "-wal", "-shm"):
            Path(str(db_file) + suffix).unlink(missing_ok=True)
        db_url = f"sqlite:///{db_file}"
        shutil.rmtree(frames_dir, ignore_errors=True)  # kept for the database just removed
    frames_dir.mkdir(exist_ok=True)
    upgrade(db_url)
    repo = InspectionRepository(make_engine(db_url))
    redis_url = settings.redis_url if redis_reachable(settings.redis_url) else None
    redis_prefix = f"qc-demo:{uuid.uuid4().hex[:6]}:"
    _echo(f"database  {safe_url(db_url)} (migrated)")
    _echo(
        f"redis     {redis_url + ' prefix ' + redis_prefix if redis_url else 'not reachable: running without cache'}"
    )

    per_cam = [
        plan.frames // plan.cameras + (i < plan.frames % plan.cameras) for i in range(plan.cameras)
    ]
    cams = [
        (f"cam-{i + 1}", f"line-{i % 2 + 1}", DEMO_PRODUCTS[i % len(DEMO_PRODUCTS)], n)
        for i, n in enumerate(per_cam)
    ]
    truth = Truth()
    with EmbeddedBroker(log_path=out / "broker.log") as broker:
        ensure_topics(broker.bootstrap, settings.topic_partitions)
        _echo(f"broker    {broker.bootstrap} (embedded tansu)")
        env = worker_env(
            broker.bootstrap,
            db_url,
            redis_url=redis_url,
            redis_prefix=redis_prefix,
            QC_OVERLAY_DIR=str(overlays),
            QC_FRAME_STORE_DIR=str(frames_dir),
            QC_HEALTH_PORT="-1",
        )
        worker = WorkerProcess(env, out / "worker.log")
        t_worker = time.monotonic()
        _echo(
            f"worker    started (backbone {settings.backbone}, batch {settings.batch_size}); log {out / 'worker.log'}"
        )
        _echo(
            "cameras   "
            + ", ".join(f"{c} {p} x{n}" for c, _, p, n in cams)
            + (f" at {plan.fps:g} fps each" if plan.fps else "")
        )

        errors: list[str] = []
        stop = threading.Event()  # Ctrl-C: cameras stop at their next frame
        producer = FrameProducer(settings.model_copy(update={"kafka_bootstrap": broker.bootstrap}))

        def camera(cam_id: str, line: str, product: str, n: int, seed: int) -> None:
            try:
                run_camera(
                    producer,
                    synthetic(
                        product, count=n, defect_rate=plan.defect_rate, seed=seed, size=plan.size
                    ),
                    camera_id=cam_id,
                    line_id=line,
                    product=product,
                    fps=plan.fps,
                    on_sent=truth.add,
                    should_stop=stop.is_set,
                )
            except Exception as e:  # reported below; the demo then stops
                errors.append(f"{cam_id}: {e}")

        threads = [
            threading.Thread(target=camera, args=(*c, i), daemon=True) for i, c in enumerate(cams)
        ]
        for t in threads:
            t.start()
        try:
            first_s = _follow(repo, plan, worker, t_worker, errors)
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=5)
            producer.close()
            worker.stop()
    summary = summarize(repo, truth)
    summary["first_result_s"] = first_s
    summary["overlays"] = sorted(str(p) for p in overlays.glob("*.png"))
    print_summary(summary, out)
    for line in review_instructions(db_url, frames_dir, own_db):
        _echo(line)
    return summary


DEMO_REVIEWER = "demo"


def review_instructions(db_url: str, frames_dir: Path, own_db: bool) -> list[str]:
    """How to open the review station on the demo's frames. On the demo's own SQLite database a
    ``demo`` engineer account is created with a fresh random password (for this demo database
    only); on a database given by QC_DATABASE_URL no account is made, the user adds one."""
    import secrets
    import shlex

    from qc_stream.storage.db import make_engine, safe_url

    env = f"QC_DATABASE_URL={shlex.quote(db_url)} QC_FRAME_STORE_DIR={shlex.quote(str(frames_dir))}"
    lines = [
        "",
        "review station: correct the verdicts of the kept frames in a browser:",
        f"  {env} qc-stream review --port 8090",
        "  then open http://127.0.0.1:8090/login",
    ]
    if not own_db:
        lines.append(
            f"  add an account first on {safe_url(db_url)}: "
            f"{env} qc-stream review user add NAME --role engineer"
        )
        return lines
    from qc_stream.review.passwords import hash_password
    from qc_stream.storage.reviews import UserRepository

    password = secrets.token_urlsafe(9)
    UserRepository(make_engine(db_url)).add(DEMO_REVIEWER, hash_password(password), "engineer")
    lines.append(
        f"  user {DEMO_REVIEWER!r}, password {password!r} (made for this demo database only; "
        "do not use it anywhere else)"
    )
    return lines


def _follow(repo, plan: DemoPlan, worker, t_worker: float, errors: list[str]) -> float | None:
    """The live progress line until every frame is stored; returns seconds to the first result."""
    from sqlalchemy import func, select

    from qc_stream.storage.orm import InspectionRow

    timeout = plan.timeout_s or 120 + plan.frames * 1.0
    deadline = time.monotonic() + timeout
    first_s = None
    tty = sys.stdout.isatty()
    last_print = 0.0
    while True:
        with repo.engine.connect() as c:
            verdicts = dict(
                c.execute(
                    select(InspectionRow.verdict, func.count()).group_by(InspectionRow.verdict)
                ).all()
            )
        done = sum(verdicts.values())
        now = time.monotonic()
        if done and first_s is None:
            first_s = now - t_worker
        if tty or now - last_print > 5 or done >= plan.frames:
            line = (
                f"inspected {done}/{plan.frames}  ok {verdicts.get('ok', 0)}  warn {verdicts.get('warn', 0)}  "
                f"reject {verdicts.get('reject', 0)}  [{now - t_worker:5.1f} s]"
            )
            _echo(("\r" + line) if tty else line, end="" if tty else "\n")
            last_print = now
        if done >= plan.frames:
            break
        if errors:
            raise QcError("camera failed: " + errors[0])
        if not worker.alive:
            raise QcError(f"the worker exited early; its log ends with:\n{worker.log_tail()}")
        if now > deadline:
            raise QcError(
                f"only {done} of {plan.frames} frames inspected after {timeout:.0f} s; see {worker.log_path}"
            )
        time.sleep(0.3)
    if tty:
        _echo()
    return first_s


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    s = sorted(values)
    k = (len(s) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def summarize(repo, truth: Truth) -> dict:
    from sqlalchemy import select

    from qc_stream.storage.orm import InspectionRow

    with repo.engine.connect() as c:
        rows = c.execute(
            select(
                InspectionRow.frame_id,
                InspectionRow.product,
                InspectionRow.verdict,
                InspectionRow.defect_type,
                InspectionRow.processed_at,
                InspectionRow.latency_ms,
                InspectionRow.prompt_version,
                InspectionRow.regions,
            )
        ).all()
    per_product: dict[str, Counter] = defaultdict(Counter)
    per_type: Counter = Counter()
    caught = missed = false_alarms = 0
    for r in rows:
        per_product[r.product]["frames"] += 1
        per_product[r.product][r.verdict] += 1
        flagged = r.verdict != "ok"
        if flagged and r.regions:
            per_product[r.product]["with region"] += 1
        if flagged and r.defect_type:
            per_type[(r.product, r.defect_type)] += 1
        actual = truth.defect.get(r.frame_id)
        if actual is not None:
            caught += flagged
            missed += not flagged
        else:
            false_alarms += flagged
    times = sorted(r.processed_at for r in rows)
    span = (times[-1] - times[0]).total_seconds() if len(times) > 1 else 0.0
    latencies = [r.latency_ms for r in rows]
    return {
        "frames": len(rows),
        "fps": (len(rows) - 1) / span if span > 0 else 0.0,
        "p50_ms": percentile(latencies, 0.5),
        "p99_ms": percentile(latencies, 0.99),
        "per_product": {p: dict(c) for p, c in sorted(per_product.items())},
        "per_defect_type": {f"{p}/{t}": n for (p, t), n in per_type.most_common()},
        "truth": {
            "defective_sent": sum(v is not None for v in truth.defect.values()),
            "caught": caught,
            "missed": missed,
            "false_alarms": false_alarms,
        },
        "prompt_versions": sorted({r.prompt_version for r in rows}),
    }


def print_summary(s: dict, out: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    t = Table(
        title=f"qc-stream demo: {s['frames']} frames, {s['fps']:.1f} fps, "
        f"latency p50 {s['p50_ms']:.0f} ms / p99 {s['p99_ms']:.0f} ms"
    )
    for col in ("product", "frames", "ok", "warn", "reject", "flagged with region"):
        t.add_column(col, justify="left" if col == "product" else "right")
    for p, c in s["per_product"].items():
        t.add_row(
            p,
            str(c.get("frames", 0)),
            str(c.get("ok", 0)),
            str(c.get("warn", 0)),
            str(c.get("reject", 0)),
            str(c.get("with region", 0)),
        )
    console.print(t)
    if s["per_defect_type"]:
        d = Table(title="defects found (warn + reject) per product and type")
        d.add_column("product/defect type")
        d.add_column("count", justify="right")
        for k, n in s["per_defect_type"].items():
            d.add_row(k, str(n))
        console.print(d)
    tr = s["truth"]
    console.print(
        f"ground truth: {tr['defective_sent']} defective frames sent, {tr['caught']} flagged, {tr['missed']} missed; "
        f"{tr['false_alarms']} false alarms on normal frames"
    )
    console.print(
        f"prompt version(s): {', '.join(s['prompt_versions'])}; "
        f"first result {s['first_result_s'] or 0:.1f} s after the worker started"
    )
    console.print(f"overlays of rejected frames: {len(s['overlays'])} PNG(s) in {out / 'overlays'}")
