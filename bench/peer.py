"""Against a peer 3CX client library: the same update and bulk delete through 3cx-xapi-python-sdk
(PyPI) and through threecx-mcp, against the same sandbox over HTTP. `python bench/peer.py`."""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import anyio
from pydantic import SecretStr

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from threecx_mcp.client import XapiClient
from threecx_mcp.config import PbxEndpoint
from threecx_mcp.journal import Journal
from threecx_mcp.operations import bulk_delete, entries
from threecx_mcp.sandbox import Sandbox

from bench.harness import machine, stack

PEER = ("peer-sdk", "peer-sdk-key")
OURS = ("threecx-mcp", "threecx-mcp-key")


def _seed(sandbox: Sandbox, count: int, tag: str) -> list[str]:
    return [sandbox.add(f"+1{tag}{i:07d}")["Id"] for i in range(count)]


def _count(sandbox: Sandbox, since: int) -> int:
    return sum(1 for r in sandbox.requests[since:] if r.path.startswith("/xapi/"))


def measure(ids: int, repeats: int) -> dict[str, dict[str, float]]:
    from threecx import ThreeCXClient  # the peer, imported only here

    sandbox = Sandbox(api_clients=dict([PEER, OURS]))
    results: dict[str, dict[str, list[float]]] = {
        name: {"update_s": [], "update_requests": [], "delete_s": [], "delete_requests": []}
        for name in ("peer", "ours")
    }
    with stack(sandbox) as target, tempfile.TemporaryDirectory() as tmp:
        peer = ThreeCXClient(base_url=target.pbx_url, client_id=PEER[0], client_secret=PEER[1])
        journal = Journal(Path(tmp) / "j.sqlite3", "bench")

        async def ours_run(record: dict[str, list[float]], repeat: int) -> None:
            async with XapiClient(PbxEndpoint.parse(target.pbx_url), OURS[0], SecretStr(OURS[1])) as xapi:
                await xapi.get_blacklist_number("1")  # warm token and connection, as the peer is
                mark = len(sandbox.requests)
                started = time.perf_counter()
                await entries.update_entry(xapi, journal, "1", None, f"ours {repeat}")
                record["update_s"].append(time.perf_counter() - started)
                record["update_requests"].append(_count(sandbox, mark))
                doomed = _seed(sandbox, ids, "3")
                mark = len(sandbox.requests)
                started = time.perf_counter()
                result = await bulk_delete.bulk_delete(xapi, journal, doomed, dry_run=False)
                record["delete_s"].append(time.perf_counter() - started)
                record["delete_requests"].append(_count(sandbox, mark))
                assert result.deleted == ids

        for repeat in range(repeats):
            record = results["peer"]
            peer.security.get_blacklist_number("1")  # warm
            mark = len(sandbox.requests)
            started = time.perf_counter()
            peer.security.update_blacklist_number("1", {"Description": f"peer {repeat}"})
            record["update_s"].append(time.perf_counter() - started)
            record["update_requests"].append(_count(sandbox, mark))
            doomed = _seed(sandbox, ids, "2")
            mark = len(sandbox.requests)
            started = time.perf_counter()
            peer.security.bulk_delete_blacklist_numbers(doomed)
            record["delete_s"].append(time.perf_counter() - started)
            record["delete_requests"].append(_count(sandbox, mark))
            assert not any(i in sandbox.entries for i in doomed)
            anyio.run(ours_run, results["ours"], repeat)
        peer.close()
    return {name: {k: statistics.median(v) for k, v in record.items()} for name, record in results.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ids", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rows = measure(args.ids, args.repeats)
    print(f"machine: {machine()}; median of {args.repeats}; bulk delete of {args.ids} ids")
    for name, row in rows.items():
        print(
            f"{name:5s} update {row['update_s'] * 1000:6.1f} ms / {row['update_requests']:.0f} requests; "
            f"bulk delete {row['delete_s'] * 1000:6.1f} ms / {row['delete_requests']:.0f} requests"
        )
    ours, peer = rows["ours"], rows["peer"]
    print(
        f"ratio ours/peer: update time {ours['update_s'] / peer['update_s']:.2f}, requests "
        f"{ours['update_requests'] / peer['update_requests']:.0f}; bulk delete time "
        f"{ours['delete_s'] / peer['delete_s']:.2f}, requests {ours['delete_requests'] / peer['delete_requests']:.0f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
