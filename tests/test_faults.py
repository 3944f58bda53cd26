"""Every PBX fault, through the MCP tools over real HTTP: a correct result or a readable error,
the right number of requests, and a journal that matches the PBX."""

from __future__ import annotations

from collections.abc import Callable

import anyio
import pytest
from mcp import Client
from pydantic import SecretStr
from threecx_mcp.client import RetryPolicy, XapiClient
from threecx_mcp.config import PbxEndpoint
from threecx_mcp.journal import Journal
from threecx_mcp.pbxs import PbxRoster
from threecx_mcp.sandbox import SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET, Fault, Sandbox
from threecx_mcp.server import BlacklistServer, build_server

from .support import FAST_RETRY, ResettingProxy, assert_journal_matches_the_pbx, statuses
from .test_journal import BULK
from .test_tools import call, fail

pytestmark = pytest.mark.anyio
ENTITY = "/xapi/v1/BlackListNumbers('1')"

# fault on the bulk POST, POSTs the PBX sees, outcome, words in the failure reason
BULK_CASES = [
    (Fault(status=429, path=BULK, retry_after="0"), 2, "completed", None),
    (Fault(status=429, path=BULK), 2, "completed", None),
    (Fault(status=500, path=BULK), 1, "partial", "HTTP 500"),
    (Fault(status=502, path=BULK), 2, "completed", None),
    (Fault(status=503, path=BULK), 2, "completed", None),
    (Fault(status=504, path=BULK), 2, "completed", None),
    (Fault(status=502, body="html", path=BULK, times=10), FAST_RETRY.attempts, "partial", "text/html"),
    (Fault(status=401, path=BULK, times=10), 2, "partial", "3CX Configuration API"),
    (Fault(status=200, body="truncated", path=BULK), 1, "partial", "still exists"),
    (Fault(status=200, body="html", path=BULK), 1, "partial", "still exists"),
]


@pytest.mark.parametrize(("fault", "posts", "outcome", "reason"), BULK_CASES, ids=lambda v: str(v)[:60])
async def test_bulk_delete_under_faults(
    make_server: Callable[..., BlacklistServer],
    journal: Journal,
    sandbox: Sandbox,
    fault: Fault,
    posts: int,
    outcome: str,
    reason: str | None,
) -> None:
    sandbox.inject(fault)
    async with Client(make_server()) as client:
        result = await call(client, "bulk_delete_blacklist_numbers", ids=["1", "2"])
    assert result["outcome"] == outcome
    assert sandbox.count("POST", BULK) == posts
    if reason:
        assert all(reason in r["reason"] for r in result["results"])
    await assert_journal_matches_the_pbx(journal, sandbox)
    assert sandbox.token_requests == (2 if fault.status == 401 else 1)


# fault on the PATCH, PATCHes the PBX sees, words of the error (None: the update succeeds)
PATCH_CASES = [
    (Fault(status=429, path=ENTITY, method="PATCH"), 2, None),
    (Fault(status=503, path=ENTITY, method="PATCH", times=2), 3, None),
    (Fault(status=500, path=ENTITY, method="PATCH"), 1, "HTTP 500"),
    (Fault(status=403, path=ENTITY, method="PATCH"), 1, "System Owner"),
    (Fault(status=401, path=ENTITY, method="PATCH", times=10), 2, "3CX Configuration API"),
    (Fault(status=504, body="html", path=ENTITY, method="PATCH", times=10), FAST_RETRY.attempts, "text/html"),
]


@pytest.mark.parametrize(("fault", "patches", "words"), PATCH_CASES, ids=lambda v: str(v)[:60])
async def test_update_under_faults(
    make_server: Callable[..., BlacklistServer],
    journal: Journal,
    sandbox: Sandbox,
    fault: Fault,
    patches: int,
    words: str | None,
) -> None:
    sandbox.inject(fault)
    async with Client(make_server()) as client:
        if words is None:
            result = await call(client, "update_blacklist_number", id="1", description="after fault")
            assert result["entry"]["description"] == "after fault"
        else:
            assert words in await fail(client, "update_blacklist_number", id="1", description="after fault")
            assert sandbox.entries["1"]["Description"] == "Robocaller: energy switching offers"
    assert sandbox.count("PATCH") == patches
    (operation,) = await journal.recent()
    assert statuses(await journal.items(operation.operation_id))["1"] == (
        "updated" if words is None else "failed" if fault.status in (401, 403) else "unknown"
    )


@pytest.mark.parametrize("body", ["truncated", "html", "text", "empty"])
async def test_garbage_answers_to_reads_are_readable_errors(
    make_server: Callable[..., BlacklistServer], sandbox: Sandbox, body: str
) -> None:
    sandbox.inject(Fault(status=200, body=body, times=1))  # type: ignore[arg-type]
    async with Client(make_server()) as client:
        message = await fail(client, "list_blacklist_numbers")
    assert "was expected" in message and "THREECX_URL" in message


async def test_token_expiry_and_a_foreign_mint_mid_session(
    make_server: Callable[..., BlacklistServer], sandbox: Sandbox
) -> None:
    async with Client(make_server()) as client:
        await call(client, "get_blacklist_number", id="1")
        sandbox.revoke_tokens()  # another process minted a token for our API client
        await call(client, "get_blacklist_number", id="2")
        assert sandbox.token_requests == 2
        sandbox.inject(Fault(status=401, times=100))  # and now every token is refused: a 401 storm
        assert "3CX Configuration API" in await fail(client, "get_blacklist_number", id="3")
    assert sandbox.token_requests == 3  # one re-mint, no hammering of /connect/token


async def test_read_timeout_then_success(sandbox: Sandbox, sandbox_url: str, journal: Journal) -> None:
    sandbox.inject(Fault(path=BULK, delay=1.0, passthrough=True))  # slow, and it still applies
    factory = lambda: XapiClient(
        PbxEndpoint.parse(sandbox_url),
        SANDBOX_CLIENT_ID,
        SecretStr(SANDBOX_CLIENT_SECRET),
        timeout=0.3,
        retry=RetryPolicy(attempts=3, base_delay=0.01),
    )
    async with Client(build_server(PbxRoster.single(factory, journal))) as client:
        result = await call(client, "bulk_delete_blacklist_numbers", ids=["1", "2"])
    assert result["outcome"] == "completed" and sandbox.count("POST", BULK) == 2
    await assert_journal_matches_the_pbx(journal, sandbox)


async def test_connection_reset_mid_bulk_delete(sandbox: Sandbox, sandbox_server, journal: Journal) -> None:  # type: ignore[no-untyped-def]
    proxy = ResettingProxy(sandbox_server[1].port, marker=b"Pbx.BulkNumbersDelete")
    async with anyio.create_task_group() as tg:
        await tg.start(proxy.serve)
        factory = lambda: XapiClient(
            PbxEndpoint.parse(f"http://127.0.0.1:{proxy.port}"),
            SANDBOX_CLIENT_ID,
            SecretStr(SANDBOX_CLIENT_SECRET),
            retry=FAST_RETRY,
        )
        async with Client(build_server(PbxRoster.single(factory, journal))) as client:
            result = await call(client, "bulk_delete_blacklist_numbers", ids=["1", "2"])
        tg.cancel_scope.cancel()
    assert proxy.resets == 1
    assert (
        result["outcome"] == "completed" and sandbox.count("POST", BULK) == 1
    )  # the reset one never arrived
    await assert_journal_matches_the_pbx(journal, sandbox)


async def test_a_delete_that_times_out_but_still_applies_is_reported_unknown(
    sandbox: Sandbox, sandbox_url: str, journal: Journal
) -> None:
    sandbox.inject(Fault(path=BULK, delay=1.0, passthrough=True, times=10))  # every attempt is slow
    factory = lambda: XapiClient(
        PbxEndpoint.parse(sandbox_url),
        SANDBOX_CLIENT_ID,
        SecretStr(SANDBOX_CLIENT_SECRET),
        timeout=0.3,
        retry=RetryPolicy(attempts=2, base_delay=0.01),
    )
    async with Client(build_server(PbxRoster.single(factory, journal))) as client:
        result = await call(client, "bulk_delete_blacklist_numbers", ids=["1", "2"])
    assert result["outcome"] == "partial"
    assert [r["status"] for r in result["results"]] == ["unknown", "unknown"]
    assert "may still delete" in result["results"][0]["reason"]
    await anyio.sleep(1.2)  # the PBX finishes what it was given
    assert "1" not in sandbox.entries
    await assert_journal_matches_the_pbx(journal, sandbox)  # gone, and never reported as not deleted
