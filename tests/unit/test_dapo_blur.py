"""DAPO's map smoothing as matrix products is the separable Gaussian convolution with reflect
padding it replaced (the reference below), for square, non-square and tiny maps."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from qc_stream.dapo.model import gaussian_blur


def _reference(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = max(1, int(math.ceil(3 * sigma)))
    radius = min(radius, maps.shape[-1] - 1, maps.shape[-2] - 1)
    xs = torch.arange(-radius, radius + 1, dtype=maps.dtype)
    kernel = torch.exp(-(xs**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    x = maps.unsqueeze(1)
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="reflect"), kernel.view(1, 1, 1, -1))
    x = F.conv2d(F.pad(x, (0, 0, radius, radius), mode="reflect"), kernel.view(1, 1, -1, 1))
    return x.squeeze(1)


@pytest.mark.parametrize(
    "shape,sigma", [((3, 48, 48), 4.0), ((2, 50, 70), 4.0), ((2, 5, 9), 4.0), ((1, 32, 24), 1.5)]
)
def test_blur_is_the_separable_reflect_padded_convolution(shape, sigma):
    maps = torch.rand(*shape, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(gaussian_blur(maps, sigma), _reference(maps, sigma))


def test_blur_keeps_mass_and_is_off_at_sigma_zero():
    maps = torch.zeros(1, 40, 40)
    maps[0, 20, 20] = 1.0
    blurred = gaussian_blur(maps, 4.0)
    assert blurred.sum().item() == pytest.approx(1.0, abs=1e-5)  # interior: nothing reflected
    assert blurred[0, 20, 20] < 0.02 and blurred[0, 20, 24] > 0.0
    assert gaussian_blur(maps, 0.0) is maps
