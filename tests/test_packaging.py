"""The package as users get it: the wheel and sdist `python -m build` makes, installed into a fresh
virtualenv and started as an MCP client starts it; and `server.json`, the server's entry for the MCP
Registry, checked against the registry's schema and against what the package really is."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import tomllib
import typing
import zipfile
from dataclasses import dataclass
from email.message import Message
from email.parser import HeaderParser
from pathlib import Path

import pytest
from jsonschema import Draft7Validator, FormatChecker
from mcp import Client, StdioServerParameters
from packaging.version import Version
from pydantic import SecretStr, TypeAdapter
from threecx_mcp.config import ENV_PREFIX, Settings
from threecx_mcp.sandbox import SEED_ENTRIES
from threecx_mcp.server import BlacklistServer

from .support import REPO

PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
SERVER_JSON = json.loads((REPO / "server.json").read_text(encoding="utf-8"))
SCHEMA_URL = "https://static.modelcontextprotocol.io/schemas/2025-12-11/server.schema.json"
SCHEMA = REPO.parent / "shared" / "mcp-registry" / "server.schema.json"
TOOL_NAMES = [
    tool["name"] for tool in json.loads((REPO / "tests" / "snapshots" / "tools_list.json").read_text())
]
PACKAGE = REPO / "server" / "threecx_mcp"
# What building needs besides the package; PKG-INFO is the sdist's metadata, .gitignore hatchling's.
SDIST_EXTRAS = {"pyproject.toml", "README.md", "LICENSE", "PKG-INFO", ".gitignore"}


@dataclass(frozen=True)
class Dist:
    wheel: Path
    sdist: Path


def run(
    *words: str | Path, timeout: float = 300, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(w) for w in words], capture_output=True, text=True, timeout=timeout, cwd=cwd)


def package_files() -> set[str]:
    """The package in the source tree, as the wheel names it (threecx_mcp/...)."""
    return {
        path.relative_to(PACKAGE.parent).as_posix()
        for path in PACKAGE.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Dist:
    """`python -m build`: the sdist from the tree, then the wheel from the unpacked sdist, so a wheel
    proves the sdist holds everything building needs."""
    out = tmp_path_factory.mktemp("dist")
    done = run(sys.executable, "-m", "build", "--outdir", out, REPO)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (wheel,) = out.glob("*.whl")
    (sdist,) = out.glob("*.tar.gz")
    return Dist(wheel, sdist)


@pytest.fixture(scope="module")
def installed(dist: Dist, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv holding only the wheel and its dependencies (from the package index); its
    scripts folder."""
    venv = tmp_path_factory.mktemp("venv")
    done = run(sys.executable, "-m", "venv", venv)
    assert done.returncode == 0, done.stderr
    scripts = venv / ("Scripts" if os.name == "nt" else "bin")
    done = run(scripts / "python", "-m", "pip", "install", "-q", "--disable-pip-version-check", dist.wheel)
    assert done.returncode == 0, done.stderr[-3000:]
    return scripts


def dist_info() -> str:
    return f"threecx_mcp-{PROJECT['version']}.dist-info"


def wheel_names(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as archive:
        return set(archive.namelist())


def wheel_text(wheel: Path, member: str) -> str:
    with zipfile.ZipFile(wheel) as archive:
        return archive.read(member).decode("utf-8")


def wheel_metadata(wheel: Path) -> Message:
    return HeaderParser().parsestr(wheel_text(wheel, f"{dist_info()}/METADATA"))


def test_wheel_and_sdist_pass_twine_check_strict(dist: Dist) -> None:
    done = run(sys.executable, "-m", "twine", "check", "--strict", dist.wheel, dist.sdist)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("PASSED") == 2


def test_wheel_passes_check_wheel_contents(dist: Dist) -> None:
    done = run(sys.executable, "-m", "check_wheel_contents", dist.wheel)
    assert done.returncode == 0 and done.stdout.strip().endswith("OK"), done.stdout + done.stderr


def test_the_wheel_holds_the_whole_package_its_license_and_metadata(dist: Dist) -> None:
    names, metadata = wheel_names(dist.wheel), wheel_metadata(dist.wheel)
    assert {name for name in names if not name.startswith(dist_info() + "/")} == package_files()
    assert "threecx_mcp/py.typed" in names
    assert f"{dist_info()}/licenses/LICENSE" in names and metadata["License-File"] == "LICENSE"
    assert metadata["License-Expression"] == PROJECT["license"] == "MIT"
    urls = dict(url.split(", ", 1) for url in metadata.get_all("Project-URL"))
    assert urls == PROJECT["urls"] and urls["Repository"] == SERVER_JSON["repository"]["url"]
    assert "threecx-mcp = threecx_mcp.cli:main" in wheel_text(dist.wheel, f"{dist_info()}/entry_points.txt")


def test_the_sdist_ships_what_building_needs_and_nothing_else(dist: Dist) -> None:
    with tarfile.open(dist.sdist) as archive:
        files = {member.name.split("/", 1)[1] for member in archive.getmembers() if member.isfile()}
    assert {f"server/{name}" for name in package_files()} | {
        "pyproject.toml",
        "README.md",
        "LICENSE",
    } <= files
    strays = {name for name in files - SDIST_EXTRAS if not name.startswith("server/threecx_mcp/")}
    assert not strays, f"the sdist ships files building does not need: {sorted(strays)}"
    assert not [name for name in files if "__pycache__" in name or name.endswith(".pyc")]


def test_the_installed_wheel_runs_from_the_virtualenv(installed: Path, tmp_path: Path) -> None:
    done = run(installed / "python", "-c", "import threecx_mcp; print(threecx_mcp.__file__)", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()).is_relative_to(installed.parent), "the package must come from the venv"


def test_version_comes_from_the_package_metadata(installed: Path, tmp_path: Path) -> None:
    done = run(installed / "threecx-mcp", "--version", cwd=tmp_path, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"threecx-mcp {PROJECT['version']}"


@pytest.mark.anyio
async def test_the_installed_wheel_completes_an_mcp_session_over_stdio(
    installed: Path, tmp_path: Path
) -> None:
    params = StdioServerParameters(
        command=str(installed / "threecx-mcp"),
        args=["--sandbox"],
        env={"THREECX_JOURNAL": str(tmp_path / "journal.sqlite3")},
        cwd=tmp_path,
    )
    async with Client(params) as client:
        assert [tool.name for tool in (await client.list_tools()).tools] == TOOL_NAMES
        result = await client.call_tool("get_blacklist_number", {"id": "4"})
    assert not result.is_error
    assert result.structured_content == {
        "id": "4",
        "caller_id": SEED_ENTRIES[3][0],
        "description": SEED_ENTRIES[3][1],
    }


def test_server_json_is_valid_against_the_2025_12_11_schema() -> None:
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    Draft7Validator.check_schema(schema)
    assert SERVER_JSON["$schema"] == schema["$id"] == SCHEMA_URL
    validator = Draft7Validator(schema, format_checker=FormatChecker())
    problems = [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(SERVER_JSON)
    ]
    assert not problems


def test_server_json_names_this_package_and_version_as_the_registry_requires() -> None:
    """The registry's own checks beyond the schema (../shared/mcp-registry/NOTES.md)."""
    (package,) = SERVER_JSON["packages"]
    assert package["registryType"] == "pypi" and package["identifier"] == PROJECT["name"]
    assert package["version"] == SERVER_JSON["version"] == PROJECT["version"]
    assert str(Version(PROJECT["version"])) == PROJECT["version"], "a plain version, not a range"
    assert package.get("registryBaseUrl", "https://pypi.org") == "https://pypi.org"
    assert "fileSha256" not in package
    assert package["transport"] == {"type": "stdio"}
    # `uvx threecx-mcp` runs the console script named as the distribution.
    assert package["runtimeHint"] == "uvx" and package["identifier"] in PROJECT["scripts"]


def test_the_readme_and_the_published_description_claim_the_registry_name(dist: Dist) -> None:
    name = SERVER_JSON["name"]
    owner = name.removeprefix("io.github.").split("/")[0]
    assert name.startswith("io.github.") and name == f"io.github.{owner}/{PROJECT['name']}"
    assert SERVER_JSON["repository"] == {
        "url": f"https://github.com/{owner}/{PROJECT['name']}",
        "source": "github",
    }
    assert f"mcp-name: {name}" in (REPO / "README.md").read_text(encoding="utf-8")
    # The registry reads the marker from PyPI's description of the version, i.e. the wheel's METADATA.
    assert f"mcp-name: {name}" in str(wheel_metadata(dist.wheel).get_payload())


def setting_types(variable: str) -> set[type]:
    assert variable.startswith(ENV_PREFIX), variable
    field = Settings.model_fields.get(variable.removeprefix(ENV_PREFIX).lower())
    assert field is not None, f"{variable} is not a setting of threecx_mcp.config.Settings"
    return {t for t in typing.get_args(field.annotation) or [field.annotation] if t is not type(None)}


FORMATS: dict[str, set[type]] = {"boolean": {bool}, "number": {float, int}, "filepath": {Path}}


def test_every_environment_variable_is_a_setting_with_its_real_type_and_default() -> None:
    (package,) = SERVER_JSON["packages"]
    variables = {v["name"]: v for v in package["environmentVariables"]}
    assert {"THREECX_URL", "THREECX_CLIENT_ID", "THREECX_CLIENT_SECRET", "THREECX_CLIENT_SECRET_FILE"} <= set(
        variables
    )
    for name, variable in variables.items():
        types = setting_types(name)
        assert FORMATS.get(variable.get("format", "string"), {str, SecretStr}) >= types, name
        assert variable.get("isSecret", False) == (SecretStr in types), name
        if "default" in variable:  # read as the environment's text is read
            field = Settings.model_fields[name.removeprefix(ENV_PREFIX).lower()]
            assert TypeAdapter(field.annotation).validate_strings(variable["default"]) == field.default, name
    secret = variables["THREECX_CLIENT_SECRET"]
    assert (
        secret["isSecret"]
        and not secret.get("isRequired")
        and "value" not in secret
        and "default" not in secret
    )


@pytest.mark.anyio
async def test_the_description_claims_only_what_the_tools_do(
    make_server: typing.Callable[[], BlacklistServer],
) -> None:
    description = SERVER_JSON["description"]
    assert len(description) <= 100 and "3CX" in description and "blacklist" in description
    async with Client(make_server()) as client:
        tool_words = {word for tool in (await client.list_tools()).tools for word in tool.name.split("_")}
    actions = {
        "list", "get", "search", "check", "add", "block", "update", "edit", "delete", "remove", "unblock",
        "restore", "undo", "import", "export", "call", "dial", "route", "record", "transfer", "forward",
    }  # fmt: skip
    claimed = {word.strip(",.:;'") for word in description.lower().split()} & actions
    assert claimed and claimed <= tool_words, f"the description claims {sorted(claimed - tool_words)}"
