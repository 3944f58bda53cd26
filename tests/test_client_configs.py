"""client_configs/: each file has its client's documented shape, points at our real entry point,
and really starts a working server; the MCP Inspector (a client we did not write) drives it."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from mcp import Client, StdioServerParameters
from threecx_mcp.cli import parse_args
from threecx_mcp.sandbox import Sandbox

from .support import AUTH_TOKEN, REPO, SUBPROCESS_JOURNAL, console_script
from .test_transports import pbx_env

pytestmark = pytest.mark.anyio
CONFIGS = REPO / "client_configs"
INSPECTOR_VERSION = "2.12.0"
# ${VAR}, ${env:VAR}, $VAR, ${input:id}, ${{ secrets.VAR }}: references, never values
REFERENCE = re.compile(r"\$\{\{\s*secrets\.\w+\s*\}\}|\$\{(?:env:|input:)?[\w-]+\}|\$\w+")
PLACEHOLDER = re.compile(r"/ABSOLUTE/PATH/TO/|YOUR[_-]|REPLACE_WITH_")


@dataclass(frozen=True)
class Entry:
    client: str
    name: str
    spec: dict[str, Any]


def load(relative: str) -> Any:
    path = CONFIGS / relative
    text = path.read_text()
    if path.suffix == ".toml":
        return tomllib.loads(text)
    if path.suffix == ".yaml":
        return yaml.safe_load(text)
    return json.loads(text)


def entries() -> list[Entry]:
    found = [
        Entry("claude-desktop", n, s)
        for n, s in load("claude-desktop/claude_desktop_config.json")["mcpServers"].items()
    ]
    found += [Entry("claude-code", n, s) for n, s in load("claude-code/.mcp.json")["mcpServers"].items()]
    found += [Entry("cursor", n, s) for n, s in load("cursor/.cursor/mcp.json")["mcpServers"].items()]
    found += [Entry("vscode", n, s) for n, s in load("vscode/.vscode/mcp.json")["servers"].items()]
    found += [Entry("windsurf", n, s) for n, s in load("windsurf/mcp_config.json")["mcpServers"].items()]
    found += [Entry("zed", n, s) for n, s in load("zed/settings.json")["context_servers"].items()]
    found += [Entry("cline", n, s) for n, s in load("cline/cline_mcp_settings.json")["mcpServers"].items()]
    found += [Entry("codex", n, s) for n, s in load("codex/config.toml")["mcp_servers"].items()]
    found += [Entry("gemini-cli", n, s) for n, s in load("gemini-cli/settings.json")["mcpServers"].items()]
    found += [
        Entry("continue", s["name"], s)
        for s in load("continue/.continue/mcpServers/threecx.yaml")["mcpServers"]
    ]
    return found


STDIO = [e for e in entries() if "command" in e.spec]
HTTP = [e for e in entries() if "command" not in e.spec]


def test_every_client_has_a_stdio_a_uvx_and_where_supported_an_http_entry() -> None:
    clients = {e.client for e in entries()}
    assert len(clients) == 10
    for client in clients:
        names = {e.name for e in entries() if e.client == client}
        assert {"threecx", "threecx-uvx"} <= names, client
    assert {e.client for e in HTTP} == clients - {"claude-desktop", "zed"}


def test_files_match_their_clients_documented_shapes() -> None:
    vscode = load("vscode/.vscode/mcp.json")
    assert all(s["type"] in ("stdio", "http") for s in vscode["servers"].values())
    assert any(i.get("password") is True and i["type"] == "promptString" for i in vscode["inputs"])
    ids = {i["id"] for i in vscode["inputs"]}
    used = set(re.findall(r"\$\{input:([\w-]+)\}", json.dumps(vscode["servers"])))
    assert used <= ids
    continue_file = load("continue/.continue/mcpServers/threecx.yaml")
    assert {"name", "version", "schema"} <= set(continue_file) and continue_file["schema"] == "v1"
    http_keys = {
        "claude-code": "url",
        "cursor": "url",
        "vscode": "url",
        "windsurf": "serverUrl",
        "cline": "url",
        "codex": "url",
        "gemini-cli": "httpUrl",
        "continue": "url",
    }
    for entry in HTTP:
        assert entry.spec[http_keys[entry.client]] == "http://127.0.0.1:8000/mcp", entry
    assert next(e for e in HTTP if e.client == "cline").spec["type"] == "streamableHttp"
    assert (
        next(e for e in HTTP if e.client == "codex").spec["bearer_token_env_var"] == "THREECX_MCP_AUTH_TOKEN"
    )
    assert all(e.spec["source"] == "custom" for e in entries() if e.client == "zed")
    assert all(e.spec["type"] in ("stdio", "streamable-http") for e in entries() if e.client == "continue")


@pytest.mark.parametrize("entry", entries(), ids=lambda e: f"{e.client}:{e.name}")
def test_no_config_holds_a_literal_secret(entry: Entry) -> None:
    env = entry.spec.get("env", {})
    secret = env.get("THREECX_CLIENT_SECRET")
    if secret is not None:
        assert REFERENCE.fullmatch(secret), f"{entry.client}:{entry.name} holds a literal API key"
    elif "command" in entry.spec and entry.client != "codex":
        assert PLACEHOLDER.search(env["THREECX_CLIENT_SECRET_FILE"])
    headers = entry.spec.get("headers") or entry.spec.get("requestOptions", {}).get("headers", {})
    for value in headers.values():
        assert REFERENCE.search(value) or PLACEHOLDER.search(value)
    if entry.client == "codex" and "command" in entry.spec:
        assert "THREECX_CLIENT_SECRET" in entry.spec["env_vars"]


def launch(entry: Entry) -> tuple[str, list[str]]:
    """The command a client would run, with our real console script standing in for the placeholder path."""
    command, args = entry.spec["command"], list(entry.spec.get("args", []))
    if command == "uvx":
        assert args[:2] == ["--from", "/ABSOLUTE/PATH/TO/threecx-mcp"] and args[2] == "threecx-mcp"
        args = args[3:]
    else:
        assert Path(command).name == "threecx-mcp", command
    return console_script(), args


@pytest.mark.parametrize("entry", STDIO, ids=lambda e: f"{e.client}:{e.name}")
def test_command_and_args_are_our_real_entry_point(entry: Entry) -> None:
    _, args = launch(entry)
    options = parse_args(args)  # a renamed or removed flag makes argparse exit: no drift
    assert options.command == "serve" and options.transport == "stdio"


@pytest.mark.parametrize("entry", STDIO, ids=lambda e: f"{e.client}:{e.name}")
async def test_each_stdio_config_starts_a_working_server(entry: Entry) -> None:
    command, args = launch(entry)
    env = {k: REFERENCE.sub("unused", str(v)) for k, v in entry.spec.get("env", {}).items()}
    env["THREECX_SANDBOX"] = "true"
    env["THREECX_JOURNAL"] = str(SUBPROCESS_JOURNAL)
    async with Client(StdioServerParameters(command=command, args=args, env=env)) as client:
        names = {t.name for t in (await client.list_tools()).tools}
        assert {"list_blacklist_numbers", "get_blacklist_number"} <= names
        page = await client.call_tool("list_blacklist_numbers", {"limit": 2})
        assert not page.is_error and page.structured_content["total"] == 12  # type: ignore[index]


# -- the MCP Inspector CLI ----------------------------------------------------------------------


@pytest.fixture(scope="session")
def inspector() -> Iterator[str]:
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip("INSPECTOR NOT RUN: npm is not installed on this machine")
    prefix = REPO / ".cache" / "inspector"
    binary = prefix / "node_modules" / ".bin" / "mcp-inspector"
    if not binary.exists():
        subprocess.run(
            [
                npm,
                "install",
                "--prefix",
                str(prefix),
                "--no-audit",
                "--no-fund",
                "--loglevel=error",
                f"@modelcontextprotocol/inspector@{INSPECTOR_VERSION}",
            ],
            check=True,
            timeout=600,
            stdin=subprocess.DEVNULL,
        )
    yield str(binary)


def inspect(binary: str, *args: str) -> dict[str, Any]:
    done = subprocess.run(
        [binary, "--cli", *args], capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout)


def test_inspector_over_stdio(inspector: str, sandbox: Sandbox, sandbox_url: str) -> None:
    env = [arg for name, value in pbx_env(sandbox_url).items() for arg in ("-e", f"{name}={value}")]
    target = ["--transport", "stdio", *env, console_script()]
    tools = inspect(inspector, *target, "--method", "tools/list")
    assert {t["name"] for t in tools["tools"]} >= {"update_blacklist_number", "bulk_delete_blacklist_numbers"}
    updated = inspect(
        inspector,
        *target,
        "--method",
        "tools/call",
        "--tool-name",
        "update_blacklist_number",
        "--tool-arg",
        "id=1",
        "description=set by the Inspector",
    )
    assert updated["structuredContent"]["changed_fields"] == ["description"]
    assert sandbox.entries["1"]["Description"] == "set by the Inspector"
    deleted = delete_as_the_user_agreed(inspector, target, 'ids=["1", "2", "nope"]', sandbox)
    assert [r["status"] for r in deleted["structuredContent"]["results"]] == [
        "deleted",
        "deleted",
        "not_found",
    ]
    assert "1" not in sandbox.entries


def test_inspector_over_http(inspector: str, sandbox: Sandbox, http_server: str) -> None:
    target = [f"{http_server}/mcp", "--transport", "http", "--header", f"Authorization: Bearer {AUTH_TOKEN}"]
    tools = inspect(inspector, *target, "--method", "tools/list")
    assert len(tools["tools"]) == 10
    updated = inspect(
        inspector,
        *target,
        "--method",
        "tools/call",
        "--tool-name",
        "update_blacklist_number",
        "--tool-arg",
        "id=3",
        "caller_id=+49 30 1234 5678",
    )
    assert updated["structuredContent"]["entry"]["caller_id"] == "+493012345678"
    deleted = delete_as_the_user_agreed(inspector, target, 'ids=["3"]', sandbox)
    assert deleted["structuredContent"]["deleted"] == 1 and "3" not in sandbox.entries


def delete_as_the_user_agreed(
    inspector: str, target: list[str], ids: str, sandbox: Sandbox
) -> dict[str, Any]:
    """The Inspector cannot ask the user: its first call gets a plan, the second applies it (over stdio in
    a new server process, so the plan must be found on disk)."""
    delete = [
        *target,
        "--method",
        "tools/call",
        "--tool-name",
        "bulk_delete_blacklist_numbers",
        "--tool-arg",
        ids,
    ]
    before = dict(sandbox.entries)
    planned = inspect(inspector, *delete)
    assert planned["structuredContent"]["outcome"] == "awaiting_confirmation" and sandbox.entries == before
    answer: dict[str, Any] = inspect(
        inspector, *delete, "--tool-arg", f"plan_id={planned['structuredContent']['plan_id']}"
    )
    return answer


def test_claude_mcp_add_command_line() -> None:
    import shlex

    script = (CONFIGS / "claude-code" / "claude-mcp-add.sh").read_text()
    words = shlex.split(
        " ".join(line.rstrip("\\") for line in script.splitlines() if not line.startswith("#"))
    )
    assert words[:4] == ["claude", "mcp", "add", "threecx"]
    separator = words.index("--")
    env = [words[i + 1] for i, word in enumerate(words[:separator]) if word == "-e"]
    assert all(REFERENCE.search(pair.split("=", 1)[1]) for pair in env)
    assert {pair.split("=", 1)[0] for pair in env} == {
        "THREECX_URL",
        "THREECX_CLIENT_ID",
        "THREECX_CLIENT_SECRET",
    }
    assert words[separator + 1] == "threecx-mcp"
    assert parse_args(words[separator + 2 :]).transport == "stdio"
