"""Load: many concurrent MCP clients making tool calls over streamable HTTP against the sandbox.

Bounded in count and time, loopback only. `python bench/load.py --clients 50 --calls 20`.
"""

from __future__ import annotations

import argparse
import sys
import time
import tracemalloc
from dataclasses import dataclass
from pathlib import Path

import anyio

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from threecx_mcp.sandbox import SEED_ENTRIES

from bench.harness import Stack, machine, stack


@dataclass
class LoadReport:
    calls: int
    failures: int
    wrong: int
    seconds: float
    token_requests: int

    def line(self) -> str:
        return (
            f"{self.calls} calls in {self.seconds:.2f}s ({self.calls / self.seconds:.0f}/s): "
            f"{self.failures} failed, {self.wrong} wrong, {self.token_requests} token request(s)"
        )


async def run_load(target: Stack, clients: int, calls: int, time_limit: float = 300) -> LoadReport:
    """`clients` sessions at once, each making `calls` get/list calls and checking every answer."""
    failures = wrong = 0
    expected = {str(i + 1): caller_id for i, (caller_id, _) in enumerate(SEED_ENTRIES)}
    before = target.sandbox.token_requests

    async def session(number: int) -> None:
        nonlocal failures, wrong
        async with target.mcp_client() as client:
            for call in range(calls):
                entry_id = str((number + call) % len(SEED_ENTRIES) + 1)
                if call % 4 == 3:
                    result = await client.call_tool("list_blacklist_numbers", {"search": expected[entry_id]})
                    ok = any(
                        e["id"] == entry_id for e in (result.structured_content or {}).get("entries", [])
                    )
                else:
                    result = await client.call_tool("get_blacklist_number", {"id": entry_id})
                    ok = (result.structured_content or {}).get("caller_id") == expected[entry_id]
                failures += bool(result.is_error)
                wrong += not result.is_error and not ok

    started = time.perf_counter()
    with anyio.fail_after(time_limit):
        async with anyio.create_task_group() as tg:
            for number in range(clients):
                tg.start_soon(session, number)
    return LoadReport(
        clients * calls,
        failures,
        wrong,
        time.perf_counter() - started,
        target.sandbox.token_requests - before,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--calls", type=int, default=20)
    args = parser.parse_args()
    with stack() as target:
        warm = anyio.run(run_load, target, args.clients, args.calls)
        timed = anyio.run(run_load, target, args.clients, args.calls)
        tracemalloc.start()  # slows calls down, so it only watches a third round
        anyio.run(run_load, target, args.clients, 1)
        settled = tracemalloc.get_traced_memory()[0]
        traced = anyio.run(run_load, target, args.clients, args.calls)
        grown = (tracemalloc.get_traced_memory()[0] - settled) / 2**20
        tracemalloc.stop()
    print(f"machine: {machine()}")
    print(f"first round: {warm.line()}")
    print(f"second round: {timed.line()}")
    print(f"third round, traced: {traced.line()}; memory grew {grown:+.1f} MiB")
    reports = (warm, timed, traced)
    clean = all(r.failures == r.wrong == 0 for r in reports)
    return (
        0 if clean and warm.token_requests == 1 and timed.token_requests == traced.token_requests == 0 else 1
    )


if __name__ == "__main__":
    sys.exit(main())
