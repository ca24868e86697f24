"""Anomaly and type maps resized on the model's device, as cv2 would resize them on the host.

``Detector.forward`` keeps the batch's maps on the device and copies back only what the results
need: the maps at ``OVERLAY_MAP_PX`` at most (overlays, the review store, calibration), and, in
``finish``, the working-resolution maps of the frames that get regions (``Detector._regions``).

Same numbers as the host path (``cv2.resize``): bilinear with half-pixel centres for the anomaly
map (cv2's ``INTER_LINEAR``; float rounding differs by at most ~1e-6), and for type indices the
very source pixel ``INTER_NEAREST`` picks (its index rule, computed in double as cv2 does).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

# Side of the maps copied back for every frame. The model's map is an upsampled ViT patch grid
# (37 x 37 patches at 518 px), so 256 px keeps its detail at a quarter of the bytes; maps of models
# at up to 256 px come back as they are.
OVERLAY_MAP_PX = 256


def nearest_index(src: int, dst: int) -> np.ndarray:
    """The source index ``cv2.INTER_NEAREST`` reads for each of ``dst`` output pixels."""
    return np.minimum(np.floor(np.arange(dst) * (1.0 / (dst / src))), src - 1).astype(np.int64)


def resize_types(types: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """[..., H, W] integer map -> [..., h, w] for ``size`` = (w, h), nearest as cv2."""
    h, w = types.shape[-2:]
    rows = torch.from_numpy(nearest_index(h, size[1])).to(types.device)
    cols = torch.from_numpy(nearest_index(w, size[0])).to(types.device)
    return types.index_select(-2, rows).index_select(-1, cols)


def resize_map(amap: torch.Tensor, size: tuple[int, int], *, antialias: bool = False):
    """[B, H, W] float map -> [B, h, w] for ``size`` = (w, h): bilinear, half-pixel centres (cv2's
    ``INTER_LINEAR``); ``antialias`` averages over the footprint when shrinking (overlay maps)."""
    if tuple(amap.shape[-2:]) == (size[1], size[0]):
        return amap
    return F.interpolate(
        amap[:, None],
        size=(size[1], size[0]),
        mode="bilinear",
        align_corners=False,
        antialias=antialias,
    )[:, 0]


def overlay_maps(amap: torch.Tensor, types: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, S, S] anomaly map and type indices -> the same at ``OVERLAY_MAP_PX`` at most (area-
    weighted map, so a small peak is averaged in rather than skipped; nearest types)."""
    side = amap.shape[-1]
    if side <= OVERLAY_MAP_PX:
        return amap, types
    size = (OVERLAY_MAP_PX, OVERLAY_MAP_PX)
    return resize_map(amap, size, antialias=True), resize_types(types, size)
