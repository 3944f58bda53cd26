"""`threecx-mcp journal list | show ID | export [FILE]`: the safety journal, read from a terminal.

For administrators and audits: what the server changed, when, and what an undo would put back,
without an assistant in between. Text that came from the PBX or the journal file (caller IDs,
descriptions, reasons, ids) is printed escaped, so a line separator or a bidi override in an
entry cannot forge lines or reorder what a person reads. `export` writes JSON Lines with every
non-ASCII character escaped, so any line-based reader splits it where it was meant to be split.
Reading never deletes: the journal is opened without retention. With several PBXs configured, `list`
shows every PBX's operations, each line naming its PBX (by its config name where the journal key maps to
one), and `--pbx NAME` reads one PBX's.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

import anyio

from .arguments import Parser, add_pbx
from .config import SettingsIncomplete
from .display import escape, quoted
from .errors import ThreeCXMcpError
from .journal import EntryImage, ItemRecord, Journal, OperationRecord
from .wiring import unnamed_pbx

_EXPORT_PAGE = 500


class _Refusal(Exception):
    """A one-line message for the user; the command exits with 2."""


def main(
    argv: Sequence[str],
    journal_path: Path,
    pbx: str | None,
    *,
    names: Mapping[str, str] | None = None,
    choose: Callable[[str], str] | None = None,
) -> int:
    """Run one journal command; `pbx` is this server's PBX key (None when the settings name none, or several:
    every PBX). `names` maps journal keys to the configured PBXs' names, which lines show in place of the key;
    `choose` turns `--pbx NAME` into that PBX's key, raising a ConfigError that lists the names (None: no PBX
    has a name, so --pbx is refused)."""
    parser = _parser()
    try:
        args = parser.parse_args(list(argv))
    except SystemExit as exc:  # --help, or a usage error argparse has already explained
        return exc.code if isinstance(exc.code, int) else 2
    try:
        chosen = _chosen(args, choose)
        if not journal_path.exists() and not journal_path.is_symlink():
            return _without_journal(args, journal_path)
        if chosen is not None:
            scope: str | None = chosen
        else:
            scope = None if args.command == "show" or getattr(args, "all", False) or pbx is None else pbx
        journal = Journal(journal_path, scope, retention_days=0)
        try:
            return anyio.run(_run, args, journal, dict(names or {}))
        finally:
            journal.close()
    except (ThreeCXMcpError, _Refusal) as exc:
        problems = exc.problems if isinstance(exc, SettingsIncomplete) else (exc,)
        for problem in problems:  # a line each
            message = problem.user_message() if isinstance(problem, ThreeCXMcpError) else str(problem)
            print(f"{parser.prog}: {message}", file=sys.stderr)
        return 2


def _chosen(args: argparse.Namespace, choose: Callable[[str], str] | None) -> str | None:
    """The journal key of the PBX `--pbx` names, or None without it."""
    if args.pbx is None:
        return None
    if getattr(args, "all", False):
        raise _Refusal("--all reads every PBX's operations and --pbx one PBX's: give only one of them.")
    if choose is None:
        raise unnamed_pbx(args.pbx)
    return choose(args.pbx)


def _parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="threecx-mcp journal",
        description="Read the safety journal: what this server changed on the PBX, and how to undo it.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="{list,show,export}")
    listing = commands.add_parser(
        "list",
        help="recent operations, newest first",
        description="The journaled operations on this PBX (or every PBX with --all), newest first: time, kind, "
        "outcome and counts per status. Each line starts with the operation_id that show and "
        "restore_blacklist_numbers take. With several PBXs configured, every PBX's operations, each line "
        "naming its PBX, or only one PBX's with --pbx NAME.",
    )
    listing.add_argument("--limit", type=_positive, default=20, help="how many (default 20)")
    listing.add_argument("--all", action="store_true", help="operations on every PBX, not only this one")
    add_pbx(listing, "list the operations of")
    show = commands.add_parser(
        "show",
        help="one operation and every entry it touched",
        description="One operation, with every entry it touched: before, after, status and reason.",
    )
    show.add_argument("operation_id", help="the id a tool's result or `threecx-mcp journal list` gives")
    add_pbx(show, "look the operation up on (default: any PBX)")
    export = commands.add_parser(
        "export",
        help="every operation with its entries, as JSON Lines",
        description="Every operation with its entries, one JSON object a line, to FILE or standard output.",
    )
    export.add_argument("file", nargs="?", help="write here instead of to standard output")
    export.add_argument("--all", action="store_true", help="operations on every PBX, not only this one")
    add_pbx(export, "export the operations of")
    return parser


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, not {escape(text)}")
    return value


def _without_journal(args: argparse.Namespace, journal_path: Path) -> int:
    """Nothing journaled yet: say so, rather than create an empty journal by reading it."""
    if args.command == "show":
        raise _Refusal(
            f"No operation {quoted(args.operation_id, 80)}: there is no journal at {escape(str(journal_path))} yet."
        )
    if args.command == "list":
        print(f"No operations journaled yet (no journal at {journal_path}).")
        return 0
    with _output(args.file):
        return 0


async def _run(args: argparse.Namespace, journal: Journal, names: dict[str, str]) -> int:
    if args.command == "list":
        await _list(journal, args.limit, names)
    elif args.command == "show":
        await _show(journal, args.operation_id, names)
    else:
        with _output(args.file) as out:
            await _export(journal, out)
    return 0


async def _list(journal: Journal, limit: int, names: dict[str, str]) -> None:
    records = await journal.recent(limit)
    if not records:
        which = (
            "" if journal.pbx is None else f" for {_pbx_named(journal.pbx, names) if names else 'this PBX'}"
        )
        print(f"No operations journaled{which} yet.")
        return
    header = [
        "operation_id",
        "started (UTC)",
        *(["pbx"] if journal.pbx is None else []),
        "kind",
        "outcome",
        "counts",
    ]
    rows = [
        [
            escape(r.operation_id),
            _time(r.started_at),
            *([_pbx_cell(r.pbx, names)] if journal.pbx is None else []),
            r.kind.value,
            escape(r.outcome) if r.outcome is not None else "not closed",
            _counts(r.counts),
        ]
        for r in records
    ]
    widths = [max(len(row[column]) for row in [header, *rows]) for column in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


async def _show(journal: Journal, operation_id: str, names: dict[str, str]) -> None:
    record = await journal.operation(operation_id)
    if record is None:
        if journal.pbx is not None:
            raise _Refusal(
                f"No operation {quoted(operation_id, 80)} on {_pbx_named(journal.pbx, names)} in the journal "
                f"{escape(str(journal.path))}; `threecx-mcp journal show` without --pbx finds it on any PBX."
            )
        raise _Refusal(
            f"No operation {quoted(operation_id, 80)} in the journal {escape(str(journal.path))}; "
            "`threecx-mcp journal list --all` shows every operation."
        )
    print(f"operation {escape(record.operation_id)}")
    named = f" (PBX {quoted(names[record.pbx], 90)})" if record.pbx in names else ""
    print(f"  pbx:      {escape(record.pbx)}{named}")
    print(f"  kind:     {record.kind.value}")
    print(f"  started:  {_time(record.started_at)}")
    print(f"  finished: {_time(record.finished_at) if record.finished_at else 'not closed'}")
    print(f"  outcome:  {escape(record.outcome) if record.outcome is not None else 'not closed'}")
    if record.undoes is not None:
        print(f"  undoes:   {escape(record.undoes)}")
    print(f"  entries:  {sum(record.counts.values())} ({_counts(record.counts)})")
    for position, item in enumerate(await journal.items(operation_id), start=1):
        print(f"  {position}. {_item_line(item)}")


def _item_line(item: ItemRecord) -> str:
    line = f"id {_quoted(item.entry_id)}: {escape(item.status)}"
    if item.reason is not None:
        line += f" ({_quoted(item.reason)})"
    after = _image(item.after) if item.after_known else "not recorded"
    return f"{line}; before: {_image(item.before)}; after: {after}"


def _image(image: EntryImage | None) -> str:
    if image is None:
        return "none"
    description = (
        "no description" if image.description is None else f"description {_quoted(image.description)}"
    )
    return f"caller ID {_quoted(image.caller_id)}, {description}"


async def _export(journal: Journal, out: TextIO) -> None:
    after: str | None = None
    while page := await journal.oldest_first(_EXPORT_PAGE, after=after):
        for record in page:
            document = _document(record, await journal.items(record.operation_id))
            out.write(json.dumps(document, ensure_ascii=True) + "\n")
        after = page[-1].operation_id


def _document(record: OperationRecord, items: Sequence[ItemRecord]) -> dict[str, Any]:
    return {
        "operation_id": record.operation_id,
        "pbx": record.pbx,
        "kind": record.kind.value,
        "started_at": record.started_at.isoformat(),
        "finished_at": None if record.finished_at is None else record.finished_at.isoformat(),
        "outcome": record.outcome,
        "undoes": record.undoes,
        "counts": record.counts,
        "items": [item.document() for item in items],
    }


@contextmanager
def _output(file: str | None) -> Iterator[TextIO]:
    """Standard output, or FILE, created private to the user (it holds caller IDs)."""
    if file is None or file == "-":
        yield sys.stdout
        return
    try:
        with open(
            os.open(file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w", encoding="utf-8"
        ) as handle:
            yield handle
    except OSError as exc:
        raise _Refusal(f"Cannot write {escape(file)} ({exc.strerror or type(exc).__name__}).") from None


def _pbx_cell(key: str, names: dict[str, str]) -> str:
    """A list line's PBX: its configured name where the journal key maps to one, else the key itself."""
    return escape(names.get(key, key))


def _pbx_named(key: str, names: dict[str, str]) -> str:
    return f"PBX {quoted(names[key], 90)}" if key in names else escape(key)


def _time(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%SZ")


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {escape(status)}" for status, n in sorted(counts.items())) or "no entries"


def _quoted(text: str) -> str:
    return f'"{escape(text)}"'
