"""Undo and honest accounting when the world misbehaves: odd characters, a failing journal, concurrent
editors, capped or lying server paging, later edits, and results too large for an assistant.

Everything runs through mcp.Client against the sandbox PBX over real HTTP on 127.0.0.1."""

from __future__ import annotations

import json
import sqlite3
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from threecx_mcp.client import XapiClient
from threecx_mcp.errors import JournalError
from threecx_mcp.journal import ItemRecord, Journal, OperationKind
from threecx_mcp.operations import bulk_delete
from threecx_mcp.pbxs import PbxRoster
from threecx_mcp.sandbox import SEED_ENTRIES, Fault, Sandbox
from threecx_mcp.sandbox.pbx import RecordedRequest
from threecx_mcp.server import BlacklistServer, build_server

from .support import assert_journal_matches_the_pbx, call_confirmed, statuses
from .test_tools import call, fail

pytestmark = pytest.mark.anyio
BULK = "/xapi/v1/BlackListNumbers/Pbx.BulkNumbersDelete"
ODD = "\u2028\u2029\u0085"


@pytest.fixture
async def mcp(make_server: Callable[..., BlacklistServer]) -> AsyncIterator[Client]:
    async with Client(make_server()) as client:
        yield client


def on_request(
    sandbox: Sandbox, method: str, path: str, action: Callable[[RecordedRequest], None], times: int = 1
) -> None:
    """Run `action` inside the PBX when the next `times` matching requests arrive (before they are answered)."""
    left = [times]

    def hook(request: RecordedRequest) -> None:
        if left[0] > 0 and request.method == method and request.path.startswith(path):
            left[0] -= 1
            action(request)

    sandbox.hooks.append(hook)


# -- the begin record comes first --------------------------------------------------------------


async def test_changes_are_journaled_before_they_reach_the_pbx(
    mcp: Client, journal: Journal, sandbox: Sandbox
) -> None:
    seen_by_the_pbx: list[list[tuple[str, str]]] = []

    def journal_rows(_: RecordedRequest) -> None:
        with sqlite3.connect(journal.path) as db:  # another reader, as a second process would be
            seen_by_the_pbx.append(db.execute("SELECT operation_id, kind FROM operations").fetchall())

    on_request(sandbox, "PATCH", "/xapi/v1/BlackListNumbers", journal_rows)
    on_request(sandbox, "POST", BULK, journal_rows)
    updated = await call(mcp, "update_blacklist_number", id="1", description="changed")
    deleted = await call(mcp, "bulk_delete_blacklist_numbers", ids=["2", "3", "nope"])
    assert seen_by_the_pbx[0] == [(updated["operation_id"], "update")]
    assert (deleted["operation_id"], "delete") in seen_by_the_pbx[1]
    update_items = await journal.items(updated["operation_id"])
    assert [
        (i.before.caller_id, i.before.description, i.after.description, i.status) for i in update_items
    ] == [  # type: ignore[union-attr]
        (SEED_ENTRIES[0][0], SEED_ENTRIES[0][1], "changed", "updated")
    ]
    assert statuses(await journal.items(deleted["operation_id"])) == {"2": "deleted", "3": "deleted"}
    operation = await journal.operation(deleted["operation_id"])
    assert (
        operation is not None and operation.kind is OperationKind.DELETE and operation.outcome == "completed"
    )
    assert operation.pbx == journal.pbx


@pytest.mark.parametrize(
    ("tool", "arguments"),
    [
        ("update_blacklist_number", {"id": "1", "description": "x"}),
        ("bulk_delete_blacklist_numbers", {"ids": ["1", "2"]}),
    ],
)
async def test_an_unwritable_journal_stops_the_operation(
    client_factory: Callable[[], XapiClient],
    sandbox: Sandbox,
    tmp_path: Path,
    tool: str,
    arguments: dict[str, Any],
) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    before = {k: dict(v) for k, v in sandbox.entries.items()}
    async with Client(
        build_server(PbxRoster.single(client_factory, Journal(blocker / "journal.sqlite3", "pbx")))
    ) as client:
        message = await fail(client, tool, **arguments)
    assert "Cannot write the safety journal" in message and "Nothing was changed on the PBX" in message
    assert "THREECX_JOURNAL" in message
    assert sandbox.entries == before
    assert sandbox.count("PATCH") == 0 and sandbox.count("POST", BULK) == 0


# -- truthful outcomes whatever fails after the begin record ------------------------------------


class EndFails(Journal):
    """A journal whose closing write fails, as on a disk that filled up mid-operation."""

    async def end(self, operation_id: str, outcome: str, items: Sequence[ItemRecord]) -> None:
        raise JournalError(f"Cannot write the safety journal {str(self.path)!r} (No space left on device).")


async def test_a_failed_end_record_still_reports_what_was_deleted(
    client_factory: Callable[[], XapiClient], sandbox: Sandbox, tmp_path: Path, sandbox_url: str
) -> None:
    journal = EndFails(tmp_path / "journal.sqlite3", "pbx")
    ids = [sandbox.add(f"+1321{i:07d}")["Id"] for i in range(34)]
    async with Client(build_server(PbxRoster.single(client_factory, journal))) as client:
        result = await call(client, "bulk_delete_blacklist_numbers", ids=ids)
        assert result["deleted"] == 34 and result["operation_id"]
        assert "nothing was changed" not in json.dumps(result).lower()
        assert any(
            "could not record" in w and "restore_blacklist_numbers still undoes it" in w
            for w in result["warnings"]
        )
        restored = await call(client, "restore_blacklist_numbers", operation_id=result["operation_id"])
    assert restored["counts"] == {"recreated": 34}  # the before-images were durable, so undo works
    assert sorted(e["CallerId"] for e in sandbox.entries.values() if e["CallerId"].startswith("+1321")) == [
        f"+1321{i:07d}" for i in range(34)
    ]


@pytest.fixture
def tiny_filesystem(tmp_path: Path) -> Iterator[Path]:
    """A real 4 MiB filesystem that a test can fill up."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(
            f"cannot mount a tmpfs here ({done.stderr.decode(errors='replace').strip()}); the injected test covers it"
        )
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


async def test_a_disk_that_fills_during_a_delete_gives_a_truthful_result(
    client_factory: Callable[[], XapiClient], sandbox: Sandbox, tiny_filesystem: Path
) -> None:
    journal = Journal(tiny_filesystem / "journal.sqlite3", "pbx")
    ids = [sandbox.add(f"+1322{i:07d}", "d" * 200)["Id"] for i in range(600)]

    def fill_the_disk(_: RecordedRequest) -> None:
        try:
            with open(tiny_filesystem / "filler", "wb") as filler:
                while True:
                    filler.write(b"\0" * 4096)
                    filler.flush()
        except OSError:
            pass  # full

    on_request(sandbox, "POST", BULK, fill_the_disk)
    async with Client(build_server(PbxRoster.single(client_factory, journal))) as client:
        raw = await call_confirmed(client, "bulk_delete_blacklist_numbers", {"ids": ids})
    assert not raw.is_error, raw.content
    result = raw.structured_content
    assert result is not None and result["deleted"] == 600 and result["operation_id"]
    assert result["warnings"] and "No space left on device" in result["warnings"][0]
    assert not set(ids) & set(sandbox.entries)


async def test_an_update_whose_read_back_fails_is_reported_applied(
    mcp: Client, sandbox: Sandbox, journal: Journal
) -> None:
    on_request(
        sandbox,
        "PATCH",
        "/xapi/v1/BlackListNumbers('1')",
        lambda _: sandbox.inject(Fault(status=503, method="GET", times=20)),
    )
    result = await call(mcp, "update_blacklist_number", id="1", description="applied")
    assert result["operation_id"] and result["read_back"] is False
    assert result["entry"]["description"] == "applied" and result["changed_fields"] == ["description"]
    assert "reading the entry back failed" in result["warnings"][0]
    assert sandbox.entries["1"]["Description"] == "applied"
    assert statuses(await journal.items(result["operation_id"])) == {"1": "updated"}


# -- accounting by id: concurrent editors and capped or lying server paging ------------------------


async def test_a_concurrent_deleter_during_verification_changes_nothing_reported(
    mcp: Client, sandbox: Sandbox, journal: Journal, pbx_variant: str
) -> None:
    ids = [sandbox.add(f"+1323{i:07d}")["Id"] for i in range(60)]
    others = [sandbox.add(f"+1324{i:07d}")["Id"] for i in range(60)]
    sandbox.inject(Fault(status=500, path=BULK, times=1))  # the first chunk fails: those ids stay
    sandbox.hooks.append(
        lambda r: [sandbox.entries.pop(i, None) for i in others[:30]] if r.method == "GET" else None
    )
    result = await call(mcp, "bulk_delete_blacklist_numbers", ids=[*ids, *others[30:]])
    reported = {r["id"]: r["status"] for r in result["results"]}
    for entry_id, status in reported.items():
        assert (status == "deleted") is (entry_id not in sandbox.entries), (entry_id, status)
    assert result["not_found"] == 0  # every id existed when looked up
    await assert_journal_matches_the_pbx(journal, sandbox)


@pytest.mark.parametrize("next_link", [True, False])
async def test_a_page_capped_pbx_loses_nothing(mcp: Client, sandbox: Sandbox, next_link: bool) -> None:
    ids = [sandbox.add(f"+1325{i:07d}")["Id"] for i in range(1_000)]
    sandbox.page_cap, sandbox.next_link = 100, next_link
    result = await call(mcp, "bulk_delete_blacklist_numbers", ids=ids, dry_run=True)
    assert (result["would_delete"], result["not_found"]) == (1_000, 0)
    result = await call(mcp, "bulk_delete_blacklist_numbers", ids=ids)
    assert (result["deleted"], result["not_found"], result["failed"]) == (1_000, 0, 0)
    assert len(sandbox.entries) == len(SEED_ENTRIES)


async def test_a_pbx_ignoring_skip_cannot_loop_the_server(mcp: Client, sandbox: Sandbox) -> None:
    ids = [sandbox.add(f"+1326{i:07d}")["Id"] for i in range(1_000)]
    sandbox.ignore_skip, sandbox.supports_in = True, False
    result = await call(mcp, "bulk_delete_blacklist_numbers", ids=ids)
    assert result["deleted"] == 1_000
    assert sandbox.count("GET") < 200


@pytest.mark.parametrize(
    ("supports_in", "how_many", "requests"),
    [
        (True, 16, 3),  # one `Id in (...)` lookup, one bulk delete, one `in` verification
        (True, 100, 3),
        # The plan already learnt that `in` is refused (and the count), so: `or` chains of 20 (ASP.NET's
        # 100-node limit) to look, the delete, the same chains to verify.
        (False, 16, 3),
        (False, 100, 11),
    ],
)
async def test_a_few_ids_on_a_huge_blacklist_cost_a_few_requests(
    mcp: Client, sandbox: Sandbox, supports_in: bool, how_many: int, requests: int
) -> None:
    for i in range(100_000):
        sandbox.add(f"+1327{i:07d}")
    ids = [str(100 + 997 * k) for k in range(how_many)]
    sandbox.supports_in = supports_in
    plan = await mcp.call_tool("bulk_delete_blacklist_numbers", {"ids": ids})
    planned = len(sandbox.requests)  # the plan costs one lookup; counted here is applying it
    plan_id = plan.structured_content["plan_id"]  # type: ignore[index]
    result = await call(mcp, "bulk_delete_blacklist_numbers", ids=ids, plan_id=plan_id)
    assert result["deleted"] == how_many and not set(ids) & set(sandbox.entries)
    assert sum(1 for r in sandbox.requests[planned:] if r.path.startswith("/xapi/")) == requests


# -- undo you can find and trust --------------------------------------------------------------------


@pytest.mark.parametrize("field", ["caller_id", "description"])
async def test_line_separators_survive_delete_and_restore(mcp: Client, sandbox: Sandbox, field: str) -> None:
    odd = sandbox.add(f"+1328 odd{ODD}x" if field == "caller_id" else "+13280000001", f"note{ODD}end")
    innocent = [sandbox.add(f"+1329{i:07d}", "innocent") for i in range(20)]
    deleted = await call(mcp, "bulk_delete_blacklist_numbers", ids=[odd["Id"], *(e["Id"] for e in innocent)])
    assert deleted["deleted"] == 21
    restored = await call(mcp, "restore_blacklist_numbers", operation_id=deleted["operation_id"])
    assert restored["counts"] == {"recreated": 21}
    back = {(e["CallerId"], e["Description"]) for e in sandbox.entries.values()}
    assert (odd["CallerId"], odd["Description"]) in back
    assert all((e["CallerId"], "innocent") in back for e in innocent)


async def test_restore_recreates_deleted_entries_once(mcp: Client, sandbox: Sandbox) -> None:
    deleted = await call(mcp, "bulk_delete_blacklist_numbers", ids=["1", "4", "12"])
    first = await call(mcp, "restore_blacklist_numbers", operation_id=deleted["operation_id"])
    again = await call(mcp, "restore_blacklist_numbers", operation_id=deleted["operation_id"])
    assert [r["status"] for r in first["results"]] == ["recreated"] * 3
    assert [r["status"] for r in again["results"]] == ["already_present"] * 3 and again[
        "operation_id"
    ] is None
    assert {e["CallerId"]: e["Description"] for e in sandbox.entries.values()} == dict(SEED_ENTRIES)
    assert first["results"][0]["current_id"] != "1"  # the PBX gave it a new id, and we say which


async def test_restore_rolls_back_updates_by_id(mcp: Client, sandbox: Sandbox) -> None:
    await call(mcp, "update_blacklist_number", id="6", caller_id="+61 2 9123 0000", description="oops")
    first = await call(mcp, "restore_blacklist_numbers", ids=[6])
    again = await call(mcp, "restore_blacklist_numbers", ids=["6"])
    assert first["results"][0]["status"] == "rolled_back"
    assert again["results"][0]["status"] == "already_restored" and again["outcome"] == "nothing_to_do"
    assert sandbox.entries["6"]["CallerId"] == SEED_ENTRIES[5][0]
    assert sandbox.entries["6"]["Description"] in (None, "")


async def test_restoring_an_old_update_leaves_later_edits_alone(mcp: Client, sandbox: Sandbox) -> None:
    update = await call(mcp, "update_blacklist_number", id="2", description="first edit")
    sandbox.entries["2"]["Description"] = "someone else's later edit"
    result = await call(mcp, "restore_blacklist_numbers", operation_id=update["operation_id"])
    (outcome,) = result["results"]
    assert outcome["status"] == "changed_since" and "overwrite=true" in outcome["reason"]
    assert "someone else" in outcome["reason"] and result["operation_id"] is None
    assert sandbox.entries["2"]["Description"] == "someone else's later edit"
    forced = await call(mcp, "restore_blacklist_numbers", operation_id=update["operation_id"], overwrite=True)
    assert forced["results"][0]["status"] == "rolled_back"
    assert sandbox.entries["2"]["Description"] == SEED_ENTRIES[1][1]


async def test_a_restore_can_itself_be_undone(mcp: Client, sandbox: Sandbox) -> None:
    update = await call(mcp, "update_blacklist_number", id="3", description="edited")
    deleted = await call(mcp, "bulk_delete_blacklist_numbers", ids=["7", "8"])
    undo_delete = await call(mcp, "restore_blacklist_numbers", operation_id=deleted["operation_id"])
    undo_update = await call(mcp, "restore_blacklist_numbers", operation_id=update["operation_id"])
    assert sandbox.entries["3"]["Description"] == SEED_ENTRIES[2][1]
    recreated = {r["current_id"] for r in undo_delete["results"]}
    assert recreated <= set(sandbox.entries)
    redo_delete = await call(mcp, "restore_blacklist_numbers", operation_id=undo_delete["operation_id"])
    redo_update = await call(mcp, "restore_blacklist_numbers", operation_id=undo_update["operation_id"])
    assert redo_delete["counts"] == {"removed": 2} and not recreated & set(sandbox.entries)
    assert redo_update["counts"] == {"rolled_back": 1} and sandbox.entries["3"]["Description"] == "edited"
    assert redo_delete["undoes"] == undo_delete["operation_id"]


async def test_list_operations_finds_what_to_undo(mcp: Client, sandbox: Sandbox) -> None:
    update = await call(mcp, "update_blacklist_number", id="1", description="edited")
    deleted = await call(mcp, "bulk_delete_blacklist_numbers", ids=["2", "3"])
    undo = await call(mcp, "restore_blacklist_numbers", operation_id=deleted["operation_id"])
    page = await call(mcp, "list_operations", limit=2)
    assert [(o["operation_id"], o["kind"]) for o in page["operations"]] == [
        (undo["operation_id"], "restore"),
        (deleted["operation_id"], "delete"),
    ]
    assert page["operations"][0]["undoes"] == deleted["operation_id"] and page["operations"][0]["counts"] == {
        "recreated": 2
    }
    assert page["operations"][1]["counts"] == {"deleted": 2} and page["operations"][1]["restorable"]
    older = await call(mcp, "list_operations", limit=2, cursor=page["next_cursor"])
    assert [o["operation_id"] for o in older["operations"]] == [update["operation_id"]] and older[
        "next_cursor"
    ] is None


async def test_the_operation_resource_holds_every_id(mcp: Client, sandbox: Sandbox) -> None:
    note = f"n{ODD}" * 60  # ~1 KB of escaped JSON per entry: the detail spans several pages
    ids = [sandbox.add(f"+1330{i:07d}", note)["Id"] for i in range(1_200)]
    result = await call(mcp, "bulk_delete_blacklist_numbers", ids=[*ids, "missing"])
    assert result["omitted"] == 1_201 - 100
    seen: list[dict[str, Any]] = []
    pages = 0
    uri: str | None = result["details"]
    while uri is not None:
        text = (await mcp.read_resource(uri)).contents[0].text  # type: ignore[union-attr]
        assert len(text.encode()) < 512 * 1024
        document = json.loads(text)
        pages += 1
        assert document["operation_id"] == result["operation_id"]
        assert "\u2028" not in (await mcp.read_resource(uri)).contents[0].text  # type: ignore[union-attr]
        seen += document["items"]
        uri = document["next_page"]
    assert [i["id"] for i in seen] == ids and {i["status"] for i in seen} == {"deleted"}
    assert seen[0]["before"]["description"] == note and pages >= 3


async def test_restore_rejections(mcp: Client) -> None:
    assert "Give operation_id" in await fail(mcp, "restore_blacklist_numbers")
    assert 'No journaled operation with operation_id "nope"' in await fail(
        mcp, "restore_blacklist_numbers", operation_id="nope"
    )
    assert 'The journal has no earlier state of id "1"' in await fail(
        mcp, "restore_blacklist_numbers", ids=["1"]
    )


async def test_another_pbx_operations_are_invisible(
    client_factory: Callable[[], XapiClient], sandbox: Sandbox, journal: Journal
) -> None:
    other = Journal(journal.path, "https://other-pbx.example.com")
    async with Client(build_server(PbxRoster.single(client_factory, other))) as client:
        theirs = await call(client, "bulk_delete_blacklist_numbers", ids=["1"])
    async with Client(build_server(PbxRoster.single(client_factory, journal))) as client:
        assert (await call(client, "list_operations"))["operations"] == []
        assert "No journaled operation" in await fail(
            client, "restore_blacklist_numbers", operation_id=theirs["operation_id"]
        )
        assert "no earlier state" in await fail(client, "restore_blacklist_numbers", ids=["1"])


# -- interrupted bulk deletes ---------------------------------------------------------------------


async def test_a_bulk_delete_cut_off_by_a_pbx_failure_is_accounted_for(
    mcp: Client, journal: Journal, sandbox: Sandbox
) -> None:
    ids = [sandbox.add(f"+1777{i:07d}")["Id"] for i in range(1_200)]
    sandbox.inject(Fault(status=403, path=BULK, times=1))  # fatal: the later chunks are not attempted
    result = await call(mcp, "bulk_delete_blacklist_numbers", ids=ids)
    assert (result["deleted"], result["failed"]) == (0, 1_200)
    assert "System Owner" in result["results"][0]["reason"]
    items = await journal.items(result["operation_id"])
    assert all("not attempted after an earlier failure" in (i.reason or "") for i in items[500:])
    assert sandbox.count("POST", BULK) == 1
    await assert_journal_matches_the_pbx(journal, sandbox)


async def test_a_cancelled_bulk_delete_leaves_an_accurate_journal(
    client_factory: Callable[[], XapiClient], journal: Journal, sandbox: Sandbox
) -> None:
    ids = [sandbox.add(f"+1888{i:07d}")["Id"] for i in range(1_200)]
    sandbox.inject(Fault(path=BULK, times=1, delay=1.5, passthrough=True))  # chunk 1 is slow but applies
    async with client_factory() as xapi:
        with anyio.move_on_after(0.8) as scope:
            await bulk_delete.bulk_delete(xapi, journal, ids, dry_run=False)
    assert scope.cancelled_caught
    await anyio.sleep(1.0)  # let the PBX finish the request it was given
    (operation,) = await journal.recent()
    assert operation.outcome == "interrupted"
    final = statuses(await journal.items(operation.operation_id))
    assert [final[i] for i in ids[:500]] == ["unknown"] * 500  # in flight: cannot know
    assert all(final[i] == "failed" for i in ids[500:])  # never sent, verified still there
    await assert_journal_matches_the_pbx(journal, sandbox)
    assert all(i not in sandbox.entries for i in ids[:500])
