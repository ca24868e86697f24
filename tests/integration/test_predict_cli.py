"""`qc-stream predict` end to end (a real subprocess) on the tiny random-weight test backbone.

No prompt version exists in the temporary models folder, so the detector runs untrained DAPO
prompts through the explicit opt-in QC_PROMPT_VERSION=untrained (without it predict stops): the
numbers are meaningless, the shape of every line is what is checked.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
CONTRACT_KEYS = {
    "image",
    "anomaly_score",
    "verdict",
    "defect_type",
    "defect_probs",
    "regions",
    "model_version",
    "prompt_version",
    "prompt_version_source",
    "thresholds",
    "candidate_words",
}
REGION_KEYS = {"defect_type", "area_px", "bbox", "score", "mean_score", "centroid", "outline"}


@pytest.fixture
def tiny_env(tmp_path):
    models = tmp_path / "models"
    shutil.copytree(
        REPO / "models" / "backbones" / "qc-test-tiny", models / "backbones" / "qc-test-tiny"
    )
    env = dict(os.environ)
    env.update(
        {
            "QC_BACKBONE": "qc-test-tiny",
            "QC_MODELS_DIR": str(models),
            "QC_DEVICE": "cpu",
            # Every image counts as suspicious and every warm pixel as a region, so regions are exercised.
            "QC_WARN_THRESHOLD": "0",
            "QC_REGION_THRESHOLD": "0.01",
            "QC_REGION_MIN_AREA_PX": "4",
            "OMP_NUM_THREADS": "2",
        }
    )
    env["QC_PROMPT_VERSION"] = "untrained"
    return env


def _write_images(d: Path) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    p = d / "rgb.jpg"
    Image.fromarray(rng.integers(0, 255, (90, 120, 3), dtype=np.uint8)).save(p)
    paths.append(p)
    p = d / "gray16.png"
    Image.fromarray((rng.random((64, 64)) * 65535).astype(np.uint16)).save(p)
    paths.append(p)
    p = d / "rgba.png"
    Image.fromarray(rng.integers(0, 255, (48, 80, 4), dtype=np.uint8), mode="RGBA").save(p)
    paths.append(p)
    junk = d / "junk.jpg"
    junk.write_bytes(b"this is not a JPEG")
    tiny = d / "tiny.png"
    Image.new("RGB", (8, 8)).save(tiny)
    return paths, junk, tiny


def _run(args, env, cwd=None):
    qc_stream = Path(sys.executable).parent / "qc-stream"  # the installed console script
    return subprocess.run(
        [str(qc_stream), *args], env=env, capture_output=True, text=True, timeout=300, cwd=cwd
    )


def test_predict_prints_contract_lines_and_per_file_errors(tmp_path, tiny_env):
    good, junk, tiny = _write_images(tmp_path)
    missing = tmp_path / "nope.png"
    overlays = tmp_path / "overlays"
    order = [good[0], junk, good[1], missing, good[2], tiny]
    proc = _run(
        [
            "predict",
            *map(str, order),
            "--product",
            "pill",
            "--overlay-dir",
            str(overlays),
            "--batch-size",
            "2",
        ],
        tiny_env,
    )
    assert proc.returncode == 1, proc.stderr  # some files failed
    lines = [json.loads(x) for x in proc.stdout.splitlines()]
    assert [x["image"] for x in lines] == [str(p) for p in order]  # input order, errors in place

    by_image = {x["image"]: x for x in lines}
    for p in (junk, missing, tiny):
        assert set(by_image[str(p)]) == {"image", "error"}
    assert "not a decodable image" in by_image[str(junk)]["error"]
    assert by_image[str(missing)]["error"] == "no such file"
    assert "too small" in by_image[str(tiny)]["error"]
    for p in (junk, missing, tiny):
        assert f"error: {p}:" in proc.stderr
    assert "Traceback" not in proc.stderr

    from qc_stream.domain.catalog import PRODUCTS

    for p in good:
        line = by_image[str(p)]
        assert CONTRACT_KEYS <= set(line)
        assert 0.0 <= line["anomaly_score"] <= 1.0
        assert line["verdict"] in ("warn", "reject")  # warn threshold 0
        assert (line["prompt_version"], line["prompt_version_source"]) == (
            "untrained",
            "QC_PROMPT_VERSION",
        )
        assert line["model_version"].startswith("qc-test-tiny@")
        # --product pill restricts the defect types to pill's
        assert set(line["defect_probs"]) == set(PRODUCTS["pill"].defects)
        assert sum(line["defect_probs"].values()) == pytest.approx(1.0, abs=1e-3)
        assert line["defect_type"] in PRODUCTS["pill"].defects
        w, h = Image.open(p).size
        assert line["regions"], "a region threshold of 0.01 must find some region"
        t = line["thresholds"]
        assert (t["warn"], t["source"]) == (0.0, "global")  # QC_WARN_THRESHOLD, no calibration
        assert (t["region"], t["region_source"]) == (0.01, "setting")  # QC_REGION_THRESHOLD
        assert line["candidate_words"] == list(PRODUCTS["pill"].defects)
        for r in line["regions"]:
            assert set(r) == REGION_KEYS
            x0, y0, x1, y1 = r["bbox"]
            assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
            assert x0 <= r["centroid"][0] < x1 and y0 <= r["centroid"][1] < y1
            assert all(x0 <= x < x1 and y0 <= y < y1 for x, y in r["outline"])
            assert 0 < r["mean_score"] <= r["score"]
            assert 4 <= r["area_px"] <= (x1 - x0) * (y1 - y0)
            assert r["defect_type"] in PRODUCTS["pill"].defects
        overlay = Image.open(line["overlay"])
        assert overlay.size == (w, h) and Path(line["overlay"]).parent == overlays
    assert "QC_PROMPT_VERSION=untrained: random prompts" in proc.stderr  # the loud warning


def test_predict_without_a_prompt_version_stops_with_the_train_command(tmp_path, tiny_env):
    """No QC_PROMPT_VERSION, no ACTIVE, no database: one line naming `qc-stream train`, exit 2,
    nothing on stdout, and no database file made in the working folder by asking."""
    good, _, _ = _write_images(tmp_path)
    env = dict(tiny_env)
    del env["QC_PROMPT_VERSION"]
    env.pop("QC_DATABASE_URL", None)  # the default sqlite:///qc-stream.db, in the working folder
    proc = _run(["predict", str(good[0])], env, cwd=tmp_path)
    assert proc.returncode == 2 and proc.stdout == ""
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: no prompt version for backbone qc-test-tiny")
    assert "`qc-stream train --dataset PATH --backbone qc-test-tiny" in last
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "qc-stream.db").exists()


def test_predict_unknown_product_is_one_line_error_unless_generic(tmp_path, tiny_env):
    good, _, _ = _write_images(tmp_path)
    proc = _run(["predict", str(good[0]), "--product", "banana"], tiny_env)
    assert proc.returncode == 2 and proc.stdout == ""
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: unknown product 'banana'") and "QC_GENERIC_PRODUCTS" in last
    assert "Traceback" not in proc.stderr

    env = dict(tiny_env, QC_GENERIC_PRODUCTS="banana")
    proc = _run(["predict", str(good[0]), "--product", "banana"], env)
    assert proc.returncode == 0, proc.stderr
    (line,) = [json.loads(x) for x in proc.stdout.splitlines()]
    from qc_stream.domain.catalog import DEFECT_TYPES

    assert set(line["defect_probs"]) == set(DEFECT_TYPES)  # the generic vocabulary
    assert "overlay" not in line


def test_predict_folder_tree_and_glob_write_a_run_folder(tmp_path, tiny_env):
    import csv

    tree = tmp_path / "shots"
    (tree / "line-a" / "deep").mkdir(parents=True)
    rng = np.random.default_rng(1)
    for rel in ("a.png", "line-a/b.jpg", "line-a/deep/c.png"):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(tree / rel)
    (tree / "line-a" / "junk.png").write_bytes(b"not an image")
    (tree / ".hidden.png").write_bytes(b"skipped")
    run = tmp_path / "run"
    proc = _run(["predict", str(tree), "-p", "pill", "--output", str(run)], tiny_env)
    assert proc.returncode == 1, proc.stderr  # the junk file failed, the rest did not
    rows = list(csv.DictReader((run / "results.csv").open()))
    assert len(rows) == 4 and [r["image"] for r in rows] == sorted(r["image"] for r in rows)
    errors = [r for r in rows if r["error"]]
    assert len(errors) == 1 and errors[0]["image"].endswith("junk.png")
    assert all(r["verdict"] and r["threshold_source"] == "global" for r in rows if not r["error"])
    assert all(r["prompt_version_source"] == "QC_PROMPT_VERSION" for r in rows if not r["error"])
    lines = [json.loads(x) for x in (run / "results.jsonl").read_text().splitlines()]
    assert lines == [json.loads(x) for x in proc.stdout.splitlines()]
    overlays = sorted(p.name for p in (run / "overlays").iterdir())
    assert overlays == ["a.overlay.png", "b.overlay.png", "c.overlay.png"]
    assert "images/s" in proc.stderr.strip().splitlines()[-2]  # closing line before "1 of 4 failed"

    proc = _run(["predict", str(tree / "**" / "*.png"), "-p", "pill"], tiny_env)
    names = [Path(json.loads(x)["image"]).name for x in proc.stdout.splitlines()]
    assert names == ["a.png", "c.png", "junk.png"]  # ** is recursive; hidden files never match
    proc = _run(["predict", str(tmp_path / "nothing-*.png")], tiny_env)
    assert proc.returncode == 1
    assert json.loads(proc.stdout)["error"] == "no file matches this pattern"


def test_predict_bad_settings_is_one_line_error(tmp_path, tiny_env):
    good, _, _ = _write_images(tmp_path)
    env = dict(tiny_env, QC_BACKBONE="no-such-backbone")
    proc = _run(["predict", str(good[0])], env)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: unknown backbone")
    assert "Traceback" not in proc.stderr
