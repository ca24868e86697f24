"""The pipelined detector gives the sequential detector's results (scores, maps, regions) on the same
frames, on the CPU with the tiny random-weight test backbone."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from qc_stream.settings import load_settings

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def detector(tmp_path_factory):
    from qc_stream.inference.detector import Detector

    models = tmp_path_factory.mktemp("models")
    shutil.copytree(
        REPO / "models" / "backbones" / "qc-test-tiny", models / "backbones" / "qc-test-tiny"
    )
    # warn 0: every frame is flagged, so every frame's regions are labelled and compared
    settings = load_settings(
        backbone="qc-test-tiny",
        models_dir=models,
        device="cpu",
        warn_threshold=0.0,
        reject_threshold=0.9,
        region_threshold=0.01,
        region_min_area_px=4,
    )
    return Detector.from_settings(settings)


def _batches():
    """Three batches of synthetic frames of different sizes and products (one empty batch)."""
    from qc_stream.synth import generate

    frames = []
    for i, (product, size) in enumerate([("pill", 96), ("tile", 128), ("screw", 80)]):
        for s in generate(product, 4, seed=20 + i, size=size, defect_rate=0.5):
            frames.append((s.image, product))
    from PIL import Image

    images = [Image.fromarray(a) for a, _ in frames]
    products = [p for _, p in frames]
    return [(images[0:5], products[0:5]), ([], []), (images[5:12], products[5:12])]


def _same(a, b) -> None:
    assert a.size == b.size and a.words == b.words and a.thresholds == b.thresholds
    np.testing.assert_array_equal(a.model_map, b.model_map)
    np.testing.assert_array_equal(a.model_type_map, b.model_type_map)
    assert a.detection == b.detection  # score, type, probabilities, regions


def test_a_stream_of_batches_gives_the_sequential_results(detector):
    from qc_stream.inference.pipeline import PipelinedDetector

    batches = _batches()
    sequential = [detector.detect(images, products) for images, products in batches]
    piped = PipelinedDetector(detector)
    try:
        pipelined = list(piped.run(batches))
    finally:
        piped.close()
    assert [len(b) for b in pipelined] == [len(b) for b in sequential] == [5, 0, 7]
    for got, want in zip(pipelined, sequential, strict=True):
        for a, b in zip(got, want, strict=True):
            _same(a, b)
    # the frames really have regions to compare (warn 0, low pixel threshold)
    assert any(o.detection.regions for b in sequential for o in b)


def test_one_batch_in_chunks_gives_the_sequential_results(detector):
    from qc_stream.inference.pipeline import PipelinedDetector

    images, products = _batches()[2]
    piped = PipelinedDetector(detector, chunks=3)
    try:
        got = piped.detect(images, products)
        # the wrapper answers for the detector in everything else
        assert piped.prompt_version == detector.prompt_version
        with pytest.raises(ValueError, match="2 images but 1 products"):
            piped.detect(images[:2], products[:1])
    finally:
        piped.close()
    # the chunks (3, 3, 1 frames) through the sequential path: bit for bit
    want = [
        o for i in range(0, 7, 3) for o in detector.detect(images[i : i + 3], products[i : i + 3])
    ]
    for a, b in zip(got, want, strict=True):
        _same(a, b)
    # and the whole batch at once: the same within float rounding of a different batch size
    whole = detector.detect(images, products)
    for a, b in zip(got, whole, strict=True):
        assert a.detection.anomaly_score == pytest.approx(b.detection.anomaly_score, abs=1e-5)
        np.testing.assert_allclose(a.model_map, b.model_map, atol=1e-5)


def test_qc_pipeline_chunks_sends_the_detectors_own_detect_through_the_pipeline(detector):
    from qc_stream.inference.detector import Detector
    from qc_stream.inference.pipeline import PipelinedDetector

    images, products = _batches()[2]
    piped = Detector(
        detector.backbone,
        detector._prompts,
        detector.settings.model_copy(update={"pipeline_chunks": 2}),
    )
    got = piped.detect(images, products)
    assert isinstance(piped._pipelined, PipelinedDetector) and piped._pipelined.chunks == 2
    want = detector.detect(images[:4], products[:4]) + detector.detect(images[4:], products[4:])
    for a, b in zip(got, want, strict=True):
        _same(a, b)
    piped._pipelined.close()


def test_qc_compile_compiles_the_image_tower_and_keeps_the_results(detector):
    import shutil as sh

    import torch

    if not (sh.which("cc") or sh.which("gcc") or sh.which("clang")):
        pytest.skip("torch.compile on the CPU needs a C compiler; none on this machine")
    from qc_stream.inference.detector import Detector

    settings = detector.settings.model_copy(update={"compile": True})
    compiled = Detector.from_settings(settings)  # same seeded untrained prompts as the fixture
    visual = compiled._prompts.model.visual
    assert visual._compiled_call_impl is not None  # nn.Module.compile() took effect
    images, products = _batches()[0]
    torch._dynamo.reset()
    got = compiled.detect(images, products)
    want = detector.detect(images, products)
    for a, b in zip(got, want, strict=True):
        assert a.detection.anomaly_score == pytest.approx(b.detection.anomaly_score, abs=1e-4)
        np.testing.assert_allclose(a.model_map, b.model_map, atol=1e-4)
