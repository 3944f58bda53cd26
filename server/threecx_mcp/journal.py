"""The safety journal: each change to the PBX is recorded before it is made, and how it ended after.

Undo depends on this record, so it is a SQLite database (stdlib `sqlite3`), not a hand-written
file. A write-ahead log with `synchronous=FULL` makes every record durable (committed and
fsynced) before `begin()` returns; a write cut short by a crash or a full disk is rolled back
rather than damaging what came before; text of any kind (line separators included) is stored
exactly; several processes (two desktop clients share the default path) write one file, each
write one transaction, waiting for each other up to `BUSY_TIMEOUT_SECONDS`. Indexes make "what
happened last to these ids" cost O(log n) per id. SQLite calls block, so the async methods run
them in a worker thread. The file, its -wal and -shm companions and a folder this module creates
are private to the user (0600/0700). Operations older than the retention are deleted on open.

Schema, format 1 (`PRAGMA user_version`); times are ISO 8601 in UTC with microseconds, so they
sort as text:

    meta(key TEXT PRIMARY KEY, value TEXT)       -- e.g. which 0.1 journal was imported
    operations(seq INTEGER PRIMARY KEY, operation_id TEXT UNIQUE, pbx, kind, started_at,
               finished_at, outcome, undoes)      -- finished_at/outcome NULL: never closed
    items(seq, position, before_id, before_caller_id, before_description,
          after_id, after_caller_id, after_description, after_known, status, reason,
          PRIMARY KEY (seq, position))            -- before_id NULL: no before image; same for after
    legacy_unreadable(line_no INTEGER PRIMARY KEY, raw BLOB, error TEXT)
                                                  -- damaged lines of an imported 0.1 journal
    indexes: operations(pbx, seq), operations(started_at), items(before_id, seq), items(after_id, seq)
"""

from __future__ import annotations

import errno
import logging
import os
import secrets
import sqlite3
import stat
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import TypeVar

import anyio.to_thread

from .display import escape
from .errors import JournalError

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
# How long a write waits for another process holding the journal before it gives up.
BUSY_TIMEOUT_SECONDS = 10.0

_T = TypeVar("_T")


class OperationKind(StrEnum):
    """What an operation did to the PBX; not which tool asked for it (tools get renamed, history stays)."""

    ADD = "add"
    UPDATE = "update"
    DELETE = "delete"
    RESTORE = "restore"


@dataclass(frozen=True)
class EntryImage:
    """One blacklist entry as it was, or as it should be: exactly what an undo puts back."""

    id: str
    caller_id: str
    description: str | None


def image_document(image: EntryImage | None) -> dict[str, str | None] | None:
    """An image as JSON-ready data (export, the operation resource): the one place its shape is spelled."""
    return (
        None
        if image is None
        else {"id": image.id, "caller_id": image.caller_id, "description": image.description}
    )


@dataclass(frozen=True)
class ItemRecord:
    """One entry an operation touches: its image before and after, and what happened to it.

    `before` None: the entry did not exist (the operation creates it; its id is only known at
    `end()`, so `begin()` gets an after image with id ""). `after` None: the entry should not
    exist afterwards. `after_known` is False only for updates imported from a 0.1 journal, which
    did not record the new state.
    """

    before: EntryImage | None
    after: EntryImage | None
    status: str = "pending"
    reason: str | None = None
    after_known: bool = True

    def __post_init__(self) -> None:
        if self.before is None and self.after is None:
            raise ValueError("an ItemRecord needs a before image, an after image, or both")
        if not self.after_known and self.after is not None:
            raise ValueError("an ItemRecord with after_known=False cannot carry an after image")

    @property
    def entry_id(self) -> str:
        if self.before is not None:
            return self.before.id
        assert self.after is not None  # __post_init__ guarantees one of the two
        return self.after.id

    def document(self) -> dict[str, object]:
        """The item as JSON-ready data, as export and the operation resource show it."""
        return {
            "id": self.entry_id,
            "status": self.status,
            "reason": self.reason,
            "before": image_document(self.before),
            "after": image_document(self.after) if self.after_known else "unknown",
        }


@dataclass(frozen=True)
class OperationRecord:
    """One operation as journaled; `finished_at`/`outcome` None: it was never closed (the process died,
    or writing its end failed), so its items say "pending"."""

    operation_id: str
    pbx: str
    kind: OperationKind
    started_at: datetime
    finished_at: datetime | None
    outcome: str | None
    undoes: str | None
    counts: dict[str, int]


class JournalRefused(Exception):
    """Why the journal cannot be used as asked, in words; `Journal` turns it into a JournalError naming
    the file, like the OS and SQLite errors it meets."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Journal:
    """The journal of one PBX (`pbx`: its origin such as "https://pbx.example.com", or "sandbox").

    Several PBXs may share a file; every read is limited to this PBX's operations. `pbx=None`
    gives a read-only view of every PBX (the `journal` CLI's `--all`). Construction is cheap: the
    file is opened, created, migrated, pruned and a 0.1 journal beside it imported on first use.
    `retention_days` <= 0 keeps everything.
    """

    def __init__(self, path: Path, pbx: str | None, *, retention_days: int = 90) -> None:
        self.path = Path(path)
        self.pbx = pbx
        self.retention_days = retention_days
        self._lock = threading.Lock()  # one connection, used by one worker thread at a time
        self._connection: sqlite3.Connection | None = None
        # Every query of a journal for one PBX carries this filter; for every PBX, none.
        self._scope = "AND o.pbx = ?" if pbx is not None else ""
        self._scope_params: tuple[str, ...] = (pbx,) if pbx is not None else ()

    def __repr__(self) -> str:
        return f"Journal(path='{self.path}', pbx='{self.pbx}')"

    async def begin(
        self, kind: OperationKind, items: Sequence[ItemRecord], *, undoes: str | None = None
    ) -> str:
        """Record an operation before it touches the PBX; committed and fsynced when this returns.

        Returns its new operation_id. Raises JournalError naming the file and the reason.
        """
        pbx = self.pbx
        if pbx is None:
            raise ValueError("a Journal for every PBX (pbx=None) is read-only")
        records = list(items)
        return await self._run("write", lambda db: self._begin(db, pbx, kind, records, undoes))

    async def end(self, operation_id: str, outcome: str, items: Sequence[ItemRecord]) -> None:
        """Record how an operation ended: `items` in the same order as `begin()`'s, in their final state."""
        records = list(items)
        await self._run("write", lambda db: self._end(db, operation_id, outcome, records))

    async def operation(self, operation_id: str) -> OperationRecord | None:
        """This PBX's operation with that id, or None."""
        return await self._run("read", lambda db: self._operation(db, operation_id))

    async def items(
        self, operation_id: str, *, offset: int = 0, limit: int | None = None
    ) -> list[ItemRecord]:
        """The items of this PBX's operation, in begin order (none for an unknown id)."""
        return await self._run("read", lambda db: self._items(db, operation_id, offset, limit))

    async def latest(
        self, entry_ids: Sequence[str], *, kinds: Sequence[OperationKind] = tuple(OperationKind)
    ) -> dict[str, tuple[OperationRecord, ItemRecord]]:
        """For each id, the newest item of this PBX whose before or after image has that id (newest: the
        latest operation, then the last position in it), among operations of these kinds. Ids never
        journaled are absent. Costs two index lookups per id, however long the journal."""
        unique = list(dict.fromkeys(entry_ids))
        return await self._run("read", lambda db: self._latest(db, unique, [k.value for k in kinds]))

    async def recent(self, limit: int = 20, *, before: str | None = None) -> list[OperationRecord]:
        """This PBX's operations, newest first; `before` (an operation_id) pages backwards from it.
        An unknown `before` gives an empty page."""
        return await self._run("read", lambda db: self._page(db, limit, before, newest_first=True))

    async def oldest_first(self, limit: int = 500, *, after: str | None = None) -> list[OperationRecord]:
        """This PBX's operations, oldest first, for reading the whole journal page by page (`export`);
        `after` (an operation_id) continues after it. An unknown `after` gives an empty page."""
        return await self._run("read", lambda db: self._page(db, limit, after, newest_first=False))

    def close(self) -> None:
        """Close the database file; a later call opens it again."""
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None

    async def _run(self, verb: str, work: Callable[[sqlite3.Connection], _T]) -> _T:
        return await anyio.to_thread.run_sync(self._locked, verb, work)

    def _locked(self, verb: str, work: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run `work` on the (lazily opened) connection; every failure becomes one readable JournalError."""
        with self._lock:
            try:
                if self._connection is None:
                    self._connection = self._open()
                return work(self._connection)
            except JournalRefused as exc:
                reason = exc.reason
            except OSError as exc:
                reason = exc.strerror or type(exc).__name__
            except sqlite3.Error as exc:
                reason = _sqlite_reason(exc, self.path)
            except UnicodeEncodeError:
                reason = "a text holds an unpaired UTF-16 surrogate, which cannot be stored"
        raise JournalError(f"Cannot {verb} the safety journal {escape(str(self.path))} ({reason}).")

    def _open(self) -> sqlite3.Connection:
        """Open, retrying while another process is opening the same file at once: switching to WAL
        and creating the schema can meet a lock SQLite reports at once, without its busy wait."""
        deadline = time.monotonic() + BUSY_TIMEOUT_SECONDS
        while True:
            try:
                return self._open_once()
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
            time.sleep(0.05)

    def _open_once(self) -> sqlite3.Connection:
        from . import journal_legacy  # here, not at the top: journal_legacy builds on this module's records

        path = (
            self.path.resolve()
        )  # a symlink (a synced folder, say) leads to the file, even one not made yet
        _set_aside_legacy(path)
        _create_private_file(path)
        connection = sqlite3.connect(
            path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None, check_same_thread=False
        )
        try:
            _journal_format(connection)  # before anything changes the file, which may be another program's
            mode = connection.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode != "wal":
                raise JournalRefused(
                    f"its file system does not support SQLite's write-ahead log (mode {mode})"
                )
            connection.execute("PRAGMA synchronous=FULL")  # fsync the log at every commit
            with _transaction(connection):
                if _journal_format(connection) < SCHEMA_VERSION:
                    _create_schema(connection)
                after_commit = journal_legacy.import_once(connection, path)
                pruned = _prune(connection, self.retention_days)
        except BaseException:
            connection.close()
            raise
        if after_commit is not None:
            after_commit()
        if pruned:
            logger.info(
                "Deleted %d operations older than %d days from the safety journal.",
                pruned,
                self.retention_days,
            )
        return connection

    def _begin(
        self,
        db: sqlite3.Connection,
        pbx: str,
        kind: OperationKind,
        items: list[ItemRecord],
        undoes: str | None,
    ) -> str:
        with _transaction(db):
            operation_id = secrets.token_hex(6)
            while db.execute("SELECT 1 FROM operations WHERE operation_id = ?", (operation_id,)).fetchone():
                operation_id = secrets.token_hex(6)
            record = OperationRecord(operation_id, pbx, kind, datetime.now(UTC), None, None, undoes, {})
            insert_operation(db, record, items)
        return operation_id

    def _end(self, db: sqlite3.Connection, operation_id: str, outcome: str, items: list[ItemRecord]) -> None:
        with _transaction(db):
            row = db.execute(
                "SELECT o.seq, (SELECT count(*) FROM items AS i WHERE i.seq = o.seq) FROM operations AS o "
                f"WHERE o.operation_id = ? {self._scope}",
                (operation_id, *self._scope_params),
            ).fetchone()
            if row is None:
                raise JournalRefused(f"it holds no operation {operation_id} of this PBX")
            seq, count = row
            if count != len(items):
                raise JournalRefused(f"operation {operation_id} began with {count} items, not {len(items)}")
            db.execute(
                "UPDATE operations SET finished_at = ?, outcome = ? WHERE seq = ?",
                (_iso(datetime.now(UTC)), outcome, seq),
            )
            db.executemany(
                f"UPDATE items SET {', '.join(f'{c} = ?' for c in _ITEM_FIELDS)} WHERE seq = ? AND position = ?",
                ((*_item_values(item), seq, position) for position, item in enumerate(items)),
            )

    def _operation(self, db: sqlite3.Connection, operation_id: str) -> OperationRecord | None:
        with _transaction(db, write=False):
            row = db.execute(
                f"SELECT {_OPERATION_COLUMNS} FROM operations AS o WHERE o.operation_id = ? {self._scope}",
                (operation_id, *self._scope_params),
            ).fetchone()
            return None if row is None else _operation_from(db, row)

    def _items(
        self, db: sqlite3.Connection, operation_id: str, offset: int, limit: int | None
    ) -> list[ItemRecord]:
        rows = db.execute(
            f"SELECT {_ITEM_COLUMNS} FROM operations AS o JOIN items AS i ON i.seq = o.seq "
            f"WHERE o.operation_id = ? {self._scope} ORDER BY i.position LIMIT ? OFFSET ?",
            (operation_id, *self._scope_params, -1 if limit is None else max(limit, 0), max(offset, 0)),
        )
        return [_item_from(row) for row in rows]

    def _latest(
        self, db: sqlite3.Connection, entry_ids: list[str], kinds: list[str]
    ) -> dict[str, tuple[OperationRecord, ItemRecord]]:
        found: dict[str, tuple[OperationRecord, ItemRecord]] = {}
        operations: dict[int, OperationRecord] = {}
        queries = [
            # INDEXED BY and CROSS JOIN pin the plan: seek the id in the index, walk its items newest
            # first, and stop at the first one of this PBX. No other plan is O(log n).
            f"SELECT {_OPERATION_COLUMNS}, i.position, {_ITEM_COLUMNS} "
            f"FROM items AS i INDEXED BY {index} CROSS JOIN operations AS o ON o.seq = i.seq "
            f"WHERE i.{column} = ? {self._scope} AND o.kind IN ({', '.join('?' * len(kinds))}) "
            "ORDER BY i.seq DESC, i.position DESC LIMIT 1"
            for column, index in (("before_id", "items_by_before"), ("after_id", "items_by_after"))
        ]
        with _transaction(db, write=False):
            for entry_id in entry_ids:
                rows = [
                    db.execute(query, (entry_id, *self._scope_params, *kinds)).fetchone() for query in queries
                ]
                newest = max((r for r in rows if r is not None), key=lambda r: (r[0], r[8]), default=None)
                if newest is None:
                    continue
                if newest[0] not in operations:
                    operations[newest[0]] = _operation_from(db, newest[:8])
                found[entry_id] = (operations[newest[0]], _item_from(newest[9:]))
        return found

    def _page(
        self, db: sqlite3.Connection, limit: int, start: str | None, *, newest_first: bool
    ) -> list[OperationRecord]:
        if limit <= 0:
            return []
        with _transaction(db, write=False):
            bound = _NO_SEQ_BOUND if newest_first else 0
            if start is not None:
                row = db.execute(
                    f"SELECT o.seq FROM operations AS o WHERE o.operation_id = ? {self._scope}",
                    (start, *self._scope_params),
                ).fetchone()
                if row is None:
                    return []
                bound = row[0]
            comparison, order = ("<", "DESC") if newest_first else (">", "ASC")
            rows = db.execute(
                f"SELECT {_OPERATION_COLUMNS} FROM operations AS o WHERE o.seq {comparison} ? {self._scope} "
                f"ORDER BY o.seq {order} LIMIT ?",
                (bound, *self._scope_params, limit),
            ).fetchall()
            return [_operation_from(db, row) for row in rows]


_SCHEMA = (
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE operations (
        seq INTEGER PRIMARY KEY,
        operation_id TEXT NOT NULL UNIQUE,
        pbx TEXT NOT NULL,
        kind TEXT NOT NULL,
        started_at TEXT NOT NULL,
        finished_at TEXT,
        outcome TEXT,
        undoes TEXT
    )""",
    "CREATE INDEX operations_by_pbx ON operations (pbx, seq)",
    "CREATE INDEX operations_by_start ON operations (started_at)",
    """CREATE TABLE items (
        seq INTEGER NOT NULL REFERENCES operations (seq),
        position INTEGER NOT NULL,
        before_id TEXT,
        before_caller_id TEXT,
        before_description TEXT,
        after_id TEXT,
        after_caller_id TEXT,
        after_description TEXT,
        after_known INTEGER NOT NULL,
        status TEXT NOT NULL,
        reason TEXT,
        PRIMARY KEY (seq, position)
    ) WITHOUT ROWID""",
    "CREATE INDEX items_by_before ON items (before_id, seq)",
    "CREATE INDEX items_by_after ON items (after_id, seq)",
    "CREATE TABLE legacy_unreadable (line_no INTEGER PRIMARY KEY, raw BLOB NOT NULL, error TEXT NOT NULL)",
)
_ITEM_FIELDS = (
    "before_id",
    "before_caller_id",
    "before_description",
    "after_id",
    "after_caller_id",
    "after_description",
    "after_known",
    "status",
    "reason",
)
_OPERATION_COLUMNS = "o.seq, o.operation_id, o.pbx, o.kind, o.started_at, o.finished_at, o.outcome, o.undoes"
_ITEM_COLUMNS = ", ".join(f"i.{c}" for c in _ITEM_FIELDS)
_NO_SEQ_BOUND = 2**63 - 1
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)  # opening a FIFO must not wait for a writer
_BINARY = getattr(os, "O_BINARY", 0)  # Windows: no newline translation
_SPECIAL_FILES = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def insert_operation(db: sqlite3.Connection, record: OperationRecord, items: Sequence[ItemRecord]) -> None:
    """Store an operation and its items (inside the caller's transaction); `record.counts` is derived, not stored."""
    seq = db.execute(
        "INSERT INTO operations (operation_id, pbx, kind, started_at, finished_at, outcome, undoes) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        (
            record.operation_id,
            record.pbx,
            record.kind.value,
            _iso(record.started_at),
            None if record.finished_at is None else _iso(record.finished_at),
            record.outcome,
            record.undoes,
        ),
    ).lastrowid
    db.executemany(
        f"INSERT INTO items (seq, position, {', '.join(_ITEM_FIELDS)}) VALUES ({', '.join('?' * 11)})",
        ((seq, position, *_item_values(item)) for position, item in enumerate(items)),
    )


def open_regular_file(path: Path, flags: int, mode: int = 0o600) -> int:
    """`os.open`, refusing anything but a regular file: a FIFO at the path would block the server forever,
    and opening a device can have side effects, so the path is checked before it is opened, and again after
    (in case it was swapped meanwhile). Raises JournalRefused, or OSError."""
    with suppress(FileNotFoundError):
        _refuse_special(os.stat(path).st_mode)
    fd = os.open(path, flags | _NONBLOCK | _BINARY, mode)
    try:
        _refuse_special(os.fstat(fd).st_mode)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _refuse_special(mode: int) -> None:
    if not stat.S_ISREG(mode):
        kind = next((name for is_kind, name in _SPECIAL_FILES if is_kind(mode)), "a special file")
        raise JournalRefused(f"it is {kind}, not a regular file")


def _set_aside_legacy(path: Path) -> None:
    """0.1 let THREECX_JOURNAL name any file (`journal.log`): if that file is a 0.1 journal (JSON Lines),
    move it beside, as `<name>.jsonl`, where the one-time import finds it, and make the new store here."""
    try:
        fd = open_regular_file(path, os.O_RDONLY)
    except FileNotFoundError:
        return
    with os.fdopen(fd, "rb") as existing:
        if existing.read(1) != b"{":
            return  # a SQLite file (ours or not: _open tells), or something it will refuse by name
    legacy = path.with_suffix(".jsonl")
    if legacy.exists():
        raise JournalRefused(
            f"it is a 0.1 journal, and {legacy.name} beside it already exists: move one away"
        )
    os.rename(path, legacy)
    logger.info("The 0.1 safety journal %s was moved to %s to be imported.", path, legacy)


def _create_private_file(path: Path) -> None:
    """Make sure the journal is a regular file only this user can read before SQLite opens it: SQLite
    would create it with the umask's mode (often world-readable), and gives -wal/-shm the database's mode."""
    try:
        path.parent.mkdir(parents=True, mode=0o700)
    except FileExistsError:
        pass
    else:
        os.chmod(path.parent, 0o700)  # mkdir's mode is cut by the umask
    try:
        fd = open_regular_file(path, os.O_RDWR | os.O_CREAT | os.O_EXCL)
    except FileExistsError:
        os.close(open_regular_file(path, os.O_RDWR))
        return
    try:
        os.chmod(path, 0o600)
    finally:
        os.close(fd)
    if os.name == "posix":  # make the new directory entry itself durable
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


@contextmanager
def _transaction(db: sqlite3.Connection, *, write: bool = True) -> Iterator[None]:
    """One transaction. Writers take the write lock up front (IMMEDIATE), so a busy journal makes them wait
    (busy_timeout) instead of failing halfway on a lock upgrade; readers get one consistent snapshot."""
    db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
    try:
        yield
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            with suppress(sqlite3.Error):
                db.execute("ROLLBACK")
        raise


def _journal_format(db: sqlite3.Connection) -> int:
    """The file's journal format, 0 for an empty file; refuses a newer format and other programs' databases."""
    version = int(db.execute("PRAGMA user_version").fetchone()[0])
    if version > SCHEMA_VERSION:
        raise JournalRefused(
            f"it was written by a newer threecx-mcp (journal format {version}, this one reads {SCHEMA_VERSION}); "
            "upgrade threecx-mcp"
        )
    if version == 0 and db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
        raise JournalRefused("it is a SQLite database of another program, not a threecx-mcp journal")
    return version


def _create_schema(db: sqlite3.Connection) -> None:
    for statement in _SCHEMA:
        db.execute(statement)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def _prune(db: sqlite3.Connection, retention_days: int) -> int:
    """Delete operations (and their items) that started more than `retention_days` ago; returns how many."""
    if retention_days <= 0:
        return 0
    try:
        cutoff = _iso(datetime.now(UTC) - timedelta(days=retention_days))
    except OverflowError:  # a retention longer than the calendar: nothing is that old
        return 0
    db.execute("DELETE FROM items WHERE seq IN (SELECT seq FROM operations WHERE started_at < ?)", (cutoff,))
    return db.execute("DELETE FROM operations WHERE started_at < ?", (cutoff,)).rowcount


def _item_values(item: ItemRecord) -> tuple[str | int | None, ...]:
    before, after = item.before, item.after
    return (
        *((before.id, before.caller_id, before.description) if before is not None else (None, None, None)),
        *((after.id, after.caller_id, after.description) if after is not None else (None, None, None)),
        int(item.after_known),
        item.status,
        item.reason,
    )


def _item_from(row: Sequence[object]) -> ItemRecord:
    def image(entry_id: object, caller_id: object, description: object) -> EntryImage | None:
        if entry_id is None:
            return None
        return EntryImage(str(entry_id), str(caller_id), None if description is None else str(description))

    status, reason = row[7], row[8]
    return ItemRecord(
        before=image(*row[0:3]),
        after=image(*row[3:6]),
        status=str(status),
        reason=None if reason is None else str(reason),
        after_known=bool(row[6]),
    )


def _operation_from(db: sqlite3.Connection, row: Sequence[object]) -> OperationRecord:
    seq, operation_id, pbx, kind, started_at, finished_at, outcome, undoes = row
    counts = db.execute("SELECT status, count(*) FROM items WHERE seq = ? GROUP BY status", (seq,))
    return OperationRecord(
        operation_id=str(operation_id),
        pbx=str(pbx),
        kind=OperationKind(str(kind)),
        started_at=datetime.fromisoformat(str(started_at)),
        finished_at=None if finished_at is None else datetime.fromisoformat(str(finished_at)),
        outcome=None if outcome is None else str(outcome),
        undoes=None if undoes is None else str(undoes),
        counts={str(status): int(n) for status, n in counts},
    )


def _iso(moment: datetime) -> str:
    """Fixed width, so stored times compare correctly as text (retention relies on it)."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def _sqlite_reason(exc: sqlite3.Error, path: Path) -> str:
    """SQLite's error in an administrator's words; for I/O failures, the OS reason where it can be found."""
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF  # the primary code; extended codes add high bits
    if code == sqlite3.SQLITE_FULL:
        return os.strerror(errno.ENOSPC)
    if code == sqlite3.SQLITE_NOTADB:
        return "it is not a SQLite database"
    if code == sqlite3.SQLITE_CORRUPT:
        return "the database file is damaged; move it aside and threecx-mcp starts a new one"
    if code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        return f"another process kept it locked for more than {BUSY_TIMEOUT_SECONDS:.0f} s"
    if code in (sqlite3.SQLITE_READONLY, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_PERM):
        return _os_reason(path) or str(exc)
    return str(exc)


def _os_reason(path: Path) -> str | None:
    """SQLite does not pass errno on; look for the usual causes of a failed write ourselves."""
    statvfs = getattr(os, "statvfs", None)
    with suppress(OSError):
        fs = statvfs(path.parent) if statvfs is not None else None
        if fs is not None and fs.f_flag & os.ST_RDONLY:
            return os.strerror(errno.EROFS)
        if fs is not None and fs.f_bavail == 0:
            return os.strerror(errno.ENOSPC)
        if not os.access(path, os.W_OK):
            return os.strerror(errno.EACCES)
    return None
