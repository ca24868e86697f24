"""The synthetic catalog: products, defect types, and which defects each product can show.

Products are either textures (the whole frame is material) or objects (a part on a background).
Each product has its own defect subset, as in MVTec AD; the words are the defect vocabulary DAPO
scores and the registry starts with.
"""

from __future__ import annotations

from dataclasses import dataclass

from qc_stream.errors import InputError


@dataclass(frozen=True)
class Product:
    name: str
    kind: str  # "texture" | "object"
    defects: tuple[str, ...]
    noun: str  # how captions name it ("hex nut", "printed circuit board")
    material: str  # a generic word for the material or part ("metal", "board")


# word -> one-line description (also used for the registry's default descriptions)
DEFECT_TYPES: dict[str, str] = {
    "scratch": "thin bright or dark line scraped into the surface",
    "crack": "jagged dark fracture line, sometimes branching",
    "hole": "round or oval opening through the material",
    "stain": "irregular soft-edged blotch of a foreign tint",
    "contamination": "foreign particles or a fibre lying on the surface",
    "discoloration": "large faint patch of shifted colour",
    "cut": "straight sharp slit with a bright edge",
    "missing": "a part of the object or a component is absent",
    "bent": "locally deformed geometry",
    "rust": "rough orange-brown corrosion patch",
    "chip": "small piece broken off at an edge",
    "misprint": "smeared or stray ink marks",
    "dent": "shallow depression seen as a light/dark shading pair",
    "burn": "dark charred spot with a brown halo",
    "fold": "crease across the material with a sharp shading edge",
}

PRODUCTS: dict[str, Product] = {
    p.name: p
    for p in [
        # textures
        Product(
            "carpet",
            "texture",
            ("hole", "stain", "contamination", "cut", "discoloration"),
            "carpet",
            "fibre",
        ),
        Product(
            "wood",
            "texture",
            ("scratch", "crack", "hole", "stain", "discoloration"),
            "wood",
            "wood",
        ),
        Product(
            "tile",
            "texture",
            ("crack", "stain", "chip", "contamination"),
            "ceramic tile",
            "ceramic",
        ),
        Product(
            "fabric",
            "texture",
            ("hole", "stain", "cut", "contamination", "fold", "burn"),
            "fabric",
            "cloth",
        ),
        Product(
            "leather", "texture", ("scratch", "cut", "stain", "fold", "dent"), "leather", "leather"
        ),
        Product(
            "metal_plate",
            "texture",
            ("scratch", "rust", "dent", "burn", "discoloration"),
            "brushed metal plate",
            "metal",
        ),
        Product(
            "pcb",
            "texture",
            ("scratch", "missing", "contamination", "misprint", "crack"),
            "printed circuit board",
            "board",
        ),
        # objects
        Product(
            "pill",
            "object",
            ("crack", "contamination", "discoloration", "chip", "misprint"),
            "pill",
            "tablet",
        ),
        Product(
            "bottle", "object", ("crack", "contamination", "missing", "chip"), "bottle", "glass"
        ),
        Product(
            "hex_nut", "object", ("scratch", "rust", "bent", "missing"), "hex nut", "metal part"
        ),
        Product(
            "gear", "object", ("bent", "missing", "rust", "chip", "scratch"), "gear", "metal part"
        ),
        Product(
            "washer", "object", ("bent", "rust", "chip", "dent", "scratch"), "washer", "metal ring"
        ),
        Product(
            "capsule",
            "object",
            ("crack", "misprint", "dent", "contamination", "fold"),
            "capsule",
            "capsule",
        ),
        Product("screw", "object", ("scratch", "bent", "rust", "missing"), "screw", "metal part"),
    ]
}

# Generic words captions sometimes use instead of the product name (helps on unseen products).
GENERIC_NOUNS = ("object", "surface", "part", "item", "product")


def product(name: str) -> Product:
    """Look a product up by name; unknown names raise InputError listing the valid ones."""
    try:
        return PRODUCTS[name]
    except KeyError:
        raise InputError(
            f"unknown synthetic product {name!r}; choose one of: {', '.join(PRODUCTS)}"
        ) from None
