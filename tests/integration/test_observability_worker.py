"""/healthz, /readyz and /metrics of a real `qc-stream worker` process (embedded broker, SQLite,
the tiny test backbone on the CPU), fed by the real `qc-stream camera` producer.

Waits are deadlines for the process to get somewhere, not speed assertions.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from qc_stream.devtools.broker import free_port
from qc_stream.devtools.local import models_dir_without_prompts

QC = str(Path(sys.executable).parent / "qc-stream")


def status(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=3) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return 0


def metric_total(port: int, name: str, **labels) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=3) as r:
        text = r.read().decode()
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


def wait_for(check, deadline_s: float, what: str, proc: subprocess.Popen):
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if proc.poll() is not None:
            pytest.fail(
                f"worker exited ({proc.returncode}) while waiting for {what}:\n{proc.stdout.read()[-3000:]}"
            )
        if check():
            return
        time.sleep(0.5)
    pytest.fail(f"no {what} within {deadline_s:.0f}s")


@pytest.fixture
def worker_env(own_broker, unique_app_id, sqlite_url, tmp_path):
    env = {
        **os.environ,
        "QC_KAFKA_BOOTSTRAP": own_broker.bootstrap,
        "QC_DATABASE_URL": sqlite_url,
        "QC_REDIS_URL": "off",
        "QC_BACKBONE": "qc-test-tiny",
        "QC_DEVICE": "cpu",
        "QC_APP_ID": unique_app_id,
        "QC_HEALTH_PORT": str(free_port()),
        "QC_GROUP_INSTANCE_ID": f"{unique_app_id}-pod-0",
        # The shipped prompt versions belong to qc-clip-tiny; the tiny test backbone runs untrained.
        "QC_MODELS_DIR": str(models_dir_without_prompts(tmp_path / "models")),
        "QC_PROMPT_VERSION": "untrained",
    }
    subprocess.run([QC, "db", "upgrade"], env=env, check=True, capture_output=True)
    return env


def test_running_worker_serves_probes_and_counts_frames_and_dead_letters(worker_env, tmp_path):
    port = int(worker_env["QC_HEALTH_PORT"])
    proc = subprocess.Popen(
        [QC, "worker", "--embedded"],
        env=worker_env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for(lambda: status(port, "/healthz") == 200, 120, "/healthz", proc)
        wait_for(
            lambda: status(port, "/readyz") == 200, 120, "readiness (partitions assigned)", proc
        )

        subprocess.run(
            [
                QC,
                "camera",
                "--source",
                "synthetic",
                "--product",
                "wood",
                "--count",
                "6",
                "--size",
                "64",
                "--camera-id",
                "cam-obs",
            ],
            env=worker_env,
            check=True,
            capture_output=True,
        )
        junk = tmp_path / "junk"
        junk.mkdir()
        (junk / "broken.jpg").write_bytes(b"this is not a JPEG")
        subprocess.run(
            [QC, "camera", "--source", str(junk), "--camera-id", "cam-junk", "--product", "wood"],
            env=worker_env,
            check=True,
            capture_output=True,
        )

        wait_for(
            lambda: metric_total(port, "qc_frames_processed_total", product="wood") >= 6,
            120,
            "6 inspected frames in /metrics",
            proc,
        )
        wait_for(
            lambda: metric_total(port, "qc_dead_letters_total") >= 1,
            60,
            "a dead letter in /metrics",
            proc,
        )
        assert metric_total(port, "qc_frames_processed_total", product="wood") == 6
        assert metric_total(port, "qc_batch_latency_seconds_count") >= 1
        assert metric_total(port, "qc_batch_size_frames_sum") >= 6
        assert status(port, "/healthz") == 200

        proc.send_signal(signal.SIGTERM)  # what Kubernetes sends after preStop
        assert proc.wait(timeout=90) == 0
        assert status(port, "/healthz") == 0  # server gone with the process
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
