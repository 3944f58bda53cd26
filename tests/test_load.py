"""The HTTP transport under concurrent load, in reduced size (bench/load.py runs the full 50 x 20)."""

from __future__ import annotations

import tracemalloc

import anyio

from bench.harness import stack
from bench.load import run_load


def test_concurrent_clients_get_correct_answers_with_one_token_mint() -> None:
    tracemalloc.start()
    try:
        with stack() as target:
            warm = anyio.run(run_load, target, 10, 5, 120.0)
            settled = tracemalloc.get_traced_memory()[0]
            report = anyio.run(run_load, target, 10, 5, 120.0)
            grown = tracemalloc.get_traced_memory()[0] - settled
    finally:
        tracemalloc.stop()
    assert (warm.failures, warm.wrong, report.failures, report.wrong) == (0, 0, 0, 0)
    assert (warm.calls, report.calls) == (50, 50)
    assert warm.token_requests == 1 and report.token_requests == 0  # exactly one mint for everything
    assert grown < 8 * 2**20, f"memory grew by {grown / 2**20:.1f} MiB over 50 calls"
