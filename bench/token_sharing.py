"""Token sharing: server processes on one machine, one API client, one PBX, all calling at once.

3CX keeps one live token per API client, so processes that each mint their own end each other's
sessions. With the shared token file they converge on one token. Two OS processes x 8 workers x
15 s against the sandbox PBX on loopback, reporting token requests (mints), calls and failures.
Each process builds its XAPI client the way `threecx-mcp` does (`wiring.client_factory`, settings
pointing at the PBX, state in one directory), so the wiring is measured, not just the token file.

`python bench/token_sharing.py [--processes 2 --workers 8 --seconds 15] [--without-sharing]`
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import anyio

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from pydantic import SecretStr
from threecx_mcp.client import XapiClient
from threecx_mcp.config import Settings
from threecx_mcp.errors import PbxError
from threecx_mcp.sandbox import (
    SANDBOX_CLIENT_ID,
    SANDBOX_CLIENT_SECRET,
    SEED_ENTRIES,
    LoopbackServer,
    Sandbox,
)
from threecx_mcp.wiring import roster_for

from bench.harness import machine


@dataclass
class SharingReport:
    processes: int
    workers: int
    seconds: float
    mints: int
    calls: int
    failures: int
    messages: list[str] = field(default_factory=list)  # a few distinct failure messages

    def line(self) -> str:
        return (
            f"{self.processes} processes x {self.workers} workers x {self.seconds:g}s on one API client: "
            f"{self.mints} mint(s), {self.calls} calls, {self.failures} failed"
        )


def run(
    processes: int = 2, workers: int = 8, seconds: float = 15.0, *, sharing: bool = True
) -> SharingReport:
    """Serve one sandbox PBX here and run `processes` worker processes against it at the same time."""
    sandbox = Sandbox()
    with tempfile.TemporaryDirectory() as state, LoopbackServer(sandbox.app) as pbx:
        start_at = time.time() + 2.0  # every process is importing by then: they start together
        command = [sys.executable, str(Path(__file__).resolve()), "--worker", pbx.url]
        options = ["--workers", str(workers), "--seconds", str(seconds), "--start-at", str(start_at)]
        options += ["--state-dir", state] + ([] if sharing else ["--without-sharing"])
        children = [
            subprocess.Popen([*command, *options], stdout=subprocess.PIPE, text=True)
            for _ in range(processes)
        ]
        outputs = [json.loads(child.communicate(timeout=seconds + 60)[0]) for child in children]
    messages = sorted({m for out in outputs for m in out["messages"]})[:3]
    return SharingReport(
        processes,
        workers,
        seconds,
        mints=sandbox.token_requests,
        calls=sum(out["calls"] for out in outputs),
        failures=sum(out["failures"] for out in outputs),
        messages=messages,
    )


async def _work(
    url: str, state_dir: str, sharing: bool, workers: int, seconds: float, start_at: float
) -> dict[str, object]:
    """One server process: `workers` concurrent callers reading entries until the time is up."""
    settings = Settings.load(
        url=url,
        client_id=SANDBOX_CLIENT_ID,
        client_secret=SecretStr(SANDBOX_CLIENT_SECRET),
        journal=Path(state_dir) / "journal.sqlite3",  # the state directory: the token file goes beside it
    )
    connection = settings.connection()
    factory = (
        roster_for(settings).pick(None).make_client
        if sharing
        else lambda: XapiClient.from_connection(connection)
    )
    calls = failures = 0
    messages: set[str] = set()
    await anyio.sleep(max(start_at - time.time(), 0.0))
    deadline = time.monotonic() + seconds
    async with factory() as xapi:

        async def worker(number: int) -> None:
            nonlocal calls, failures
            while time.monotonic() < deadline:
                calls += 1
                try:
                    await xapi.get_blacklist_number(str((number + calls) % len(SEED_ENTRIES) + 1))
                except PbxError as exc:
                    failures += 1
                    messages.add(exc.user_message())

        async with anyio.create_task_group() as tg:
            for number in range(workers):
                tg.start_soon(worker, number)
    return {"calls": calls, "failures": failures, "messages": sorted(messages)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--without-sharing", action="store_true", help="each process keeps its own token")
    parser.add_argument("--worker", metavar="URL", help=argparse.SUPPRESS)  # internal: one worker process
    parser.add_argument("--state-dir", help=argparse.SUPPRESS)
    parser.add_argument("--start-at", type=float, default=0.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        sharing = not args.without_sharing
        work = _work(args.worker, args.state_dir, sharing, args.workers, args.seconds, args.start_at)
        print(json.dumps(anyio.run(lambda: work)))
        return
    report = run(args.processes, args.workers, args.seconds, sharing=not args.without_sharing)
    print(f"machine: {machine()}")
    print(("without" if args.without_sharing else "with") + " the shared token file: " + report.line())
    for message in report.messages:
        print(f"  failure: {message}")


if __name__ == "__main__":
    main()
