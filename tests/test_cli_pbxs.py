"""The command line with several PBXs (issue 13): `doctor` a section per PBX, `export`/`import` and
`journal` with --pbx, `--sandboxes N`, and the start-up line, run as a user runs them (the console script),
with the config file, the user config directory and the journal in this test's folder.

Two setups: a config file of two `sandbox = true` PBXs (each command makes its own, in-process), and a
config file naming two real loopback sandboxes by url, client_id and client_secret_file, whose entries
the test reads afterwards.
"""

from __future__ import annotations

import csv
import io
import os
import re
import socket
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from mcp import Client, StdioServerParameters
from threecx_mcp.cli import main
from threecx_mcp.config import Settings
from threecx_mcp.sandbox import SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET, LoopbackServer, Sandbox
from threecx_mcp.server import build_server
from threecx_mcp.wiring import plans_for, roster_for

from .support import call_confirmed, console_script, run_console

# Python leaking into a sentence: a repr's None, a type name, quotes from !r, a traceback.
PYTHON_WORDS = re.compile(r"\bNone\b|NoneType|<class|Traceback|(?:^|[\s(=:])'[^'\s][^']*'(?=[\s).,;:]|$)")
HEADING = re.compile(r'^== PBX "(?P<name>[^"]+)"(?: \((?P<where>[^)]*)\))? ==$')
TWO_SANDBOXES = "[pbx.hq]\nsandbox = true\n\n[pbx.branch]\nsandbox = true\n"


@dataclass
class Doctor:
    """doctor's output: the lines before the first PBX, each PBX's lines by name (in order), the last line."""

    code: int
    preamble: list[str]
    sections: dict[str, list[str]]
    headings: list[str]
    verdict: str
    stdout: str
    stderr: str


def doctor(env: dict[str, str], *words: str) -> Doctor:
    done = run_console("doctor", *words, env=env, timeout=60)
    lines = done.stdout.splitlines()
    preamble: list[str] = []
    sections: dict[str, list[str]] = {}
    headings: list[str] = []
    current = preamble
    for line in lines[:-1]:
        if heading := HEADING.match(line):
            headings.append(line)
            current = sections.setdefault(heading["name"], [])
        else:
            current.append(line)
    return Doctor(
        done.returncode, preamble, sections, headings, lines[-1] if lines else "", done.stdout, done.stderr
    )


def named(lines: list[str], check: str) -> list[str]:
    return [line for line in lines if re.match(rf"(INFO|PASS|NOTE|FAIL)  {check}: ", line)]


def user_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment of a user whose settings are in tmp_path/config, and whose journal is in tmp_path."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("THREECX_")}
    (tmp_path / "config").mkdir(exist_ok=True)
    return env | {
        "THREECX_CONFIG_DIR": str(tmp_path / "config"),
        "THREECX_JOURNAL": str(tmp_path / "state" / "journal.sqlite3"),
        **extra,
    }


@pytest.fixture
def sandbox_file(tmp_path: Path) -> dict[str, str]:
    """config.toml in the user config directory: two embedded sandbox PBXs, hq and branch, no default."""
    env = user_env(tmp_path)
    (tmp_path / "config" / "config.toml").write_text(TWO_SANDBOXES)
    return env


@dataclass
class RealPbxs:
    """Two loopback sandboxes as two real PBXs, named by THREECX_CONFIG's file."""

    env: dict[str, str]
    config: Path
    hq: Sandbox
    branch: Sandbox
    urls: dict[str, str]

    def write(self, *, default: str | None = None, branch_key: str = "api.key") -> None:
        lines = [f'default = "{default}"'] if default else []
        for name in ("hq", "branch"):
            key = branch_key if name == "branch" else "api.key"
            lines += [
                f"[pbx.{name}]",
                f'url = "{self.urls[name]}"',
                f'client_id = "{SANDBOX_CLIENT_ID}"',
                f'client_secret_file = "{key}"',
            ]
        self.config.write_text("\n".join(lines) + "\n")


@pytest.fixture
def real_pbxs(tmp_path: Path) -> Iterator[RealPbxs]:
    hq, branch = Sandbox(), Sandbox()
    with LoopbackServer(hq.app) as hq_server, LoopbackServer(branch.app) as branch_server:
        folder = tmp_path / "pbxs"
        folder.mkdir()
        key = folder / "api.key"
        key.write_text(SANDBOX_CLIENT_SECRET + "\n")
        key.chmod(0o600)
        config = folder / "pbxs.toml"
        pbxs = RealPbxs(
            user_env(tmp_path, THREECX_CONFIG=str(config)),
            config,
            hq,
            branch,
            {"hq": hq_server.url, "branch": branch_server.url},
        )
        pbxs.write()
        yield pbxs


# -- doctor ----------------------------------------------------------------------------------------


def test_doctor_checks_every_sandbox_pbx_of_the_file_under_its_name(
    sandbox_file: dict[str, str], tmp_path: Path
) -> None:
    done = doctor(sandbox_file)
    assert done.code == 0, done.stdout + done.stderr
    assert list(done.sections) == ["hq", "branch"]  # the file's order, a heading each
    (sources,) = named(done.preamble, "sources")
    assert "THREECX_JOURNAL from the environment" in sources
    (config,) = named(done.preamble, "config")
    assert f'read {tmp_path / "config" / "config.toml"}: 2 PBXs, "hq" and "branch"; no default PBX' in config
    assert (
        len(named(done.stdout.splitlines(), "journal")) == 1
        and named(done.preamble, "journal")[0][:4] == "PASS"
    )
    for name, lines in done.sections.items():
        (note,) = named(lines, "sandbox")
        assert f'PBX "{name}" is an embedded sandbox PBX (sandbox = true in its [pbx.{name}] table)' in note
        assert note.startswith("NOTE") and lines[0] == note  # said before its checks
        assert [line.split(":")[0] for line in lines[1:]] == [
            "PASS  settings",
            "PASS  dns",
            "PASS  tcp",
            "PASS  scheme",
            "PASS  token",
            "PASS  blacklist",
        ]
        assert "(12 entries)" in lines[-1]
    assert done.verdict == 'All checks passed on the sandbox PBXs "hq" and "branch"; no real PBX was checked.'
    assert not PYTHON_WORDS.search(done.stdout) and done.stderr == ""

    one = doctor(sandbox_file, "--pbx", "branch")
    assert one.code == 0 and list(one.sections) == ["branch"]
    assert one.verdict == 'All checks passed on the sandbox PBX "branch"; no real PBX was checked.'


def test_doctor_over_two_real_pbxs_fails_only_the_one_whose_key_is_wrong(real_pbxs: RealPbxs) -> None:
    done = doctor(real_pbxs.env)
    assert done.code == 0, done.stdout + done.stderr
    assert done.headings == [f'== PBX "{name}" ({url}) ==' for name, url in real_pbxs.urls.items()]
    for name, lines in done.sections.items():
        assert named(lines, "settings") == [f"PASS  settings: PBX at {real_pbxs.urls[name]}"]
        assert named(lines, "blacklist")[0].startswith("PASS") and not named(lines, "sandbox")
    assert done.verdict == 'All checks passed on PBXs "hq" and "branch".'

    wrong = real_pbxs.config.parent / "wrong.key"
    wrong.write_text("not-the-key-of-branch\n")
    real_pbxs.write(branch_key="wrong.key")
    failed = doctor(real_pbxs.env)
    assert failed.code == 1
    assert named(failed.sections["hq"], "blacklist")[0].startswith("PASS")  # checked all the same
    (token,) = named(failed.sections["branch"], "token")
    assert token.startswith("FAIL") and not named(failed.sections["branch"], "blacklist")
    assert f"in the file client_secret_file of [pbx.branch] in {real_pbxs.config} names" in token
    assert "THREECX_" not in token  # the advice names where the user wrote the key, not a variable
    assert failed.verdict == 'Some checks failed on PBX "branch"; fix each FAIL above and run doctor again.'
    for secret in (SANDBOX_CLIENT_SECRET, "not-the-key-of-branch"):
        assert secret not in failed.stdout + failed.stderr


def test_doctor_lists_every_mistake_of_the_config_file_at_once(tmp_path: Path) -> None:
    config = tmp_path / "config" / "config.toml"
    env = user_env(tmp_path, THREECX_TIMEOUT="abc", BRANCH_KEY="s3cr3t-in-the-environment")
    config.write_text(
        'default = "nowhere"\n'
        '[pbx.hq]\nsandbox = true\nurl = "https://hq.example.com"\n'
        '[pbx.branch]\nurl = "branch.example.com"\nclient_id = "mcp"\n'
        'client_secret_env = "BRANCH_KEY"\nclient_secret_file = "branch.key"\n'
    )
    done = doctor(env)
    assert done.code == 1 and not done.sections  # no PBX can be checked as the file stands
    problems = named(done.preamble, "settings")
    assert all(line.startswith("FAIL") for line in problems)
    for words in (
        "THREECX_TIMEOUT (from the environment) is not valid",
        "[pbx.hq] in",  # a sandbox with a url
        "also sets url",
        "[pbx.branch] in",  # the key given two ways
        "gives the API key 2 ways",
        'default = "nowhere"',
    ):
        assert sum(words in line for line in problems) == 1, words
    (journal,) = named(done.preamble, "journal")
    assert journal.startswith("PASS")  # checked all the same
    assert done.verdict == "Some checks failed; fix each FAIL above and run doctor again."
    assert "s3cr3t" not in done.stdout + done.stderr and not PYTHON_WORDS.search(done.stdout)

    del env["THREECX_TIMEOUT"]
    exported = run_console("export", "--pbx", "hq", env=env, timeout=60)
    assert exported.returncode == 2 and exported.stdout == ""
    lines = exported.stderr.splitlines()
    assert len(lines) >= 3 and all(line.startswith("threecx-mcp export: ") for line in lines)  # a line each
    # the journal can still be read (the key's variable may be set only in a client's env block)
    listed = run_console("journal", "list", env=env, timeout=60)
    assert listed.returncode == 0 and listed.stdout.startswith("No operations journaled yet")
    assert "the config file cannot be used as it stands" in listed.stderr


def test_a_pbx_with_a_missing_setting_fails_its_own_section_and_stops_no_other(tmp_path: Path) -> None:
    env = user_env(tmp_path)
    (tmp_path / "config" / "config.toml").write_text(
        '[pbx.lab]\nsandbox = true\n[pbx.branch]\nurl = "branch.example.com"\nclient_secret_file = "k"\n'
    )
    (tmp_path / "config" / "k").write_text("some-key\n")
    done = doctor(env)
    assert done.code == 1 and list(done.sections) == ["lab", "branch"]
    assert named(done.sections["lab"], "blacklist")[0].startswith("PASS")
    (missing,) = done.sections["branch"]
    assert missing.startswith("FAIL  settings: client_id of [pbx.branch] in ") and "is not set" in missing
    assert done.verdict == 'Some checks failed on PBX "branch"; fix each FAIL above and run doctor again.'
    # export and import need only the PBX they act on to be configured correctly
    assert run_console("export", "--pbx", "lab", env=env, timeout=60).returncode == 0
    refused = run_console("export", "--pbx", "branch", env=env, timeout=60)
    assert refused.returncode == 2 and "client_id of [pbx.branch]" in refused.stderr


def test_a_key_variable_unset_in_the_shell_stops_the_server_but_not_a_command_on_another_pbx(
    tmp_path: Path,
) -> None:
    """A table's own problem (here its key's variable, which often lives only in a client's env block)
    belongs to its PBX: `export --pbx lab` goes ahead, while the server, which serves every PBX, refuses
    to start and names the variable."""
    env = user_env(tmp_path)
    (tmp_path / "config" / "config.toml").write_text(
        '[pbx.lab]\nsandbox = true\n[pbx.branch]\nurl = "branch.example.com"\nclient_id = "c"\n'
        'client_secret_env = "BRANCH_KEY"\n'
    )
    env.pop("BRANCH_KEY", None)
    assert run_console("export", "--pbx", "lab", env=env, timeout=60).returncode == 0
    served = run_console("--transport", "http", "--port", str(free_port()), env=env, timeout=60)
    assert served.returncode == 2 and served.stdout == ""
    assert (
        "client_secret_env of [pbx.branch]" in served.stderr
        and "BRANCH_KEY, which is not set" in served.stderr
    )
    done = doctor(env)
    assert done.code == 1 and named(done.sections["lab"], "blacklist")[0].startswith("PASS")
    assert any("BRANCH_KEY" in line for line in done.sections["branch"])


def test_doctor_sandbox_stands_in_for_every_pbx_of_the_file(real_pbxs: RealPbxs) -> None:
    done = doctor(real_pbxs.env, "--sandbox")
    assert done.code == 0 and list(done.sections) == ["hq", "branch"]
    (note,) = named(done.preamble, "sandbox")
    assert "an embedded sandbox PBX standing in for each PBX of the config file (--sandbox)" in note
    for lines in done.sections.values():
        assert "standing in for the PBX of that name (--sandbox)" in named(lines, "sandbox")[0]
        assert named(lines, "blacklist")[0].startswith("PASS")
    assert done.verdict.endswith("; no real PBX was checked.")
    assert not real_pbxs.hq.requests and not real_pbxs.branch.requests  # the PBXs of the file were not asked


def test_doctor_with_sandboxes_checks_each(tmp_path: Path) -> None:
    done = doctor(user_env(tmp_path), "--sandboxes", "2")
    assert done.code == 0 and list(done.sections) == ["sandbox-1", "sandbox-2"]
    (note,) = named(done.preamble, "sandbox")
    assert note.startswith("NOTE  sandbox: testing 2 embedded sandbox PBXs (--sandboxes 2), not real ones")
    assert all("made by --sandboxes" in named(lines, "sandbox")[0] for lines in done.sections.values())


@pytest.mark.parametrize(
    "words",
    [["doctor", "--pbx", "nope"], ["export", "--pbx", "nope"], ["journal", "list", "--pbx", "nope"]],
    ids=["doctor", "export", "journal"],
)
def test_a_wrong_pbx_is_one_line_naming_the_pbxs(sandbox_file: dict[str, str], words: list[str]) -> None:
    done = run_console(*words, env=sandbox_file, timeout=60)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == (
        f'threecx-mcp {words[0]}: There is no PBX named "nope"; --pbx is one of "hq" or "branch".\n'
    )


def test_pbx_is_refused_where_no_pbx_has_a_name(tmp_path: Path) -> None:
    env = user_env(tmp_path, THREECX_SANDBOX="true")
    for words in (["doctor", "--pbx", "hq"], ["import", "x.csv", "--pbx", "hq"]):
        done = run_console(*words, env=env, timeout=60)
        assert done.returncode == 2 and done.stdout == "", words
        assert '--pbx "hq" names a PBX, but no PBX has a name here' in done.stderr, words


def test_doctor_probe_with_several_pbxs_needs_pbx_and_journals_on_that_pbx(
    sandbox_file: dict[str, str],
) -> None:
    refused = run_console("doctor", "--probe", env=sandbox_file, timeout=60)
    assert refused.returncode == 2 and refused.stdout == ""
    assert "--probe writes a marker entry to one PBX, so with several PBXs say which with --pbx NAME" in (
        refused.stderr
    )
    probed = doctor(sandbox_file, "--probe", "--pbx", "branch")
    assert probed.code == 0, probed.stdout + probed.stderr
    assert 'Probing PBX "branch" with one marker entry (removed at the end):' in probed.stdout
    ids = set(re.findall(r"journaled as ([0-9a-f]+)", probed.stdout))
    assert len(ids) == 3  # its update, its clear and its delete
    on_branch = run_console("journal", "list", "--pbx", "branch", env=sandbox_file, timeout=60)
    assert on_branch.returncode == 0 and ids <= set(
        re.findall(r"^([0-9a-f]+) ", on_branch.stdout, re.MULTILINE)
    )
    on_hq = run_console("journal", "list", "--pbx", "hq", env=sandbox_file, timeout=60)
    assert on_hq.stdout == 'No operations journaled for PBX "hq" yet.\n'


# -- export and import ----------------------------------------------------------------------------


def test_export_and_import_act_on_the_pbx_named_only(real_pbxs: RealPbxs, tmp_path: Path) -> None:
    env = real_pbxs.env
    unnamed = run_console("export", env=env, timeout=60)
    assert unnamed.returncode == 2 and unnamed.stdout == ""
    assert unnamed.stderr == (
        "threecx-mcp export: Several PBXs are configured and none is the default: say which with --pbx "
        'NAME, one of "hq" or "branch".\n'
    )
    source = tmp_path / "carrier.csv"
    source.write_text("caller_id,description\n+442079460001,from the carrier\n+442079460002,\n")
    imported = run_console("import", str(source), "--pbx", "branch", "--yes", env=env, timeout=60)
    assert imported.returncode == 0, imported.stderr
    (operation_id,) = re.findall(r"^Operation ([0-9a-f]+):", imported.stdout, re.MULTILINE)
    new = {"+442079460001", "+442079460002"}
    assert new <= {entry["CallerId"] for entry in real_pbxs.branch.entries.values()}
    assert not new & {entry["CallerId"] for entry in real_pbxs.hq.entries.values()}

    def journal(*words: str) -> str:
        done = run_console("journal", *words, env=env, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert operation_id in journal("list", "--pbx", "branch")
    assert operation_id not in journal("list", "--pbx", "hq")
    (line,) = [line for line in journal("list").splitlines() if line.startswith(operation_id)]
    assert line.split()[3:5] == ["branch", "add"]  # every PBX's operations, each line naming its PBX

    exported = {}
    for name in ("hq", "branch"):
        done = run_console("export", "--pbx", name, env=env, timeout=60)
        assert done.returncode == 0 and f'of PBX "{name}" as CSV' in done.stderr
        exported[name] = {row["caller_id"] for row in csv.DictReader(io.StringIO(done.stdout))}
    assert new <= exported["branch"] and not new & exported["hq"]


@pytest.mark.anyio
async def test_an_import_is_undone_on_its_pbx(
    real_pbxs: RealPbxs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The import journaled on branch's view of the journal: a server on the same config file restores it
    there (restore finds the PBX an operation was made on), and hq is untouched."""
    source = tmp_path / "carrier.json"
    source.write_text('[{"caller_id": "+442079460003", "description": "undo me"}]')
    imported = run_console("import", str(source), "--pbx", "branch", "--yes", env=real_pbxs.env, timeout=60)
    (operation_id,) = re.findall(r"^Operation ([0-9a-f]+):", imported.stdout, re.MULTILINE)
    hq_before = dict(real_pbxs.hq.entries)
    for name, value in real_pbxs.env.items():
        if name.startswith("THREECX_"):
            monkeypatch.setenv(name, value)
    settings = Settings.load()
    async with Client(build_server(roster_for(settings), plans=plans_for(settings))) as client:
        restored = await call_confirmed(client, "restore_blacklist_numbers", {"operation_id": operation_id})
    assert not restored.is_error, restored.content
    assert "+442079460003" not in {entry["CallerId"] for entry in real_pbxs.branch.entries.values()}
    assert real_pbxs.hq.entries == hq_before


def test_export_without_pbx_reads_the_default_pbx(real_pbxs: RealPbxs) -> None:
    real_pbxs.branch.add("+15550109999", "only on branch")
    real_pbxs.write(default="branch")
    done = run_console("export", env=real_pbxs.env, timeout=60)
    assert done.returncode == 0 and "+15550109999" in done.stdout
    assert 'of PBX "branch"' in done.stderr


# -- serving ---------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_sandboxes_serve_several_pbxs_over_stdio(tmp_path: Path) -> None:
    env = {
        "THREECX_CONFIG_DIR": str(tmp_path),
        "THREECX_JOURNAL": str(tmp_path / "journal.sqlite3"),
    }
    params = StdioServerParameters(command=console_script(), args=["--sandboxes", "2"], env=env)
    async with Client(params) as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
        assert {"list_pbxs", "copy_blacklist_numbers"} <= set(tools)
        pbx = tools["list_blacklist_numbers"].input_schema["properties"]["pbx"]
        assert pbx["enum"] == ["sandbox-1", "sandbox-2"]
        assert "pbx" in tools["list_blacklist_numbers"].input_schema.get("required", [])  # no default
        page = await client.call_tool("list_blacklist_numbers", {"pbx": "sandbox-2", "limit": 3})
        assert not page.is_error and page.structured_content["total"] == 12  # type: ignore[index]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_the_http_start_up_line_names_every_pbx(real_pbxs: RealPbxs) -> None:
    port = free_port()
    server = subprocess.Popen(
        [console_script(), "--transport", "http", "--port", str(port)],
        env=real_pbxs.env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    watchdog = threading.Timer(30, server.kill)  # a server that never says it serves ends the read
    watchdog.start()
    try:
        assert server.stderr is not None
        line = ""
        for line in server.stderr:
            if "streamable HTTP" in line:
                break
    finally:
        watchdog.cancel()
        server.terminate()
        server.wait(timeout=30)
    hq, branch = real_pbxs.urls["hq"], real_pbxs.urls["branch"]
    assert line == (
        f"threecx-mcp: MCP over streamable HTTP at http://127.0.0.1:{port}/mcp "
        f"(2 PBXs: hq at {hq}, branch at {branch})\n"
    )


# -- the options themselves -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("words", "said"),
    [
        (["--sandboxes", "0"], 'from 1 to 20, such as 2, not "0"'),
        (["doctor", "--sandboxes", "21"], 'from 1 to 20, such as 2, not "21"'),
        (["export", "--sandboxes", "two"], 'from 1 to 20, such as 2, not "two"'),
        (["--sandbox", "--sandboxes", "2"], "argument --sandboxes: not allowed with argument --sandbox"),
    ],
)
def test_sandboxes_takes_1_to_20(words: list[str], said: str, capsys: pytest.CaptureFixture[str]) -> None:
    try:
        code = main(words)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 2
    err = capsys.readouterr().err
    assert code == 2 and said in err and not PYTHON_WORDS.search(err)


@pytest.mark.parametrize("command", ["serve", "doctor", "export", "import"])
def test_every_command_explains_sandboxes(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    try:
        code = main([command, "--help"])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 2
    assert code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "--sandboxes N" in out and "sandbox-1 to sandbox-N" in out
    if command != "serve":
        assert "--pbx NAME" in out
