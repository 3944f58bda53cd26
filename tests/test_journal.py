"""The safety journal and restore: nothing lost, even when a bulk delete is cut short."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from threecx_mcp import blacklist
from threecx_mcp.client import XapiClient
from threecx_mcp.journal import Journal
from threecx_mcp.sandbox import SEED_ENTRIES, Fault, Sandbox
from threecx_mcp.server import BlacklistServer, build_server

from .test_tools import call, fail

pytestmark = pytest.mark.anyio
BULK = "/xapi/v1/BlackListNumbers/Pbx.BulkNumbersDelete"


def records(journal: Journal) -> list[dict[str, Any]]:
    return [json.loads(line) for line in journal.path.read_text().splitlines()]


def assert_journal_matches_the_pbx(journal: Journal, sandbox: Sandbox) -> None:
    """Nothing reported deleted still exists; nothing deleted is unreported."""
    for operation in journal.operations():
        assert operation.outcome is not None, "every operation has an end record"
        for entry in operation.before:
            status = operation.statuses.get(entry.id)
            if operation.tool == "bulk_delete_blacklist_numbers":
                if status == "deleted":
                    assert entry.id not in sandbox.entries
                if entry.id not in sandbox.entries:
                    assert status in ("deleted", "unknown"), (entry.id, status)


async def test_changes_are_journaled_before_they_reach_the_pbx(
    make_server: Callable[..., BlacklistServer], journal: Journal, sandbox: Sandbox
) -> None:
    async with Client(make_server()) as client:
        updated = await call(client, "update_blacklist_number", id="1", description="changed")
        deleted = await call(client, "bulk_delete_blacklist_numbers", ids=["2", "3", "nope"])
    begin_update, end_update, begin_delete, end_delete = records(journal)
    assert begin_update["phase"] == "begin" and begin_update["tool"] == "update_blacklist_number"
    assert begin_update["operation_id"] == updated["operation_id"] == end_update["operation_id"]
    assert begin_update["before"] == [{"id": "1", "caller_id": SEED_ENTRIES[0][0], "description": SEED_ENTRIES[0][1]}]
    assert end_update["statuses"] == {"1": "updated"}
    assert begin_delete["ids"] == ["2", "3"] and begin_delete["operation_id"] == deleted["operation_id"]
    assert end_delete["outcome"] == "completed" and end_delete["statuses"] == {"2": "deleted", "3": "deleted"}
    assert all(r["time"].endswith("+00:00") for r in records(journal))


@pytest.mark.parametrize(("tool", "arguments"), [
    ("update_blacklist_number", {"id": "1", "description": "x"}),
    ("bulk_delete_blacklist_numbers", {"ids": ["1", "2"]}),
])
async def test_an_unwritable_journal_stops_the_operation(
    client_factory: Callable[[], XapiClient], sandbox: Sandbox, tmp_path: Path, tool: str, arguments: dict[str, Any]
) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    journal = Journal(blocker / "journal.jsonl", "pbx")
    before = {k: dict(v) for k, v in sandbox.entries.items()}
    async with Client(build_server(client_factory, journal)) as client:
        message = await fail(client, tool, **arguments)
    assert "Cannot write the safety journal" in message and "nothing was changed" in message
    assert "THREECX_JOURNAL" in message
    assert sandbox.entries == before
    assert sandbox.count("PATCH") == 0 and sandbox.count("POST", BULK) == 0


async def test_restore_recreates_deleted_entries_once(
    make_server: Callable[..., BlacklistServer], journal: Journal, sandbox: Sandbox
) -> None:
    async with Client(make_server()) as client:
        deleted = await call(client, "bulk_delete_blacklist_numbers", ids=["1", "4", "12"])
        first = await call(client, "restore_blacklist_numbers", operation_id=deleted["operation_id"])
        again = await call(client, "restore_blacklist_numbers", operation_id=deleted["operation_id"])
    assert [r["status"] for r in first["results"]] == ["recreated"] * 3
    assert [r["status"] for r in again["results"]] == ["already_present"] * 3
    assert len(sandbox.entries) == len(SEED_ENTRIES)
    restored = {e["CallerId"]: e["Description"] for e in sandbox.entries.values()}
    assert restored == dict(SEED_ENTRIES)
    assert first["results"][0]["current_id"] != "1"  # the PBX gave it a new id, and we say which


async def test_restore_rolls_back_updates_by_id(
    make_server: Callable[..., BlacklistServer], journal: Journal, sandbox: Sandbox
) -> None:
    async with Client(make_server()) as client:
        await call(client, "update_blacklist_number", id="6", caller_id="+61 2 9123 0000", description="oops")
        first = await call(client, "restore_blacklist_numbers", ids=[6])
        again = await call(client, "restore_blacklist_numbers", ids=["6"])
    assert first["results"][0]["status"] == "rolled_back"
    assert again["results"][0]["status"] == "already_restored"
    assert sandbox.entries["6"]["CallerId"] == SEED_ENTRIES[5][0]
    assert sandbox.entries["6"]["Description"] in (None, "")


@pytest.mark.parametrize(
    ("arguments", "words"),
    [
        ({}, "Give operation_id"),
        ({"operation_id": "nope"}, "No journaled update or delete with operation_id 'nope'"),
        ({"ids": ["1"]}, "The journal has no earlier state of id '1'"),
    ],
)
async def test_restore_rejections(make_server: Callable[..., BlacklistServer], arguments: dict[str, Any], words: str) -> None:
    async with Client(make_server()) as client:
        assert words in await fail(client, "restore_blacklist_numbers", **arguments)


async def test_a_bulk_delete_cut_off_by_a_pbx_failure_is_accounted_for(
    make_server: Callable[..., BlacklistServer], journal: Journal, sandbox: Sandbox
) -> None:
    ids = [sandbox.add(f"+1777{i:07d}")["Id"] for i in range(1_200)]
    sandbox.inject(Fault(status=403, path=BULK, times=1))  # fatal: the later chunks are not attempted
    async with Client(make_server()) as client:
        result = await call(client, "bulk_delete_blacklist_numbers", ids=ids)
    assert (result["deleted"], result["failed"]) == (0, 1_200)
    assert "not attempted" in result["results"][-1]["reason"]
    assert sandbox.count("POST", BULK) == 1
    assert_journal_matches_the_pbx(journal, sandbox)


async def test_a_cancelled_bulk_delete_leaves_an_accurate_journal(
    client_factory: Callable[[], XapiClient], journal: Journal, sandbox: Sandbox
) -> None:
    ids = [sandbox.add(f"+1888{i:07d}")["Id"] for i in range(1_200)]
    sandbox.inject(Fault(path=BULK, times=1, delay=1.5, passthrough=True))  # chunk 1 is slow but applies
    async with client_factory() as xapi:
        with anyio.move_on_after(0.8) as scope:
            await blacklist.bulk_delete(xapi, journal, ids, dry_run=False)
    assert scope.cancelled_caught
    await anyio.sleep(1.0)  # let the PBX finish the request it was given
    (operation,) = journal.operations()
    assert operation.outcome == "interrupted"
    assert [operation.statuses[i] for i in ids[:500]] == ["unknown"] * 500  # in flight: cannot know
    assert all(operation.statuses[i] == "failed" for i in ids[500:])  # never sent, verified still there
    assert_journal_matches_the_pbx(journal, sandbox)
    assert all(i not in sandbox.entries for i in ids[:500])
