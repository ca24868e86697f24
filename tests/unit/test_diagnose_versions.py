"""`scripts/diagnose_quality.py versions`: shipped prompt versions scored on the validation seed."""

from __future__ import annotations

import json
import subprocess
import sys

from qc_stream.settings import REPO_ROOT
from qc_stream.synth.split import load_split

SCRIPT = REPO_ROOT / "scripts" / "diagnose_quality.py"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300)


def test_versions_scores_each_named_version_on_the_validation_seed():
    r = run("versions", "dapo-qc-clip-tiny-v3", "--threads", "2")
    assert r.returncode == 0, r.stderr
    means = [line for line in r.stdout.splitlines() if "(validation seed) mean:" in line]
    assert len(means) == 1 and means[0].startswith("dapo-qc-clip-tiny-v3")
    scores = json.loads(means[0].split("mean:", 1)[1])
    # the shipped prompts localise and rank clearly better than chance on unseen images
    assert scores["pixel_auroc"] > 0.65 and scores["image_auroc[cls]"] > 0.65
    products = {line.split()[0] for line in r.stdout.splitlines() if line.startswith("  ")}
    assert products == set(load_split().held_out_products)  # one line per held-out product


def test_versions_needs_names_and_names_need_versions():
    assert run("versions").returncode != 0
    wrong = run("oracle", "dapo-qc-clip-tiny-v3")
    assert wrong.returncode == 2 and "only with 'versions'" in wrong.stderr
