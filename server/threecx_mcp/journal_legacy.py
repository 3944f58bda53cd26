"""The one-time import of a 0.1 safety journal (JSON Lines) into the SQLite journal.

0.1 appended a `begin` and an `end` record per operation to `<journal>.jsonl` and read them back
with `str.splitlines()`, which also splits at U+2028, U+0085 and the other separators that
`json.dumps(ensure_ascii=False)` leaves raw inside strings: one such caller ID made its whole
operation unrestorable. So this reader splits the bytes at b"\\n" only and decodes each line on
its own (an invalid UTF-8 byte spoils only its line). A crash while 0.1 wrote a record left it
half-written, and the next record was appended to the same line: that next record is found and
imported. Nothing is lost silently: every line that cannot be used is kept verbatim in the
table `legacy_unreadable` and counted in one log line, and the file is renamed to
`<name>.jsonl.imported`, never deleted.

The import runs inside the transaction that opens the journal, and records the file's SHA-256 in
`meta`, so two processes starting at once import it exactly once, and a crash between the commit
and the rename does not import it twice.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from .display import escape, kind_of
from .errors import JournalError
from .journal import (
    EntryImage,
    ItemRecord,
    JournalRefused,
    OperationKind,
    OperationRecord,
    insert_operation,
    open_regular_file,
)

logger = logging.getLogger(__name__)

_MARKER = "legacy_import_sha256"
_KINDS = {
    "bulk_delete_blacklist_numbers": OperationKind.DELETE,
    "update_blacklist_number": OperationKind.UPDATE,
    "restore_blacklist_numbers": OperationKind.RESTORE,
}
# A torn record is followed by at most a few others on its line; bounded, so a crafted line costs little.
_MAX_RECOVERY_ATTEMPTS = 8
_LISTED_LINE_NUMBERS = 20


@dataclass(frozen=True)
class UnreadableLine:
    line_no: int  # 1-based, counting b"\n"-separated lines
    raw: bytes
    error: str


@dataclass
class LegacyJournal:
    """What a 0.1 file held, in the new records; `restore_images` counts the before-images of 0.1
    restores, which were not journaled as undoable items (they stay in the renamed file)."""

    operations: list[tuple[OperationRecord, list[ItemRecord]]] = field(default_factory=list)
    unreadable: list[UnreadableLine] = field(default_factory=list)
    restore_images: int = 0


def import_once(db: sqlite3.Connection, db_path: Path) -> Callable[[], None] | None:
    """Import the 0.1 journal beside `db_path`, if there is one not imported yet, inside the caller's
    transaction. Returns what to do once that transaction has committed (rename the file, log), or None."""
    source = db_path.with_suffix(".jsonl")
    if source == db_path:
        return None
    data = _read(source)
    if data is None:
        return None
    digest = hashlib.sha256(data).hexdigest()
    row = db.execute("SELECT value FROM meta WHERE key = ?", (_MARKER,)).fetchone()
    if row is None:
        legacy = parse(data)
        for record, items in legacy.operations:
            insert_operation(db, record, items)
        db.executemany(
            "INSERT INTO legacy_unreadable (line_no, raw, error) VALUES (?, ?, ?)",
            ((u.line_no, u.raw, u.error) for u in legacy.unreadable),
        )
        db.execute("INSERT INTO meta (key, value) VALUES (?, ?)", (_MARKER, digest))
        return partial(_set_aside_and_report, source, db_path, legacy)
    if row[0] == digest:  # imported before; only the rename was cut short
        return partial(_set_aside_and_report, source, db_path, None)
    logger.warning(
        "The 0.1 safety journal %s was not imported: %s already holds an import of another 0.1 journal. "
        "It is left as it is; move it elsewhere to silence this warning.",
        source,
        db_path,
    )
    return None


def parse(data: bytes) -> LegacyJournal:
    """The operations of a 0.1 journal, and every line that could not be used."""
    legacy = LegacyJournal()
    begins: dict[str, _Begin] = {}
    ends: dict[str, _End] = {}
    for line_no, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            start, record = _record(raw)
            _collect(record, begins, ends)
        except _Unreadable as exc:
            legacy.unreadable.append(UnreadableLine(line_no, raw, str(exc)))
            continue
        if start:
            legacy.unreadable.append(
                UnreadableLine(
                    line_no,
                    raw,
                    f"its first {start} characters are a record cut short (0.1 crashed while writing it); "
                    "the record after them was imported",
                )
            )
    for begin in begins.values():
        end = ends.get(begin.operation_id)
        if begin.kind is OperationKind.RESTORE:
            legacy.restore_images += len(begin.images)
            items = []
        else:
            items = [
                ItemRecord(
                    before=image,
                    after=None,
                    status="pending" if end is None else end.statuses.get(image.id, "unknown"),
                    after_known=begin.kind is not OperationKind.UPDATE,
                )
                for image in begin.images
            ]
        operation = OperationRecord(
            operation_id=begin.operation_id,
            pbx=begin.pbx,
            kind=begin.kind,
            started_at=begin.time,
            finished_at=None if end is None else end.time,
            outcome=None if end is None else end.outcome,
            undoes=None,
            counts=dict(Counter(item.status for item in items)),
        )
        legacy.operations.append((operation, items))
    return legacy


class _Unreadable(Exception):
    """Why one line cannot be used, in words stored beside it."""


@dataclass(frozen=True)
class _Begin:
    operation_id: str
    time: datetime
    kind: OperationKind
    pbx: str
    images: list[EntryImage]


@dataclass(frozen=True)
class _End:
    operation_id: str
    time: datetime
    outcome: str
    statuses: dict[str, str]


def _read(source: Path) -> bytes | None:
    try:
        fd = open_regular_file(source, os.O_RDONLY)
    except FileNotFoundError:
        return None
    except (JournalRefused, OSError) as exc:
        reason = exc.reason if isinstance(exc, JournalRefused) else exc.strerror or type(exc).__name__
        raise JournalError(f"Cannot read the 0.1 safety journal {escape(str(source))} ({reason}).") from None
    with open(fd, "rb") as handle:
        return handle.read()


def _record(raw: bytes) -> tuple[int, dict[str, Any]]:
    """The line's record, and where it starts: after a torn record, 0.1 appended the next on the same line."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _Unreadable(f"invalid UTF-8 at byte {exc.start + 1}") from None
    try:
        return 0, _object(json.loads(text))
    except json.JSONDecodeError as exc:
        error = f"not JSON ({exc.msg} at character {exc.pos + 1})"
    start = text.find('{"phase"', 1)
    for _ in range(_MAX_RECOVERY_ATTEMPTS):
        if start < 0:
            break
        try:
            return start, _object(json.loads(text[start:]))
        except json.JSONDecodeError:
            start = text.find('{"phase"', start + 1)
    raise _Unreadable(error)


def _object(value: object) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _Unreadable(f"not a 0.1 journal record ({kind_of(value)} in JSON instead of an object)")
    return value


def _collect(record: dict[str, Any], begins: dict[str, _Begin], ends: dict[str, _End]) -> None:
    phase = record.get("phase")
    if phase == "begin":
        begin = _begin(record)
        if begin.operation_id in begins:
            raise _Unreadable(f"a second begin record for operation {json.dumps(begin.operation_id)}")
        begins[begin.operation_id] = begin
    elif phase == "end":
        end = _end(record)
        if end.operation_id not in begins:
            raise _Unreadable("the end of an operation whose begin record is missing or unreadable")
        if end.operation_id in ends:
            raise _Unreadable(f"a second end record for operation {json.dumps(end.operation_id)}")
        ends[end.operation_id] = end
    else:
        raise _Unreadable('not a 0.1 journal record (no "phase" of begin or end)')


def _begin(record: dict[str, Any]) -> _Begin:
    tool = _text(record, "tool")
    if tool not in _KINDS:
        raise _Unreadable(f'unknown tool {json.dumps(tool)[:80]} in field "tool"')
    images = record.get("before")
    if not isinstance(images, list):
        raise _Unreadable('field "before" is missing or not a list')
    return _Begin(
        operation_id=_text(record, "operation_id"),
        time=_time(record),
        kind=_KINDS[tool],
        pbx=_text(record, "pbx"),
        images=[_image(image) for image in images],
    )


def _end(record: dict[str, Any]) -> _End:
    statuses = record.get("statuses")
    if not isinstance(statuses, dict):
        raise _Unreadable('field "statuses" is missing or not an object')
    return _End(
        operation_id=_text(record, "operation_id"),
        time=_time(record),
        outcome=_text(record, "outcome"),
        statuses={_storable(key, "statuses"): _text(statuses, key) for key in statuses},
    )


def _image(value: object) -> EntryImage:
    if not isinstance(value, dict):
        raise _Unreadable('an entry in field "before" is not an object')
    description = value.get("description")
    return EntryImage(
        id=_text(value, "id"),
        caller_id=_text(value, "caller_id"),
        description=None if description is None else _text(value, "description"),
    )


def _text(record: dict[str, Any], key: str) -> str:
    value = record.get(key)
    if not isinstance(value, str):
        raise _Unreadable(f'field "{key}" is missing or not text')
    return _storable(value, key)


def _storable(value: str, key: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise _Unreadable(
            f'field "{key}" holds an unpaired UTF-16 surrogate, which cannot be stored'
        ) from None
    return value


def _time(record: dict[str, Any]) -> datetime:
    try:
        moment = datetime.fromisoformat(_text(record, "time"))
    except ValueError:
        raise _Unreadable('field "time" is not an ISO 8601 time') from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _set_aside_and_report(source: Path, db_path: Path, legacy: LegacyJournal | None) -> None:
    """Runs after the import committed: a failure here loses nothing (the file is recognised next time)."""
    try:
        kept = _set_aside(source)
    except OSError as exc:
        logger.warning("Could not rename the imported 0.1 safety journal %s (%s).", source, exc.strerror)
        kept = source
    if legacy is None:
        return
    message = f"Imported the 0.1 safety journal {source} into {db_path}: {len(legacy.operations)} operations"
    if legacy.unreadable:
        numbers = [str(u.line_no) for u in legacy.unreadable[:_LISTED_LINE_NUMBERS]]
        more = ", …" if len(legacy.unreadable) > _LISTED_LINE_NUMBERS else ""
        message += (
            f"; skipped {len(legacy.unreadable)} unreadable lines (line {', '.join(numbers)}{more}), "
            "kept verbatim in the journal's table legacy_unreadable"
        )
    if legacy.restore_images:
        message += (
            f"; {legacy.restore_images} before-images of 0.1 restores cannot be undone and were not imported"
        )
    logger.log(
        logging.WARNING if legacy.unreadable else logging.INFO,
        "%s. The file is kept as %s.",
        message,
        kept if kept is not None else "(renamed by another process)",
    )


def _set_aside(source: Path) -> Path | None:
    """Rename `source` to `<name>.imported` (or `.imported.1`, ...), never over an existing file; returns the
    new name, or None when another process already moved it.

    Two processes that opened the journal at once may both get here: an atomic rename to a name of this
    process's own decides which one moves the file, so it is never kept twice.
    """
    claimed = source.with_name(f"{source.name}.setting-aside-{os.getpid()}")
    try:
        os.rename(source, claimed)
    except FileNotFoundError:
        return None
    n = 0
    while True:
        target = source.with_name(f"{source.name}.imported" + (f".{n}" if n else ""))
        n += 1
        try:
            os.link(claimed, target)  # unlike rename, fails rather than replace an existing file
        except FileExistsError:
            continue
        except OSError:  # a file system without hard links
            if target.exists():
                continue
            os.rename(claimed, target)
            return target
        os.unlink(claimed)
        return target
