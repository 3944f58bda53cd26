"""OData literal quoting: round-trips for any text, and keys never change a URL's shape."""

from __future__ import annotations

from urllib.parse import parse_qsl, unquote

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


def test_filters_quote_values_and_carry_aspnet_node_counts() -> None:
    assert odata.eq("Id", "a'b") == odata.Filter("Id eq 'a''b'", 4)
    assert odata.gt("Id", "9") == odata.Filter("Id gt '9'", 4)
    assert odata.one_of("Id", ["a", "b'c"]) == odata.Filter("Id in ('a','b''c')", 1)
    assert odata.contains_ignoring_case("CallerId", "X'Y") == odata.Filter(
        "contains(tolower(CallerId),'x''y')", 5
    )
    either = odata.any_of([odata.eq("A", "x"), odata.eq("B", "y")])
    assert either == odata.Filter("(A eq 'x') or (B eq 'y')", 9)
    assert odata.all_of([either, odata.gt("Id", "1")]) == odata.Filter(
        "((A eq 'x') or (B eq 'y')) and (Id gt '1')", 14
    )
    assert odata.any_of([odata.eq("Id", "1")]) == odata.eq("Id", "1")
    with pytest.raises(ValueError):
        odata.any_of([])


def test_an_or_chain_of_id_lookups_holds_20_clauses_within_100_nodes() -> None:
    """5n-1 <= 100: 20 clauses are 99 nodes, 21 would be 104."""
    clause = odata.eq("Id", "")
    assert odata.max_or_chain(clause, 100) == 20
    assert odata.any_of([clause] * 20).nodes == 99
    assert odata.any_of([clause] * 21).nodes > 100
    assert odata.max_or_chain(clause, 3) == 1


def test_query_encodes_spaces_as_percent_20_and_every_separator_in_values() -> None:
    text = odata.query({"$filter": "CallerId eq '+1 a&b=c#d%e''f'", "$top": "5"})
    assert text == "$filter=CallerId%20eq%20'%2B1%20a%26b%3Dc%23d%25e''f'&$top=5"
    assert "+" not in text


@given(st.dictionaries(st.sampled_from(["$filter", "$orderby", "$top", "x y&z"]), st.text()))
def test_query_round_trips_any_values(options: dict[str, str]) -> None:
    text = odata.query(options)
    assert " " not in text and "+" not in text and "#" not in text
    assert dict(parse_qsl(text, keep_blank_values=True)) == options


@given(st.text(max_size=40) | st.from_regex(r"[A-Za-z0-9]{1,12}", fullmatch=True))
def test_encoded_length_is_the_length_query_encodes(value: str) -> None:
    assert odata.encoded_length(value) == len(odata.query({"": value})) - 1  # less the "="
