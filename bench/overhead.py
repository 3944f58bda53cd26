"""Tool-call overhead: get_blacklist_number through mcp.Client (in-memory, stdio, streamable HTTP)
against the same GET made directly with httpx2 on a warm connection. `python bench/overhead.py`."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
import httpx2
from mcp import Client, StdioServerParameters

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from threecx_mcp.journal import Journal
from threecx_mcp.pbxs import PbxRoster
from threecx_mcp.server import build_server
from threecx_mcp.wiring import roster_for

from bench.harness import machine, median_ms, stack

DIRECT_CLIENT = ("bench-direct", "bench-direct-key")  # its own API client, so tokens never collide


async def _timed(samples: int, call: Callable[[], Awaitable[object]]) -> list[float]:
    for _ in range(min(20, samples)):  # warm: connections, token, caches
        await call()
    times = []
    for _ in range(samples):
        started = time.perf_counter()
        await call()
        times.append(time.perf_counter() - started)
    return times


async def measure(samples: int) -> dict[str, float]:
    """Median milliseconds per call for each path, and each MCP path's overhead over the direct GET."""
    results: dict[str, float] = {}
    with stack() as target, tempfile.TemporaryDirectory() as tmp:
        target.sandbox.api_clients[DIRECT_CLIENT[0]] = DIRECT_CLIENT[1]
        async with httpx2.AsyncClient(base_url=target.pbx_url) as http:
            form = {
                "client_id": DIRECT_CLIENT[0],
                "client_secret": DIRECT_CLIENT[1],
                "grant_type": "client_credentials",
            }
            token = (await http.post("/connect/token", data=form)).json()["access_token"]
            headers = {"Authorization": f"Bearer {token}"}

            async def direct() -> None:
                response = await http.get("/xapi/v1/BlackListNumbers('1')", headers=headers)
                assert response.json()["Id"] == "1"

            results["direct httpx2 GET"] = median_ms(await _timed(samples, direct))

        async def through(client: Client) -> list[float]:
            async def call() -> None:
                result = await client.call_tool("get_blacklist_number", {"id": "1"})
                assert (result.structured_content or {}).get("id") == "1", result

            return await _timed(samples, call)

        server = build_server(
            PbxRoster.single(
                roster_for(target.settings).pick(None).make_client, Journal(Path(tmp) / "j.sqlite3", "bench")
            )
        )
        async with Client(server) as client:
            results["mcp in-memory"] = median_ms(await through(client))
        env = {
            "THREECX_URL": target.pbx_url,
            "THREECX_CLIENT_ID": target.settings.client_id or "",
            "THREECX_CLIENT_SECRET": "sandbox-api-key",
            "THREECX_JOURNAL": str(Path(tmp) / "stdio.jsonl"),
        }
        script = str(Path(sys.executable).parent / "threecx-mcp")
        async with Client(StdioServerParameters(command=script, env=env)) as client:
            results["mcp stdio"] = median_ms(await through(client))
        async with target.mcp_client() as client:
            results["mcp streamable HTTP"] = median_ms(await through(client))
    base = results["direct httpx2 GET"]
    for name in ("mcp in-memory", "mcp stdio", "mcp streamable HTTP"):
        results[f"{name} overhead"] = results[name] - base
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=300)
    args = parser.parse_args()
    results = anyio.run(measure, args.samples)
    print(f"machine: {machine()}; {args.samples} samples per path, medians")
    for name, value in results.items():
        print(f"{name:32s} {value:8.3f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
