"""Image captions for contrastive pretraining: templates, synonyms and generic nouns.

A caption has a *key* (noun, state): noun is a product name or "*" (a generic word such as
"object"), state is "normal", a defect type, or "defect" (any defect). `matches` says which images a
caption correctly describes; the multi-positive loss counts all of them as positives.
"""

from __future__ import annotations

import numpy as np

from qc_stream.domain.catalog import GENERIC_NOUNS, PRODUCTS

NORMAL_ADJECTIVES = (
    "flawless",
    "perfect",
    "normal",
    "good",
    "intact",
    "unblemished",
    "clean",
    "defect-free",
)
NORMAL_TEMPLATES = (
    "a photo of a {adj} {noun}",
    "a close-up photo of a {adj} {noun}",
    "an industrial photo of a {adj} {noun}",
    "a {adj} {noun}",
    "a {noun} without defects",
    "a {noun} in good condition",
    "a cropped photo of the {adj} {noun}",
)
DEFECT_PHRASES: dict[str, tuple[str, ...]] = {
    "scratch": ("a scratch", "scratches", "a long scratch"),
    "crack": ("a crack", "cracks", "a fracture"),
    "hole": ("a hole", "holes", "a puncture"),
    "stain": ("a stain", "stains", "a blotch"),
    "contamination": ("contamination", "foreign particles", "dirt"),
    "discoloration": ("discoloration", "a discolored patch", "a color shift"),
    "cut": ("a cut", "a slit", "a cut line"),
    "missing": ("a missing part", "a missing piece", "missing material"),
    "bent": ("a bent part", "a bent edge", "a deformation"),
    "rust": ("rust", "corrosion", "a rust spot"),
    "chip": ("a chip", "a chipped edge", "a chipped corner"),
    "misprint": ("a misprint", "smeared print", "stray ink"),
    "dent": ("a dent", "dents", "a depression"),
    "burn": ("a burn", "a burn mark", "a scorch mark"),
    "fold": ("a fold", "a crease", "a folded wrinkle"),
}
DEFECT_TEMPLATES = (
    "a photo of a {noun} with {phrase}",
    "a close-up photo of {noun} with {phrase}",
    "{phrase} on a {noun}",
    "a defective {noun} with {phrase}",
    "an industrial photo of a {noun} showing {phrase}",
    "a {noun} with {phrase}",
)
ANY_DEFECT_TEMPLATES = (
    "a photo of a damaged {noun}",
    "a defective {noun}",
    "a {noun} with a flaw",
    "a {noun} with damage",
    "a photo of an anomalous {noun}",
    "a close-up photo of a broken {noun}",
)

# close-up crops of a part (pretraining zooms in, so small defects fill more of the frame)
CLOSEUP_NORMAL_TEMPLATES = (
    "a close-up photo of a {adj} {noun}",
    "a detail of a {adj} {noun}",
    "a macro photo of a {adj} {noun} surface",
    "a cropped photo of the {adj} {noun}",
)
CLOSEUP_DEFECT_TEMPLATES = (
    "a close-up photo of {noun} with {phrase}",
    "a detail of a {noun} showing {phrase}",
    "a macro photo of {phrase} on a {noun}",
    "a cropped photo of a {noun} with {phrase}",
)

GENERIC_SHARE = 0.15  # captions that say "object"/"surface" instead of the product's name
ANY_DEFECT_SHARE = 0.15  # defect captions that do not name the type


def caption(
    rng: np.random.Generator, product: str, defect_type: str | None, closeup: bool = False
) -> tuple[str, tuple[str, str]]:
    """One caption for an image of `product` in state `defect_type` (None = normal) and its key.
    `closeup`: the image is a zoomed-in crop of the part (close-up templates)."""
    generic = rng.random() < GENERIC_SHARE
    noun = str(rng.choice(GENERIC_NOUNS)) if generic else PRODUCTS[product].noun
    key_noun = "*" if generic else product
    if defect_type is None:
        t = str(rng.choice(CLOSEUP_NORMAL_TEMPLATES if closeup else NORMAL_TEMPLATES))
        return t.format(adj=str(rng.choice(NORMAL_ADJECTIVES)), noun=noun), (key_noun, "normal")
    if rng.random() < ANY_DEFECT_SHARE:
        return str(rng.choice(ANY_DEFECT_TEMPLATES)).format(noun=noun), (key_noun, "defect")
    phrases = DEFECT_PHRASES[defect_type]
    # the plain defect word most of the time: DAPO's prompts use exactly that word
    phrase = phrases[0] if rng.random() < 0.6 else str(rng.choice(phrases[1:]))
    templates = CLOSEUP_DEFECT_TEMPLATES if closeup else DEFECT_TEMPLATES
    return str(rng.choice(templates)).format(noun=noun, phrase=phrase), (key_noun, defect_type)


def matches(image_keys: list[tuple[str, str]], caption_keys: list[tuple[str, str]]) -> np.ndarray:
    """bool [n_images, n_captions]: caption j correctly describes image i.

    image key = (product, state) with state "normal" or a defect type."""
    ip = np.array([k[0] for k in image_keys])
    ist = np.array([k[1] for k in image_keys])
    cp = np.array([k[0] for k in caption_keys])
    cst = np.array([k[1] for k in caption_keys])
    noun_ok = (cp[None, :] == "*") | (cp[None, :] == ip[:, None])
    state_ok = (cst[None, :] == ist[:, None]) | (
        (cst[None, :] == "defect") & (ist[:, None] != "normal")
    )
    return noun_ok & state_ok
