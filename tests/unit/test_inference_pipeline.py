"""The pipelined detector gives the sequential detector's results (scores, maps, regions) on the same
frames, on the CPU with the tiny random-weight test backbone."""

from __future__ import annotations

import shutil
from dataclasses import replace
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
        prompt_version="untrained",  # no prompt version on the tiny test backbone: the opt-in
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


class _Blobs:
    """The prompts model with its anomaly map replaced by seeded Gaussian blobs of different sizes
    and strengths on a flat floor, so a frame has several regions of different shapes and types."""

    def __init__(self, model):
        self.model = model

    def __call__(self, x, words, candidates):
        import torch

        out = self.model(x, words, candidates)
        b, side = x.shape[0], x.shape[-1]
        g = torch.Generator().manual_seed(7)
        yy, xx = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
        maps = torch.full((b, side, side), 0.01)
        for i in range(b):
            for amp in (0.45, 0.4, 0.3):
                cy, cx = (torch.rand(2, generator=g) * side).tolist()
                sigma = side * (0.03 + 0.08 * torch.rand(1, generator=g).item())
                blob = amp * torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2))
                maps[i] = torch.maximum(maps[i], blob)
        return replace(out, anomaly_map=maps.to(out.anomaly_map.dtype))


def _host_regions(detector, amap, type_idx, size, words, threshold):
    """The finish before the device one: the model's map copied back whole, resized by cv2 on
    the host to the working resolution, then labelled (the reference for the device finish)."""
    import cv2

    from qc_stream.inference.detector import REGION_WORK_PX
    from qc_stream.inference.regions import find_regions, scale_regions

    w, h = size
    scale = min(1.0, max(amap.shape[0], REGION_WORK_PX) / max(w, h))
    ww, wh = max(1, round(w * scale)), max(1, round(h * scale))
    sx, sy = ww / w, wh / h
    resized = amap.shape != (wh, ww)
    work_map = cv2.resize(amap, (ww, wh), interpolation=cv2.INTER_LINEAR) if resized else amap
    work_types = (
        cv2.resize(type_idx, (ww, wh), interpolation=cv2.INTER_NEAREST) if resized else type_idx
    )
    min_area = max(1, int(np.ceil(detector.settings.region_min_area_px * sx * sy)))
    found = find_regions(work_map, threshold, min_area=min_area, type_map=work_types, words=words)
    return found if (ww, wh) == (w, h) else scale_regions(found, sx, sy, w, h)


# The device finish against the host one, same frames: region boxes, areas, outlines and types
# identical; peak, mean and centroid to float rounding (torch's and cv2's bilinear weights differ
# by ~1e-7). Maps copied back at OVERLAY_MAP_PX (area-weighted) against cv2's INTER_AREA of the
# full map: within OVERLAY_TOL (measured at most 0.0009 at 320 -> 256 px, maps in 0..0.5).
REGION_FLOAT_TOL, OVERLAY_TOL = 1e-5, 0.005


@pytest.mark.parametrize("image_size", [None, 320])
def test_the_device_finish_gives_the_host_finish_results(detector, image_size):
    import cv2

    from qc_stream.domain.thresholds import region_cut
    from qc_stream.inference.detector import Detector
    from qc_stream.inference.device_maps import OVERLAY_MAP_PX

    det = detector
    if image_size is not None:  # a model map larger than OVERLAY_MAP_PX: copied back smaller
        det = Detector.from_settings(detector.settings.model_copy(update={"image_size": 320}))
    # the untrained model's maps are flat (one region: the whole frame); blobs make several regions
    det = Detector(
        det.backbone, replace(det._prompts, model=_Blobs(det._prompts.model)), det.settings
    )
    images, products = _batches()[0]  # 96 and 128 px frames: maps resized up and down
    images = images + [images[0].resize((700, 300))]  # long side over REGION_WORK_PX
    products = products + [products[0]]
    result = det.forward(det.prepare(images, products))
    got = det.finish(result)
    amap, type_idx = result.amap.numpy(), result.type_idx.numpy()
    side = amap.shape[-1]
    assert side == (320 if image_size else 64)
    n_regions = 0
    for i, out in enumerate(got):
        d = out.detection
        flagged = d.anomaly_score >= d.thresholds.warn
        cut = region_cut(float(amap[i].max()), d.thresholds.region, flagged=flagged)
        want = _host_regions(det, amap[i], type_idx[i], out.size, out.words, cut) if cut else []
        assert len(d.regions) == len(want)
        n_regions += len(want)
        for a, b in zip(d.regions, want, strict=True):
            assert (a.bbox, a.area_px, a.outline, a.defect_type) == (
                b.bbox,
                b.area_px,
                b.outline,
                b.defect_type,
            )
            assert a.score == pytest.approx(b.score, abs=REGION_FLOAT_TOL)
            assert a.mean_score == pytest.approx(b.mean_score, abs=REGION_FLOAT_TOL)
            np.testing.assert_allclose(a.centroid, b.centroid, atol=1e-3)
        small = min(side, OVERLAY_MAP_PX)
        assert out.model_map.shape == out.model_type_map.shape == (small, small)
        if side <= OVERLAY_MAP_PX:
            np.testing.assert_array_equal(out.model_map, amap[i])
            np.testing.assert_array_equal(out.model_type_map, type_idx[i])
        else:
            area = cv2.resize(amap[i], (small, small), interpolation=cv2.INTER_AREA)
            assert np.abs(out.model_map - area).max() <= OVERLAY_TOL
            nearest = cv2.resize(type_idx[i], (small, small), interpolation=cv2.INTER_NEAREST)
            np.testing.assert_array_equal(out.model_type_map, nearest)
    assert n_regions >= 2 * len(images)  # warn 0, blobs: several regions a frame to compare
