"""The whole blacklist as one file: the CSV that `threecx-mcp export` writes and `import` and the bulk-add
tool read back, its JSON twin, and the `threecx://blacklist.csv` resource.

Read by the client's keyset scan, so page caps and nextLinks cannot drop an entry, and sorted by caller
ID (then id), so two exports of the same blacklist are the same bytes and diff cleanly.

CSV is `caller_id,description` (RFC 4180: CRLF line ends, a field quoted when it holds a comma, a quote
or a line break), so a caller ID or description with newlines, quotes or bidi overrides comes back as
it was. A spreadsheet opening it would run a cell that starts with `=`, `+`, `-`, `@`, a tab or a
carriage return as a formula (`=HYPERLINK(…)`, `+cmd|…`), so such a cell gets one leading `'`, and so
does a cell that already starts with `'`; a reader strips one leading `'` from every cell (see
`from_cell`), which gives back every value exactly. The one exception is a plain international number,
`+` and digits only (`+442071838750`, most of a blacklist): a spreadsheet can only read it as that
number, so it stays as it is and the file stays readable to other tools.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Sequence

from ..client import BlacklistRecord, XapiClient
from ..errors import InvalidArgument
from .reporting import entry_position

CSV_COLUMNS = ("caller_id", "description")
BLACKLIST_CSV_URI = "threecx://blacklist.csv"
# UTF-8 bytes of the CSV as it travels in a JSON-RPC message (escaped as a JSON string): the SDK's client
# refuses a streamable HTTP event over 1 MiB, so one read stays clear of that with room for the envelope.
RESOURCE_LIMIT_BYTES = 900_000
_LISTED_PARTS = 20

_ESCAPE = "'"
_FORMULA_STARTS = frozenset("=+-@")
_PLAIN_NUMBER = re.compile(r"\+[0-9]+")


def to_cell(text: str) -> str:
    """The value as a CSV cell no spreadsheet runs as a formula; `from_cell` gives the value back."""
    risky = text[:1] in ("\t", "\r", _ESCAPE) or text.lstrip()[:1] in _FORMULA_STARTS
    return _ESCAPE + text if risky and not _PLAIN_NUMBER.fullmatch(text) else text


def from_cell(cell: str) -> str:
    """The value a CSV cell holds: without the one leading `'` that `to_cell` adds."""
    return cell.removeprefix(_ESCAPE)


async def read_blacklist(client: XapiClient) -> list[BlacklistRecord]:
    """Every entry, sorted by caller ID (then id): an order that does not depend on the PBX's collation."""
    return sorted(await client.scan(), key=lambda r: (r.caller_id, r.id))


def csv_rows(records: Sequence[BlacklistRecord]) -> list[str]:
    """The header line and one line per entry, each ending in CRLF."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")

    def line(cells: Sequence[str]) -> str:
        buffer.seek(0)
        buffer.truncate()
        writer.writerow(cells)
        return buffer.getvalue()

    return [line(CSV_COLUMNS)] + [line([to_cell(r.caller_id), to_cell(r.description or "")]) for r in records]


def to_csv(records: Sequence[BlacklistRecord]) -> str:
    return "".join(csv_rows(records))


def to_json(records: Sequence[BlacklistRecord]) -> str:
    """A list of {id, caller_id, description}; non-ASCII escaped, so it cannot reorder a terminal's text."""
    entries = [{"id": r.id, "caller_id": r.caller_id, "description": r.description} for r in records]
    return json.dumps(entries, ensure_ascii=True, indent=1) + "\n"


async def csv_resource(client: XapiClient, start_text: str | None) -> str:
    """The blacklist as CSV for `threecx://blacklist.csv`, whole, or from entry `start` on as much as one
    read carries; a blacklist too large for one read is refused with the parts to read instead."""
    start = None if start_text is None else entry_position(start_text)
    rows = csv_rows(await read_blacklist(client))
    header, lines = rows[0], rows[1:]
    sizes = [_travelling_size(line) for line in lines]
    first = start or 0
    if first > len(lines):
        raise InvalidArgument(f"start={first} is past the end: the blacklist holds {len(lines)} entries.")
    end = _part_end(sizes, first, _travelling_size(header))
    if start is None and end < len(lines):
        starts = [0]
        while (following := _part_end(sizes, starts[-1], _travelling_size(header))) < len(lines):
            starts.append(following)
        listed = ", ".join(f"{BLACKLIST_CSV_URI}?start={s}" for s in starts[:_LISTED_PARTS])
        more = f" and {len(starts) - _LISTED_PARTS} more" if len(starts) > _LISTED_PARTS else ""
        megabytes = (sum(sizes) + _travelling_size(header)) / 1_000_000
        raise InvalidArgument(
            f"The blacklist ({len(lines)} entries) is {megabytes:.1f} MB as CSV, more than one resource read "
            f"carries ({RESOURCE_LIMIT_BYTES / 1_000_000:.1f} MB). Run `threecx-mcp export blacklist.csv` in a "
            f"shell to get it whole, or read it in {len(starts)} parts, each a CSV with its header: "
            f"{listed}{more} (entries added or deleted between reads shift the parts)."
        )
    return header + "".join(lines[first:end])


def _part_end(sizes: Sequence[int], first: int, used: int) -> int:
    """Where a part starting at `first` ends: as many lines as fit the limit, and at least one."""
    end = first
    while end < len(sizes) and (end == first or used + sizes[end] <= RESOURCE_LIMIT_BYTES):
        used += sizes[end]
        end += 1
    return end


def _travelling_size(text: str) -> int:
    return len(json.dumps(text, ensure_ascii=False).encode()) - 2
