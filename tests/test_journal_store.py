"""The SQLite safety journal on its own: durable, private, exact, per PBX, and readable from a terminal.

Everything runs on real files, real SQLite and real processes; failures (a FIFO at the path, a
foreign file, a read-only or full file system, a crash right after a write, a second writer) are
made for real where the machine allows it, never simulated inside the journal.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import stat
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import pytest
from threecx_mcp import journal_cli
from threecx_mcp.errors import JournalError
from threecx_mcp.journal import EntryImage, ItemRecord, Journal, OperationKind, OperationRecord

# Text an attacker or an unlucky admin can put in a caller ID or description: every line
# separator Python's str.splitlines() knows, quotes, a backslash, a bidi override and emoji.
NASTY = "a\u2028b\u2029c\u0085d\x1c\x1d\x1e\x0b\x0c\r'\"\\\u202e\U0001f600 \u00e9 \u4e2d"


def delete_item(entry_id: str, caller_id: str = "+15550100", description: str | None = None) -> ItemRecord:
    return ItemRecord(before=EntryImage(entry_id, caller_id, description), after=None)


def finished(item: ItemRecord, status: str, reason: str | None = None) -> ItemRecord:
    return ItemRecord(before=item.before, after=item.after, status=status, reason=reason)


def sqlite_rows(path: Path, query: str) -> list[tuple[object, ...]]:
    """Read the file directly, as an auditor with the sqlite3 shell would."""
    with closing(sqlite3.connect(path)) as db:
        return db.execute(query).fetchall()


def sqlite_write(path: Path, statement: str, *parameters: object) -> None:
    with closing(sqlite3.connect(path)) as db, db:
        db.execute(statement, parameters)


def run_python(script: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


# --- records and durability -------------------------------------------------------------------


@pytest.mark.anyio
async def test_every_field_round_trips_exactly(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"
    journal = Journal(path, "https://pbx.example.com")
    planned = [
        delete_item("1", NASTY, NASTY),
        delete_item("'2'", "*eremy", ""),
        delete_item(NASTY, "+44", None),
        ItemRecord(before=None, after=EntryImage("", NASTY, "re-created")),
        ItemRecord(before=EntryImage("5", "old", "x"), after=EntryImage("5", "new", None)),
    ]
    operation_id = await journal.begin(OperationKind.RESTORE, planned, undoes="abcdef012345")
    record = await journal.operation(operation_id)
    assert record is not None and record.finished_at is None and record.outcome is None
    assert record.kind is OperationKind.RESTORE and record.undoes == "abcdef012345"
    assert record.counts == {"pending": 5} and record.started_at.tzinfo is not None
    assert await journal.items(operation_id) == planned

    final = [
        finished(planned[0], "deleted"),
        finished(planned[1], "failed", NASTY),
        finished(planned[2], "unknown", "timeout"),
        ItemRecord(before=None, after=EntryImage("77", NASTY, "re-created"), status="recreated"),
        finished(planned[4], "rolled_back"),
    ]
    await journal.end(operation_id, "partial", final)
    journal.close()

    reopened = Journal(path, "https://pbx.example.com")  # from the file, not from a cache
    record = await reopened.operation(operation_id)
    assert record is not None and record.outcome == "partial" and record.finished_at is not None
    assert record.finished_at >= record.started_at and record.started_at.utcoffset() == timedelta(0)
    assert record.counts == {"deleted": 1, "failed": 1, "unknown": 1, "recreated": 1, "rolled_back": 1}
    assert await reopened.items(operation_id) == final
    assert await reopened.items(operation_id, offset=1, limit=2) == final[1:3]
    assert await reopened.items(operation_id, offset=4) == final[4:]
    assert (await reopened.recent())[0] == record
    assert [i.entry_id for i in final] == ["1", "'2'", NASTY, "77", "5"]
    for kind in OperationKind:
        other = await reopened.operation(await reopened.begin(kind, [delete_item("x")]))
        assert other is not None and other.kind is kind


@pytest.mark.anyio
async def test_begin_is_committed_before_it_returns(tmp_path: Path) -> None:
    """A process killed (SIGKILL) the moment begin() returns: its record is there, never closed."""
    path = tmp_path / "journal.sqlite3"
    child = run_python(
        """
        import os, signal, sys
        from pathlib import Path
        import anyio
        from threecx_mcp.journal import EntryImage, ItemRecord, Journal, OperationKind

        async def main():
            journal = Journal(Path(sys.argv[1]), "pbx")
            items = [ItemRecord(EntryImage(str(n), f"+1555{n}", None), None) for n in range(50)]
            print(await journal.begin(OperationKind.DELETE, items), flush=True)
            os.kill(os.getpid(), getattr(signal, "SIGKILL", signal.SIGTERM))

        anyio.run(main)
        """,
        str(path),
    )
    out, err = child.communicate(timeout=120)
    assert child.returncode != 0, err
    operation_id = out.strip()
    journal = Journal(path, "pbx")
    record = await journal.operation(operation_id)
    assert record is not None and record.finished_at is None and record.outcome is None
    assert record.counts == {"pending": 50}
    assert [i.entry_id for i in await journal.items(operation_id)] == [str(n) for n in range(50)]


@pytest.mark.anyio
async def test_the_journal_asks_for_full_sync_itself(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SQLite builds differ in their default (NORMAL drops the fsync of WAL commits): the journal must not rely
    on this machine's FULL default, so it has to say so on every connection it opens."""
    statements: list[str] = []
    connect = sqlite3.connect

    def traced(*args: object, **kwargs: object) -> sqlite3.Connection:
        connection = connect(*args, **kwargs)  # type: ignore[call-overload]
        connection.set_trace_callback(statements.append)
        return connection  # type: ignore[no-any-return]

    monkeypatch.setattr(sqlite3, "connect", traced)
    await Journal(tmp_path / "journal.sqlite3", "pbx").begin(OperationKind.DELETE, [delete_item("1")])
    assert "PRAGMASYNCHRONOUS=FULL" in {s.upper().replace(" ", "") for s in statements}


@pytest.mark.anyio
async def test_the_connection_fsyncs_every_commit_through_a_write_ahead_log(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.sqlite3", "pbx")
    await journal.begin(OperationKind.DELETE, [delete_item("1")])
    connection = journal._connection  # the journal's own connection: these settings are per connection
    assert connection is not None
    assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert connection.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert connection.execute("PRAGMA busy_timeout").fetchone()[0] >= 5000


@pytest.mark.anyio
async def test_files_and_the_folder_it_creates_are_private(tmp_path: Path) -> None:
    path = tmp_path / "state" / "threecx-mcp" / "journal.sqlite3"
    old_umask = os.umask(0o277)  # a umask that would leave even the owner without write access
    try:
        journal = Journal(path, "pbx")
        await journal.begin(OperationKind.DELETE, [delete_item("1")])
    finally:
        os.umask(old_umask)
    for file in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        assert stat.S_IMODE(file.stat().st_mode) == 0o600, file
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    journal.close()


@pytest.mark.anyio
async def test_a_text_sqlite_cannot_store_is_refused_without_damage(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.sqlite3", "pbx")
    with pytest.raises(JournalError, match="unpaired UTF-16 surrogate"):
        await journal.begin(OperationKind.DELETE, [delete_item("1", "\ud800")])
    assert await journal.recent() == []
    assert await journal.begin(OperationKind.DELETE, [delete_item("1")])


@pytest.mark.anyio
async def test_end_refuses_what_begin_did_not_record(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.sqlite3", "pbx")
    operation_id = await journal.begin(OperationKind.DELETE, [delete_item("1"), delete_item("2")])
    with pytest.raises(JournalError, match="began with 2 items, not 1"):
        await journal.end(operation_id, "completed", [finished(delete_item("1"), "deleted")])
    with pytest.raises(JournalError, match="no operation 000000000000 of this PBX"):
        await journal.end("000000000000", "completed", [])
    with pytest.raises(JournalError, match="no operation"):  # another PBX's operation
        await Journal(journal.path, "other").end(operation_id, "completed", [])
    record = await journal.operation(operation_id)
    assert record is not None and record.outcome is None and record.counts == {"pending": 2}


# --- files that are not a journal ---------------------------------------------------------------


def begin_in_a_thread(journal: Journal) -> BaseException | None:
    """begin() in a daemon thread, so a hang fails the test instead of freezing it."""
    outcome: list[BaseException | None] = []

    def work() -> None:
        try:
            anyio.run(journal.begin, OperationKind.DELETE, [delete_item("1")])
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            outcome.append(exc)

    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    worker.join(timeout=60)
    assert not worker.is_alive(), "the journal hung on the path"
    return outcome[0]


@pytest.mark.parametrize("where", ["journal", "0.1 journal"])
def test_a_fifo_is_refused_instead_of_hanging(tmp_path: Path, where: str) -> None:
    path = tmp_path / "journal.sqlite3"
    fifo = path if where == "journal" else path.with_suffix(".jsonl")
    os.mkfifo(fifo)
    error = begin_in_a_thread(Journal(path, "pbx"))
    assert isinstance(error, JournalError)
    assert f"journal {fifo} (" in error.message and "FIFO (named pipe), not a regular file" in error.message
    assert "THREECX_JOURNAL" in error.user_message()


@pytest.mark.anyio
async def test_a_directory_at_the_path_is_refused(tmp_path: Path) -> None:
    with pytest.raises(JournalError) as caught:
        await Journal(tmp_path, "pbx").recent()
    assert (
        caught.value.message
        == f"Cannot read the safety journal {tmp_path} (it is a directory, not a regular file)."
    )


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("text", "it is not a SQLite database"),
        ("foreign", "it is a SQLite database of another program, not a threecx-mcp journal"),
        (
            "newer",
            "it was written by a newer threecx-mcp (journal format 7, this one reads 1); upgrade threecx-mcp",
        ),
    ],
)
async def test_a_file_that_is_not_a_journal_is_refused_and_left_alone(
    tmp_path: Path, content: str, reason: str
) -> None:
    path = tmp_path / "journal.sqlite3"
    if content == "text":
        path.write_bytes(b"operation_id,caller_id\n" * 500)
    else:
        sqlite_write(
            path, "CREATE TABLE contacts (name TEXT)" if content == "foreign" else "PRAGMA user_version = 7"
        )
    before = path.read_bytes()
    with pytest.raises(JournalError) as caught:
        await Journal(path, "pbx").begin(OperationKind.DELETE, [delete_item("1")])
    assert caught.value.message == f"Cannot write the safety journal {path} ({reason})."
    assert path.read_bytes() == before


# --- queries --------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_latest_is_the_newest_item_per_id_on_this_pbx_only(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"
    a, b = Journal(path, "https://a.example.com"), Journal(path, "https://b.example.com")

    async def operation(journal: Journal, kind: OperationKind, items: list[ItemRecord], status: str) -> str:
        operation_id = await journal.begin(kind, items)
        await journal.end(operation_id, "completed", [finished(i, status) for i in items])
        return operation_id

    deleted = await operation(a, OperationKind.DELETE, [delete_item("7"), delete_item("8")], "deleted")
    on_b = await operation(
        b, OperationKind.DELETE, [delete_item("7"), delete_item("11")], "deleted"
    )  # newer, B
    updated = await operation(
        a,
        OperationKind.UPDATE,
        [ItemRecord(EntryImage("8", "old", None), EntryImage("8", "new", None))],
        "updated",
    )
    created = await a.begin(OperationKind.RESTORE, [ItemRecord(None, EntryImage("", "+1", None))])
    await a.end(created, "completed", [ItemRecord(None, EntryImage("9", "+1", None), status="recreated")])
    twice = await a.begin(OperationKind.DELETE, [delete_item("10"), delete_item("10")])
    await a.end(
        twice, "completed", [finished(delete_item("10"), "failed"), finished(delete_item("10"), "deleted")]
    )

    # Within one operation the last position wins, whether the id is its before or its after image.
    swap = [ItemRecord(EntryImage("12", "a", None), None), ItemRecord(None, EntryImage("12", "b", None))]
    swapped = await operation(a, OperationKind.RESTORE, swap, "done")

    found = await a.latest(["7", "8", "9", "10", "11", "12", "never", "7"])
    assert set(found) == {"7", "8", "9", "10", "12"}
    assert found["12"][0].operation_id == swapped and found["12"][1].after == EntryImage("12", "b", None)
    assert found["7"][0].operation_id == deleted and found["7"][0].pbx == "https://a.example.com"
    assert found["8"][0].operation_id == updated and found["8"][1].after == EntryImage("8", "new", None)
    assert found["9"][0].operation_id == created and found["9"][1].status == "recreated"
    assert found["10"][0].operation_id == twice and found["10"][1].status == "deleted"  # the last position
    assert found["7"][0].counts == {"deleted": 2}

    on_b_found = await b.latest(["7", "8", "11"])
    assert set(on_b_found) == {"7", "11"} and on_b_found["7"][0].operation_id == on_b
    assert await a.operation(on_b) is None and await a.items(on_b) == []
    everywhere = await Journal(path, None).latest(["7"])
    assert everywhere["7"][0].operation_id == on_b


@pytest.mark.anyio
async def test_recent_is_newest_first_per_pbx_and_pages_backwards(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"
    a, b = Journal(path, "https://a.example.com"), Journal(path, "https://b.example.com")
    a_ids, b_ids = [], []
    for n in range(4):
        a_ids.append(await a.begin(OperationKind.DELETE, [delete_item(str(n))]))
        b_ids.append(await b.begin(OperationKind.UPDATE, [delete_item(str(n))]))

    def ids(records: list[OperationRecord]) -> list[str]:
        return [r.operation_id for r in records]

    assert ids(await a.recent()) == a_ids[::-1]
    assert ids(await b.recent()) == b_ids[::-1]
    assert ids(await a.recent(2)) == a_ids[:1:-1]
    assert ids(await a.recent(2, before=a_ids[2])) == a_ids[1::-1]
    assert await a.recent(5, before=a_ids[0]) == []
    assert await a.recent(5, before=b_ids[3]) == []  # another PBX's operation is no cursor here
    assert await a.recent(0) == []
    assert ids(await a.oldest_first(3)) == a_ids[:3]
    assert ids(await a.oldest_first(3, after=a_ids[2])) == a_ids[3:]
    everywhere = Journal(path, None)
    assert (
        ids(await everywhere.recent(100))
        == [x for pair in zip(a_ids, b_ids, strict=True) for x in pair][::-1]
    )
    with pytest.raises(ValueError, match="read-only"):
        await everywhere.begin(OperationKind.DELETE, [delete_item("1")])


@pytest.mark.anyio
async def test_latest_over_10000_ids_seeks_the_indexes(tmp_path: Path) -> None:
    """10 operations of 10,000 down to 1,000 items: the newest operation holding id n is 9 - n // 1000."""
    path = tmp_path / "journal.sqlite3"
    journal = Journal(path, "pbx")
    operation_ids = []
    for k in range(10):
        items = [delete_item(f"e{n}", f"+1{n}") for n in range(10_000 - 1000 * k)]
        operation_ids.append(await journal.begin(OperationKind.DELETE, items))
    await Journal(path, "other").begin(OperationKind.DELETE, [delete_item(f"e{n}") for n in range(10_000)])
    assert journal._connection is not None
    statements: list[str] = []
    journal._connection.set_trace_callback(statements.append)
    found = await journal.latest([f"e{n}" for n in range(10_000)])
    journal._connection.set_trace_callback(None)

    assert len(found) == 10_000
    for n in range(10_000):
        record, item = found[f"e{n}"]
        assert record.operation_id == operation_ids[9 - n // 1000] and item.before == EntryImage(
            f"e{n}", f"+1{n}", None
        )
    lookups = {s.split(" WHERE ")[0] for s in statements if "FROM items AS i" in s}
    assert len(lookups) == 2, lookups
    for statement in {s for s in statements if "FROM items AS i" in s and "'e17'" in s}:
        plan = " | ".join(str(row[3]) for row in sqlite_rows(path, "EXPLAIN QUERY PLAN " + statement))
        assert (
            "USING INDEX items_by_before (before_id=?)" in plan
            or "USING INDEX items_by_after (after_id=?)" in plan
        )
        assert "SCAN" not in plan and "TEMP B-TREE" not in plan, plan


@pytest.mark.anyio
async def test_retention_deletes_old_operations_only(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"
    journal = Journal(path, "pbx", retention_days=0)
    old = await journal.begin(OperationKind.DELETE, [delete_item("1"), delete_item("2")])
    recent = await journal.begin(OperationKind.DELETE, [delete_item("3")])
    new = await journal.begin(OperationKind.DELETE, [delete_item("4")])
    journal.close()
    for operation_id, age in ((old, 91), (recent, 89)):
        started = (datetime.now(UTC) - timedelta(days=age)).isoformat(timespec="microseconds")
        sqlite_write(
            path, "UPDATE operations SET started_at = ? WHERE operation_id = ?", started, operation_id
        )

    forever = Journal(path, "pbx", retention_days=0)
    assert len(await forever.recent()) == 3
    forever.close()
    pruned = Journal(path, "pbx", retention_days=90)
    assert [r.operation_id for r in await pruned.recent()] == [new, recent]
    assert await pruned.operation(old) is None
    assert sqlite_rows(path, "SELECT count(*) FROM items") == [(2,)]  # the old items went with it
    assert await pruned.latest(["1", "3"]) == {"3": (await pruned.operation(recent), delete_item("3"))}


# --- concurrency and failing file systems ---------------------------------------------------------

WRITER = """
    import sys, time
    from pathlib import Path
    import anyio
    from threecx_mcp.journal import EntryImage, ItemRecord, Journal, OperationKind

    async def main():
        path, name, start = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
        while not start.exists():  # both processes open the brand-new file at once
            time.sleep(0.001)
        journal = Journal(path, "pbx")
        for n in range(200):
            item = ItemRecord(EntryImage(f"{name}-{n}", "+1", None), None)
            operation_id = await journal.begin(OperationKind.DELETE, [item])
            await journal.end(operation_id, "completed", [ItemRecord(item.before, None, "deleted")])

    anyio.run(main)
"""


@pytest.mark.anyio
async def test_two_processes_write_one_journal(tmp_path: Path) -> None:
    path, start = tmp_path / "journal.sqlite3", tmp_path / "go"
    writers = [run_python(WRITER, str(path), name, str(start)) for name in ("first", "second")]
    start.touch()
    for writer in writers:
        _, err = writer.communicate(timeout=300)
        assert writer.returncode == 0 and err == "", err
    records = await Journal(path, "pbx").recent(1000)
    assert len(records) == 400 and all(
        r.outcome == "completed" and r.counts == {"deleted": 1} for r in records
    )
    found = await Journal(path, "pbx").latest(
        [f"{name}-{n}" for name in ("first", "second") for n in range(200)]
    )
    assert len(found) == 400


@pytest.fixture
def read_only_folder(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """A folder to write in, and the same folder read-only: a read-only bind mount as root (root ignores
    file modes), file modes otherwise."""
    writable = tmp_path / "rw"
    writable.mkdir()
    if os.geteuid() != 0:
        yield writable, writable
        for file in writable.iterdir():
            file.chmod(0o600)
        writable.chmod(0o700)
        return
    read_only = tmp_path / "ro"
    read_only.mkdir()
    if subprocess.run(
        ["mount", "--bind", str(writable), str(read_only)], check=False, capture_output=True
    ).returncode:
        pytest.skip("cannot bind-mount here (needs CAP_SYS_ADMIN), so root cannot be denied a write")
    try:
        yield writable, read_only
    finally:
        subprocess.run(["umount", "-l", str(read_only)], check=True)


@pytest.mark.anyio
async def test_end_on_a_read_only_journal_names_the_os_reason(read_only_folder: tuple[Path, Path]) -> None:
    writable, read_only = read_only_folder
    journal = Journal(writable / "journal.sqlite3", "pbx")
    operation_id = await journal.begin(OperationKind.DELETE, [delete_item("1")])
    journal.close()
    if read_only == writable:
        (writable / "journal.sqlite3").chmod(0o400)
        writable.chmod(0o500)
        reason = "Permission denied"
    else:
        await anyio.run_process(["mount", "-o", "remount,bind,ro", str(read_only)])
        reason = "Read-only file system"
    stuck = Journal(read_only / "journal.sqlite3", "pbx")
    with pytest.raises(JournalError) as caught:
        await stuck.end(operation_id, "completed", [finished(delete_item("1"), "deleted")])
    assert (
        caught.value.message == f"Cannot write the safety journal {read_only / 'journal.sqlite3'} ({reason})."
    )


@pytest.fixture
def tiny_file_system(tmp_path: Path) -> Iterator[Path]:
    mount_point = tmp_path / "tiny"
    mount_point.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tiny tmpfs needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mount_point)],
        check=False,
        capture_output=True,
    )
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode(errors='replace').strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=True)


def fill(folder: Path) -> Path:
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as handle:
        for size in (65536, 4096, 1):
            try:
                while True:
                    handle.write(b"\0" * size)
            except OSError:
                pass
    return filler


@pytest.mark.anyio
async def test_a_full_disk_gives_a_journal_error_and_the_journal_recovers(tiny_file_system: Path) -> None:
    journal = Journal(tiny_file_system / "journal.sqlite3", "pbx")
    items = [delete_item(str(n)) for n in range(40)]
    operation_id = await journal.begin(OperationKind.DELETE, items)
    filler = fill(tiny_file_system)
    final = [finished(i, "failed", "x" * 2000) for i in items]
    with pytest.raises(JournalError) as caught:
        await journal.end(operation_id, "completed", final)
    assert caught.value.message == (
        f"Cannot write the safety journal {tiny_file_system / 'journal.sqlite3'} (No space left on device)."
    )
    with pytest.raises(JournalError, match="No space left on device"):
        await journal.begin(OperationKind.DELETE, [delete_item(str(n), "y" * 2000) for n in range(40)])
    record = await journal.operation(operation_id)
    assert record is not None and record.outcome is None and record.counts == {"pending": 40}

    filler.unlink()
    await journal.end(operation_id, "completed", final)
    assert await journal.items(operation_id) == final
    journal.close()


# --- the 0.1 journal --------------------------------------------------------------------------------


def legacy_line(record: dict[str, object]) -> bytes:
    """As 0.1 wrote it: json.dumps(ensure_ascii=False), so U+2028 and U+0085 stay raw inside the line."""
    return json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


# Within the default retention, so the import is all that is tested.
BEGAN = datetime.now(UTC).replace(microsecond=678000) - timedelta(days=1)
ENDED = BEGAN + timedelta(seconds=1)


def legacy_begin(operation_id: str, tool: str, before: list[dict[str, object]]) -> dict[str, object]:
    return {
        "phase": "begin",
        "operation_id": operation_id,
        "time": BEGAN.isoformat(timespec="milliseconds"),
        "tool": tool,
        "pbx": "https://pbx.example.com",
        "ids": [e["id"] for e in before],
        "before": before,
    }


def legacy_end(operation_id: str, statuses: dict[str, str], outcome: str = "completed") -> dict[str, object]:
    return {
        "phase": "end",
        "operation_id": operation_id,
        "time": ENDED.isoformat(timespec="milliseconds"),
        "outcome": outcome,
        "statuses": statuses,
    }


DELETE, UPDATE, RESTORE = (
    "bulk_delete_blacklist_numbers",
    "update_blacklist_number",
    "restore_blacklist_numbers",
)
LEGACY_LINES = [
    legacy_line(
        legacy_begin(
            "aaaaaaaaaaaa",
            DELETE,
            [
                {"id": "1", "caller_id": "spam\u2028line", "description": "note\u0085x"},
                {"id": "2", "caller_id": "\u2029\"'\U0001f600", "description": None},
                {"id": "3", "caller_id": "+15550100", "description": ""},
            ],
        )
    ),
    legacy_line(legacy_end("aaaaaaaaaaaa", {"1": "deleted", "2": "deleted"}, "interrupted")),
    legacy_line(
        legacy_begin("bbbbbbbbbbbb", UPDATE, [{"id": "4", "caller_id": "x\u2028", "description": "d"}])
    ),
    b"this is not json at all\n",
    legacy_line(legacy_end("bbbbbbbbbbbb", {"4": "updated"})),
    legacy_line(
        legacy_begin("cccccccccccc", DELETE, [{"id": "5", "caller_id": "ok", "description": "X"}])
    ).replace(b'"X"', b'"\xff"'),
    legacy_line(legacy_end("cccccccccccc", {"5": "deleted"})),
    legacy_line(legacy_begin("dddddddddddd", RESTORE, [{"id": "6", "caller_id": "r", "description": None}])),
    legacy_line(legacy_end("dddddddddddd", {"6": "rolled_back"})),
    # 0.1 crashed halfway through the end of eeee..., then appended the next begin to the same line.
    legacy_line(legacy_begin("eeeeeeeeeeee", DELETE, [{"id": "7", "caller_id": "e", "description": None}])),
    legacy_line(legacy_end("eeeeeeeeeeee", {"7": "deleted"}))[:40]
    + legacy_line(
        legacy_begin("ffffffffffff", DELETE, [{"id": "8", "caller_id": "f\u0085", "description": None}])
    ),
    legacy_line(legacy_begin("gggggggggggg", DELETE, [{"id": "9", "caller_id": "g", "description": None}]))[
        :-25
    ],
]
UNREADABLE = {
    4: "not JSON",
    6: "invalid UTF-8",
    7: "begin record is missing or unreadable",
    11: "cut short",
    12: "not JSON",
}


@pytest.mark.anyio
async def test_a_damaged_0_1_journal_imports_what_can_be_read_and_keeps_the_rest(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "journal.sqlite3"
    legacy = path.with_suffix(".jsonl")
    content = b"".join(LEGACY_LINES)
    legacy.write_bytes(content)
    caplog.set_level(logging.INFO)
    journal = Journal(path, "https://pbx.example.com")

    records = {r.operation_id: r for r in await journal.oldest_first(100)}
    assert list(records) == ["aaaaaaaaaaaa", "bbbbbbbbbbbb", "dddddddddddd", "eeeeeeeeeeee", "ffffffffffff"]
    deleted = records["aaaaaaaaaaaa"]
    assert deleted.kind is OperationKind.DELETE and deleted.outcome == "interrupted"
    assert deleted.started_at == BEGAN and deleted.finished_at == ENDED
    assert await journal.items("aaaaaaaaaaaa") == [
        ItemRecord(EntryImage("1", "spam\u2028line", "note\u0085x"), None, "deleted"),
        ItemRecord(EntryImage("2", "\u2029\"'\U0001f600", None), None, "deleted"),
        ItemRecord(EntryImage("3", "+15550100", ""), None, "unknown"),  # no status in the end record
    ]
    assert await journal.items("bbbbbbbbbbbb") == [
        ItemRecord(EntryImage("4", "x\u2028", "d"), None, "updated", after_known=False)
    ]
    assert (
        records["dddddddddddd"].kind is OperationKind.RESTORE
        and records["dddddddddddd"].outcome == "completed"
    )
    assert await journal.items("dddddddddddd") == []
    assert records["eeeeeeeeeeee"].outcome is None and records["eeeeeeeeeeee"].finished_at is None
    assert await journal.items("eeeeeeeeeeee") == [ItemRecord(EntryImage("7", "e", None), None, "pending")]
    assert await journal.items("ffffffffffff") == [
        ItemRecord(EntryImage("8", "f\u0085", None), None, "pending")
    ]
    assert (await journal.latest(["1"]))["1"][0].operation_id == "aaaaaaaaaaaa"

    kept = sqlite_rows(path, "SELECT line_no, raw, error FROM legacy_unreadable ORDER BY line_no")
    assert [(n, raw) for n, raw, _ in kept] == [(n, LEGACY_LINES[n - 1].rstrip(b"\n")) for n in UNREADABLE]
    for n, _, error in kept:
        assert UNREADABLE[int(str(n))] in str(error), (n, error)
    assert not legacy.exists()
    assert legacy.with_name("journal.jsonl.imported").read_bytes() == content
    (summary,) = [r.getMessage() for r in caplog.records if r.name == "threecx_mcp.journal_legacy"]
    assert "5 operations" in summary and "skipped 5 unreadable lines (line 4, 6, 7, 11, 12)" in summary
    assert "1 before-images of 0.1 restores" in summary and "journal.jsonl.imported" in summary
    journal.close()

    # Opened again: nothing more. Put back (a crash between the commit and the rename): set aside again,
    # not imported twice, and the first copy is not overwritten. A different 0.1 file: left alone, said so.
    legacy.write_bytes(content)
    again = Journal(path, "https://pbx.example.com")
    assert len(await again.oldest_first(100)) == 5 and not legacy.exists()
    assert legacy.with_name("journal.jsonl.imported.1").read_bytes() == content
    legacy.write_bytes(LEGACY_LINES[0])
    caplog.clear()
    third = Journal(path, "https://pbx.example.com")
    assert len(await third.oldest_first(100)) == 5 and legacy.read_bytes() == LEGACY_LINES[0]
    assert any("was not imported" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
    assert sqlite_rows(path, "SELECT count(*) FROM legacy_unreadable") == [(5,)]


WATCHER = """
    import sys, time
    from pathlib import Path
    import anyio
    from threecx_mcp.journal import Journal

    path, start = Path(sys.argv[1]), Path(sys.argv[2])
    while not start.exists():
        time.sleep(0.001)
    print(len(anyio.run(Journal(path, "https://pbx.example.com").oldest_first, 100)))
"""


@pytest.mark.anyio
async def test_two_processes_opening_at_once_import_the_0_1_journal_once(tmp_path: Path) -> None:
    path, start = tmp_path / "journal.sqlite3", tmp_path / "go"
    path.with_suffix(".jsonl").write_bytes(b"".join(LEGACY_LINES))
    openers = [run_python(WATCHER, str(path), str(start)) for _ in range(2)]
    start.touch()
    for opener in openers:
        out, err = opener.communicate(timeout=120)
        assert opener.returncode == 0 and out.strip() == "5", err
    assert sqlite_rows(path, "SELECT count(*) FROM operations") == [(5,)]
    assert sqlite_rows(path, "SELECT count(*) FROM legacy_unreadable") == [(5,)]
    assert sorted(p.name for p in tmp_path.glob("journal.jsonl*")) == ["journal.jsonl.imported"]


# --- the CLI ------------------------------------------------------------------------------------------


@pytest.fixture
def cli_journal(tmp_path: Path) -> tuple[Path, list[str]]:
    """Two PBXs in one file; the second operation of this PBX is never closed."""
    path = tmp_path / "journal.sqlite3"

    async def setup() -> list[str]:
        here, there = Journal(path, "https://a.example.com"), Journal(path, "https://b.example.com")
        items = [delete_item("1", NASTY, "note\u2028two"), delete_item("2", "+15550100", None)]
        first = await here.begin(OperationKind.DELETE, items)
        await here.end(
            first, "completed", [finished(items[0], "deleted"), finished(items[1], "failed", "HTTP 500")]
        )
        other = await there.begin(OperationKind.UPDATE, [delete_item("9")])
        second = await here.begin(
            OperationKind.UPDATE, [ItemRecord(EntryImage("3", "a", None), EntryImage("3", "b", "c"))]
        )
        here.close()
        there.close()
        return [first, other, second]

    return path, anyio.run(setup)


def cli(
    capsys: pytest.CaptureFixture[str], path: Path, *argv: str, pbx: str | None = "https://a.example.com"
) -> tuple[int, str, str]:
    code = journal_cli.main(argv, path, pbx)
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_list_shows_this_pbx_or_every_pbx(
    cli_journal: tuple[Path, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    path, (first, other, second) = cli_journal
    code, out, _ = cli(capsys, path, "list")
    lines = out.splitlines()
    assert (
        code == 0
        and len(lines) == 3
        and lines[0].split() == ["operation_id", "started", "(UTC)", "kind", "outcome", "counts"]
    )
    assert (
        lines[1].startswith(second)
        and "update" in lines[1]
        and "not closed" in lines[1]
        and "1 pending" in lines[1]
    )
    assert lines[2].startswith(first) and "completed" in lines[2] and "1 deleted, 1 failed" in lines[2]
    assert other not in out and "example.com" not in out

    code, out, _ = cli(capsys, path, "list", "--all", "--limit", "2")
    lines = out.splitlines()
    assert code == 0 and len(lines) == 3 and "pbx" in lines[0].split()
    assert lines[1].startswith(second) and "https://a.example.com" in lines[1]
    assert lines[2].startswith(other) and "https://b.example.com" in lines[2]
    code, out, _ = cli(capsys, path, "list", pbx=None)
    assert code == 0 and len(out.splitlines()) == 4

    code, out, err = cli(capsys, path, "list", "--limit", "0")
    assert code == 2 and out == "" and "at least 1" in err


def test_cli_show_escapes_text_from_the_pbx(
    cli_journal: tuple[Path, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    path, (first, other, second) = cli_journal
    code, out, err = cli(capsys, path, "show", first)
    assert code == 0 and err == ""
    for raw in "\u2028\u2029\u0085\x1c\x0b\x0c\r\u202e":
        assert raw not in out
    assert out.split("\n") == out.splitlines() + [""]  # no line breaks but its own
    lines = out.splitlines()
    assert lines[0] == f"operation {first}" and "kind:     delete" in out and "outcome:  completed" in out
    item = next(line for line in lines if line.startswith("  1. "))
    assert "\\u2028" in item and "\\u0085" in item and "\\u202e" in item and "\U0001f600" in item
    assert 'description "note\\u2028two"' in item and item.count(": deleted;") == 1
    assert (
        lines[-1]
        == '  2. id "2": failed ("HTTP 500"); before: caller ID "+15550100", no description; after: none'
    )

    code, out, _ = cli(capsys, path, "show", other)  # another PBX's operation, by its id
    assert code == 0 and "pbx:      https://b.example.com" in out
    code, out, _ = cli(capsys, path, "show", second)
    assert "finished: not closed" in out and 'after: caller ID "b", description "c"' in out

    code, out, err = cli(capsys, path, "show", "nope\u2028x")
    assert code == 2 and out == "" and len(err.splitlines()) == 1
    assert err.startswith('threecx-mcp journal: No operation "nope\\u2028x" in the journal')


def test_cli_export_writes_json_lines_any_reader_can_split(
    cli_journal: tuple[Path, list[str]], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path, (first, other, second) = cli_journal
    code, out, _ = cli(capsys, path, "export")
    assert code == 0 and out.isascii()
    documents = [json.loads(line) for line in out.splitlines()]  # str.splitlines(): the 0.1 reader's bug
    assert [d["operation_id"] for d in documents] == [first, second]
    assert documents[0]["items"][0]["before"] == {
        "id": "1",
        "caller_id": NASTY,
        "description": "note\u2028two",
    }
    assert documents[0]["counts"] == {"deleted": 1, "failed": 1} and documents[0]["outcome"] == "completed"
    assert documents[1]["finished_at"] is None and documents[1]["items"][0]["after"]["caller_id"] == "b"

    target = tmp_path / "export.jsonl"
    code, out, _ = cli(capsys, path, "export", "--all", str(target))
    assert code == 0 and out == "" and stat.S_IMODE(target.stat().st_mode) == 0o600
    assert [json.loads(line)["operation_id"] for line in target.read_text().splitlines()] == [
        first,
        other,
        second,
    ]

    code, out, err = cli(capsys, path, "export", str(tmp_path / "missing" / "x.jsonl"))
    assert code == 2 and len(err.splitlines()) == 1 and "(No such file or directory)" in err


def test_cli_without_a_journal_creates_none(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "journal.sqlite3"
    code, out, _ = cli(capsys, path, "list")
    assert code == 0 and "No operations journaled yet" in out
    code, _, err = cli(capsys, path, "show", "abc")
    assert code == 2 and "no journal at" in err
    code, out, _ = cli(capsys, path, "export")
    assert code == 0 and out == ""
    assert not path.exists()


def test_cli_reports_an_unusable_journal_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "journal.sqlite3"
    os.mkfifo(path)
    code, out, err = cli(capsys, path, "list")
    assert code == 2 and out == "" and len(err.splitlines()) == 1
    assert "FIFO (named pipe), not a regular file" in err and "THREECX_JOURNAL" in err


def test_cli_reading_never_applies_retention(
    cli_journal: tuple[Path, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    path, (first, _, _) = cli_journal
    sqlite_write(path, "UPDATE operations SET started_at = '2001-01-01T00:00:00.000000+00:00'")
    code, out, _ = cli(capsys, path, "list")
    assert code == 0 and first in out
    assert sqlite_rows(path, "SELECT count(*) FROM operations") == [(3,)]
