"""The review station in a real browser: headless Chromium from the system packages (Debian's
chromium + chromium-driver, driven by Selenium with the driver path given, so Selenium Manager
downloads nothing) against `qc-stream review` on a queue made by a real worker (embedded broker,
Postgres, the tiny backbone). An operator logs in, works three frames with the keyboard (confirm,
override the verdict, override the type); the test checks the reviews rows, the review
dashboard's SQL and the export folder, saves a screenshot of the queue as a test artifact
(out/test-artifacts/review-queue.png, or $QC_TEST_ARTIFACTS; docs/review-queue.png is a copy)
and prints the time per review action (keypress -> the next frame's page loaded)."""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, text

from qc_stream.dashboards import queries as q
from qc_stream.dashboards.macros import expand
from qc_stream.devtools.broker import EmbeddedBroker
from qc_stream.devtools.local import WorkerProcess, models_dir_without_prompts, worker_env
from qc_stream.producers.camera import run_camera
from qc_stream.producers.producer import FrameProducer
from qc_stream.registry.service import DefectRegistry
from qc_stream.review.export import export_reviewed
from qc_stream.settings import load_settings
from qc_stream.storage.db import make_engine
from qc_stream.storage.defect_types import DefectTypeRepository
from qc_stream.storage.frame_store import FrameStore
from qc_stream.storage.migrate import upgrade
from qc_stream.storage.orm import RetainedFrameRow, ReviewRow
from qc_stream.storage.reviews import ReviewRepository
from qc_stream.synth.source import synthetic
from qc_stream.wire.topics import ensure_topics
from tests.support.review import PASSWORD, add_user
from tests.support.servers import free_port, port_accepts

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
# A test artifact, not a tracked file: the committed docs/review-queue.png is a copy of one run.
ARTIFACTS = Path(
    os.environ.get(
        "QC_TEST_ARTIFACTS", Path(__file__).resolve().parents[2] / "out" / "test-artifacts"
    )
)
SCREENSHOT = ARTIFACTS / "review-queue.png"
QC_STREAM = Path(sys.executable).with_name("qc-stream")


def wait_for(predicate, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    assert Path(CHROMEDRIVER).exists(), "apt-get install chromium chromium-driver (.ci/run does)"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,800"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def test_operator_works_three_frames_from_a_real_worker(
    browser, pg_url, tmp_path, tmp_path_factory, unique_app_id
):
    from selenium.webdriver.common.by import By

    upgrade(pg_url)
    engine = make_engine(pg_url)
    DefectRegistry(DefectTypeRepository(engine)).add("pill", "crack")
    add_user(engine, "olga", "operator")
    store = FrameStore(tmp_path / "frames")
    store.root.mkdir()
    models = models_dir_without_prompts(tmp_path_factory.mktemp("models"))

    with EmbeddedBroker() as broker:
        ensure_topics(broker.bootstrap, 4)
        worker = WorkerProcess(
            worker_env(
                broker.bootstrap,
                pg_url,
                app_id=unique_app_id,
                QC_BACKBONE="qc-test-tiny",
                QC_MODELS_DIR=models,
                QC_PROMPT_VERSION="untrained",
                QC_FRAME_STORE_DIR=store.root,
                QC_REVIEW_SAMPLE_OK="1",
            ),
            tmp_path / "worker.log",
        )
        try:
            producer = FrameProducer(load_settings(kafka_bootstrap=broker.bootstrap))
            run_camera(
                producer,
                synthetic("pill", count=3, defect_rate=0.5, seed=3),
                camera_id="cam-1",
                line_id="line-1",
                product="pill",
            )
            producer.close()

            def kept():
                with engine.connect() as c:
                    return len(c.execute(select(RetainedFrameRow.frame_id)).all()) == 3

            wait_for(kept, 240, "3 kept frames")  # a loaded 2-core CI box
        finally:
            worker.stop()

    port = free_port()
    env = {
        **os.environ,
        "QC_DATABASE_URL": pg_url,
        "QC_REDIS_URL": "off",
        "QC_FRAME_STORE_DIR": str(store.root),
        "QC_KAFKA_BOOTSTRAP": "127.0.0.1:1",
    }
    server = subprocess.Popen(
        [str(QC_STREAM), "review", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "review.log", "w"),  # noqa: SIM115
    )
    try:
        wait_for(lambda: port_accepts("127.0.0.1", port), 30, "the review station")
        base = f"http://127.0.0.1:{port}"
        b = browser
        b.get(base + "/")
        assert b.current_url == base + "/login"
        b.find_element(By.ID, "name").send_keys("olga")
        b.find_element(By.ID, "password").send_keys(PASSWORD)
        b.find_element(By.ID, "login").click()
        wait_for(lambda: b.find_elements(By.ID, "queue-size"), 10, "the queue")
        assert b.find_element(By.ID, "queue-size").text == "3"
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        b.save_screenshot(str(SCREENSHOT))

        body = b.find_element(By.TAG_NAME, "body")
        body.send_keys("s")  # open the newest frame
        wait_for(lambda: b.find_elements(By.ID, "frame-id"), 10, "the first frame")
        images = b.find_elements(By.CSS_SELECTOR, ".frame img")
        assert len(images) == 2 and all(
            b.execute_script("return arguments[0].naturalWidth", img) > 0 for img in images
        )

        order, timings = [], []
        for key in ("c", "o", "1"):  # confirm, verdict -> ok, type -> crack (first type)
            frame_id = b.find_element(By.ID, "frame-id").text
            order.append(frame_id)
            t0 = time.perf_counter()
            b.find_element(By.TAG_NAME, "body").send_keys(key)

            def moved(frame_id=frame_id):
                ids = b.find_elements(By.ID, "frame-id")
                try:
                    return (ids and ids[0].text != frame_id) or b.find_elements(By.ID, "empty")
                except Exception:  # the old page went away mid-read
                    return False

            wait_for(moved, 10, f"the page after {key!r}")
            timings.append(time.perf_counter() - t0)
        assert b.find_elements(By.ID, "empty"), "the queue is empty after three decisions"
    finally:
        server.terminate()
        server.wait(10)

    with engine.connect() as c:
        rows = c.execute(select(ReviewRow.__table__).order_by(ReviewRow.id)).all()
    assert [r.frame_id for r in rows] == order
    assert [r.action for r in rows] == ["confirm", "verdict", "type"]
    assert rows[0].verdict == rows[0].original_verdict and rows[0].agrees
    assert rows[1].verdict == "ok" and rows[1].defect_type is None
    assert rows[2].defect_type == "crack" and rows[2].verdict in ("warn", "reject")
    assert {r.reviewer for r in rows} == {"olga"}

    # The review dashboard's agreement panel counts these three decisions (Grafana's macros
    # expanded by qc_stream.dashboards.macros, as in the dashboard SQL tests).
    now = datetime.now(UTC)
    sql, params = expand(
        q.REVIEW_AGREEMENT,
        time_from=now - timedelta(hours=1),
        time_to=now + timedelta(minutes=1),
        variables={"line": ["line-1"], "product": ["pill"]},
    )
    with engine.connect() as c:
        agreement = c.execute(text(sql), params).all()
    assert [(a.product, a.reviewed, a.agreed) for a in agreement] == [
        ("pill", 3, sum(r.agrees for r in rows))
    ]

    out = tmp_path / "examples"
    export_reviewed(ReviewRepository(engine), DefectTypeRepository(engine).list(), store, out)
    paths = {p.relative_to(out).parts[:2]: p for p in out.rglob("*.*")}
    assert ("pill", "good") in paths and ("pill", "crack") in paths
    good = {p.name for p in (out / "pill" / "good").iterdir()}
    crack = {p.name for p in (out / "pill" / "crack").iterdir()}
    names = ReviewRepository(engine)
    assert Path(names.detail(order[1]).retained.path).name in good
    assert Path(names.detail(order[2]).retained.path).name in crack

    print(
        f"\ntime per review action (keypress -> next frame loaded): "
        f"mean {statistics.mean(timings) * 1000:.0f} ms, "
        f"max {max(timings) * 1000:.0f} ms over {len(timings)} actions; "
        f"screenshot {SCREENSHOT}"
    )
