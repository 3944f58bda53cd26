"""Run every benchmark at full size and write BENCHMARKS.md. `python bench/run_all.py`."""

from __future__ import annotations

import sys
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path

import anyio

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench import bulk_delete, cold_start, overhead, peer
from bench.harness import machine, stack
from bench.load import run_load

OUT = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"


def main() -> int:
    lines = [
        "# Benchmarks",
        "",
        f"Measured {datetime.now(UTC):%Y-%m-%d} on {machine()}, against the sandbox PBX served over real HTTP",
        "on 127.0.0.1 (in the benchmark's own process, so it shares the CPU with what is measured).",
        "Ratios and differences come from the same run. Reproduce with `.venv/bin/python bench/run_all.py`",
        "(each script also runs alone: `python bench/<name>.py --help`).",
        "",
        "## 1. Tool-call overhead (`bench/overhead.py`, median of 300 calls of `get_blacklist_number`)",
        "",
        "| path | median per call | overhead vs direct GET | goal |",
        "| --- | --- | --- | --- |",
    ]
    o = anyio.run(overhead.measure, 300)
    base = o["direct httpx2 GET"]
    lines.append(f"| direct httpx2 GET, warm connection | {base:.2f} ms | — | — |")
    for name, goal in (("mcp in-memory", 1), ("mcp stdio", 3), ("mcp streamable HTTP", 3)):
        over = o[f"{name} overhead"]
        lines.append(
            f"| {name} | {o[name]:.2f} ms | {over:+.2f} ms ({o[name] / base:.2f}x) | < {goal} ms: {'met' if over < goal else 'NOT met'} |"
        )

    with stack() as target:
        first = anyio.run(run_load, target, 50, 20)  # a fresh server: no token yet
        report = anyio.run(run_load, target, 50, 20)
        tracemalloc.start()
        anyio.run(run_load, target, 50, 1)
        settled = tracemalloc.get_traced_memory()[0]
        anyio.run(run_load, target, 50, 20)
        grown = (tracemalloc.get_traced_memory()[0] - settled) / 2**20
        tracemalloc.stop()
    lines += [
        "",
        "## 2. Token economy and load (`bench/load.py`, 50 concurrent MCP clients x 20 calls over streamable HTTP)",
        "",
        "| round | calls | failed | wrong | token requests | throughput |",
        "| --- | --- | --- | --- | --- | --- |",
        (
            f"| first (fresh server) | {first.calls} | {first.failures} | {first.wrong} | {first.token_requests} "
            f"| {first.calls / first.seconds:.0f} calls/s |"
        ),
        (
            f"| second | {report.calls} | {report.failures} | {report.wrong} | {report.token_requests} "
            f"| {report.calls / report.seconds:.0f} calls/s |"
        ),
        "",
        f"Memory grew {grown:+.1f} MiB (tracemalloc) over a third round of 1,000 calls.",
    ]

    rows = anyio.run(bulk_delete.measure, [10, 100, 1_000, 10_000], 3)
    lines += [
        "",
        "## 3. Bulk delete scaling (`bench/bulk_delete.py`, through the MCP tool, median of 3)",
        "",
        "| ids | wall time | time vs the size before (10x the ids) | XAPI requests | peak traced memory (sandbox included) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for previous, row in zip([None, *rows[:-1]], rows, strict=True):
        growth = f"{row['seconds'] / previous['seconds']:.1f}x" if previous else "—"
        lines.append(
            f"| {row['ids']:,} | {row['seconds'] * 1000:.0f} ms | {growth} | {row['requests']} | {row['peak_mib']:.1f} MiB |"
        )
    big = rows[-1]
    lines.append(
        f"\nGoal: 10,000 ids in under 2 s: {'met' if big['seconds'] < 2 else 'NOT met'} ({big['seconds']:.2f} s). "
        "Requests: one lookup before and one after (paged, 500 a page), plus one delete per 500 ids."
    )

    starts = anyio.run(cold_start.measure, 5)
    ours, ref = starts["threecx-mcp"], starts[cold_start.REFERENCE]
    lines += [
        "",
        f"## 4. Cold start over stdio (`bench/cold_start.py`, median of 5), versus `{cold_start.REFERENCE}` 2026.10.19",
        "",
        "The reference is the MCP project's time server from PyPI, built on the same `mcp` 2.3 SDK.",
        "",
        "| server | start to completed tools/list | idle peak RSS | tools |",
        "| --- | --- | --- | --- |",
    ]
    for name, row in starts.items():
        lines.append(
            f"| {name} | {row['seconds'] * 1000:.0f} ms | {row['peak_rss_mib']:.1f} MiB | {row['tools']:.0f} |"
        )
    lines.append(
        f"| ratio | {ours['seconds'] / ref['seconds']:.2f}x | {ours['peak_rss_mib'] / ref['peak_rss_mib']:.2f}x | |"
    )

    p = peer.measure(100, 5)
    ours_p, peer_p = p["ours"], p["peer"]
    lines += [
        "",
        "## 5. Against a peer library (`bench/peer.py`, `3cx-xapi-python-sdk` 3.0.0, median of 5, 100-id bulk delete)",
        "",
        "| operation | peer | threecx-mcp | time ratio | request ratio |",
        "| --- | --- | --- | --- | --- |",
        (
            f"| update | {peer_p['update_s'] * 1000:.1f} ms, {peer_p['update_requests']:.0f} request | "
            f"{ours_p['update_s'] * 1000:.1f} ms, {ours_p['update_requests']:.0f} requests | "
            f"{ours_p['update_s'] / peer_p['update_s']:.1f}x | {ours_p['update_requests'] / peer_p['update_requests']:.0f}x |"
        ),
        (
            f"| bulk delete | {peer_p['delete_s'] * 1000:.1f} ms, {peer_p['delete_requests']:.0f} request | "
            f"{ours_p['delete_s'] * 1000:.1f} ms, {ours_p['delete_requests']:.0f} requests | "
            f"{ours_p['delete_s'] / peer_p['delete_s']:.1f}x | {ours_p['delete_requests'] / peer_p['delete_requests']:.0f}x |"
        ),
        "",
        "The peer sends the bare request. threecx-mcp also reads the entry first (the before-image, and a",
        "clear error for an unknown id), fsyncs it to the safety journal, and reads back after the write",
        "(an update returns the stored entry; a bulk delete checks what was really deleted, since the PBX",
        "answers 204 either way). That is where the extra requests and time go, by design.",
    ]
    OUT.write_text("\n".join(lines) + "\n")
    print(OUT.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
