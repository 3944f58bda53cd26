"""Caller IDs that could never match a caller, patterns that match everyone, and arguments built to
exhaust the parser: each refused or corrected in a sentence, checked against what the sandbox PBX holds."""

from __future__ import annotations

import base64
import random
from collections.abc import Callable
from typing import Any

import pytest
from mcp import Client
from threecx_mcp.caller_ids import check_caller_id, fold, search_terms
from threecx_mcp.client import XapiClient
from threecx_mcp.errors import InvalidArgument
from threecx_mcp.journal import Journal
from threecx_mcp.operations import entries
from threecx_mcp.sandbox import Sandbox
from threecx_mcp.server import BlacklistServer

from .test_tools import call, fail

pytestmark = pytest.mark.anyio

MESSAGE_LIMIT = 2_000
ECHO_LIMIT = 200


def echoes(text: str, value: str, limit: int = ECHO_LIMIT) -> bool:
    """Whether `text` repeats more than `limit` consecutive characters of `value`."""
    return any(text[i : i + limit + 1] in value for i in range(len(text) - limit))


def stored(sandbox: Sandbox) -> set[str]:
    return {entry["CallerId"] for entry in sandbox.entries.values()}


def writes(sandbox: Sandbox) -> list[str]:
    return [f"{r.method} {r.path}" for r in sandbox.requests if r.method in ("POST", "PATCH", "DELETE")]


# -- add: look-alikes -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("typed", "kept"),
    [
        ("＋４４ ２０ ７９４６ ０１２３", "+442079460123"),  # fullwidth plus, digits and space
        ("٠٢٠٧٩٤٦٠٩٩٩", "02079460999"),  # Arabic-Indic digits: NFKC alone keeps them
        ("+९१ ९८७६५ ४३२१०", "+919876543210"),  # Devanagari digits
    ],
)
async def test_look_alike_digits_are_stored_as_ascii_digits(
    mcp: Client, sandbox: Sandbox, typed: str, kept: str
) -> None:
    added = await call(mcp, "add_blacklist_number", caller_id=typed)
    assert added["entry"]["caller_id"] == kept
    assert sandbox.entries[added["entry"]["id"]]["CallerId"] == kept  # the PBX holds what the result says
    (note,) = added["notes"]
    assert f'was normalised to "{kept}"' in note and "look-alike" in note and "'" + kept not in note


@pytest.mark.parametrize(
    ("typed", "named"),
    [
        ("+44\u200b2079460111", "U+200B ZERO WIDTH SPACE at position 4"),
        ("+4420\u00ad79460111", "U+00AD SOFT HYPHEN at position 6"),
        ("\u202e1110649702+", "U+202E RIGHT-TO-LEFT OVERRIDE at position 1"),
        ("Anonymous\u2066", "U+2066 LEFT-TO-RIGHT ISOLATE at position 10"),
        ("+44\u20602079460111", "U+2060 WORD JOINER at position 4"),
        ("\ufeff+442079460111", "U+FEFF ZERO WIDTH NO-BREAK SPACE at position 1"),
        ("Spam\ufe0f", "U+FE0F VARIATION SELECTOR-16 at position 5"),
        ("+44\x072079460111", "U+0007 control character at position 4"),
    ],
)
async def test_invisible_bidi_and_control_characters_are_refused_by_name(
    mcp: Client, sandbox: Sandbox, typed: str, named: str
) -> None:
    before = dict(sandbox.entries)
    message = await fail(mcp, "add_blacklist_number", caller_id=typed, description="look-alike")
    assert named in message
    assert "can never match a caller" in message and "Nothing was changed" in message
    assert typed not in message  # quoted only as escapes, never raw
    assert sandbox.entries == before and not writes(sandbox)


async def test_mixed_scripts_are_stored_as_typed_with_a_note(mcp: Client, sandbox: Sandbox) -> None:
    added = await call(mcp, "add_blacklist_number", caller_id="J\u0430ne Doe")  # Cyrillic а
    assert sandbox.entries[added["entry"]["id"]]["CallerId"] == "J\u0430ne Doe"
    (note,) = added["notes"]
    assert "U+0430 CYRILLIC SMALL LETTER A" in note and "position 2" in note and "not Latin" in note
    plain = await call(mcp, "add_blacklist_number", caller_id="Jane Doe")
    assert plain["notes"] == []
    cyrillic = await call(mcp, "add_blacklist_number", caller_id="Иван Петров")  # one script: no note
    assert cyrillic["notes"] == []


@pytest.mark.parametrize(
    ("typed", "named"),
    [
        ("Ivan\u674e", ["U+674E CJK UNIFIED IDEOGRAPH-674E"]),  # Han inside a Latin word
        ("\ua4eenonymous", ["U+A4EE LISU LETTER A"]),  # a script the Latin look-alikes list never named
        (
            "Ivan \u0418\u0432\u0430\u043d\u043e\u0432",
            ["U+0049 LATIN CAPITAL LETTER I"],
        ),  # two look-alike words
        ("+4420718\u04178750", ["U+0417 CYRILLIC CAPITAL LETTER ZE"]),  # a 3 in disguise
        ("+4420 7183 875\u03bf", ["U+03BF GREEK SMALL LETTER OMICRON"]),  # a 0 in disguise
    ],
)
def test_look_alike_letters_are_noted_whatever_their_script(typed: str, named: list[str]) -> None:
    checked = check_caller_id(typed)
    assert checked.value == typed  # noted, not changed: the admin may mean it
    (note,) = checked.notes
    assert all(name in note for name in named) and "3CX compares exactly" in note


@pytest.mark.parametrize(
    "typed",
    ["Anonymous \u674e\u660e", "\u674e\u660e\u660e Li", "\u7530\u4e2d\u3055\u3093", "Smith \u2013 Sales"],
)
def test_names_written_in_two_scripts_by_whole_words_get_no_note(typed: str) -> None:
    """A Han name beside a Latin one, Han with Hiragana in one word, a dash in a name: real names, kept."""
    checked = check_caller_id(typed)
    assert (checked.value, checked.notes) == (typed, [])


@pytest.mark.parametrize("dash", ["\u2013", "\u2212", "\u2011", "\u2010", "\ufe63", "\u2014"])
async def test_a_number_written_with_look_alike_dashes_is_stored_as_digits(
    mcp: Client, sandbox: Sandbox, dash: str
) -> None:
    added = await call(mcp, "add_blacklist_number", caller_id=f"+1 555{dash}010{dash}0177")
    assert added["entry"]["caller_id"] == "+15550100177" == sandbox.entries[added["entry"]["id"]]["CallerId"]
    assert "dashes" in added["notes"][0]
    found = await call(mcp, "list_blacklist_numbers", search=f"555{dash}010{dash}0177")
    assert [e["caller_id"] for e in found["entries"]] == ["+15550100177"]


@pytest.mark.parametrize(
    ("typed", "named"),
    [
        ("+1 555 010 0198\u0301", "U+0301 COMBINING ACUTE ACCENT at position 16, a combining mark drawn on"),
        ("1\u20e3 555 0100", "U+20E3 COMBINING ENCLOSING KEYCAP at position 2"),
        (
            "\u0301Anonymous",
            "U+0301 COMBINING ACUTE ACCENT at position 1, a combining mark drawn on the start",
        ),
        ("+1555010019\u3007", "U+3007 IDEOGRAPHIC NUMBER ZERO at position 12, a number sign standing for 0"),
        ("+44 20 \u2169 100", "U+2169 ROMAN NUMERAL TEN at position 8"),
    ],
)
async def test_marks_on_digits_and_number_signs_without_a_digit_form_are_refused(
    mcp: Client, sandbox: Sandbox, typed: str, named: str
) -> None:
    before = dict(sandbox.entries)
    message = await fail(mcp, "add_blacklist_number", caller_id=typed)
    assert named in message and "can never match a caller" in message and "Nothing was changed" in message
    assert sandbox.entries == before and not writes(sandbox)


def test_number_signs_and_marks_that_belong_are_kept() -> None:
    assert check_caller_id("\u3007\u3007\u5546\u4e8b").value == "\u3007\u3007\u5546\u4e8b"  # a name
    assert check_caller_id("+1 555 010 01\u2460\u2461").value == "+15550100112"  # NFKC: circled digits
    assert check_caller_id("Jose\u0301").value == "Jos\u00e9"  # an accent on a letter, composed


@pytest.mark.parametrize(
    ("typed", "kept"),
    [("+44 (0)20 7183 8751", "+442071838751"), ("+49(0)30 7654321", "+49307654321")],
)
async def test_the_bracketed_trunk_zero_after_the_country_code_is_dropped(
    mcp: Client, sandbox: Sandbox, typed: str, kept: str
) -> None:
    added = await call(mcp, "add_blacklist_number", caller_id=typed)
    assert added["entry"]["caller_id"] == kept == sandbox.entries[added["entry"]["id"]]["CallerId"]
    assert "trunk prefix (0)" in added["notes"][0]
    found = await call(mcp, "list_blacklist_numbers", search=typed)
    assert [e["caller_id"] for e in found["entries"]] == [kept]


def test_a_zero_in_brackets_elsewhere_is_only_formatting() -> None:
    assert check_caller_id("020 (0)7183 8751").value == "020071838751"
    assert check_caller_id("+1 (012) 555 0100").value == "+10125550100"


# -- add: broad patterns and IP addresses ---------------------------------------------------------


@pytest.mark.parametrize("pattern", ["*", "**", "+*", "ab*", "*1", "a*b"])
async def test_patterns_blocking_nearly_everyone_are_refused(
    mcp: Client, sandbox: Sandbox, pattern: str
) -> None:
    before = dict(sandbox.entries)
    message = await fail(mcp, "add_blacklist_number", caller_id=pattern)
    assert f'"{pattern}" would block' in message and "every caller" in message
    assert "3CX's * matches anything" in message and "allow_broad_pattern=true" in message
    assert sandbox.entries == before and not writes(sandbox)


async def test_patterns_with_three_fixed_characters_are_allowed(mcp: Client, sandbox: Sandbox) -> None:
    sandbox.entries.pop("4")  # the seeded *eremy
    added = await call(mcp, "add_blacklist_number", caller_id="*eremy")  # 5 fixed characters
    assert sandbox.entries[added["entry"]["id"]]["CallerId"] == "*eremy" and added["notes"] == []
    added = await call(mcp, "add_blacklist_number", caller_id="+44*")
    assert sandbox.entries[added["entry"]["id"]]["CallerId"] == "+44*"


async def test_a_broad_pattern_is_added_only_when_allowed(xapi: XapiClient, sandbox: Sandbox) -> None:
    with pytest.raises(InvalidArgument, match="allow_broad_pattern"):
        await entries.add_entry(xapi, "+*", None)
    assert "+*" not in stored(sandbox)
    added = await entries.add_entry(xapi, "+*", "everyone with a number", allow_broad_pattern=True)
    assert sandbox.entries[added.entry.id]["CallerId"] == "+*"


@pytest.mark.parametrize("address", ["192.0.2.10", "2001:db8::10", "[2001:db8::10]", "198.51.100.7:5060"])
async def test_ip_addresses_are_pointed_to_the_ip_blocklist(
    mcp: Client, sandbox: Sandbox, address: str
) -> None:
    before = dict(sandbox.entries)
    message = await fail(mcp, "add_blacklist_number", caller_id=address)
    assert "is an IP address" in message and "number blacklist" in message and "IP blocklist" in message
    assert sandbox.entries == before and not writes(sandbox)


async def test_phone_formatting_is_still_removed(mcp: Client, sandbox: Sandbox) -> None:
    added = await call(mcp, "add_blacklist_number", caller_id="+1 (555) 010-0142")
    assert sandbox.entries[added["entry"]["id"]]["CallerId"] == "+15550100142"
    assert 'normalised to "+15550100142"' in added["notes"][0] and "formatting" in added["notes"][0]


async def test_an_existing_caller_id_is_named_quoted_not_as_a_repr(mcp: Client) -> None:
    message = await fail(mcp, "add_blacklist_number", caller_id="＋４４２０７１８３８７５０")
    assert 'Caller ID "+442071838750" is already blacklisted (id "1")' in message


# -- update ---------------------------------------------------------------------------------------


async def test_update_stores_look_alike_digits_as_ascii(mcp: Client, sandbox: Sandbox) -> None:
    result = await call(mcp, "update_blacklist_number", id="2", caller_id="＋１ ５５５ ０１０ ０１９８")
    assert result["entry"]["caller_id"] == "+15550100198" == sandbox.entries["2"]["CallerId"]
    assert result["changed_fields"] == ["caller_id"] and "look-alike" in result["notes"][0]


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        ("+1555\u200b0100199", "U+200B ZERO WIDTH SPACE"),
        ("\u202e9910010555+", "U+202E RIGHT-TO-LEFT OVERRIDE"),
        ("*", "allow_broad_pattern=true"),
        ("10.1.2.3", "IP blocklist"),
    ],
)
async def test_update_refuses_before_sending_anything(
    mcp: Client, sandbox: Sandbox, typed: str, expected: str
) -> None:
    before = dict(sandbox.entries["2"])
    sandbox.requests.clear()
    message = await fail(mcp, "update_blacklist_number", id="2", caller_id=typed)
    assert expected in message and "Nothing was changed" in message
    assert sandbox.entries["2"] == before and not writes(sandbox)


async def test_update_to_a_broad_pattern_only_when_allowed(
    xapi: XapiClient, journal: Journal, sandbox: Sandbox
) -> None:
    with pytest.raises(InvalidArgument, match="allow_broad_pattern"):
        await entries.update_entry(xapi, journal, "2", "+*", None)
    assert sandbox.entries["2"]["CallerId"] == "+15550100199"
    result = await entries.update_entry(xapi, journal, "2", "+*", None, allow_broad_pattern=True)
    assert result.entry.caller_id == "+*" == sandbox.entries["2"]["CallerId"]


# -- search ---------------------------------------------------------------------------------------


async def test_a_fullwidth_search_finds_ascii_entries(mcp: Client) -> None:
    plain = await call(mcp, "list_blacklist_numbers", search="+44")
    wide = await call(mcp, "list_blacklist_numbers", search="＋４４")
    assert wide["entries"] == plain["entries"] and wide["total"] == 2
    arabic = await call(mcp, "list_blacklist_numbers", search="٢٠٧١")
    assert [e["caller_id"] for e in arabic["entries"]] == ["+442071838750"]


def test_search_keeps_the_text_as_typed_among_its_terms() -> None:
    assert search_terms("＋４４ ２０") == sorted({"＋４４ ２０", "+44 20", "+4420"})
    assert fold("٠١٢") == "012" and fold("ＡＢＣ") == "ABC"


def test_a_caller_id_stretched_by_normalisation_is_refused_by_length() -> None:
    with pytest.raises(InvalidArgument, match="once normalised; the limit is 100"):
        check_caller_id("\ufdfa" * 10)  # one character each, 18 once NFKC expands them


# -- bounded arguments ----------------------------------------------------------------------------


def nested_list(depth: int) -> Any:
    value: Any = "1"
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize("depth", [10_000, 100_000])
async def test_ids_nested_deeply_as_a_json_string(mcp: Client, sandbox: Sandbox, depth: int) -> None:
    before = dict(sandbox.entries)
    message = await fail(
        mcp, "bulk_delete_blacklist_numbers", ids="[" * depth + '"1"' + "]" * depth, dry_run=True
    )
    assert "ids holds JSON nested too deeply" in message and len(message) <= MESSAGE_LIMIT
    assert sandbox.entries == before


@pytest.mark.parametrize("depth", [10_000, 100_000])
@pytest.mark.parametrize(
    ("tool", "argument"),
    [
        ("bulk_delete_blacklist_numbers", "ids"),
        ("list_blacklist_numbers", "cursor"),
        ("restore_blacklist_numbers", "ids"),
        ("get_blacklist_number", "id"),
    ],
)
async def test_arguments_nested_deeply_as_json_values(
    make_server: Callable[..., BlacklistServer], sandbox: Sandbox, depth: int, tool: str, argument: str
) -> None:
    """What a transport hands over after parsing deep JSON: refused before json or pydantic recurse."""
    before = dict(sandbox.entries)
    result = await make_server().call_tool(tool, {argument: nested_list(depth)})
    assert result.is_error  # type: ignore[union-attr]
    message = result.content[0].text  # type: ignore[union-attr]
    assert message.startswith(f"Invalid arguments for {tool}: {argument} is nested too deeply")
    assert sandbox.entries == before


@pytest.mark.parametrize("depth", [10_000, 100_000])
async def test_a_cursor_holding_nested_json(mcp: Client, depth: int) -> None:
    raw = "[" * depth + "]" * depth
    for cursor in (raw, base64.urlsafe_b64encode(raw.encode()).decode()):
        message = await fail(mcp, "list_blacklist_numbers", cursor=cursor)
        assert "cursor" in message and len(message) <= MESSAGE_LIMIT and not echoes(message, cursor)


def megabyte() -> str:
    rng = random.Random(10)
    return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789+*' ") for _ in range(1_000_000))


@pytest.mark.parametrize(
    ("tool", "argument"),
    [
        ("restore_blacklist_numbers", "operation_id"),
        ("restore_blacklist_numbers", "ids"),
        ("list_blacklist_numbers", "search"),
        ("list_blacklist_numbers", "cursor"),
        ("list_operations", "cursor"),
        ("get_blacklist_number", "id"),
        ("add_blacklist_number", "caller_id"),
        ("add_blacklist_number", "description"),
        ("bulk_delete_blacklist_numbers", "ids"),
    ],
)
async def test_a_megabyte_argument_is_refused_without_being_echoed(
    mcp: Client, sandbox: Sandbox, tool: str, argument: str
) -> None:
    value = megabyte()
    arguments = {argument: value, **({"caller_id": "+15550100111"} if argument == "description" else {})}
    before = dict(sandbox.entries)
    message = await fail(mcp, tool, **arguments)
    assert len(message) <= MESSAGE_LIMIT and not echoes(message, value)
    assert sandbox.entries == before


async def test_a_megabyte_argument_name_or_tool_name_is_not_echoed(mcp: Client) -> None:
    value = megabyte()
    result = await mcp.call_tool("list_blacklist_numbers", {value: 1, "x" + value: 2})
    message = result.content[0].text  # type: ignore[union-attr]
    assert result.is_error and message.startswith("Unknown argument(s) for list_blacklist_numbers")
    assert len(message) <= MESSAGE_LIMIT and not echoes(message, value)


async def test_huge_numbers_as_ids_get_a_sentence(mcp: Client) -> None:
    message = await fail(mcp, "get_blacklist_number", id=10**4000)
    assert "number far longer than 1000 digits" in message
    message = await fail(mcp, "bulk_delete_blacklist_numbers", ids="[" + "9" * 4000 + "]", dry_run=True)
    assert "ids[0]" in message and "far longer" in message
    message = await fail(mcp, "bulk_delete_blacklist_numbers", ids="[" + "9" * 5000 + "]", dry_run=True)
    assert "ids is not valid JSON" in message and not echoes(message, "9" * 5000)


async def test_every_text_argument_has_a_maximum_length_in_the_schema(mcp: Client) -> None:
    """A client can see the bounds before it sends anything: every string and list is capped."""
    unbounded: list[str] = []

    def walk(schema: Any, where: str) -> None:
        if isinstance(schema, dict):
            if schema.get("type") == "string" and "maxLength" not in schema and "enum" not in schema:
                unbounded.append(where)
            if schema.get("type") == "array" and "maxItems" not in schema:
                unbounded.append(where)
            for key, child in schema.items():
                walk(child, f"{where}.{key}")
        elif isinstance(schema, list):
            for position, child in enumerate(schema):
                walk(child, f"{where}[{position}]")

    for tool in (await mcp.list_tools()).tools:
        walk(tool.input_schema, tool.name)
    assert unbounded == []
