"""One server for many PBXs (issue 13), through mcp.Client in both protocol versions against two sandbox
PBXs, each its own Sandbox served over real HTTP on 127.0.0.1: tools offer and route by name, journals,
tokens and read-only flags are kept apart, a wrong name is answered with the valid names, list_pbxs says
which PBX answers, and a copy is a confirmed, journaled, undoable bulk add on the target, accounted for
per entry when it is interrupted."""

from __future__ import annotations

import json
import os
import socket
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from pydantic import SecretStr
from threecx_mcp.client import XapiClient
from threecx_mcp.config import PbxEndpoint, Settings
from threecx_mcp.confirmation import PlanBook
from threecx_mcp.errors import InvalidArgument
from threecx_mcp.journal import Journal
from threecx_mcp.operations import pbx_status
from threecx_mcp.pbxs import Pbx, PbxRoster
from threecx_mcp.sandbox import (
    SANDBOX_CLIENT_ID,
    SANDBOX_CLIENT_SECRET,
    SEED_ENTRIES,
    Fault,
    LoopbackServer,
    Sandbox,
)
from threecx_mcp.server import BlacklistServer, build_server
from threecx_mcp.wiring import plans_for, roster_for

from .support import (
    FAST_RETRY,
    REPO,
    answering,
    assert_no_token_logged,
    call_confirmed,
    connected,
    ok,
    text_of,
)

pytestmark = pytest.mark.anyio

HQ, BRANCH = "hq", "branch"  # the config file's order: not alphabetical, so an order kept is the file's
NAMES = [HQ, BRANCH]
CREATE = "/xapi/v1/BlackListNumbers"
SNAPSHOT = REPO / "tests" / "snapshots" / "tools_list_two_pbxs.json"
READ_TOOLS = {
    "check_caller_id",
    "get_blacklist_number",
    "list_blacklist_numbers",
    "list_operations",
    "list_recent_callers",
}
WRITE_TOOLS = {
    "add_blacklist_number",
    "add_blacklist_numbers",
    "bulk_delete_blacklist_numbers",
    "restore_blacklist_numbers",
    "update_blacklist_number",
}
# Every tool that takes pbx, with the least it needs besides.
CALLS: dict[str, dict[str, Any]] = {
    "list_blacklist_numbers": {},
    "get_blacklist_number": {"id": "1"},
    "add_blacklist_number": {"caller_id": "+447700900555"},
    "add_blacklist_numbers": {"entries": [{"caller_id": "+447700900555"}]},
    "update_blacklist_number": {"id": "1", "description": "changed"},
    "bulk_delete_blacklist_numbers": {"ids": ["1"]},
    "restore_blacklist_numbers": {"ids": ["1"]},
    "check_caller_id": {"caller_id": "+447700900555"},
    "list_recent_callers": {},
    "list_operations": {},
}
WRITES = {tool: arguments for tool, arguments in CALLS.items() if tool in WRITE_TOOLS}
SEEDED = sorted(caller_id for caller_id, _ in SEED_ENTRIES)


# -- two PBXs ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def loopbacks() -> Iterator[dict[str, tuple[Sandbox, str]]]:
    """Two sandbox PBXs, each its own Sandbox (entries, tokens, signing key) on its own port."""
    hq, branch = Sandbox(), Sandbox()
    with LoopbackServer(hq.app) as hq_server, LoopbackServer(branch.app) as branch_server:
        yield {HQ: (hq, hq_server.url), BRANCH: (branch, branch_server.url)}


@dataclass
class TwoPbxs:
    """The two sandboxes, reset for this test, and servers over them sharing one journal file."""

    sandbox: dict[str, Sandbox]
    url: dict[str, str]
    journal_path: Path
    made: Counter[str]  # clients made, by PBX name

    def roster(
        self,
        *,
        default: str | None = None,
        read_only: tuple[str, ...] = (),
        names: tuple[str, ...] = (HQ, BRANCH),
        **client: Any,
    ) -> PbxRoster:
        pbxs = []
        for name in names:
            endpoint = PbxEndpoint.parse(self.url[name])

            def make(name: str = name, endpoint: PbxEndpoint = endpoint) -> XapiClient:
                self.made[name] += 1
                return XapiClient(
                    endpoint, SANDBOX_CLIENT_ID, SecretStr(SANDBOX_CLIENT_SECRET), retry=FAST_RETRY, **client
                )

            journal = Journal(self.journal_path, endpoint.origin)  # keyed by origin, as wiring does
            pbxs.append(Pbx(name, endpoint.origin, journal, make, name in read_only))
        return PbxRoster(pbxs, default)

    def server(self, **roster: Any) -> BlacklistServer:
        return build_server(self.roster(**roster), plans=PlanBook())

    def stored(self, name: str) -> dict[str, dict[str, Any]]:
        return {entry["CallerId"]: entry for entry in self.sandbox[name].entries.values()}

    def writes(self, name: str) -> list[str]:
        """The writes a PBX received (the token request is not one)."""
        return [
            f"{r.method} {r.path}"
            for r in self.sandbox[name].requests
            if r.method in ("POST", "PATCH", "DELETE") and r.path != "/connect/token"
        ]

    def tokens(self, name: str) -> set[str]:
        return {
            r.headers["authorization"].removeprefix("Bearer ")
            for r in self.sandbox[name].requests
            if r.headers.get("authorization", "").startswith("Bearer ")
        }


@pytest.fixture
def pbxs(loopbacks: dict[str, tuple[Sandbox, str]], tmp_path: Path) -> TwoPbxs:
    for sandbox, _ in loopbacks.values():
        sandbox.reset()
    return TwoPbxs(
        {name: sandbox for name, (sandbox, _) in loopbacks.items()},
        {name: url for name, (_, url) in loopbacks.items()},
        tmp_path / "journal.sqlite3",
        Counter(),
    )


@pytest.fixture(autouse=True)
def no_token_of_either_pbx_is_logged(
    caplog: pytest.LogCaptureFixture, loopbacks: dict[str, tuple[Sandbox, str]]
) -> Iterator[None]:
    caplog.set_level("DEBUG")
    yield
    logged = "\n".join(r.getMessage() for r in caplog.get_records("call") + caplog.get_records("setup"))
    assert_no_token_logged(logged, [sandbox for sandbox, _ in loopbacks.values()])


@pytest.fixture(params=["auto", "legacy"])
def mode(request: pytest.FixtureRequest) -> str:
    """2026-07-28 (stateless) and 2025-11-25 (initialize handshake)."""
    return str(request.param)


async def refused(client: Client, tool: str, **arguments: Any) -> str:
    result = await client.call_tool(tool, arguments)
    assert result.is_error, result.structured_content
    text = text_of(result)
    assert "Traceback" not in text and "pydantic" not in text
    return text


def schemas(tools: list[Any]) -> dict[str, dict[str, Any]]:
    return {tool.name: tool.input_schema for tool in tools}


# -- what tools/list offers ----------------------------------------------------------------------------


async def test_every_tool_offers_the_configured_names_and_requires_one_without_a_default(
    pbxs: TwoPbxs, mode: str
) -> None:
    async with connected(pbxs.server(), mode) as client:
        offered = schemas((await client.list_tools()).tools)
    assert set(offered) == READ_TOOLS | WRITE_TOOLS | {"list_pbxs", "copy_blacklist_numbers"}
    for tool in READ_TOOLS | WRITE_TOOLS:
        choice = offered[tool]["properties"]["pbx"]
        enum = choice.get("enum") or next(option["enum"] for option in choice["anyOf"] if "enum" in option)
        assert enum == NAMES, tool  # the names, in the file's order
        assert choice.get("default") is None, tool
        # Required wherever the call cannot find its PBX itself; a restore finds its operation's PBX.
        assert ("pbx" in offered[tool].get("required", [])) is (tool != "restore_blacklist_numbers"), tool
    copy = offered["copy_blacklist_numbers"]
    assert {copy["properties"][end]["enum"] == NAMES for end in ("from_pbx", "to_pbx")} == {True}
    assert {"from_pbx", "to_pbx"} <= set(copy["required"]) and "pbx" not in copy["properties"]
    assert offered["list_pbxs"].get("properties", {}) == {}


async def test_with_a_default_pbx_is_optional_and_defaults_to_it(pbxs: TwoPbxs, mode: str) -> None:
    async with connected(pbxs.server(default=BRANCH), mode) as client:
        offered = schemas((await client.list_tools()).tools)
    for tool in READ_TOOLS | WRITE_TOOLS - {"restore_blacklist_numbers"}:
        choice = offered[tool]["properties"]["pbx"]
        assert choice["enum"] == NAMES and choice["default"] == BRANCH, tool
        assert "pbx" not in offered[tool].get("required", []), tool
        assert "Default: branch" in choice["description"]
    # from_pbx and to_pbx have no default: a copy always says both ends.
    assert {"from_pbx", "to_pbx"} <= set(offered["copy_blacklist_numbers"]["required"])


async def test_with_one_pbx_there_is_no_pbx_to_choose(pbxs: TwoPbxs, mode: str) -> None:
    """A config file of one table (or the environment's unnamed PBX): no pbx argument, no list_pbxs, no copy."""
    async with connected(pbxs.server(names=(HQ,)), mode) as client:
        offered = schemas((await client.list_tools()).tools)
        assert set(offered) == READ_TOOLS | WRITE_TOOLS
        assert not any("pbx" in json.dumps(schema) for schema in offered.values())
        said = await refused(client, "list_blacklist_numbers", pbx=HQ)
        assert "Unknown argument(s) for list_blacklist_numbers: pbx" in said
        listed = await ok(client, "list_blacklist_numbers")
    assert listed["total"] == len(SEED_ENTRIES) and pbxs.made == Counter({HQ: 1})


async def test_tools_list_with_two_pbxs_matches_the_committed_snapshot(pbxs: TwoPbxs) -> None:
    """A schema change must be a deliberate diff: refresh with UPDATE_SNAPSHOTS=1."""
    async with connected(pbxs.server(), "auto") as client:
        tools = (await client.list_tools()).tools
    current = [t.model_dump(mode="json", by_alias=True, exclude_none=True) for t in tools]
    if os.environ.get("UPDATE_SNAPSHOTS") == "1":
        SNAPSHOT.write_text(json.dumps(current, indent=2, sort_keys=True) + "\n")
    assert current == json.loads(SNAPSHOT.read_text()), "tools/list changed: review, then UPDATE_SNAPSHOTS=1"
    single = {tool["name"] for tool in json.loads((SNAPSHOT.parent / "tools_list.json").read_text())}
    assert {tool["name"] for tool in current} == single | {"list_pbxs", "copy_blacklist_numbers"}


async def test_when_every_pbx_is_read_only_no_write_tool_is_offered(pbxs: TwoPbxs, mode: str) -> None:
    async with connected(pbxs.server(read_only=(HQ, BRANCH)), mode) as client:
        names = {tool.name for tool in (await client.list_tools()).tools}
    assert names == READ_TOOLS | {"list_pbxs"}


# -- routing -------------------------------------------------------------------------------------------


async def test_each_tool_acts_on_the_pbx_it_names(pbxs: TwoPbxs, mode: str) -> None:
    hq, branch = pbxs.sandbox[HQ], pbxs.sandbox[BRANCH]
    hq.call_log.add_call("+447700900777", at=datetime.now(UTC) - timedelta(minutes=5))
    async with connected(pbxs.server(), mode) as client:
        added = await ok(
            client, "add_blacklist_number", caller_id="+447700900123", description="hq only", pbx=HQ
        )
        new_id = added["entry"]["id"]
        assert pbxs.stored(HQ)["+447700900123"]["Id"] == new_id
        assert "+447700900123" not in pbxs.stored(BRANCH) and branch.requests == []

        assert (await ok(client, "list_blacklist_numbers", search="+447700900123", pbx=HQ))["total"] == 1
        assert (await ok(client, "list_blacklist_numbers", search="+447700900123", pbx=BRANCH))["total"] == 0
        assert (await ok(client, "get_blacklist_number", id=new_id, pbx=HQ))["caller_id"] == "+447700900123"
        assert "No blacklist entry with id" in await refused(
            client, "get_blacklist_number", id=new_id, pbx=BRANCH
        )
        assert (await ok(client, "check_caller_id", caller_id="+447700900123", pbx=HQ))["blocked"]
        assert not (await ok(client, "check_caller_id", caller_id="+447700900123", pbx=BRANCH))["blocked"]
        callers = {c["caller_id"] for c in (await ok(client, "list_recent_callers", pbx=HQ))["callers"]}
        elsewhere = {c["caller_id"] for c in (await ok(client, "list_recent_callers", pbx=BRANCH))["callers"]}
        assert "+447700900777" in callers and "+447700900777" not in elsewhere

        await ok(client, "update_blacklist_number", id="1", description="changed on branch", pbx=BRANCH)
        deleted = await ok(client, "bulk_delete_blacklist_numbers", ids=["2"], pbx=HQ)
        assert deleted["deleted"] == 1
        csv_hq = (await client.read_resource(f"threecx://blacklist.csv?pbx={HQ}")).contents[0].text  # type: ignore[union-attr]
        csv_branch = (await client.read_resource(f"threecx://blacklist.csv?pbx={BRANCH}")).contents[0].text  # type: ignore[union-attr]

        hq_operations = (await ok(client, "list_operations", pbx=HQ))["operations"]
        branch_operations = (await ok(client, "list_operations", pbx=BRANCH))["operations"]
    assert (
        hq.entries["1"]["Description"] == SEED_ENTRIES[0][1]
        and branch.entries["1"]["Description"] == "changed on branch"
    )
    assert "2" not in hq.entries and "2" in branch.entries
    assert "+447700900123" in csv_hq and "+447700900123" not in csv_branch
    assert "+15550100199" not in csv_hq and "+15550100199" in csv_branch  # entry 2, deleted on hq only
    assert [o["kind"] for o in hq_operations] == ["delete"]  # the single add is not journaled
    assert [o["kind"] for o in branch_operations] == ["update"]


async def test_a_call_without_pbx_acts_on_the_default(pbxs: TwoPbxs, mode: str) -> None:
    async with connected(pbxs.server(default=BRANCH), mode) as client:
        await ok(client, "add_blacklist_number", caller_id="+447700900124")
        listed = await ok(client, "list_blacklist_numbers", search="+447700900124")
    assert listed["total"] == 1 and "+447700900124" in pbxs.stored(BRANCH)
    assert pbxs.sandbox[HQ].requests == [] and pbxs.made == Counter({BRANCH: 1})


@pytest.mark.parametrize("tool", sorted(CALLS))
async def test_a_wrong_name_is_answered_with_the_valid_names(pbxs: TwoPbxs, mode: str, tool: str) -> None:
    async with connected(pbxs.server(), mode) as client:
        wrong = await refused(client, tool, **CALLS[tool], pbx="Head-Office")
        missing = await refused(client, tool, **CALLS[tool])
    for said in (wrong, missing):
        assert '"hq" or "branch"' in said and "Nothing was changed" in said
    assert "no PBX has that name" in wrong
    assert "PBX" in missing and "no default PBX is configured" in missing
    assert pbxs.made == Counter() and all(s.requests == [] for s in pbxs.sandbox.values())


async def test_a_copy_naming_a_wrong_pbx_is_answered_with_the_valid_names(pbxs: TwoPbxs, mode: str) -> None:
    async with connected(pbxs.server(), mode) as client:
        said = await refused(client, "copy_blacklist_numbers", from_pbx="hq ", to_pbx=BRANCH)
        missing = await refused(client, "copy_blacklist_numbers", from_pbx=HQ)
    assert "from_pbx" in said and '"hq" or "branch"' in said
    assert "to_pbx" in missing and '"hq" or "branch"' in missing
    assert all(s.requests == [] for s in pbxs.sandbox.values())


def test_a_name_given_to_a_server_of_one_unnamed_pbx_is_refused_in_words(
    pbxs: TwoPbxs, tmp_path: Path
) -> None:
    """The environment setup's one PBX has no name: a command given one (--pbx) gets a sentence, not an
    IndexError from listing no names."""
    endpoint = PbxEndpoint.parse(pbxs.url[HQ])
    roster = PbxRoster.single(
        lambda: XapiClient(endpoint, "x", SecretStr("y")), Journal(tmp_path / "j", endpoint.origin)
    )
    assert roster.pick(None).name is None
    with pytest.raises(InvalidArgument) as caught:
        roster.pick("hq")
    assert "has no name" in caught.value.message and "Nothing was changed" in caught.value.message


# -- journals: each PBX's own; restore where the operation was made -----------------------------------


async def add_on(client: Client, pbx: str, *caller_ids: str) -> str:
    added = await ok(client, "add_blacklist_numbers", entries=[{"caller_id": c} for c in caller_ids], pbx=pbx)
    assert added["added"] == len(caller_ids)
    return str(added["operation_id"])


async def test_an_operation_is_listed_and_undone_only_on_its_own_pbx(pbxs: TwoPbxs, mode: str) -> None:
    async with connected(pbxs.server(), mode) as client:
        operation = await add_on(client, HQ, "+447700900201", "+447700900202")
        assert [o["operation_id"] for o in (await ok(client, "list_operations", pbx=HQ))["operations"]] == [
            operation
        ]
        assert (await ok(client, "list_operations", pbx=BRANCH))["operations"] == []
        detail = json.loads(
            (await client.read_resource(f"threecx://operations/{operation}")).contents[0].text
        )  # type: ignore[union-attr]
        assert [item["status"] for item in detail["items"]] == ["added", "added"]

        elsewhere = await refused(client, "restore_blacklist_numbers", operation_id=operation, pbx=BRANCH)
        assert 'made on PBX "hq", not on PBX "branch"' in elsewhere and "Nothing was changed" in elsewhere
        assert "+447700900201" in pbxs.stored(HQ)

        undone = await ok(client, "restore_blacklist_numbers", operation_id=operation)  # no pbx: its own
        assert undone["counts"] == {"removed": 2}
        assert (await ok(client, "list_operations", pbx=BRANCH))["operations"] == []
    assert sorted(pbxs.stored(HQ)) == SEEDED and pbxs.writes(BRANCH) == []


async def test_restore_without_pbx_writes_to_the_operations_pbx_even_when_another_is_the_default(
    pbxs: TwoPbxs, mode: str
) -> None:
    async with connected(pbxs.server(default=BRANCH), mode) as client:
        offered = schemas((await client.list_tools()).tools)
        operation = await add_on(client, HQ, "+447700900211")
        undone = await call_confirmed(client, "restore_blacklist_numbers", {"operation_id": operation})
    assert not undone.is_error, text_of(undone)
    assert "+447700900211" not in pbxs.stored(HQ) and pbxs.writes(BRANCH) == []
    assert offered["restore_blacklist_numbers"]["properties"]["pbx"].get("default") is None


# -- tokens and clients: one per PBX, made on first use ----------------------------------------------


async def test_each_pbx_mints_its_own_token_once_and_never_sees_the_others(pbxs: TwoPbxs, mode: str) -> None:
    async with connected(pbxs.server(), mode) as client:
        for _ in range(3):
            for name in NAMES:
                await ok(client, "list_blacklist_numbers", pbx=name)
                await ok(client, "check_caller_id", caller_id="+447700900301", pbx=name)
        await add_on(client, BRANCH, "+447700900302")
    assert pbxs.sandbox[HQ].token_requests == 1 and pbxs.sandbox[BRANCH].token_requests == 1
    hq_tokens, branch_tokens = pbxs.tokens(HQ), pbxs.tokens(BRANCH)
    assert len(hq_tokens) == 1 and len(branch_tokens) == 1 and not hq_tokens & branch_tokens
    assert pbxs.made == Counter({HQ: 1, BRANCH: 1})  # one client each, for the server's lifetime


async def test_a_pbx_gets_a_client_only_when_a_call_first_needs_it(pbxs: TwoPbxs, mode: str) -> None:
    async with connected(pbxs.server(), mode) as client:
        await client.list_tools()
        assert pbxs.made == Counter()
        for _ in range(3):
            await ok(client, "list_blacklist_numbers", pbx=HQ)
        assert pbxs.made == Counter({HQ: 1})
        await ok(client, "list_operations", pbx=BRANCH)  # its journal only
        assert pbxs.sandbox[BRANCH].requests == []  # not even a token request
        await ok(client, "list_pbxs")
    assert pbxs.made == Counter({HQ: 1, BRANCH: 1}) and pbxs.sandbox[BRANCH].token_requests == 1


async def test_a_config_files_pbxs_are_served_apart_end_to_end(
    pbxs: TwoPbxs, mode: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """From config.toml through `roster_for`, as `threecx-mcp` starts: the real client factory, with the
    token file it shares with other processes, per PBX."""
    for name in list(os.environ):
        if name.upper().startswith("THREECX_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("THREECX_CONFIG_DIR", str(tmp_path / "user-config"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HQ_KEY", SANDBOX_CLIENT_SECRET)
    (tmp_path / "branch.key").write_text(SANDBOX_CLIENT_SECRET)
    (tmp_path / "config.toml").write_text(
        f'[pbx.hq]\nurl = "{pbxs.url[HQ]}"\nclient_id = "{SANDBOX_CLIENT_ID}"\nclient_secret_env = "HQ_KEY"\n'
        f'[pbx.branch]\nurl = "{pbxs.url[BRANCH]}"\nclient_id = "{SANDBOX_CLIENT_ID}"\n'
        'client_secret_file = "branch.key"\nread_only = true\n'
    )
    monkeypatch.setenv("THREECX_CONFIG", str(tmp_path / "config.toml"))
    settings = Settings.load(journal=tmp_path / "state" / "journal.sqlite3")
    async with connected(build_server(roster_for(settings), plans=plans_for(settings)), mode) as client:
        operation = await add_on(client, HQ, "+447700900401")
        assert "read-only" in await refused(
            client, "add_blacklist_numbers", entries=[{"caller_id": "+447700900402"}], pbx=BRANCH
        )
        assert (await ok(client, "list_blacklist_numbers", search="+447700900401", pbx=BRANCH))["total"] == 0
        assert (await ok(client, "list_operations", pbx=BRANCH))["operations"] == []
        assert [o["operation_id"] for o in (await ok(client, "list_operations", pbx=HQ))["operations"]] == [
            operation
        ]
        listed = await ok(client, "list_pbxs")
    assert [(p["name"], p["read_only"], p["entries"]) for p in listed["pbxs"]] == [
        (HQ, False, len(SEED_ENTRIES) + 1),
        (BRANCH, True, len(SEED_ENTRIES)),
    ]
    assert "+447700900401" in pbxs.stored(HQ) and pbxs.writes(BRANCH) == []
    assert pbxs.sandbox[HQ].token_requests == 1 and pbxs.sandbox[BRANCH].token_requests == 1
    assert not pbxs.tokens(HQ) & pbxs.tokens(BRANCH)
    assert len(list((tmp_path / "state" / "tokens").glob("*.json"))) == 2  # a token file per PBX


# -- read-only -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("tool", sorted(WRITES))
async def test_a_write_to_a_read_only_pbx_is_refused_before_anything_is_sent(
    pbxs: TwoPbxs, mode: str, tool: str
) -> None:
    respond, asked = answering("accept")
    async with connected(pbxs.server(read_only=(BRANCH,)), mode, respond) as client:
        said = await refused(client, tool, **WRITES[tool], pbx=BRANCH)
        assert 'PBX "branch" is configured read-only' in said and "Nothing was changed" in said
        assert asked == []  # the user is not asked about a write that cannot happen
        assert pbxs.sandbox[BRANCH].requests == [] and pbxs.made[BRANCH] == 0
        done = await client.call_tool(tool, {**WRITES[tool], "pbx": HQ})  # the other PBX takes it
        if tool == "restore_blacklist_numbers":  # reaches hq's journal, which has nothing of entry 1
            assert done.is_error and "The journal has no earlier state" in text_of(done)
        else:
            assert not done.is_error, text_of(done)
        assert (await ok(client, "list_blacklist_numbers", pbx=BRANCH))["total"] == len(
            SEED_ENTRIES
        )  # reads work
    assert pbxs.writes(BRANCH) == []


async def test_a_broad_pattern_for_a_read_only_pbx_is_not_asked_about(pbxs: TwoPbxs, mode: str) -> None:
    respond, asked = answering("accept")
    async with connected(pbxs.server(read_only=(BRANCH,)), mode, respond) as client:
        said = await refused(
            client, "add_blacklist_number", caller_id="*", allow_broad_pattern=True, pbx=BRANCH
        )
    assert "read-only" in said and pbxs.sandbox[BRANCH].requests == []
    assert asked == []


# -- a confirmation names the PBX it is about --------------------------------------------------------


async def _asked_or_planned(pbxs: TwoPbxs, mode: str, what: str) -> str:
    """What the user is shown before a write on branch: the question, or the plan (its summary or error)."""
    elicit = what.endswith("question")
    respond, asked = answering("accept")
    async with connected(pbxs.server(), mode, respond if elicit else None) as client:
        if what.startswith("restore"):
            await ok(client, "add_blacklist_numbers", entries=[{"caller_id": "+447700900501"}], pbx=BRANCH)
            (operation,) = (await ok(client, "list_operations", pbx=BRANCH))["operations"]
            asked.clear()
            arguments: dict[str, Any] = {"operation_id": operation["operation_id"]}
            tool = "restore_blacklist_numbers"
        elif what.startswith("delete"):
            tool, arguments = "bulk_delete_blacklist_numbers", {"ids": ["1"], "pbx": BRANCH}
        elif what.startswith("add"):
            tool, arguments = (
                "add_blacklist_numbers",
                {"entries": [{"caller_id": "+447700900502"}], "pbx": BRANCH},
            )
        else:
            tool, arguments = (
                "add_blacklist_number",
                {"caller_id": "*", "allow_broad_pattern": True, "pbx": BRANCH},
            )
        result = await client.call_tool(tool, arguments)
    if elicit:
        assert len(asked) == 1
        return asked[0]
    return text_of(result)


async def test_an_add_question_names_its_pbx(pbxs: TwoPbxs, mode: str) -> None:
    shown = await _asked_or_planned(pbxs, mode, "add question")
    assert 'PBX "branch"' in shown and '"+447700900502"' in shown


@pytest.mark.parametrize(
    "what",
    [
        "delete question",
        "restore question",
        "broad pattern question",
        "delete plan",
        "add plan",
        "restore plan",
    ],
)
async def test_every_confirmation_names_its_pbx_when_there_are_several(
    pbxs: TwoPbxs, mode: str, what: str
) -> None:
    assert 'PBX "branch"' in await _asked_or_planned(pbxs, mode, what)


# -- list_pbxs -----------------------------------------------------------------------------------------


async def test_list_pbxs_says_which_answer_with_their_counts(pbxs: TwoPbxs, mode: str) -> None:
    pbxs.sandbox[HQ].add("+447700900601")
    async with connected(pbxs.server(default=HQ, read_only=(BRANCH,)), mode) as client:
        result = await client.call_tool("list_pbxs", {})
    listed = result.structured_content
    assert listed is not None and not result.is_error
    assert listed["pbxs"] == [
        {
            "name": HQ,
            "url": pbxs.url[HQ],
            "read_only": False,
            "default": True,
            "answers": True,
            "entries": len(SEED_ENTRIES) + 1,
            "problem": None,
        },
        {
            "name": BRANCH,
            "url": pbxs.url[BRANCH],
            "read_only": True,
            "default": False,
            "answers": True,
            "entries": len(SEED_ENTRIES),
            "problem": None,
        },
    ]
    assert "2 answering" in listed["summary"]
    text = text_of(result)
    assert '"hq"' in text and '"branch"' in text and "read-only" in text


@pytest.mark.parametrize("down", ["stopped", "closed port", "hanging"])
async def test_list_pbxs_reports_a_pbx_that_does_not_answer_within_its_bound(
    pbxs: TwoPbxs, mode: str, down: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pbx_status, "ANSWER_SECONDS", 0.5)
    if down == "stopped":
        with LoopbackServer(Sandbox().app) as gone:
            pbxs.url[HQ] = gone.url
    elif down == "closed port":
        with socket.socket() as unused:
            unused.bind(("127.0.0.1", 0))
            pbxs.url[HQ] = f"http://127.0.0.1:{unused.getsockname()[1]}"
    else:
        # Answered (a 503) only after the bound; not applied, so nothing it does outlives this test.
        pbxs.sandbox[HQ].inject(Fault(status=503, path="/", delay=1.5))
    async with connected(pbxs.server(), mode) as client:
        started = time.monotonic()
        result = await client.call_tool("list_pbxs", {})
        took = time.monotonic() - started
    assert took < 1.4, took  # bounded by ANSWER_SECONDS, not by the PBX
    listed = result.structured_content
    assert listed is not None and not result.is_error
    hq, branch = listed["pbxs"]
    assert (hq["name"], hq["answers"], hq["entries"]) == (HQ, False, None)
    assert hq["problem"] and (
        "no answer within" in hq["problem"] if down == "hanging" else "reach" in hq["problem"]
    )
    assert (branch["answers"], branch["entries"], branch["problem"]) == (True, len(SEED_ENTRIES), None)
    assert "1 answering" in listed["summary"] and "does not answer" in text_of(result)


# -- copy ----------------------------------------------------------------------------------------------

COPIED = ["+447700900701", "+447700900702", "+447700900703"]


def seed_copy(pbxs: TwoPbxs) -> None:
    """Three entries on hq that a search for +4477009007 finds; branch already blocks the last one."""
    for number, caller_id in enumerate(COPIED, start=1):
        pbxs.sandbox[HQ].add(caller_id, f"copied note {number}")
    pbxs.sandbox[BRANCH].add(COPIED[-1], "branch's own")


async def test_a_copy_without_elicitation_is_a_plan_then_a_journaled_bulk_add_on_the_target(
    pbxs: TwoPbxs, mode: str
) -> None:
    seed_copy(pbxs)
    arguments = {"from_pbx": HQ, "to_pbx": BRANCH, "search": "+4477009007"}
    async with connected(pbxs.server(), mode) as client:
        plan = (await client.call_tool("copy_blacklist_numbers", arguments)).structured_content
        assert plan is not None and plan["outcome"] == "awaiting_confirmation" and plan["plan_id"]
        assert (plan["would_add"], plan["already_present"], plan["requested"]) == (2, 1, 3)  # search narrowed
        assert pbxs.writes(BRANCH) == []  # nothing before the user agreed
        copied = await ok(client, "copy_blacklist_numbers", **arguments, plan_id=plan["plan_id"])
        branch_operations = (await ok(client, "list_operations", pbx=BRANCH))["operations"]
        hq_operations = (await ok(client, "list_operations", pbx=HQ))["operations"]
    assert (copied["outcome"], copied["added"], copied["already_present"]) == ("completed", 2, 1)
    assert 'Copy from PBX "hq" to PBX "branch"' in copied["summary"]
    present = next(r for r in copied["results"] if r["status"] == "already_present")
    assert present["caller_id"] == COPIED[-1] and present["id"] == pbxs.stored(BRANCH)[COPIED[-1]]["Id"]
    stored = pbxs.stored(BRANCH)
    assert [stored[c]["Description"] for c in COPIED] == ["copied note 1", "copied note 2", "branch's own"]
    assert sorted(stored) == sorted(SEEDED + COPIED)  # nothing the search did not find
    assert [o["operation_id"] for o in branch_operations] == [copied["operation_id"]] and hq_operations == []
    assert pbxs.writes(HQ) == []  # the source is only read


@pytest.mark.parametrize(("action", "added"), [("accept", 2), ("decline", 0)])
async def test_a_copy_asks_the_user_when_the_client_can_be_asked(
    pbxs: TwoPbxs, mode: str, action: str, added: int
) -> None:
    seed_copy(pbxs)
    respond, asked = answering(action)
    async with connected(pbxs.server(), mode, respond) as client:
        copied = await ok(client, "copy_blacklist_numbers", from_pbx=HQ, to_pbx=BRANCH, search="+4477009007")
    assert len(asked) == 1
    assert 'Copy 2 entries from PBX "hq" to the blacklist of PBX "branch"' in asked[0]
    assert '"+447700900701", "+447700900702"' in asked[0] and COPIED[-1] not in asked[0]
    assert copied["added"] == added and copied["outcome"] == ("completed" if added else "declined")
    assert len(pbxs.writes(BRANCH)) == added


async def test_a_copy_checks_each_entry_as_an_add_does(pbxs: TwoPbxs, mode: str) -> None:
    """What the source holds is not trusted: a pattern blocking everyone needs allow_broad_pattern, what no
    add would store is invalid, and a number is stored as an add would store it."""
    for caller_id in ("*", "10.0.0.1", "+1 (555) 010-0142"):
        pbxs.sandbox[HQ].add(caller_id, "from hq")
    async with connected(pbxs.server(), mode) as client:
        copied = await ok(client, "copy_blacklist_numbers", from_pbx=HQ, to_pbx=BRANCH)
    rows = {row["caller_id"]: row for row in copied["results"]}
    assert (copied["requested"], copied["added"], copied["invalid"]) == (len(SEED_ENTRIES) + 3, 1, 2)
    assert copied["already_present"] == len(SEED_ENTRIES)  # the seeds: both PBXs hold them
    assert "allow_broad_pattern" in rows["*"]["reason"] and "IP address" in rows["10.0.0.1"]["reason"]
    assert rows["+15550100142"]["status"] == "added" and "+15550100142" in pbxs.stored(BRANCH)
    assert "*" not in pbxs.stored(BRANCH)


async def test_a_plan_covers_only_what_the_user_saw_of_the_source(pbxs: TwoPbxs, mode: str) -> None:
    seed_copy(pbxs)
    arguments = {"from_pbx": HQ, "to_pbx": BRANCH, "search": "+4477009007"}
    async with connected(pbxs.server(), mode) as client:
        plan = (await client.call_tool("copy_blacklist_numbers", arguments)).structured_content
        assert plan is not None
        pbxs.sandbox[HQ].add("+447700900704", "added on hq after the plan")
        said = await refused(client, "copy_blacklist_numbers", **arguments, plan_id=plan["plan_id"])
    assert "different request" in said and pbxs.writes(BRANCH) == []


async def test_a_copy_needs_two_different_pbxs_and_a_writable_target(pbxs: TwoPbxs, mode: str) -> None:
    seed_copy(pbxs)
    respond, asked = answering("accept")
    async with connected(pbxs.server(read_only=(BRANCH,)), mode, respond) as client:
        same = await refused(client, "copy_blacklist_numbers", from_pbx=HQ, to_pbx=HQ)
        assert "same PBX" in same and "Nothing was changed" in same
        read_only = await refused(client, "copy_blacklist_numbers", from_pbx=HQ, to_pbx=BRANCH)
        assert 'PBX "branch" is configured read-only' in read_only
        assert asked == [] and pbxs.sandbox[BRANCH].requests == []
        # A read-only PBX may be the source: a copy only reads it.
        pbxs.sandbox[BRANCH].add("+447700900799", "only on branch")
        copied = await ok(client, "copy_blacklist_numbers", from_pbx=BRANCH, to_pbx=HQ, search="+4477009007")
    assert len(asked) == 1 and (copied["added"], copied["already_present"]) == (1, 1)
    assert "+447700900799" in pbxs.stored(HQ) and pbxs.writes(BRANCH) == []


async def test_a_source_larger_than_one_copy_takes_is_refused_with_the_way_round(
    pbxs: TwoPbxs, mode: str
) -> None:
    from threecx_mcp.operations.entry_lists import MAX_ENTRIES

    for number in range(MAX_ENTRIES + 1):  # more than one copy takes, and as many matching +4478
        pbxs.sandbox[HQ].add(f"+4478{number:08d}")
    async with connected(pbxs.server(), mode) as client:
        everything = await refused(client, "copy_blacklist_numbers", from_pbx=HQ, to_pbx=BRANCH)
        searched = await refused(client, "copy_blacklist_numbers", from_pbx=HQ, to_pbx=BRANCH, search="+4478")
    assert "more than 10,000 entries" in everything and "search" in everything
    assert 'matching "+4478"' in searched and "Nothing was changed" in searched
    assert pbxs.writes(BRANCH) == []


async def test_an_interrupted_copy_is_accounted_for_per_entry_and_undone_exactly(
    pbxs: TwoPbxs, mode: str
) -> None:
    """The target stops answering at the third create (it applies it late): the two before are added, the
    third is unknown, the rest are not sent, in the result and in the operation's resource alike; restoring
    the operation removes exactly what the copy added there, the late one included."""
    hq, branch = pbxs.sandbox[HQ], pbxs.sandbox[BRANCH]
    sources = [f"+44770090080{n}" for n in range(6)]
    for caller_id in sources:
        hq.add(caller_id, "to copy")
    creates = 0

    def stall_the_third_create(request: Any) -> None:
        nonlocal creates
        if request.method == "POST" and request.path == CREATE:
            creates += 1
            if creates == 3:  # slow, and applied after the client gave up
                branch.inject(Fault(path=CREATE, method="POST", delay=1.0, passthrough=True))

    branch.hooks.append(stall_the_third_create)
    async with connected(pbxs.server(timeout=0.4, max_in_flight=1), mode) as client:
        copied = await ok(client, "copy_blacklist_numbers", from_pbx=HQ, to_pbx=BRANCH, search="+447700900")
        statuses = {row["caller_id"]: row["status"] for row in copied["results"]}
        assert statuses == dict(
            zip(sources, ["added", "added", "unknown", "failed", "failed", "failed"], strict=True)
        )
        assert (
            copied["outcome"],
            copied["requested"],
            copied["added"],
            copied["unknown"],
            copied["failed"],
        ) == (
            "partial",
            6,
            2,
            1,
            3,
        )
        assert all(
            "not sent after an earlier failure" in r["reason"]
            for r in copied["results"]
            if r["status"] == "failed"
        )
        detail = json.loads(
            (await client.read_resource(f"threecx://operations/{copied['operation_id']}")).contents[0].text  # type: ignore[union-attr]
        )
        assert {item["after"]["caller_id"]: item["status"] for item in detail["items"]} == statuses
        assert detail["outcome"] == "partial" and detail["restorable"]

        with anyio.fail_after(5):
            while sources[2] not in pbxs.stored(BRANCH):  # the PBX applies the stalled create at last
                await anyio.sleep(0.05)
        undone = await ok(client, "restore_blacklist_numbers", operation_id=copied["operation_id"])
    assert undone["counts"] == {"removed": 3, "nothing_to_undo": 3}
    assert sorted(pbxs.stored(BRANCH)) == SEEDED  # exactly what the copy added is gone, nothing else
    assert sorted(pbxs.stored(HQ)) == sorted(SEEDED + sources) and pbxs.writes(HQ) == []


# -- errors say which PBX ---------------------------------------------------------------------------


async def test_an_error_names_its_pbx_and_the_keys_of_its_table(pbxs: TwoPbxs, mode: str) -> None:
    """With several PBXs a failure says which PBX failed, and its advice names that PBX's [pbx.NAME] keys,
    not the THREECX_* variables of the one-PBX setup; the other PBX is unaffected."""
    pbxs.sandbox[BRANCH].inject(Fault(status=401, times=50, path="/connect/token"))
    async with connected(pbxs.server(), mode) as client:
        said = await refused(client, "list_blacklist_numbers", pbx=BRANCH)
        assert (await ok(client, "list_blacklist_numbers", pbx=HQ))["total"] == len(SEED_ENTRIES)
    assert said.startswith('PBX "branch": ')
    assert "of [pbx.branch]" in said and "THREECX_" not in said


async def test_the_one_pbx_of_the_variables_keeps_its_words(pbxs: TwoPbxs, mode: str) -> None:
    """The THREECX_* setup's one unnamed PBX: its errors name the variables, and no PBX."""
    pbxs.sandbox[HQ].inject(Fault(status=401, times=50, path="/connect/token"))
    (named,) = pbxs.roster(names=(HQ,)).pbxs
    unnamed = PbxRoster.single(named.make_client, named.journal)
    async with connected(build_server(unnamed, plans=PlanBook()), mode) as client:
        said = await refused(client, "list_blacklist_numbers")
    assert not said.startswith("PBX ") and "THREECX_CLIENT_ID" in said
