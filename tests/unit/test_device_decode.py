"""Decode and resize on the device: which frames go there, and the same picture as the CPU path to
within the stated tolerance. The CPU runs of ``preprocess_bytes`` (torchvision's libjpeg decoder)
are always tested; the nvJPEG runs need a CUDA device and skip with the reason where there is none."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from qc_stream.errors import InputError
from qc_stream.inference.decode import decode_image, preprocess_batch
from qc_stream.inference.device_decode import (
    device_decodable,
    jpeg_header,
    preprocess_bytes,
)

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
    x, sizes = preprocess_bytes(datas, 192, MEAN, STD, device="cpu")
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
    x, sizes = preprocess_bytes(datas, 48, MEAN, STD, device="cpu")
    want, want_sizes = _cpu_path(datas, 48)
    assert sizes == want_sizes
    torch.testing.assert_close(x[1:], want[1:])  # the CPU path itself: identical
    _check_parity(_grey_levels(x[:1]), _grey_levels(want[:1]))
    with pytest.raises(InputError, match="not a decodable image"):
        preprocess_bytes([datas[0], b"not an image"], 48, MEAN, STD, device="cpu")


@pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="no CUDA device here: the nvJPEG decode and device resize are tested where there is one",
)
def test_nvjpeg_run_matches_the_cpu_path_within_the_tolerance():
    datas = _camera_frames() + [_encode(_rgb().convert("CMYK"), "JPEG")]
    x, sizes = preprocess_bytes(datas, 224, MEAN, STD, device="cuda")
    assert x.is_cuda and x.shape == (5, 3, 224, 224)
    want, want_sizes = _cpu_path(datas, 224)
    assert sizes == want_sizes
    _check_parity(_grey_levels(x), _grey_levels(want))
