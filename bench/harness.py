"""What every benchmark needs: the sandbox PBX and the MCP server over real HTTP on 127.0.0.1."""

from __future__ import annotations

import platform
import statistics
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from pydantic import SecretStr
from threecx_mcp.config import Settings
from threecx_mcp.http_transport import http_app
from threecx_mcp.sandbox import SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET, LoopbackServer, Sandbox
from threecx_mcp.wiring import roster_for

BENCH_TOKEN = "bench-bearer-token-0123456789-abcdefghij"


@dataclass
class Stack:
    sandbox: Sandbox
    pbx_url: str
    mcp_url: str
    settings: Settings

    def mcp_client(self) -> Client:
        http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {BENCH_TOKEN}"}, timeout=60)
        return Client(streamable_http_client(self.mcp_url, http_client=http))


@contextmanager
def stack(sandbox: Sandbox | None = None) -> Iterator[Stack]:
    """Sandbox PBX and MCP server (streamable HTTP, bearer-protected), both on loopback ports."""
    sandbox = sandbox or Sandbox()
    with tempfile.TemporaryDirectory() as tmp, LoopbackServer(sandbox.app) as pbx:
        settings = Settings.load(
            url=pbx.url,
            client_id=SANDBOX_CLIENT_ID,
            client_secret=SecretStr(SANDBOX_CLIENT_SECRET),
            mcp_auth_token=SecretStr(BENCH_TOKEN),
            journal=Path(tmp) / "journal.sqlite3",
        )
        with LoopbackServer(http_app(settings, roster_for(settings), "127.0.0.1")) as mcp:
            yield Stack(sandbox, pbx.url, f"{mcp.url}/mcp", settings)


def machine() -> str:
    import os

    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, {platform.system()}"


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


async def with_plan(client: Client, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """The arguments plus the plan_id a client without elicitation must bring to apply a bulk write.

    Fetched before the timed call, so the figures measure the write itself; the plan costs one lookup.
    """
    result = await client.call_tool(tool, arguments)
    plan_id = (result.structured_content or {}).get("plan_id")
    if result.is_error or plan_id is None:
        raise RuntimeError(f"{tool} gave no plan: {result.content}")
    return {**arguments, "plan_id": plan_id}
