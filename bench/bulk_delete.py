"""Bulk delete scaling: 10, 100, 1,000 and 10,000 ids through the MCP tool against the sandbox over
HTTP: wall time, XAPI requests, peak traced memory. `python bench/bulk_delete.py`."""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import anyio
from mcp import Client

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from threecx_mcp.journal import Journal
from threecx_mcp.pbxs import PbxRoster
from threecx_mcp.server import build_server
from threecx_mcp.wiring import roster_for

from bench.harness import machine, stack, with_plan


async def _delete(client: Client, planned: dict[str, Any]) -> None:
    result = await client.call_tool("bulk_delete_blacklist_numbers", planned)
    ids = planned["ids"]
    assert not result.is_error and (result.structured_content or {}).get("deleted") == len(ids), (
        result.content
    )


async def measure(sizes: list[int], repeats: int) -> list[dict[str, float]]:
    rows = []
    with stack() as target, tempfile.TemporaryDirectory() as tmp:
        server = build_server(
            PbxRoster.single(
                roster_for(target.settings).pick(None).make_client, Journal(Path(tmp) / "j.sqlite3", "bench")
            )
        )
        async with Client(server) as client:
            await client.call_tool("get_blacklist_number", {"id": "1"})  # token and connections warm
            for size in sizes:
                seconds, requests, peak = [], 0, 0
                for repeat in range(repeats + 1):
                    ids = [target.sandbox.add(f"+1999{i:07d}")["Id"] for i in range(size)]
                    planned = await with_plan(client, "bulk_delete_blacklist_numbers", {"ids": ids})
                    before = len(target.sandbox.requests)
                    if repeat == repeats:  # one extra, traced run for memory only
                        tracemalloc.start()
                        await _delete(client, planned)
                        peak = tracemalloc.get_traced_memory()[1]
                        tracemalloc.stop()
                        continue
                    started = time.perf_counter()
                    await _delete(client, planned)
                    seconds.append(time.perf_counter() - started)
                    requests = len(target.sandbox.requests) - before
                rows.append(
                    {
                        "ids": size,
                        "seconds": statistics.median(seconds),
                        "requests": requests,
                        "peak_mib": peak / 2**20,
                    }
                )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 100, 1_000, 10_000])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rows = anyio.run(measure, args.sizes, args.repeats)
    print(f"machine: {machine()}; median of {args.repeats} runs")
    for row in rows:
        print(
            f"{row['ids']:>6} ids: {row['seconds'] * 1000:8.1f} ms, {row['requests']:>3} XAPI requests, "
            f"peak {row['peak_mib']:.1f} MiB (traced, sandbox included)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
