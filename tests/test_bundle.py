"""The Claude Desktop bundle (bundle/): the MCPB CLI accepts its manifest, the manifest agrees with the
server and pyproject.toml, and the packed bundle, unpacked, starts as its manifest says and serves."""

from __future__ import annotations

import json
import os
import re
import runpy
import shutil
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, StdioServerParameters
from threecx_mcp.config import ENV_PREFIX, Settings
from threecx_mcp.sandbox import SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET, Sandbox
from threecx_mcp.server import BlacklistServer
from uv import find_uv_bin

from .support import REPO

pytestmark = pytest.mark.anyio
BUNDLE = REPO / "bundle"
MANIFEST: dict[str, Any] = json.loads((BUNDLE / "manifest.json").read_text(encoding="utf-8"))
MCPB = runpy.run_path(str(BUNDLE / "build.py"))["MCPB"]  # the CLI version the build uses
SECRET_VARIABLE = f"{ENV_PREFIX}CLIENT_SECRET"


@pytest.fixture
def npx() -> str:
    found = shutil.which("npx")
    if found is None:
        pytest.skip(
            "NOT CHECKED: the Claude Desktop bundle. npx (Node.js) is not installed, so the MCPB CLI "
            "cannot validate or pack it; install Node.js 18 or later to run these tests."
        )
    return found


def user_config_variable(key: str) -> str:
    """The environment variable that receives user_config.KEY."""
    (variable,) = [
        name
        for name, value in MANIFEST["server"]["mcp_config"]["env"].items()
        if value == f"${{user_config.{key}}}"
    ]
    return str(variable)


def test_the_mcpb_cli_accepts_the_manifest(npx: str, tmp_path: Path) -> None:
    done = subprocess.run(
        [npx, "--yes", MCPB, "validate", str(BUNDLE / "manifest.json")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        timeout=180,
    )
    assert done.returncode == 0 and "validation passes" in done.stdout, done.stdout + done.stderr
    assert (
        MANIFEST["manifest_version"] == "0.4"
    )  # the only version with server type "uv"; the CLI demands one


def test_the_manifest_names_the_project_and_its_version() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert (MANIFEST["name"], MANIFEST["version"]) == (project["name"], project["version"])
    assert MANIFEST["repository"]["url"] == project["urls"]["Repository"]
    assert MANIFEST["server"]["type"] == "uv"
    # `uv run <script>` starts the project's console script, so it must be one pyproject declares.
    assert MANIFEST["server"]["mcp_config"]["args"][-1] in project["scripts"]
    assert (REPO / MANIFEST["server"]["entry_point"]).is_file()


async def test_the_manifest_lists_the_servers_tools(make_server: Callable[..., BlacklistServer]) -> None:
    async with Client(make_server()) as client:
        tools = (await client.list_tools()).tools
    assert [tool["name"] for tool in MANIFEST["tools"]] == [tool.name for tool in tools]
    # Each description is the first line of the server's own, so the two cannot drift apart.
    assert [tool["description"] for tool in MANIFEST["tools"]] == [
        (tool.description or "").split("\n")[0] for tool in tools
    ]


def test_user_config_maps_to_real_settings_and_keeps_the_api_key_secret() -> None:
    options = MANIFEST["user_config"]
    env = MANIFEST["server"]["mcp_config"]["env"]
    settings = {f"{ENV_PREFIX}{name.upper()}" for name in Settings.model_fields}
    assert set(env) <= settings, "every variable the bundle sets is one the server reads"
    assert {user_config_variable(key) for key in options} == set(env)
    for key in ("THREECX_URL", "THREECX_CLIENT_ID", SECRET_VARIABLE):
        assert any(user_config_variable(k) == key and options[k].get("required") for k in options), key
    for key, option in options.items():
        if option.get("sensitive"):
            assert "default" not in option, f"the secret {key} has a default value"
        elif not option.get("required"):
            # An optional setting left unset would otherwise reach the server as the literal placeholder.
            assert "default" in option, key
    (secret,) = [key for key in options if user_config_variable(key) == SECRET_VARIABLE]
    assert options[secret]["sensitive"] is True and options[secret]["type"] == "string"


def as_claude_desktop_fills(options: Mapping[str, Any], given: Mapping[str, str]) -> dict[str, str]:
    """user_config values as Claude Desktop substitutes them: what the user gave, else the default,
    booleans as true/false."""
    filled = {key: given.get(key, option.get("default")) for key, option in options.items()}
    return {
        key: json.dumps(value) if isinstance(value, bool) else str(value) for key, value in filled.items()
    }


def substitute(text: str, values: Mapping[str, str]) -> str:
    """Replace each ${NAME}; a placeholder the host would not know fails here (KeyError)."""
    return re.sub(r"\$\{([^}]+)\}", lambda match: values[match.group(1)], text)


@pytest.fixture
def unpacked(npx: str, tmp_path: Path) -> Path:
    """The bundle as `python bundle/build.py` packs it, unpacked as Claude Desktop installs it."""
    bundle = tmp_path / "threecx-mcp.mcpb"
    built = subprocess.run(
        [sys.executable, str(BUNDLE / "build.py"), str(bundle)],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=180,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    folder = tmp_path / "unpacked"
    with zipfile.ZipFile(bundle) as archive:
        archive.extractall(folder)
    return folder


async def test_the_packed_bundle_starts_as_its_manifest_says(
    unpacked: Path, sandbox: Sandbox, sandbox_url: str, tmp_path: Path
) -> None:
    manifest = json.loads((unpacked / "manifest.json").read_text(encoding="utf-8"))
    assert manifest == MANIFEST
    assert not list(unpacked.rglob("__pycache__")) and not (unpacked / ".venv").exists()

    # What the user types into Claude Desktop's settings for the extension: here, the loopback sandbox's.
    typed = {"pbx_url": sandbox_url, "client_id": SANDBOX_CLIENT_ID, "api_key": SANDBOX_CLIENT_SECRET}
    filled = as_claude_desktop_fills(manifest["user_config"], typed)
    values = {f"user_config.{key}": value for key, value in filled.items()} | {"__dirname": str(unpacked)}
    config = manifest["server"]["mcp_config"]
    # Claude Desktop runs a uv of its own in place of `command` and passes `args` unchanged; here it is
    # the uv pinned in the test extras. The host provides Python, so uv must not download one.
    assert config["command"] == "uv"
    # Around the manifest's variables: this machine's environment, less any setting of the developer's
    platform = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX) and k != "VIRTUAL_ENV"}
    env = platform | {name: substitute(value, values) for name, value in config["env"].items()}
    # own; state and a user .env go to this test's folders.
    env |= {
        "THREECX_JOURNAL": str(tmp_path / "state" / "journal.sqlite3"),
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "UV_PYTHON": sys.executable,
        "UV_PYTHON_DOWNLOADS": "never",
    }
    params = StdioServerParameters(
        command=find_uv_bin(), args=[substitute(arg, values) for arg in config["args"]], env=env, cwd=tmp_path
    )
    with anyio.fail_after(240):  # the first start installs the dependencies from PyPI
        async with Client(params, mode="legacy") as client:
            tools = [tool.name for tool in (await client.list_tools()).tools]
            found = await client.call_tool("list_blacklist_numbers", {"search": "eremy"})
    assert tools == [tool["name"] for tool in manifest["tools"]]
    assert not found.is_error and found.structured_content is not None, found.content
    assert [entry["id"] for entry in found.structured_content["entries"]] == ["4"]
    # The server ran from the bundle's own environment, which uv made beside the manifest.
    assert (unpacked / ".venv").is_dir()
