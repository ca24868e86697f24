"""What a defect type is and which registrations are valid (pure: no I/O).

A defect type's name is the plain-text word DAPO inserts into its abnormal prompt
("[W1..Wl] <name> anomaly object"), so it must be a short readable phrase. Names are unique per
product ignoring case and spacing: ``name_key`` is the comparison key (the DB enforces it too).
"""

from __future__ import annotations

import re
import unicodedata
from datetime import datetime
from enum import Enum

from pydantic import BaseModel, ConfigDict

from qc_stream.errors import InputError

MAX_PRODUCT_LEN = 64
MAX_NAME_LEN = 40
MAX_DESCRIPTION_LEN = 500
MAX_NOTE_LEN = 500  # root cause, corrective action

_SPACES = re.compile(r"\s+")
_WHITESPACE_NAMES = {"\t": "tab", "\n": "newline", "\r": "carriage return"}


class DefectStatus(str, Enum):
    ACTIVE = "active"
    RETIRED = "retired"


class DefectTypeSpec(BaseModel):
    """A validated registration request (normalised text)."""

    model_config = ConfigDict(frozen=True)

    product: str
    name: str
    description: str = ""
    root_cause: str | None = None
    corrective_action: str | None = None

    @property
    def name_key(self) -> str:
        return name_key(self.name)


class DefectType(DefectTypeSpec):
    """A registered defect type as stored."""

    status: DefectStatus = DefectStatus.ACTIVE
    created_at: datetime | None = None
    retired_at: datetime | None = None

    @property
    def active(self) -> bool:
        return self.status is DefectStatus.ACTIVE


class DefectTypeEvent(BaseModel):
    """The value of a ``qc.defect-types`` record (compacted topic, key = :func:`event_key`)."""

    model_config = ConfigDict(frozen=True)

    product: str
    name: str
    description: str
    root_cause: str | None
    corrective_action: str | None
    status: DefectStatus
    changed_at: datetime

    @classmethod
    def of(cls, defect: DefectType, changed_at: datetime) -> DefectTypeEvent:
        return cls(
            product=defect.product,
            name=defect.name,
            description=defect.description,
            root_cause=defect.root_cause,
            corrective_action=defect.corrective_action,
            status=defect.status,
            changed_at=changed_at,
        )

    @property
    def key(self) -> str:
        return event_key(self.product, self.name)


def name_key(name: str) -> str:
    """Case- and spacing-insensitive comparison key: ``" Faulty  Imprint"`` -> ``"faulty imprint"``."""
    return _SPACES.sub(" ", unicodedata.normalize("NFKC", name)).strip().casefold()


def event_key(product: str, name: str) -> str:
    return f"{product}/{name_key(name)}"


def _clean(value: str, *, what: str, max_len: int, single_line: bool) -> str:
    value = unicodedata.normalize("NFKC", value).strip()
    if not value:
        raise InputError(f"{what} must not be empty")
    if single_line:
        # A line break or tab inside a name is a paste accident, not spacing: refuse it rather than
        # register a name nobody typed. Runs of plain spaces are still collapsed.
        breaks = [c for c in value if c.isspace() and c != " "]
        if breaks:
            raise InputError(
                f"{what} {value!r} contains a {_WHITESPACE_NAMES.get(breaks[0], 'line break')}; "
                "use single spaces"
            )
        value = _SPACES.sub(" ", value)
    if len(value) > max_len:
        raise InputError(f"{what} is {len(value)} characters long; at most {max_len} are allowed")
    # Free text may span lines; anything else non-printable (control, zero-width) is refused.
    bad = [c for c in value if not (c.isprintable() or (not single_line and c in "\n\t"))]
    if bad:
        raise InputError(f"{what} contains a non-printable character {bad[0]!r}")
    return value


def normalise_product(product: str) -> str:
    product = _clean(product, what="product", max_len=MAX_PRODUCT_LEN, single_line=True)
    if "/" in product:
        raise InputError(f"product {product!r} must not contain '/'")
    return product


def validate_defect_type(
    product: str,
    name: str,
    description: str | None = None,
    root_cause: str | None = None,
    corrective_action: str | None = None,
    *,
    allowed_products: frozenset[str] | None = None,
) -> DefectTypeSpec:
    """Check and normalise a registration; raise ``InputError`` naming the first problem.

    ``allowed_products``: when given (products are restricted), any other product is refused.
    """
    product = normalise_product(product)
    if allowed_products is not None and product not in allowed_products:
        known = ", ".join(sorted(allowed_products)) or "none"
        raise InputError(f"unknown product {product!r} (known products: {known})")
    name = _clean(name, what="defect name", max_len=MAX_NAME_LEN, single_line=True)
    if not any(c.isalpha() for c in name):
        raise InputError(
            f"defect name {name!r} must contain a letter (it is a word the model reads)"
        )
    description = _optional(description, what="description", max_len=MAX_DESCRIPTION_LEN) or ""
    return DefectTypeSpec(
        product=product,
        name=name,
        description=description,
        root_cause=_optional(root_cause, what="root cause", max_len=MAX_NOTE_LEN),
        corrective_action=_optional(
            corrective_action, what="corrective action", max_len=MAX_NOTE_LEN
        ),
    )


def _optional(value: str | None, *, what: str, max_len: int) -> str | None:
    """Optional free text: None or blank means absent; otherwise the same rules as names."""
    if value is None or not value.strip():
        return None
    return _clean(value, what=what, max_len=max_len, single_line=False)


def vocabulary(defects: list[DefectType]) -> dict[str, list[str]]:
    """Active defect words per product (sorted, deterministic): the prompt vocabulary."""
    out: dict[str, list[str]] = {}
    for d in defects:
        if d.active:
            out.setdefault(d.product, []).append(d.name)
    return {p: sorted(words, key=name_key) for p, words in sorted(out.items())}


def merge_vocabulary(parent: dict, defects: list[DefectType]) -> dict:
    """The prompt vocabulary after registry changes, in the manifest's shape ``{words, products}``.

    ``parent`` is the active version's vocabulary. Per product: the parent's words minus the types
    retired for that product, plus its active registered types (registering adds, retiring removes).
    ``words``: the parent's words plus every registered word, deduplicated ignoring case (the first
    spelling seen is the one the model reads), minus retired words that no product uses any more.
    Applying it twice gives the same result, so the parent may already contain earlier changes.
    """
    spelling: dict[str, str] = {}
    for w in parent.get("words") or []:
        spelling.setdefault(name_key(w), w)
    registered = vocabulary(defects)
    for words in registered.values():
        for w in words:
            spelling.setdefault(name_key(w), w)

    retired_for: dict[str, set[str]] = {}
    for d in defects:
        if not d.active:
            retired_for.setdefault(d.product, set()).add(name_key(d.name))
    products: dict[str, list[str]] = {}
    for p in sorted(set(parent.get("products") or {}) | {d.product for d in defects}):
        kept = [
            w
            for w in (parent.get("products") or {}).get(p, [])
            if name_key(w) not in retired_for.get(p, set())
        ]
        seen = {name_key(w) for w in kept}
        added = [w for w in registered.get(p, []) if name_key(w) not in seen]
        products[p] = [spelling.get(name_key(w), w) for w in kept + added]

    in_use = {name_key(w) for ws in products.values() for w in ws}
    retired = {k for keys in retired_for.values() for k in keys}
    words = [w for k, w in spelling.items() if k in in_use or k not in retired]
    return {"words": words, "products": products}
