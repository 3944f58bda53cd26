"""Confirmation a model cannot skip: elicitation when the client can ask, a one-time plan when it cannot."""

from __future__ import annotations

import multiprocessing
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from mcp_types import ElicitResult
from threecx_mcp import confirmation
from threecx_mcp.confirmation import PlanBook
from threecx_mcp.errors import InvalidArgument
from threecx_mcp.journal import Journal
from threecx_mcp.pbxs import PbxRoster
from threecx_mcp.sandbox import Sandbox
from threecx_mcp.server import BlacklistServer, build_server

from .support import answering

pytestmark = pytest.mark.anyio

DELETE = "bulk_delete_blacklist_numbers"


async def structured(client: Client, **arguments: Any) -> dict[str, Any]:
    result = await client.call_tool(DELETE, arguments)
    assert not result.is_error, result.content
    assert result.structured_content is not None
    return result.structured_content


async def refused(client: Client, **arguments: Any) -> str:
    result = await client.call_tool(DELETE, arguments)
    assert result.is_error
    return result.content[0].text  # type: ignore[union-attr]


async def test_without_elicitation_the_first_call_only_makes_a_plan(
    mcp: Client, sandbox: Sandbox, journal: Journal
) -> None:
    plan = await structured(mcp, ids=["1", "4", "missing"])
    assert plan["outcome"] == "awaiting_confirmation" and len(plan["plan_id"]) == 24
    assert (plan["would_delete"], plan["not_found"], plan["deleted"]) == (2, 1, 0)
    assert "Nothing was deleted" in plan["summary"] and "Show the user this plan" in plan["summary"]
    assert {"1", "4"} <= set(sandbox.entries) and sandbox.count("POST", "/xapi/v1/BlackListNumbers/") == 0
    assert await journal.recent(10) == []
    text = (await mcp.call_tool(DELETE, {"ids": ["1", "4", "missing"]})).content[0].text  # type: ignore[union-attr]
    assert '"+442071838750"' in text and '"*eremy"' in text  # the user sees what the plan would unblock

    applied = await structured(mcp, ids=["missing", "4", "1", "4"], plan_id=plan["plan_id"])
    assert applied["outcome"] == "completed" and applied["deleted"] == 2 and applied["plan_id"] is None
    assert not {"1", "4"} & set(sandbox.entries)


async def test_a_plan_applies_once(mcp: Client, sandbox: Sandbox) -> None:
    plan = await structured(mcp, ids=["1"])
    await structured(mcp, ids=["1"], plan_id=plan["plan_id"])
    sandbox.entries["1"] = {"Id": "1", "CallerId": "+15550000001", "Description": "re-added"}
    message = await refused(mcp, ids=["1"], plan_id=plan["plan_id"])
    assert "unknown or was already used" in message and "show it to the user" in message
    assert "1" in sandbox.entries


@pytest.mark.parametrize("other_ids", [["1", "2", "3"], ["1"], ["2", "3"]])
async def test_a_plan_applies_only_to_the_ids_it_showed(
    mcp: Client, sandbox: Sandbox, other_ids: list[str]
) -> None:
    plan = await structured(mcp, ids=["1", "2"])
    message = await refused(mcp, ids=other_ids, plan_id=plan["plan_id"])
    assert "made for a different request" in message
    assert {"1", "2", "3"} <= set(sandbox.entries)
    # A mismatch does not use the plan up: what the user saw can still be applied, exactly.
    await structured(mcp, ids=["1", "2"], plan_id=plan["plan_id"])
    assert not {"1", "2"} & set(sandbox.entries)


async def test_a_plan_expires_after_ten_minutes(
    mcp: Client, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = await structured(mcp, ids=["1"])
    later = time.time() + 601
    monkeypatch.setattr(confirmation.time, "time", lambda: later)
    message = await refused(mcp, ids=["1"], plan_id=plan["plan_id"])
    assert "expired (plans last 10 minutes)" in message and "1" in sandbox.entries


async def test_made_up_and_oversized_plan_ids_are_refused(mcp: Client, sandbox: Sandbox) -> None:
    assert "unknown" in await refused(mcp, ids=["1"], plan_id="0" * 24)
    huge = await refused(mcp, ids=["1"], plan_id="x" * 100_000)
    assert "plan_id" in huge and len(huge) < 1_000
    assert "1" in sandbox.entries


async def test_a_plan_made_by_one_server_process_applies_once_in_another(
    client_factory: Callable[[], Any], journal: Journal, sandbox: Sandbox, tmp_path: Path
) -> None:
    """Some clients start a server per call (the Inspector's CLI over stdio): the plan is on disk."""
    path = tmp_path / "state" / "plans.sqlite3"
    async with Client(build_server(PbxRoster.single(client_factory, journal), plans=PlanBook(path))) as first:
        plan = await structured(first, ids=["1"])
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    servers = [
        build_server(PbxRoster.single(client_factory, journal), plans=PlanBook(path)) for _ in range(2)
    ]
    async with Client(servers[0]) as second, Client(servers[1]) as third:
        applied = await second.call_tool(DELETE, {"ids": ["1"], "plan_id": plan["plan_id"]})
        again = await third.call_tool(DELETE, {"ids": ["1"], "plan_id": plan["plan_id"]})
    assert not applied.is_error and applied.structured_content["deleted"] == 1  # type: ignore[index]
    assert again.is_error and "already used" in again.content[0].text  # type: ignore[union-attr]


def test_two_processes_racing_for_one_plan_cannot_both_apply_it(tmp_path: Path) -> None:
    path = tmp_path / "plans.sqlite3"
    plan_ids = [PlanBook(path).issue(DELETE, {"ids": [str(n)]}) for n in range(40)]
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        won = pool.starmap(
            _redeem_in_another_process, [(path, p, n) for n, p in enumerate(plan_ids) for _ in range(4)]
        )
    assert sum(won) == 40  # each plan applied exactly once, by one of the four racers


def _redeem_in_another_process(path: Path, plan_id: str, n: int) -> bool:
    try:
        PlanBook(path).redeem(plan_id, DELETE, {"ids": [str(n)]})
    except InvalidArgument:
        return False
    return True


async def test_an_in_memory_book_ends_with_its_server(
    make_server: Callable[..., BlacklistServer], sandbox: Sandbox
) -> None:
    async with Client(make_server()) as first:
        plan = await structured(first, ids=["1"])
    async with Client(make_server()) as second:
        assert "unknown" in await refused(second, ids=["1"], plan_id=plan["plan_id"])
    assert "1" in sandbox.entries


async def test_a_dry_run_hands_out_a_plan_and_ids_that_do_not_exist_need_none(
    mcp: Client, sandbox: Sandbox, journal: Journal
) -> None:
    dry = await structured(mcp, ids=["2"], dry_run=True)
    assert dry["outcome"] == "dry_run" and dry["plan_id"] and "2" in sandbox.entries
    await structured(mcp, ids=["2"], plan_id=dry["plan_id"])
    assert "2" not in sandbox.entries

    nothing = await structured(mcp, ids=["gone-1", "gone-2"])
    assert nothing["outcome"] == "completed" and nothing["not_found"] == 2 and nothing["plan_id"] is None
    assert nothing["summary"].startswith("0 deleted, 2 not found")


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_a_client_that_can_ask_is_always_asked_whatever_the_model_sends(
    make_server: Callable[..., BlacklistServer], sandbox: Sandbox, mode: str
) -> None:
    asked: list[str] = []

    async def decline(context: Any, params: Any) -> ElicitResult:
        asked.append(params.message)
        return ElicitResult(action="decline")

    async with Client(make_server(), mode=mode, elicitation_callback=decline) as client:
        dry = await structured(client, ids=["1"], dry_run=True)
        assert dry["plan_id"] is None  # no plan route where the user can be asked directly
        declined = await structured(client, ids=["1"], plan_id="0" * 24)
    assert declined["outcome"] == "declined" and len(asked) == 1 and "1" in sandbox.entries


def test_the_plan_book_stays_bounded_and_drops_the_oldest_first() -> None:
    book = PlanBook()
    first = book.issue(DELETE, ["1"])
    later = [book.issue(DELETE, [str(i)]) for i in range(1_000)]
    with pytest.raises(InvalidArgument, match="unknown"):
        book.redeem(first, DELETE, ["1"])
    book.redeem(later[-1], DELETE, ["999"])
    assert len({first, *later}) == 1_001  # every plan_id is new


# -- a pattern that blocks (nearly) every caller --------------------------------------------------------


def plan_id_in(message: str) -> str:
    return message.split("plan_id=")[1].split(" ")[0]


async def test_a_broad_pattern_needs_the_flag_and_then_a_plan_the_user_saw(
    mcp: Client, sandbox: Sandbox
) -> None:
    before = dict(sandbox.entries)
    refused_outright = await mcp.call_tool("add_blacklist_number", {"caller_id": "*"})
    assert refused_outright.is_error and "allow_broad_pattern=true" in refused_outright.content[0].text  # type: ignore[union-attr]
    planned = await mcp.call_tool("add_blacklist_number", {"caller_id": "*", "allow_broad_pattern": True})
    message = planned.content[0].text  # type: ignore[union-attr]
    assert planned.is_error and "Nothing was changed yet" in message and "Show the user" in message
    assert sandbox.entries == before

    other = await mcp.call_tool(
        "add_blacklist_number",
        {"caller_id": "+*", "allow_broad_pattern": True, "plan_id": plan_id_in(message)},
    )
    assert other.is_error and "different request" in other.content[0].text  # type: ignore[union-attr]
    applied = await mcp.call_tool(
        "add_blacklist_number",
        {"caller_id": "*", "allow_broad_pattern": True, "plan_id": plan_id_in(message)},
    )
    assert not applied.is_error, applied.content
    assert [e["CallerId"] for e in sandbox.entries.values() if e not in before.values()] == ["*"]


async def test_an_update_to_a_broad_pattern_goes_through_the_same_plan(mcp: Client, sandbox: Sandbox) -> None:
    arguments = {"id": "1", "caller_id": "+*", "allow_broad_pattern": True}
    planned = await mcp.call_tool("update_blacklist_number", arguments)
    assert planned.is_error and sandbox.entries["1"]["CallerId"] == "+442071838750"
    plan_id = plan_id_in(planned.content[0].text)  # type: ignore[union-attr]
    applied = await mcp.call_tool("update_blacklist_number", {**arguments, "plan_id": plan_id})
    assert not applied.is_error and sandbox.entries["1"]["CallerId"] == "+*"


@pytest.mark.parametrize("mode", ["auto", "legacy"])
@pytest.mark.parametrize("answer", ["accept", "decline"])
async def test_a_client_that_can_ask_asks_before_a_broad_pattern(
    make_server: Callable[..., BlacklistServer], sandbox: Sandbox, mode: str, answer: str
) -> None:
    respond, asked = answering(answer)

    async with Client(make_server(), mode=mode, elicitation_callback=respond) as client:
        result = await client.call_tool(
            "add_blacklist_number", {"caller_id": "*", "allow_broad_pattern": True}
        )
        narrow = await client.call_tool(
            "add_blacklist_number", {"caller_id": "+4420*", "allow_broad_pattern": True}
        )
    assert not narrow.is_error and len(asked) == 1 and asked[0].startswith('Blacklist the pattern "*"')
    stored = [e["CallerId"] for e in sandbox.entries.values()]
    assert ("*" in stored) is (answer == "accept") and result.is_error is (answer == "decline")


@pytest.mark.parametrize("answer", ["accept", "decline"])
async def test_a_restore_that_removes_entries_asks_first_and_one_that_recreates_does_not(
    make_server: Callable[..., BlacklistServer], sandbox: Sandbox, answer: str
) -> None:
    asked: list[str] = []

    async def respond(context: Any, params: Any) -> ElicitResult:
        asked.append(params.message)
        action = "accept" if len(asked) == 1 else answer  # the delete is accepted; then the removal
        return ElicitResult(action=action, content={"confirm": True} if action == "accept" else None)

    async with Client(make_server(), mode="legacy", elicitation_callback=respond) as client:
        deleted = await structured(client, ids=["1", "2"])
        recreated = await client.call_tool(
            "restore_blacklist_numbers", {"operation_id": deleted["operation_id"]}
        )
        assert len(asked) == 1 and {"1", "2"} - set(sandbox.entries)  # putting back needs no question
        undo = recreated.structured_content["operation_id"]  # type: ignore[index]
        back = len(sandbox.entries)
        removed = await client.call_tool("restore_blacklist_numbers", {"operation_id": undo})
    assert len(asked) == 2 and asked[1].startswith("Remove 2 blacklist entries")
    if answer == "accept":
        assert removed.structured_content["counts"] == {"removed": 2}  # type: ignore[index]
        assert len(sandbox.entries) == back - 2
    else:
        assert removed.is_error and "declined" in removed.content[0].text  # type: ignore[union-attr]
        assert len(sandbox.entries) == back


def test_a_plan_used_by_another_process_between_reading_and_using_it_is_not_applied_twice(
    tmp_path: Path,
) -> None:
    """Another process takes the plan while this one has read it but not yet used it: only one applies it."""
    import sqlite3
    import threading

    path = tmp_path / "plans.sqlite3"
    book = PlanBook(path)
    plan_id = book.issue(DELETE, {"ids": ["1"]})
    other = sqlite3.connect(str(path), isolation_level=None, timeout=10)
    other.execute("BEGIN IMMEDIATE")  # the other process is mid-redemption: it holds the write lock
    outcome: list[BaseException | None] = []

    def redeem() -> None:
        try:
            book.redeem(plan_id, DELETE, {"ids": ["1"]})
            outcome.append(None)
        except InvalidArgument as exc:
            outcome.append(exc)

    racer = threading.Thread(target=redeem)
    racer.start()
    time.sleep(0.3)  # lets this one read the plan, if it reads before it locks
    other.execute("DELETE FROM plans WHERE plan_id = ?", (plan_id,))  # the other one used it
    other.execute("COMMIT")
    racer.join(15)
    assert len(outcome) == 1 and isinstance(outcome[0], InvalidArgument), "the plan was applied twice"


async def test_an_entry_changed_after_the_plan_is_skipped_not_deleted(mcp: Client, sandbox: Sandbox) -> None:
    """The user agreed to unblock what the plan showed; an entry since changed to block someone else stays."""
    plan = await structured(mcp, ids=["1", "2"])
    sandbox.entries["2"]["CallerId"] = "+15550009999"  # someone else edits entry 2 meanwhile
    applied = await structured(mcp, ids=["1", "2"], plan_id=plan["plan_id"])
    assert (applied["deleted"], applied["skipped"]) == (1, 1)
    assert "1" not in sandbox.entries and sandbox.entries["2"]["CallerId"] == "+15550009999"
    (skipped,) = [r for r in applied["results"] if r["status"] == "skipped"]
    assert skipped["id"] == "2" and "caller ID changed since the user confirmed" in skipped["reason"]
