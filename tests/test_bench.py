"""Every benchmark runs once in a tiny size. Only correctness is asserted (counts), never time."""

from __future__ import annotations

import subprocess
import sys

import anyio
import pytest

from bench import bulk_delete, callers, cold_start, latency, overhead, peer, undo
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
    # Applying the plan (its own lookup and $count come before): 10 ids: one `in` lookup, one delete, one
    # check; 600: two scan pages (the plan's $count priced the scan), two chunks, one page after.
    assert [row["requests"] for row in rows] == [3, 2 + 2 + 1]


def test_cold_start_compares_with_the_reference_server() -> None:
    rows = anyio.run(cold_start.measure, 1)
    assert rows["threecx-mcp"]["tools"] == 10 and rows[cold_start.REFERENCE]["tools"] >= 1
    assert all(row["peak_rss_mib"] > 0 for row in rows.values())


def test_peer_library_does_the_same_work() -> None:
    rows = peer.measure(20, 1)
    assert (rows["peer"]["update_requests"], rows["peer"]["delete_requests"]) == (1, 1)
    assert (rows["ours"]["update_requests"], rows["ours"]["delete_requests"]) == (3, 3)


def test_issue9_goal_measurements_do_the_work() -> None:
    report = anyio.run(undo.measure, 3_000, (16, 50, 100), 200, 4, 150)
    counts = {(d.variant, d.ids, d.first): (d.xapi, d.tokens) for d in report.deletes}
    # A delete as a client without elicitation makes it: the plan (one lookup), then the delete. `in`:
    # plan lookup, lookup, delete, check. `or` chains hold 20 ids: 16 ids 1+1+1+1, 50 ids 3+3+1+3, 100 ids
    # 5+5+1+5; each fresh server's plan also has one `in` lookup refused, and its 100-id plan a $count (the
    # apply reuses both). Fresh servers reuse the token their stack's first server minted (the shared file).
    assert counts == {
        ("in", 16, True): (4, 1),
        ("in", 16, False): (4, 0),
        ("in", 50, True): (4, 0),
        ("in", 50, False): (4, 0),
        ("in", 100, True): (4, 0),
        ("in", 100, False): (4, 0),
        ("or chains", 16, True): (5, 1),
        ("or chains", 16, False): (4, 0),
        ("or chains", 50, True): (11, 0),
        ("or chains", 50, False): (10, 0),
        ("or chains", 100, True): (18, 0),
        ("or chains", 100, False): (16, 0),
    }
    restore, planning = report.restores
    # 200 ids: two `in` lookups by id and two by caller ID, then one create per entry; no new token.
    assert (restore.counts, restore.xapi, restore.tokens) == ({"recreated": 200}, 204, 0)
    assert (planning.counts, planning.xapi, planning.tokens) == ({"already_present": 200}, 4, 0)
    assert [(f.via, f.creates) for f in report.floors] == [("XapiClient", 200), ("bare httpx2", 200)]
    assert {(s.mode, s.protocol) for s in report.sizes} == {("auto", "2026-07-28"), ("legacy", "2025-11-25")}
    assert len(report.sizes) == 8
    assert all(s.listed + s.omitted == 150 and 0 < s.listed <= 100 for s in report.sizes)
    # Bounded whatever the ids: the last call's 100 unknown ids are 1,000 emoji each.
    assert all(s.text_bytes <= undo.MAX_TEXT_BYTES for s in report.sizes)
    assert all(s.structured_bytes < undo.MAX_STRUCTURED_BYTES for s in report.sizes)


def test_latency_bench_does_the_work_within_the_bound() -> None:
    rows = anyio.run(latency.measure, (30,), (0.005,), 30)
    # Per size: add (one lookup by caller ID, one search for patterns, one create each), delete (plan,
    # lookup, delete, check), restore (one create each, after its reads); the sandbox never saw more in
    # flight than allowed.
    assert [(r.operation, r.entries) for r in rows] == [("add", 30), ("delete", 30), ("restore", 30)]
    assert all(r.peak_in_flight <= r.max_in_flight for r in rows)
    assert max(r.peak_in_flight for r in rows if r.operation != "delete") > 1  # the writes overlap
    assert all(0 < r.text_bytes <= 16 * 1024 for r in rows)


def test_callers_bench_reads_the_whole_call_log() -> None:
    (row,) = anyio.run(callers.measure, 300, (0.0,), (50,))
    # Every call read (measure checks it); the busiest callers are the patterns' numbers, so blocked.
    assert (row.records, row.listed) == (300, 50) and 0 < row.blocked < row.listed <= row.callers


@pytest.mark.parametrize(
    "script",
    [
        ["overhead.py", "--samples", "2"],
        ["load.py", "--clients", "2", "--calls", "2"],
        ["bulk_delete.py", "--sizes", "5", "--repeats", "1"],
        ["cold_start.py", "--runs", "1"],
        ["peer.py", "--ids", "5", "--repeats", "1"],
        ["latency.py", "--sizes", "20", "--latencies", "0"],
        ["callers.py", "--calls", "50", "--latencies", "0"],
        ["undo.py", "--blacklist", "40", "--delete-sizes", "16", "--restore-ids", "20", "--operations", "2"]
        + ["--result-ids", "110"],
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
