"""Hostile and random tool arguments: the server never crashes and always answers clearly."""

from __future__ import annotations

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
HOSTILE_TEXT = st.sampled_from(
    ["') or true or ('", "/", "%2F", "$filter=Id ne ''", "\x00", "Zoë ☎", "x" * 100_000, "'", "*"]
)
ARGUMENT = JSON | HOSTILE_TEXT
TOOLS = {
    "list_blacklist_numbers": ["search", "limit", "cursor"],
    "get_blacklist_number": ["id"],
    "add_blacklist_number": ["caller_id", "description"],
    "update_blacklist_number": ["id", "caller_id", "description"],
    "bulk_delete_blacklist_numbers": ["ids", "dry_run"],
    "restore_blacklist_numbers": ["operation_id", "ids", "overwrite"],
    "list_operations": ["limit", "cursor"],
}


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
            else:
                assert result.structured_content is not None

        anyio.run(run)

    check()
    assert len(sandbox.entries) >= len(SEED_ENTRIES)  # dry runs deleted nothing
    assert all(e["CallerId"] for e in sandbox.entries.values())
