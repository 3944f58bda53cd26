"""Each tool's behaviour and every rejection, driven through mcp.Client against the sandbox over HTTP."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from mcp import Client
from mcp_types import CallToolResult
from threecx_mcp.sandbox import SEED_ENTRIES, Fault, Sandbox
from threecx_mcp.server import BlacklistServer

from .support import answering, call_confirmed

pytestmark = pytest.mark.anyio


async def call(client: Client, tool: str, **arguments: Any) -> dict[str, Any]:
    result = await call_confirmed(client, tool, arguments)
    assert not result.is_error, result.content
    assert result.structured_content is not None
    return result.structured_content


async def fail(client: Client, tool: str, **arguments: Any) -> str:
    result: CallToolResult = await call_confirmed(client, tool, arguments)
    assert result.is_error, result.structured_content
    text = result.content[0].text  # type: ignore[union-attr]
    assert "Error executing tool" not in text and "Traceback" not in text and "pydantic" not in text
    return text


# -- list ---------------------------------------------------------------------------------------


async def test_list_pages_through_everything_with_a_cursor(
    mcp: Client, sandbox: Sandbox, pbx_variant: str
) -> None:
    seen: list[str] = []
    cursor = None
    for _ in range(10):
        page = await call(mcp, "list_blacklist_numbers", limit=5, **({"cursor": cursor} if cursor else {}))
        assert page["total"] == len(SEED_ENTRIES)
        seen += [e["caller_id"] for e in page["entries"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(c for c, _ in SEED_ENTRIES)


@pytest.mark.parametrize(
    ("search", "caller_ids"),
    [
        ("SPAM", ["+390612345678"]),
        ("+44", ["+442071838750", "+442079460000"]),
        ("+1 (800) 555-0123", ["+18005550123"]),
        ("o'brien", ["John O'Brien"]),
        ("') or true or ('", []),
    ],
)
async def test_search_matches_caller_ids_and_descriptions(
    mcp: Client, search: str, caller_ids: list[str]
) -> None:
    page = await call(mcp, "list_blacklist_numbers", search=search)
    assert [e["caller_id"] for e in page["entries"]] == caller_ids
    assert page["total"] == len(caller_ids)


async def test_deleting_while_paging_skips_nothing(mcp: Client, sandbox: Sandbox, pbx_variant: str) -> None:
    """The 0.1 bug: offset cursors skipped a page each round when the pages read were deleted."""
    matching = {sandbox.add(f"+1999{i:07d}", "robocall wave")["Id"] for i in range(130)}
    seen: list[str] = []
    page = await call(mcp, "list_blacklist_numbers", search="robocall wave", limit=50)
    while True:
        ids = [e["id"] for e in page["entries"]]
        seen += ids
        await call(mcp, "bulk_delete_blacklist_numbers", ids=ids)
        if page["next_cursor"] is None:
            break
        page = await call(
            mcp, "list_blacklist_numbers", search="robocall wave", limit=50, cursor=page["next_cursor"]
        )
    assert sorted(seen) == sorted(matching) and len(seen) == 130
    assert not matching & set(sandbox.entries)


async def test_next_cursor_follows_the_count_not_the_page_size(mcp: Client, sandbox: Sandbox) -> None:
    """A PBX that caps its pages below `limit` still gets a cursor; an exactly full last page gets none."""
    sandbox.page_cap = 7
    first = await call(mcp, "list_blacklist_numbers", limit=50)
    assert len(first["entries"]) == 7 and first["total"] == len(SEED_ENTRIES) and first["next_cursor"]
    second = await call(mcp, "list_blacklist_numbers", limit=50, cursor=first["next_cursor"])
    assert len(second["entries"]) == len(SEED_ENTRIES) - 7 and second["total"] == len(SEED_ENTRIES)
    assert second["next_cursor"] is None
    sandbox.page_cap = None
    whole = await call(mcp, "list_blacklist_numbers", limit=len(SEED_ENTRIES))
    assert len(whole["entries"]) == len(SEED_ENTRIES) and whole["next_cursor"] is None


async def test_list_rejects_bad_paging(mcp: Client) -> None:
    assert "limit" in await fail(mcp, "list_blacklist_numbers", limit=0)
    assert "limit" in await fail(mcp, "list_blacklist_numbers", limit=501)
    assert "not one this server issued" in await fail(mcp, "list_blacklist_numbers", cursor="garbage!")
    assert "search is 201 characters long; the limit is 200" in await fail(
        mcp, "list_blacklist_numbers", search="x" * 201
    )
    page = await call(mcp, "list_blacklist_numbers", limit=1, search="+44")
    assert "belongs to the search" in await fail(mcp, "list_blacklist_numbers", cursor=page["next_cursor"])


# -- get / add ----------------------------------------------------------------------------------


async def test_get_accepts_numbers_and_names_unknown_ids(mcp: Client) -> None:
    entry = await call(mcp, "get_blacklist_number", id=4)
    assert entry == {
        "id": "4",
        "caller_id": "*eremy",
        "description": "Blocks every caller ID ending in 'eremy'",
    }
    message = await fail(mcp, "get_blacklist_number", id="404")
    assert (
        message
        == 'No blacklist entry with id "404"; use list_blacklist_numbers to find it. Nothing was changed.'
    )


async def test_add_normalises_phone_numbers_and_says_so(mcp: Client, sandbox: Sandbox) -> None:
    added = await call(mcp, "add_blacklist_number", caller_id=" +1 (555) 010-0142 ", description="Spam")
    assert added["entry"]["caller_id"] == "+15550100142"
    assert 'normalised to "+15550100142"' in added["notes"][0]
    assert sandbox.entries[added["entry"]["id"]]["CallerId"] == "+15550100142"


@pytest.mark.parametrize("caller_id", ["*eremy2", "Jeremy Smith", "anonymous", "+15550100143"])
async def test_add_keeps_names_wildcards_and_clean_numbers_exactly(mcp: Client, caller_id: str) -> None:
    added = await call(mcp, "add_blacklist_number", caller_id=caller_id)
    assert added["entry"]["caller_id"] == caller_id and added["notes"] == []


async def test_add_refuses_an_existing_caller_id_naming_the_entry(mcp: Client, sandbox: Sandbox) -> None:
    message = await fail(mcp, "add_blacklist_number", caller_id="+1 555 010 0199")
    assert 'already blacklisted (id "2")' in message and "update_blacklist_number" in message
    assert len(sandbox.entries) == len(SEED_ENTRIES)


@pytest.mark.parametrize(
    ("arguments", "words"),
    [
        ({"caller_id": "   "}, "caller_id: caller_id must not be blank"),
        ({"caller_id": "+1555\n0100"}, "control characters"),
        ({"caller_id": "1" * 101}, "the limit is 100"),
        ({"caller_id": ["+1555"]}, "caller_id must be text"),
        ({"caller_id": "+15550100144", "description": "x" * 256}, "the limit is 255"),
        ({}, "caller_id"),
    ],
)
async def test_add_rejects_bad_input_and_sends_nothing(
    mcp: Client, sandbox: Sandbox, arguments: dict[str, Any], words: str
) -> None:
    message = await fail(mcp, "add_blacklist_number", **arguments)
    assert words in message and message.endswith("Nothing was changed.")
    assert sandbox.count("POST", "/xapi/v1/BlackListNumbers") == 0


# -- update -------------------------------------------------------------------------------------


async def test_update_changes_only_what_is_given_and_reads_back(mcp: Client, sandbox: Sandbox) -> None:
    result = await call(mcp, "update_blacklist_number", id=1, description="Robocaller (confirmed)")
    assert result["changed_fields"] == ["description"]
    assert result["previous"]["description"] == SEED_ENTRIES[0][1]
    assert result["entry"] == {
        "id": "1",
        "caller_id": SEED_ENTRIES[0][0],
        "description": "Robocaller (confirmed)",
    }
    patch = next(r for r in sandbox.requests if r.method == "PATCH")
    assert json.loads(patch.body) == {"Description": "Robocaller (confirmed)"}
    assert sandbox.count("GET", "/xapi/v1/BlackListNumbers('1')") == 2  # before and after


async def test_update_caller_id_is_normalised_and_empty_description_clears(
    mcp: Client, sandbox: Sandbox
) -> None:
    result = await call(mcp, "update_blacklist_number", id="2", caller_id="+1 555-010-0198", description="")
    assert result["entry"] == {"id": "2", "caller_id": "+15550100198", "description": None}
    assert result["changed_fields"] == ["caller_id", "description"]
    assert "normalised" in result["notes"][0]
    assert sandbox.entries["2"]["CallerId"] == "+15550100198"


async def test_update_with_unchanged_values_sends_no_patch(mcp: Client, sandbox: Sandbox) -> None:
    result = await call(mcp, "update_blacklist_number", id="5", caller_id="Anonymous")
    assert result["changed_fields"] == [] and "Nothing to change." in result["notes"]
    assert sandbox.count("PATCH") == 0


@pytest.mark.parametrize(
    ("arguments", "words"),
    [
        ({"id": "1"}, "Give caller_id, description, or both"),
        ({"id": "999", "description": "x"}, 'No blacklist entry with id "999"; use list_blacklist_numbers'),
        ({"id": "1", "caller_id": ""}, "caller_id must not be blank"),
        ({"id": "", "description": "x"}, "id must not be blank"),
        ({"id": "1", "descripton": "typo"}, "Unknown argument(s) for update_blacklist_number: descripton"),
        ({"id": "1", "caller_id": "Anonymous"}, "WARNINGS.XAPI.DUPLICATE"),
    ],
)
async def test_update_rejections_change_nothing(
    mcp: Client, sandbox: Sandbox, arguments: dict[str, Any], words: str
) -> None:
    before = {k: dict(v) for k, v in sandbox.entries.items()}
    assert words in await fail(mcp, "update_blacklist_number", **arguments)
    assert sandbox.entries == before


# -- bulk delete --------------------------------------------------------------------------------


async def test_bulk_delete_reports_each_id_with_what_to_restore(
    mcp: Client, sandbox: Sandbox, pbx_variant: str
) -> None:
    result = await call(mcp, "bulk_delete_blacklist_numbers", ids=[1, "3", "3", " 1 ", "nope"])
    assert result["outcome"] == "completed"
    assert [(r["id"], r["status"]) for r in result["results"]] == [
        ("1", "deleted"),
        ("3", "deleted"),
        ("nope", "not_found"),
    ]
    assert result["results"][0]["caller_id"] == SEED_ENTRIES[0][0]
    assert result["results"][1]["description"] == SEED_ENTRIES[2][1]
    assert (
        result["requested"],
        result["deleted"],
        result["not_found"],
        result["failed"],
        result["unknown"],
    ) == (3, 2, 1, 0, 0)
    assert result["omitted"] == 0 and result["details"] == f"threecx://operations/{result['operation_id']}"
    assert "1" not in sandbox.entries and "3" not in sandbox.entries
    bulk = [r for r in sandbox.requests if r.path.endswith("Pbx.BulkNumbersDelete")]
    assert len(bulk) == 1 and json.loads(bulk[0].body) == {"ids": ["1", "3"]}


async def test_bulk_delete_takes_a_json_string_list(mcp: Client, sandbox: Sandbox) -> None:
    result = await call(mcp, "bulk_delete_blacklist_numbers", ids='["4", 5]')
    assert [r["status"] for r in result["results"]] == ["deleted", "deleted"]


async def test_dry_run_deletes_nothing(mcp: Client, sandbox: Sandbox) -> None:
    result = await call(mcp, "bulk_delete_blacklist_numbers", ids=["1", "2", "zz"], dry_run=True)
    assert result["outcome"] == "dry_run"
    assert [r["status"] for r in result["results"]] == ["would_delete", "would_delete", "not_found"]
    assert (
        len(sandbox.entries) == len(SEED_ENTRIES) and sandbox.count("POST", "/xapi/v1/BlackListNumbers/") == 0
    )


@pytest.mark.parametrize(
    ("ids", "words"),
    [
        ("[1, 2", "ids is not valid JSON; send a list such as"),
        ('{"ids": [1]}', "ids must be a list"),
        ([], "ids is empty"),
        ("[]", "ids is empty"),
        ([["1"]], "ids[0] must be a string or a number"),
        ([{"id": 1}], "ids[0] must be a string or a number"),
        (["1", "  "], "ids[1]: id must not be blank"),
        ([True], "ids[0] must be a string or a number"),
        (list(range(10_001)), "at most 10000"),
    ],
)
async def test_bulk_delete_rejects_malformed_ids_showing_what_was_received(
    mcp: Client, sandbox: Sandbox, ids: Any, words: str
) -> None:
    message = await fail(mcp, "bulk_delete_blacklist_numbers", ids=ids)
    assert words in message
    assert len(sandbox.entries) == len(SEED_ENTRIES)


async def test_ten_thousand_ids_are_deleted_in_chunks_with_a_result_that_fits(
    mcp: Client, sandbox: Sandbox
) -> None:
    ids = [sandbox.add(f"+1555{i:07d}", "x" * 200)["Id"] for i in range(9_998)]
    raw = await call_confirmed(mcp, "bulk_delete_blacklist_numbers", {"ids": [*ids, "gone-1", "gone-2"]})
    result = raw.structured_content
    assert result is not None and not raw.is_error
    assert result["deleted"] == 9_998 and result["outcome"] == "completed"
    text = raw.content[0].text  # type: ignore[union-attr]
    assert len(text.encode()) <= 16 * 1024 and len(json.dumps(result).encode()) <= 256 * 1024
    assert (
        "9998 deleted, 2 not found" in text and result["operation_id"] in text and result["details"] in text
    )
    listed = result["results"]
    assert len(listed) == 100 and result["omitted"] == 10_000 - 100
    assert [r["id"] for r in listed if r["status"] == "not_found"] == [
        "gone-1",
        "gone-2",
    ]  # the ones that need a look
    assert len(sandbox.entries) == len(SEED_ENTRIES)
    bulk = [r for r in sandbox.requests if r.path.endswith("Pbx.BulkNumbersDelete")]
    assert [len(json.loads(r.body)["ids"]) for r in bulk] == [500] * 19 + [498]


async def test_a_failing_chunk_is_reported_and_the_rest_still_deleted(mcp: Client, sandbox: Sandbox) -> None:
    ids = [sandbox.add(f"+1666{i:07d}")["Id"] for i in range(1_200)]
    sandbox.inject(Fault(status=500, path="/xapi/v1/BlackListNumbers/Pbx.BulkNumbersDelete", times=1))
    result = await call(mcp, "bulk_delete_blacklist_numbers", ids=ids)
    assert result["outcome"] == "partial"
    assert (result["deleted"], result["failed"]) == (700, 500)
    failed = [r for r in result["results"] if r["status"] == "failed"]
    assert len(failed) == 100 and {r["id"] for r in failed} <= set(
        ids[:500]
    )  # the listed ones need attention
    assert all(r["id"] in sandbox.entries and "HTTP 500" in r["reason"] for r in failed)
    assert set(ids[:500]) <= set(sandbox.entries) and not set(ids[500:]) & set(sandbox.entries)


async def test_pbx_failures_are_readable_tool_errors(mcp: Client, sandbox: Sandbox) -> None:
    sandbox.inject(Fault(status=403, times=5))
    message = await fail(mcp, "list_blacklist_numbers")
    assert "permission" in message and "System Owner" in message


# -- confirmation by elicitation ----------------------------------------------------------------


@pytest.mark.parametrize("mode", ["auto", "legacy"])
@pytest.mark.parametrize(
    ("action", "confirm", "deleted"),
    [("accept", True, True), ("accept", False, False), ("decline", True, False), ("cancel", True, False)],
)
async def test_bulk_delete_asks_the_user_when_the_client_can_be_asked(
    make_server: Callable[..., BlacklistServer],
    sandbox: Sandbox,
    mode: str,
    action: str,
    confirm: bool,
    deleted: bool,
) -> None:
    callback, asked = answering(action, confirm)
    async with Client(make_server(), mode=mode, elicitation_callback=callback) as client:
        result = await call(client, "bulk_delete_blacklist_numbers", ids=["1", "4", "missing"])
    assert len(asked) == 1
    assert "Delete 2 blacklist entries" in asked[0] and '"+442071838750", "*eremy"' in asked[0]
    assert ("1" not in sandbox.entries) is deleted
    assert result["outcome"] == ("completed" if deleted else "declined")
    if not deleted:
        assert "none of the 3 entries was deleted" in result["summary"]


async def test_dry_run_asks_nothing_and_a_model_cannot_skip_the_question(
    make_server: Callable[..., BlacklistServer], sandbox: Sandbox
) -> None:
    callback, asked = answering("decline")
    async with Client(make_server(), elicitation_callback=callback) as client:
        await call(client, "bulk_delete_blacklist_numbers", ids=["1"], dry_run=True)
        assert asked == []
        skipped = await client.call_tool("bulk_delete_blacklist_numbers", {"ids": ["1"], "confirm": True})
        assert skipped.is_error and "Unknown argument(s)" in skipped.content[0].text  # type: ignore[union-attr]
        made_up = await call(client, "bulk_delete_blacklist_numbers", ids=["1"], plan_id="0" * 24)
    assert len(asked) == 1 and made_up["outcome"] == "declined" and "1" in sandbox.entries


# -- read-only ----------------------------------------------------------------------------------


async def test_read_only_mode_registers_no_write_tools(
    make_server: Callable[..., BlacklistServer], sandbox: Sandbox
) -> None:
    async with Client(make_server(read_only=True)) as client:
        names = sorted(t.name for t in (await client.list_tools()).tools)
        assert names == [
            "check_caller_id",
            "get_blacklist_number",
            "list_blacklist_numbers",
            "list_operations",
            "list_recent_callers",
        ]
        result = await call_confirmed(client, "bulk_delete_blacklist_numbers", {"ids": ["1"]})
        assert result.is_error
    assert "1" in sandbox.entries


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_bulk_delete_reports_progress_per_chunk(
    make_server: Callable[..., BlacklistServer], sandbox: Sandbox, mode: str
) -> None:
    ids = [sandbox.add(f"+1444{i:07d}")["Id"] for i in range(1_200)]
    seen: list[tuple[float, float | None, str | None]] = []

    async def progress(done: float, total: float | None, message: str | None) -> None:
        seen.append((done, total, message))

    async with Client(make_server(), mode=mode) as client:
        plan = await client.call_tool("bulk_delete_blacklist_numbers", {"ids": ids})
        result = await client.call_tool(
            "bulk_delete_blacklist_numbers",
            {"ids": ids, "plan_id": plan.structured_content["plan_id"]},  # type: ignore[index]
            progress_callback=progress,
        )
    assert result.structured_content["deleted"] == 1_200  # type: ignore[index]
    assert [(d, t) for d, t, _ in seen] == [(1, 3), (2, 3), (3, 3)]
    assert seen[-1][2] == "sent 3 of 3 delete requests"


async def test_hostile_sizes_cannot_push_the_structured_result_past_its_bound(
    mcp: Client, sandbox: Sandbox
) -> None:
    """990-emoji ids travel as 11,880 JSON characters each (escaped): the listing stops at the size cap."""
    ids = ["\U0001f600" * 990 + str(i) for i in range(100)]
    raw = await mcp.call_tool("bulk_delete_blacklist_numbers", {"ids": ids, "dry_run": True})
    assert not raw.is_error and raw.structured_content is not None
    assert raw.structured_content["not_found"] == 100
    assert len(json.dumps(raw.structured_content)) < 256 * 1024
    listed = raw.structured_content["results"]
    assert 0 < len(listed) < 100 and raw.structured_content["omitted"] == 100 - len(listed)
    assert len(raw.content[0].text.encode()) <= 16 * 1024  # type: ignore[union-attr]
