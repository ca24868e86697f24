"""`scripts/diagnose_quality.py versions`: shipped prompt versions scored on the validation seed."""

from __future__ import annotations

import json
import subprocess
import sys

from qc_stream.dapo.checkpoint import active_version
from qc_stream.settings import REPO_ROOT, SHIPPED_MODELS_DIR
from qc_stream.synth.split import load_split

SCRIPT = REPO_ROOT / "scripts" / "diagnose_quality.py"
ACTIVE = active_version(SHIPPED_MODELS_DIR)  # the shipped one, made for the default backbone


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300
    )


def test_versions_scores_each_named_version_on_the_validation_seed():
    r = run("versions", ACTIVE, "--threads", "2")
    assert r.returncode == 0, r.stderr
    means = [line for line in r.stdout.splitlines() if "(validation seed) mean:" in line]
    assert len(means) == 1 and means[0].startswith(ACTIVE)
    scores = json.loads(means[0].split("mean:", 1)[1])
    # the shipped prompts localise and rank clearly better than chance on unseen images
    assert scores["pixel_auroc"] > 0.65 and scores["image_auroc[cls]"] > 0.65
    products = {line.split()[0] for line in r.stdout.splitlines() if line.startswith("  ")}
    assert products == set(load_split().held_out_products)  # one line per held-out product


def test_versions_needs_names_and_names_need_versions():
    assert run("versions").returncode != 0
    wrong = run("oracle", ACTIVE)
    assert wrong.returncode == 2 and "only with 'versions' or 'types'" in wrong.stderr


def test_types_compares_dapo_type_naming_with_the_handcrafted_distribution():
    r = run("types", ACTIVE, "--weights", "0", "1", "--threads", "2")
    assert r.returncode == 0, r.stderr
    (mean,) = [
        line for line in r.stdout.splitlines() if "type naming (validation seed) mean:" in line
    ]
    scores = json.loads(mean.split("mean:", 1)[1])
    assert set(scores) == {
        "type_f1[w=0]",
        "type_acc_defects[w=0]",
        "type_f1[w=1]",
        "type_acc_defects[w=1]",
        "type_f1[handcrafted alone]",
        "type_f1[handcrafted score, DAPO types]",
    }
    # 4-6 candidate types per product: both distributions name defects well above chance (< 0.25)
    assert scores["type_acc_defects[w=0]"] > 0.25 and scores["type_acc_defects[w=1]"] > 0.25
    assert all(0.0 <= v <= 1.0 for v in scores.values())


def test_types_needs_exactly_one_version_and_weights_in_range():
    assert run("types").returncode != 0
    assert run("types", ACTIVE, "--weights", "1.5").returncode == 2
