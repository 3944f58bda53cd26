"""Attacks on issue 12's promises (distribution, bundle, registry entry, configuration a desktop user can
find, client configs that start, CLI): secrets on command lines and in output, .env precedence and
malformed .env files, doctor's checks, --port/--host edge cases, Python words in messages, and the
registry entry and bundle manifest agreeing with the package.

Each `xfail(strict=True)` test is a defect found by the attack (its reason says what); the others are
attacks that failed to break a promise and stay as regression tests."""

from __future__ import annotations

import argparse
import json
import os
import stat
import subprocess
import tomllib
from pathlib import Path

import pytest
from threecx_mcp.arguments import host_address, port_number
from threecx_mcp.cli import parse_args
from threecx_mcp.config import Settings
from threecx_mcp.doctor import check_journal
from threecx_mcp.http_transport import is_loopback
from threecx_mcp.sandbox import SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET

from .support import REPO, run_console

# Looks like a 3CX API key: long, letters and digits mixed.
REAL_LOOKING_KEY = "3cxK9f2LmQ7rT4vW8xZ1aB5cD6eF0gH2"
PYTHON_WORDS = ("None", "NoneType", "float", "Traceback", "Error:", "..")
CLAUDE_MCP_ADD = REPO / "client_configs" / "claude-code" / "claude-mcp-add.sh"


def desktop_env(tmp_path: Path, **settings: str) -> dict[str, str]:
    """What a desktop app gives the server: PATH=/usr/bin:/bin, a HOME, and the entry's settings; the
    user config folder and the journal kept in tmp_path."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return {
        "PATH": "/usr/bin:/bin",
        "HOME": str(home),
        "THREECX_CONFIG_DIR": str(tmp_path / "config"),
        "THREECX_JOURNAL": str(tmp_path / "journal.sqlite3"),
        **settings,
    }


@pytest.fixture
def clean_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No THREECX_* variable from the outside; a user config folder and a working folder of this test's own.
    Returns the user config folder (its .env is the user .env); the working folder is tmp_path/cwd."""
    for name in list(os.environ):
        if name.startswith("THREECX_"):
            monkeypatch.delenv(name)
    config = tmp_path / "config"
    config.mkdir()
    (tmp_path / "cwd").mkdir()
    monkeypatch.setenv("THREECX_CONFIG_DIR", str(config))
    monkeypatch.chdir(tmp_path / "cwd")
    return config


# --- Findings -------------------------------------------------------------------------------------------


def test_a_utf16_user_env_is_named_not_a_traceback(tmp_path: Path) -> None:
    config = tmp_path / "config"
    config.mkdir()
    (config / ".env").write_bytes("THREECX_URL=pbx.example.com\r\n".encode("utf-16"))
    done = run_console("doctor", env=desktop_env(tmp_path), cwd=tmp_path, timeout=60)
    assert "Traceback" not in done.stderr and "UnicodeDecodeError" not in done.stderr
    assert str(config / ".env") in done.stdout + done.stderr


def test_a_malformed_env_line_is_reported_once_with_its_file(tmp_path: Path) -> None:
    config = tmp_path / "config"
    config.mkdir()
    (config / ".env").write_text('THREECX_URL=pbx.example.com\nthis is not a line\nTHREECX_CLIENT_ID="open\n')
    done = run_console("doctor", env=desktop_env(tmp_path), cwd=tmp_path, timeout=60)
    complaints = [line for line in done.stderr.splitlines() if "line 2" in line]
    assert len(complaints) == 1, done.stderr
    assert str(config / ".env") in complaints[0]
    assert "python-dotenv" not in done.stderr


def test_doctor_fails_a_journal_that_is_not_sqlite(tmp_path: Path) -> None:
    journal = tmp_path / "journal.sqlite3"
    journal.write_text("my notes, not a database\n")
    assert not check_journal(journal).ok


def test_an_environment_secret_beats_a_secret_file_in_the_user_env(
    clean_settings: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key_file = tmp_path / "api-key"
    key_file.write_text("from-the-file\n")
    (clean_settings / ".env").write_text(f"THREECX_CLIENT_SECRET_FILE={key_file}\n")
    monkeypatch.setenv("THREECX_CLIENT_SECRET", REAL_LOOKING_KEY)  # as the bundle's mcp_config.env sets it
    assert Settings.load().api_key().get_secret_value() == REAL_LOOKING_KEY


def test_a_key_pasted_as_the_secret_file_is_not_printed(tmp_path: Path) -> None:
    env = desktop_env(
        tmp_path,
        THREECX_URL="https://pbx.example.com",
        THREECX_CLIENT_ID="abc",
        THREECX_CLIENT_SECRET_FILE=REAL_LOOKING_KEY,
    )
    doctor = run_console("doctor", env=env, cwd=tmp_path, timeout=60)
    served = run_console(env=env, cwd=tmp_path, timeout=60)  # stdio, as a desktop client starts it
    assert doctor.returncode == 1 and served.returncode == 2
    assert REAL_LOOKING_KEY not in doctor.stdout + doctor.stderr
    assert REAL_LOOKING_KEY not in served.stdout + served.stderr


def test_doctor_lists_missing_settings_beside_an_invalid_one(tmp_path: Path) -> None:
    done = run_console("doctor", env=desktop_env(tmp_path, THREECX_TIMEOUT="abc"), cwd=tmp_path, timeout=60)
    out = done.stdout + done.stderr
    assert "THREECX_TIMEOUT" in out
    assert "THREECX_URL is not set" in out and "THREECX_CLIENT_ID is not set" in out
    assert "INFO  sources" in out


def test_import_explains_a_broad_pattern_in_cli_terms(tmp_path: Path) -> None:
    csv = tmp_path / "robocallers.csv"
    csv.write_text("caller_id,description\n+15550001111,spam\n*,everyone\n")
    done = run_console("import", str(csv), "--dry-run", "--sandbox", env=desktop_env(tmp_path), timeout=60)
    assert 'invalid "*"' in done.stdout
    assert "\\u0022" not in done.stdout
    assert "allow_broad_pattern" not in done.stdout


def test_a_bad_choice_is_reported_without_python_quotes(tmp_path: Path) -> None:
    done = run_console("export", "--format", "xml", "--sandbox", env=desktop_env(tmp_path), timeout=60)
    assert done.returncode == 2
    assert "'xml'" not in done.stderr and "'csv'" not in done.stderr, done.stderr


def test_an_empty_port_is_named_in_the_message() -> None:
    with pytest.raises(argparse.ArgumentTypeError) as refused:
        port_number("")
    assert not str(refused.value).endswith("not ")


def test_loopback_host_names_are_loopback_in_any_spelling() -> None:
    assert is_loopback(host_address("LOCALHOST"))
    assert is_loopback(host_address("localhost."))


# --- Attacks that did not break a promise (regression tests) -------------------------------------------


def _fake_claude(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """A `claude` on PATH that records its argv, one word a line; and the env to run the script with."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    argv_file = tmp_path / "claude-argv"
    claude = bin_dir / "claude"
    claude.write_text(f'#!/bin/sh\nfor w in "$@"; do printf "%s\\n" "$w"; done > {argv_file}\n')
    claude.chmod(claude.stat().st_mode | stat.S_IXUSR)
    server = tmp_path / "threecx-mcp"
    server.write_text("#!/bin/sh\n")
    server.chmod(0o755)
    return {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path)}, server


def test_claude_mcp_add_never_puts_the_key_on_claudes_command_line(tmp_path: Path) -> None:
    env, server = _fake_claude(tmp_path)
    argv_file = tmp_path / "claude-argv"
    refused = subprocess.run(
        ["sh", str(CLAUDE_MCP_ADD), str(server)],
        env={**env, "THREECX_CLIENT_SECRET": REAL_LOOKING_KEY},
        capture_output=True,
        text=True,
    )
    assert refused.returncode == 2 and not argv_file.exists()
    assert REAL_LOOKING_KEY not in refused.stderr
    key_file = tmp_path / "key"
    both = subprocess.run(
        ["sh", str(CLAUDE_MCP_ADD), str(server)],
        env={
            **env,
            "THREECX_URL": "https://pbx.example.com",
            "THREECX_CLIENT_SECRET": REAL_LOOKING_KEY,
            "THREECX_CLIENT_SECRET_FILE": str(key_file),
        },
        capture_output=True,
        text=True,
    )
    assert both.returncode == 0, both.stderr
    words = argv_file.read_text().splitlines()
    assert REAL_LOOKING_KEY not in "\n".join(words)
    assert f"THREECX_CLIENT_SECRET_FILE={key_file}" in words and words[-1] == str(server)
    relative = subprocess.run(
        ["sh", str(CLAUDE_MCP_ADD), str(server)],
        env={**env, "THREECX_CLIENT_SECRET_FILE": REAL_LOOKING_KEY},  # the key pasted in place of a path
        capture_output=True,
        text=True,
    )
    assert relative.returncode == 2 and REAL_LOOKING_KEY not in relative.stderr


def test_env_beats_the_working_folders_env_which_beats_the_user_env(
    clean_settings: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (clean_settings / ".env").write_text("THREECX_URL=user.example.com\nTHREECX_CLIENT_ID=from-user\n")
    (tmp_path / "cwd" / ".env").write_text("THREECX_URL=cwd.example.com\n")
    settings = Settings.load()
    assert (settings.url, settings.client_id) == ("cwd.example.com", "from-user")
    assert settings.sources.where("THREECX_URL") == str(tmp_path / "cwd" / ".env")
    assert settings.sources.where("THREECX_CLIENT_ID") == str(clean_settings / ".env")
    monkeypatch.setenv("THREECX_URL", "env.example.com")
    assert Settings.load().url == "env.example.com"
    monkeypatch.setenv("THREECX_URL", "")  # a client's empty form field counts as unset
    assert Settings.load().url == "cwd.example.com"


def test_doctor_names_every_missing_setting_and_its_sources_never_a_value(tmp_path: Path) -> None:
    config = tmp_path / "config"
    config.mkdir()
    (config / ".env").write_text(f"THREECX_CLIENT_SECERT={REAL_LOOKING_KEY}\n")  # a typo'd name
    done = run_console("doctor", env=desktop_env(tmp_path), cwd=tmp_path, timeout=60)
    assert done.returncode == 1
    for name in ("THREECX_URL", "THREECX_CLIENT_ID", "THREECX_CLIENT_SECRET"):
        assert f"FAIL  settings: {name} is not set" in done.stdout
    assert "THREECX_CLIENT_SECERT" in done.stdout and REAL_LOOKING_KEY not in done.stdout + done.stderr
    assert "PASS  journal" in done.stdout
    assert not any(word in done.stdout for word in PYTHON_WORDS if word != "..")


def test_doctor_with_a_real_looking_key_never_prints_it(sandbox_url: str, tmp_path: Path) -> None:
    env = desktop_env(
        tmp_path,
        THREECX_URL=sandbox_url,
        THREECX_CLIENT_ID=SANDBOX_CLIENT_ID,
        THREECX_CLIENT_SECRET=REAL_LOOKING_KEY,
    )
    done = run_console("doctor", env=env, cwd=tmp_path, timeout=60)
    assert done.returncode == 1 and "FAIL  token" in done.stdout
    assert REAL_LOOKING_KEY not in done.stdout + done.stderr
    assert not list(tmp_path.rglob("*.env"))  # doctor wrote no settings file
    for written in tmp_path.rglob("*"):
        if written.is_file():
            assert REAL_LOOKING_KEY.encode() not in written.read_bytes(), written


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda p: p.mkdir(), "is a directory, not a regular file"),
        (lambda p: None, None),  # absent: fine, created on first use
    ],
)
def test_doctor_judges_the_journal_path(tmp_path: Path, make, words: str | None) -> None:  # type: ignore[no-untyped-def]
    journal = tmp_path / "journal.sqlite3"
    make(journal)
    finding = check_journal(journal)
    assert finding.ok is (words is None)
    if words:
        assert words in finding.detail
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    assert "is a file, not a folder" in check_journal(blocked / "journal.sqlite3").detail


def test_doctor_says_loudly_that_the_sandbox_hides_the_url(tmp_path: Path) -> None:
    env = desktop_env(tmp_path, THREECX_SANDBOX="true", THREECX_URL="https://pbx.example.com")
    done = run_console("doctor", env=env, cwd=tmp_path, timeout=60)
    assert done.returncode == 0
    assert "THREECX_URL is set but ignored" in done.stdout
    assert done.stdout.rstrip().endswith("All checks passed on the sandbox PBX; your PBX was not checked.")


@pytest.mark.parametrize("text", ["99999", "0", "-1", "abc", "1e3", "8000.0", "65536", "0x1f90"])
def test_a_bad_port_is_refused(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError) as refused:
        port_number(text)
    assert "1 to 65535" in str(refused.value)


@pytest.mark.parametrize(("text", "port"), [(" 80", 80), ("+80", 80), ("08080", 8080), ("65535", 65535)])
def test_a_lenient_port_is_announced_as_it_is_bound(text: str, port: int) -> None:
    assert parse_args(["--transport", "http", "--port", text]).port == port


@pytest.mark.parametrize(
    ("text", "host"),
    [("::1", "::1"), ("[::1]", "::1"), (" 127.0.0.1 ", "127.0.0.1"), ("localhost.", "localhost.")],
)
def test_a_host_is_normalised(text: str, host: str) -> None:
    assert host_address(text) == host


@pytest.mark.parametrize("text", ["a" * 300, "http://x", "[::1]:80", "pbx.example.com:80", "a b", ""])
def test_a_bad_host_is_refused(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        host_address(text)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "0", "127.1", "fe80::1"])
def test_anything_but_a_loopback_address_needs_the_token(host: str) -> None:
    assert not is_loopback(host_address(host))


def test_binding_everywhere_without_a_token_is_refused_before_listening(tmp_path: Path) -> None:
    done = run_console(
        "--sandbox",
        "--transport",
        "http",
        "--host",
        "0.0.0.0",
        "--port",
        "1",
        env=desktop_env(tmp_path),
        timeout=60,
    )
    assert done.returncode == 2
    assert "THREECX_MCP_AUTH_TOKEN" in done.stderr and "Traceback" not in done.stderr


def test_registry_entry_bundle_and_package_agree() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    server = json.loads((REPO / "server.json").read_text())
    manifest = json.loads((REPO / "bundle" / "manifest.json").read_text())
    snapshot = json.loads((REPO / "tests" / "snapshots" / "tools_list.json").read_text())
    tools = snapshot["tools"] if isinstance(snapshot, dict) else snapshot
    assert server["version"] == server["packages"][0]["version"] == manifest["version"] == project["version"]
    assert server["packages"][0]["identifier"] == project["name"] == manifest["name"]
    assert len(server["description"]) <= 100
    assert f"mcp-name: {server['name']}" in (REPO / "README.md").read_text()
    assert [t["name"] for t in manifest["tools"]] == [t["name"] for t in tools]
    assert manifest["user_config"]["api_key"]["sensitive"] is True
    secrets = {v["name"] for v in server["packages"][0]["environmentVariables"] if v.get("isSecret")}
    assert secrets == {"THREECX_CLIENT_SECRET"}
    # The key travels in the bundle's env, never in its args (visible in ps).
    assert not any("api_key" in word or "SECRET" in word for word in manifest["server"]["mcp_config"]["args"])


def test_the_secret_comes_only_from_env_in_every_shipped_config() -> None:
    for path in (REPO / "client_configs").rglob("*"):
        if path.is_file():
            text = path.read_text()
            assert SANDBOX_CLIENT_SECRET not in text and REAL_LOOKING_KEY not in text
            assert "--client-secret" not in text
