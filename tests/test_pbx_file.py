"""The config file naming several PBXs (issue 13): read in its order with its default, every mistake in it
reported at once by table and key and never by a secret value, a key written in it allowed only while no
one else can read it, and the environment-variable setup left exactly as it was when there is no file.

Driven as the server reads it: THREECX_CONFIG (or config.toml in the user config folder), `Settings.load`,
then `pbx_settings` / `roster_for`, as `threecx-mcp` and `doctor` do."""

from __future__ import annotations

import concurrent.futures
import json
import os
import ssl
import sys
from pathlib import Path

import pytest
from mcp import Client
from pydantic import SecretStr
from threecx_mcp.config import Settings, SettingsIncomplete
from threecx_mcp.errors import ConfigError
from threecx_mcp.pbx_file import MAX_CONFIG_BYTES, read_pbx_file
from threecx_mcp.server import build_server
from threecx_mcp.wiring import Configured, pbx_settings, roster_for

from .support import REPO, write_certificate

# Secrets the file tests hold; unique to this module, so no other test can have taught the redactor them
# (a leak would then be hidden by redaction rather than absent).
LITERAL_KEY = "pbxfile-literal-key-7f3a9c1e55d0b2"
ENV_KEY = "pbxfile-env-key-0c4e8a6d21b97f"
FILE_KEY = "pbxfile-file-key-9b1d3f5a7c2e4d"
PASTED_KEY = "Qx7pL2mN9vB4sK8dF3hJ6tY1wE5rU0zA"  # what a key pasted into client_secret_env looks like
SECRETS = (LITERAL_KEY, ENV_KEY, FILE_KEY, PASTED_KEY)
posix_only = pytest.mark.skipif(sys.platform == "win32", reason="file modes are ACLs on Windows")


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """No THREECX_* variable of the developer's, no .env: the user config folder and the working
    directory are this test's own."""
    for name in list(os.environ):
        if name.upper().startswith("THREECX_"):
            monkeypatch.delenv(name)
    (tmp_path / "user-config").mkdir()
    monkeypatch.setenv("THREECX_CONFIG_DIR", str(tmp_path / "user-config"))
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")  # relative paths must not start here
    return monkeypatch


def write(path: Path, text: str, mode: int = 0o600) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    path.chmod(mode)
    return path


def configured(env: pytest.MonkeyPatch, path: Path, **overrides: object) -> Configured:
    env.setenv("THREECX_CONFIG", str(path))
    return pbx_settings(Settings.load(**overrides))


def problems(env: pytest.MonkeyPatch, path: Path) -> list[str]:
    """Every problem the server names in the file, each as written (before the last redaction net, so a
    leaked secret would show)."""
    with pytest.raises(ConfigError) as caught:
        configured(env, path)
    found = caught.value.problems if isinstance(caught.value, SettingsIncomplete) else (caught.value,)
    said = [problem.message for problem in found]
    for text in said:
        assert not any(secret in text for secret in SECRETS), text
        assert "Traceback" not in text and "pydantic" not in text, text
    return said


def one_problem(env: pytest.MonkeyPatch, path: Path) -> str:
    (said,) = problems(env, path)
    return said


# -- a valid file -----------------------------------------------------------------------------------


def test_a_valid_file_gives_its_pbxs_in_its_order_with_its_default(
    env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    folder = tmp_path / "conf"
    write(folder / "keys" / "zulu.key", FILE_KEY + "\n")
    write_certificate(folder, "branch-ca", [], None)  # folder / "branch-ca.pem"
    env.setenv("MIKE_KEY", ENV_KEY)
    path = write(
        folder / "pbxs.toml",
        f"""
default = "mike"

[pbx.zulu]
url = "https://zulu.example.com"
client_id = "threecx-mcp"
client_secret_file = "keys/zulu.key"

[pbx.mike]
url = "mike.example.com:5001/#/office"
client_id = "mcp-mike"
client_secret_env = "MIKE_KEY"
ca_bundle = "branch-ca.pem"
read_only = true

[pbx.alpha]
url = "http://10.0.0.7:5000"
client_id = "a"
client_secret = "{LITERAL_KEY}"
verify_tls = false

[pbx."lab-1.test"]
sandbox = true
""",
    )
    read = read_pbx_file(path)
    assert [named.name for named in read.pbxs] == ["zulu", "mike", "alpha", "lab-1.test"]  # the file's order
    assert read.default == "mike"

    found = configured(env, path)
    assert (found.default, found.file) == ("mike", path)
    by_name = {pbx.name: pbx for pbx in found.pbxs}
    assert list(by_name) == ["zulu", "mike", "alpha", "lab-1.test"]
    assert [pbx.read_only for pbx in found.pbxs] == [False, True, False, False]
    zulu, mike, alpha = (by_name[n].connection for n in ("zulu", "mike", "alpha"))
    assert zulu is not None and mike is not None and alpha is not None
    assert zulu.endpoint.origin == "https://zulu.example.com"
    assert zulu.client_secret.get_secret_value() == FILE_KEY  # relative to the file's folder, not the cwd
    assert (mike.endpoint.origin, mike.client_id) == ("https://mike.example.com:5001", "mcp-mike")
    assert mike.client_secret.get_secret_value() == ENV_KEY and isinstance(mike.verify, ssl.SSLContext)
    assert alpha.client_secret.get_secret_value() == LITERAL_KEY and alpha.verify is False
    assert by_name["lab-1.test"].connection is None and by_name["lab-1.test"].location == "sandbox"
    # Each PBX's journal key: its origin (a sandbox: sandbox/NAME), so their histories never mix.
    assert [pbx.key for pbx in found.pbxs] == [
        "https://zulu.example.com",
        "https://mike.example.com:5001",
        "http://10.0.0.7:5000",
        "sandbox/lab-1.test",
    ]

    roster = roster_for(Settings.load(journal=tmp_path / "state" / "journal.sqlite3"))
    assert roster.names == ["zulu", "mike", "alpha", "lab-1.test"] and roster.default == "mike"
    assert roster.several and roster.pick(None).name == "mike"
    roster.close()


def test_config_toml_in_the_user_config_folder_is_read_without_threecx_config(
    env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    write(
        tmp_path / "user-config" / "config.toml",
        "[pbx.one]\nsandbox = true\n\n[pbx.two]\nsandbox = true\nread_only = true\n",
    )
    found = pbx_settings(Settings.load())
    assert [(pbx.name, pbx.read_only) for pbx in found.pbxs] == [("one", False), ("two", True)]
    assert found.default is None


def test_a_key_file_path_may_start_with_the_home_folder(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env.setenv("HOME", str(tmp_path / "home"))
    write(tmp_path / "home" / "keys" / "hq.key", FILE_KEY)
    path = write(
        tmp_path / "conf" / "config.toml",
        '[pbx.hq]\nurl = "hq.example.com"\nclient_id = "x"\nclient_secret_file = "~/keys/hq.key"\n'
        "[pbx.lab]\nsandbox = true\n",
    )
    (hq, _) = configured(env, path).pbxs
    assert hq.connection is not None and hq.connection.client_secret.get_secret_value() == FILE_KEY


# -- every mistake, by table and key ------------------------------------------------------------------

GOOD = "[pbx.fine]\nsandbox = true\n"  # a second table, so each case is a file of several PBXs

MISTAKES = {
    "unknown key": (
        f'[pbx.hq]\nurl = "hq.example.com"\nclient_id = "x"\nclient_secret_env = "HQ_KEY"\nclientsecret = "{LITERAL_KEY}"\n',
        ["[pbx.hq]", '"clientsecret"', "means nothing here", "client_secret_env"],
    ),
    "unknown top-level key": ('colour = "blue"\n', ['"colour"', "top-level", "[pbx.NAME]"]),
    "wrong type": (
        '[pbx.hq]\nurl = 5001\nclient_id = "x"\nclient_secret_env = "HQ_KEY"\n',
        ["url of [pbx.hq]", "not valid", "string"],
    ),
    "wrong type of a flag": (
        '[pbx.hq]\nsandbox = true\nread_only = "yes"\n',
        ["read_only of [pbx.hq]", "boolean"],
    ),
    "a table that is not a table": ("[pbx]\nhq = 5\n", ["[pbx.hq]", "must be a table"]),
    "bad name": ('[pbx."head office!"]\nsandbox = true\n', ['"head office!"', "not usable", "1 to 40"]),
    "default naming no table": (
        'default = "hqq"\n',
        ['default = "hqq"', "names no [pbx.NAME] table", '"fine"'],
    ),
    "two ways of giving the key": (
        f'[pbx.hq]\nurl = "hq.example.com"\nclient_id = "x"\nclient_secret = "{LITERAL_KEY}"\nclient_secret_env = "HQ_KEY"\n',
        ["[pbx.hq]", "2 ways", "client_secret, client_secret_env", "keep only one"],
    ),
    "sandbox table with url": (
        '[pbx.lab]\nsandbox = true\nurl = "https://lab.example.com"\nclient_id = "x"\n',
        ["[pbx.lab]", "sandbox = true", "url, client_id"],
    ),
    "client_secret_env unset": (
        '[pbx.hq]\nurl = "hq.example.com"\nclient_id = "x"\nclient_secret_env = "HQ_UNSET_KEY"\n',
        ["client_secret_env of [pbx.hq]", "HQ_UNSET_KEY", "not set"],
    ),
    "client_secret_env holding the key itself": (
        '[pbx.hq]\nurl = "hq.example.com"\nclient_id = "x"\nclient_secret_env = "sk-live-2f9c-41aa-88d1"\n',
        ["client_secret_env of [pbx.hq]", "name of an environment variable", "not the API key itself"],
    ),
    "client_secret_env holding a key that looks like a name": (
        f'[pbx.hq]\nurl = "hq.example.com"\nclient_id = "x"\nclient_secret_env = "{PASTED_KEY}"\n',
        ["client_secret_env of [pbx.hq]", "not set", "not shown"],
    ),
    "url missing": (
        '[pbx.hq]\nclient_id = "x"\nclient_secret_env = "SET_KEY"\n',
        ["url of [pbx.hq]", "not set"],
    ),
    "client_secret_file missing, relative to the file's folder": (
        '[pbx.hq]\nurl = "hq.example.com"\nclient_id = "x"\nclient_secret_file = "missing.key"\n',
        ["client_secret_file of [pbx.hq]", "cannot be read"],
    ),
    "empty url": (
        '[pbx.hq]\nurl = "  "\nclient_id = "x"\nclient_secret_env = "SET_KEY"\n',
        ["url of [pbx.hq]"],
    ),
    "no table at all": ("", ["names no PBX", "[pbx.NAME]"]),
}


@pytest.mark.parametrize("mistake", sorted(MISTAKES))
def test_each_mistake_is_named_by_table_and_key(
    env: pytest.MonkeyPatch, tmp_path: Path, mistake: str
) -> None:
    env.setenv("SET_KEY", ENV_KEY)
    text, words = MISTAKES[mistake]
    path = write(tmp_path / "conf" / "config.toml", text + ("" if mistake == "no table at all" else GOOD))
    said = one_problem(env, path)
    for word in words:
        assert word in said, (word, said)


def test_every_mistake_in_the_file_is_reported_at_once(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """One file holding every kind of mistake, in different tables: each is named, none hides another
    (an unknown key, found while reading the file's shape, must not hide an unset variable found later)."""
    env.setenv("SET_KEY", ENV_KEY)
    tables, expected = [], []
    for number, mistake in enumerate(sorted(m for m in MISTAKES if m != "no table at all")):
        text, words = MISTAKES[mistake]
        # Each mistake in a table of its own: rename [pbx.hq] and [pbx.lab] to one per mistake.
        renamed = text.replace("[pbx.hq]", f"[pbx.hq{number}]").replace("[pbx.lab]", f"[pbx.lab{number}]")
        renamed = renamed.replace("hq = 5", f"hq{number} = 5")
        tables.append(renamed)
        expected.append(
            [
                w.replace("[pbx.hq]", f"[pbx.hq{number}]").replace("[pbx.lab]", f"[pbx.lab{number}]")
                for w in words
            ]
        )
    top = [t for t in tables if not t.startswith("[")]
    rest = [t for t in tables if t.startswith("[")]
    # Top-level keys first (TOML puts everything after a table header into that table); [pbx] tables after.
    path = write(tmp_path / "conf" / "config.toml", "".join(top) + GOOD + "".join(rest))
    said = problems(env, path)
    for words in expected:
        assert any(all(word in problem for word in words) for problem in said), (words, said)
    assert len(said) == len(expected)


def test_a_problem_of_one_table_does_not_hide_the_connection_settings_of_another(
    env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = write(
        tmp_path / "config.toml",
        '[pbx.hq]\nurl = "hq.example.com"\nclientid = "x"\n'  # a typo: found while reading the shape
        '[pbx.branch]\nclient_id = "x"\nclient_secret_file = "none.key"\n',  # found only when connecting
    )
    said = problems(env, path)
    assert len(said) == 3
    assert '"clientid"' in said[0] and "url of [pbx.branch]" in said[1]
    assert "client_secret_file of [pbx.branch]" in said[2]


def test_a_key_pasted_in_place_of_a_variable_name_is_never_shown(
    env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """An API key of letters and digits is a valid variable name too: only a conventional one
    (upper case, such as HQ_KEY) is named when it is not set."""
    path = write(
        tmp_path / "config.toml",
        f'[pbx.hq]\nurl = "hq.example.com"\nclient_id = "x"\nclient_secret_env = "{PASTED_KEY}"\n'
        '[pbx.branch]\nurl = "branch.example.com"\nclient_id = "x"\nclient_secret_env = "BRANCH_KEY"\n',
    )
    pasted, named = problems(env, path)  # `problems` asserts no secret appears
    assert "32 characters" in pasted and "[pbx.hq]" in pasted
    assert "BRANCH_KEY" in named and "[pbx.branch]" in named


def test_a_table_with_a_bad_name_is_quoted_never_shown_raw(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = write(tmp_path / "config.toml", '[pbx."evil\\u202e\\nname"]\nclient_id = "x"\n' + GOOD)
    said = problems(env, path)
    assert len(said) == 3  # the name, then its url and key, still checked
    assert all("\u202e" not in text and "\n" not in text for text in said)
    assert "\\u202e" in said[0] and all('[pbx."evil' in text for text in said[1:])


def test_not_toml_is_said_with_a_position_and_never_the_text(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = write(
        tmp_path / "config.toml", f'[pbx.hq]\nurl = "hq.example.com"\nclient_secret = {LITERAL_KEY}\n'
    )
    said = one_problem(env, path)
    assert "not valid TOML" in said and "line 3" in said


def test_not_utf8_is_said(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_bytes("[pbx.hq]\nsandbox = true\n# café\n".encode("utf-16"))
    assert "not UTF-8" in one_problem(env, path)
    path.write_bytes(b"\xef\xbb\xbf[pbx.hq]\nsandbox = true\n[pbx.lab]\nsandbox = true\n")  # BOM: fine
    assert [pbx.name for pbx in configured(env, path).pbxs] == ["hq", "lab"]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_a_fifo_at_the_path_is_refused_without_waiting(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    os.mkfifo(path)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        reading = pool.submit(problems, env, path)
        try:
            said = reading.result(timeout=5)
        except concurrent.futures.TimeoutError:
            os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))  # let the stuck reader go, then fail
            pytest.fail("reading a FIFO as the config file blocked")
    assert len(said) == 1 and "not a regular file" in said[0]


def test_a_platform_without_o_nonblock_still_reads_the_file(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Windows has no os.O_NONBLOCK: opening the file must not depend on it."""
    env.delattr(os, "O_NONBLOCK", raising=False)
    path = write(tmp_path / "config.toml", "[pbx.hq]\nsandbox = true\n[pbx.lab]\nsandbox = true\n")
    assert [pbx.name for pbx in read_pbx_file(path).pbxs] == ["hq", "lab"]


def test_a_huge_file_is_refused_before_it_is_parsed(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_bytes(b"# padding\n" * (MAX_CONFIG_BYTES // 10 + 1))
    said = one_problem(env, path)
    assert "larger than" in said and "1,000,000 bytes" in said


def test_a_deeply_nested_file_is_refused_in_words(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """tomllib recurses into nested arrays: a file of brackets must be a sentence, not a RecursionError."""
    path = write(tmp_path / "config.toml", "x = " + "[" * 50_000)
    said = one_problem(env, path)
    assert "too deeply" in said


def test_a_file_of_thousands_of_mistakes_gets_a_message_one_can_read(
    env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    keys = "".join(f"key{i} = {i}\n" for i in range(5_000))
    path = write(tmp_path / "config.toml", f"[pbx.hq]\nsandbox = true\n{keys}")
    said = problems(env, path)
    assert len(said) <= 30 and "4,975 more problems" in said[-1]
    assert sum(len(text) for text in said) < 20_000


# -- a key in the file itself -----------------------------------------------------------------------


@posix_only
@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_a_literal_key_is_refused_while_others_may_read_the_file(
    env: pytest.MonkeyPatch, tmp_path: Path, mode: int
) -> None:
    text = f'[pbx.hq]\nurl = "hq.example.com"\nclient_id = "x"\nclient_secret = "{LITERAL_KEY}"\n{GOOD}'
    path = write(tmp_path / "config.toml", text, mode)
    said = one_problem(env, path)
    assert "[pbx.hq]" in said and "client_secret" in said and f"{mode:04o}" in said and "chmod 600" in said


@posix_only
def test_a_literal_key_is_accepted_in_a_file_only_its_owner_reads(
    env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    text = f'[pbx.hq]\nurl = "hq.example.com"\nclient_id = "x"\nclient_secret = "  {LITERAL_KEY} "\n{GOOD}'
    path = write(tmp_path / "config.toml", text, 0o600)
    (hq, _) = configured(env, path).pbxs
    assert hq.connection is not None and hq.connection.client_secret.get_secret_value() == LITERAL_KEY
    # The mode matters only for a key in the file: the other ways are fine in a file anyone reads.
    env.setenv("HQ_KEY", ENV_KEY)
    path = write(
        tmp_path / "config.toml",
        text.replace(f'client_secret = "  {LITERAL_KEY} "', 'client_secret_env = "HQ_KEY"'),
        0o644,
    )
    (hq, _) = configured(env, path).pbxs
    assert hq.connection is not None and hq.connection.client_secret.get_secret_value() == ENV_KEY


# -- the file beside the environment's settings -------------------------------------------------------


def test_threecx_config_pointing_nowhere_is_refused(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    said = one_problem(env, tmp_path / "no-such" / "pbxs.toml")
    assert "THREECX_CONFIG" in said and "pbxs.toml" in said and "does not exist" in said


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("THREECX_URL", "https://pbx.example.com"),
        ("THREECX_CLIENT_SECRET", ENV_KEY),
        ("THREECX_CLIENT_ID", "x"),
    ],
)
def test_a_config_file_beside_one_pbx_variables_is_refused_naming_both(
    env: pytest.MonkeyPatch, tmp_path: Path, variable: str, value: str
) -> None:
    env.setenv(variable, value)
    path = write(tmp_path / "pbxs.toml", "[pbx.hq]\nsandbox = true\n[pbx.lab]\nsandbox = true\n")
    said = one_problem(env, path)  # never the value: the key may be one of them
    assert variable in said and "pbxs.toml" in said and "the environment" in said and "[pbx.NAME]" in said


def test_without_a_file_the_environment_names_one_unnamed_pbx_as_before(
    env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    env.setenv("THREECX_URL", "pbx.example.com:5001")
    env.setenv("THREECX_CLIENT_ID", "mcp")
    env.setenv("THREECX_CLIENT_SECRET", ENV_KEY)
    settings = Settings.load(journal=tmp_path / "journal.sqlite3")
    found = pbx_settings(settings)
    (only,) = found.pbxs
    assert (only.name, only.key, found.default, found.file) == (
        None,
        "https://pbx.example.com:5001",
        None,
        None,
    )
    assert only.connection is not None and only.connection.client_secret == SecretStr(ENV_KEY)
    roster = roster_for(settings)
    assert not roster.several and roster.names == [] and roster.pick(None).name is None
    roster.close()


@pytest.mark.anyio
async def test_without_a_file_the_tools_are_exactly_as_before(
    env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The environment setup's tools/list is the committed single-PBX snapshot: no pbx anywhere."""
    env.setenv("THREECX_URL", "https://pbx.example.com")
    env.setenv("THREECX_CLIENT_ID", "mcp")
    env.setenv("THREECX_CLIENT_SECRET", ENV_KEY)
    async with Client(build_server(roster_for(Settings.load(journal=tmp_path / "j.sqlite3")))) as client:
        tools = (await client.list_tools()).tools
    current = [t.model_dump(mode="json", by_alias=True, exclude_none=True) for t in tools]
    assert current == json.loads((REPO / "tests" / "snapshots" / "tools_list.json").read_text())
    assert not any("pbx" in json.dumps(tool["inputSchema"]) for tool in current)
