"""Shared fixtures: the sandbox PBX served over real HTTP on 127.0.0.1, and clients for it."""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from mcp import Client
from pydantic import SecretStr
from threecx_mcp.client import XapiClient
from threecx_mcp.config import PbxEndpoint, Settings
from threecx_mcp.journal import Journal
from threecx_mcp.pbxs import PbxRoster
from threecx_mcp.sandbox import SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET, LoopbackServer, Sandbox
from threecx_mcp.server import BlacklistServer, build_server

from .support import AUTH_TOKEN, FAST_RETRY


def pytest_configure(config: pytest.Config) -> None:
    """Keep the developer's own settings out: no test (or server it starts) reads their user-config .env."""
    os.environ["THREECX_CONFIG_DIR"] = tempfile.mkdtemp(prefix="threecx-mcp-tests-config-")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def sandbox_server() -> Iterator[tuple[Sandbox, LoopbackServer]]:
    sandbox = Sandbox()
    with LoopbackServer(sandbox.app) as server:
        yield sandbox, server


@pytest.fixture
def sandbox(sandbox_server: tuple[Sandbox, LoopbackServer]) -> Sandbox:
    """The session's sandbox PBX, reset to its seeded state for this test."""
    sandbox_server[0].reset()
    return sandbox_server[0]


@pytest.fixture
def sandbox_url(sandbox: Sandbox, sandbox_server: tuple[Sandbox, LoopbackServer]) -> str:
    return sandbox_server[1].url


@pytest.fixture
async def xapi(sandbox_url: str) -> AsyncIterator[XapiClient]:
    async with XapiClient(
        PbxEndpoint.parse(sandbox_url), SANDBOX_CLIENT_ID, SecretStr(SANDBOX_CLIENT_SECRET), retry=FAST_RETRY
    ) as client:
        yield client


@pytest.fixture
def client_factory(sandbox_url: str):  # type: ignore[no-untyped-def]
    """XAPI clients for the MCP server, pointed at the loopback sandbox."""
    return lambda: XapiClient(
        PbxEndpoint.parse(sandbox_url), SANDBOX_CLIENT_ID, SecretStr(SANDBOX_CLIENT_SECRET), retry=FAST_RETRY
    )


@pytest.fixture
def http_server(sandbox: Sandbox, pbx_settings: Settings) -> Iterator[str]:
    """The MCP server over streamable HTTP on 127.0.0.1, bearer-protected, managing the sandbox."""
    from threecx_mcp.http_transport import http_app
    from threecx_mcp.wiring import roster_for

    with LoopbackServer(http_app(pbx_settings, roster_for(pbx_settings), "127.0.0.1")) as server:
        yield server.url


@pytest.fixture
def pbx_settings(sandbox_url: str, journal: Journal) -> Settings:
    """Settings as for a real PBX, naming the sandbox; state (journal, token file, plans) in this test's folder."""
    return Settings.load(
        url=sandbox_url,
        client_id=SANDBOX_CLIENT_ID,
        client_secret=SecretStr(SANDBOX_CLIENT_SECRET),
        mcp_auth_token=SecretStr(AUTH_TOKEN),
        journal=journal.path,
    )


@pytest.fixture
def journal(tmp_path: Path, sandbox_url: str) -> Journal:
    return Journal(tmp_path / "journal.sqlite3", PbxEndpoint.parse(sandbox_url).origin)


# How a real PBX may page and filter; the tool tests that page or look up ids run against each.
PBX_VARIANTS = {
    "aspnet": {},  # ASP.NET OData defaults: `in` understood, $filter node limit 100, no page cap
    "capped": {"page_cap": 5, "supports_in": False},  # server-driven paging with nextLink; `or` chains only
}


@pytest.fixture(params=sorted(PBX_VARIANTS))
def pbx_variant(request: pytest.FixtureRequest, sandbox: Sandbox) -> str:
    """The sandbox switched to one way a real PBX may page and filter (reset after the test)."""
    for name, value in PBX_VARIANTS[request.param].items():
        setattr(sandbox, name, value)
    return str(request.param)


@pytest.fixture
def make_server(client_factory: Callable[[], XapiClient], journal: Journal) -> Callable[..., BlacklistServer]:
    """The MCP server wired to the loopback sandbox and this test's journal."""
    return lambda read_only=False: build_server(
        PbxRoster.single(client_factory, journal), read_only=read_only
    )


@pytest.fixture(params=["auto", "legacy"])
async def mcp(
    request: pytest.FixtureRequest, make_server: Callable[..., BlacklistServer]
) -> AsyncIterator[Client]:
    """In-memory MCP sessions in both protocol modes (2026-07-28 and 2025-11-25), without elicitation
    (as Claude Desktop): bulk writes answer with a plan first."""
    async with Client(make_server(), mode=request.param) as client:
        yield client


@pytest.fixture(autouse=True)
def no_secret_is_ever_logged(
    caplog: pytest.LogCaptureFixture, sandbox_server: tuple[Sandbox, LoopbackServer]
) -> Iterator[None]:
    """Across every test's scenario: the API key and the bearer tokens never reach a log record."""
    caplog.set_level(logging.DEBUG)
    yield
    tokens = {
        r.headers["authorization"].removeprefix("Bearer ")
        for r in sandbox_server[0].requests
        if r.headers.get("authorization", "").startswith("Bearer ")
    }
    logged = "\n".join(
        record.getMessage() for record in caplog.get_records("call") + caplog.get_records("setup")
    )
    for secret in {SANDBOX_CLIENT_SECRET, AUTH_TOKEN, *tokens}:
        assert secret not in logged, "a secret reached the logs"
