"""Regions from a synthetic anomaly map, and the overlay picture drawn from them."""

import numpy as np
import pytest
from PIL import Image

from qc_stream.inference.overlay import render_overlay, save_overlay
from qc_stream.inference.regions import find_regions, scale_regions


def _map():
    amap = np.zeros((40, 60), dtype=np.float32)
    amap[5:10, 10:20] = 0.9  # region A: 50 px, peak 0.95
    amap[7, 12] = 0.95
    amap[30:33, 40:44] = 0.6  # region B: 12 px
    amap[30, 44] = 0.6  # still B
    amap[20, 5] = 0.7  # a speck: 1 px
    amap[34, 45] = 0.65  # 1 px, not touching B (row 33 is empty)
    types = np.full(amap.shape, -1)
    types[5:10, 10:20] = 1  # mostly "hole"
    types[5, 10:20] = 0  # one row of "crack" (10 px of 50)
    types[30:33, 40:45] = 0
    return amap, types


def test_regions_area_bbox_score_type_and_order():
    amap, types = _map()
    regions = find_regions(amap, 0.5, min_area=5, type_map=types, words=["crack", "hole"])
    assert len(regions) == 2  # the 1-px speck and the stray pixel fall below min_area
    a, b = regions
    assert (a.area_px, a.bbox, a.defect_type) == (50, (10, 5, 20, 10), "hole")
    assert a.score == pytest.approx(0.95)
    assert (b.area_px, b.bbox, b.defect_type) == (13, (40, 30, 45, 33), "crack")
    assert b.score == pytest.approx(0.6)


def test_regions_are_eight_connected_and_capped():
    amap = np.zeros((10, 10), dtype=np.float32)
    amap[2, 2] = amap[3, 3] = amap[4, 4] = 1.0
    (r,) = find_regions(amap, 0.5)
    assert r.area_px == 3 and r.bbox == (2, 2, 5, 5) and r.defect_type is None
    checker = np.zeros((20, 20), dtype=np.float32)
    checker[::2, ::2] = 1.0  # 100 isolated pixels (two apart: not even diagonal neighbours)
    assert len(find_regions(checker, 0.5, max_regions=7)) == 7


def test_capped_regions_are_the_strongest_of_many():
    # A noisy map with hundreds of components: the reported ones are the top ones by (score, area),
    # the same as ranking every component, and scores are the components' own peaks.
    from scipy import ndimage

    rng = np.random.default_rng(3)
    amap = ndimage.gaussian_filter(rng.random((120, 160)).astype(np.float32), 1.0)
    amap = (amap - amap.min()) / (amap.max() - amap.min())
    labels, n = ndimage.label(amap >= 0.55, structure=np.ones((3, 3), dtype=int))
    assert n > 50
    every = sorted(
        (
            (float(amap[labels == k].max()), int((labels == k).sum()))
            for k in range(1, n + 1)
            if (labels == k).sum() >= 2
        ),
        reverse=True,
    )
    found = find_regions(amap, 0.55, min_area=2, max_regions=10)
    assert [(r.score, r.area_px) for r in found] == [(pytest.approx(s), a) for s, a in every[:10]]
    for r in found:
        x0, y0, x1, y1 = r.bbox
        assert amap[y0:y1, x0:x1].max() >= r.score - 1e-6


def test_no_regions_below_threshold_and_shape_checks():
    assert find_regions(np.full((8, 8), 0.3, dtype=np.float32), 0.5) == []
    with pytest.raises(ValueError):
        find_regions(np.zeros((2, 2, 2)), 0.5)
    with pytest.raises(ValueError):
        find_regions(np.zeros((4, 4)), 0.5, type_map=np.zeros((3, 3)), words=["x"])


def test_overlay_draws_heat_and_boxes(tmp_path):
    amap, types = _map()
    regions = find_regions(amap, 0.5, min_area=5, type_map=types, words=["crack", "hole"])
    img = Image.new("RGB", (120, 80), (128, 128, 128))  # twice the map size: the map is resized
    out = render_overlay(
        img,
        amap,
        [r.model_copy(update={"bbox": tuple(2 * v for v in r.bbox)}) for r in regions],
        caption="reject 0.93",
    )
    assert out.size == img.size and out.mode == "RGB"
    arr = np.asarray(out).astype(int)
    assert not np.array_equal(arr, np.asarray(img))  # something was drawn
    hot, cold = arr[15, 30], arr[60, 10]  # inside region A (scaled), and a zero-score spot
    assert hot[0] > cold[0] or hot[2] < cold[2]  # heat map: hot is redder / less blue than cold
    path = save_overlay(tmp_path / "sub" / "x.png", img, amap, regions)
    assert Image.open(path).size == img.size


def test_overlay_shows_a_faint_map_relative_to_its_peak():
    img = Image.new("RGB", (64, 64), (128, 128, 128))
    faint = np.zeros((64, 64), np.float32)
    faint[10:20, 10:20] = 0.1  # a trained map's typical peak
    arr = np.asarray(render_overlay(img, faint)).astype(int)
    hot, cold = arr[15, 15], arr[50, 50]
    assert hot[0] > hot[2] + 40 and cold[2] > cold[0] + 40  # the peak is drawn red, the rest blue
    flat = np.full((64, 64), 0.01, np.float32)  # below the floor: not stretched to full heat
    px = np.asarray(render_overlay(img, flat)).astype(int)[30, 30]
    assert px[2] > px[0] + 40  # still cold


def test_scale_regions_to_image_pixels():
    from qc_stream.domain.inspection import Region

    r = Region(defect_type="dent", area_px=10, bbox=(3, 1, 8, 4), score=0.7)
    (big,) = scale_regions([r], sx=0.5, sy=0.25, width=15, height=100)
    assert big.bbox == (6, 4, 15, 16)  # x1 = 16 clipped to the width
    assert big.area_px == 80 and big.defect_type == "dent" and big.score == 0.7
