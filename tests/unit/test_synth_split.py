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
    assert {"auxiliary_products", "held_out_products", "seen_types", "novel_types", "seeds"} <= set(d)
    assert len(set(d["seeds"].values())) == len(d["seeds"])  # train/validation/test/pretrain seeds differ


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
