"""Many writes at real PBX latency: bulk add, delete and restore of 1,000 and 10,000 entries through the MCP
tools, with the sandbox answering every XAPI request after 30 ms (and after 0, for the loopback figures).
Reports wall time, XAPI requests and the peak number of requests in flight, as the sandbox counts them.
`python bench/latency.py`."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import dataclass
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

from bench.harness import machine, with_plan
from bench.undo import RemotePbx, remote_pbx

LATENCIES = (0.03, 0.0)
SIZES = (1_000, 2_000, 10_000)
DELETE_SIZE = 10_000
# Issue 11's goals at 30 ms a request: add or restore of 1,000 in 6 s, of 10,000 in 45 s; and 2,000
# numbers added in one call with a result text of at most 16 KiB.
GOAL_SECONDS = {1_000: 6.0, 10_000: 45.0}
GOAL_TEXT_BYTES = {2_000: 16 * 1024}


@dataclass(frozen=True)
class Row:
    latency: float
    operation: str  # "add", "delete", "restore"
    entries: int
    seconds: float
    requests: int
    peak_in_flight: int
    max_in_flight: int
    text_bytes: int  # the result's text, as the assistant reads it


async def _timed(
    pbx: RemotePbx, client: Client, tool: str, arguments: dict[str, Any]
) -> tuple[dict[str, Any], float, int, int, int]:
    """The tool's structured result, its wall time, the XAPI requests it made, the peak in flight and
    the UTF-8 bytes of its text."""
    before = pbx.switch("requests")
    pbx.switch("peak")  # starts the count
    started = time.perf_counter()
    result = await client.call_tool(tool, arguments)
    seconds = time.perf_counter() - started
    if result.is_error or result.structured_content is None:
        raise RuntimeError(f"{tool} failed: {result.content}")
    text = "".join(getattr(block, "text", "") for block in result.content).encode()
    return result.structured_content, seconds, pbx.switch("requests") - before, pbx.switch("peak"), len(text)


async def measure(
    sizes: tuple[int, ...] = SIZES, latencies: tuple[float, ...] = LATENCIES, delete_size: int = DELETE_SIZE
) -> list[Row]:
    """For each latency and size: add that many entries, delete them, restore the delete (each timed).

    The sandbox runs in its own process, as a PBX is another machine: its CPU does not slow the server's.
    """
    rows: list[Row] = []
    with remote_pbx(0) as pbx, tempfile.TemporaryDirectory() as tmp:
        settings = pbx.settings.model_copy(update={"journal": Path(tmp) / "j.sqlite3"})
        limit = settings.max_in_flight
        server = build_server(
            PbxRoster.single(
                roster_for(settings).pick(None).make_client, Journal(Path(tmp) / "j.sqlite3", "bench")
            )
        )
        async with Client(server) as client:
            await client.call_tool("get_blacklist_number", {"id": "1"})  # token and connections warm
            for latency in latencies:
                for size in sizes:
                    pbx.switch("reset")
                    entries = [
                        {"caller_id": f"+35191{i:07d}", "description": f"bench {i}"} for i in range(size)
                    ]
                    planned = await with_plan(client, "add_blacklist_numbers", {"entries": entries})
                    pbx.switch("set", "latency", latency)
                    added, seconds, requests, peak, text = await _timed(
                        pbx, client, "add_blacklist_numbers", planned
                    )
                    assert added["added"] == size, added["summary"]
                    rows.append(Row(latency, "add", size, seconds, requests, peak, limit, text))
                    pbx.switch("set", "latency", 0.0)
                    ids = pbx.switch("ids", "+35191")
                    deleting = await with_plan(client, "bulk_delete_blacklist_numbers", {"ids": ids})
                    pbx.switch("set", "latency", latency)
                    deleted, seconds, requests, peak, text = await _timed(
                        pbx, client, "bulk_delete_blacklist_numbers", deleting
                    )
                    assert deleted["deleted"] == size, deleted["summary"]
                    if size == delete_size:
                        rows.append(Row(latency, "delete", size, seconds, requests, peak, limit, text))
                    undo = {"operation_id": deleted["operation_id"]}
                    restored, seconds, requests, peak, text = await _timed(
                        pbx, client, "restore_blacklist_numbers", undo
                    )
                    assert restored["counts"] == {"recreated": size}, restored["summary"]
                    rows.append(Row(latency, "restore", size, seconds, requests, peak, limit, text))
    return rows


def report(rows: list[Row]) -> list[str]:
    """Markdown: one line per measurement, with the goal's verdict where issue 11 sets one."""
    lines = [
        "| PBX latency | operation | entries | wall time | XAPI requests | peak in flight (max) | text | goal |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        goals = []
        if row.latency == 0.03 and row.operation in ("add", "restore") and row.entries in GOAL_SECONDS:
            limit = GOAL_SECONDS[row.entries]
            goals.append(f"<= {limit:.0f} s: {'met' if row.seconds <= limit else 'NOT met'}")
        if row.operation == "add" and row.entries in GOAL_TEXT_BYTES:
            most = GOAL_TEXT_BYTES[row.entries]
            goals.append(f"text <= {most // 1024} KiB: {'met' if row.text_bytes <= most else 'NOT met'}")
        bound = "met" if row.peak_in_flight <= row.max_in_flight else "NOT met"
        lines.append(
            f"| {row.latency * 1000:.0f} ms | {row.operation} | {row.entries:,} | {row.seconds:.2f} s | "
            f"{row.requests:,} | {row.peak_in_flight} ({row.max_in_flight}): {bound} | "
            f"{row.text_bytes / 1024:.1f} KiB | {'; '.join(goals) or '—'} |"
        )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--latencies", type=float, nargs="+", default=list(LATENCIES))
    args = parser.parse_args()
    rows = anyio.run(measure, tuple(args.sizes), tuple(args.latencies), max(args.sizes))
    print(f"machine: {machine()}")
    print("\n".join(report(rows)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
