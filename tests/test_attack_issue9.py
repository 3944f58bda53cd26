"""Issue 9's promises, attacked: hostile text and sizes, killed processes, two writers, lying and capped
servers, undo chains and forged cursors.

Everything drives the sandbox PBX over real HTTP on 127.0.0.1 and the server through mcp.Client (in
memory, over stdio subprocesses, or over streamable HTTP). Tests named `test_defect_*` show a defect
of the current code and fail until it is fixed; the others prove a promise holds, and each fails if
the guarantee it names is removed.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import sqlite3
import stat
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client, MCPError, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from starlette.responses import Response
from threecx_mcp.client import XapiClient
from threecx_mcp.errors import UnexpectedResponse
from threecx_mcp.journal import Journal, OperationKind
from threecx_mcp.operations import bulk_delete, restore
from threecx_mcp.pbxs import PbxRoster
from threecx_mcp.sandbox import SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET, SEED_ENTRIES, Fault, Sandbox
from threecx_mcp.sandbox import pbx as sandbox_pbx
from threecx_mcp.sandbox.pbx import RecordedRequest
from threecx_mcp.server import BlacklistServer, build_server

from .support import AUTH_TOKEN, assert_journal_matches_the_pbx, call_confirmed, client_for

pytestmark = pytest.mark.anyio

LIST = "/xapi/v1/BlackListNumbers"
BULK = "/xapi/v1/BlackListNumbers/Pbx.BulkNumbersDelete"
MAX_STRUCTURED_BYTES = 256 * 1024
MAX_TEXT_BYTES = 16 * 1024


@pytest.fixture
async def mcp(make_server: Callable[..., BlacklistServer]) -> AsyncIterator[Client]:
    async with Client(make_server()) as client:
        yield client


async def call(client: Client, tool: str, **arguments: Any) -> dict[str, Any]:
    result = await call_confirmed(client, tool, arguments)
    assert not result.is_error, result.content
    structured: dict[str, Any] | None = result.structured_content
    assert structured is not None
    return structured


async def client_call_raw(client: Client, tool: str, **arguments: Any) -> dict[str, Any]:
    """A successful call's structured content and its text block."""
    result = await call_confirmed(client, tool, arguments)
    assert not result.is_error, result.content
    return {"structured": result.structured_content, "text": result.content[0].text}  # type: ignore[union-attr]


async def error_text(client: Client, tool: str, **arguments: Any) -> str:
    result = await call_confirmed(client, tool, arguments)
    assert result.is_error, result.structured_content
    return result.content[0].text  # type: ignore[union-attr]


def wire_bytes(structured: dict[str, Any]) -> int:
    """What structured content weighs on the wire: the SDK sends it as UTF-8 JSON (pydantic's dump)."""
    return len(json.dumps(structured, ensure_ascii=False, separators=(",", ":")).encode())


def caller_ids(sandbox: Sandbox) -> list[str]:
    return sorted(e["CallerId"] for e in sandbox.entries.values())


def on_request(
    sandbox: Sandbox, method: str, path: str, action: Callable[[RecordedRequest], None], *, nth: int = 1
) -> None:
    """Run `action` inside the PBX when the `nth` request matching method and exact path arrives."""
    seen = [0]

    def hook(request: RecordedRequest) -> None:
        if request.method == method and request.path == path:
            seen[0] += 1
            if seen[0] == nth:
                action(request)

    sandbox.hooks.append(hook)


@pytest.fixture
def escaping_pbx(monkeypatch: pytest.MonkeyPatch) -> None:
    """The sandbox answering with every non-ASCII character as a \\u escape, as JSON writers that escape
    non-ASCII do. That is how a PBX can hand over a lone UTF-16 surrogate, which the sandbox's own UTF-8
    writer cannot send (it answers 500), so this PBX variant is played by swapping its writer."""

    def escaped(body: dict[str, Any], status: int = 200) -> Response:
        return Response(
            json.dumps(body, ensure_ascii=True).encode(),
            status_code=status,
            headers={"OData-Version": "4.0"},
            media_type=sandbox_pbx._ODATA_CONTENT_TYPE,
        )

    monkeypatch.setattr(sandbox_pbx, "_odata_json", escaped)


@pytest.fixture
def long_ids(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> Callable[[], None]:
    """Switch the sandbox to a lying PBX that gives every entry it creates from now on a 5,000-character id."""

    def switch() -> None:
        original, made = sandbox.add, [0]

        def add(
            caller_id: str, description: str | None = None, entry_id: str | None = None
        ) -> dict[str, Any]:
            if entry_id is None:
                made[0] += 1
                entry_id = f"{made[0]}-" + "\x01" * 5_000  # JSON carries each as \u0001
            return original(caller_id, description, entry_id)

        monkeypatch.setattr(sandbox, "add", add)

    return switch


@asynccontextmanager
async def http_client(url: str, mode: str) -> AsyncIterator[Client]:
    """mcp.Client over streamable HTTP to the bearer-protected server, in protocol `mode`."""
    headers = {"Authorization": f"Bearer {AUTH_TOKEN}"}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=120) as http,
        Client(streamable_http_client(f"{url}/mcp", http_client=http), mode=mode) as client,
    ):
        yield client


def server_process(
    sandbox_url: str,
    journal_path: Path,
    pid_file: Path,
    api_client: tuple[str, str] = (SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET),
) -> StdioServerParameters:
    """The real server in a subprocess over stdio, writing its pid where a test can find it to kill it.
    Two servers at once need two API clients: the PBX keeps one live token per API client."""
    script = (
        "import os, sys; from pathlib import Path; Path(sys.argv[1]).write_text(str(os.getpid())); "
        "from threecx_mcp.cli import main; sys.exit(main([]))"
    )
    env = {
        "THREECX_URL": sandbox_url,
        "THREECX_CLIENT_ID": api_client[0],
        "THREECX_CLIENT_SECRET": api_client[1],
        "THREECX_JOURNAL": str(journal_path),
    }
    if "PYTHONPATH" in os.environ:  # a mutation run points at its copy of the package
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return StdioServerParameters(command=sys.executable, args=["-c", script, str(pid_file)], env=env)


# == Undo you can trust ==============================================================================


async def test_defect_undoing_a_restore_removes_entries_it_never_created(
    mcp: Client, sandbox: Sandbox
) -> None:
    """A restore cut short by a 403 left 4 entries not attempted. A second restore re-created them.
    Undoing the first restore must remove only the 2 entries it created, not the second restore's 4."""
    deleted = await call(mcp, "bulk_delete_blacklist_numbers", ids=["1", "2", "3", "4", "5", "6"])
    on_request(sandbox, "POST", LIST, lambda _: sandbox.inject(Fault(status=403, method="POST")), nth=3)
    before_first = set(caller_ids(sandbox))
    first = await call(mcp, "restore_blacklist_numbers", operation_id=deleted["operation_id"])
    made = len(caller_ids(sandbox)) - len(before_first)  # creates run concurrently: 2 or more got in first
    assert (
        made >= 2
        and first["counts"] == {"recreated": made, "failed": 6 - made}
        and first["outcome"] == "partial"
    )
    by_first = set(caller_ids(sandbox)) - before_first
    second = await call(mcp, "restore_blacklist_numbers", operation_id=deleted["operation_id"])
    assert second["counts"] == {"already_present": made, "recreated": 6 - made}
    assert caller_ids(sandbox) == sorted(c for c, _ in SEED_ENTRIES)

    undo_first = await call(mcp, "restore_blacklist_numbers", operation_id=first["operation_id"])

    assert undo_first["counts"].get("removed") == made, undo_first["counts"]
    gone = {c for c, _ in SEED_ENTRIES} - set(caller_ids(sandbox))
    assert gone == by_first, f"undoing the first restore also removed {sorted(gone - by_first)}"


async def test_defect_restoring_a_delete_recreates_an_entry_it_failed_to_delete(
    mcp: Client, sandbox: Sandbox
) -> None:
    """Entry 1 survived a failed bulk delete (status failed); later another delete removed it on purpose.
    Undoing the failed delete must not bring entry 1 back: that operation never removed it. The journal's
    own summary agrees (list_operations calls it not restorable)."""
    sandbox.inject(Fault(status=500, path=BULK))
    failed = await call(mcp, "bulk_delete_blacklist_numbers", ids=["1"])
    assert failed["failed"] == 1 and failed["operation_id"]
    await call(mcp, "bulk_delete_blacklist_numbers", ids=["1"])
    assert "1" not in sandbox.entries
    listed = await call(mcp, "list_operations")
    (summary,) = [o for o in listed["operations"] if o["operation_id"] == failed["operation_id"]]
    assert summary["restorable"] is False  # the journal says: nothing to undo

    undo = await call(mcp, "restore_blacklist_numbers", operation_id=failed["operation_id"])

    assert SEED_ENTRIES[0][0] not in caller_ids(sandbox), (
        f"restoring an operation that deleted nothing re-created the entry: {undo['counts']}"
    )


async def test_a_restore_can_be_undone_and_redone_through_a_chain(mcp: Client, sandbox: Sandbox) -> None:
    """update; undo it; undo the undo; undo that: the entry alternates, and every step is journaled."""
    update = await call(mcp, "update_blacklist_number", id="9", caller_id="+390600000000", description="new")
    undo = await call(mcp, "restore_blacklist_numbers", operation_id=update["operation_id"])
    assert (sandbox.entries["9"]["CallerId"], sandbox.entries["9"]["Description"]) == SEED_ENTRIES[8]
    redo = await call(mcp, "restore_blacklist_numbers", operation_id=undo["operation_id"])
    assert (sandbox.entries["9"]["CallerId"], sandbox.entries["9"]["Description"]) == ("+390600000000", "new")
    undo_again = await call(mcp, "restore_blacklist_numbers", operation_id=redo["operation_id"])
    assert (sandbox.entries["9"]["CallerId"], sandbox.entries["9"]["Description"]) == SEED_ENTRIES[8]
    assert [undo["undoes"], redo["undoes"], undo_again["undoes"]] == [
        update["operation_id"],
        undo["operation_id"],
        redo["operation_id"],
    ]
    # Restoring by id goes back before the latest change that was not itself a restore: the update.
    by_id = await call(mcp, "restore_blacklist_numbers", ids=["9"])
    assert by_id["outcome"] == "nothing_to_do" and by_id["results"][0]["status"] == "already_restored"


async def test_undoing_a_restore_whose_entries_were_edited_or_deleted_since(
    mcp: Client, sandbox: Sandbox
) -> None:
    """Of three re-created entries, an admin edits one and deletes another: undoing the restore removes
    only the untouched one, leaves the edit alone (changed_since) and says the deleted one is absent."""
    deleted = await call(mcp, "bulk_delete_blacklist_numbers", ids=["7", "8", "10"])
    restored = await call(mcp, "restore_blacklist_numbers", operation_id=deleted["operation_id"])
    new_ids = {r["caller_id"]: r["current_id"] for r in restored["results"]}
    edited, removed, untouched = (new_ids[SEED_ENTRIES[n][0]] for n in (6, 7, 9))
    sandbox.entries[edited]["Description"] = "an admin's later note"
    del sandbox.entries[removed]

    undo = await call(mcp, "restore_blacklist_numbers", operation_id=restored["operation_id"])

    assert undo["counts"] == {"changed_since": 1, "already_absent": 1, "removed": 1}
    assert sandbox.entries[edited]["Description"] == "an admin's later note"
    assert untouched not in sandbox.entries


async def test_restoring_an_update_of_an_entry_deleted_since_needs_overwrite(
    mcp: Client, sandbox: Sandbox
) -> None:
    update = await call(mcp, "update_blacklist_number", id="11", description="edited")
    del sandbox.entries["11"]
    kept = await call(mcp, "restore_blacklist_numbers", operation_id=update["operation_id"])
    assert kept["counts"] == {"changed_since": 1} and "overwrite=true" in kept["results"][0]["reason"]
    assert SEED_ENTRIES[10][0] not in caller_ids(sandbox)
    forced = await call(mcp, "restore_blacklist_numbers", operation_id=update["operation_id"], overwrite=True)
    assert forced["counts"] == {"recreated": 1}
    (back,) = [e for e in sandbox.entries.values() if e["CallerId"] == SEED_ENTRIES[10][0]]
    assert back["Description"] == SEED_ENTRIES[10][1]


async def test_restoring_part_of_a_delete_by_ids_then_the_rest_by_operation(
    mcp: Client, sandbox: Sandbox
) -> None:
    ids = [sandbox.add(f"+1400{i:07d}", f"part {i}")["Id"] for i in range(30)]
    deleted = await call(mcp, "bulk_delete_blacklist_numbers", ids=ids)
    sandbox.add("+14000000003", "someone re-added this one by hand")
    part = await call(mcp, "restore_blacklist_numbers", operation_id=deleted["operation_id"], ids=ids[:10])
    assert part["counts"] == {"recreated": 9, "already_present": 1}
    assert "did not touch" in await error_text(
        mcp, "restore_blacklist_numbers", operation_id=deleted["operation_id"], ids=[ids[0], "1"]
    )
    rest = await call(mcp, "restore_blacklist_numbers", operation_id=deleted["operation_id"])
    assert rest["counts"] == {"recreated": 20, "already_present": 10}
    restored = [c for c in caller_ids(sandbox) if c.startswith("+1400")]
    assert restored == [f"+1400{i:07d}" for i in range(30)]  # each exactly once
    assert (
        sandbox.entries[next(k for k, e in sandbox.entries.items() if e["CallerId"] == "+14000000003")][
            "Description"
        ]
        == "someone re-added this one by hand"
    )


async def test_list_operations_says_which_operations_have_nothing_to_undo(
    mcp: Client, sandbox: Sandbox
) -> None:
    sandbox.inject(Fault(status=500, path=BULK))
    failed = await call(mcp, "bulk_delete_blacklist_numbers", ids=["1"])
    sandbox.inject(Fault(status=400, method="PATCH"))
    refused = await mcp.call_tool("update_blacklist_number", {"id": "2", "description": "x"})
    assert refused.is_error
    deleted = await call(mcp, "bulk_delete_blacklist_numbers", ids=["3"])
    raw = await mcp.call_tool("list_operations", {})
    page = raw.structured_content
    assert page is not None
    restorable = {o["operation_id"]: o["restorable"] for o in page["operations"]}
    assert restorable[failed["operation_id"]] is False and restorable[deleted["operation_id"]] is True
    assert [o["restorable"] for o in page["operations"] if o["kind"] == "update"] == [False]
    assert raw.content[0].text.count("(nothing to undo)") == 2  # type: ignore[union-attr]


async def test_two_deleted_entries_with_one_caller_id_are_recreated_once(
    mcp: Client, sandbox: Sandbox
) -> None:
    """A PBX can hold the same caller ID twice (entries from before a uniqueness check). Restoring their
    delete creates it once and reports the second as already present, not as a failure."""
    twins = [sandbox.add("+1415 twin", f"copy {n}", entry_id=f"twin-{n}") for n in range(2)]
    deleted = await call(mcp, "bulk_delete_blacklist_numbers", ids=[t["Id"] for t in twins])
    restored = await call(mcp, "restore_blacklist_numbers", operation_id=deleted["operation_id"])
    assert restored["counts"] == {"recreated": 1, "already_present": 1} and restored["outcome"] == "completed"
    assert caller_ids(sandbox).count("+1415 twin") == 1


async def test_a_cancelled_restore_journals_the_create_in_flight_as_unknown(
    sandbox_url: str, journal: Journal, sandbox: Sandbox
) -> None:
    """Cancelled while the PBX has the second of three creations (it is slow, and applies it anyway): the
    journal says recreated, unknown, not attempted; undoing that restore removes both entries it created."""
    async with client_for(
        sandbox_url, 1
    )() as xapi:  # one at a time: the concurrent case is test_concurrency's
        deleted = await bulk_delete.bulk_delete(xapi, journal, ["1", "2", "3"], dry_run=False)
        assert deleted.operation_id is not None
        on_request(
            sandbox,
            "POST",
            LIST,
            lambda _: sandbox.inject(Fault(path=LIST, delay=1.5, passthrough=True)),
            nth=2,
        )
        with anyio.move_on_after(0.8) as scope:
            await restore.restore(xapi, journal, deleted.operation_id, None)
        assert scope.cancelled_caught
        await anyio.sleep(1.0)  # the PBX finishes the creation it was given
        (operation, *_) = await journal.recent()
        assert operation.kind == "restore" and operation.outcome == "interrupted"
        items = await journal.items(operation.operation_id)
        assert [i.status for i in items] == ["recreated", "unknown", "failed"]
        assert caller_ids(sandbox).count(SEED_ENTRIES[1][0]) == 1  # applied although cut off
        undo = await restore.restore(xapi, journal, operation.operation_id, None)
    assert undo.counts.get("removed") == 2 and not {"failed", "unknown"} & set(undo.counts)
    assert not {c for c, _ in SEED_ENTRIES[:3]} & set(caller_ids(sandbox))


# == Odd characters ==================================================================================

ODD_IDS = ["a\u2028b", "c\u2029d", "e\u0085f", "g\u202eh", "it's", "50%/2", "\u00e9\U0001f600"]


async def test_odd_ids_and_texts_from_the_pbx_survive_delete_restore_and_the_resource(
    mcp: Client, sandbox: Sandbox, journal: Journal
) -> None:
    """Ids, caller IDs and descriptions holding line separators, NEL, NUL, bidi overrides, quotes and
    astral characters: deleted by id, journaled, shown escaped, restored exactly, listed in full."""
    odd = [
        sandbox.add(f"+1401 {n}{key}\x00", f"note {n}\u2028\u0085\x00\u202e{key}", entry_id=key)
        for n, key in enumerate(ODD_IDS)
    ]
    innocent = [sandbox.add(f"+1402{i:07d}", "innocent")["Id"] for i in range(20)]
    result = await client_call_raw(mcp, "bulk_delete_blacklist_numbers", ids=[*ODD_IDS, *innocent])
    assert result["structured"]["deleted"] == 27
    for raw_char in ("\u2028", "\u2029", "\u0085", "\u202e", "\x00"):
        assert raw_char not in result["text"]  # escaped for whoever reads the text
    items = await journal.items(result["structured"]["operation_id"])
    assert [(i.before.id, i.before.caller_id, i.before.description) for i in items[:7]] == [  # type: ignore[union-attr]
        (e["Id"], e["CallerId"], e["Description"]) for e in odd
    ]
    document = json.loads(
        (await mcp.read_resource(result["structured"]["details"])).contents[0].text  # type: ignore[union-attr]
    )
    assert [i["id"] for i in document["items"]] == [*ODD_IDS, *innocent]

    restored = await call(mcp, "restore_blacklist_numbers", operation_id=result["structured"]["operation_id"])
    assert restored["counts"] == {"recreated": 27}
    back = {(e["CallerId"], e["Description"]) for e in sandbox.entries.values()}
    assert {(e["CallerId"], e["Description"]) for e in odd} <= back
    again = await call(mcp, "restore_blacklist_numbers", ids=ODD_IDS)
    assert again["outcome"] == "nothing_to_do" and set(again["counts"]) == {"already_present"}


async def test_defect_one_entry_with_a_lone_surrogate_blocks_deleting_the_others(
    mcp: Client, sandbox: Sandbox, escaping_pbx: None
) -> None:
    """A PBX may send a lone UTF-16 surrogate (escaped as \\ud800). The journal cannot store it, so the whole
    delete is refused, the two innocent entries included, and the error blames the journal's location
    ("Set THREECX_JOURNAL ...") without naming the entry. Either the delete works (the text stored in a
    form that round-trips) or the refusal names the entry and does not send the user to move the journal."""
    bad = sandbox.add("+1403\ud800x", "hostile")
    result = await call_confirmed(mcp, "bulk_delete_blacklist_numbers", {"ids": [bad["Id"], "1", "2"]})
    text = result.content[0].text  # type: ignore[union-attr]
    if result.is_error:
        assert "THREECX_JOURNAL" not in text and bad["Id"] in text, text
    else:
        assert result.structured_content is not None and result.structured_content["deleted"] == 3


@pytest.mark.parametrize("tool", ["list_blacklist_numbers", "get_blacklist_number"])
async def test_defect_reading_an_entry_with_a_lone_surrogate_fails_without_a_reason(
    mcp: Client, sandbox: Sandbox, escaping_pbx: None, tool: str
) -> None:
    bad = sandbox.add("+1404\ud800x", "hostile")
    arguments = {"id": bad["Id"]} if tool == "get_blacklist_number" else {"search": "1404"}
    result = await mcp.call_tool(tool, arguments)
    text = result.content[0].text  # type: ignore[union-attr]
    assert not result.is_error or not text.startswith("Error executing tool"), text


# == Results that fit an assistant ====================================================================


async def test_hostile_ascii_sizes_stay_within_the_result_bounds(mcp: Client, sandbox: Sandbox) -> None:
    """100 entries whose caller ID and description are 5,000 characters each (a lying PBX): the delete's
    and the restore's text stay under 16 KiB and their structured content under 256 KiB."""
    ids = [sandbox.add(f"+1405{i:04d}" + "9" * 4_991, "d" * 5_000)["Id"] for i in range(100)]
    deleted = await client_call_raw(mcp, "bulk_delete_blacklist_numbers", ids=ids)
    assert deleted["structured"]["deleted"] == 100 and deleted["structured"]["omitted"] > 0
    restored_raw = await mcp.call_tool(
        "restore_blacklist_numbers", {"operation_id": deleted["structured"]["operation_id"]}
    )
    restored = restored_raw.structured_content
    assert restored is not None and restored["counts"] == {"recreated": 100}
    for structured, text in (
        (deleted["structured"], deleted["text"]),
        (restored, restored_raw.content[0].text),  # type: ignore[union-attr]
    ):
        assert len(text.encode()) <= MAX_TEXT_BYTES
        assert wire_bytes(structured) <= MAX_STRUCTURED_BYTES, wire_bytes(structured)


async def emoji_entries_changed_since_their_restore(mcp: Client, sandbox: Sandbox) -> dict[str, Any]:
    """160 entries whose caller ID and description are emoji (4 UTF-8 bytes each, within the input limits),
    deleted, restored, then 150 of them edited by someone: undoing the restore removes 10 and reports 150
    changed_since, with long reasons that quote the new values."""
    ids = [sandbox.add(f"+1416{i:04d}" + "\U0001f600" * 60, "\U0001f4de" * 200)["Id"] for i in range(160)]
    deleted = await call(mcp, "bulk_delete_blacklist_numbers", ids=ids)
    restored = await call(mcp, "restore_blacklist_numbers", operation_id=deleted["operation_id"])
    for entry in sandbox.entries.values():
        if entry["CallerId"].startswith("+1416") and int(entry["CallerId"][5:9]) < 150:
            entry["Description"] = "\U0001f525" * 200
    raw = await call_confirmed(mcp, "restore_blacklist_numbers", {"operation_id": restored["operation_id"]})
    assert not raw.is_error and raw.structured_content is not None
    assert raw.structured_content["counts"] == {"changed_since": 150, "removed": 10}
    return {"structured": raw.structured_content, "text": raw.content[0].text}  # type: ignore[union-attr]


async def test_text_stays_under_16_kib_with_four_byte_characters(mcp: Client, sandbox: Sandbox) -> None:
    result = await emoji_entries_changed_since_their_restore(mcp, sandbox)
    assert len(result["text"].encode()) <= MAX_TEXT_BYTES


async def test_defect_cutting_long_text_drops_where_the_rest_is(mcp: Client, sandbox: Sandbox) -> None:
    """The renderers count lines and characters, not bytes; past 16,000 bytes a safety net cuts the text's
    end, which is where it says how many results are not listed and which resource holds them."""
    result = await emoji_entries_changed_since_their_restore(mcp, sandbox)
    assert result["structured"]["omitted"] > 0 and result["structured"]["details"]
    assert result["structured"]["details"] in result["text"], result["text"][-300:]


@pytest.mark.parametrize("char", ["\u4e2d", "\U0001f600"])
async def test_defect_non_ascii_ids_push_structured_content_past_256_kib(mcp: Client, char: str) -> None:
    """No lying PBX needed: 300 ids of 1,000 non-ASCII characters (the input limit) that do not exist.
    The size cap counts characters, but the wire carries 3 or 4 bytes for each."""
    ids = [f"{n:03d}" + char * 997 for n in range(300)]
    result = await call(mcp, "bulk_delete_blacklist_numbers", ids=ids, dry_run=True)
    assert result["not_found"] == 300
    assert wire_bytes(result) <= MAX_STRUCTURED_BYTES, f"{wire_bytes(result):,} bytes"


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_defect_an_applied_restore_is_lost_over_http_when_the_pbx_gives_long_ids(
    http_server: str, sandbox: Sandbox, long_ids: Callable[[], None], mode: str
) -> None:
    """The ids a PBX gives re-created entries (`current_id`) are listed but not counted by the size cap:
    100 ids of 5,000 characters and the applied restore's answer exceeds the SDK client's 1 MiB event
    limit, so the user gets an error and no operation_id although all 100 entries are back."""
    ids = [sandbox.add(f"+1406{i:04d}", "n")["Id"] for i in range(100)]
    async with http_client(http_server, mode) as client:
        deleted = await call(client, "bulk_delete_blacklist_numbers", ids=ids)
        long_ids()
        try:
            restored = await call(client, "restore_blacklist_numbers", operation_id=deleted["operation_id"])
        except MCPError as exc:  # the answer was lost on the way
            restored = {"lost": f"{type(exc).__name__}: {exc}"}
    assert len([c for c in caller_ids(sandbox) if c.startswith("+1406")]) == 100  # applied
    assert restored.get("operation_id"), f"applied, but the client got {restored}"
    assert wire_bytes(restored) <= MAX_STRUCTURED_BYTES


async def test_defect_the_operation_resource_is_unreadable_over_http_with_values_the_tools_accept(
    http_server: str, sandbox: Sandbox
) -> None:
    """500 entries with a 100-character caller ID and a 255-character description (the tools' own input
    limits) in Chinese: a resource page holds 500 items as \\u-escaped JSON, over 1 MiB, and the SDK client
    drops it in protocol 2025-11-25 (2026-07-28 delivers it). The per-id detail a large delete points to
    cannot be read."""
    ids = [sandbox.add(f"+1407{i:04d}" + "\u4e2d" * 91, "\u4e2d" * 255)["Id"] for i in range(500)]
    async with http_client(http_server, "legacy") as client:
        deleted = await call(client, "bulk_delete_blacklist_numbers", ids=ids)
        try:
            page = (await client.read_resource(deleted["details"])).contents[0].text  # type: ignore[union-attr]
        except MCPError as exc:
            page = f"lost: {type(exc).__name__}: {exc}"
    assert not page.startswith("lost"), page
    assert len(json.loads(page)["items"]) > 0


# == Cursors and the operation resource ==============================================================


def forged_cursor(state: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(state).encode()).decode().rstrip("=")


async def test_defect_a_forged_cursor_with_a_lone_surrogate_gets_no_reason(mcp: Client) -> None:
    cursor = forged_cursor({"s": None, "a": ["\ud800", "1"], "n": 0})
    text = await error_text(mcp, "list_blacklist_numbers", cursor=cursor)
    assert "cursor" in text and not text.startswith("Error executing tool"), text


@pytest.mark.parametrize(
    "state",
    [
        {"s": "other search", "a": ["+1", "1"], "n": 5},
        {"s": None, "a": ["+1"], "n": 0},
        {"s": None, "a": ["+1", "1"], "n": -1},
        {"s": None, "a": ["+1", 1], "n": 0},
        [1, 2, 3],
    ],
)
async def test_forged_cursors_are_refused_in_words(mcp: Client, state: Any) -> None:
    text = await error_text(mcp, "list_blacklist_numbers", cursor=forged_cursor(state))
    assert "cursor" in text and "omit" in text or "belongs to the search" in text, text


async def test_a_cursor_keeps_its_place_when_its_last_entry_is_deleted(mcp: Client, sandbox: Sandbox) -> None:
    first = await call(mcp, "list_blacklist_numbers", limit=4)
    del sandbox.entries[first["entries"][-1]["id"]]  # the cursor's own anchor is gone
    second = await call(mcp, "list_blacklist_numbers", limit=4, cursor=first["next_cursor"])
    expected = sorted(c for c, _ in SEED_ENTRIES)[4:8]
    assert [e["caller_id"] for e in second["entries"]] == expected
    assert second["total"] == 4 + 8  # the 4 already shown (one deleted since) and the 8 after them


async def test_list_operations_refuses_a_cursor_of_another_pbx(
    client_factory: Callable[[], XapiClient], journal: Journal
) -> None:
    other = Journal(journal.path, "https://other-pbx.example.com")
    async with Client(build_server(PbxRoster.single(client_factory, other))) as client:
        theirs = await call(client, "bulk_delete_blacklist_numbers", ids=["1"])
    async with Client(build_server(PbxRoster.single(client_factory, journal))) as client:
        mine = await call(client, "bulk_delete_blacklist_numbers", ids=["2"])
        text = await error_text(client, "list_operations", cursor=theirs["operation_id"])
        assert "not an operation of this PBX" in text
        page = await call(client, "list_operations", cursor=mine["operation_id"])
        assert page == {"operations": [], "next_cursor": None}


@pytest.mark.parametrize(
    ("suffix", "words"),
    [("nope", "No journaled operation"), ("{op}?start=-1", "start is the position of an entry")],
)
async def test_defect_operation_resource_errors_lose_their_reason(
    mcp: Client, suffix: str, words: str
) -> None:
    """The resource words its refusals, but raises them as plain exceptions, so the SDK replaces them with
    "Error creating resource from template ..."."""
    deleted = await call(mcp, "bulk_delete_blacklist_numbers", ids=["1"])
    uri = "threecx://operations/" + suffix.format(op=deleted["operation_id"])
    with pytest.raises(MCPError) as caught:
        await mcp.read_resource(uri)
    assert words in str(caught.value), str(caught.value)


async def test_the_operation_resource_pages_end_and_other_pbx_operations_stay_hidden(
    client_factory: Callable[[], XapiClient], journal: Journal, sandbox: Sandbox
) -> None:
    ids = [sandbox.add(f"+1408{i:07d}")["Id"] for i in range(501)]
    async with Client(build_server(PbxRoster.single(client_factory, journal))) as client:
        deleted = await call(client, "bulk_delete_blacklist_numbers", ids=ids)
        first = json.loads((await client.read_resource(deleted["details"])).contents[0].text)  # type: ignore[union-attr]
        assert [i["id"] for i in first["items"]] == ids and first["next_page"] is None  # small: one page
        second = json.loads(
            (await client.read_resource(f"{deleted['details']}?start=500")).contents[0].text  # type: ignore[union-attr]
        )
        assert [i["id"] for i in second["items"]] == ids[500:] and second["next_page"] is None
        beyond = json.loads(
            (await client.read_resource(f"{deleted['details']}?start=9000")).contents[0].text  # type: ignore[union-attr]
        )
        assert beyond["items"] == [] and beyond["next_page"] is None
    other = Journal(journal.path, "https://other-pbx.example.com")
    async with Client(build_server(PbxRoster.single(client_factory, other))) as client:
        with pytest.raises(MCPError, match="Error creating resource|No journaled operation"):
            await client.read_resource(deleted["details"])


# == Lying and capped servers ========================================================================


async def test_defect_a_capped_pbx_without_count_ends_a_listing_early(mcp: Client, sandbox: Sandbox) -> None:
    """A PBX that caps pages at 5 and announces the rest by nextLink, but sends no $count: listing 50 shows
    5 entries, total unknown and no next_cursor, as if that were all. A short page is not the end."""
    sandbox.page_cap, sandbox.supports_count = 5, False
    seen: list[str] = []
    cursor: str | None = None
    for _ in range(20):
        page = await call(mcp, "list_blacklist_numbers", limit=50, **({"cursor": cursor} if cursor else {}))
        seen += [e["caller_id"] for e in page["entries"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(c for c, _ in SEED_ENTRIES), f"the listing ended after {len(seen)} entries"


async def test_defect_a_pbx_ignoring_filter_turns_a_search_into_everything(
    mcp: Client, sandbox: Sandbox
) -> None:
    """A PBX (or proxy) that drops $filter: a search for "eremy" returns all 12 entries as matches (an
    assistant asked to delete the matches would delete the whole blacklist), and following next_cursor
    repeats the same page forever. Lookups and scans check what they get; the listing does not."""
    sandbox.ignore_filter = True
    result = await mcp.call_tool("list_blacklist_numbers", {"search": "eremy"})
    if not result.is_error:
        assert result.structured_content is not None
        shown = [e["caller_id"] for e in result.structured_content["entries"]]
        assert shown == ["*eremy"], f"search 'eremy' listed {shown}"


async def test_defect_a_pbx_ignoring_filter_makes_list_paging_endless(mcp: Client, sandbox: Sandbox) -> None:
    sandbox.ignore_filter = True
    seen: list[str] = []
    cursor: str | None = None
    for _ in range(10):
        result = await mcp.call_tool(
            "list_blacklist_numbers", {"limit": 5, **({"cursor": cursor} if cursor else {})}
        )
        if result.is_error:
            break
        assert result.structured_content is not None
        seen += [e["id"] for e in result.structured_content["entries"]]
        cursor = result.structured_content["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)), f"the same entries came back page after page: {seen}"


async def test_a_lookup_refuses_an_answer_holding_keys_not_asked_for(
    xapi: XapiClient, sandbox: Sandbox
) -> None:
    """A PBX that ignores $filter (and sends no $count) answers a lookup with other entries: the lookup says
    so instead of concluding anything (or handing back entries that were not asked for)."""
    sandbox.ignore_filter, sandbox.supports_count = True, False
    with pytest.raises(UnexpectedResponse, match="ignored the filter"):
        await xapi.find_by_ids(["2"])


async def test_defect_a_pbx_ignoring_filter_without_count_makes_existing_entries_not_found(
    mcp: Client, sandbox: Sandbox
) -> None:
    """It answers every lookup with the first entries of the blacklist and no count: the lookup takes
    "not among them" for "does not exist". Scans detect this PBX (an entry sent twice); lookups should too,
    instead of reporting entry 2, which exists, as not found."""
    sandbox.ignore_filter, sandbox.supports_count = True, False
    result = await mcp.call_tool("bulk_delete_blacklist_numbers", {"ids": ["2"], "dry_run": True})
    if not result.is_error:
        assert result.structured_content is not None
        assert result.structured_content["not_found"] == 0, "entry 2 exists but was reported not found"


@pytest.mark.parametrize("variant", ["no_count", "ignore_skip", "silent_cap"])
async def test_bulk_delete_accounting_on_servers_that_page_badly(
    mcp: Client, sandbox: Sandbox, journal: Journal, variant: str
) -> None:
    """1,200 ids, half of them missing, on a PBX capping pages at 50 and paging badly, with an unrelated
    deleter at every read and the second delete chunk failing: every id is accounted for by what it is."""
    ids = [sandbox.add(f"+1409{i:07d}")["Id"] for i in range(1_200)]
    bystanders = [sandbox.add(f"+1410{i:07d}")["Id"] for i in range(300)]
    for entry_id in ids[::2]:
        del sandbox.entries[entry_id]
    sandbox.page_cap = 50
    if variant == "no_count":
        sandbox.supports_count = False
    elif variant == "ignore_skip":
        sandbox.ignore_skip = True
    else:
        sandbox.next_link = False

    def unrelated_deleter(request: RecordedRequest) -> None:
        if request.method == "GET" and bystanders:
            sandbox.entries.pop(bystanders.pop(), None)

    sandbox.hooks.append(unrelated_deleter)
    # The second chunk (the last 100 present ids) fails: those entries stay, the 500 before them go.
    on_request(sandbox, "POST", BULK, lambda _: sandbox.inject(Fault(status=500, path=BULK)), nth=2)
    result = await call(mcp, "bulk_delete_blacklist_numbers", ids=ids)
    assert (result["not_found"], result["failed"], result["deleted"]) == (600, 100, 500)
    assert not set(ids[1:1_000:2]) & set(sandbox.entries) and set(ids[1_001::2]) <= set(sandbox.entries)
    items = await journal.items(result["operation_id"])
    assert {i.entry_id for i in items if i.status == "failed"} == set(ids[1_001::2])  # by id, not position
    await assert_journal_matches_the_pbx(journal, sandbox)


# == Crashes, and two processes on one journal =======================================================


async def test_a_server_killed_mid_delete_leaves_a_record_that_restores_everything(
    sandbox: Sandbox,
    sandbox_url: str,
    journal: Journal,
    make_server: Callable[..., BlacklistServer],
    tmp_path: Path,
) -> None:
    """SIGKILL while the PBX has the second of three delete chunks: no end record, two chunks applied.
    A new server shows the operation as not closed and restorable, and its restore puts back exactly
    what is gone, once."""
    ids = [sandbox.add(f"+1411{i:07d}", f"victim {i}\u2028")["Id"] for i in range(1_200)]
    pid_file = tmp_path / "server.pid"
    killed: list[int] = []

    def kill(_: RecordedRequest) -> None:
        pid = int(pid_file.read_text())
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)

    on_request(sandbox, "POST", BULK, kill, nth=2)
    with anyio.fail_after(120), pytest.raises(ExceptionGroup) as died:
        async with Client(server_process(sandbox_url, journal.path, pid_file)) as client:
            await call_confirmed(client, "bulk_delete_blacklist_numbers", {"ids": ids})
    assert died.group_contains(MCPError, match="Connection closed", depth=2)
    assert killed
    gone = [i for i in ids if i not in sandbox.entries]
    assert len(gone) == 1_000  # the chunk in flight was applied by the PBX anyway

    async with Client(make_server()) as client:
        (operation,) = (await call(client, "list_operations"))["operations"]
        assert operation["outcome"] == "not_closed" and operation["restorable"]
        assert operation["counts"] == {"pending": 1_200}
        restored = await call(client, "restore_blacklist_numbers", operation_id=operation["operation_id"])
        assert restored["counts"] == {"recreated": 1_000, "already_present": 200}
        again = await call(client, "restore_blacklist_numbers", operation_id=operation["operation_id"])
        assert again["outcome"] == "nothing_to_do"
    assert [c for c in caller_ids(sandbox) if c.startswith("+1411")] == [
        f"+1411{i:07d}" for i in range(1_200)
    ]
    assert all(
        e["Description"] == f"victim {int(e['CallerId'][5:])}\u2028"
        for e in sandbox.entries.values()
        if e["CallerId"].startswith("+1411")
    )


async def test_two_server_processes_deleting_at_once_share_one_journal(
    sandbox: Sandbox,
    sandbox_url: str,
    journal: Journal,
    make_server: Callable[..., BlacklistServer],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two desktop clients on one machine: two server processes, one journal file, deleting at once."""
    monkeypatch.setitem(sandbox.api_clients, "second-client", "second-api-key")
    api_clients = [(SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET), ("second-client", "second-api-key")]
    batches = [
        [sandbox.add(f"+1412{p}{b}{i:04d}")["Id"] for i in range(40)] for p in range(2) for b in range(5)
    ]

    async def serve(process: int) -> None:
        params = server_process(
            sandbox_url, journal.path, tmp_path / f"server-{process}.pid", api_clients[process]
        )
        async with Client(params) as client:
            for batch in batches[process * 5 : process * 5 + 5]:
                result = await call(client, "bulk_delete_blacklist_numbers", ids=batch)
                assert result["deleted"] == 40

    with anyio.fail_after(180):
        async with anyio.create_task_group() as group:
            group.start_soon(serve, 0)
            group.start_soon(serve, 1)
    operations = await journal.recent(100)
    assert len(operations) == 10 and all(
        o.outcome == "completed" and o.counts == {"deleted": 40} for o in operations
    )
    await assert_journal_matches_the_pbx(journal, sandbox)
    async with Client(make_server()) as client:
        everything = await call(client, "restore_blacklist_numbers", ids=[i for b in batches for i in b])
    assert everything["counts"] == {"recreated": 400}


# == Where the journal lives =========================================================================


async def test_every_commit_is_fsynced_whatever_the_platform_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Some SQLite builds default WAL databases to synchronous=NORMAL (no fsync at commit): the journal must
    ask for FULL itself, not rely on this build's default (which happens to be FULL)."""
    real_connect = sqlite3.connect

    def connect_with_normal_default(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        connection: sqlite3.Connection = real_connect(*args, **kwargs)
        connection.execute("PRAGMA synchronous=NORMAL")  # as SQLITE_DEFAULT_WAL_SYNCHRONOUS=1 builds start
        return connection

    monkeypatch.setattr(sqlite3, "connect", connect_with_normal_default)
    journal = Journal(tmp_path / "journal.sqlite3", "pbx")
    await journal.begin(OperationKind.DELETE, [])
    connection = journal._connection
    assert connection is not None
    assert connection.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    journal.close()


@pytest.mark.parametrize("kind", ["fifo", "directory"])
async def test_a_fifo_or_directory_at_the_journal_path_refuses_changes_without_hanging(
    client_factory: Callable[[], XapiClient], sandbox: Sandbox, tmp_path: Path, kind: str
) -> None:
    path = tmp_path / "journal.sqlite3"
    os.mkfifo(path) if kind == "fifo" else path.mkdir()
    with anyio.fail_after(30):
        async with Client(build_server(PbxRoster.single(client_factory, Journal(path, "pbx")))) as client:
            text = await error_text(client, "bulk_delete_blacklist_numbers", ids=["1", "2"])
            update = await error_text(client, "update_blacklist_number", id="3", description="x")
    words = "a FIFO (named pipe)" if kind == "fifo" else "a directory"
    assert words in text and "Nothing was changed on the PBX" in text and words in update
    assert {"1", "2"} <= set(sandbox.entries) and sandbox.entries["3"]["Description"] == SEED_ENTRIES[2][1]


async def test_defect_a_0_1_journal_configured_without_the_jsonl_suffix_breaks_every_change(
    sandbox: Sandbox, sandbox_url: str, client_factory: Callable[[], XapiClient], tmp_path: Path
) -> None:
    """0.1 documented THREECX_JOURNAL as "the safety journal file" and any name worked (journal.log).
    After the upgrade that same path is opened as the SQLite store: every change is refused ("not a
    SQLite database") and the 0.1 history is never imported, so its operations cannot be restored."""
    from threecx_mcp.config import PbxEndpoint, Settings
    from threecx_mcp.wiring import journal_for

    old = tmp_path / "journal.log"
    begin = {
        "phase": "begin",
        "operation_id": "0123456789ab",
        "time": "2026-11-20T10:00:00.000+00:00",
        "tool": "bulk_delete_blacklist_numbers",
        "pbx": PbxEndpoint.parse(sandbox_url).origin,
        "ids": ["99"],
        "before": [{"id": "99", "caller_id": "+1413 from 0.1", "description": None}],
    }
    end = {
        "phase": "end",
        "operation_id": "0123456789ab",
        "time": begin["time"],
        "outcome": "completed",
        "statuses": {"99": "deleted"},
    }
    old.write_text(json.dumps(begin) + "\n" + json.dumps(end) + "\n")
    settings = Settings.load(
        url=sandbox_url, client_id=SANDBOX_CLIENT_ID, client_secret=SANDBOX_CLIENT_SECRET, journal=old
    )
    async with Client(build_server(PbxRoster.single(client_factory, journal_for(settings)))) as client:
        result = await call_confirmed(client, "bulk_delete_blacklist_numbers", {"ids": ["1"]})
        assert not result.is_error, result.content[0].text  # type: ignore[union-attr]
        undo = await call(client, "restore_blacklist_numbers", operation_id="0123456789ab")
    assert undo["counts"] == {"recreated": 1} and "+1413 from 0.1" in caller_ids(sandbox)


async def test_a_journal_path_symlinked_to_another_programs_database_is_refused_and_left_alone(
    client_factory: Callable[[], XapiClient], sandbox: Sandbox, tmp_path: Path
) -> None:
    theirs = tmp_path / "browser-history.sqlite"
    with sqlite3.connect(theirs) as db:
        db.execute("CREATE TABLE visits (url TEXT)")
        db.execute("INSERT INTO visits VALUES ('https://example.com')")
    db.close()
    before = theirs.read_bytes()
    link = tmp_path / "journal.sqlite3"
    link.symlink_to(theirs)
    async with Client(build_server(PbxRoster.single(client_factory, Journal(link, "pbx")))) as client:
        text = await error_text(client, "bulk_delete_blacklist_numbers", ids=["1"])
    assert "another program" in text and "Nothing was changed on the PBX" in text
    assert "1" in sandbox.entries and theirs.read_bytes() == before


async def test_a_journal_reached_through_a_symlink_works_and_stays_private(
    client_factory: Callable[[], XapiClient], sandbox: Sandbox, tmp_path: Path
) -> None:
    real = tmp_path / "real" / "journal.sqlite3"
    real.parent.mkdir()
    await Journal(real, "another PBX").begin(OperationKind.DELETE, [])  # the file exists already
    link = tmp_path / "journal.sqlite3"
    link.symlink_to(real)
    async with Client(build_server(PbxRoster.single(client_factory, Journal(link, "pbx")))) as client:
        deleted = await call(client, "bulk_delete_blacklist_numbers", ids=["1", "2"])
        restored = await call(client, "restore_blacklist_numbers", operation_id=deleted["operation_id"])
    assert restored["counts"] == {"recreated": 2}
    assert stat.S_IMODE(real.stat().st_mode) == 0o600 and link.is_symlink()
    assert len(await Journal(real, "pbx").recent()) == 2


async def test_defect_a_symlink_to_a_journal_not_created_yet_is_refused(
    client_factory: Callable[[], XapiClient], sandbox: Sandbox, tmp_path: Path
) -> None:
    """State kept in a synced folder: the journal path is a symlink to a file not created yet, in a folder
    that exists and is writable. O_CREAT|O_EXCL fails on the dangling link (EEXIST) and the retry opens
    without O_CREAT (ENOENT): every change is refused with "No such file or directory"."""
    (tmp_path / "synced").mkdir()
    link = tmp_path / "journal.sqlite3"
    link.symlink_to(tmp_path / "synced" / "journal.sqlite3")
    async with Client(build_server(PbxRoster.single(client_factory, Journal(link, "pbx")))) as client:
        result = await call_confirmed(client, "bulk_delete_blacklist_numbers", {"ids": ["1"]})
    assert not result.is_error, result.content[0].text  # type: ignore[union-attr]
    assert stat.S_IMODE((tmp_path / "synced" / "journal.sqlite3").stat().st_mode) == 0o600
