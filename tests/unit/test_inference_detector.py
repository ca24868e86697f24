"""Detector on the tiny random-weight test backbone: shapes, candidates, batching, prompt swaps.

Random weights: the scores mean nothing; what is checked is how the detector wires model outputs
into detections, and how it loads and swaps prompt versions.
"""

import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from qc_stream.errors import ConfigError, QcError
from qc_stream.settings import load_settings

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    models = tmp_path_factory.mktemp("models")
    shutil.copytree(
        REPO / "models" / "backbones" / "qc-test-tiny", models / "backbones" / "qc-test-tiny"
    )
    return models


def _settings(models_dir, **kw):
    base = dict(
        backbone="qc-test-tiny",
        models_dir=models_dir,
        device="cpu",
        warn_threshold=0.0,
        reject_threshold=0.9,
        region_threshold=0.01,
        region_min_area_px=4,
        prompt_version="untrained",  # the explicit opt-in: no version on the tiny test backbone
    )
    base.update(kw)
    return load_settings(**base)


@pytest.fixture(scope="module")
def detector(models_dir):
    from qc_stream.inference.detector import Detector

    return Detector.from_settings(_settings(models_dir))


def _images():
    rng = np.random.default_rng(0)
    return [
        Image.fromarray(rng.integers(0, 255, (90, 120, 3), dtype=np.uint8)),
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)),
    ]


def test_untrained_opt_in_identity_and_vocabulary(detector):
    from qc_stream.domain.catalog import DEFECT_TYPES, PRODUCTS

    assert detector.prompt_version == "untrained"
    assert detector.prompt_source == "QC_PROMPT_VERSION"
    assert detector.model_version == detector.backbone_id and detector.model_version.startswith(
        "qc-test-tiny@"
    )
    assert set(detector.words_for("pill")) == set(PRODUCTS["pill"].defects)
    assert set(detector.words_for("unknown-product")) == set(DEFECT_TYPES)
    assert set(detector.words_for(None)) == set(DEFECT_TYPES)


def test_detect_outputs_at_image_size_with_product_candidates(detector):
    from qc_stream.domain.catalog import PRODUCTS

    a, b = _images()
    out_a, out_b = detector.detect([a, b], ["pill", None])
    assert out_a.anomaly_map.shape == (90, 120) and out_a.anomaly_map.dtype == np.float32
    assert out_a.type_map.shape == (90, 120)
    assert 0.0 <= out_a.anomaly_map.min() and out_a.anomaly_map.max() <= 1.0
    pill = set(PRODUCTS["pill"].defects)
    assert set(out_a.detection.defect_probs) == pill
    assert sum(out_a.detection.defect_probs.values()) == pytest.approx(1.0, abs=1e-5)
    assert out_a.detection.defect_type in pill
    # the pixel type map names only candidate words
    assert {out_a.words[i] for i in np.unique(out_a.type_map)} <= pill
    assert out_a.detection.regions and all(r.defect_type in pill for r in out_a.detection.regions)
    assert len(out_b.detection.defect_probs) == len(detector.words_for(None))


def test_batch_equals_single(detector):
    a, b = _images()
    batch = detector.detect([a, b], ["pill", "wood"])
    single = detector.detect([b], ["wood"])[0]
    assert batch[1].detection.anomaly_score == pytest.approx(
        single.detection.anomaly_score, abs=1e-5
    )
    np.testing.assert_allclose(batch[1].anomaly_map, single.anomaly_map, atol=1e-5)


def test_below_warn_threshold_no_type_no_regions(models_dir, detector):
    from qc_stream.inference.detector import Detector

    strict = Detector(
        detector.backbone,
        detector._prompts,
        _settings(models_dir, warn_threshold=1.0, reject_threshold=1.0),
    )
    (out,) = strict.detect(_images()[:1], [None])
    assert out.detection.anomaly_score < 1.0
    assert out.detection.defect_type is None and out.detection.regions == []
    assert out.detection.defect_probs  # the type distribution is still reported


def test_empty_batch_and_length_mismatch(detector):
    assert detector.detect([], []) == []
    with pytest.raises(ValueError):
        detector.detect(_images(), ["pill"])


def test_fp16_on_cpu_is_a_config_error(models_dir):
    from qc_stream.inference.detector import Detector

    with pytest.raises(ConfigError, match="fp16"):
        Detector.from_settings(_settings(models_dir, precision="fp16"))


def test_bf16_on_a_cpu_that_emulates_it_is_warned_about(models_dir, monkeypatch, caplog):
    import torch

    from qc_stream.dapo.backbone import bf16_is_native
    from qc_stream.inference.detector import Detector

    assert bf16_is_native("cuda")
    for native in (False, True):
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda n=native: n)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
        assert bf16_is_native("cpu") is native
        caplog.clear()
        with caplog.at_level("WARNING", logger="qc_stream.inference.detector"):
            Detector.from_settings(_settings(models_dir, precision="bf16"))
        assert ("emulates" in caplog.text) is not native


def test_bf16_autocast_runs_close_to_fp32(models_dir, detector):
    from qc_stream.inference.detector import Detector

    bf16 = Detector(detector.backbone, detector._prompts, _settings(models_dir, precision="bf16"))
    a = _images()[0]
    s32 = detector.detect([a], ["pill"])[0].detection.anomaly_score
    s16 = bf16.detect([a], ["pill"])[0].detection.anomaly_score
    assert s16 == pytest.approx(s32, abs=0.05)


def test_active_version_loads_and_swap_prompts_changes_vocabulary(models_dir, detector):
    from qc_stream.dapo.checkpoint import save_prompt_version, set_active_version
    from qc_stream.dapo.model import DapoModel
    from qc_stream.inference.detector import Detector

    model = DapoModel(detector.backbone, vocabulary=["dent", "gouge", "scratch"])
    save_prompt_version(model, models_dir, "v-a", products={"panel": ["dent", "gouge"]})
    model.vocabulary = ["crack", "hole"]
    save_prompt_version(model, models_dir, "v-b", products={})
    set_active_version("v-a", models_dir)
    try:
        det = Detector.from_settings(_settings(models_dir, prompt_version=None))
        assert (det.prompt_version, det.prompt_source) == ("v-a", "ACTIVE file")
        assert det.words_for("panel") == ("dent", "gouge")
        (first,) = det.detect(_images()[:1], ["panel"])
        assert set(first.detection.defect_probs) == {
            "dent",
            "gouge",
        }  # "gouge": a new word, zero-shot

        det.swap_prompts("v-b")
        assert det.prompt_version == "v-b"
        (out,) = det.detect(_images()[:1], ["panel"])  # panel unknown to v-b: every word
        assert set(out.detection.defect_probs) == {"crack", "hole"}

        with pytest.raises(QcError, match="not found"):
            det.swap_prompts("v-missing")
        assert det.prompt_version == "v-b"  # a failed swap keeps the current version

        det.swap_prompts(
            "v-a"
        )  # back again: the same outputs as before (nothing leaked between versions)
        (again,) = det.detect(_images()[:1], ["panel"])
        assert again.detection == first.detection
    finally:
        (models_dir / "prompts" / "ACTIVE").unlink()


def test_swap_during_detect_never_mixes_versions(models_dir, detector):
    """A batch runs wholly on one version even while another thread swaps (worker: swap between batches)."""
    from qc_stream.dapo.checkpoint import save_prompt_version
    from qc_stream.dapo.model import DapoModel
    from qc_stream.inference.detector import Detector

    m = DapoModel(detector.backbone, vocabulary=["bent", "rust"])
    save_prompt_version(m, models_dir, "v-c", products={})
    m.vocabulary = ["stain", "fold", "burn"]
    save_prompt_version(m, models_dir, "v-d", products={})
    det = Detector.from_settings(_settings(models_dir, prompt_version="v-c"))
    vocabularies = [{"bent", "rust"}, {"stain", "fold", "burn"}]
    seen, errors = [], []

    def run():
        try:
            for _ in range(6):
                a, b = det.detect(_images(), [None, None])
                assert set(a.detection.defect_probs) == set(
                    b.detection.defect_probs
                )  # one version per batch
                seen.append(set(a.detection.defect_probs))
        except Exception as e:  # surfaced below
            errors.append(e)

    t = threading.Thread(target=run)
    t.start()
    for v in ("v-d", "v-c", "v-d"):
        det.swap_prompts(v)
    t.join()
    assert not errors
    assert seen and all(s in vocabularies for s in seen)
    assert det.prompt_version == "v-d"


def test_without_a_prompt_version_the_detector_stops_naming_the_train_command(tmp_path):
    from qc_stream.inference.detector import Detector

    models = tmp_path / "models"
    models.mkdir()  # the shipped backbones are read in place; no prompt version at all
    with pytest.raises(ConfigError) as e:
        Detector.from_settings(_settings(models, prompt_version=None))
    line = str(e.value)
    assert "\n" not in line and "no prompt version for backbone qc-test-tiny" in line
    assert "qc-stream train --dataset PATH --backbone qc-test-tiny" in line
    assert "QC_PROMPT_VERSION=untrained" in line


def test_untrained_opt_in_is_deterministic_across_loads(models_dir, detector):
    from qc_stream.inference.detector import Detector

    again = Detector.from_settings(_settings(models_dir))
    a = _images()[0]
    assert again.detect([a], ["pill"])[0].detection == detector.detect([a], ["pill"])[0].detection


def test_large_frame_regions_in_image_pixels(detector):
    """Regions of a frame larger than the working resolution come back in the frame's own pixels."""
    big = Image.fromarray(np.random.default_rng(3).integers(0, 255, (700, 1400, 3), dtype=np.uint8))
    (out,) = detector.detect([big], ["pill"])
    assert out.anomaly_map.shape == (700, 1400) and out.type_map.shape == (700, 1400)
    assert out.detection.regions
    covered = 0
    for r in out.detection.regions:
        x0, y0, x1, y1 = r.bbox
        assert 0 <= x0 < x1 <= 1400 and 0 <= y0 < y1 <= 700
        assert r.area_px <= (x1 - x0) * (y1 - y0)
        covered += r.area_px
    # The reported areas agree with the full-size map (up to the labelling resolution).
    hot = int((out.anomaly_map >= 0.01).sum())
    assert covered == pytest.approx(hot, rel=0.05)


def test_vocabulary_from_manifest_dedupes_and_matches_case():
    from qc_stream.domain.vocabulary import Vocabulary

    v = Vocabulary.from_manifest(
        {"words": ["dent", "Dent", "burr"], "products": {"panel": ["DENT", "gouge"]}}
    )
    assert v.words == ("dent", "burr")
    assert v.words_for("panel") == ("dent",)  # "gouge" is not in the vocabulary
    assert v.words_for("other") == ("dent", "burr")
    with pytest.raises(ConfigError):
        Vocabulary.from_manifest({"words": []})


def test_encode_images_is_the_backbones_embedding_of_detects_input(detector):
    """What bench times as "image encoder alone": the backbone's embedding of the same preprocessed
    batch detect feeds its model (any image size in, [B, embed_dim] out)."""
    import torch

    from qc_stream.inference.decode import preprocess_batch

    bb = detector.backbone
    emb = detector.encode_images(_images())
    with torch.inference_mode():
        ref = bb.model.encode_image(preprocess_batch(_images(), bb.image_size, bb.mean, bb.std))
    assert emb.shape == (2, bb.embed_dim)
    assert torch.allclose(emb.float(), ref.float(), atol=1e-5)
