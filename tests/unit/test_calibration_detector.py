"""Calibrated thresholds in use: the detector, the worker's service function, swaps, the CLI + predict.

Real detector on the tiny random-weight test backbone (`models/backbones/qc-test-tiny/`) with
prompt versions saved in a temporary models folder. The scores mean nothing; thresholds are chosen
at the ends of [0, 1] where a verdict must follow from them whatever the score is, except in the
CLI test, which checks the thresholds the calibration computed from the scores it saw.
"""

import io
import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from qc_stream.dapo.thresholds import THRESHOLDS_FILE, write_thresholds
from qc_stream.domain.inspection import FrameMeta, decide_verdict
from qc_stream.settings import load_settings
from qc_stream.stream.service import RawFrame, inspect_batch
from qc_stream.wire.codec import meta_to_headers

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    """Two versions on the tiny backbone: v-cal (pill calibrated to [1, 1]: never flagged) and
    v-strict (pill calibrated to [0, 0]: always rejected); neither calibrates screw."""
    from qc_stream.dapo.backbone import load_backbone
    from qc_stream.dapo.checkpoint import save_prompt_version, set_active_version
    from qc_stream.dapo.model import DapoModel
    from qc_stream.synth import PRODUCTS

    models = tmp_path_factory.mktemp("models")
    shutil.copytree(
        REPO / "models" / "backbones" / "qc-test-tiny", models / "backbones" / "qc-test-tiny"
    )
    backbone = load_backbone("qc-test-tiny", models_dir=models)
    torch.manual_seed(0)  # the same random prompts (and so the same scores) in every run
    model = DapoModel(backbone, vocabulary=["crack", "scratch", "dent"])
    products = {p: ["crack", "scratch", "dent"] for p in ("pill", "screw")}
    for name, pill in (("v-cal", (1.0, 1.0)), ("v-strict", (0.0, 0.0))):
        path = save_prompt_version(model, models, name, products=products)
        write_thresholds(path, {"pill": pill}, {"n_normal": {"pill": 8}})
    assert "pill" in PRODUCTS and "screw" in PRODUCTS
    for name in (
        "v-cli-images",
        "v-cli-synthetic",
    ):  # for the CLI tests, which rewrite their thresholds
        path = save_prompt_version(model, models, name, products=products)
        write_thresholds(path, {"pill": (1.0, 1.0)}, {"n_normal": {"pill": 8}})
    set_active_version("v-cal", models)
    return models


def _settings(models_dir, **kw):
    base = dict(
        backbone="qc-test-tiny",
        models_dir=models_dir,
        device="cpu",
        warn_threshold=0.0,
        reject_threshold=0.999,
        database_url="sqlite://",
        redis_url="off",
    )
    base.update(kw)
    return load_settings(**base)


def _png(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(
        buf, format="PNG"
    )
    return buf.getvalue()


def _frame(i: int, product: str) -> RawFrame:
    meta = FrameMeta(
        frame_id=f"f-{product}-{i}",
        camera_id="cam-1",
        line_id="line-1",
        product=product,
        captured_at=datetime.now(UTC),
        content_type="image/png",
    )
    return RawFrame.of(_png(i), meta_to_headers(meta))


def test_detector_precedence_explicit_then_calibrated_then_global(models_dir):
    from qc_stream.inference.detector import Detector

    det = Detector.from_settings(_settings(models_dir))
    assert det.prompt_version == "v-cal" and det.calibrated_thresholds == {"pill": (1.0, 1.0)}
    assert det.thresholds_for("pill") == (1.0, 1.0)  # calibrated beats the global 0.0 / 0.999
    assert det.thresholds_for("screw") == (0.0, 0.999)  # not calibrated: global
    assert det.thresholds_for(None) == (0.0, 0.999)
    explicit = _settings(models_dir, thresholds='{"pill": [0.2, 0.3]}')
    assert det.thresholds_for("pill", explicit) == (0.2, 0.3)  # QC_THRESHOLDS beats calibrated
    assert Detector.from_settings(explicit).thresholds_for("pill") == (0.2, 0.3)

    img = Image.open(io.BytesIO(_png(1))).convert("RGB")
    pill, screw = det.detect([img, img], ["pill", "screw"])
    assert pill.thresholds == (1.0, 1.0) and screw.thresholds == (0.0, 0.999)
    assert (
        pill.detection.defect_type is None and pill.detection.regions == []
    )  # below the calibrated warn
    assert screw.detection.defect_type is not None  # at or above the global warn 0.0


def test_worker_service_uses_calibrated_thresholds_and_swaps_them_with_the_prompts(models_dir):
    from qc_stream.inference.detector import Detector

    settings = _settings(models_dir)
    det = Detector.from_settings(settings)
    frames = [_frame(i, "pill") for i in range(3)] + [_frame(i, "screw") for i in range(2)]

    out = inspect_batch(frames, det, settings)
    verdicts = {r.frame_id: r.verdict.value for r in out.results}
    assert out.dead == [] and len(verdicts) == 5
    assert all(verdicts[f"f-pill-{i}"] == "ok" for i in range(3))  # calibrated [1, 1]
    assert all(verdicts[f"f-screw-{i}"] != "ok" for i in range(2))  # global warn 0.0

    det.swap_prompts("v-strict")  # what a worker does on qc.model-updates
    out = inspect_batch(frames, det, settings)
    pill = [r for r in out.results if r.product == "pill"]
    assert {r.verdict.value for r in pill} == {"reject"} and {r.prompt_version for r in pill} == {
        "v-strict"
    }

    explicit = _settings(models_dir, thresholds='{"pill": [0.0, 1.0]}')
    out = inspect_batch(frames, Detector.from_settings(explicit), explicit)
    assert {r.verdict.value for r in out.results if r.product == "pill"} == {
        "warn"
    }  # QC_THRESHOLDS wins


def test_service_asks_a_detector_without_per_output_thresholds(models_dir):
    """A detector whose outputs are bare Detections (e.g. a stand-in) is asked via thresholds_for."""
    from qc_stream.domain.inspection import Detection

    class StandIn:
        model_version, prompt_version = "m@0", "p"

        def detect(self, images, products):
            return [Detection(anomaly_score=0.5) for _ in images]

        def thresholds_for(self, product, settings):
            return (0.9, 0.95) if product == "pill" else settings.thresholds_for(product)

    settings = _settings(models_dir)
    out = inspect_batch([_frame(0, "pill"), _frame(0, "screw")], StandIn(), settings)
    assert [r.verdict.value for r in out.results] == ["ok", "warn"]


def test_calibrate_cli_writes_thresholds_and_predict_uses_them(models_dir, tmp_path, monkeypatch):
    from qc_stream.cli.cmd_predict import run_predict
    from qc_stream.cli.main import app
    from qc_stream.synth import generate

    good = tmp_path / "good"
    good.mkdir()
    for i, s in enumerate(generate("screw", n=10, seed=3, size=64, defect_rate=0.0)):
        Image.fromarray(s.image).save(good / f"g{i:02d}.png")
    env = {
        "QC_BACKBONE": "qc-test-tiny",
        "QC_MODELS_DIR": str(models_dir),
        "QC_DEVICE": "cpu",
        "QC_WARN_THRESHOLD": "0.0",
        "QC_REJECT_THRESHOLD": "0.999",
        "QC_THRESHOLDS": "{}",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    res = CliRunner().invoke(
        app,
        [
            "models",
            "calibrate",
            "--prompt-version",
            "v-cli-images",
            "--product",
            "screw",
            "--images",
            str(good),
            "--quantile",
            "0.9",
            "--margin",
            "0.01",
            "--check",
            "8",
            "--size",
            "64",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "screw" in res.output and "wrote" in res.output
    doc = json.loads((models_dir / "prompts" / "v-cli-images" / THRESHOLDS_FILE).read_text())
    assert doc["pill"] == [1.0, 1.0]  # calibrating screw kept pill
    warn, reject = doc["screw"]
    assert 0.0 < warn <= reject <= 1.0 and doc["_meta"]["n_normal"]["screw"] == 10

    files = sorted(good.iterdir())
    buf = io.StringIO()
    assert (
        run_predict(files, "screw", None, 4, load_settings(prompt_version="v-cli-images"), out=buf)
        == 0
    )
    lines = [json.loads(x) for x in buf.getvalue().splitlines()]
    scores = [x["anomaly_score"] for x in lines]
    assert len(set(scores)) == 10  # distinct scores, so the 9 below the 0.9 quantile are ok
    assert warn == pytest.approx(
        float(np.quantile(scores, 0.9)), abs=1e-5
    )  # the rule, on these scores
    assert [x["verdict"] for x in lines] == [decide_verdict(s, warn, reject).value for s in scores]
    assert sum(x["verdict"] == "ok" for x in lines) >= 8  # the global warn 0.0 would flag all ten
    assert all(x["defect_type"] is None for x in lines if x["verdict"] == "ok")


def test_calibrate_cli_synthetic_mode_reports_check_rates(models_dir, monkeypatch):
    from qc_stream.cli.main import app

    monkeypatch.setenv("QC_BACKBONE", "qc-test-tiny")
    monkeypatch.setenv("QC_MODELS_DIR", str(models_dir))
    res = CliRunner().invoke(
        app,
        [
            "models",
            "calibrate",
            "--prompt-version",
            "v-cli-synthetic",
            "--product",
            "pill",
            "--product",
            "screw",
            "--synthetic",
            "8",
            "--check",
            "6",
            "--size",
            "64",
        ],
    )
    assert res.exit_code == 0, res.output
    doc = json.loads((models_dir / "prompts" / "v-cli-synthetic" / THRESHOLDS_FILE).read_text())
    assert doc["pill"] != [1.0, 1.0] and set(doc) == {"pill", "screw", "_region", "_meta"}
    assert set(doc["_region"]) == {"pill", "screw"}  # pixel thresholds from the good maps
    assert doc["_meta"]["source"].startswith("synthetic:64px") and doc["_meta"]["n_normal"] == {
        "pill": 8,
        "screw": 8,
    }
    # a rich table: cells between "│" borders, the product first
    cells = [
        [c.strip() for c in line.strip("│ ").split("│")]
        for line in res.output.splitlines()
        if line.startswith("│")
    ]
    rows = {c[0]: c for c in cells}
    assert {"pill", "screw", "all"} <= set(rows)
    checks = {p: tuple(map(int, rows[p][-1].removeprefix("n=").split("+"))) for p in rows}
    assert sum(checks["pill"]) == sum(checks["screw"]) == 6  # --check 6 per product
    assert checks["all"] == tuple(map(sum, zip(checks["pill"], checks["screw"])))  # pooled
    assert "%" in rows["all"][7] and "%" in rows["pill"][8]  # false alarms, defects caught
    assert "%" in rows["pill"][10]  # the overlap


@pytest.mark.parametrize(
    "args, match",
    [
        (["--images", "{good}"], "exactly one --product"),
        (["--product", "gizmo"], "no synthetic parts for 'gizmo'"),
        (["--prompt-version", "v-missing"], "not found"),
    ],
)
def test_calibrate_cli_refuses_bad_input_with_a_qc_error(
    models_dir, tmp_path, monkeypatch, args, match
):
    """A QcError, which the console entry (qc_stream.cli.main.run) prints as one line, exit code 2."""
    from qc_stream.cli.main import app
    from qc_stream.errors import QcError

    monkeypatch.setenv("QC_BACKBONE", "qc-test-tiny")
    monkeypatch.setenv("QC_MODELS_DIR", str(models_dir))
    args = [a.replace("{good}", str(tmp_path)) for a in args]
    res = CliRunner().invoke(app, ["models", "calibrate", *args])
    assert isinstance(res.exception, QcError) and match in str(res.exception), res.output
    assert not (tmp_path / THRESHOLDS_FILE).exists()


def test_a_zero_shot_refresh_keeps_the_parents_calibration_for_unchanged_products(models_dir):
    """A registry refresh (kind zero-shot: the parent's parameters, a new vocabulary) has no
    thresholds.json; products whose words did not change score exactly as under the parent, so
    they keep its calibrated pair; a product whose words changed falls back to the global pair."""
    from qc_stream.dapo.checkpoint import load_prompt_version, save_prompt_version
    from qc_stream.inference.detector import Detector

    det = Detector.from_settings(_settings(models_dir, prompt_version="v-cal"))
    model = load_prompt_version("v-cal", det.backbone, models_dir).model
    path = save_prompt_version(
        model,
        models_dir,
        "v-zs-parent",
        products={p: ["crack", "scratch", "dent"] for p in ("pill", "screw")},
    )
    write_thresholds(
        path, {"pill": (1.0, 1.0), "screw": (0.3, 0.6)}, {"n_normal": {"pill": 8, "screw": 8}}
    )
    det.swap_prompts("v-zs-parent")
    model.vocabulary = ["crack", "scratch", "dent", "burr"]
    save_prompt_version(
        model,
        models_dir,
        "v-zs",
        products={
            "pill": ["crack", "scratch", "dent"],
            "screw": ["crack", "scratch", "dent", "burr"],
        },
        parent="v-zs-parent",
        kind="zero-shot",
    )
    img = Image.open(io.BytesIO(_png(2))).convert("RGB")
    before = det.detect([img, img], ["pill", "screw"])
    assert det.calibrated_thresholds == {"pill": (1.0, 1.0), "screw": (0.3, 0.6)}

    det.swap_prompts("v-zs")
    assert det.calibrated_thresholds == {"pill": (1.0, 1.0)}  # screw's words changed: not inherited
    assert det.thresholds_for("screw") == (0.0, 0.999)
    after = det.detect([img, img], ["pill", "screw"])
    assert after[0].detection.anomaly_score == pytest.approx(
        before[0].detection.anomaly_score, abs=1e-6
    )

    write_thresholds(
        models_dir / "prompts" / "v-zs", {"screw": (0.2, 0.4)}, {"n_normal": {"screw": 8}}
    )
    det.swap_prompts("v-zs")  # calibrated itself: its own file only
    assert det.calibrated_thresholds == {"screw": (0.2, 0.4)}


def test_results_explain_their_thresholds_and_unknown_products_are_dead_letters(models_dir):
    """Every result says which thresholds decided and where they came from, and the product's
    candidate words (also in the qc.results JSON); a product the version does not know is a dead
    letter with the reason, unless QC_GENERIC_PRODUCTS lets it use the generic words."""
    from qc_stream.inference.detector import Detector
    from qc_stream.wire.codec import result_to_json

    settings = _settings(models_dir)
    frames = [_frame(0, "pill"), _frame(0, "screw"), _frame(0, "banana")]
    out = inspect_batch(frames, Detector.from_settings(settings), settings)
    by = {r.product: r for r in out.results}
    assert set(by) == {"pill", "screw"}
    pill, screw = by["pill"].thresholds, by["screw"].thresholds
    assert (pill.warn, pill.reject, pill.source) == (1.0, 1.0, "calibrated:v-cal")
    assert (screw.warn, screw.reject, screw.source) == (0.0, 0.999, "global")
    assert pill.region_source == "global" and pill.region > 0
    assert by["pill"].candidate_words == ["crack", "scratch", "dent"]
    doc = json.loads(result_to_json(by["screw"]))
    assert doc["thresholds"]["source"] == "global" and doc["candidate_words"]
    (dead,) = out.dead
    assert dead.stage == "product" and "unknown product 'banana'" in dead.reason
    assert "QC_GENERIC_PRODUCTS" in dead.reason

    generic = _settings(models_dir, generic_products="banana")
    out = inspect_batch(frames, Detector.from_settings(generic), generic)
    assert out.dead == [] and len(out.results) == 3
    banana = next(r for r in out.results if r.product == "banana")
    assert banana.candidate_words == ["crack", "scratch", "dent"]  # every word of the version


def test_a_worker_and_predict_start_on_the_databases_active_version_not_the_active_file(
    models_dir, tmp_path
):
    """The database is the source of truth: its active row wins over the models folder's ACTIVE
    file when the two disagree (a rollback made from another machine), for a worker and for
    predict alike, and both say so; a database active version whose files do not match its
    recorded sha256 is refused and ACTIVE is used; without a database, ACTIVE."""
    from sqlalchemy import text

    from qc_stream.cli.cmd_predict import run_predict
    from qc_stream.dapo.checkpoint import active_version, set_active_version
    from qc_stream.registry.versions import PromptVersions
    from qc_stream.storage import migrate
    from qc_stream.storage.db import make_engine
    from qc_stream.storage.defect_types import DefectTypeRepository
    from qc_stream.storage.model_versions import ModelVersionRepository
    from qc_stream.stream.worker import build_runtime, load_detector

    url = f"sqlite:///{tmp_path / 'qc.db'}"
    migrate.upgrade(url)
    settings = _settings(models_dir, database_url=url)
    engine = make_engine(url)
    try:
        versions = PromptVersions(
            settings, defects=DefectTypeRepository(engine), versions=ModelVersionRepository(engine)
        )
        versions.activate("v-strict")
        set_active_version("v-cal", models_dir)  # the file says otherwise
        rt = build_runtime(settings)
        load_detector(rt)
        assert (rt.detector.prompt_version, rt.detector.prompt_source) == ("v-strict", "database")
        image = tmp_path / "part.png"
        image.write_bytes(_png(0))

        def predicted(settings) -> tuple[str, str]:
            buf = io.StringIO()
            assert run_predict([image], "pill", None, 1, settings, out=buf) == 0
            line = json.loads(buf.getvalue())
            return line["prompt_version"], line["prompt_version_source"]

        assert predicted(settings) == ("v-strict", "database")
        no_db = settings.model_copy(update={"database_url": f"sqlite:///{tmp_path / 'none.db'}"})
        assert predicted(no_db) == ("v-cal", "ACTIVE file")
        assert not (tmp_path / "none.db").exists()  # asking never creates a database

        with engine.begin() as conn:  # its files no longer match the digest registered
            conn.execute(
                text("UPDATE model_versions SET sha256 = :d WHERE prompt_version = 'v-strict'"),
                {"d": "0" * 64},
            )
        load_detector(rt)
        assert rt.detector.prompt_version == "v-cal"  # refused: the ACTIVE file decides
        assert rt.detector.prompt_source == "ACTIVE file"
        assert predicted(settings) == ("v-cal", "ACTIVE file")
    finally:
        set_active_version("v-cal", models_dir)
        engine.dispose()
    assert active_version(models_dir) == "v-cal"
