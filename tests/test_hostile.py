"""Hostile input cannot change the shape of a request: any key addresses exactly its entry,
any search text matches exactly what contains it, whatever OData syntax it carries."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mcp import Client
from threecx_mcp.caller_ids import search_terms
from threecx_mcp.client import XapiClient
from threecx_mcp.errors import NotFound
from threecx_mcp.operations import entries
from threecx_mcp.sandbox import SEED_ENTRIES, Sandbox
from threecx_mcp.server import BlacklistServer

from .test_tools import call, fail

HOSTILE = [
    "') or true or ('",
    "/",
    "%2F",
    "$filter=Id ne ''",
    "Zoë ☎ 电话",
    "a'b/c #d?e%f",
    "*",
    "x" * 100_000,
    "\x00",
]
ODATA_TEXT = st.text(alphabet=st.sampled_from("'()/%$?#&=+ ,*eoraAnd\u00eb\u260e19"), min_size=1, max_size=40)
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(key=st.text(min_size=1, max_size=80) | ODATA_TEXT)
def test_any_key_addresses_exactly_its_entry(
    client_factory: Callable[[], XapiClient], sandbox: Sandbox, key: str
) -> None:
    async def run() -> None:
        async with client_factory() as xapi:
            if key in sandbox.entries:
                return
            with pytest.raises(NotFound):
                await xapi.get_blacklist_number(key)
            sandbox.add("+15550000777", "hostile target", entry_id=key)
            try:
                assert (await xapi.get_blacklist_number(key)).id == key
                await xapi.update_blacklist_number(key, {"Description": "hit"})
                assert sandbox.entries[key]["Description"] == "hit"
                assert all(e["Description"] != "hit" for k, e in sandbox.entries.items() if k != key)
            finally:
                sandbox.entries.pop(key, None)

    anyio.run(run)


@FUZZ
@given(text=ODATA_TEXT)
def test_any_search_matches_exactly_what_contains_it(
    client_factory: Callable[[], XapiClient], sandbox: Sandbox, text: str
) -> None:
    async def run() -> None:
        async with client_factory() as xapi:
            page = await entries.list_entries(xapi, text, 500, None)
        needles = {t.lower() for t in search_terms(text.strip())}
        expected = sorted(
            e["CallerId"]
            for e in sandbox.entries.values()
            if any(n in e["CallerId"].lower() or n in (e["Description"] or "").lower() for n in needles)
        )
        assert sorted(e.caller_id for e in page.entries) == expected

    if text.strip():
        anyio.run(run)


@pytest.mark.anyio
@pytest.mark.parametrize("value", HOSTILE)
async def test_hostile_values_through_every_tool(
    make_server: Callable[..., BlacklistServer], sandbox: Sandbox, value: str
) -> None:
    seeded = {k: dict(v) for k, v in sandbox.entries.items()}
    attempts: list[tuple[str, dict[str, Any]]] = [
        ("get_blacklist_number", {"id": value}),
        ("list_blacklist_numbers", {"search": value}),
        ("update_blacklist_number", {"id": value, "description": "hostile"}),
        ("update_blacklist_number", {"id": "1", "caller_id": value}),
        ("bulk_delete_blacklist_numbers", {"ids": [value]}),
        ("add_blacklist_number", {"caller_id": value, "description": value}),
    ]
    async with Client(make_server()) as client:
        for tool, arguments in attempts:
            result = await client.call_tool(tool, arguments)
            if result.is_error:
                text = result.content[0].text  # type: ignore[union-attr]
                assert "Error executing tool" not in text and len(text) < 2_000
    untouched = {k: v for k, v in sandbox.entries.items() if k in seeded and k != "1"}
    assert untouched == {k: v for k, v in seeded.items() if k != "1"}  # only entry 1 was a legitimate target
    assert len(sandbox.entries) <= len(SEED_ENTRIES) + 1


@pytest.mark.anyio
async def test_injection_in_search_returns_nothing_extra(make_server: Callable[..., BlacklistServer]) -> None:
    async with Client(make_server()) as client:
        page = await call(client, "list_blacklist_numbers", search="') or true or ('")
        assert page["total"] == 0
        message = await fail(client, "get_blacklist_number", id="1') or true or ('")
        assert "No blacklist entry" in message
