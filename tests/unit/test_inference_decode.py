"""decode_image: conversions of unusual formats and clear errors for bad input."""

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from qc_stream.errors import InputError
from qc_stream.inference.decode import decode_image, preprocess_batch, resize_rgb


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def test_rgb_jpeg_roundtrip():
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), (200, 10, 10)).save(buf, format="JPEG")
    img = decode_image(buf.getvalue())
    assert img.mode == "RGB" and img.size == (40, 30)
    assert np.asarray(img)[15, 20, 0] > 180


@pytest.mark.parametrize(
    "mode,value",
    [("L", 128), ("1", 1), ("LA", (90, 40)), ("RGBA", (10, 20, 30, 0)), ("CMYK", (0, 0, 0, 0))],
)
def test_other_modes_become_rgb(mode, value):
    img = decode_image(
        _png(Image.new(mode, (32, 20), value)) if mode != "CMYK" else _jpeg(mode, value)
    )
    assert img.mode == "RGB" and img.size == (32, 20)


def _jpeg(mode, value):
    buf = io.BytesIO()
    Image.new(mode, (32, 20), value).save(buf, format="JPEG")
    return buf.getvalue()


def test_rgba_drops_alpha_keeps_colour():
    img = decode_image(_png(Image.new("RGBA", (20, 20), (10, 20, 30, 0))))
    assert tuple(np.asarray(img)[0, 0]) == (10, 20, 30)


def test_palette_image():
    p = Image.new("P", (24, 24))
    p.putpalette([0, 0, 0, 250, 5, 5] + [0] * 762)
    p.paste(1, (0, 0, 24, 24))
    assert tuple(np.asarray(decode_image(_png(p)))[3, 3]) == (250, 5, 5)


def test_16bit_grayscale_png_is_scaled_not_clipped():
    a = np.zeros((20, 30), dtype=np.uint16)
    a[:, 15:] = 65535
    a[:, :15] = 32896  # 128 * 257
    img16 = Image.fromarray(a)
    data = _png(img16)
    assert Image.open(io.BytesIO(data)).mode.startswith("I")  # really stored as 16-bit
    out = np.asarray(decode_image(data))
    assert out.shape == (20, 30, 3)
    assert out[0, 0, 0] == 128 and out[0, 20, 0] == 255


@pytest.mark.parametrize("data", [b"", b"not an image at all", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40])
def test_garbage_is_an_input_error(data):
    with pytest.raises(InputError):
        decode_image(data)


def test_truncated_jpeg_is_an_input_error():
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(
        buf, "JPEG"
    )
    with pytest.raises(InputError):
        decode_image(buf.getvalue()[: len(buf.getvalue()) // 3])


def test_tiny_image_is_refused_with_reason():
    with pytest.raises(InputError, match="too small: 8x40"):
        decode_image(_png(Image.new("RGB", (8, 40))))


def _png_claiming_size(width: int, height: int) -> bytes:
    """A valid PNG whose header claims width x height (pixel data absent: never decoded)."""
    data = _png(Image.new("L", (16, 16)))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    patched = struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk) & 0xFFFFFFFF)
    return data[:8] + patched + data[8 + 25 :]


@pytest.mark.parametrize(
    "size", [(10_000, 6_000), (30_000, 30_000)]
)  # 60 MP; 900 MP (PIL's bomb limit)
def test_huge_image_is_refused_from_its_header(size):
    with pytest.raises(InputError, match="too large"):
        decode_image(_png_claiming_size(*size))


def test_resize_and_preprocess_batch():
    import torch

    imgs = [Image.new("RGB", (100, 50), (255, 0, 0)), Image.new("RGB", (20, 20), (0, 0, 255))]
    assert resize_rgb(imgs[0], 32).shape == (32, 32, 3)
    t = preprocess_batch(imgs, 32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    assert t.shape == (2, 3, 32, 32) and t.dtype == torch.float32
    assert torch.allclose(t[0, 0], torch.ones(32, 32)) and torch.allclose(
        t[0, 1], -torch.ones(32, 32)
    )
    assert torch.allclose(t[1, 2], torch.ones(32, 32), atol=1e-6)


def test_threaded_preprocess_keeps_each_picture_in_its_place():
    # The batch is resized on a thread pool: row i must still be picture i, equal to a one-by-one resize.
    import numpy as np
    import torch

    rng = np.random.default_rng(0)
    imgs = [
        Image.fromarray(rng.integers(0, 256, (40 + 7 * i, 60, 3), dtype=np.uint8)) for i in range(9)
    ]
    t = preprocess_batch(imgs, 48, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    for i, im in enumerate(imgs):
        ref = torch.from_numpy(resize_rgb(im, 48)).permute(2, 0, 1).float() / 255.0
        assert torch.equal(t[i], ref)


def test_preprocess_works_in_a_forked_child_after_the_parent_used_the_pool():
    # A forked child inherits the parent's pool object without its threads; it must make its own.
    import multiprocessing as mp

    imgs = [Image.new("RGB", (30, 20), (i * 20, 0, 0)) for i in range(4)]
    preprocess_batch(imgs, 16, mean=(0, 0, 0), std=(1, 1, 1))  # the parent's pool now exists
    ctx = mp.get_context("fork")
    with ctx.Pool(1) as pool:
        shape = pool.apply_async(_child_preprocess_shape).get(timeout=60)
    assert shape == (4, 3, 16, 16)


def _child_preprocess_shape():
    imgs = [Image.new("RGB", (30, 20), (i * 20, 0, 0)) for i in range(4)]
    return tuple(preprocess_batch(imgs, 16, mean=(0, 0, 0), std=(1, 1, 1)).shape)
