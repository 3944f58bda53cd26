"""`list_recent_callers` over a busy day: 10,000 inbound calls from 1,500 numbers in the last 24 hours, a
blacklist of 1,000 entries (patterns among them), at 30 ms per XAPI request and on loopback, through
the MCP tool. Reports wall time, XAPI requests and the size of the answer. `python bench/callers.py`.

The PBX runs in its own process (see `bench/undo.py`), so its CPU is not the server's.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import anyio
from mcp import Client

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from threecx_mcp.journal import Journal
from threecx_mcp.pbxs import PbxRoster
from threecx_mcp.server import build_server
from threecx_mcp.wiring import roster_for

from bench.harness import machine
from bench.undo import remote_pbx

CALLS = 10_000
CALLERS = 1_500
ENTRIES = 1_000
PATTERNS = 20  # of the entries: "+1900555<n>*", each blocking a range of the callers
LATENCIES = (0.03, 0.0)
LIMITS = (50, 200)
_DAY_MINUTES = 23 * 60  # inside the default 24-hour window, with room for the time the run takes


def busy_day(calls: int, callers: int, seed: int = 11) -> list[tuple[str, str | None, int, bool]]:
    """Calls as (caller ID, display name, minutes ago, answered): a few numbers call very often (robocalls
    follow a long tail), one in five has a display name, one in three calls is answered."""
    rng = random.Random(seed)
    numbers = [f"+1900555{n:04d}" for n in range(callers)]
    weights = [1 / (rank + 1) for rank in range(callers)]
    picked = rng.choices(numbers, weights=weights, k=calls)
    return [
        (
            number,
            f"Caller {number[-4:]}" if int(number[-1]) % 5 == 0 else None,
            rng.randrange(1, _DAY_MINUTES),
            rng.random() < 1 / 3,
        )
        for number in picked
    ]


def blacklist(entries: int, patterns: int, callers: int) -> list[tuple[str, str]]:
    """Exact entries for every third caller in the first `entries` numbers past the patterns' ranges,
    fillers for the rest, and `patterns` wildcard entries that each cover ten callers."""
    rows = [(f"+1900555{n:03d}*", f"pattern {n}") for n in range(patterns)]
    exact = [f"+1900555{n:04d}" for n in range(patterns * 10, callers, 3)]
    rows += [(number, "exact") for number in exact[: entries - patterns]]
    rows += [(f"+1777{n:07d}", "filler") for n in range(entries - len(rows))]
    return rows


@dataclass(frozen=True)
class Row:
    latency: float
    limit: int
    seconds: float
    requests: int
    records: int
    callers: int
    listed: int
    blocked: int
    text_bytes: int


async def measure(
    calls: int = CALLS, latencies: tuple[float, ...] = LATENCIES, limits: tuple[int, ...] = LIMITS
) -> list[Row]:
    rows: list[Row] = []
    with remote_pbx(0) as pbx, tempfile.TemporaryDirectory() as tmp:
        pbx.switch("add", blacklist(ENTRIES, PATTERNS, CALLERS))
        logged = pbx.switch("calls", busy_day(calls, CALLERS))
        settings = pbx.settings.model_copy(update={"journal": Path(tmp) / "j.sqlite3"})
        server = build_server(
            PbxRoster.single(
                roster_for(settings).pick(None).make_client, Journal(Path(tmp) / "j.sqlite3", "bench")
            )
        )
        async with Client(server) as client:
            await client.call_tool("get_blacklist_number", {"id": "1"})  # token and connections warm
            for latency in latencies:
                pbx.switch("set", "latency", latency)
                for limit in limits:
                    before = pbx.switch("requests")
                    started = time.perf_counter()
                    result = await client.call_tool("list_recent_callers", {"hours": 24, "limit": limit})
                    seconds = time.perf_counter() - started
                    answer = result.structured_content
                    if result.is_error or answer is None:
                        raise RuntimeError(f"list_recent_callers failed: {result.content}")
                    if answer["records_read"] != logged or answer["truncated"]:
                        raise RuntimeError(f"read {answer['records_read']} of {logged} records")
                    text = "".join(getattr(block, "text", "") for block in result.content)
                    rows.append(
                        Row(
                            latency,
                            limit,
                            seconds,
                            pbx.switch("requests") - before,
                            answer["records_read"],
                            answer["callers_total"],
                            len(answer["callers"]),
                            sum(c["blocked_by"] is not None for c in answer["callers"]),
                            len(text.encode()),
                        )
                    )
    return rows


def report(rows: list[Row]) -> list[str]:
    lines = [
        "| PBX latency | limit | wall time | XAPI requests | records read | callers | listed (blocked) | text |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        lines.append(
            f"| {row.latency * 1000:.0f} ms | {row.limit} | {row.seconds:.2f} s | {row.requests} | "
            f"{row.records:,} | {row.callers:,} | {row.listed} ({row.blocked}) | {row.text_bytes / 1024:.1f} KiB |"
        )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=CALLS)
    parser.add_argument("--latencies", type=float, nargs="+", default=list(LATENCIES))
    args = parser.parse_args()
    rows = anyio.run(measure, args.calls, tuple(args.latencies), LIMITS)
    print(f"machine: {machine()}")
    print(json.dumps({"calls": args.calls, "callers": CALLERS, "entries": ENTRIES}))
    print("\n".join(report(rows)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
