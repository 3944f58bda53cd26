"""Cold start over stdio: process start to a completed tools/list, and the idle server's peak RSS,
side by side with mcp-server-time (PyPI, built on the same mcp SDK). `python bench/cold_start.py`."""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import anyio
from mcp import Client, StdioServerParameters

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.harness import machine

REFERENCE = "mcp-server-time"


def _children_peak_rss_kib() -> int:
    """Peak RSS (VmHWM) of this process's live children, read from /proc (Linux)."""
    peak = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) != os.getpid():
                continue
            status = (stat.parent / "status").read_text()
        except (OSError, IndexError, ValueError):
            continue
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                peak = max(peak, int(line.split()[1]))
    return peak


async def _start(params: StdioServerParameters) -> tuple[float, int, int]:
    started = time.perf_counter()
    async with Client(params, mode="legacy") as client:
        tools = (await client.list_tools()).tools
        seconds = time.perf_counter() - started
        await anyio.sleep(0.2)  # idle
        return seconds, _children_peak_rss_kib(), len(tools)


def servers(journal_dir: str) -> dict[str, StdioServerParameters]:
    bin_dir = Path(sys.executable).parent
    ours = StdioServerParameters(
        command=str(bin_dir / "threecx-mcp"),
        env={"THREECX_SANDBOX": "true", "THREECX_JOURNAL": str(Path(journal_dir) / "j.sqlite3")},
    )
    reference = shutil.which(REFERENCE, path=str(bin_dir)) or REFERENCE
    return {"threecx-mcp": ours, REFERENCE: StdioServerParameters(command=reference, env={"TZ": "UTC"})}


async def measure(runs: int) -> dict[str, dict[str, float]]:
    rows: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, params in servers(tmp).items():
            samples = [await _start(params) for _ in range(runs)]
            rows[name] = {
                "seconds": statistics.median(s[0] for s in samples),
                "peak_rss_mib": statistics.median(s[1] for s in samples) / 1024,
                "tools": samples[0][2],
            }
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    rows = anyio.run(measure, args.runs)
    print(f"machine: {machine()}; median of {args.runs} starts")
    for name, row in rows.items():
        print(
            f"{name:16s} start to tools/list {row['seconds'] * 1000:7.0f} ms, idle peak RSS {row['peak_rss_mib']:6.1f} MiB"
        )
    ours, ref = rows["threecx-mcp"], rows[REFERENCE]
    print(
        f"ratio (threecx-mcp / {REFERENCE}): start {ours['seconds'] / ref['seconds']:.2f}, "
        f"RSS {ours['peak_rss_mib'] / ref['peak_rss_mib']:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
