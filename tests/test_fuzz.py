"""Hostile and random tool arguments: the server never crashes and always answers clearly."""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mcp import Client
from threecx_mcp.sandbox import SEED_ENTRIES, Sandbox
from threecx_mcp.server import BlacklistServer

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=50),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=8,
)
LOOK_ALIKES = [  # caller IDs that can never match, or match everyone (issue 10)
    "+44\u200b2079460111",
    "＋４４２０７９４６０１１１",
    "٠٢٠٧٩٤٦٠١١١",
    "J\u0430ne",
    "\u202e1110+",
    "+44\u00ad20",
    "+*",
    "**",
    "ab*",
    "192.0.2.1",
    "2001:db8::1",
    "\ufdfa" * 60,
]
# Text built to exhaust the parser; made on demand so that failure reports stay short.
OVERSIZED = {
    "JSON list nested 100,000 deep": lambda: "[" * 100_000 + "]" * 100_000,
    "JSON object nested 5,000 deep": lambda: '{"a":' * 5_000 + "1" + "}" * 5_000,
    "5,000-digit number": lambda: "9" * 5_000,
    "1 MB of text": lambda: "q" * 1_000_000,
}
HOSTILE_TEXT = st.sampled_from(
    [
        "') or true or ('",
        "/",
        "%2F",
        "$filter=Id ne ''",
        "\x00",
        "Zoë ☎",
        "x" * 100_000,
        "'",
        "*",
        *LOOK_ALIKES,
    ]
) | st.sampled_from(sorted(OVERSIZED)).map(lambda name: OVERSIZED[name]())


def nested_lists(depth: int) -> Any:
    value: Any = []
    for _ in range(depth):
        value = [value]
    return value


ARGUMENT = JSON | HOSTILE_TEXT | st.integers(min_value=1, max_value=60).map(nested_lists)
TOOLS = {
    "list_blacklist_numbers": ["search", "limit", "cursor"],
    "get_blacklist_number": ["id"],
    "add_blacklist_number": ["caller_id", "description", "allow_broad_pattern", "plan_id"],
    "update_blacklist_number": ["id", "caller_id", "description", "allow_broad_pattern", "plan_id"],
    "bulk_delete_blacklist_numbers": ["ids", "dry_run", "plan_id"],
    "restore_blacklist_numbers": ["operation_id", "ids", "overwrite"],
    "list_operations": ["limit", "cursor"],
}


def echoes(text: str, value: str, limit: int = 200) -> bool:
    """Whether an error repeats more than `limit` consecutive characters of an argument."""
    return any(text[i : i + limit + 1] in value for i in range(len(text) - limit))


@pytest.mark.parametrize("tool", sorted(TOOLS))
def test_random_arguments_get_a_result_or_a_clear_error(
    tool: str, make_server: Callable[..., BlacklistServer], sandbox: Sandbox
) -> None:
    server = make_server()
    keys = TOOLS[tool]

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(st.dictionaries(st.sampled_from(keys), ARGUMENT, max_size=len(keys)))
    def check(arguments: dict[str, Any]) -> None:
        if tool == "bulk_delete_blacklist_numbers":
            arguments["dry_run"] = True  # explore validation, never wipe the sandbox between examples

        async def run() -> None:
            async with Client(server) as client:
                result = await client.call_tool(tool, arguments)
            if result.is_error:
                text = result.content[0].text  # type: ignore[union-attr]
                assert text and "Error executing tool" not in text and "Traceback" not in text
                assert len(text) < 2_000
                assert not any(echoes(text, value) for value in arguments.values() if isinstance(value, str))
            else:
                assert result.structured_content is not None

        anyio.run(run)

    check()
    assert len(sandbox.entries) >= len(SEED_ENTRIES)  # dry runs deleted nothing
    for entry in sandbox.entries.values():  # nothing stored that can never match, or that matches everyone
        caller_id = entry["CallerId"]
        assert unicodedata.normalize("NFKC", caller_id) == caller_id
        assert not any(
            unicodedata.category(c).startswith("C") or (unicodedata.category(c) == "Nd" and not c.isascii())
            for c in caller_id
        )
        assert "*" not in caller_id or len(caller_id.replace("*", "")) >= 3
