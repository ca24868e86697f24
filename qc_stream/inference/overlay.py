"""Overlay pictures for people: the frame with its anomaly heat map, region boxes and defect labels."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from qc_stream.domain.inspection import Region

HEAT_ALPHA = 0.45
HEAT_FLOOR = 0.05  # a map peaking below this is shown on this fixed scale, not stretched
BOX_COLOR = (255, 255, 255)  # RGB


def render_overlay(
    image: Image.Image,
    anomaly_map: np.ndarray,
    regions: Sequence[Region] = (),
    caption: str | None = None,
) -> Image.Image:
    """Blend a JET heat map of ``anomaly_map`` (0..1, any size, scaled to its own peak) over ``image``
    and draw the regions.

    Each region gets its bbox and a label ``"<defect type> <score>"``; ``caption`` (e.g. verdict and
    image score) goes in the top-left corner. Returns a new RGB picture the size of ``image``.
    """
    rgb = np.asarray(image.convert("RGB"))
    h, w = rgb.shape[:2]
    amap = np.asarray(anomaly_map, dtype=np.float32)
    if amap.shape != (h, w):
        amap = cv2.resize(amap, (w, h), interpolation=cv2.INTER_LINEAR)
    # Colours are relative to the frame's own peak (floored at HEAT_FLOOR): trained maps are often
    # faint in absolute terms (peaks ~0.1), and an absolute scale would paint them all cold. The
    # floor keeps a flat, near-zero map from being stretched into noise.
    amap = amap / max(float(amap.max()), HEAT_FLOOR)
    heat_u8 = np.clip(amap * 255.0, 0, 255).astype(np.uint8)
    heat = cv2.cvtColor(cv2.applyColorMap(heat_u8, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
    out = cv2.addWeighted(rgb, 1.0 - HEAT_ALPHA, heat, HEAT_ALPHA, 0.0)

    scale = max(0.35, min(w, h) / 600.0)  # text readable on small and large frames
    thick = max(1, int(round(scale * 2)))
    for r in regions:
        x0, y0, x1, y1 = r.bbox
        cv2.rectangle(out, (x0, y0), (max(x0, x1 - 1), max(y0, y1 - 1)), BOX_COLOR, thick)
        _label(out, f"{r.defect_type or 'anomaly'} {r.score:.2f}", (x0, y0), scale, thick)
    if caption:
        _label(
            out, caption, (0, h), scale, thick
        )  # bottom-left: region labels sit at the top of boxes
    return Image.fromarray(out)


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
    image: Image.Image,
    anomaly_map: np.ndarray,
    regions: Sequence[Region] = (),
    caption: str | None = None,
) -> Path:
    """Render and write a PNG (parent folders created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    render_overlay(image, anomaly_map, regions, caption).save(path, format="PNG")
    return path
