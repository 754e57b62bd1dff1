"""The id contract (serving/ids.py): one definition that ingest, the publisher, the API and the C fast path share."""

import re
from pathlib import Path

import pytest

from serving.dependencies import checked_id
from serving.ids import ID_PATTERN, MAX_ID_LENGTH, id_violation, invalid_ids

FASTPATH_C = Path(__file__).resolve().parents[2] / "serving" / "_fastpath.c"


@pytest.mark.parametrize(
    ("value", "violation"),
    [
        ("u1", None),
        ("ml:12:34.5_a-B", None),
        ("z" * MAX_ID_LENGTH, None),
        ("z" * (MAX_ID_LENGTH + 1), "id_too_long"),
        ("x" * 100_000, "id_too_long"),
        ("", "missing"),
        ("   ", "missing"),
        (None, "missing"),
        (" u1", "id_bad_characters"),  # never trimmed: " u1" and "u1" must not become one user
        ("u1 ", "id_bad_characters"),
        ("u\x001", "id_bad_characters"),
        ("u1\n", "id_bad_characters"),
        ("u\u200b1", "id_bad_characters"),
        ("u\x071", "id_bad_characters"),
        ("ü1", "id_bad_characters"),
        ("a/b", "id_bad_characters"),
    ],
)
def test_each_id_gets_its_violation(value, violation):
    assert id_violation(value) == violation


def test_invalid_ids_names_each_offender_with_its_violation():
    assert invalid_ids(["u1", "a b", "u2", "x" * 200]) == [("a b", "id_bad_characters"), ("x" * 200, "id_too_long")]


def test_the_api_pattern_accepts_exactly_the_valid_ids():
    for value in ("u1", "z" * MAX_ID_LENGTH, "z" * (MAX_ID_LENGTH + 1), "u1\n", " u1", "a:b"):
        assert bool(re.fullmatch(ID_PATTERN, value)) == (id_violation(value) is None), value


def test_the_api_refuses_an_id_with_a_trailing_newline():
    """`$` alone matches before a final newline; the API must not let "u1\\n" through."""
    with pytest.raises(Exception, match="does not match the pattern"):
        checked_id("user_id", "u1\n")
    assert checked_id("user_id", "u1") == "u1"


def test_the_c_fast_path_uses_the_same_length_limit():
    defined = re.search(r"#define MAX_ID_LENGTH (\d+)", FASTPATH_C.read_text())
    assert defined and int(defined.group(1)) == MAX_ID_LENGTH
