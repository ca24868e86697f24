"""Decode and resize on the device: which frames go there, and the same picture as the CPU path to
within the stated tolerance; with QC_DEVICE_DECODE=on, the worker's batch gives the default path's
results to within the stated tolerance. The CPU runs of ``preprocess_frames`` (torchvision's
libjpeg decoder) are always tested; the nvJPEG runs need a CUDA device and skip with the reason
where there is none."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import numpy as np
import pytest
import torch
from PIL import Image

from qc_stream.errors import InputError
from qc_stream.inference.decode import decode_image, preprocess_batch
from qc_stream.inference.device_decode import (
    EncodedFrame,
    as_picture,
    defer_decode,
    device_decodable,
    device_decode_on,
    jpeg_header,
    preprocess_frames,
)
from qc_stream.settings import load_settings

MEAN, STD = (0.48, 0.46, 0.41), (0.27, 0.26, 0.28)
# The stated tolerance (module docstring), in grey levels.
MEAN_ABS_MAX, P99_MAX = 2.0, 12.0


def _camera_frames():
    from qc_stream.devtools.bench import _frames

    return [f.data for _, f in _frames(4, (640, 480), seed=5)]


def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _rgb(w=96, h=64):
    rng = np.random.default_rng(1)
    return Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))


def test_only_plain_8_bit_sequential_jpegs_go_to_the_device():
    rgb = _rgb()
    baseline = _encode(rgb, "JPEG", quality=90)
    h = jpeg_header(baseline)
    assert (h.width, h.height, h.components, h.precision, h.sequential) == (96, 64, 3, 8, True)
    assert device_decodable(baseline)
    assert device_decodable(_encode(rgb.convert("L"), "JPEG"))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: the CPU path rotates, nvJPEG would not
    refused = {
        "progressive": _encode(rgb, "JPEG", progressive=True),
        "cmyk": _encode(rgb.convert("CMYK"), "JPEG"),
        "exif": _encode(rgb, "JPEG", exif=exif.tobytes()),
        "png": _encode(rgb, "PNG"),
        "png16": _encode(Image.fromarray(np.full((64, 64), 40000, np.uint16)), "PNG"),
        "too small": _encode(_rgb(8, 8), "JPEG"),
        "truncated": baseline[:10],
        "truncated data": baseline[:-100],  # header intact, no end-of-image marker
        "empty": b"",
    }
    for name, data in refused.items():
        assert not device_decodable(data), name
    assert not device_decodable(baseline, max_pixels=96 * 64 - 1)


def _grey_levels(x: torch.Tensor) -> np.ndarray:
    m = torch.tensor(MEAN).view(1, 3, 1, 1)
    s = torch.tensor(STD).view(1, 3, 1, 1)
    return ((x.cpu().float() * s + m) * 255.0).numpy()


def _check_parity(got: np.ndarray, want: np.ndarray) -> None:
    diff = np.abs(got - want)
    assert diff.mean() <= MEAN_ABS_MAX, diff.mean()
    assert np.percentile(diff, 99) <= P99_MAX, np.percentile(diff, 99)


def _cpu_path(datas, size):
    images = [decode_image(d) for d in datas]
    return preprocess_batch(images, size, MEAN, STD), [im.size for im in images]


def test_cpu_run_matches_the_cpu_path_within_the_tolerance():
    datas = _camera_frames()
    x, sizes = preprocess_frames(datas, 192, MEAN, STD, device="cpu")
    want, want_sizes = _cpu_path(datas, 192)
    assert x.shape == (4, 3, 192, 192) and sizes == want_sizes == [(640, 480)] * 4
    _check_parity(_grey_levels(x), _grey_levels(want))


def test_frames_the_device_cannot_decode_take_the_cpu_path_exactly():
    rgb = _rgb()
    png16 = _encode(Image.fromarray(np.full((64, 96), 40000, np.uint16)), "PNG")
    datas = [
        _encode(rgb, "JPEG", quality=90),
        _encode(rgb.convert("CMYK"), "JPEG"),
        _encode(rgb, "PNG"),
        png16,
    ]
    x, sizes = preprocess_frames(datas, 48, MEAN, STD, device="cpu")
    want, want_sizes = _cpu_path(datas, 48)
    assert sizes == want_sizes
    torch.testing.assert_close(x[1:], want[1:])  # the CPU path itself: identical
    _check_parity(_grey_levels(x[:1]), _grey_levels(want[:1]))
    # the worker's frames: left encoded (defer_decode) or already decoded pictures, in one batch
    frames = [defer_decode(d) for d in datas]
    assert isinstance(frames[0], EncodedFrame) and frames[0].size == (96, 64)
    assert not any(isinstance(f, EncodedFrame) for f in frames[1:])
    torch.testing.assert_close(preprocess_frames(frames, 48, MEAN, STD, device="cpu")[0], x)
    with pytest.raises(InputError, match="not a decodable image"):
        preprocess_frames([datas[0], b"not an image"], 48, MEAN, STD, device="cpu")


def test_defer_decode_keeps_the_cpu_paths_checks_and_overlays_get_a_picture():
    baseline = _encode(_rgb(), "JPEG", quality=90)
    with pytest.raises(InputError, match="truncated"):
        defer_decode(baseline[:-100])  # no end-of-image marker: the CPU path, its error
    with pytest.raises(InputError, match="not a decodable image"):
        defer_decode(b"not an image")
    frame = defer_decode(baseline)
    assert as_picture(frame).tobytes() == decode_image(baseline).tobytes()
    # a worker's overlay of a frame left encoded decodes it on the CPU
    from qc_stream.inference.overlay import render_overlay

    amap = np.zeros((8, 8), np.float32)
    assert (
        render_overlay(frame, amap).tobytes() == render_overlay(as_picture(frame), amap).tobytes()
    )


def test_qc_device_decode_auto_follows_the_models_device():
    def on(**kw) -> bool:
        return device_decode_on(load_settings(database_url="sqlite://", **kw))

    assert not on(device="cpu") and on(device="cuda")
    assert on(device="auto") == torch.cuda.is_available()
    assert on(device="cpu", device_decode="on") and not on(device="cuda", device_decode="off")


# The stated tolerance of the worker's results with QC_DEVICE_DECODE=on against the default path
# (the tiny random-weight backbone, 320x240 camera JPEGs; measured: scores 8e-5, maps 0.0035,
# type indices 0.8 % of pixels, region areas 0.3 %).
SCORE_TOL, MAP_TOL, TYPE_PIXELS_TOL, AREA_TOL = 5e-4, 0.01, 0.02, 0.02


def _tiny_detector(models, device: str):
    """The tiny random-weight test backbone with seeded untrained prompts on ``device``; warn 0 and
    a pixel threshold the maps reach: every frame is flagged and has regions to compare."""
    import shutil
    from pathlib import Path

    from qc_stream.inference.detector import Detector

    tiny = Path(__file__).resolve().parents[2] / "models" / "backbones" / "qc-test-tiny"
    if not (models / "backbones" / "qc-test-tiny").exists():
        shutil.copytree(tiny, models / "backbones" / "qc-test-tiny")
    settings = load_settings(
        backbone="qc-test-tiny",
        models_dir=models,
        prompt_version="untrained",
        device=device,
        database_url="sqlite://",
        warn_threshold=0.0,
        reject_threshold=0.9,
        region_threshold=0.3,
    )
    return Detector.from_settings(settings)


def _check_outputs(got, want) -> None:
    """Detector outputs of the same frames, decoded two ways, within the stated tolerance."""
    for a, b in zip(got, want, strict=True):
        assert a.size == b.size
        assert a.detection.anomaly_score == pytest.approx(b.detection.anomaly_score, abs=SCORE_TOL)
        assert a.detection.defect_type == b.detection.defect_type
        assert np.abs(a.model_map - b.model_map).max() <= MAP_TOL
        assert (a.model_type_map != b.model_type_map).mean() <= TYPE_PIXELS_TOL
        assert len(a.detection.regions) == len(b.detection.regions) >= 1
        for ra, rb in zip(a.detection.regions, b.detection.regions, strict=True):
            assert ra.area_px == pytest.approx(rb.area_px, rel=AREA_TOL)


def test_the_worker_with_device_decode_on_gives_the_default_paths_results(tmp_path):
    from qc_stream.devtools.bench import _frames
    from qc_stream.domain.inspection import FrameMeta
    from qc_stream.stream.service import RawFrame, inspect_batch
    from qc_stream.wire.codec import meta_to_headers

    detector = _tiny_detector(tmp_path, "cpu")
    settings = detector.settings
    camera = _frames(4, (320, 240), seed=5)
    jpeg = camera[0][1].data
    datas = [f.data for _, f in camera] + [_encode(_rgb(), "PNG"), jpeg[:-100]]
    raw = [
        RawFrame.of(
            d,
            meta_to_headers(
                FrameMeta(
                    frame_id=f"f{i}",
                    camera_id="cam",
                    line_id="line",
                    product=camera[i % 4][0],
                    captured_at=datetime.now(UTC),
                )
            ),
        )
        for i, d in enumerate(datas)
    ]
    off = inspect_batch(raw, detector, settings.model_copy(update={"device_decode": "off"}))
    on = inspect_batch(raw, detector, settings.model_copy(update={"device_decode": "on"}))
    assert [(d.stage, d.reason) for d in on.dead] == [(d.stage, d.reason) for d in off.dead]
    assert [d.stage for d in on.dead] == ["decode"]  # the truncated frame, on the CPU path
    assert (
        [r.frame_id for r in on.results]
        == [r.frame_id for r in off.results]
        == [f"f{i}" for i in range(5)]
    )
    for a, b in zip(on.results, off.results, strict=True):
        assert a.anomaly_score == pytest.approx(b.anomaly_score, abs=SCORE_TOL)
        assert (a.verdict, a.defect_type) == (b.verdict, b.defect_type)
        assert len(a.regions) == len(b.regions) >= 1
        for ra, rb in zip(a.regions, b.regions, strict=True):
            assert ra.area_px == pytest.approx(rb.area_px, rel=AREA_TOL)
    # the maps, through detect: frames left encoded against decoded pictures
    products = [p for p, _ in camera]
    got = detector.detect([defer_decode(d) for d in datas[:4]], products)
    want = detector.detect([decode_image(d) for d in datas[:4]], products)
    assert [o.size for o in got] == [(320, 240)] * 4
    _check_outputs(got, want)


@pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="no CUDA device here: the nvJPEG decode and device resize are tested where there is one",
)
def test_nvjpeg_run_matches_the_cpu_path_within_the_tolerance():
    datas = _camera_frames() + [_encode(_rgb().convert("CMYK"), "JPEG")]
    x, sizes = preprocess_frames(datas, 224, MEAN, STD, device="cuda")
    assert x.is_cuda and x.shape == (5, 3, 224, 224)
    want, want_sizes = _cpu_path(datas, 224)
    assert sizes == want_sizes
    _check_parity(_grey_levels(x), _grey_levels(want))


@pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="no CUDA device here: the detector with nvJPEG decode and device post-processing is "
    "tested where there is one",
)
def test_the_gpu_detector_on_frames_decoded_there_matches_the_cpu_detector(tmp_path):
    from qc_stream.devtools.bench import _frames

    camera = _frames(4, (640, 480), seed=5)
    datas, products = [f.data for _, f in camera], [p for p, _ in camera]
    gpu, cpu = _tiny_detector(tmp_path, "cuda"), _tiny_detector(tmp_path, "cpu")
    assert device_decode_on(gpu.settings)  # auto: on with the model on CUDA
    _check_outputs(
        gpu.detect([defer_decode(d) for d in datas], products),
        cpu.detect([decode_image(d) for d in datas], products),
    )
