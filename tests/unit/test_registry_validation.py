"""Pure validation rules for defect-type registrations (qc_stream.domain.defects)."""

import pytest

from qc_stream.domain.defects import (
    MAX_DESCRIPTION_LEN,
    MAX_NAME_LEN,
    DefectStatus,
    DefectType,
    event_key,
    name_key,
    validate_defect_type,
    vocabulary,
)
from qc_stream.errors import InputError


def test_valid_registration_is_normalised():
    spec = validate_defect_type(
        "  pill ",
        "  Faulty   Imprint ",
        "  ink smeared  ",
        root_cause="",
        corrective_action=" clean the printer ",
    )
    assert spec.product == "pill"
    assert spec.name == "Faulty Imprint"
    assert spec.description == "ink smeared"
    assert spec.root_cause is None
    assert spec.corrective_action == "clean the printer"
    assert spec.name_key == "faulty imprint"


def test_name_key_ignores_case_and_spacing():
    assert name_key("DENT") == name_key(" dent ") == "dent"
    assert name_key("Wrong  Place") == "wrong place"
    assert event_key("pill", " Wrong Place") == "pill/wrong place"


@pytest.mark.parametrize(
    "product, name, description, fragment",
    [
        ("pill", "", None, "defect name must not be empty"),
        ("pill", "   \t ", None, "defect name must not be empty"),
        ("", "dent", None, "product must not be empty"),
        ("pill", "x" * (MAX_NAME_LEN + 1), None, f"at most {MAX_NAME_LEN}"),
        ("pill", "dent", "d" * (MAX_DESCRIPTION_LEN + 1), f"at most {MAX_DESCRIPTION_LEN}"),
        ("pill", "de\x00nt", None, "non-printable"),
        ("pill", "dent\u200b", None, "non-printable"),
        ("pill", "1234", None, "must contain a letter"),
        ("a/b", "dent", None, "must not contain '/'"),
        ("pill", "dent", "bad\x07bell", "non-printable"),
        ("pill", "bent\npin", None, r"defect name 'bent\\npin' contains a newline; use single"),
        ("pill", "bent\tpin", None, "contains a tab"),
        ("pill", "bent\r\npin", None, "contains a carriage return"),
        ("pi\tll", "dent", None, r"product 'pi\\tll' contains a tab"),
    ],
)
def test_invalid_registrations_are_refused(product, name, description, fragment):
    with pytest.raises(InputError, match=fragment):
        validate_defect_type(product, name, description)


def test_multiline_description_is_allowed():
    spec = validate_defect_type("pill", "dent", "line one\nline two")
    assert spec.description == "line one\nline two"


def test_unknown_product_refused_only_when_restricted():
    allowed = frozenset({"pill", "screw"})
    with pytest.raises(InputError, match="unknown product 'bottle'.*pill, screw"):
        validate_defect_type("bottle", "dent", allowed_products=allowed)
    assert validate_defect_type("screw", "dent", allowed_products=allowed).product == "screw"
    assert validate_defect_type("bottle", "dent", allowed_products=None).product == "bottle"


def test_vocabulary_keeps_active_types_only_sorted():
    defects = [
        DefectType(product="pill", name="crack"),
        DefectType(product="pill", name="Burr"),
        DefectType(product="pill", name="dent", status=DefectStatus.RETIRED),
        DefectType(product="screw", name="rust"),
    ]
    assert vocabulary(defects) == {"pill": ["Burr", "crack"], "screw": ["rust"]}


def test_merge_vocabulary_applies_registry_on_top_of_parent():
    from qc_stream.domain.defects import merge_vocabulary

    parent = {
        "words": ["scratch", "crack", "dent", "burr"],
        "products": {"pill": ["crack"], "screw": ["scratch", "dent"]},
    }
    defects = [
        DefectType(
            product="pill", name="Crack"
        ),  # same word, other case: keeps the parent's spelling
        DefectType(product="pill", name="delamination"),
        DefectType(product="bottle", name="dent", status=DefectStatus.RETIRED),
        DefectType(product="can", name="burr", status=DefectStatus.RETIRED),
    ]
    merged = merge_vocabulary(parent, defects)
    # 'burr' is retired and used by no product: dropped; 'dent' stays because screw still uses it.
    assert merged["words"] == ["scratch", "crack", "dent", "delamination"]
    assert merged["products"] == {
        "bottle": [],
        "can": [],
        "pill": ["crack", "delamination"],
        "screw": ["scratch", "dent"],
    }
    # Applying the same registry state to the result changes nothing (refreshes chain).
    assert merge_vocabulary(merged, defects) == merged


def test_merge_vocabulary_retire_removes_only_for_that_product():
    from qc_stream.domain.defects import merge_vocabulary

    parent = {
        "words": ["crack", "burr"],
        "products": {"pill": ["crack", "burr"], "screw": ["burr"]},
    }
    merged = merge_vocabulary(
        parent, [DefectType(product="pill", name="BURR", status=DefectStatus.RETIRED)]
    )
    assert merged == {
        "words": ["crack", "burr"],
        "products": {"pill": ["crack"], "screw": ["burr"]},
    }


def test_merge_vocabulary_without_registry_changes_is_identity():
    from qc_stream.domain.defects import merge_vocabulary

    parent = {"words": ["scratch", "crack"], "products": {"pill": ["crack"]}}
    assert merge_vocabulary(parent, []) == parent
