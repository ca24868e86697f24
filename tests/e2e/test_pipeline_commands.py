"""`qc-stream demo` and `qc-stream bench` end to end, as a user runs them (small sizes, tiny backbone)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from sqlalchemy import create_engine, text

TINY = {"QC_BACKBONE": "qc-test-tiny", "QC_DEVICE": "cpu", "QC_REDIS_URL": "off"}


pytestmark = pytest.mark.usefixtures("untrained_models")


def cli(*args, env=None, timeout=300):
    env = {k: v for k, v in os.environ.items() if k != "QC_DATABASE_URL"} | TINY | (env or {})
    return subprocess.run(
        [sys.executable, "-c", "from qc_stream.cli.main import run; run()", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def test_demo_runs_the_whole_pipeline_and_summarises(tmp_path):
    out = tmp_path / "demo-out"
    r = cli("demo", "--frames", "12", "--cameras", "2", "--fps", "0", "--out", str(out))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "inspected 12/12" in r.stdout
    assert "qc-stream demo: 12 frames" in r.stdout
    assert "Traceback" not in r.stderr
    with create_engine(f"sqlite:///{out / 'demo.db'}").connect() as c:
        assert c.execute(text("select count(*) from inspections")).scalar() == 12
        assert c.execute(text("select sum(frames) from defect_counts")).scalar() == 12
        assert c.execute(text("select count(distinct product) from inspections")).scalar() == 2
    assert (out / "overlays").is_dir()


def test_bench_reports_bare_and_end_to_end_in_one_json(tmp_path):
    path = tmp_path / "bench.json"
    r = cli(
        "bench",
        "--frames",
        "40",
        "--batch-size",
        "8",
        "--frame-size",
        "160x128",
        "--workers",
        "2",
        "--json",
        str(path),
    )
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads(path.read_text())
    assert {
        "encoder_fps",
        "bare_fps",
        "e2e_fps",
        "ratio",
        "p50_ms",
        "p99_ms",
        "device",
        "backbone",
        "batch",
    } <= set(report)
    assert report["bare_fps"] > 0 and report["e2e_fps"] > 0 and report["batch"] == 8
    # the encoder is timed in every round and the headline is their aggregate (no speed comparison:
    # on a tiny backbone both take milliseconds, so their order is noise; speed goes in benchmarks)
    per_round = [r["encoder_fps"] for r in report["detail"]["rounds"]]
    assert per_round and min(per_round) - 0.01 <= report["encoder_fps"] <= max(per_round) + 0.01
    assert abs(report["ratio"] - report["e2e_fps"] / report["bare_fps"]) < 0.01
    assert 0 < report["p50_ms"] <= report["p99_ms"]
    assert report["backbone"].startswith("qc-test-tiny@") and report["device"].startswith("cpu")
    assert json.loads(r.stdout.strip().splitlines()[-1]) == report
    # realistic frames: the asked size, and the worker's CPU use over the end-to-end rounds
    assert report["frame_size"] == "160x128" and report["worker_cpu_cores"] > 0
    # --workers 2: a second run with two workers in one group, against the one-worker figure
    scaling = report["scaling"]
    assert scaling["workers"] == 2 and scaling["partitions"] >= 2
    assert scaling["e2e_fps"] > 0 and scaling["e2e_fps_one_worker"] == report["e2e_fps"]
    assert abs(scaling["speedup"] - scaling["e2e_fps"] / report["e2e_fps"]) < 0.01
    per_bare = (scaling["e2e_fps"] / scaling["bare_fps"]) / (report["e2e_fps"] / report["bare_fps"])
    assert abs(scaling["speedup_vs_bare"] - per_bare) < 0.01
    bad = cli("bench", "--frame-size", "wide")
    assert bad.returncode == 2 and "--frame-size must be" in bad.stderr
