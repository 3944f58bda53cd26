"""`threecx-mcp export [--format csv|json] [FILE]` and `threecx-mcp import FILE [--dry-run] [--yes]`.

For administrators moving a blacklist between PBXs, keeping a copy, or bringing a carrier's list:
the same engines and the same safety journal as the tools, from a shell. The file format is
`operations.export`'s. An export is written whole or not at all (a temporary file beside FILE,
fsynced, then renamed over it), so a failure midway never leaves a truncated blacklist where the last
good copy was. An import is journaled like the tool's bulk add (`threecx-mcp journal list` shows it,
`restore_blacklist_numbers` undoes it); the person at the shell is the one confirming, so it shows
what it would do first and goes on only after `--yes` or a "y" typed at the terminal. With several PBXs
configured, `--pbx NAME` says which (the config file's default otherwise); an import is journaled on that
PBX's view of the journal, so a restore undoes it there.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import BinaryIO

import anyio

from .arguments import Parser, add_pbx, add_sandbox_options, sandbox_overrides
from .client import XapiClient
from .config import Settings, SettingsIncomplete
from .display import escape, quoted
from .errors import ConfigError, InvalidArgument, ThreeCXMcpError
from .models import BulkAddResult
from .operations import bulk_add
from .operations.entry_lists import MAX_TEXT_BYTES, EntryInput, parse_entries
from .operations.export import read_blacklist, to_csv, to_json
from .pbxs import Pbx
from .sanitise import clean
from .wiring import pbx_for

EXIT_OK, EXIT_INCOMPLETE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
_BOM = "\ufeff"
_BROAD_REMEDY = "If you really want that, import again with --allow-broad-pattern."
_NOT_ADDED = ("invalid", "duplicate", "already_present", "skipped", "failed", "unknown")


class _Refusal(Exception):
    """A one-line message for the user; the command exits with the code given."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


def main(argv: Sequence[str]) -> int:
    """Run `export …` or `import …` (argv starts with the command's name), with the client and journal
    a server on the same settings would use."""
    parser = _parser()
    try:
        args = parser.parse_args(list(argv))
    except SystemExit as exc:  # --help, or a usage error argparse has already explained
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    prog = f"threecx-mcp {args.command}"
    try:
        settings = Settings.load(collect_problems=False, **sandbox_overrides(args.sandbox, args.sandboxes))
        if notice := settings.sandbox_notice():
            print(f"{prog}: {notice}", file=sys.stderr)
        pbx = pbx_for(settings, args.pbx)
        if args.command == "import":
            pbx.writable()
        factory, journal = pbx.make_client, pbx.journal
    except (ConfigError, InvalidArgument) as exc:
        for problem in exc.problems if isinstance(exc, SettingsIncomplete) else (exc,):  # a line each
            print(f"{prog}: {problem.user_message()}", file=sys.stderr)
        return EXIT_USAGE
    try:
        if args.command == "export":
            return _export(args, factory, pbx)
        return _import(args, factory, pbx)
    except _Refusal as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return exc.code
    except ThreeCXMcpError as exc:
        print(f"{prog}: {exc.user_message()}", file=sys.stderr)
        return EXIT_INCOMPLETE
    finally:
        journal.close()


def _parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="threecx-mcp",
        description="Export the PBX's blacklist to a file, or import entries from one.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="{export,import}")
    export = commands.add_parser(
        "export",
        help="the whole blacklist as CSV (caller_id,description) or JSON, sorted by caller ID",
        description="Write the whole blacklist, sorted by caller ID. FILE is replaced only once the new "
        "copy is complete (mode 0600); without FILE it goes to standard output.",
    )
    export.add_argument("file", nargs="?", metavar="FILE", help="write here (default: standard output)")
    export.add_argument(
        "--format", choices=("csv", "json"), help="default: json for a FILE ending in .json, else csv"
    )
    load = commands.add_parser(
        "import",
        help="add the entries of a CSV or JSON file (as export writes them), journaled",
        description="Add every entry of FILE that the blacklist lacks: CSV with the header "
        "caller_id,description, or a JSON list of {caller_id, description}; at most 10,000 entries. "
        "Shows what it would do, then asks (or takes --yes). Journaled like the tools' writes: "
        "threecx-mcp journal list shows it, and restore_blacklist_numbers with its operation_id removes "
        "what it added. Exit code 0 when every entry was added or already present, 1 when some were "
        "invalid, failed or not added, 2 for a usage error.",
    )
    load.add_argument(
        "file", metavar="FILE", help="the CSV or JSON file (by its extension, else its content)"
    )
    load.add_argument("--dry-run", action="store_true", help="only show what would be added")
    load.add_argument(
        "--allow-broad-pattern",
        action="store_true",
        help="also add patterns that block (nearly) every caller, such as * (refused without it)",
    )
    load.add_argument("--yes", action="store_true", help="add without asking (needed without a terminal)")
    for command, what in ((export, "export the blacklist of"), (load, "import into")):
        add_sandbox_options(
            command,
            "use the embedded sandbox PBX (with a config file, a sandbox in place of the PBX --pbx names)",
        )
        add_pbx(command, f"{what} (required with several PBXs and no default one)")
    return parser


def _export(args: argparse.Namespace, factory: Callable[[], XapiClient], pbx: Pbx) -> int:
    target = None if args.file in (None, "-") else Path(args.file)
    form = args.format or ("json" if target is not None and target.suffix.lower() == ".json" else "csv")

    async def read() -> tuple[str, int]:
        async with factory() as client:
            records = await read_blacklist(client)
        return (to_csv if form == "csv" else to_json)(records), len(records)

    text, count = anyio.run(read)
    data = text.encode("utf-8")
    if target is None:
        _write_all(sys.stdout.buffer, data)
        where = "standard output"
    else:
        write_atomically(target, data)
        where = escape(str(target))
    source = "" if pbx.name is None else f" of PBX {quoted(pbx.name, 40)}"
    entries = f"{count} entr{'y' if count == 1 else 'ies'}"
    print(f"threecx-mcp export: {entries}{source} as {form.upper()} to {where}.", file=sys.stderr)
    return EXIT_OK


def _import(args: argparse.Namespace, factory: Callable[[], XapiClient], pbx: Pbx) -> int:
    """Add the file's entries to `pbx`, journaled on its view of the journal (so restore undoes it there)."""
    entries = _entries(Path(args.file))
    journal = pbx.journal

    async def run() -> BulkAddResult:
        async with factory() as client:
            allowed = args.allow_broad_pattern
            preview, shown = await bulk_add.preview(client, entries, allowed, _BROAD_REMEDY)
            _report(preview)
            if args.dry_run or not preview.would_add:
                return preview
            if not args.yes and not await anyio.to_thread.run_sync(_confirmed, preview.would_add, pbx):
                raise _Refusal("Nothing was added.", EXIT_INCOMPLETE)
            result = await bulk_add.bulk_add(
                client,
                journal,
                entries,
                dry_run=False,
                allow_broad_pattern=allowed,
                progress=_progress,
                shown=shown,  # what the terminal showed as to be added, and the user agreed to
                broad_remedy=_BROAD_REMEDY,
            )
            _report(result)
            return result

    try:
        result = anyio.run(run)
    except KeyboardInterrupt:  # the engine settled its journal record before letting the interruption go
        raise _Refusal(
            "Interrupted; what was added is journaled: threecx-mcp journal list shows it.", EXIT_INTERRUPTED
        ) from None
    complete = not (result.invalid or result.failed or result.unknown)
    return EXIT_OK if complete else EXIT_INCOMPLETE


def _entries(path: Path) -> list[EntryInput]:
    """The file's entries, read as the bulk-add tool reads them (a CSV's cells lose `export`'s escape)."""
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_TEXT_BYTES + len(_BOM.encode()) + 1)
    except OSError as exc:
        raise _Refusal(f"Cannot read {escape(str(path))} ({exc.strerror or type(exc).__name__}).") from None
    if len(data) > MAX_TEXT_BYTES + len(_BOM.encode()):
        raise _Refusal(
            f"{escape(str(path))} is larger than the {MAX_TEXT_BYTES:,} bytes one import takes (up to 10,000 "
            "entries); split it into smaller files."
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _Refusal(
            f"{escape(str(path))} is not UTF-8 text (byte {exc.start + 1}); save it as UTF-8 "
            "(in a spreadsheet: CSV UTF-8)."
        ) from None
    is_json = text.removeprefix(_BOM).lstrip().startswith("[")  # as parse_entries tells them apart
    suffix = path.suffix.lower()
    if suffix in (".csv", ".json") and (suffix == ".json") != is_json:
        found = "a JSON list" if is_json else "no JSON list (it should start with [)"
        raise _Refusal(f"{escape(str(path))} ends in {suffix} but holds {found}; fix the file or its name.")
    try:
        entries = parse_entries(text)
    except InvalidArgument as exc:
        raise _Refusal(f"{escape(str(path))}: {exc.user_message()}", EXIT_INCOMPLETE) from None
    return entries


def _report(result: BulkAddResult) -> None:
    """The summary and every listed entry that was not added, escaped so no entry can forge a line."""
    print(result.summary)
    for outcome in result.results:
        if outcome.status in _NOT_ADDED:
            line = f"  row {outcome.row}: {outcome.status} {quoted(outcome.caller_id)}"
            if outcome.id is not None:
                line += f" (entry {quoted(outcome.id)})"
            if outcome.reason:
                line += f": {clean(outcome.reason, None)}"  # its values are quoted and escaped already
            print(line)
    if result.omitted:
        where = (
            f"; threecx-mcp journal show {result.operation_id} lists every entry"
            if result.operation_id
            else ""
        )
        print(f"  ({result.omitted} more entries not listed{where})")
    if result.operation_id:
        print(
            f"Operation {result.operation_id}: restore_blacklist_numbers with this operation_id removes what "
            "was added."
        )
    for warning in result.warnings:
        print(f"Warning: {escape(warning)}")


def _confirmed(count: int, pbx: Pbx) -> bool:
    """Ask at the terminal; without one, refuse: the confirmation must come from a person (or --yes)."""
    if not sys.stdin.isatty():
        raise _Refusal(
            "Nothing was added: without a terminal to ask at, run again with --yes (check the summary above, "
            "or run with --dry-run first)."
        )
    where = escape(pbx.key) if pbx.name is None else f"PBX {quoted(pbx.name, 40)} ({escape(pbx.location)})"
    print(
        f"Add {count} entr{'y' if count == 1 else 'ies'} to the blacklist on {where}? [y/N] ",
        end="",
        file=sys.stderr,
        flush=True,
    )
    answer = sys.stdin.readline()
    return answer.strip().lower() in ("y", "yes")


async def _progress(done: float, total: float, message: str) -> None:
    print(f"threecx-mcp import: {escape(message)}", file=sys.stderr, flush=True)


def _write_all(stream: BinaryIO, data: bytes) -> None:
    try:
        stream.write(data)
        stream.flush()
    except OSError as exc:  # a closed pipe, a full disk behind a redirection
        raise _Refusal(
            f"Cannot write to standard output ({exc.strerror or type(exc).__name__}).", EXIT_INCOMPLETE
        ) from None


def write_atomically(path: Path, data: bytes) -> None:
    """Put `data` at `path` whole or not at all, private to this user (it lists callers).

    Written to a temporary file in the same folder (so the rename cannot cross file systems), fsynced,
    renamed over `path`, then the folder fsynced so the rename survives a power cut. On any failure
    (a full disk, an unwritable folder, an interruption) the temporary file is removed and whatever was
    at `path` before is still there, untouched. A symlink at `path` is replaced, never followed.
    """
    folder = path.parent
    try:
        descriptor, temporary = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".partial")
    except OSError as exc:
        raise _cannot_write(path, exc) from None
    try:
        with open(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        if isinstance(exc, OSError):
            raise _cannot_write(path, exc) from None
        raise
    _fsync_folder(folder)


def _cannot_write(path: Path, exc: OSError) -> _Refusal:
    return _Refusal(
        f"Cannot write {escape(str(path))} ({exc.strerror or type(exc).__name__}); nothing was written there "
        "and any file already at that path is unchanged.",
        EXIT_INCOMPLETE,
    )


def _fsync_folder(folder: Path) -> None:
    if sys.platform == "win32":  # folders cannot be opened for fsync there; NTFS journals the rename
        return
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
