"""Bounded, adaptive concurrency of the many-writes paths (bulk add, restore), counted by the sandbox PBX.

No timed assertions beyond lower bounds a slow machine only makes larger (a pause of at least the
PBX's Retry-After)."""

from __future__ import annotations

import itertools
import time

import anyio
import pytest
from mcp import Client
from pydantic import SecretStr
from threecx_mcp.client import XapiClient
from threecx_mcp.config import Settings
from threecx_mcp.errors import ConfigError, PbxError
from threecx_mcp.journal import Journal
from threecx_mcp.operations import bulk_add, bulk_delete, restore
from threecx_mcp.operations.concurrency import AdaptiveLimiter, for_each
from threecx_mcp.operations.entry_lists import EntryInput
from threecx_mcp.pbxs import PbxRoster
from threecx_mcp.sandbox import Fault, Sandbox
from threecx_mcp.sandbox.pbx import RecordedRequest
from threecx_mcp.server import build_server

from .support import call_confirmed, client_for

pytestmark = pytest.mark.anyio
CREATE = "/xapi/v1/BlackListNumbers"


def entries(count: int, prefix: str = "+4930777") -> list[EntryInput]:
    return [EntryInput(i + 1, f"{prefix}{i:05d}", None) for i in range(count)]


def test_the_bound_comes_from_threecx_max_in_flight(
    monkeypatch: pytest.MonkeyPatch, sandbox_url: str
) -> None:
    monkeypatch.setenv("THREECX_MAX_IN_FLIGHT", "3")
    settings = Settings.load(url=sandbox_url, client_id="c", client_secret=SecretStr("s"))
    assert XapiClient.from_connection(settings.connection()).max_in_flight == 3
    monkeypatch.setenv("THREECX_MAX_IN_FLIGHT", "65")
    with pytest.raises(ConfigError, match="THREECX_MAX_IN_FLIGHT"):
        Settings.load(url=sandbox_url)
    monkeypatch.delenv("THREECX_MAX_IN_FLIGHT")
    assert (
        Settings.load(url=sandbox_url, client_id="c", client_secret=SecretStr("s")).connection().max_in_flight
        == 8
    )


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_bulk_add_and_its_restore_never_exceed_max_in_flight(
    sandbox: Sandbox, sandbox_url: str, journal: Journal, mode: str
) -> None:
    sandbox.latency = 0.01  # requests overlap as at a real PBX's distance
    async with Client(build_server(PbxRoster.single(client_for(sandbox_url, 3), journal)), mode=mode) as mcp:
        added = await call_confirmed(
            mcp, "add_blacklist_numbers", {"entries": [{"caller_id": e.caller_id} for e in entries(60)]}
        )
        assert added.structured_content is not None and added.structured_content["added"] == 60
        assert 2 <= sandbox.in_flight_peak <= 3  # concurrent, and never beyond the bound
        sandbox.in_flight_peak = 0
        ids = [e["Id"] for e in sandbox.entries.values() if e["CallerId"].startswith("+4930777")]
        deleted = await call_confirmed(mcp, "bulk_delete_blacklist_numbers", {"ids": ids})
        assert deleted.structured_content is not None and deleted.structured_content["deleted"] == 60
        restored = await call_confirmed(
            mcp, "restore_blacklist_numbers", {"operation_id": deleted.structured_content["operation_id"]}
        )
    assert restored.structured_content is not None and restored.structured_content["counts"] == {
        "recreated": 60
    }
    assert 2 <= sandbox.in_flight_peak <= 3


async def test_a_429_storm_halves_the_limit_and_every_entry_is_added_once(
    sandbox: Sandbox, sandbox_url: str, journal: Journal
) -> None:
    sandbox.latency = 0.005
    sandbox.inject(Fault(status=429, path=CREATE, method="POST", times=40))
    async with client_for(sandbox_url, 8)() as xapi:
        result = await bulk_add.bulk_add(xapi, journal, entries(100), dry_run=False)
    assert (result.added, result.failed, result.unknown) == (100, 0, 0)
    assert sandbox.count("POST", CREATE) == 140  # each refused request sent again, none applied twice
    assert sum(e["CallerId"].startswith("+4930777") for e in sandbox.entries.values()) == 100


async def test_the_limiter_adapts_down_on_throttling_and_grows_back_slowly(
    sandbox: Sandbox, sandbox_url: str
) -> None:
    sandbox.inject(Fault(status=503, path=CREATE, method="POST", times=6))
    limiter = AdaptiveLimiter(8)
    outcomes: list[str] = []

    async def create(entry: EntryInput) -> None:
        try:
            await limiter.call(lambda: xapi.create_blacklist_number(entry.caller_id, None))
            outcomes.append("added")
        except PbxError as exc:  # a 503 on a create is not retried: it might have been applied
            outcomes.append(type(exc).__name__)

    async with client_for(sandbox_url, 8)() as xapi:
        await for_each(entries(6, "+4930888"), create, workers=8)
        assert limiter.throttles == 6 and limiter.limit == 1  # 8 halved down to its floor
        await for_each(entries(10, "+4930999"), create, workers=8)
    # Back by one place per window of clean answers (1, then 2, 3, 4 answers): not at once.
    assert limiter.limit == 5
    assert limiter.peak <= 8 and outcomes.count("added") == 10


async def test_retry_after_pauses_every_worker(sandbox: Sandbox, sandbox_url: str, journal: Journal) -> None:
    arrivals: list[tuple[float, str]] = []

    def arrival(request: RecordedRequest) -> None:
        if request.method == "POST" and request.path == CREATE:
            arrivals.append((time.monotonic(), request.body.decode()))

    sandbox.hooks.append(arrival)
    # Beyond the client's own retry budget (FAST_RETRY waits at most 0.05 s): the limiter honours it.
    sandbox.inject(Fault(status=429, path=CREATE, method="POST", times=1, retry_after="1"))
    async with client_for(sandbox_url, 4)() as xapi:
        result = await bulk_add.bulk_add(xapi, journal, entries(12), dry_run=False)
    assert result.added == 12
    throttled_at = arrivals[0][0]
    # None is sent during the pause. The (at most limit - 1 = 3) requests already on their way when the 429
    # came may still arrive in it, late on a loaded machine; everything else waits for the pause to end.
    assert len([at for at, _ in arrivals if throttled_at + 0.2 < at < throttled_at + 1.0]) <= 3
    assert len([at for at, _ in arrivals if at >= throttled_at + 1.0]) >= 8
    assert len(arrivals) == 13


async def test_requests_are_paced_rather_than_sent_in_bursts(
    sandbox: Sandbox, sandbox_url: str, journal: Journal
) -> None:
    """Once a request's time is known, starts are spread over it instead of leaving `limit` at a time.

    At 20 ms a request and 4 in flight the pace is at least 0.85 * 20 / 4 = 4.25 ms, so arrivals less
    than 3 ms apart are rare (one start delayed by the machine more than the next); sent in bursts of
    4, about a third are (measured: 2 of 55 paced, 17 of 55 not)."""
    arrivals: list[float] = []

    def arrival(request: RecordedRequest) -> None:
        if request.method == "POST" and request.path == CREATE:
            arrivals.append(time.monotonic())

    sandbox.hooks.append(arrival)
    sandbox.latency = 0.02
    async with client_for(sandbox_url, 4)() as xapi:
        result = await bulk_add.bulk_add(xapi, journal, entries(80), dry_run=False)
    assert result.added == 80 and len(arrivals) == 80
    paced = arrivals[4:]  # the first window leaves before any request's time is known
    gaps = [later - earlier for earlier, later in itertools.pairwise(paced)]
    assert sum(gap < 0.003 for gap in gaps) < len(gaps) / 6, sorted(round(g * 1000, 1) for g in gaps)
    assert sandbox.in_flight_peak <= 4


async def test_a_failure_in_one_worker_cancels_the_others() -> None:
    started: list[int] = []

    async def work(item: int) -> None:
        started.append(item)
        if item == 2:
            raise ValueError("boom")
        await anyio.sleep(10)

    with pytest.raises(ExceptionGroup) as caught:
        await for_each(range(100), work, workers=4)
    assert caught.group_contains(ValueError) and len(started) <= 8


def test_the_bound_is_checked() -> None:
    for bad in (0, 65):
        with pytest.raises(ValueError, match="between 1 and 64"):
            AdaptiveLimiter(bad)


async def test_a_cancelled_concurrent_restore_says_what_was_in_flight(
    sandbox: Sandbox, sandbox_url: str, journal: Journal
) -> None:
    """Cut off while creations are in flight (two of them slow, applied anyway): the journal says per entry
    recreated, unknown (in flight, at most max_in_flight) or not attempted; undoing it removes all it created."""
    async with client_for(sandbox_url, 4)() as xapi:
        ids = [sandbox.add(f"+4930555{i:04d}")["Id"] for i in range(60)]
        deleted = await bulk_delete.bulk_delete(xapi, journal, ids, dry_run=False)
        assert deleted.operation_id is not None
        sandbox.latency = 0.02
        sandbox.inject(Fault(path=CREATE, method="POST", times=2, delay=1.0, passthrough=True))
        with anyio.move_on_after(0.4) as scope:
            await restore.restore(xapi, journal, deleted.operation_id, None)
        assert scope.cancelled_caught
        await anyio.sleep(1.0)  # the PBX finishes what it was given
        (operation, *_) = await journal.recent()
        assert operation.kind == "restore" and operation.outcome == "interrupted"
        items = await journal.items(operation.operation_id)
        kinds = [i.status for i in items]
        assert set(kinds) == {"recreated", "unknown", "failed"} and 2 <= kinds.count("unknown") <= 4
        present = {e["CallerId"] for e in sandbox.entries.values()}
        for item in items:
            assert item.after is not None
            if item.status == "failed":
                assert item.reason == "not attempted: the restore was interrupted"
                assert item.after.caller_id not in present
            elif item.status == "recreated":
                assert item.after.caller_id in present
        sandbox.latency = 0.0
        undo = await restore.restore(xapi, journal, operation.operation_id, None)
    assert undo.counts["removed"] >= kinds.count("recreated") and not {"failed", "unknown"} & set(undo.counts)
    assert not any(e["CallerId"].startswith("+4930555") for e in sandbox.entries.values())
