"""The server over its real transports: stdio (the console script) and streamable HTTP, plus the CLI."""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

import httpx2
import pytest
from mcp import Client, StdioServerParameters
from pydantic import SecretStr
from threecx_mcp.config import Settings
from threecx_mcp.errors import ConfigError
from threecx_mcp.http_transport import RequireBearerToken, http_app
from threecx_mcp.sandbox import SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET, Sandbox

from .support import AUTH_TOKEN, REPO, SUBPROCESS_JOURNAL, call_confirmed, console_script, run_console

pytestmark = pytest.mark.anyio
SNAPSHOT = REPO / "tests" / "snapshots" / "tools_list.json"


def pbx_env(sandbox_url: str) -> dict[str, str]:
    return {
        "THREECX_URL": sandbox_url,
        "THREECX_CLIENT_ID": SANDBOX_CLIENT_ID,
        "THREECX_CLIENT_SECRET": SANDBOX_CLIENT_SECRET,
        "THREECX_JOURNAL": str(SUBPROCESS_JOURNAL),
    }


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_stdio_session_against_the_pbx(sandbox: Sandbox, sandbox_url: str, mode: str) -> None:
    params = StdioServerParameters(command=console_script(), args=[], env=pbx_env(sandbox_url))
    async with Client(params, mode=mode) as client:
        tools = {t.name for t in (await client.list_tools()).tools}
        assert "update_blacklist_number" in tools
        found = await client.call_tool("list_blacklist_numbers", {"search": "eremy"})
        assert found.structured_content["entries"][0]["id"] == "4"  # type: ignore[index]
        updated = await client.call_tool("update_blacklist_number", {"id": "4", "description": "via stdio"})
        assert not updated.is_error
        deleted = await call_confirmed(client, "bulk_delete_blacklist_numbers", {"ids": ["4", "5"]})
        assert deleted.structured_content["deleted"] == 2  # type: ignore[index]
    assert "4" not in sandbox.entries and "5" not in sandbox.entries


async def test_stdio_delivers_a_large_delete_and_the_journal_cli_reads_it(
    sandbox: Sandbox, sandbox_url: str, tmp_path: Path
) -> None:
    ids = [sandbox.add(f"+1556{i:07d}", "note\u2028forged line " * 8)["Id"] for i in range(6_000)]
    env = pbx_env(sandbox_url) | {"THREECX_JOURNAL": str(tmp_path / "journal.sqlite3")}
    async with Client(StdioServerParameters(command=console_script(), env=env), mode="legacy") as client:
        result = await call_confirmed(client, "bulk_delete_blacklist_numbers", {"ids": ids})
    assert not result.is_error and result.structured_content is not None
    operation_id = result.structured_content["operation_id"]
    assert result.structured_content["deleted"] == 6_000 and not set(ids) & set(sandbox.entries)

    def journal(*words: str) -> subprocess.CompletedProcess[str]:
        return run_console("journal", *words, env={**os.environ, **env}, timeout=60)

    listed = journal("list")
    assert listed.returncode == 0 and operation_id in listed.stdout and "delete" in listed.stdout
    shown = journal("show", operation_id)
    assert shown.returncode == 0 and shown.stdout.count("\n") >= 6_000
    assert "\\u2028" in shown.stdout and "\u2028" not in shown.stdout  # escaped, never a raw line break
    exported = journal("export")
    (record,) = [json.loads(line) for line in exported.stdout.split("\n") if line]
    assert record["operation_id"] == operation_id and len(record["items"]) == 6_000


async def test_stdio_sandbox_switch_through_env_needs_no_credentials() -> None:
    env = {"THREECX_SANDBOX": "true", "THREECX_JOURNAL": str(SUBPROCESS_JOURNAL)}
    params = StdioServerParameters(command=console_script(), args=["--read-only"], env=env)
    async with Client(params) as client:
        assert sorted(t.name for t in (await client.list_tools()).tools) == [
            "check_caller_id",
            "get_blacklist_number",
            "list_blacklist_numbers",
            "list_operations",
            "list_recent_callers",
        ]
        page = await client.call_tool("list_blacklist_numbers", {"limit": 3})
        assert page.structured_content["total"] == 12  # type: ignore[index]


def test_stdio_with_missing_settings_exits_with_the_variable_named(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("THREECX_")}
    done = run_console(env=env, cwd=tmp_path, timeout=60)
    assert done.returncode == 2
    assert "THREECX_URL is not set" in done.stderr and done.stdout == ""


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_http_session_with_bearer_token(http_server: str, sandbox: Sandbox, mode: str) -> None:
    headers = {"Authorization": f"Bearer {AUTH_TOKEN}"}
    async with httpx2.AsyncClient(headers=headers) as http:
        from mcp.client.streamable_http import streamable_http_client

        async with Client(
            streamable_http_client(f"{http_server}/mcp", http_client=http), mode=mode
        ) as client:
            result = await client.call_tool(
                "update_blacklist_number", {"id": 1, "caller_id": "+44 20 7183 8751"}
            )
            assert result.structured_content["entry"]["caller_id"] == "+442071838751"  # type: ignore[index]
            result = await call_confirmed(client, "bulk_delete_blacklist_numbers", {"ids": "[1, 2]"})
            assert result.structured_content["deleted"] == 2  # type: ignore[index]
    assert "1" not in sandbox.entries


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_an_applied_delete_of_thousands_reaches_the_client_over_http(
    http_server: str, sandbox: Sandbox, mode: str
) -> None:
    """0.1 lost this answer in 2025-11-25 mode (the SDK client's 1 MiB event limit): an applied delete, no operation_id."""
    ids = [sandbox.add(f"+1555{i:07d}", "a long note about this robocaller " * 7)["Id"] for i in range(6_000)]
    headers = {"Authorization": f"Bearer {AUTH_TOKEN}"}
    async with httpx2.AsyncClient(headers=headers, timeout=120) as http:
        from mcp.client.streamable_http import streamable_http_client

        async with Client(
            streamable_http_client(f"{http_server}/mcp", http_client=http), mode=mode
        ) as client:
            result = await call_confirmed(client, "bulk_delete_blacklist_numbers", {"ids": ids})
    assert not result.is_error and result.structured_content is not None
    assert result.structured_content["deleted"] == 6_000 and result.structured_content["operation_id"]
    assert not set(ids) & set(sandbox.entries)


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"Authorization": "Bearer wrong"}, 401),
        ({"Authorization": f"Bearer {AUTH_TOKEN}", "Host": "evil.example.com"}, 421),
        ({"Authorization": f"Bearer {AUTH_TOKEN}", "Origin": "https://evil.example.com"}, 403),
    ],
)
async def test_http_refuses_unauthenticated_and_rebinding_requests(
    http_server: str, headers: dict[str, str], status: int
) -> None:
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
    base = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    async with httpx2.AsyncClient() as http:
        response = await http.post(f"{http_server}/mcp", json=body, headers=base | headers)
    assert response.status_code == status
    assert AUTH_TOKEN not in response.text


def test_binding_beyond_loopback_requires_a_token() -> None:
    settings = Settings.load(sandbox=True)
    from threecx_mcp.wiring import roster_for

    with pytest.raises(ConfigError, match="THREECX_MCP_AUTH_TOKEN"):
        http_app(settings, roster_for(settings), "0.0.0.0")
    protected = Settings.load(sandbox=True, mcp_auth_token=SecretStr(secrets.token_urlsafe(32)))
    assert isinstance(http_app(protected, roster_for(protected), "0.0.0.0"), RequireBearerToken)


def test_doctor_passes_on_the_sandbox_and_fails_with_a_fix(tmp_path: Path, sandbox_url: str) -> None:
    ok = run_console("doctor", "--sandbox", timeout=60)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert [line.split()[1] for line in ok.stdout.splitlines()[:-1]] == [
        "sources:",
        "sandbox:",
        "settings:",
        "journal:",
        "dns:",
        "tcp:",
        "scheme:",  # the sandbox is plain HTTP: doctor checks the port does not expect TLS
        "token:",
        "blacklist:",
    ]
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("THREECX_")}, **pbx_env(sandbox_url)}
    env["THREECX_CLIENT_SECRET"] = "wrong-key"
    bad = run_console("doctor", env=env, cwd=tmp_path, timeout=60)
    assert bad.returncode == 1
    assert (
        "FAIL  token" in bad.stdout
        and "3CX Configuration API" in bad.stdout
        and "wrong-key" not in bad.stdout
    )


async def test_tools_list_matches_the_committed_snapshot(make_server) -> None:  # type: ignore[no-untyped-def]
    """A schema change must be a deliberate diff: refresh with UPDATE_SNAPSHOTS=1."""

    async with Client(make_server()) as client:
        tools = (await client.list_tools()).tools
    current = [t.model_dump(mode="json", by_alias=True, exclude_none=True) for t in tools]
    if os.environ.get("UPDATE_SNAPSHOTS") == "1":
        SNAPSHOT.parent.mkdir(exist_ok=True)
        SNAPSHOT.write_text(json.dumps(current, indent=2, sort_keys=True) + "\n")
    assert current == json.loads(SNAPSHOT.read_text()), "tools/list changed: review, then UPDATE_SNAPSHOTS=1"
    for tool in current:
        hints = tool["annotations"]
        assert {"readOnlyHint", "destructiveHint", "idempotentHint", "openWorldHint", "title"} <= set(hints)
        assert tool["title"] and tool["description"] and "outputSchema" in tool


async def test_http_refuses_an_oversized_body(http_server: str) -> None:
    from mcp.server.transport_security import DEFAULT_MAX_REQUEST_BODY_SIZE

    body = (
        b'{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"pad":"'
        + b"x" * DEFAULT_MAX_REQUEST_BODY_SIZE
        + b'"}}'
    )
    headers = {
        "Accept": "application/json, text/event-stream",
        "Content-Type": "application/json",
        "Authorization": f"Bearer {AUTH_TOKEN}",
    }
    async with httpx2.AsyncClient() as http:
        response = await http.post(f"{http_server}/mcp", content=body, headers=headers)
    assert response.status_code == 413


def test_a_busy_port_is_a_clear_error() -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run_console(
            "--sandbox",
            "--transport",
            "http",
            "--port",
            str(port),
            env={**os.environ, "THREECX_JOURNAL": str(SUBPROCESS_JOURNAL)},
            timeout=60,
        )
    assert done.returncode == 2
    assert f"Cannot listen on 127.0.0.1:{port}" in done.stderr and "--port" in done.stderr
    assert "Traceback" not in done.stderr


def test_http_command_serves_what_it_announces(tmp_path: Path) -> None:
    import socket
    import time

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "THREECX_JOURNAL": str(tmp_path / "j.jsonl")}
    server = subprocess.Popen(
        [console_script(), "--sandbox", "--transport", "http", "--port", str(port)],
        env=env,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:
        announced = server.stderr.readline()  # type: ignore[union-attr]
        assert f"http://127.0.0.1:{port}/mcp" in announced
        deadline = time.monotonic() + 20

        async def session() -> int:
            async with Client(f"http://127.0.0.1:{port}/mcp") as client:
                page = await client.call_tool("list_blacklist_numbers", {"limit": 1})
                return page.structured_content["total"]  # type: ignore[index]

        import anyio

        while True:
            try:
                assert anyio.run(session) == 12
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
    finally:
        server.terminate()
        server.wait(timeout=20)


@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0"])
def test_a_short_auth_token_is_refused_with_how_to_make_one(host: str) -> None:
    short = "s3cr3t-" + "x" * 24  # 31 characters
    settings = Settings.load(sandbox=True, mcp_auth_token=SecretStr(short))
    from threecx_mcp.wiring import roster_for

    with pytest.raises(ConfigError) as refused:
        http_app(settings, roster_for(settings), host)
    message = refused.value.user_message()
    assert "THREECX_MCP_AUTH_TOKEN is 31 characters" in message and "at least 32" in message
    assert "secrets.token_urlsafe(32)" in message and short not in message
    enough = Settings.load(sandbox=True, mcp_auth_token=SecretStr(short + "x"))
    assert isinstance(http_app(enough, roster_for(enough), host), RequireBearerToken)


def test_the_command_refuses_a_short_token_without_a_traceback() -> None:
    done = run_console(
        "--sandbox",
        "--transport",
        "http",
        "--host",
        "0.0.0.0",
        "--port",
        "8765",
        env={**os.environ, "THREECX_JOURNAL": str(SUBPROCESS_JOURNAL), "THREECX_MCP_AUTH_TOKEN": "1"},
        timeout=60,
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "THREECX_MCP_AUTH_TOKEN is 1 characters" in done.stderr and "token_urlsafe" in done.stderr


BULK = "/xapi/v1/BlackListNumbers/Pbx.BulkNumbersDelete"
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "t", "version": "1"},
    },
}
INITIALIZED = {"jsonrpc": "2.0", "method": "notifications/initialized"}
PLAN = {
    "jsonrpc": "2.0",
    "id": 2,
    "method": "tools/call",
    "params": {"name": "bulk_delete_blacklist_numbers", "arguments": {"ids": ["4", "5"]}},
}


def applying(plan_answer: bytes) -> dict[str, object]:
    """The delete itself: the same ids with the plan_id the first call answered (no elicitation here)."""
    plan_id = re.search(rb'"plan_id":\s*"([0-9a-f]+)"', plan_answer)
    assert plan_id is not None, plan_answer[:300]
    arguments = {"ids": ["4", "5"], "plan_id": plan_id.group(1).decode()}
    return {**PLAN, "id": 3, "params": {"name": "bulk_delete_blacklist_numbers", "arguments": arguments}}


async def test_a_session_flood_on_loopback_does_not_lock_clients_out(pbx_settings: Settings) -> None:
    """0.1 kept a flood's sessions for 30 minutes and refused every new client meanwhile (503)."""
    import anyio
    from threecx_mcp.http_transport import MAX_SESSIONS
    from threecx_mcp.sandbox import LoopbackServer
    from threecx_mcp.wiring import roster_for

    settings = pbx_settings.model_copy(
        update={"mcp_auth_token": None}
    )  # loopback needs none: the flood's case
    headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    statuses: list[int] = []

    async def call(client: Client) -> int:
        page = await client.call_tool("list_blacklist_numbers", {"limit": 1})
        return page.structured_content["total"]  # type: ignore[no-any-return,index]

    with LoopbackServer(http_app(settings, roster_for(settings), "127.0.0.1")) as server:
        url = f"{server.url}/mcp"
        async with Client(url, mode="legacy") as early:  # a real client, connected before the flood
            assert await call(early) == 12

            async with httpx2.AsyncClient(timeout=60) as http:

                async def flood() -> None:
                    for _ in range(2 * MAX_SESSIONS // 50):
                        response = await http.post(url, json=INITIALIZE, headers=headers)
                        statuses.append(response.status_code)

                async with anyio.create_task_group() as group:
                    for _ in range(50):
                        group.start_soon(flood)
            assert set(statuses) == {200, 503}  # the cap was reached: new clients are refused for now

            deadline = anyio.current_time() + 60  # the flood's sessions expire in seconds, not 30 minutes
            while True:
                try:
                    async with Client(url, mode="legacy") as late:
                        assert await call(late) == 12
                    break
                except Exception:
                    if anyio.current_time() > deadline:
                        raise
                    await anyio.sleep(0.5)
            assert await call(early) == 12  # idle through all of it, yet its session was kept


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def begin_a_slow_delete_over_stdio(server: subprocess.Popen[bytes]) -> None:
    assert server.stdin is not None and server.stdout is not None
    for message in (INITIALIZE, INITIALIZED, PLAN):
        server.stdin.write(json.dumps(message).encode() + b"\n")
        server.stdin.flush()
        if message is INITIALIZE:
            assert b'"id":1' in server.stdout.readline()
    server.stdin.write(json.dumps(applying(server.stdout.readline())).encode() + b"\n")
    server.stdin.flush()
    # stdin stays open, as a client's does


def begin_a_slow_delete_over_http(server: subprocess.Popen[bytes], port: int) -> None:
    import threading
    import time

    assert server.stderr is not None and f":{port}/mcp" in server.stderr.readline().decode()
    url = f"http://127.0.0.1:{port}/mcp"
    headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    http = httpx2.Client(timeout=60)
    for attempt in range(200):  # announced once bound; uvicorn listens a moment later
        try:
            opened = http.post(url, json=INITIALIZE, headers=headers)
            break
        except httpx2.ConnectError:
            if attempt == 199:
                raise
            time.sleep(0.1)
    headers["Mcp-Session-Id"] = opened.headers["mcp-session-id"]
    headers["Mcp-Protocol-Version"] = "2025-11-25"
    http.post(url, json=INITIALIZED, headers=headers)

    def hold(method: str, **request: object) -> None:  # open until the server goes away
        try:
            with http.stream(method, url, headers=headers, **request) as response:  # type: ignore[arg-type]
                for _ in response.iter_bytes():
                    pass
        except httpx2.HTTPError:
            pass

    threading.Thread(target=hold, args=("GET",), daemon=True).start()  # a real client's event stream
    delete = applying(http.post(url, json=PLAN, headers=headers).content)
    threading.Thread(target=hold, args=("POST",), kwargs={"json": delete}, daemon=True).start()


@pytest.mark.parametrize("signal_name", ["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("transport", ["stdio", "http"])
def test_a_signal_mid_delete_stops_the_server_and_settles_the_journal(
    sandbox: Sandbox, sandbox_url: str, tmp_path: Path, transport: str, signal_name: str
) -> None:
    """0.1 on SIGINT over stdio: the delete was cancelled, then the process stayed, deaf, until stdin closed.

    On SIGTERM it died with the operation's record never closed."""
    import signal
    import time

    import anyio
    from threecx_mcp.config import PbxEndpoint
    from threecx_mcp.journal import Journal
    from threecx_mcp.sandbox.pbx import Fault

    from .support import assert_journal_matches_the_pbx

    sandbox.inject(Fault(path=BULK, delay=15, passthrough=True))  # the PBX has the request, and is slow
    env = {**os.environ, **pbx_env(sandbox_url), "THREECX_JOURNAL": str(tmp_path / "journal.sqlite3")}
    env.pop("THREECX_MCP_AUTH_TOKEN", None)
    port = free_port()
    over_http = ["--transport", "http", "--port", str(port)] if transport == "http" else []
    server = subprocess.Popen(
        [console_script(), *over_http],
        env=env,
        stdin=subprocess.DEVNULL if over_http else subprocess.PIPE,
        stdout=subprocess.DEVNULL if over_http else subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        if over_http:
            begin_a_slow_delete_over_http(server, port)
        else:
            begin_a_slow_delete_over_stdio(server)
        deadline = time.monotonic() + 30
        while sandbox.count("POST", BULK) == 0:  # the delete is in flight
            assert server.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        server.send_signal(getattr(signal, signal_name))
        server.wait(timeout=10)  # bounded well below the PBX's 15 s: the delete did not just finish
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    stderr = server.stderr.read().decode()  # type: ignore[union-attr]
    assert "Traceback" not in stderr and server.returncode == 0, stderr
    journal = Journal(tmp_path / "journal.sqlite3", PbxEndpoint.parse(sandbox_url).origin)

    async def settled() -> None:
        (operation,) = await journal.recent()
        assert operation.kind == "delete" and operation.outcome == "interrupted"
        assert {item.status for item in await journal.items(operation.operation_id)} == {"unknown"}
        await assert_journal_matches_the_pbx(journal, sandbox)

    anyio.run(settled)


async def test_two_server_processes_on_one_api_client_converge_on_one_token(
    sandbox: Sandbox, sandbox_url: str, tmp_path: Path
) -> None:
    """3CX keeps one token per API client: two servers minting their own would end each other's sessions
    (0.1: 204 mints in 895 calls). Through the shared token file in the state directory they mint once."""
    import stat

    import anyio

    env = pbx_env(sandbox_url) | {"THREECX_JOURNAL": str(tmp_path / "journal.sqlite3")}
    params = StdioServerParameters(command=console_script(), env=env)
    async with Client(params, mode="legacy") as first, Client(params, mode="legacy") as second:
        failures: list[str] = []

        async def call(client: Client) -> None:
            page = await client.call_tool("list_blacklist_numbers", {"limit": 1})
            if page.is_error:
                failures.append(str(page.content))

        for client in (first, second, first, second):  # alternating: each would re-mint without sharing
            await call(client)
        async with anyio.create_task_group() as group:
            for _ in range(8):
                group.start_soon(call, first)
                group.start_soon(call, second)
    assert failures == [] and sandbox.token_requests == 1
    (token_file,) = (tmp_path / "tokens").glob("*.json")
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(token_file.parent.stat().st_mode) == 0o700
    assert SANDBOX_CLIENT_SECRET not in token_file.read_text()


async def test_without_file_locking_each_process_keeps_its_own_token_and_says_so_once(
    sandbox: Sandbox,
    pbx_settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from threecx_mcp.wiring import roster_for

    settings = pbx_settings
    with monkeypatch.context() as windows:
        windows.setattr(sys, "platform", "win32")  # no fcntl there
        factory = roster_for(settings).pick(None).make_client
    for _ in range(2):
        async with factory() as client:
            assert await client.count() == 12
    said = [r for r in caplog.records if "cannot lock files" in r.getMessage()]
    assert len(said) == 1 and said[0].levelname == "WARNING"
    assert not (tmp_path / "tokens").exists() and sandbox.token_requests == 2
