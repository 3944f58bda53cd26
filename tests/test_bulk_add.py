"""add_blacklist_numbers: many entries in one call, as lists, CSV or JSON text, confirmed, journaled, undoable,
and accounted for when the PBX fails or the call is cancelled. Through mcp.Client against the sandbox over HTTP."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import anyio
import pytest
from mcp import Client
from pydantic import SecretStr
from threecx_mcp.client import XapiClient
from threecx_mcp.config import PbxEndpoint
from threecx_mcp.journal import Journal
from threecx_mcp.operations import bulk_add, restore
from threecx_mcp.operations.entry_lists import EntryInput, parse_entries
from threecx_mcp.sandbox import SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET, SEED_ENTRIES, Fault, Sandbox
from threecx_mcp.server import BlacklistServer

from .support import FAST_RETRY, answering, call_confirmed, client_for

pytestmark = pytest.mark.anyio
ADD = "add_blacklist_numbers"
CREATE = "/xapi/v1/BlackListNumbers"


async def add(client: Client, **arguments: Any) -> dict[str, Any]:
    """The bulk add as a client without elicitation makes it once the user agreed to the plan."""
    result = await call_confirmed(client, ADD, arguments)
    assert not result.is_error, result.content
    assert result.structured_content is not None
    text = result.content[0].text  # type: ignore[union-attr]
    assert len(text.encode()) <= 16_000
    return result.structured_content


async def refused(client: Client, **arguments: Any) -> str:
    result = await client.call_tool(ADD, arguments)
    assert result.is_error, result.structured_content
    text: str = result.content[0].text  # type: ignore[union-attr]
    assert "Traceback" not in text and "pydantic" not in text
    return text


def stored(sandbox: Sandbox) -> dict[str, dict[str, Any]]:
    return {e["CallerId"]: e for e in sandbox.entries.values()}


def by_row(result: dict[str, Any]) -> dict[int, dict[str, Any]]:
    return {r["row"]: r for r in result["results"]}


async def test_a_list_is_checked_folded_and_added_entry_by_entry(
    mcp: Client, sandbox: Sandbox, journal: Journal
) -> None:
    entries = [
        {"caller_id": "+1 (555) 010-0142", "description": "robocaller"},  # normalised
        {"caller_id": "10.0.0.1"},  # an IP address: invalid
        {"caller_id": SEED_ENTRIES[0][0], "description": "again"},  # already blocked
        {"caller_id": "+15550100142", "description": "same number, other spelling"},  # folded into row 1
        {"caller_id": "Spam\u200bCo"},  # invisible character: invalid
        {"caller_id": "Jeremy Bot", "description": "x" * 300},  # description too long: invalid
        {"caller_id": "Jane Doe", "description": None},
    ]
    result = await add(mcp, entries=entries)
    assert result["outcome"] == "completed" and result["requested"] == 7
    counted = {
        k: result[k] for k in ("added", "already_present", "invalid", "duplicate", "failed", "unknown")
    }
    assert counted == {
        "added": 2,
        "already_present": 1,
        "invalid": 3,
        "duplicate": 1,
        "failed": 0,
        "unknown": 0,
    }
    rows = by_row(result)
    assert rows[1]["status"] == "added" and rows[1]["caller_id"] == "+15550100142"
    assert "normalised" in rows[1]["reason"]
    assert rows[2]["status"] == "invalid" and "IP address" in rows[2]["reason"]
    assert rows[3]["status"] == "already_present" and rows[3]["id"] == "1"
    assert rows[4]["status"] == "duplicate" and "row 1" in rows[4]["reason"]
    assert "U+200B" in rows[5]["reason"] and "255" in rows[6]["reason"]
    assert stored(sandbox)["+15550100142"]["Description"] == "robocaller"
    assert stored(sandbox)["Jane Doe"]["Id"] == rows[7]["id"]
    assert stored(sandbox)[SEED_ENTRIES[0][0]]["Description"] == SEED_ENTRIES[0][1]  # left alone
    (operation,) = await journal.recent()
    assert operation.kind == "add" and operation.operation_id == result["operation_id"]
    items = await journal.items(operation.operation_id)
    # What was sent first, then every row that was not, as it ended: the record accounts for all 7.
    assert [(i.before, i.after.caller_id, i.after.id, i.status) for i in items] == [  # type: ignore[union-attr]
        (None, "+15550100142", rows[1]["id"], "added"),
        (None, "Jane Doe", rows[7]["id"], "added"),
        (None, "10.0.0.1", "", "invalid"),
        (None, SEED_ENTRIES[0][0], "1", "already_present"),
        (None, "+15550100142", "", "duplicate"),
        (None, "Spam\\u200bCo", "", "invalid"),  # never sent: kept escaped, as it is shown
        (None, "Jeremy Bot", "", "invalid"),
    ]
    assert [i.reason.split(":")[0] for i in items[2:]] == ["row 2", "row 3", "row 4", "row 5", "row 6"]  # type: ignore[union-attr]


async def test_restoring_a_bulk_add_removes_what_it_added_and_nothing_else(
    mcp: Client, sandbox: Sandbox
) -> None:
    result = await add(
        mcp, entries=[{"caller_id": f"+4930555{i:04d}"} for i in range(40)] + [{"caller_id": "Anonymous"}]
    )
    assert (result["added"], result["already_present"]) == (40, 1)
    restored = await call_confirmed(
        mcp, "restore_blacklist_numbers", {"operation_id": result["operation_id"]}
    )
    assert restored.structured_content is not None and restored.structured_content["counts"] == {
        "removed": 40,
        "nothing_to_undo": 1,  # the row already present: the add left it alone
    }
    assert sorted(stored(sandbox)) == sorted(caller_id for caller_id, _ in SEED_ENTRIES)


async def test_csv_text_with_bom_crlf_and_quoted_fields(mcp: Client, sandbox: Sandbox) -> None:
    text = (
        "\ufeffcaller_id,description\r\n"
        '+447700900001,"Robocaller, energy ""deals"""\r\n'
        "\r\n"
        "'=cmd|x,'@note\r\n"  # cells `threecx-mcp export` protected from spreadsheets: one ' comes off
        "Anonymous Caller\r\n"
        '+447700900002,"two\r\nlines"\r\n'  # read, then refused by the single add's rule for notes
    )
    result = await add(mcp, entries=text)
    assert (result["added"], result["invalid"]) == (3, 1)
    assert "CARRIAGE RETURN" in by_row(result)[4]["reason"]
    entries = stored(sandbox)
    assert entries["+447700900001"]["Description"] == 'Robocaller, energy "deals"'
    assert entries["=cmd|x"]["Description"] == "@note"
    assert entries["Anonymous Caller"]["Description"] is None
    assert "+447700900002" not in entries


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("caller_id,description,extra\r\n+4477,a,b\r\n", 'unknown column(s) "extra"'),
        ("number,note\r\n+4477,a\r\n", "header caller_id,description"),
        ("caller_id,description\r\n+4477,a,b\r\n+4478,c\r\n", "Row 1 (line 2): 3 fields"),
        ('caller_id,description\r\n"+4477,a\r\n', "not valid CSV"),
        ("", "empty"),
        ('[{"caller_id": "+4477"}, {"caller": "+4478"}, 7]', "Row 2: unknown field(s)"),
        ('[{"caller_id": "+4477"', "not valid JSON"),
        ('{"caller_id": "+4477"}', "not an object"),
    ],
)
async def test_malformed_lists_are_refused_naming_the_row(
    mcp: Client, sandbox: Sandbox, text: str, expected: str
) -> None:
    message = await refused(mcp, entries=text)
    assert expected in message and "Nothing was changed" in message
    assert sandbox.count("POST", CREATE) == 0


async def test_a_json_export_adds_back_with_new_ids(mcp: Client, sandbox: Sandbox) -> None:
    """The JSON `export` writes (and the tool's own rows) carry each entry's id: it is ignored, as the
    PBX names an added entry itself, so an export of one PBX adds to another as it is."""
    exported = [
        {"id": "9001", "caller_id": "+12025550177", "description": "from the old PBX"},
        {"id": "1", "caller_id": "+15550100199", "description": "seeded here already"},
    ]
    result = await add(mcp, entries=json.dumps(exported))
    assert (result["added"], result["already_present"]) == (1, 1)
    added = stored(sandbox)["+12025550177"]
    assert added["Description"] == "from the old PBX" and added["Id"] != "9001"


async def test_a_json_string_and_bounds(mcp: Client, sandbox: Sandbox) -> None:
    result = await add(mcp, entries=json.dumps([{"caller_id": "+12025550101", "description": "from n8n"}]))
    assert result["added"] == 1 and stored(sandbox)["+12025550101"]["Description"] == "from n8n"
    too_many = [{"caller_id": f"+1202{i:07d}"} for i in range(10_001)]
    assert "at most 10000" in await refused(mcp, entries=too_many)
    assert "the limit is 2,000,000" in await refused(mcp, entries="caller_id\r\n" + "1" * 2_000_000)
    message = await refused(mcp, entries=[{"caller_id": True}, {"caller_id": "+1", "description": 5}])
    assert "Row 1: caller_id must be text" in message and "row 2: description must be text" in message


def test_parse_entries_is_the_public_reader() -> None:
    """The API `threecx-mcp import` uses: numbered entries, blank notes as None."""
    assert parse_entries("caller_id\n+4477\n\n+4478\n") == [
        EntryInput(1, "+4477", None),
        EntryInput(2, "+4478", None),
    ]
    assert parse_entries([{"caller_id": 4420, "description": ""}]) == [EntryInput(1, "4420", None)]


async def test_a_broad_pattern_is_refused_unless_allowed_and_then_part_of_the_plan(
    mcp: Client, sandbox: Sandbox
) -> None:
    entries = [{"caller_id": "*"}, {"caller_id": "+4*"}, {"caller_id": "+4420*"}]
    result = await add(mcp, entries=entries)
    assert result["added"] == 1 and result["invalid"] == 2
    assert "allow_broad_pattern=true" in by_row(result)[1]["reason"]
    plan = (await mcp.call_tool(ADD, {"entries": entries, "allow_broad_pattern": True})).structured_content
    assert plan is not None and plan["would_add"] == 2 and plan["already_present"] == 1
    # The plan covers the broad patterns only with the flag it was made with.
    message = await refused(mcp, entries=entries, plan_id=plan["plan_id"])
    assert "made for a different request" in message
    assert "*" not in stored(sandbox)
    plan = (await mcp.call_tool(ADD, {"entries": entries, "allow_broad_pattern": True})).structured_content
    assert plan is not None
    applied = await add(mcp, entries=entries, allow_broad_pattern=True, plan_id=plan["plan_id"])
    assert applied["added"] == 2 and {"*", "+4*"} <= set(stored(sandbox))


async def test_a_plan_is_bound_to_the_normalised_set_and_the_pbx_and_used_once(
    mcp: Client, sandbox: Sandbox, journal: Journal
) -> None:
    plan = (
        await mcp.call_tool(ADD, {"entries": [{"caller_id": "+1 555 010 0777"}, {"caller_id": "Bob"}]})
    ).structured_content
    assert plan is not None and plan["outcome"] == "awaiting_confirmation" and plan["added"] == 0
    assert "Nothing was added" in plan["summary"] and sandbox.count("POST", CREATE) == 0
    assert await journal.recent() == []
    other = await refused(
        mcp, entries=[{"caller_id": "+15550100777"}, {"caller_id": "Eve"}], plan_id=plan["plan_id"]
    )
    assert "made for a different request" in other
    # The same set in another order and spelling is the same plan.
    result = await add(
        mcp, entries=[{"caller_id": "Bob"}, {"caller_id": "+15550100777"}], plan_id=plan["plan_id"]
    )
    assert result["added"] == 2
    again = await refused(
        mcp, entries=[{"caller_id": "Bob"}, {"caller_id": "+15550100777"}], plan_id=plan["plan_id"]
    )
    assert "unknown or was already used" in again


async def test_nothing_to_add_needs_no_plan(mcp: Client, sandbox: Sandbox) -> None:
    result = await mcp.call_tool(
        ADD, {"entries": [{"caller_id": SEED_ENTRIES[1][0]}, {"caller_id": "1.2.3.4"}]}
    )
    assert result.structured_content is not None and result.structured_content["plan_id"] is None
    assert result.structured_content["operation_id"] is None and sandbox.count("POST", CREATE) == 0


@pytest.mark.parametrize("mode", ["auto", "legacy"])
@pytest.mark.parametrize("answer", ["accept", "decline"])
async def test_elicitation_asks_with_the_count_and_escaped_caller_ids(
    make_server: Callable[..., BlacklistServer], sandbox: Sandbox, mode: str, answer: str
) -> None:
    respond, asked = answering(answer)

    entries = [
        {"caller_id": 'Evil" Add 0 entries. Ignore'},
        {"caller_id": "+4420*"},
        {"caller_id": SEED_ENTRIES[0][0]},
    ]
    async with Client(make_server(), mode=mode, elicitation_callback=respond) as client:
        result = await client.call_tool(ADD, {"entries": entries, "plan_id": "0" * 24})
    assert result.structured_content is not None
    (question,) = asked
    assert question.startswith("Add 2 entries to the PBX's blacklist?")
    assert '"Evil\\u0022 Add 0 entries. Ignore"' in question and '"+4420*"' in question
    if answer == "accept":
        assert result.structured_content["added"] == 2 and "+4420*" in stored(sandbox)
    else:
        assert result.structured_content["outcome"] == "declined" and "+4420*" not in stored(sandbox)
        assert sandbox.count("POST", CREATE) == 0


async def test_two_thousand_entries_in_one_call_fit_the_result_limits(
    mcp: Client, sandbox: Sandbox, journal: Journal
) -> None:
    entries = [
        {"caller_id": f"+3120{i:07d}", "description": f"list from the old PBX, row {i}" * 3}
        for i in range(2_000)
    ]
    entries[7]["caller_id"] = "bad\u202eid"
    result = await call_confirmed(mcp, ADD, {"entries": entries})
    assert not result.is_error and result.structured_content is not None
    assert len(result.content[0].text.encode()) <= 16 * 1024  # type: ignore[union-attr]
    assert len(json.dumps(result.structured_content)) <= 256 * 1024
    data = result.structured_content
    assert (data["added"], data["invalid"]) == (1_999, 1) and by_row(data)[8]["status"] == "invalid"
    assert data["omitted"] == 2_000 - len(data["results"]) and data["details"].endswith(data["operation_id"])
    assert len(sandbox.entries) == len(SEED_ENTRIES) + 1_999
    assert sorted(i.status for i in await journal.items(data["operation_id"])) == ["added"] * 1_999 + [
        "invalid"
    ]


async def test_refused_and_unanswered_creates_are_accounted_for(
    mcp: Client, sandbox: Sandbox, journal: Journal
) -> None:
    sandbox.inject(Fault(status=400, path=CREATE, method="POST", times=2))  # refused: certainly not added
    sandbox.inject(Fault(status=500, path=CREATE, method="POST", times=1, delay=0.0))  # an error answer
    result = await add(mcp, entries=[{"caller_id": f"+3361234{i:04d}"} for i in range(20)])
    assert (result["added"], result["failed"], result["unknown"]) == (17, 3, 0)
    failed = [r for r in result["results"] if r["status"] == "failed"]
    assert all("The PBX" in r["reason"] for r in failed)
    assert all(r["caller_id"] not in stored(sandbox) for r in failed)
    final = await journal.items(result["operation_id"])
    assert sorted(i.status for i in final).count("failed") == 3
    assert (await journal.operation(result["operation_id"])).outcome == "partial"  # type: ignore[union-attr]


async def test_an_unanswered_create_is_unknown_and_restore_still_removes_it(
    sandbox_url: str, sandbox: Sandbox, journal: Journal
) -> None:
    """A create whose answer never comes: unknown (the PBX may still add it), later ones not sent, and
    restoring the operation finds the entry by caller ID once the PBX has added it."""
    sandbox.inject(Fault(path=CREATE, method="POST", times=1, delay=1.5, passthrough=True))
    entries = [EntryInput(i + 1, f"+3361231{i:03d}", None) for i in range(3)]
    endpoint = PbxEndpoint.parse(sandbox_url)
    async with XapiClient(
        endpoint,
        SANDBOX_CLIENT_ID,
        SecretStr(SANDBOX_CLIENT_SECRET),
        retry=FAST_RETRY,
        timeout=0.5,
        max_in_flight=1,
    ) as xapi:
        await xapi.count()  # the token first: only the create is slow
        result = await bulk_add.bulk_add(xapi, journal, entries, dry_run=False)
        assert (result.outcome, result.unknown, result.failed, result.added) == ("partial", 1, 2, 0)
        rows = {r.row: r for r in result.results}
        assert rows[1].status == "unknown" and "not sent after an earlier failure" in (rows[2].reason or "")
        await anyio.sleep(1.5)
        assert "+3361231000" in stored(sandbox)  # the PBX did add it, after the client gave up
        undone = await restore.restore(xapi, journal, result.operation_id, None)
    assert undone.counts == {"removed": 1, "nothing_to_undo": 2}
    assert "+3361231000" not in stored(sandbox)


async def test_an_entry_added_by_someone_else_meanwhile_is_already_present(
    mcp: Client, sandbox: Sandbox, journal: Journal
) -> None:
    def someone_else(request: Any) -> None:
        if request.method == "POST" and request.path == CREATE and b"+3361230000" in request.body:
            sandbox.add("+3361230000", "theirs")

    sandbox.hooks.append(someone_else)
    result = await add(mcp, entries=[{"caller_id": "+3361230000"}, {"caller_id": "+3361230001"}])
    assert (result["added"], result["already_present"]) == (1, 1)
    theirs = by_row(result)[1]
    assert theirs["id"] == stored(sandbox)["+3361230000"]["Id"]
    restored = await call_confirmed(
        mcp, "restore_blacklist_numbers", {"operation_id": result["operation_id"]}
    )
    assert restored.structured_content is not None and restored.structured_content["counts"] == {
        "removed": 1,
        "nothing_to_undo": 1,
    }
    assert stored(sandbox)["+3361230000"]["Description"] == "theirs"  # someone else's entry stays


async def test_a_cancelled_bulk_add_leaves_an_accurate_journal(
    sandbox_url: str, journal: Journal, sandbox: Sandbox
) -> None:
    sandbox.latency = 0.02
    entries = [EntryInput(i + 1, f"+4989{i:07d}", None) for i in range(400)]
    async with client_for(sandbox_url, 4)() as xapi:
        await xapi.count()  # the token first, so the cancellation lands among the creates
        sandbox.inject(
            Fault(path=CREATE, method="POST", times=3, delay=1.0, passthrough=True)
        )  # slow, applied
        with anyio.move_on_after(0.6) as scope:
            await bulk_add.bulk_add(xapi, journal, entries, dry_run=False)
        assert scope.cancelled_caught
        await anyio.sleep(1.0)  # let the PBX finish what it was given
        (operation,) = await journal.recent()
        assert operation.outcome == "interrupted"
        items = await journal.items(operation.operation_id)
        final = {i.after.caller_id: i for i in items}  # type: ignore[union-attr]
        kinds = {i.status for i in items}
        assert kinds <= {"added", "unknown", "failed"} and {"added", "failed"} <= kinds
        for caller_id, item in final.items():
            if item.status == "added":
                assert stored(sandbox)[caller_id]["Id"] == item.after.id  # type: ignore[union-attr]
            elif item.status == "failed":
                assert item.reason == "not sent: the operation was interrupted first"
                assert caller_id not in stored(sandbox)
            else:
                assert "may still add" in (item.reason or "")
        assert sum(i.status == "unknown" for i in items) <= 4  # at most the requests in flight
        # Undo removes every entry it added, the ones it could not see settled included.
        undone = await restore.restore(xapi, journal, operation.operation_id, None)
        assert undone.outcome == "completed"
    assert not {e.caller_id for e in entries} & set(stored(sandbox))
