"""The API key and bearer tokens never show up in logs, stderr, tool output or reprs."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client
from pydantic import SecretStr
from threecx_mcp.client import XapiClient
from threecx_mcp.config import PbxEndpoint, Settings
from threecx_mcp.journal import Journal
from threecx_mcp.pbxs import PbxRoster
from threecx_mcp.sandbox import SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET, Fault, Sandbox
from threecx_mcp.server import BlacklistServer, build_server

from .support import FAST_RETRY
from .test_transports import console_script, pbx_env

pytestmark = pytest.mark.anyio


def issued_tokens(sandbox: Sandbox) -> set[str]:
    return {
        r.headers["authorization"].removeprefix("Bearer ")
        for r in sandbox.requests
        if r.headers.get("authorization", "").startswith("Bearer ")
    }


async def test_no_secret_in_logs_or_tool_output(
    sandbox: Sandbox,
    sandbox_url: str,
    make_server: Callable[..., BlacklistServer],
    journal: Journal,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    seen: list[str] = []
    async with Client(make_server()) as client:
        for fault in (
            None,
            Fault(status=401, times=3),
            Fault(status=503, body="html", times=9),
            Fault(status=403),
        ):
            if fault:
                sandbox.inject(fault)
            for tool, args in (
                ("list_blacklist_numbers", {"search": "spam"}),
                ("update_blacklist_number", {"id": "1", "description": "x"}),
                ("bulk_delete_blacklist_numbers", {"ids": ["2"], "dry_run": True}),
            ):
                result = await client.call_tool(tool, args)
                seen += [c.text for c in result.content]  # type: ignore[union-attr]
                seen.append(str(result.structured_content))
    wrong = XapiClient(
        PbxEndpoint.parse(sandbox_url), SANDBOX_CLIENT_ID, SecretStr("wrong-api-key"), retry=FAST_RETRY
    )
    async with Client(build_server(PbxRoster.single(lambda: wrong, journal))) as client:
        result = await client.call_tool("get_blacklist_number", {"id": "1"})
        seen += [c.text for c in result.content]  # type: ignore[union-attr]
    seen += [record.getMessage() for record in caplog.records]
    seen.append(repr(Settings.load(client_secret=SecretStr(SANDBOX_CLIENT_SECRET))))
    secrets = {SANDBOX_CLIENT_SECRET, "wrong-api-key", *issued_tokens(sandbox)}
    assert len(secrets) >= 3
    everything = "\n".join(seen)
    assert "3CX Configuration API" in everything  # the failures really happened and were worded
    for secret in secrets:
        assert secret not in everything


async def test_no_secret_on_the_stdio_servers_stderr(sandbox: Sandbox, sandbox_url: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    env = pbx_env(sandbox_url)
    sandbox.inject(Fault(status=401, times=5))
    with open(tmp_path / "stderr.txt", "w+") as errlog:  # noqa: ASYNC230 - a file handle for the child's stderr
        transport = stdio_client(StdioServerParameters(command=console_script(), env=env), errlog=errlog)
        async with Client(transport) as client:
            await client.call_tool("list_blacklist_numbers", {})
            await client.call_tool("get_blacklist_number", {"id": "1"})
        errlog.seek(0)
        stderr = errlog.read()
    assert (
        "list_blacklist_numbers failed: AuthenticationFailed" in stderr
    )  # stderr did capture the server's log
    for secret in {SANDBOX_CLIENT_SECRET, *issued_tokens(sandbox)}:
        assert secret not in stderr
