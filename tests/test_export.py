"""`threecx-mcp export` and `import`, and the `threecx://blacklist.csv` resource, against the sandbox over HTTP.

The CLI runs as the installed console script in a subprocess, as an administrator runs it.
"""

from __future__ import annotations

import csv
import io
import json
import os
import pty
import resource
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from hypothesis import given
from hypothesis import strategies as st
from mcp import Client
from mcp.shared.exceptions import MCPError
from threecx_mcp.journal import Journal
from threecx_mcp.operations.export import (
    BLACKLIST_CSV_URI,
    RESOURCE_LIMIT_BYTES,
    from_cell,
    to_cell,
)
from threecx_mcp.sandbox import SEED_ENTRIES, Fault, LoopbackServer, Sandbox
from threecx_mcp.server import BlacklistServer

from .support import AUTH_TOKEN, call_confirmed, run_console
from .test_transports import pbx_env

Entry = tuple[str, str | None]

# Text a spreadsheet would run, or a terminal or a line-based reader would misread: all must come back as it was.
HOSTILE: list[Entry] = [
    ('=HYPERLINK("http://evil.example","click")', "formula in the caller ID"),
    ("+cmd|' /C calc'!A0", "DDE payload"),
    ("-2+3", "@SUM(A1:A9)"),
    ("@attacker", "=1+1"),
    ("'quoted", "'starts with an apostrophe"),
    ("''twice", "+ plain plus note"),
    ("  =padded", "\tstarts with a tab"),
    ("Caller\u202eevil", "right-to-left override \u202e in the note"),
    ("Line\u2028sep", 'line\nbreak, "quotes", commas, and \r\n CRLF'),
    ("Emoji \U0001f4de", "\u2029paragraph separator"),
    ("+442071838799", "a plain number stays as it is"),
    ("+44*", "a pattern starting with +"),
]


def run_cli(
    sandbox_url: str, *args: str, cwd: Path, env: dict[str, str] | None = None, **kwargs: Any
) -> subprocess.CompletedProcess[str]:
    """The console script against the sandbox (see `run_console`)."""
    return run_console(
        *args, env={**os.environ, **pbx_env(sandbox_url), **(env or {})}, cwd=cwd, timeout=300, **kwargs
    )


def read_csv(text: str) -> list[Entry]:
    """An export as a reader sees it: the header, then (caller_id, description) with the escape removed."""
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert rows[0] == ["caller_id", "description"]
    return [(from_cell(caller_id), from_cell(description) or None) for caller_id, description in rows[1:]]


def blacklist(sandbox: Sandbox) -> list[Entry]:
    """The sandbox's entries as an export lists them: sorted by caller ID, then id."""
    ordered = sorted(sandbox.entries.values(), key=lambda e: (e["CallerId"], e["Id"]))
    return [(e["CallerId"], e["Description"] or None) for e in ordered]


def fill(sandbox: Sandbox, count: int, note: str = "robocaller \u202eevil\u2028x") -> None:
    for i in range(count):
        sandbox.add(f"+1556{i:07d}", f"{note} {i}")


# -- the cell escape ---------------------------------------------------------------------------------


@given(st.text(max_size=30))
def test_every_value_round_trips_through_a_cell(text: str) -> None:
    assert from_cell(to_cell(text)) == text


@given(st.text(alphabet="=+-@\t\r '0123456789abc|!(", max_size=12))
def test_no_cell_starts_a_spreadsheet_formula(text: str) -> None:
    cell = to_cell(text)
    starts_formula = cell[:1] in ("\t", "\r") or cell.lstrip()[:1] in ("=", "+", "-", "@")
    plain_number = cell[:1] == "+" and cell[1:].isdigit()
    assert not starts_formula or plain_number


def test_plain_numbers_stay_readable_and_the_rest_is_neutralised() -> None:
    assert to_cell("+442071838750") == "+442071838750"
    assert to_cell("0800123456") == "0800123456"
    assert to_cell("+44*") == "'+44*"
    assert to_cell("=1+1") == "'=1+1"
    assert to_cell("'a") == "''a"


# -- export ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "variant",
    [{}, {"page_cap": 50}, {"page_cap": 50, "next_link": False}, {"page_cap": 50, "supports_count": False}],
    ids=["uncapped", "capped-nextlink", "capped-silently", "capped-no-count"],
)
def test_export_reads_every_entry_whatever_the_paging(
    sandbox: Sandbox, sandbox_url: str, tmp_path: Path, variant: dict[str, Any]
) -> None:
    fill(sandbox, 5_000)
    for text in HOSTILE:
        sandbox.add(*text)
    for name, value in variant.items():
        setattr(sandbox, name, value)
    done = run_cli(sandbox_url, "export", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert read_csv(done.stdout) == blacklist(sandbox)
    assert len(blacklist(sandbox)) == 5_000 + 12 + len(HOSTILE)
    assert "5024 entries as CSV to standard output" in done.stderr


def test_export_neutralises_formulas_in_the_file_itself(
    sandbox: Sandbox, sandbox_url: str, tmp_path: Path
) -> None:
    for text in HOSTILE:
        sandbox.add(*text)
    done = run_cli(sandbox_url, "export", "out.csv", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    cells = [
        cell
        for row in csv.reader(io.StringIO((tmp_path / "out.csv").read_text(), newline=""))
        for cell in row
    ]
    for cell in cells:
        runs = cell[:1] in ("\t", "\r") or cell.lstrip()[:1] in ("=", "+", "-", "@")
        assert not runs or (cell[:1] == "+" and cell[1:].isdigit()), cell
    assert "+442071838799" in cells and "'=1+1" in cells and "'+cmd|' /C calc'!A0" in cells


def test_export_as_json_to_a_private_file(sandbox: Sandbox, sandbox_url: str, tmp_path: Path) -> None:
    for text in HOSTILE:
        sandbox.add(*text)
    done = run_cli(sandbox_url, "export", "blacklist.json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    target = tmp_path / "blacklist.json"
    assert target.stat().st_mode & 0o777 == 0o600
    raw = target.read_text(encoding="utf-8")
    assert raw.isascii() and "\u202e" not in raw  # escaped: catting the file cannot reorder a terminal
    entries = json.loads(raw)
    assert [(e["caller_id"], e["description"]) for e in entries] == blacklist(sandbox)
    assert all(sandbox.entries[e["id"]]["CallerId"] == e["caller_id"] for e in entries)
    assert "as JSON to blacklist.json" in done.stderr and done.stdout == ""
    assert os.listdir(tmp_path) == ["blacklist.json"]  # no temporary file left beside it


def test_a_symlink_at_file_is_replaced_not_followed(
    sandbox: Sandbox, sandbox_url: str, tmp_path: Path
) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (tmp_path / "out.csv").symlink_to(victim)
    done = run_cli(sandbox_url, "export", "out.csv", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert victim.read_text() == "precious"
    assert not (tmp_path / "out.csv").is_symlink()
    assert read_csv((tmp_path / "out.csv").read_text()) == blacklist(sandbox)


@pytest.fixture
def previous_export(tmp_path: Path) -> Iterator[Path]:
    """FILE holding the last good export, which a failed export must leave exactly as it was."""
    target = tmp_path / "out.csv"
    good = b"caller_id,description\r\n+15550100199,the last good copy\r\n"
    target.write_bytes(good)
    yield target
    assert target.read_bytes() == good
    assert os.listdir(tmp_path) == ["out.csv"], "a temporary file was left behind"


def test_a_scan_failing_midway_leaves_file_as_it_was(
    sandbox: Sandbox, sandbox_url: str, previous_export: Path
) -> None:
    fill(sandbox, 2_000)
    sandbox.page_cap = 100
    pages = 0

    def fail_later_pages(request: Any) -> None:
        nonlocal pages
        if request.method == "GET" and request.path.startswith("/xapi/v1/BlackListNumbers"):
            pages += 1
            if pages == 5:
                sandbox.inject(Fault(status=500, times=100))

    sandbox.hooks.append(fail_later_pages)
    done = run_cli(sandbox_url, "export", "out.csv", cwd=previous_export.parent)
    assert done.returncode == 1
    assert pages >= 5
    assert "Traceback" not in done.stderr and "threecx-mcp export:" in done.stderr


def test_a_write_failing_midway_leaves_file_as_it_was(
    sandbox: Sandbox, sandbox_url: str, previous_export: Path
) -> None:
    """A disk that fills up mid-write: the process may write at most 64 KiB to any file."""
    fill(sandbox, 5_000)

    def small_disk() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (65_536, 65_536))

    done = run_cli(sandbox_url, "export", "out.csv", cwd=previous_export.parent, preexec_fn=small_disk)
    assert done.returncode == 1, done.stderr
    assert "Cannot write out.csv (File too large)" in done.stderr
    assert "any file already at that path is unchanged" in done.stderr


def test_an_unwritable_place_is_a_clear_error(sandbox: Sandbox, sandbox_url: str, tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    done = run_cli(sandbox_url, "export", "a-file/out.csv", cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.strip().endswith("any file already at that path is unchanged.")
    assert "Cannot write a-file/out.csv (Not a directory)" in done.stderr
    done = run_cli(sandbox_url, "export", ".", cwd=tmp_path)  # a folder where FILE should be
    assert done.returncode == 1 and "Cannot write ." in done.stderr
    assert sorted(os.listdir(tmp_path)) == ["a-file"]


def test_usage_errors_exit_2(sandbox_url: str, tmp_path: Path) -> None:
    done = run_cli(sandbox_url, "export", "--format", "xml", cwd=tmp_path)
    assert done.returncode == 2 and '"xml" is not one of csv or json' in done.stderr
    done = run_cli(sandbox_url, "--read-only", "export", cwd=tmp_path)
    assert done.returncode == 2 and "threecx-mcp export --help" in done.stderr
    done = run_cli(sandbox_url, "export", cwd=tmp_path, env={"THREECX_URL": ""})
    assert done.returncode == 2 and "THREECX_URL is not set" in done.stderr and done.stdout == ""


# -- the resource ------------------------------------------------------------------------------------


async def read_resource(client: Client, uri: str) -> tuple[str, str | None]:
    contents = (await client.read_resource(uri)).contents[0]
    return contents.text, contents.mime_type  # type: ignore[union-attr]


@pytest.mark.anyio
@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_the_resource_holds_the_export(
    sandbox: Sandbox, make_server: Callable[..., BlacklistServer], tmp_path: Path, sandbox_url: str, mode: str
) -> None:
    for text in HOSTILE:
        sandbox.add(*text)
    sandbox.page_cap = 5
    async with Client(make_server(read_only=True), mode=mode) as client:
        templates = (await client.list_resource_templates()).resource_templates
        listed = next(t for t in templates if t.uri_template.startswith(BLACKLIST_CSV_URI))
        assert listed.mime_type == "text/csv"
        text, mime_type = await read_resource(client, BLACKLIST_CSV_URI)
    assert mime_type == "text/csv"
    assert read_csv(text) == blacklist(sandbox)
    exported = run_cli(sandbox_url, "export", cwd=tmp_path)
    assert text == exported.stdout  # byte for byte what the CLI writes


@pytest.mark.anyio
@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_a_blacklist_too_large_for_one_read_comes_in_parts(
    sandbox: Sandbox, make_server: Callable[..., BlacklistServer], mode: str
) -> None:
    fill(sandbox, 6_000, note="a long note about this robocaller, who calls every night " * 3)
    async with Client(make_server(), mode=mode) as client:
        with pytest.raises(MCPError) as refused:
            await client.read_resource(BLACKLIST_CSV_URI)
        message = str(refused.value)
        assert "6012 entries" in message and "threecx-mcp export blacklist.csv" in message
        parts = [
            word.rstrip(",") for word in message.split() if word.startswith(BLACKLIST_CSV_URI + "?start=")
        ]
        assert len(parts) >= 2 and parts[0].endswith("?start=0")
        rows: list[Entry] = []
        for uri in parts:
            text, _ = await read_resource(client, uri)
            assert len(json.dumps(text, ensure_ascii=False).encode()) <= RESOURCE_LIMIT_BYTES + 100
            rows += read_csv(text)
        for bad in ("-1", "1e5", "9" * 5_000):  # each refused with the reason, none echoed whole
            with pytest.raises(MCPError, match="start is the position of an entry") as refused:
                await client.read_resource(BLACKLIST_CSV_URI + f"?start={bad}")
            assert len(str(refused.value)) < 400
        with pytest.raises(MCPError, match="past the end: the blacklist holds 6012 entries"):
            await client.read_resource(BLACKLIST_CSV_URI + "?start=6013")
    assert rows == blacklist(sandbox)


@pytest.mark.anyio
async def test_the_largest_part_reaches_an_sdk_client_over_streamable_http(
    sandbox: Sandbox, http_server: str
) -> None:
    """The SDK's client refuses a streamable HTTP event over 1 MiB: a full part must stay under it."""
    fill(sandbox, 6_000, note='\u00e9\u202e"quoted" \u2028 note with escapes ' * 5)
    from mcp.client.streamable_http import streamable_http_client

    headers = {"Authorization": f"Bearer {AUTH_TOKEN}"}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=120) as http,
        Client(streamable_http_client(f"{http_server}/mcp", http_client=http)) as client,
    ):
        text, _ = await read_resource(client, BLACKLIST_CSV_URI + "?start=0")
    rows = read_csv(text)
    assert len(rows) < 6_012 and rows == blacklist(sandbox)[: len(rows)]
    assert len(json.dumps(text, ensure_ascii=False).encode()) > RESOURCE_LIMIT_BYTES - 2_000  # a full part


@pytest.mark.anyio
async def test_a_pbx_failure_reads_as_a_sentence(
    sandbox: Sandbox, make_server: Callable[..., BlacklistServer]
) -> None:
    sandbox.inject(Fault(status=403, times=10))
    async with Client(make_server()) as client:
        with pytest.raises(MCPError, match="System Owner"):
            await client.read_resource(BLACKLIST_CSV_URI)


# -- import ------------------------------------------------------------------------------------------

# What the add rules accept (no control or bidi characters in a caller ID, none below U+0020 in a
# note), and still hostile to a spreadsheet, a CSV reader or a terminal.
ACCEPTED: list[Entry] = [
    ('=HYPERLINK("http://evil.example","click")', "formula in the caller ID"),
    ("+cmd|' /C calc'!A0", "=1+1"),
    ("@attacker", "-2+3, with a comma"),
    ("'quoted", "'starts with an apostrophe"),
    ("Jos\u00e9 \U0001f4de", 'right-to-left \u202e override and a line\u2028separator, "quoted"'),
    ("+442071838799", None),
    ("+44*", "a pattern starting with +"),
]


@pytest.fixture
def empty_pbx() -> Iterator[tuple[Sandbox, str]]:
    """A second PBX, empty: where an exported blacklist is brought."""
    pbx = Sandbox(seed=False)
    with LoopbackServer(pbx.app) as server:
        yield pbx, server.url


@pytest.mark.parametrize("form", ["csv", "json"])
def test_export_then_import_into_a_new_pbx_gives_the_same_blacklist(
    sandbox: Sandbox, sandbox_url: str, empty_pbx: tuple[Sandbox, str], tmp_path: Path, form: str
) -> None:
    fill(sandbox, 300, note='robocaller \u202e\u2028 "night", calls')
    for entry in ACCEPTED:
        sandbox.add(*entry)
    exported = run_cli(sandbox_url, "export", f"blacklist.{form}", cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    target, target_url = empty_pbx
    target.page_cap = 50
    env = {"THREECX_JOURNAL": str(tmp_path / "journal.sqlite3")}
    done = run_cli(target_url, "import", f"blacklist.{form}", "--yes", cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert blacklist(target) == blacklist(sandbox)
    assert f"{len(blacklist(sandbox))} added, 0 already present, 0 invalid" in done.stdout
    again = run_cli(target_url, "import", f"blacklist.{form}", "--yes", cwd=tmp_path, env=env)
    assert again.returncode == 0, again.stderr
    assert f"0 would be added, {len(blacklist(sandbox))} already present" in again.stdout
    assert blacklist(target) == blacklist(sandbox)


def test_import_dry_run_changes_nothing(sandbox: Sandbox, sandbox_url: str, tmp_path: Path) -> None:
    (tmp_path / "in.csv").write_text("caller_id,description\n+44 20 7946 0999,new\n+15550100199,seeded\n")
    before = blacklist(sandbox)
    env = {"THREECX_JOURNAL": str(tmp_path / "journal.sqlite3")}
    done = run_cli(sandbox_url, "import", "in.csv", "--dry-run", "--yes", cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    assert "Dry run: 1 would be added, 1 already present" in done.stdout
    assert 'row 2: already_present "+15550100199" (entry "2")' in done.stdout
    assert blacklist(sandbox) == before
    assert sandbox.count("POST", "/xapi/") == 0
    assert not (tmp_path / "journal.sqlite3").exists()


@pytest.mark.anyio
async def test_import_is_journaled_and_restore_removes_it(
    sandbox: Sandbox,
    sandbox_url: str,
    journal: Journal,
    make_server: Callable[..., BlacklistServer],
    tmp_path: Path,
) -> None:
    (tmp_path / "in.csv").write_text(
        "caller_id,description\n+44 20 7946 0999,first\n'=evil,second\n+15550100199,seeded\n"
    )
    env = {"THREECX_JOURNAL": str(journal.path)}
    done = run_cli(sandbox_url, "import", "in.csv", "--yes", cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    assert {"+442079460999", "=evil"} <= {e["CallerId"] for e in sandbox.entries.values()}
    operation_id = done.stdout.split("Operation ", 1)[1].split(":", 1)[0]
    listed = run_cli(sandbox_url, "journal", "list", cwd=tmp_path, env=env)
    assert operation_id in listed.stdout and "add" in listed.stdout and "2 added" in listed.stdout
    async with Client(make_server()) as client:
        result = await call_confirmed(client, "restore_blacklist_numbers", {"operation_id": operation_id})
    assert not result.is_error, result.content
    assert sorted((e["CallerId"], e["Description"]) for e in sandbox.entries.values()) == sorted(SEED_ENTRIES)


def test_import_asks_at_a_terminal_and_needs_yes_without_one(
    sandbox: Sandbox, sandbox_url: str, tmp_path: Path
) -> None:
    (tmp_path / "in.csv").write_text("caller_id,description\n+44 20 7946 0999,new\n")
    env = {"THREECX_JOURNAL": str(tmp_path / "journal.sqlite3")}
    done = run_cli(sandbox_url, "import", "in.csv", cwd=tmp_path, env=env)
    assert done.returncode == 2 and "run again with --yes" in done.stderr
    assert "+442079460999" not in {e["CallerId"] for e in sandbox.entries.values()}
    for answer, code, added in (("n", 1, False), ("y", 0, True)):
        controller, terminal = pty.openpty()
        os.write(controller, f"{answer}\n".encode())
        try:
            done = run_cli(sandbox_url, "import", "in.csv", cwd=tmp_path, env=env, stdin=terminal)
        finally:
            os.close(terminal)
            os.close(controller)
        assert "Add 1 entry to the blacklist on http://127.0.0.1" in done.stderr
        assert done.returncode == code, done.stderr
        assert ("+442079460999" in {e["CallerId"] for e in sandbox.entries.values()}) is added


@pytest.mark.parametrize(
    ("name", "content", "code", "said"),
    [
        ("missing.csv", None, 2, "Cannot read missing.csv (No such file or directory)"),
        ("in.json", b"caller_id,description\n+4420\n", 2, "ends in .json but holds no JSON list"),
        ("in.csv", b'[{"caller_id": "+4420"}]', 2, "ends in .csv but holds a JSON list"),
        ("in.csv", b"caller_id,description\n\xff\xfe+44\n", 2, "is not UTF-8 text (byte 23)"),
        ("in.csv", b"caller_id," + b"x" * 2_000_001, 2, "larger than the 2,000,000 bytes"),
        ("in.csv", b"number,note\n+4420\n", 1, "header caller_id,description"),
        ("in.json", b'[{"caller_id": 1.5}]', 1, "Row 1: caller_id must be text"),
    ],
)
def test_import_refuses_what_it_cannot_read(
    sandbox: Sandbox, sandbox_url: str, tmp_path: Path, name: str, content: bytes | None, code: int, said: str
) -> None:
    if content is not None:
        (tmp_path / name).write_bytes(content)
    done = run_cli(sandbox_url, "import", name, "--yes", cwd=tmp_path)
    assert done.returncode == code, done.stderr
    assert said in done.stderr and "Traceback" not in done.stderr
    assert sandbox.count("POST", "/xapi/") == 0


def test_import_exit_code_1_when_some_entries_are_invalid_or_fail(
    sandbox: Sandbox, sandbox_url: str, tmp_path: Path
) -> None:
    (tmp_path / "in.csv").write_text(
        "caller_id,description\n+44 20 7946 0999,ok\n*,everyone\n+1555010088,fails\n"
    )

    def fail_one_create(request: Any) -> None:
        if request.method == "POST" and b"+1555010088" in request.body:
            sandbox.inject(Fault(status=400, times=1, method="POST"))

    sandbox.hooks.append(fail_one_create)
    done = run_cli(sandbox_url, "import", "in.csv", "--yes", cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    assert "1 added" in done.stdout and "1 invalid" in done.stdout and "1 failed" in done.stdout
    assert 'row 2: invalid "*"' in done.stdout and 'row 3: failed "+1555010088"' in done.stdout
    assert "+442079460999" in {e["CallerId"] for e in sandbox.entries.values()}
