"""Register a defect type while a worker is inspecting a stream: the zero-shot refresh makes a new
prompt version, qc.model-updates announces it, the running worker swaps between batches, and
later results name the new type and record the new prompt_version. Frames in flight during the
swap are neither lost nor counted twice.

Real broker (its own), real Postgres, a real worker subprocess (the streaming engineer's
``qc_stream.stream.worker``), tiny random-weight backbone (qc-test-tiny): it detects nothing, so
"names the new type" means the type is among the candidate types the detector scored.
"""

from __future__ import annotations

import threading
import time
import urllib.request

from sqlalchemy import func, select

from qc_stream.devtools.broker import EmbeddedBroker, free_port
from qc_stream.devtools.local import WorkerProcess, read_topic, wait_for_rows, worker_env
from qc_stream.producers.camera import run_camera
from qc_stream.producers.producer import FrameProducer
from qc_stream.registry.events import EventPublisher
from qc_stream.registry.service import DefectRegistry
from qc_stream.registry.versions import PromptVersions
from qc_stream.settings import SHIPPED_MODELS_DIR, load_settings
from qc_stream.storage.db import make_engine
from qc_stream.storage.defect_types import DefectTypeRepository
from qc_stream.storage.inspections import InspectionRepository
from qc_stream.storage.migrate import upgrade
from qc_stream.storage.model_versions import ModelVersionRepository
from qc_stream.storage.orm import DefectCountRow, InspectionRow
from qc_stream.synth.source import synthetic
from qc_stream.wire.codec import headers_to_meta
from qc_stream.wire.topics import FRAMES, ensure_topics

BEFORE, DURING, TOPUP = 40, 60, 10  # frames before the registration, while it happens, then top-ups
NEW_TYPE = "Delamination"


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
            return r.status == 200
    except OSError:
        return False


def _seed_models(tmp_path):
    from qc_stream.dapo.backbone import load_backbone
    from qc_stream.dapo.checkpoint import save_prompt_version
    from qc_stream.dapo.model import DapoModel

    models = tmp_path / "models"
    models.mkdir()
    (models / "backbones").symlink_to(SHIPPED_MODELS_DIR / "backbones")
    model = DapoModel(
        load_backbone("qc-test-tiny", models_dir=models), vocabulary=["crack", "scratch"]
    )
    seed = save_prompt_version(
        model, models, products={"pill": ["crack", "scratch"]}, activate=True
    ).name
    return models, seed


def _rows_with(engine, prompt_version: str) -> int:
    with engine.connect() as c:
        return c.execute(
            select(func.count())
            .select_from(InspectionRow)
            .where(InspectionRow.prompt_version == prompt_version)
        ).scalar_one()


def test_register_swaps_running_worker_without_losing_or_double_counting(
    pg_url, unique_app_id, tmp_path
):
    upgrade(pg_url)
    engine = make_engine(pg_url)
    repo = InspectionRepository(engine)
    models, seed = _seed_models(tmp_path)
    with EmbeddedBroker() as broker:
        ensure_topics(broker.bootstrap, 2)
        port = free_port()
        env = worker_env(
            broker.bootstrap,
            pg_url,
            app_id=unique_app_id,
            QC_BACKBONE="qc-test-tiny",
            QC_MODELS_DIR=str(models),
            QC_BATCH_SIZE=4,
            QC_HEALTH_PORT=port,
        )
        worker = WorkerProcess(env, tmp_path / "worker.log")
        settings = load_settings(
            kafka_bootstrap=broker.bootstrap,
            database_url=pg_url,
            models_dir=models,
            backbone="qc-test-tiny",
            redis_url="off",
        )
        defects = DefectTypeRepository(engine)
        registry = DefectRegistry(defects, publisher=EventPublisher(broker.bootstrap))
        versions = PromptVersions(
            settings,
            defects=defects,
            versions=ModelVersionRepository(engine),
            publisher=EventPublisher(broker.bootstrap),
        )
        try:
            deadline = time.monotonic() + 90
            while not _ready(port):
                assert worker.alive and time.monotonic() < deadline, worker.log_tail()
                time.sleep(0.3)

            producer = FrameProducer(load_settings(kafka_bootstrap=broker.bootstrap))
            run_camera(
                producer,
                synthetic("pill", count=BEFORE, defect_rate=0.3, seed=1),
                camera_id="cam-1",
                line_id="line-1",
                product="pill",
            )
            wait_for_rows(
                repo, BEFORE // 2, 120, workers=[worker], poll_s=0.05
            )  # the stream is under way

            # Keep frames flowing while the new type is registered and the new version announced.
            camera = threading.Thread(
                target=run_camera,
                args=(producer, synthetic("pill", count=DURING, defect_rate=0.3, seed=2)),
                kwargs=dict(camera_id="cam-1", line_id="line-1", product="pill", fps=25),
            )
            camera.start()
            assert registry.add("pill", NEW_TYPE, "layers peel apart").published
            outcome = versions.zero_shot_refresh()
            assert outcome.created and outcome.published
            new = outcome.version
            camera.join(60)
            n = BEFORE + DURING
            # Until the worker has applied the update, keep the line running (a real camera would).
            seed_no = 3
            while not _rows_with(engine, new):
                assert seed_no < 40 and worker.alive, worker.log_tail()
                run_camera(
                    producer,
                    synthetic("pill", count=TOPUP, seed=seed_no),
                    camera_id="cam-1",
                    line_id="line-1",
                    product="pill",
                )
                n += TOPUP
                seed_no += 1
                wait_for_rows(repo, n, 120, workers=[worker])
            producer.close()

            assert wait_for_rows(repo, n, 120, workers=[worker]) == n
            time.sleep(1.0)  # a replayed batch would land now; it must not add rows or counts
            sent = {
                headers_to_meta(r.headers).frame_id
                for r in read_topic(broker.bootstrap, FRAMES, expected=n)
            }
        finally:
            worker.stop()
            registry.close()
            versions.close()

    with engine.connect() as c:
        rows = c.execute(
            select(
                InspectionRow.frame_id, InspectionRow.prompt_version, InspectionRow.defect_probs
            ).order_by(InspectionRow.captured_at)
        ).all()
        frames_counted = c.execute(select(func.sum(DefectCountRow.frames))).scalar_one()
    assert (
        len(sent) == n and {r.frame_id for r in rows} == sent and len(rows) == n
    )  # none lost, none twice
    assert frames_counted == n  # root-cause counts moved once per frame

    used = [r.prompt_version for r in rows]
    assert set(used) == {seed, new}, "the worker should have swapped mid-stream"
    first_new = used.index(new)
    assert first_new > 0 and all(
        v == new for v in used[first_new:]
    )  # one camera, in order: a clean switch
    assert all(NEW_TYPE in r.defect_probs for r in rows if r.prompt_version == new)
    assert all(NEW_TYPE not in r.defect_probs for r in rows if r.prompt_version == seed)
