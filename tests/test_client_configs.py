"""client_configs/: each file has its client's documented shape, names only settings the server reads,
holds no secret, and each stdio entry starts a working server when launched the way a desktop app
launches it: by its absolute path, with nothing inherited but PATH=/usr/bin:/bin (so no ~/.local/bin,
no pyenv or Homebrew) plus the entry's own env. The MCP Inspector (a client we did not write) drives
the server too."""

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

import mcp.client.stdio
import pytest
import yaml
from mcp import Client, StdioServerParameters
from threecx_mcp.cli import parse_args
from threecx_mcp.config import CONFIG_DIR_VARIABLE, ENV_PREFIX, Settings
from threecx_mcp.sandbox import SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET, Sandbox

from .support import AUTH_TOKEN, REPO, SUBPROCESS_JOURNAL, console_script
from .test_transports import pbx_env

pytestmark = pytest.mark.anyio
CONFIGS = REPO / "client_configs"
CLAUDE_MCP_ADD = CONFIGS / "claude-code" / "claude-mcp-add.sh"
INSPECTOR_VERSION = "2.12.0"
# What a desktop app started from the dock or start menu has on PATH: the system's folders only.
DESKTOP_PATH = "/usr/bin:/bin"
# ${VAR}, ${env:VAR}, $VAR, ${input:id}, ${{ secrets.VAR }}: references, never values
REFERENCE = re.compile(r"\$\{\{\s*secrets\.\w+\s*\}\}|\$\{(?:env:|input:)?[\w-]+\}|\$\w+")
PLACEHOLDER = re.compile(r"/ABSOLUTE/PATH/TO/|YOUR[_-]|REPLACE_WITH_")
COMMAND_PLACEHOLDER = "/ABSOLUTE/PATH/TO/threecx-mcp/.venv/bin/threecx-mcp"
SETTINGS = {ENV_PREFIX + name.upper() for name in Settings.model_fields}
SECRET_SETTINGS = {"THREECX_CLIENT_SECRET", "THREECX_MCP_AUTH_TOKEN"}
# How API keys and bearer tokens look: a run of 20+ token characters mixing digits and letters.
OPAQUE_RUN = re.compile(r"[A-Za-z0-9+/=_-]{20,}")


def secret_looking(text: str) -> list[str]:
    return [
        run
        for run in OPAQUE_RUN.findall(text)
        if sum(c.isdigit() for c in run) >= 2 and sum(c.isalpha() for c in run) >= 2
    ]


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


def entry_id(entry: Entry) -> str:
    return f"{entry.client}:{entry.name}"


def test_every_client_has_a_stdio_and_where_supported_an_http_entry() -> None:
    clients = {e.client for e in entries()}
    assert len(clients) == 10
    assert sorted(e.client for e in STDIO if e.name == "threecx") == sorted(clients)
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


@pytest.mark.parametrize("entry", STDIO, ids=entry_id)
def test_every_command_is_an_absolute_path_and_every_variable_a_setting(entry: Entry) -> None:
    """A bare `threecx-mcp` or `uvx` is not found by an app started from the desktop ("spawn ENOENT")."""
    assert entry.spec["command"] == COMMAND_PLACEHOLDER, entry_id(entry)
    named = set(entry.spec.get("env", {})) | set(entry.spec.get("env_vars", []))
    assert named <= SETTINGS, f"{entry_id(entry)} names variables the server never reads: {named - SETTINGS}"
    options = parse_args(
        entry.spec.get("args", [])
    )  # a renamed or removed flag makes argparse exit: no drift
    assert options.command == "serve" and options.transport == "stdio"


# -- no secret in any file, on any command line ---------------------------------------------------


def test_the_secret_detector_sees_keys_and_tokens() -> None:
    """So that the next test can fail: what an API key or bearer token pasted into a file looks like."""
    assert secret_looking(f"Authorization: Bearer {AUTH_TOKEN}")
    assert secret_looking('"THREECX_CLIENT_SECRET": "kQ3v9Zr0TbX2yW8nLp5s"')
    assert not secret_looking(f'"command": "{COMMAND_PLACEHOLDER}"')


@pytest.mark.parametrize(
    "path", sorted(p for p in CONFIGS.rglob("*") if p.is_file()), ids=lambda p: str(p.relative_to(CONFIGS))
)
def test_no_file_holds_a_secret_looking_value(path: Path) -> None:
    assert secret_looking(path.read_text()) == [], path


@pytest.mark.parametrize("entry", entries(), ids=entry_id)
def test_secrets_are_references_files_or_forwarded_never_values(entry: Entry) -> None:
    env = entry.spec.get("env", {})
    for name in SECRET_SETTINGS & set(env):
        assert REFERENCE.fullmatch(env[name]), f"{entry_id(entry)} holds a literal {name}"
    if "command" in entry.spec:
        assert (
            "THREECX_CLIENT_SECRET" in env
            or PLACEHOLDER.search(env.get("THREECX_CLIENT_SECRET_FILE", ""))
            or "THREECX_CLIENT_SECRET" in entry.spec.get("env_vars", [])
        ), f"{entry_id(entry)} gives the server no way to the API key"
        assert not any(secret_looking(arg) for arg in [entry.spec["command"], *entry.spec.get("args", [])])
    headers = entry.spec.get("headers") or entry.spec.get("requestOptions", {}).get("headers", {})
    for value in headers.values():
        scheme, _, credential = value.partition(" ")
        assert scheme == "Bearer" and (REFERENCE.fullmatch(credential) or PLACEHOLDER.search(credential))


# -- each stdio entry, filled in as its user would, started as a desktop app starts it -------------


@pytest.fixture
def user_values(sandbox_url: str, tmp_path: Path) -> dict[str, str]:
    """What a user puts in place of each placeholder or reference: here the sandbox PBX's address and
    credentials, the API key also in a file for the entries that read it from one."""
    key_file = tmp_path / "threecx-api-key.txt"
    key_file.write_text(SANDBOX_CLIENT_SECRET + "\n")
    return {
        "THREECX_URL": sandbox_url,
        "THREECX_CLIENT_ID": SANDBOX_CLIENT_ID,
        "THREECX_CLIENT_SECRET": SANDBOX_CLIENT_SECRET,
        "THREECX_CLIENT_SECRET_FILE": str(key_file),
    }


def filled_in(entry: Entry, values: dict[str, str]) -> tuple[str, dict[str, str]]:
    """The entry's command and env once its user has replaced the placeholders and the client has
    resolved its references (Codex forwards the `env_vars` from its own environment)."""
    env = {
        name: values[name] if REFERENCE.fullmatch(value) or PLACEHOLDER.search(value) else value
        for name, value in entry.spec.get("env", {}).items()
    }
    env |= {name: values[name] for name in entry.spec.get("env_vars", [])}
    return entry.spec["command"].replace(COMMAND_PLACEHOLDER, console_script()), env


async def session_with_a_bare_environment(
    command: str, args: list[str], env: dict[str, str], folder: Path, monkeypatch: pytest.MonkeyPatch
) -> set[str]:
    """Start the server with exactly PATH=/usr/bin:/bin plus `env`, in an empty working folder,
    complete an MCP session over stdio and read the PBX once. The SDK's stdio client would otherwise
    pass on this process's HOME, USER and PATH. Two more variables keep the test off this machine's
    user folders: the journal goes to the tests' folder, and no user-wide .env is read."""
    monkeypatch.setattr(mcp.client.stdio, "get_default_environment", dict)
    isolated = {"THREECX_JOURNAL": str(SUBPROCESS_JOURNAL), CONFIG_DIR_VARIABLE: str(folder)}
    bare = {"PATH": DESKTOP_PATH, **env, **isolated}
    params = StdioServerParameters(command=command, args=args, env=bare, cwd=folder)
    async with Client(params, mode="legacy") as client:  # legacy: the initialize handshake
        names = {t.name for t in (await client.list_tools()).tools}
        page = await client.call_tool("list_blacklist_numbers", {"limit": 2})
        assert not page.is_error and page.structured_content["total"] == 12  # type: ignore[index]
    return names


@pytest.mark.parametrize("entry", STDIO, ids=entry_id)
async def test_each_stdio_entry_starts_with_only_a_system_path(
    entry: Entry, user_values: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    command, env = filled_in(entry, user_values)
    names = await session_with_a_bare_environment(
        command, entry.spec.get("args", []), env, tmp_path, monkeypatch
    )
    assert {"list_blacklist_numbers", "bulk_delete_blacklist_numbers"} <= names
    assert set(entry.spec.get("autoApprove", [])) <= names


# -- claude-code/claude-mcp-add.sh ----------------------------------------------------------------


def run_claude_mcp_add(
    tmp_path: Path, env: dict[str, str], *args: str, on_path: bool = True
) -> tuple[subprocess.CompletedProcess[str], list[str] | None]:
    """Run the script as a user would in a shell, with a stand-in `claude` that only records its
    arguments: what it would store in ~/.claude.json, and what `ps` would show."""
    record = tmp_path / "claude-argv"
    fake = tmp_path / "bin" / "claude"
    fake.parent.mkdir(exist_ok=True)
    fake.write_text(f"#!/bin/sh\nprintf '%s\\0' \"$@\" > '{record}'\n")
    fake.chmod(0o755)
    path = [str(fake.parent), *([str(Path(console_script()).parent)] if on_path else []), DESKTOP_PATH]
    done = subprocess.run(
        ["/bin/sh", str(CLAUDE_MCP_ADD), *args],
        env={"PATH": ":".join(path), **env},
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )
    return done, (record.read_text().split("\0")[:-1] if record.exists() else None)


async def test_claude_mcp_add_registers_an_absolute_command_without_the_api_key(
    user_values: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    done, argv = run_claude_mcp_add(tmp_path, user_values)  # the key is in the shell too: it stays there
    assert done.returncode == 0 and argv is not None, done.stderr
    separator = argv.index("--")
    assert argv[:5] == ["mcp", "add", "threecx", "--scope", "user"]
    assert argv[separator + 1 :] == [console_script()]
    pairs = dict(argv[i + 1].split("=", 1) for i in range(5, separator) if argv[i] == "-e")
    assert set(pairs) == {"THREECX_URL", "THREECX_CLIENT_ID", "THREECX_CLIENT_SECRET_FILE"}
    assert SANDBOX_CLIENT_SECRET not in "\0".join(argv)
    names = await session_with_a_bare_environment(argv[separator + 1], [], pairs, tmp_path, monkeypatch)
    assert {"list_blacklist_numbers", "bulk_delete_blacklist_numbers"} <= names


@pytest.mark.parametrize(
    ("args", "env", "on_path", "said"),
    [
        ((), {}, False, "threecx-mcp is not on your PATH"),
        (("threecx-mcp",), {}, True, "threecx-mcp is not an absolute path"),
        (("/nonexistent/threecx-mcp",), {}, True, "/nonexistent/threecx-mcp is not an executable file"),
        ((), {"THREECX_CLIENT_SECRET": SANDBOX_CLIENT_SECRET}, True, "set THREECX_CLIENT_SECRET_FILE="),
        ((), {"THREECX_CLIENT_SECRET_FILE": "api-key.txt"}, True, "must be an absolute path"),
    ],
    ids=["not-on-path", "relative-command", "missing-command", "key-but-no-file", "relative-key-file"],
)
def test_claude_mcp_add_refuses_what_would_not_start_or_would_expose_the_key(
    tmp_path: Path, args: tuple[str, ...], env: dict[str, str], on_path: bool, said: str
) -> None:
    done, argv = run_claude_mcp_add(tmp_path, env, *args, on_path=on_path)
    assert done.returncode == 2 and argv is None, done.stderr
    assert said in done.stderr and SANDBOX_CLIENT_SECRET not in done.stderr


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
