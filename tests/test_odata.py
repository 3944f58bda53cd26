"""OData literal quoting: round-trips for any text, and keys never change a URL's shape."""

from __future__ import annotations

from urllib.parse import unquote

import pytest
from hypothesis import given
from hypothesis import strategies as st
from threecx_mcp import odata


@pytest.mark.parametrize(
    ("key", "path"),
    [
        ("42", "BlackListNumbers('42')"),
        ("O'Brien", "BlackListNumbers('O''Brien')"),
        ("a'b/c #d?e%f", "BlackListNumbers('a''b%2Fc%20%23d%3Fe%25f')"),
        ("') or true or ('", "BlackListNumbers('''%29%20or%20true%20or%20%28''')"),
        ("Zoë", "BlackListNumbers('Zo%C3%AB')"),
    ],
)
def test_entity_paths_quote_and_encode_keys(key: str, path: str) -> None:
    assert odata.entity_path("BlackListNumbers", key) == path


@given(st.text())
def test_string_literals_round_trip_for_any_text(text: str) -> None:
    assert odata.parse_string_literal(odata.string_literal(text)) == text


@given(st.text())
def test_an_entity_path_is_always_one_segment_holding_exactly_the_key(key: str) -> None:
    path = odata.entity_path("BlackListNumbers", key)
    assert not any(c in path for c in "/?# \x00")
    inner = path.removeprefix("BlackListNumbers(").removesuffix(")")
    assert odata.parse_string_literal(unquote(inner)) == key


@pytest.mark.parametrize("broken", ["42", "'42", "'a'b'", "", "'"])
def test_parse_rejects_anything_but_one_literal(broken: str) -> None:
    with pytest.raises(ValueError):
        odata.parse_string_literal(broken)


def test_filter_helpers_quote_values() -> None:
    assert odata.eq("Id", "a'b") == "Id eq 'a''b'"
    assert odata.contains("CallerId", "X'Y", ignore_case=True) == "contains(tolower(CallerId),'x''y')"
    assert odata.any_of(["A eq 'x'", "B eq 'y'"]) == "(A eq 'x') or (B eq 'y')"
