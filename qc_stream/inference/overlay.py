"""Overlay pictures for people: the frame with its anomaly heat map on an absolute scale (with a
colour bar), region outlines, boxes and defect labels."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from qc_stream.domain.inspection import Region
from qc_stream.inference.device_decode import EncodedFrame, as_picture

HEAT_ALPHA = 0.45
# Absolute colour scale: map value 0 -> blue, HEAT_MAX and above -> red, the same on every frame
# so two overlays compare. Trained maps peak at ~0.1-0.4, so the scale stops well below 1.
HEAT_MAX = 0.5
BOX_COLOR = (255, 255, 255)  # RGB
OUTLINE_COLOR = (255, 0, 255)  # RGB: magenta, visible on the JET map and on most parts


def render_overlay(
    image: Image.Image | EncodedFrame,
    anomaly_map: np.ndarray,
    regions: Sequence[Region] = (),
    caption: str | None = None,
) -> Image.Image:
    """Blend a JET heat map of ``anomaly_map`` (0..1, any size; colours on the absolute scale
    0..HEAT_MAX) over ``image``, draw the regions and a colour bar on the right edge.

    Each region gets its outline, bbox and a label ``"<defect type> <peak score>"``; ``caption``
    (e.g. verdict and image score) goes in the bottom-left corner. Returns a new RGB picture the
    size of ``image`` (a frame left encoded for the device is decoded here, on the CPU).
    """
    rgb = np.asarray(as_picture(image).convert("RGB"))
    h, w = rgb.shape[:2]
    amap = np.asarray(anomaly_map, dtype=np.float32)
    if amap.shape != (h, w):
        amap = cv2.resize(amap, (w, h), interpolation=cv2.INTER_LINEAR)
    heat_u8 = np.clip(amap / HEAT_MAX * 255.0, 0, 255).astype(np.uint8)
    heat = cv2.cvtColor(cv2.applyColorMap(heat_u8, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
    out = cv2.addWeighted(rgb, 1.0 - HEAT_ALPHA, heat, HEAT_ALPHA, 0.0)

    scale = max(0.35, min(w, h) / 600.0)  # text readable on small and large frames
    thick = max(1, int(round(scale * 2)))
    for r in regions:
        x0, y0, x1, y1 = r.bbox
        cv2.rectangle(out, (x0, y0), (max(x0, x1 - 1), max(y0, y1 - 1)), BOX_COLOR, thick)
        if len(r.outline) >= 2:
            pts = np.asarray(r.outline, dtype=np.int32).reshape(-1, 1, 2)
            cv2.polylines(out, [pts], True, OUTLINE_COLOR, thick, cv2.LINE_AA)
        _label(out, f"{r.defect_type or 'anomaly'} {r.score:.2f}", (x0, y0), scale, thick)
    _colour_bar(out, scale, thick)
    if caption:
        _label(
            out, caption, (0, h), scale, thick
        )  # bottom-left: region labels sit at the top of boxes
    return Image.fromarray(out)


def _colour_bar(img: np.ndarray, scale: float, thick: int) -> None:
    """A vertical JET bar on the right edge, labelled with the absolute scale's ends."""
    h, w = img.shape[:2]
    bar_w = max(6, w // 40)
    top, bottom = max(4, h // 10), h - max(4, h // 10)
    if bottom - top < 16 or w < 4 * bar_w:
        return
    ramp = np.linspace(255, 0, bottom - top).astype(np.uint8)[:, None].repeat(bar_w, axis=1)
    colours = cv2.cvtColor(cv2.applyColorMap(ramp, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
    x0 = w - bar_w - 2
    img[top:bottom, x0 : x0 + bar_w] = colours
    small = scale * 0.8
    _label(img, f"{HEAT_MAX:g}", (x0, top), small, max(1, thick - 1))
    _label(img, "0", (x0, bottom), small, max(1, thick - 1), below=True)


def _label(
    img: np.ndarray, text: str, anchor: tuple[int, int], scale: float, thick: int, below=False
) -> None:
    """Text on a dark box above the anchor (below it when there is no room, or when asked)."""
    font = cv2.FONT_HERSHEY_SIMPLEX
    (tw, th), base = cv2.getTextSize(text, font, scale, thick)
    x, y = anchor
    pad = 2
    top = y + pad if below or y - th - base - 2 * pad < 0 else y - th - base - 2 * pad
    x = min(max(0, x), max(0, img.shape[1] - tw - 2 * pad))
    cv2.rectangle(img, (x, top), (x + tw + 2 * pad, top + th + base + 2 * pad), (0, 0, 0), -1)
    cv2.putText(
        img, text, (x + pad, top + pad + th), font, scale, (255, 255, 255), thick, cv2.LINE_AA
    )


def save_overlay(
    path: str | Path,
    image: Image.Image | EncodedFrame,
    anomaly_map: np.ndarray,
    regions: Sequence[Region] = (),
    caption: str | None = None,
) -> Path:
    """Render and write a PNG (parent folders created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    render_overlay(image, anomaly_map, regions, caption).save(path, format="PNG")
    return path
