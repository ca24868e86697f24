"""JPEG bytes -> the backbone's input tensor, decoded and resized on the device.

On a GPU worker the CPU path (``decode_image`` + ``preprocess_batch``) spends more per 1-5 MP frame
decoding the JPEG than the model spends on it. ``preprocess_bytes`` decodes the frames the GPU's
decoder handles (torchvision's nvJPEG path, one batched call) and resizes them on the device; every
other frame takes the CPU path, one by one, with its exact checks and conversions, and lands in the
same batch.

Which frames go to the device (``device_decodable``): baseline or extended sequential JPEGs, 8 bits,
1 (grey) or 3 (YCbCr) components, without an EXIF segment (the CPU path applies EXIF orientation,
nvJPEG would not), within the CPU path's size limits. PNG, 16-bit, CMYK/YCCK, progressive or
EXIF-tagged frames take the CPU path.

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

import torch

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


def preprocess_bytes(
    datas: Sequence[bytes],
    size: int,
    mean: Sequence[float],
    std: Sequence[float],
    device="cuda",
    *,
    decode_cpu=decode_image,
) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """Encoded frames -> (normalised float [B, 3, size, size] on ``device``, (width, height) per
    frame). Device-decodable JPEGs are decoded in one batched call on ``device`` and resized there;
    the rest go through ``decode_cpu`` (``InputError`` for a bad frame, as on the CPU path) and
    ``resize_rgb``. Works on the CPU too (torchvision's libjpeg path), which is how it is tested
    where there is no GPU."""
    from torchvision.io import ImageReadMode, decode_jpeg

    if not datas:
        raise ValueError("empty batch")
    device = torch.device(device)
    on_device = [i for i, d in enumerate(datas) if device_decodable(d)]
    out: list[torch.Tensor | None] = [None] * len(datas)
    sizes: list[tuple[int, int]] = [(0, 0)] * len(datas)
    if on_device:
        encoded = [torch.frombuffer(bytearray(datas[i]), dtype=torch.uint8) for i in on_device]
        with warnings.catch_warnings():
            # torchvision 0.29 announces its decoders move to TorchCodec; the pin holds them here.
            warnings.simplefilter("ignore", DeprecationWarning)
            decoded = decode_jpeg(encoded, mode=ImageReadMode.RGB, device=device)
        for i, img in zip(on_device, decoded, strict=True):
            sizes[i] = (int(img.shape[2]), int(img.shape[1]))
            out[i] = resize_on_device(img, size)
    for i, data in enumerate(datas):
        if out[i] is None:
            picture = decode_cpu(data)
            sizes[i] = picture.size
            arr = resize_rgb(picture, size)
            if not arr.flags.writeable:  # PIL's buffer: torch wants memory it may own
                arr = arr.copy()
            out[i] = torch.from_numpy(arr).permute(2, 0, 1).to(device, non_blocking=True)
    t = torch.stack(out).float().div_(255.0)  # type: ignore[arg-type]
    m = torch.tensor(mean, device=device, dtype=t.dtype).view(1, 3, 1, 1)
    s = torch.tensor(std, device=device, dtype=t.dtype).view(1, 3, 1, 1)
    return t.sub_(m).div_(s).contiguous(), sizes
