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


def test_overlay_colours_are_on_an_absolute_scale_with_a_colour_bar():
    from qc_stream.inference.overlay import HEAT_MAX

    img = Image.new("RGB", (128, 128), (128, 128, 128))
    strong = np.zeros((128, 128), np.float32)
    strong[10:30, 10:30] = HEAT_MAX  # the top of the scale
    strong[60:80, 10:30] = 0.1
    faint = np.zeros((128, 128), np.float32)
    faint[60:80, 10:30] = 0.1  # the same value on a frame whose peak it is
    a = np.asarray(render_overlay(img, strong)).astype(int)
    b = np.asarray(render_overlay(img, faint)).astype(int)
    assert a[20, 20][0] > a[20, 20][2] + 40  # HEAT_MAX is drawn red
    assert (a[70, 20] == b[70, 20]).all()  # 0.1 looks the same whatever the frame's peak
    assert b[70, 20][2] > b[70, 20][0]  # and 0.1 is cold on the absolute scale
    high, low = b[45, 124], b[105, 124]  # the colour bar on the right edge (labels at its ends)
    assert high[0] > high[2] + 40 and low[2] > low[0] + 40  # red at the top, blue at the bottom


def test_overlay_draws_region_outlines():
    img = Image.new("RGB", (60, 40), (128, 128, 128))
    amap, types = _map()
    words = ["crack", "hole"]
    regions = find_regions(amap, 0.5, type_map=types, words=words)
    with_outline = np.asarray(render_overlay(img, amap, regions[:1])).astype(int)
    no_outline = np.asarray(
        render_overlay(img, amap, [regions[0].model_copy(update={"outline": []})])
    ).astype(int)
    assert not np.array_equal(with_outline, no_outline)


def test_regions_carry_centroid_mean_and_outline():
    amap, types = _map()
    words = ["crack", "hole"]
    a = find_regions(amap, 0.5, type_map=types, words=words)[0]
    assert a.bbox == (10, 5, 20, 10)
    assert a.centroid == pytest.approx((14.5, 7.0))
    assert a.mean_score == pytest.approx((49 * 0.9 + 0.95) / 50, abs=1e-6)
    assert a.score == pytest.approx(0.95)  # the peak
    xs, ys = zip(*a.outline)
    assert len(a.outline) >= 4 and min(xs) == 10 and max(xs) == 19 and min(ys) == 5 and max(ys) == 9


def test_scaled_regions_scale_outline_and_centroid_inside_the_image():
    amap, types = _map()
    words = ["crack", "hole"]
    a = find_regions(amap, 0.5, type_map=types, words=words)[0]
    (big,) = scale_regions([a], sx=0.5, sy=0.5, width=120, height=80)
    assert big.centroid == pytest.approx((29.5, 14.5))
    x0, y0, x1, y1 = big.bbox
    assert all(x0 <= x < x1 and y0 <= y < y1 for x, y in big.outline)


def test_region_hit_and_iou_against_a_true_mask():
    from qc_stream.evaluation.regions import frame_region_scores

    amap, types = _map()
    words = ["crack", "hole"]
    regions = find_regions(amap, 0.5, type_map=types, words=words, min_area=4)
    truth = np.zeros(amap.shape, np.uint8)
    truth[5:10, 10:20] = 1  # exactly region A
    hit, iou = frame_region_scores(regions, truth)
    assert hit and 0.5 < iou < 1.0  # region B also counts in the union
    elsewhere = np.zeros(amap.shape, np.uint8)
    elsewhere[20:25, 50:55] = 1
    assert frame_region_scores(regions, elsewhere) == (False, 0.0)
    assert frame_region_scores([], truth) == (False, 0.0)


def test_scale_regions_to_image_pixels():
    from qc_stream.domain.inspection import Region

    r = Region(defect_type="dent", area_px=10, bbox=(3, 1, 8, 4), score=0.7)
    (big,) = scale_regions([r], sx=0.5, sy=0.25, width=15, height=100)
    assert big.bbox == (6, 4, 15, 16)  # x1 = 16 clipped to the width
    assert big.area_px == 80 and big.defect_type == "dent" and big.score == 0.7
