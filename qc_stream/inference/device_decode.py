"""JPEG bytes -> the backbone's input tensor, decoded and resized on the device.

On a GPU worker the CPU path (``decode_image`` + ``preprocess_batch``) spends more per 1-5 MP frame
decoding the JPEG than the model spends on it. With ``QC_DEVICE_DECODE`` on (``device_decode_on``:
``auto`` is on when the model runs on CUDA) the worker and ``predict`` read each frame with
``defer_decode``: a frame the device decodes stays an ``EncodedFrame`` (its bytes and header size),
any other is decoded on the CPU at once (with its exact checks and error messages).
``preprocess_frames`` then decodes the ``EncodedFrame``s of a batch in one batched call on the
device (torchvision's nvJPEG path) and resizes them there; the CPU-decoded pictures are resized
on the CPU and land in the same batch.

Which frames go to the device (``device_decodable``): baseline or extended sequential JPEGs, 8 bits,
1 (grey) or 3 (YCbCr) components, without an EXIF segment (the CPU path applies EXIF orientation,
nvJPEG would not), ending in an end-of-image marker (a truncated frame gets the CPU path's error),
within the CPU path's size limits. PNG, 16-bit, CMYK/YCCK, progressive or EXIF-tagged frames take
the CPU path.

Tolerance against the CPU path, same frame: the decoders differ by at most a few grey levels
(IDCT and chroma upsampling), and the resize is torch's antialiased bicubic instead of PIL's
reducing-gap bicubic: mean absolute difference at most 2 grey levels, 99th percentile at most 12 on
the synthetic camera frames (``tests/unit/test_device_decode.py``; on the CPU, libjpeg both ways,
the resize alone gives mean 0.13 and 99th percentile 1 grey level; the nvJPEG run needs a GPU).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from qc_stream.inference.decode import MAX_PIXELS, MIN_SIDE_PX, decode_image, resize_rgb

# Start-of-frame markers the device decoder takes: baseline (C0) and extended sequential (C1).
_SEQUENTIAL_SOF = {0xC0, 0xC1}
# Every other start-of-frame marker (progressive, lossless, arithmetic, hierarchical).
_OTHER_SOF = {0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


@dataclass(frozen=True)
class JpegHeader:
    width: int
    height: int
    components: int
    precision: int  # bits per sample
    sequential: bool  # baseline / extended sequential (not progressive, lossless, ...)
    exif: bool  # an APP1 "Exif" segment (may carry an orientation)
    adobe: bool  # an APP14 "Adobe" segment (CMYK / YCCK colour transforms)


def jpeg_header(data: bytes) -> JpegHeader | None:
    """The JPEG's frame header and the segments that matter here, or None if ``data`` is not a
    JPEG (or its header is cut short). Reads markers up to the first start of frame only."""
    if len(data) < 4 or data[0] != 0xFF or data[1] != 0xD8:
        return None
    i, exif, adobe = 2, False, False
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        length = int.from_bytes(data[i + 2 : i + 4], "big")
        body = data[i + 4 : i + 2 + length]
        if marker == 0xE1 and body.startswith(b"Exif\0"):
            exif = True
        elif marker == 0xEE and body.startswith(b"Adobe"):
            adobe = True
        elif marker in _SEQUENTIAL_SOF or marker in _OTHER_SOF:
            if len(body) < 6:
                return None
            return JpegHeader(
                width=int.from_bytes(body[3:5], "big"),
                height=int.from_bytes(body[1:3], "big"),
                components=body[5],
                precision=body[0],
                sequential=marker in _SEQUENTIAL_SOF,
                exif=exif,
                adobe=adobe,
            )
        elif marker in (0xD9, 0xDA):  # end of image / start of scan before any frame header
            return None
        i += 2 + length
    return None


def device_decodable(
    data: bytes, *, max_pixels: int = MAX_PIXELS, min_side: int = MIN_SIDE_PX
) -> bool:
    """Whether ``data`` goes to the device decoder (see the module's docstring); everything else,
    including every frame the CPU path would refuse, takes the CPU path and its error message."""
    h = jpeg_header(data)
    return (
        h is not None
        and h.sequential
        and h.precision == 8
        and h.components in (1, 3)
        and not h.exif
        and not h.adobe
        and data.endswith(b"\xff\xd9")
        and min(h.width, h.height) >= min_side
        and h.width * h.height <= max_pixels
    )


def resize_on_device(image: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 [3, H, W] -> uint8 [3, size, size] on the same device: the whole frame (no crop, as
    ``resize_rgb``), bicubic with antialiasing when shrinking."""
    x = image.unsqueeze(0).float()
    y = torch.nn.functional.interpolate(
        x, size=(size, size), mode="bicubic", align_corners=False, antialias=True
    )
    return y.round_().clamp_(0, 255).to(torch.uint8)[0]


@dataclass(frozen=True, eq=False)
class EncodedFrame:
    """A frame left encoded for the device decoder: its JPEG bytes and (width, height) from the
    header (what ``PIL.Image.size`` would say), so a batch knows each frame's size before decoding."""

    data: bytes
    size: tuple[int, int]


def device_decode_on(settings) -> bool:
    """``QC_DEVICE_DECODE``: ``on``/``off``, or ``auto``: on when the model runs on CUDA."""
    mode = settings.device_decode
    if mode == "auto":
        return settings.device == "cuda" or (
            settings.device == "auto" and torch.cuda.is_available()
        )
    return mode == "on"


def defer_decode(data: bytes) -> EncodedFrame | Image.Image:
    """The frame as the device-decode path takes it: an ``EncodedFrame`` when the device decodes it,
    else the CPU path's picture (``decode_image``, which raises ``InputError`` for a bad frame)."""
    if device_decodable(data):
        h = jpeg_header(data)
        return EncodedFrame(data, (h.width, h.height))  # type: ignore[union-attr]
    return decode_image(data)


def as_picture(frame: EncodedFrame | Image.Image) -> Image.Image:
    """An RGB picture of ``frame``, decoded on the CPU if it was left encoded (overlays of the few
    frames that get one)."""
    return decode_image(frame.data) if isinstance(frame, EncodedFrame) else frame


def _decode_on_device(datas: list[bytes], device: torch.device) -> list[torch.Tensor]:
    """uint8 [3, H, W] per JPEG, one batched call; if the batch fails (a frame whose header passed
    but whose data is corrupt), frame by frame, a frame the device refuses going to the CPU path
    (its picture, or its ``InputError``)."""
    from torchvision.io import ImageReadMode, decode_jpeg

    def decode(batch):
        encoded = [torch.frombuffer(bytearray(d), dtype=torch.uint8) for d in batch]
        with warnings.catch_warnings():
            # torchvision 0.29 announces its decoders move to TorchCodec; the pin holds them here.
            warnings.simplefilter("ignore", DeprecationWarning)
            return decode_jpeg(encoded, mode=ImageReadMode.RGB, device=device)

    try:
        return list(decode(datas))
    except RuntimeError:
        if len(datas) == 1:
            return [_cpu_tensor(decode_image(datas[0]), device)]
        return [_decode_on_device([d], device)[0] for d in datas]


def _cpu_tensor(picture: Image.Image, device: torch.device, size: int | None = None):
    """uint8 [3, H, W] on ``device`` of ``picture``, resized by the CPU path to ``size`` if given."""
    arr = resize_rgb(picture, size) if size is not None else np.asarray(picture.convert("RGB"))
    if not arr.flags.writeable:  # PIL's buffer: torch wants memory it may own
        arr = arr.copy()
    return torch.from_numpy(arr).permute(2, 0, 1).to(device, non_blocking=True)


def preprocess_frames(
    frames: Sequence[bytes | EncodedFrame | Image.Image],
    size: int,
    mean: Sequence[float],
    std: Sequence[float],
    device="cuda",
    *,
    decode_cpu=decode_image,
) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """Frames -> (normalised float [B, 3, size, size] on ``device``, (width, height) per frame).

    ``EncodedFrame``s and device-decodable JPEG bytes are decoded in one batched call on ``device``
    and resized there; other bytes go through ``decode_cpu`` (``InputError`` for a bad frame, as on
    the CPU path) and, like pictures, ``resize_rgb``. Works on the CPU too (torchvision's libjpeg
    path), which is how it is tested where there is no GPU."""
    if not frames:
        raise ValueError("empty batch")
    device = torch.device(device)
    items: list[EncodedFrame | Image.Image] = [
        (EncodedFrame(f, (0, 0)) if device_decodable(f) else decode_cpu(f))
        if isinstance(f, bytes | bytearray)
        else f
        for f in frames
    ]
    on_device = [i for i, f in enumerate(items) if isinstance(f, EncodedFrame)]
    out: list[torch.Tensor | None] = [None] * len(items)
    sizes: list[tuple[int, int]] = [(0, 0)] * len(items)
    if on_device:
        decoded = _decode_on_device([items[i].data for i in on_device], device)  # type: ignore[union-attr]
        for i, img in zip(on_device, decoded, strict=True):
            sizes[i] = (int(img.shape[2]), int(img.shape[1]))
            out[i] = resize_on_device(img, size)
    for i, item in enumerate(items):
        if out[i] is None:
            sizes[i] = item.size
            out[i] = _cpu_tensor(item, device, size)  # type: ignore[arg-type]
    t = torch.stack(out).float().div_(255.0)  # type: ignore[arg-type]
    m = torch.tensor(mean, device=device, dtype=t.dtype).view(1, 3, 1, 1)
    s = torch.tensor(std, device=device, dtype=t.dtype).view(1, 3, 1, 1)
    return t.sub_(m).div_(s).contiguous(), sizes
