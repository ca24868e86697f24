"""The benchmark protocol (split data) and the pretraining captions."""

from __future__ import annotations

import numpy as np

from qc_stream.synth import DEFECT_TYPES, PRODUCTS
from qc_stream.synth.captions import caption, matches
from qc_stream.synth.split import load_split


def test_split_is_a_distribution_shift():
    s = load_split()
    assert set(s.auxiliary_products).isdisjoint(s.held_out_products)
    assert set(s.auxiliary_products) | set(s.held_out_products) == set(PRODUCTS)
    kinds = {PRODUCTS[p].kind for p in s.held_out_products}
    assert kinds == {"texture", "object"}  # held-out covers both kinds
    # novel types never occur on an auxiliary product; every held-out product has one
    for p in s.auxiliary_products:
        assert not set(PRODUCTS[p].defects) & set(s.novel_types)
    for p in s.held_out_products:
        assert s.types_of(p, novel=True)
    assert set(s.seen_types) | set(s.novel_types) == set(DEFECT_TYPES)
    assert set(s.seen_types).isdisjoint(s.novel_types)


def test_split_dict_is_serialisable_and_complete():
    d = load_split().to_dict()
    assert {"auxiliary_products", "held_out_products", "seen_types", "novel_types", "seeds"} <= set(
        d
    )
    assert len(set(d["seeds"].values())) == len(
        d["seeds"]
    )  # train/validation/test/pretrain seeds differ


def test_captions_name_the_product_or_a_generic_noun_and_the_state():
    rng = np.random.default_rng(0)
    seen_generic = seen_any = 0
    for _ in range(300):
        text, (noun, state) = caption(rng, "hex_nut", "rust")
        assert state in ("rust", "defect")
        if noun == "*":
            seen_generic += 1
            assert "hex nut" not in text
        else:
            assert "hex nut" in text
        if state == "rust":
            assert any(w in text for w in ("rust", "corrosion"))
        else:
            seen_any += 1
    assert 20 < seen_generic < 90 and 20 < seen_any < 90  # ~15 % each
    text, key = caption(rng, "pill", None)
    assert key[1] == "normal"


def test_multi_positive_matches():
    images = [("pill", "normal"), ("pill", "crack"), ("wood", "crack")]
    captions = [("pill", "normal"), ("*", "crack"), ("pill", "defect"), ("wood", "normal")]
    m = matches(images, captions)
    assert m.tolist() == [
        [True, False, False, False],
        [False, True, True, False],
        [False, True, False, False],
    ]


def test_closeup_crop_keeps_the_defect_and_captions_say_close_up():
    from qc_stream.synth import generate
    from qc_stream.synth.generator import closeup_crop

    rng = np.random.default_rng(1)
    for s in generate("washer", 12, seed=3, size=256, defect_rate=1.0):
        crop = closeup_crop(s, rng, 128)
        assert crop.shape == (128, 128, 3) and crop.dtype == np.uint8
        # the crop is a window of the image that still shows the defect's centre
        ys, xs = np.nonzero(s.mask)
        cy, cx = ys.mean(), xs.mean()
        hits = [
            (y, x)
            for y in range(0, 129)
            for x in range(0, 129)
            if np.array_equal(s.image[y : y + 128, x : x + 128], crop)
        ]
        assert hits and any(
            y + 0.15 * 128 <= cy <= y + 0.85 * 128 and x + 0.15 * 128 <= cx <= x + 0.85 * 128
            for y, x in hits
        )
    text, key = caption(rng, "washer", "rust", closeup=True)
    assert key[1] in ("rust", "defect")
    normal_text, _ = caption(np.random.default_rng(2), "washer", None, closeup=True)
    assert any(w in normal_text for w in ("close-up", "detail", "macro", "cropped"))
