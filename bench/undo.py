"""Issue 9's goals, measured: XAPI requests of small deletes on a 100,000-entry blacklist, restore by
10,000 ids (server CPU, wall time, event-loop blocking; the PBX runs in another process so its CPU
is not counted), and the size of a 10,000-id result over streamable HTTP. `python bench/undo.py`.

Why the PBX runs elsewhere for the restore: the sandbox answers 10,000 creates in Python, and in
the same process its CPU would be charged to the server under test.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import anyio
import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from pydantic import SecretStr

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from threecx_mcp.client import XapiClient
from threecx_mcp.config import Settings
from threecx_mcp.journal import Journal
from threecx_mcp.pbxs import PbxRoster
from threecx_mcp.sandbox import (
    SANDBOX_CLIENT_ID,
    SANDBOX_CLIENT_SECRET,
    SEED_ENTRIES,
    LoopbackServer,
    Sandbox,
)
from threecx_mcp.server import BlacklistServer, build_server
from threecx_mcp.wiring import roster_for

from bench.harness import BENCH_TOKEN, Stack, machine, stack, with_plan

DELETE = "bulk_delete_blacklist_numbers"
RESTORE = "restore_blacklist_numbers"
TICK_SECONDS = 0.005
# Issue 9's goals.
MAX_DELETE_REQUESTS = 10
MAX_RESTORE_CPU_SECONDS = 2.0
MAX_BLOCK_MS = 50.0
MAX_TEXT_BYTES = 16 * 1024
MAX_STRUCTURED_BYTES = 256 * 1024
# The goals' sizes: the defaults of `measure` and of the command line.
BLACKLIST = 100_000
DELETE_SIZES = (16, 50, 100)
RESTORE_IDS = 10_000
OPERATIONS = 10
RESULT_IDS = 10_000
# Room above the entries a sandbox starts with (its default limit, 50,000, is below what these need).
_ROOM = 20_000


# -- 1. requests of a small delete on a big blacklist ---------------------------------------------------


@dataclass(frozen=True)
class DeleteCount:
    """XAPI and token requests of one bulk delete; `first` is the server's first call (no token yet,
    and nothing learnt about the PBX, e.g. whether it understands `in`)."""

    variant: str
    ids: int
    first: bool
    xapi: int
    tokens: int


def _big_sandbox(entries: int, **variants: Any) -> Sandbox:
    sandbox = Sandbox(max_entries=entries + _ROOM, **variants)
    for number in range(entries - len(sandbox.entries)):
        sandbox.add(f"+1999{number:07d}", f"bench entry {number}")
    return sandbox


def _in_memory_server(target: Stack, tmp: str) -> BlacklistServer:
    return build_server(
        PbxRoster.single(
            roster_for(target.settings).pick(None).make_client,
            Journal(Path(tmp) / "journal.sqlite3", "bench"),
        )
    )


async def _call(client: Client, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
    result = await client.call_tool(tool, arguments)
    structured: dict[str, Any] | None = result.structured_content
    if result.is_error or structured is None:
        raise RuntimeError(f"{tool} failed: {result.content}")
    return structured


async def measure_deletes(blacklist: int, sizes: list[int]) -> list[DeleteCount]:
    """For each variant and size: a fresh server's first delete, then a second one on the same server.

    The ids are spread over the blacklist, and put back afterwards so every delete sees `blacklist`
    entries.
    """
    if blacklist < 2 * max(sizes):
        raise ValueError(
            f"--blacklist must hold at least twice the largest delete ({2 * max(sizes)} entries)"
        )
    rows = []
    for variant, switches in (("in", {}), ("or chains", {"supports_in": False})):
        sandbox = _big_sandbox(blacklist, **switches)
        keys = list(sandbox.entries)
        with stack(sandbox) as target, tempfile.TemporaryDirectory() as tmp:
            for size in sizes:
                step = len(keys) // (2 * size)
                async with Client(_in_memory_server(target, tmp)) as client:
                    for first, offset in ((True, 0), (False, step // 2)):
                        ids = [keys[offset + step * i] for i in range(size)]
                        saved = [dict(sandbox.entries[i]) for i in ids]
                        xapi, tokens = _xapi_requests(sandbox), sandbox.token_requests
                        arguments = await with_plan(client, DELETE, {"ids": ids})  # counted: the user's cost
                        result = await _call(client, DELETE, arguments)
                        if result["deleted"] != size:
                            raise RuntimeError(f"deleted {result['deleted']} of {size}: {result['summary']}")
                        rows.append(
                            DeleteCount(
                                variant,
                                size,
                                first,
                                _xapi_requests(sandbox) - xapi,
                                sandbox.token_requests - tokens,
                            )
                        )
                        for entry in saved:
                            sandbox.entries[entry["Id"]] = entry
    return rows


def _xapi_requests(sandbox: Sandbox) -> int:
    return sum(1 for r in list(sandbox.requests) if r.path.startswith("/xapi/"))


# -- 2. restore by 10,000 ids, the PBX in another process ---------------------------------------------


@dataclass(frozen=True)
class PbxStats:
    xapi: int
    tokens: int
    entries: int
    cpu_seconds: float


def _serve_sandbox(control: Connection, entries: int) -> None:
    """The child process: a sandbox seeded with `entries` entries, answering stats until told to stop."""
    sandbox = Sandbox(max_entries=entries + _ROOM)
    ids = [sandbox.add(f"+1888{n:07d}", f"bench entry {n}")["Id"] for n in range(entries)]
    with LoopbackServer(sandbox.app) as server:
        control.send((server.url, ids))
        while (message := control.recv()) != "stop":
            # Plain tuples: a class pickled here may be named after this process's __mp_main__.
            if message == "stats":
                stats = (
                    _xapi_requests(sandbox),
                    sandbox.token_requests,
                    len(sandbox.entries),
                    time.process_time(),
                )
                control.send(stats)
            else:
                control.send(_switch(sandbox, *message))


def _switch(sandbox: Sandbox, command: str, *args: Any) -> Any:
    """What a benchmark may do to the sandbox in the child: flip a switch, reset it, read its counters."""
    if command == "set":
        setattr(sandbox, args[0], args[1])
        return None
    if command == "reset":
        sandbox.reset()
        return None
    if command == "requests":
        return len(sandbox.requests)
    if command == "peak":  # the peak in flight since the last call, which starts the next count
        peak, sandbox.in_flight_peak = sandbox.in_flight_peak, sandbox.in_flight
        return peak
    if command == "ids":
        return [e["Id"] for e in sandbox.entries.values() if e["CallerId"].startswith(args[0])]
    if command == "add":  # blacklist entries: (caller ID, description) pairs
        return [sandbox.add(caller_id, description)["Id"] for caller_id, description in args[0]]
    if command == "calls":  # the call log, replaced: (caller ID, display name, minutes ago, answered) tuples
        now = datetime.now(UTC)
        sandbox.call_log.reset(seed=False)
        for caller_id, name, minutes, answered in args[0]:
            sandbox.call_log.add_call(
                caller_id, name=name, at=now - timedelta(minutes=minutes), answered=answered
            )
        return len(sandbox.call_log.rows)
    raise ValueError(f"unknown sandbox command {command!r}")


class RemotePbx:
    """A sandbox PBX in a child process (spawned, so no thread state is forked), on a loopback port."""

    def __init__(self, entries: int) -> None:
        context = multiprocessing.get_context("spawn")
        self._control, child = context.Pipe()
        self._process = context.Process(target=_serve_sandbox, args=(child, entries), daemon=True)
        self._process.start()
        child.close()
        try:
            if not self._control.poll(120):
                raise EOFError
            self.url, self.ids = self._control.recv()
        except EOFError:
            self.close()
            raise RuntimeError("the sandbox process did not start (its error, if any, is above)") from None
        self.settings = Settings.load(
            url=self.url,
            client_id=SANDBOX_CLIENT_ID,
            client_secret=SecretStr(SANDBOX_CLIENT_SECRET),
            journal=Path(tempfile.gettempdir()) / "threecx-mcp-bench-unused.sqlite3",  # never opened
        )

    def switch(self, command: str, *args: Any) -> Any:
        """Run one of `_switch`'s commands on the sandbox in the child process."""
        self._control.send((command, *args))
        return self._control.recv()

    def stats(self) -> PbxStats:
        self._control.send("stats")
        xapi, tokens, entries, cpu_seconds = self._control.recv()
        return PbxStats(xapi, tokens, entries, cpu_seconds)

    def close(self) -> None:
        if self._process.is_alive():
            with suppress(OSError):
                self._control.send("stop")
            self._process.join(10)
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(10)
        self._control.close()


@contextmanager
def remote_pbx(entries: int) -> Iterator[RemotePbx]:
    pbx = RemotePbx(entries)
    try:
        yield pbx
    finally:
        pbx.close()


@dataclass(frozen=True)
class RestoreRun:
    """One restore call: CPU of this process (server, operations, journal threads, the in-memory MCP
    client), wall time, what the PBX saw, and the event loop's longest block. The block comes from a
    second, identical run with a ticker beside it, so the ticker's own CPU is not in `cpu_seconds`."""

    name: str
    cpu_seconds: float
    wall_seconds: float
    xapi: int
    tokens: int
    pbx_cpu_seconds: float
    counts: dict[str, int]
    longest_block_ms: float = 0.0
    ticks: int = 0


class Ticker:
    """Sleeps `TICK_SECONDS` in a loop and records how late it wakes: the event loop's longest block."""

    def __init__(self) -> None:
        self.longest = 0.0
        self.ticks = 0

    async def run(self) -> None:
        while True:
            started = time.perf_counter()
            await anyio.sleep(TICK_SECONDS)
            self.ticks += 1
            self.longest = max(self.longest, time.perf_counter() - started - TICK_SECONDS)


async def _restore_run(name: str, client: Client, pbx: RemotePbx, ids: list[str], watch: bool) -> RestoreRun:
    before = pbx.stats()
    ticker = Ticker()
    async with anyio.create_task_group() as group:
        if watch:
            group.start_soon(ticker.run)
            await anyio.sleep(TICK_SECONDS * 2)  # the ticker is running before the work starts
        cpu, wall = time.process_time(), time.perf_counter()
        result = await _call(client, RESTORE, {"ids": ids})
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        group.cancel_scope.cancel()
    after = pbx.stats()
    return RestoreRun(
        name,
        cpu,
        wall,
        after.xapi - before.xapi,
        after.tokens - before.tokens,
        after.cpu_seconds - before.cpu_seconds,
        result["counts"],
        ticker.longest * 1000,
        ticker.ticks,
    )


async def _restore_pass(ids: int, operations: int, watch: bool) -> list[RestoreRun]:
    with remote_pbx(ids) as pbx, tempfile.TemporaryDirectory() as tmp:
        journal = Journal(Path(tmp) / "journal.sqlite3", "bench")
        async with Client(
            build_server(PbxRoster.single(roster_for(pbx.settings).pick(None).make_client, journal))
        ) as client:
            chunk = -(-ids // operations)
            for start in range(0, ids, chunk):
                part = pbx.ids[start : start + chunk]
                result = await _call(client, DELETE, await with_plan(client, DELETE, {"ids": part}))
                if result["deleted"] != len(part):
                    raise RuntimeError(f"setup: deleted {result['deleted']} of {len(part)}")
            runs = [
                await _restore_run("restore", client, pbx, pbx.ids, watch),
                await _restore_run("planning only (all back)", client, pbx, pbx.ids, watch),
            ]
        if pbx.stats().entries != ids + len(SEED_ENTRIES):
            raise RuntimeError("the restore did not put every entry back")
    return runs


async def measure_restore(ids: int, operations: int) -> list[RestoreRun]:
    """`operations` bulk deletes of `ids / operations` entries each, then a restore by all `ids` ids,
    then the same restore again (everything is back: only the journal lookup and the planning run).

    Twice, each time on a fresh PBX and journal: once for CPU and wall time, once with the ticker.
    """
    timed = await _restore_pass(ids, operations, watch=False)
    watched = await _restore_pass(ids, operations, watch=True)
    for plain, ticked in zip(timed, watched, strict=True):
        if plain.counts != ticked.counts:
            raise RuntimeError(
                f"the two runs of {plain.name} ended differently: {plain.counts}, {ticked.counts}"
            )
    return [
        replace(plain, longest_block_ms=ticked.longest_block_ms, ticks=ticked.ticks)
        for plain, ticked in zip(timed, watched, strict=True)
    ]


@dataclass(frozen=True)
class CreateFloor:
    """What `creates` creates cost this process without MCP, journal or planning: the restore's floor."""

    via: str
    creates: int
    cpu_seconds: float
    wall_seconds: float


async def measure_create_floor(creates: int) -> list[CreateFloor]:
    """The same creates a restore sends, one after another, each way on a fresh PBX that grows as it
    does during the restore: through `XapiClient`, then through a bare `httpx2.AsyncClient`."""
    with remote_pbx(0) as pbx:
        async with XapiClient.from_connection(pbx.settings.connection()) as client:
            await client.count()  # token and connection warm
            cpu, wall = time.process_time(), time.perf_counter()
            for n in range(creates):
                await client.create_blacklist_number(f"+1888{n:07d}", f"bench entry {n}")
            through_client = CreateFloor(
                "XapiClient", creates, time.process_time() - cpu, time.perf_counter() - wall
            )
    with remote_pbx(0) as pbx:
        async with httpx2.AsyncClient(base_url=pbx.url) as http:
            form = {
                "grant_type": "client_credentials",
                "client_id": SANDBOX_CLIENT_ID,
                "client_secret": SANDBOX_CLIENT_SECRET,
            }
            token = (await http.post("/connect/token", data=form)).json()["access_token"]
            headers = {"Authorization": f"Bearer {token}"}
            cpu, wall = time.process_time(), time.perf_counter()
            for n in range(creates):
                body = {"CallerId": f"+1888{n:07d}", "Description": f"bench entry {n}"}
                response = await http.post("/xapi/v1/BlackListNumbers", json=body, headers=headers)
                if response.status_code != 201:
                    raise RuntimeError(f"create {n}: HTTP {response.status_code}")
            bare = CreateFloor("bare httpx2", creates, time.process_time() - cpu, time.perf_counter() - wall)
    return [through_client, bare]


# -- 3. the size of a 10,000-id result over streamable HTTP ------------------------------------------


@dataclass(frozen=True)
class ResultSize:
    mode: str
    protocol: str
    call: str
    text_bytes: int
    structured_bytes: int  # json.dumps: non-ASCII escaped
    structured_utf8_bytes: int  # as JSON travels: UTF-8
    listed: int
    omitted: int


LONG_ID = "\U0001f600" * 996  # plus a 4-digit number: 1,000 characters, the most an id may have


async def measure_result_sizes(ids: int) -> list[ResultSize]:
    """A dry run, the delete, a delete of ids that do not exist (every one needs attention), and a
    delete where 100 of the ids are unknown 1,000-character ones (the longest listed results), each
    over streamable HTTP in both protocol modes; the client must receive every answer."""
    rows = []
    with stack(_big_sandbox(0)) as target:
        for mode in ("auto", "legacy"):
            keys = [target.sandbox.add(f"+1777{n:07d}", f"bench entry {n}")["Id"] for n in range(ids)]
            missing = [f"missing-{n}" for n in range(ids)]
            long_unknown = [f"{n:04d}{LONG_ID}" for n in range(min(100, ids))]
            http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {BENCH_TOKEN}"}, timeout=120)
            async with (
                http,
                Client(streamable_http_client(target.mcp_url, http_client=http), mode=mode) as client,
            ):
                rest = [target.sandbox.add(f"+1776{n:07d}")["Id"] for n in range(ids - len(long_unknown))]
                calls: list[tuple[str, dict[str, Any], str, int]] = [
                    ("dry run", {"ids": keys, "dry_run": True}, "would_delete", ids),
                    ("delete", await with_plan(client, DELETE, {"ids": keys}), "deleted", ids),
                    ("delete, none found", {"ids": missing}, "not_found", ids),  # nothing to confirm
                    (
                        f"delete, {len(long_unknown)} of the ids unknown and 1,000 emoji long",
                        await with_plan(client, DELETE, {"ids": long_unknown + rest}),
                        "not_found",
                        len(long_unknown),
                    ),
                ]
                for name, arguments, counted, expected in calls:
                    result = await client.call_tool(DELETE, arguments)
                    structured = result.structured_content or {}
                    if result.is_error or structured.get(counted) != expected:
                        raise RuntimeError(f"{name} over {mode}: {str(result.content)[:300]}")
                    rows.append(
                        ResultSize(
                            mode,
                            client.protocol_version,
                            name,
                            sum(len(c.text.encode()) for c in result.content if c.type == "text"),
                            len(json.dumps(structured).encode()),
                            len(json.dumps(structured, ensure_ascii=False).encode()),
                            len(structured["results"]),
                            structured["omitted"],
                        )
                    )
    return rows


# -- all three ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Report:
    deletes: list[DeleteCount]
    restores: list[RestoreRun]
    floors: list[CreateFloor]
    sizes: list[ResultSize]


async def measure(
    blacklist: int = BLACKLIST,
    delete_sizes: tuple[int, ...] = DELETE_SIZES,
    restore_ids: int = RESTORE_IDS,
    operations: int = OPERATIONS,
    result_ids: int = RESULT_IDS,
) -> Report:
    return Report(
        await measure_deletes(blacklist, list(delete_sizes)),
        await measure_restore(restore_ids, operations),
        await measure_create_floor(restore_ids),
        await measure_result_sizes(result_ids),
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--blacklist", type=int, default=100_000, help="entries when counting delete requests"
    )
    parser.add_argument("--delete-sizes", type=int, nargs="+", default=[16, 50, 100])
    parser.add_argument("--restore-ids", type=int, default=10_000)
    parser.add_argument("--operations", type=int, default=10, help="bulk deletes the restore undoes")
    parser.add_argument("--result-ids", type=int, default=10_000)
    args = parser.parse_args()
    report = anyio.run(
        measure, args.blacklist, tuple(args.delete_sizes), args.restore_ids, args.operations, args.result_ids
    )
    print(f"machine: {machine()}")
    for d in report.deletes:
        call = "first call" if d.first else "second call"
        print(
            f"delete {d.ids:>4} ids of {args.blacklist:,} ({d.variant}, {call}): {d.xapi} XAPI requests "
            f"(goal <= {MAX_DELETE_REQUESTS}), {d.tokens} token"
        )
    for r in report.restores:
        print(
            f"{r.name}, {args.restore_ids:,} ids of {args.operations} operations: {r.cpu_seconds:.2f} s CPU "
            f"(goal < {MAX_RESTORE_CPU_SECONDS:.0f} s), {r.wall_seconds:.2f} s wall, longest block "
            f"{r.longest_block_ms:.0f} ms (goal <= {MAX_BLOCK_MS:.0f} ms, {r.ticks} ticks), {r.xapi} XAPI requests, "
            f"PBX CPU {r.pbx_cpu_seconds:.2f} s, {r.counts}"
        )
    for f in report.floors:
        print(
            f"floor, {f.creates:,} creates via {f.via}: {f.cpu_seconds:.2f} s CPU, {f.wall_seconds:.2f} s wall"
        )
    for z in report.sizes:
        print(
            f"{z.call}, {args.result_ids:,} ids, {z.mode} ({z.protocol}): text {z.text_bytes:,} B "
            f"(goal <= {MAX_TEXT_BYTES:,}), structured {z.structured_bytes:,} B json.dumps / "
            f"{z.structured_utf8_bytes:,} B UTF-8 (goal < {MAX_STRUCTURED_BYTES:,}), {z.listed} listed, "
            f"{z.omitted} omitted"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
