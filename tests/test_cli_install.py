"""The command as a new user meets it: help for each command, option checks, `doctor` on a fresh
install (which files and variables it read, every missing setting, the journal, the sandbox), and
the wording of every error the errors module can produce."""

from __future__ import annotations

import math
import os
import re
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import anyio
import pytest
import threecx_mcp.cli  # noqa: F401  (imports every module, so every error class is defined)
from pydantic import SecretStr
from threecx_mcp.cli import doctor, main, parse_args
from threecx_mcp.config import Settings, SettingsIncomplete
from threecx_mcp.doctor import check_journal, run_checks
from threecx_mcp.errors import (
    AuthenticationFailed,
    ConfigError,
    LoginPaused,
    ODataDetail,
    PbxError,
    RateLimited,
    ThreeCXMcpError,
)
from threecx_mcp.journal import EntryImage, ItemRecord, Journal, OperationKind
from threecx_mcp.sandbox import SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET, LoopbackServer, Sandbox

from .support import SUBPROCESS_JOURNAL, run_console

# Python leaking into a sentence: a repr's None, a type name, doubled full stops, quotes from !r.
PYTHON_WORDS = re.compile(
    r"\bNone\b|NoneType|\bfloat\b|\bint\(|<class|Traceback|(?<!\.)\.\.(?!\.)|(?:^|[\s(=:])'[^'\s][^']*'(?=[\s).,;:]|$)"
)


def run(words: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """`threecx-mcp WORDS` in this process: exit code, stdout, stderr."""
    try:
        code = main(words)
    except SystemExit as exc:  # argparse: --help, or a usage error it has explained
        code = exc.code if isinstance(exc.code, int) else 2
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def fresh(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A machine with no THREECX_* setting: the user config directory is tmp_path/config (empty), the
    working directory another folder, the journal in tmp_path/state."""
    for name in list(os.environ):
        if name.upper().startswith("THREECX_"):
            monkeypatch.delenv(name)
    (tmp_path / "config").mkdir()
    (tmp_path / "cwd").mkdir()
    monkeypatch.setenv("THREECX_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("THREECX_JOURNAL", str(tmp_path / "state" / "journal.sqlite3"))
    monkeypatch.chdir(tmp_path / "cwd")
    return tmp_path / "config" / ".env"


def findings(out: str) -> dict[str, list[str]]:
    """doctor's lines by check name: `FAIL  settings: …` -> {"settings": ["FAIL  settings: …"]}."""
    found: dict[str, list[str]] = {}
    for line in out.splitlines():
        if words := re.match(r"(INFO|PASS|NOTE|FAIL)  (\w+): ", line):
            found.setdefault(words.group(2), []).append(line)
    return found


# -- help -----------------------------------------------------------------------------------------


def test_help_explains_serving_and_names_every_command() -> None:
    done = run_console("--help", timeout=60)
    assert done.returncode == 0 and done.stderr == ""
    for words in (
        "stdio",
        "--transport http",
        "--host",
        "--port",
        "127.0.0.1:8000",
        "/mcp",
        "THREECX_MCP_AUTH_TOKEN",
    ):
        assert words in done.stdout, words
    for command in ("doctor", "journal", "export", "import"):
        assert f"threecx-mcp {command} --help" in done.stdout, command
    assert ".env" in done.stdout and "THREECX_CONFIG_DIR" in done.stdout


@pytest.mark.parametrize(
    ("command", "own_words"),
    [
        ("doctor", ["usage: threecx-mcp doctor", "--probe", "journal", "Exit code 0 only if all pass"]),
        ("serve", ["usage: threecx-mcp [serve]", "--transport"]),
        ("journal", ["usage: threecx-mcp journal", "list", "show"]),
        ("export", ["usage: threecx-mcp export", "--format"]),
        ("import", ["usage: threecx-mcp import", "--dry-run"]),
    ],
)
def test_each_command_has_its_own_help(
    command: str, own_words: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run([command, "--help"], capsys)
    assert code == 0
    for words in own_words:
        assert words in out, words
    if command != "serve":
        assert "--transport" not in out  # not the general help


# -- options --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("words", "said"),
    [
        (["--port", "99999"], "argument --port: the port must be a whole number from 1 to 65535"),
        (["--port", "0"], "argument --port: the port must be a whole number from 1 to 65535"),
        (["--port", "-1"], 'from 1 to 65535, such as 8000, not "-1"'),
        (["--port", "http"], 'from 1 to 65535, such as 8000, not "http"'),
        (["--host", "http://pbx:80"], "argument --host: give an IP address or a host name"),
        (["--host", "127.0.0.1:8000"], "without a scheme or port (use --port)"),
        (["--host", "two words"], "argument --host"),
        (["--host", ""], "argument --host"),
        (["--sandbox", "doctor"], "give the command first, then its options: threecx-mcp doctor --help"),
        (["--read-only", "export"], "give the command first"),
        (["doctor", "--transport", "http"], "unrecognized arguments: --transport http"),
    ],
)
def test_bad_options_are_refused_with_a_sentence(
    words: list[str], said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(words, capsys)
    assert code == 2 and out == ""
    assert said in err and not PYTHON_WORDS.search(err.replace("usage:", ""))


@pytest.mark.parametrize(
    ("host", "bound"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("0.0.0.0", "0.0.0.0"),
        ("::1", "::1"),
        ("[::1]", "::1"),
        ("localhost", "localhost"),
        ("pbx-mcp.example.com", "pbx-mcp.example.com"),
    ],
)
def test_good_hosts_and_ports_are_taken_as_given(host: str, bound: str) -> None:
    args = parse_args(["--transport", "http", "--host", host, "--port", "65535"])
    assert (args.command, args.host, args.port) == ("serve", bound, 65535)
    assert parse_args(["serve", "--port", "1"]).port == 1
    assert parse_args(["doctor", "--sandbox", "--probe"]).command == "doctor"


def test_an_impossible_port_is_refused_before_anything_listens() -> None:
    """0.1 announced port 99999 and listened on 34463 (99999 modulo 65536)."""
    done = run_console(
        "--sandbox",
        "--transport",
        "http",
        "--port",
        "99999",
        env={**os.environ, "THREECX_JOURNAL": str(SUBPROCESS_JOURNAL)},
        timeout=60,
    )
    assert done.returncode == 2 and "from 1 to 65535" in done.stderr
    assert "Traceback" not in done.stderr and "streamable HTTP at" not in done.stderr


# -- doctor ---------------------------------------------------------------------------------------


def test_doctor_on_a_fresh_install_lists_every_missing_setting_at_once(
    fresh: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(["doctor"], capsys)
    assert code == 1
    found = findings(out)
    assert [line.split(":")[1].split(" is not set")[0].strip() for line in found["settings"]] == [
        "THREECX_URL",
        "THREECX_CLIENT_ID",
        "THREECX_CLIENT_SECRET",
    ]
    assert all(line.startswith("FAIL") for line in found["settings"])
    assert found["journal"][0].startswith("PASS")  # checked all the same
    assert "dns" not in found  # nothing to connect to
    (sources,) = found["sources"]
    assert f"No .env at {fresh} or {Path.cwd() / '.env'}" in sources
    assert f"Settings for every folder go in {fresh}" in sources
    assert out.splitlines()[-1] == "Some checks failed; fix each FAIL above and run doctor again."
    assert not PYTHON_WORDS.search(out)


def test_doctor_names_the_files_and_variables_it_read_never_a_value(
    fresh: Path, sandbox_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    fresh.write_text(
        f"THREECX_URL={sandbox_url}\nTHREECX_CLIENT_SECRET={SANDBOX_CLIENT_SECRET}\nTHREECX_CLIENT_SECERT=typo\n"
    )
    (Path.cwd() / ".env").write_text("THREECX_TIMEOUT=20\n")
    monkeypatch.setenv("THREECX_CLIENT_ID", SANDBOX_CLIENT_ID)
    code, out, err = run(["doctor"], capsys)
    assert code == 0, out + err
    (sources,) = findings(out)["sources"]
    assert "THREECX_CLIENT_ID, THREECX_JOURNAL from the environment" in sources
    assert f"THREECX_CLIENT_SECRET, THREECX_URL from {fresh}" in sources
    assert f"THREECX_TIMEOUT from {Path.cwd() / '.env'}" in sources
    assert f"Ignored, as no setting has that name: THREECX_CLIENT_SECERT (from {fresh})" in sources
    assert SANDBOX_CLIENT_SECRET not in out + err and "typo" not in out
    assert "sandbox" not in findings(out)  # a real PBX (the sandbox over HTTP, as a PBX)
    assert out.splitlines()[-1] == "All checks passed."


@pytest.fixture
def blocked_journal(fresh: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """THREECX_JOURNAL inside a folder that cannot be made: a file stands where it should be (no chmod,
    which root ignores)."""
    blocker = fresh.parent.parent / "state-is-a-file"
    blocker.write_text("")
    monkeypatch.setenv("THREECX_JOURNAL", str(blocker / "journal.sqlite3"))
    yield blocker


def test_doctor_fails_on_an_unwritable_journal_and_still_checks_the_rest(
    blocked_journal: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(["doctor", "--sandbox"], capsys)
    assert code == 1 and "All checks passed" not in out
    found = findings(out)
    (journal,) = found["journal"]
    assert journal.startswith("FAIL") and f"{blocked_journal} is a file, not a folder" in journal
    assert "Set THREECX_JOURNAL to a file this user can write" in journal and not PYTHON_WORDS.search(out)
    assert found["blacklist"][0].startswith("PASS")  # every other problem would be listed too


def test_doctor_refuses_a_journal_path_that_is_a_folder(
    fresh: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("THREECX_JOURNAL", str(fresh.parent))
    code, out, _ = run(["doctor", "--sandbox"], capsys)
    (journal,) = findings(out)["journal"]
    assert code == 1 and journal.startswith("FAIL") and "(it is a directory, not a regular file)" in journal


def test_doctor_leaves_no_probe_file_behind(fresh: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["doctor", "--sandbox"], capsys)
    state = fresh.parent.parent / "state"
    assert code == 0 and findings(out)["journal"][0].startswith("PASS")
    assert state.is_dir() and not [p for p in state.iterdir() if "doctor" in p.name]


def test_doctor_says_when_it_tests_the_sandbox(fresh: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["doctor", "--sandbox"], capsys)
    assert code == 0
    (note,) = findings(out)["sandbox"]
    assert note.startswith("NOTE  sandbox: testing the embedded sandbox PBX (--sandbox), not a real one")
    assert out.splitlines()[1] == note  # before any check
    assert out.splitlines()[-1] == "All checks passed on the sandbox PBX; your PBX was not checked."


def test_doctor_says_loudly_that_the_sandbox_ignores_the_configured_pbx(
    fresh: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fresh.write_text("THREECX_SANDBOX=true\nTHREECX_URL=pbx.example.com\n")
    code, out, _ = run(["doctor"], capsys)
    (note,) = findings(out)["sandbox"]
    assert code == 0 and f"THREECX_SANDBOX=true from {fresh}" in note
    assert "THREECX_URL is set but ignored" in note and "Remove THREECX_SANDBOX" in note


def test_the_server_says_at_start_that_the_sandbox_ignores_the_configured_pbx(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("THREECX_")} | {
        "THREECX_SANDBOX": "true",
        "THREECX_URL": "pbx.example.com",
        "THREECX_CONFIG_DIR": str(tmp_path),
        "THREECX_JOURNAL": str(SUBPROCESS_JOURNAL),
    }
    done = run_console(env=env, cwd=tmp_path, timeout=60)  # stdio; stdin at its end: serves nothing, exits
    assert done.returncode == 0 and done.stdout == ""
    assert "WARNING Using the embedded sandbox PBX (THREECX_SANDBOX=true from the environment)" in done.stderr
    assert "THREECX_URL is set but ignored" in done.stderr


def test_doctor_lists_an_invalid_value_beside_every_missing_setting(
    fresh: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """What `threecx-mcp doctor` runs: the settings loaded with their problems set aside, not stopped at."""
    monkeypatch.setenv("THREECX_TIMEOUT", "abc")
    code = doctor(Settings.load(collect_problems=True))
    out = capsys.readouterr().out
    found = findings(out)
    assert code == 1 and len(found["sources"]) == 1 and found["journal"][0].startswith("PASS")
    assert [line.split(": ")[1].split(" (from")[0].split(" is not set")[0] for line in found["settings"]] == [
        "THREECX_TIMEOUT",
        "THREECX_URL",
        "THREECX_CLIENT_ID",
        "THREECX_CLIENT_SECRET",
    ]
    assert "THREECX_TIMEOUT (from the environment) is not valid: it should be a valid number" in out
    assert "abc" not in out and not PYTHON_WORDS.search(out)


def test_doctor_names_the_key_file_it_used_and_the_setting_it_ignored(
    fresh: Path, sandbox_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    key_file = fresh.parent / "api-key"
    key_file.write_text("not-the-sandbox-key\n")
    fresh.write_text(
        f"THREECX_URL={sandbox_url}\nTHREECX_CLIENT_ID={SANDBOX_CLIENT_ID}\nTHREECX_CLIENT_SECRET=k3y\n"
    )
    (Path.cwd() / ".env").write_text(f"THREECX_CLIENT_SECRET_FILE={key_file}\n")
    code, out, err = run(["doctor"], capsys)
    found = findings(out)
    (sources,) = found["sources"]
    assert (
        f"THREECX_CLIENT_SECRET (from {fresh}) is ignored: THREECX_CLIENT_SECRET_FILE from "
        f"{Path.cwd() / '.env'} gives the same setting and comes first"
    ) in sources
    (token,) = found["token"]
    assert code == 1 and token.startswith("FAIL")
    assert "the API key (in the file THREECX_CLIENT_SECRET_FILE names)" in token and "k3y" not in out + err


def test_doctor_fails_a_journal_the_server_could_not_open_and_deletes_nothing_from_one_it_can(
    tmp_path: Path,
) -> None:
    other = tmp_path / "other.sqlite3"
    with closing(sqlite3.connect(other)) as db:
        db.execute("CREATE TABLE notes (text TEXT)")
    refused = check_journal(other)
    assert not refused.ok and "it is a SQLite database of another program" in refused.detail
    ours = tmp_path / "journal.sqlite3"
    journal = Journal(ours, "sandbox", retention_days=1)
    anyio.run(lambda: journal.begin(OperationKind.DELETE, [ItemRecord(EntryImage("1", "+1555", None), None)]))
    journal.close()
    with closing(sqlite3.connect(ours)) as db, db:
        db.execute("UPDATE operations SET started_at = '2000-01-01T00:00:00.000000+00:00'")  # long expired
    assert check_journal(ours).ok
    with closing(sqlite3.connect(ours)) as db:
        assert db.execute("SELECT count(*) FROM operations").fetchone() == (1,)  # doctor pruned nothing


def test_doctor_on_the_sandbox_says_whose_url_is_http(fresh: Path) -> None:
    with LoopbackServer(Sandbox().app) as pbx:
        settings = Settings.load(
            url=pbx.url, client_id=SANDBOX_CLIENT_ID, client_secret=SecretStr(SANDBOX_CLIENT_SECRET)
        )
        checks = anyio.run(
            lambda: run_checks(settings, journal=fresh.parent / "journal.sqlite3", sandbox=True)
        )
    (scheme,) = [finding.line() for finding in checks if finding.name == "scheme"]
    assert scheme.startswith("PASS") and scheme.endswith("does not speak HTTPS, as the sandbox's URL says")


# -- every message of the errors module -----------------------------------------------------------


def error_classes() -> list[type[ThreeCXMcpError]]:
    found, waiting = [], [ThreeCXMcpError]
    while waiting:
        cls = waiting.pop()
        found.append(cls)
        waiting.extend(cls.__subclasses__())
    return found


def instances(cls: type[ThreeCXMcpError]) -> list[ThreeCXMcpError]:
    """Each class built as its callers build it, with empty (None) optional parts and with every part."""
    said = "The PBX refused the request."
    if issubclass(cls, LoginPaused):
        refused = AuthenticationFailed("The PBX refused the API client's credentials.", status=400)
        return [cls(refused, seconds) for seconds in (0.2, 1.0, 42.5, 5400.0, math.inf, math.nan)]
    if issubclass(cls, RateLimited):
        return [
            cls(said, retry_after=None),
            cls(said, retry_after=90.0, status=429, code="TooMany", pbx_message="Slow down"),
        ]
    if issubclass(cls, PbxError):
        return [
            cls(said, status=None, code=None, pbx_message=None, details=(), hint=None),
            cls(said, status=400, code="Bad", pbx_message=None),
            cls(said, status=None, code=None, pbx_message="Caller ID is invalid"),
            cls(said, status=422, code="X", pbx_message="y", details=(ODataDetail("Number", "too long"),)),
        ]
    if issubclass(cls, SettingsIncomplete):
        return [cls([ConfigError("THREECX_URL is not set."), ConfigError("THREECX_CLIENT_ID is not set.")])]
    return [cls("Something is wrong.", hint=None), cls("Something is wrong.")]


def test_every_error_class_is_covered() -> None:
    names = {cls.__name__ for cls in error_classes()}
    assert {
        "PbxError",
        "LoginPaused",
        "RateLimited",
        "TlsError",
        "ConfigError",
        "SettingsIncomplete",
    } <= names
    assert len(names) >= 25


@pytest.mark.parametrize("cls", error_classes(), ids=lambda cls: cls.__name__)
def test_no_error_message_speaks_python(cls: type[ThreeCXMcpError]) -> None:
    for error in instances(cls):
        for text in (error.user_message(), str(error)):
            assert not PYTHON_WORDS.search(text), text
            assert text.endswith((".", '"')), text
            assert "  " not in text, text


def test_the_server_names_every_missing_setting_a_line_each(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("THREECX_")}
    done = run_console(env=env | {"THREECX_CONFIG_DIR": str(tmp_path)}, cwd=tmp_path, timeout=60)
    assert done.returncode == 2 and done.stdout == ""
    assert [line.split(" is not set")[0] for line in done.stderr.splitlines()] == [
        "threecx-mcp: THREECX_URL",
        "threecx-mcp: THREECX_CLIENT_ID",
        "threecx-mcp: THREECX_CLIENT_SECRET",
    ]
