"""Every benchmark runs once in a tiny size. Only correctness is asserted (counts), never time."""

from __future__ import annotations

import subprocess
import sys

import anyio
import pytest

from bench import bulk_delete, cold_start, overhead, peer
from bench.harness import stack
from bench.load import run_load

from .support import REPO


def test_overhead_measures_every_path() -> None:
    results = anyio.run(overhead.measure, 3)
    assert {"direct httpx2 GET", "mcp in-memory", "mcp stdio", "mcp streamable HTTP"} <= set(results)
    assert all(value > 0 for name, value in results.items() if "overhead" not in name)


def test_token_economy() -> None:
    with stack() as target:
        report = anyio.run(run_load, target, 5, 4, 120.0)
    assert (report.calls, report.failures, report.wrong, report.token_requests) == (20, 0, 0, 1)


def test_bulk_delete_request_counts() -> None:
    rows = anyio.run(bulk_delete.measure, [10, 600], 1)
    # 10 ids: one `in` lookup, one delete, one check; 600: a count, two scan pages, two chunks, one page after
    assert [row["requests"] for row in rows] == [3, 1 + 2 + 2 + 1]


def test_cold_start_compares_with_the_reference_server() -> None:
    rows = anyio.run(cold_start.measure, 1)
    assert rows["threecx-mcp"]["tools"] == 7 and rows[cold_start.REFERENCE]["tools"] >= 1
    assert all(row["peak_rss_mib"] > 0 for row in rows.values())


def test_peer_library_does_the_same_work() -> None:
    rows = peer.measure(20, 1)
    assert (rows["peer"]["update_requests"], rows["peer"]["delete_requests"]) == (1, 1)
    assert (rows["ours"]["update_requests"], rows["ours"]["delete_requests"]) == (3, 3)


@pytest.mark.parametrize(
    "script",
    [
        ["overhead.py", "--samples", "2"],
        ["load.py", "--clients", "2", "--calls", "2"],
        ["bulk_delete.py", "--sizes", "5", "--repeats", "1"],
        ["cold_start.py", "--runs", "1"],
        ["peer.py", "--ids", "5", "--repeats", "1"],
    ],
)
def test_each_script_runs_from_the_command_line(script: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / script[0]), *script[1:]],
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "machine:" in done.stdout
