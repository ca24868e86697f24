"""`qc-stream train --dataset` and `qc-stream eval --dataset` on tiny datasets and the tiny test
backbone: a loadable, registered version; resume after an interruption; every metric in the
JSON/Markdown in both vocabulary modes; a malformed dataset stops before anything is written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from qc_stream.dapo import load_backbone, load_prompt_version
from qc_stream.evaluation.dataset_eval import METRICS
from qc_stream.training.dataset_train import TrainRequest, train_on_dataset
from tests.support.dataset_layouts import write_layout

TINY = str(Path(__file__).resolve().parents[2] / "models" / "backbones" / "qc-test-tiny")


def _cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "QC_DATABASE_URL": f"sqlite:///{tmp_path / 'qc.db'}",
        "QC_MODELS_DIR": str(tmp_path / "models"),
        "QC_BACKBONE": TINY,
        "QC_KAFKA_BOOTSTRAP": "127.0.0.1:1",
    }
    return subprocess.run(
        [sys.executable, "-c", "from qc_stream.cli.main import run; run()", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One epoch of the reference recipe on a tiny folder dataset, then registered."""
    tmp = tmp_path_factory.mktemp("train")
    data = write_layout(tmp / "own", "folder")
    assert _cli(tmp, "db", "upgrade").returncode == 0
    proc = _cli(
        tmp, "train", "--dataset", str(data), "--epochs", "1", "--version", "t1",
        "--json", str(tmp / "train.json"),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return tmp, data, proc


def test_train_writes_a_loadable_registered_version(trained):
    tmp, data, proc = trained
    summary = json.loads((tmp / "train.json").read_text())
    assert summary["version"] == "t1" and not summary["active"]
    version = load_prompt_version("t1", load_backbone(TINY), tmp / "models")
    train_config = version.manifest["train_config"]
    assert train_config["dataset"]["layout"] == "folder"
    assert train_config["dataset"]["products"] == ["carpet", "pill"]
    assert len(train_config["dataset"]["file_list_sha256"]) == 64
    assert train_config["recipe"]["name"] == "reference"
    assert train_config["recipe"]["schedule"] == "joint"
    assert train_config["backbone_id"] == version.manifest["backbone"]["backbone_id"]
    assert version.manifest["config"]["n_deep_visual"] == 4  # deep visual prompts on
    assert sorted(version.words) == ["crack", "dirt", "hole", "stain large"]
    assert version.products["carpet"] == ["hole", "stain large"]
    assert (Path(summary["run_dir"]) / "checkpoint.pt").is_file()
    listed = _cli(tmp, "models", "list", "--format", "json")
    rows = {r["version"]: r for r in json.loads(listed.stdout)}
    assert "t1" in rows and rows["t1"]["active"] is False


def test_eval_dataset_writes_every_metric_in_both_vocabularies(trained):
    tmp, data, _ = trained
    for vocabulary in ("dataset", "product"):
        out, md = tmp / f"eval-{vocabulary}.json", tmp / f"eval-{vocabulary}.md"
        proc = _cli(
            tmp, "eval", "--dataset", str(data), "--prompt-version", "t1",
            "--vocabulary", vocabulary, "--json", str(out), "--markdown", str(md),
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        report = json.loads(out.read_text())
        assert report["vocabulary"] == vocabulary
        assert set(report["methods"]) == {"dapo", "handcrafted"}
        for res in report["methods"].values():
            assert set(res["per_category"]) == {"carpet", "pill"}
            for m in res["per_category"].values():
                for key in METRICS:
                    assert m[key] is not None and 0.0 <= m[key] <= 1.0, key
            assert set(METRICS) <= set(res["mean"])
        text = md.read_text()
        assert "| **mean** |" in text and "px-type F1" in text and "## dapo" in text


def test_resume_after_an_interrupted_epoch(tmp_path):
    data = write_layout(tmp_path / "own", "folder")
    request = TrainRequest(
        dataset=str(data), backbone=TINY, epochs=2, version="r1", models_dir=str(tmp_path / "m")
    )

    def stop_after_first_epoch(msg: str) -> None:
        if msg.startswith("epoch 1 done"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_on_dataset(request, progress=False, log=stop_after_first_epoch)
    run_dir = tmp_path / "m" / "runs" / "r1"
    assert (run_dir / "checkpoint.pt").is_file()
    assert not (tmp_path / "m" / "prompts" / "r1").exists()
    epochs_seen = []
    outcome = train_on_dataset(
        request, run_dir=run_dir, resume=True, progress=False, log=epochs_seen.append
    )
    assert any(m.startswith("resuming") and "after epoch 1" in m for m in epochs_seen)
    assert any(m.startswith("epoch 2 done") for m in epochs_seen)
    assert not any(m.startswith("epoch 1 done") for m in epochs_seen)
    losses = json.loads((outcome.path / "manifest.json").read_text())["train_config"][
        "epoch_losses"
    ]
    assert [e["epoch"] for e in losses] == [0, 1]


def test_malformed_dataset_is_one_line_and_writes_nothing(tmp_path):
    data = write_layout(tmp_path / "mvtec_ad", "mvtec")
    gone = sorted((data / "pill" / "ground_truth" / "crack").iterdir())[0]
    gone.unlink()
    proc = _cli(tmp_path, "train", "--dataset", str(data), "--epochs", "1")
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and str(gone) in proc.stderr, proc.stderr
    assert not (tmp_path / "models").exists()


def test_pixel_type_metrics_match_a_hand_computed_case():
    from qc_stream.evaluation.metrics import PixelTypeCounts

    # one 2x2 image: classes normal(0), a(1), b(2); true: [[0, 1], [2, 0]]
    true = np.array([[0, 1], [2, 0]])
    scores = np.array(
        [
            [[0.75, 0.25], [0.25, 0.5]],  # normal
            [[0.25, 0.5], [0.25, 0.25]],  # a
            [[0.0, 0.25], [0.5, 0.25]],  # b
        ]
    )
    counts = PixelTypeCounts(3)
    counts.add(true, scores)
    m = counts.metrics()
    # normal: positives {0.75, 0.5} vs negatives {0.25, 0.25}: every pair ranked right -> AUROC 1,
    # AP 1. a: positive 0.5 above negatives {0.25, 0.25, 0.25} -> 1, 1. b: positive 0.5 above
    # {0, 0.25, 0.25} -> 1, 1.
    assert m["pixel_type_auroc"] == pytest.approx(1.0)
    assert m["pixel_type_ap"] == pytest.approx(1.0)
    # argmax: pixel(0,0)->0 ok, (0,1)->1 ok, (1,0)->2 ok, (1,1)->0 ok: F1 1 for each class
    assert m["pixel_type_f1"] == pytest.approx(1.0)

    # a harder case: a ranked below one negative -> AUROC(a) = 2/3, AP(a) = 1/2; argmax of (0,1) -> 0
    scores[1, 0, 1] = 0.25
    scores[1, 1, 1] = 0.5
    scores[0, 1, 1] = 0.25  # (1,1) true normal, now predicted a
    counts = PixelTypeCounts(3)
    counts.add(true, scores)
    m = counts.metrics()
    from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

    flat_true, flat = true.ravel(), scores.reshape(3, -1)
    want_auroc = np.mean([roc_auc_score(flat_true == c, flat[c]) for c in range(3)])
    want_ap = np.mean([average_precision_score(flat_true == c, flat[c]) for c in range(3)])
    want_f1 = f1_score(flat_true, flat.argmax(0), average="macro")
    assert m["pixel_type_auroc"] == pytest.approx(want_auroc)
    assert m["pixel_type_ap"] == pytest.approx(want_ap)
    assert m["pixel_type_f1"] == pytest.approx(want_f1)
    # by hand, class a: positive 0.25 vs negatives {0.25, 0.25, 0.5}: AUROC = (0 + 0.5 + 0.5) / 3
    assert roc_auc_score(flat_true == 1, flat[1]) == pytest.approx(1 / 3)


@pytest.fixture
def tiny_held_out(monkeypatch):
    """The synthetic benchmark's held-out set, 2 normals + 1 seen + 1 novel defect per product."""
    from qc_stream.synth import datasets as synth

    monkeypatch.setitem(synth.MODES, "quick", (2, 1, 1))
    return synth.held_out_dataset("quick", products=["capsule", "fabric"])


def test_synthetic_benchmark_reads_like_its_folder_copy(tiny_held_out, tmp_path):
    """The in-memory source yields the records and pixels the folder reader gives for the same set
    written to disk: `eval` scores the synthetic benchmark like any folder dataset."""
    from qc_stream.datasets import load_image, load_mask, read_dataset
    from qc_stream.synth.datasets import write_folder

    data = tiny_held_out
    back = read_dataset(write_folder(data, tmp_path / "copy"))
    assert back.layout == "folder"

    def records(d):
        return {str(i.path.relative_to(d.root)): i for i in d.items}

    mine, read = records(data), records(back)
    assert mine.keys() == read.keys() and len(mine) == 8
    for name, a in mine.items():
        b = read[name]
        assert (a.product, a.split, a.defect_type, a.label, a.folder) == (
            b.product, b.split, b.defect_type, b.label, b.folder,
        )  # fmt: skip
        assert (a.mask_path is None) == (b.mask_path is None)
        if a.mask_path is not None:
            assert a.mask_path.relative_to(data.root) == b.mask_path.relative_to(back.root)
        image = load_image(a)
        assert np.array_equal(image, load_image(b))
        assert np.array_equal(load_mask(a, image.shape[:2]), load_mask(b, image.shape[:2]))
    for keep in data.subsets().values():  # seen / novel select the same files on both
        assert {n for n, i in mine.items() if keep(i)} == {n for n, i in read.items() if keep(i)}


def test_subsets_come_from_the_one_scoring_pass(tiny_held_out):
    """A subset's metrics (seen / novel) equal those of scoring the subset's items alone, and
    asking for subsets leaves the whole set's metrics as they were."""
    from qc_stream.dapo import HandcraftedBaseline, HandcraftedConfig
    from qc_stream.evaluation.dataset_eval import evaluate_dataset

    model = HandcraftedBaseline(load_backbone(TINY), HandcraftedConfig()).eval()
    data = tiny_held_out
    res = evaluate_dataset(lambda _p: model, data, "product", subsets=data.subsets())
    plain = evaluate_dataset(lambda _p: model, data, "product")
    assert res["mean"] == pytest.approx(plain["mean"], nan_ok=True)
    assert set(res["subsets"]) == {"seen", "novel"}
    for name, keep in data.subsets().items():
        subset = replace(data, items=[i for i in data.items if keep(i)])
        direct = evaluate_dataset(lambda _p: model, subset, "product")
        for product, row in res["per_category"].items():
            got = {k: v for k, v in row["subsets"][name].items() if k in METRICS}
            want = {k: v for k, v in direct["per_category"][product].items() if k in METRICS}
            assert got == pytest.approx(want, nan_ok=True), (name, product)
