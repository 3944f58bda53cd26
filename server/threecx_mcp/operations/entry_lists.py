"""Lists of blacklist entries as people bring them: objects, CSV text, or a JSON string of objects.

Shared by the `add_blacklist_numbers` tool and `threecx-mcp import`, so both read a file the same
way. This module checks only the shape (which fields, of which type, within the size bounds) and
numbers every entry (and takes off the one leading `'` that `export` puts before a CSV cell a
spreadsheet would run as a formula, and ignores the `id` a JSON export gives each entry: the PBX gives an
added entry its own); whether a caller ID or description is acceptable is the bulk add's business,
per entry, so one bad row never hides what the rest would do.

Public API:

    parse_entries(value) -> list[EntryInput]     # raises InvalidArgument naming the rows at fault
    EntryInput(row, caller_id, description)      # row: 1-based position among the entries
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from typing import Any

from ..display import kind_of as _kind
from ..display import quoted
from ..errors import InvalidArgument
from .export import from_cell

MAX_ENTRIES = 10_000
MAX_TEXT_BYTES = 2_000_000  # CSV or JSON text: 10,000 rows of a caller ID and a long note
_FIELDS = ("caller_id", "description")
_IGNORED = ("id",)  # a JSON export's own key of each entry: the PBX names an added entry itself
_LISTED_PROBLEMS = 10
_EXAMPLE = (
    "send a list of objects with caller_id and description, CSV text whose first line is the header "
    "caller_id,description, or a JSON string holding such a list"
)
_BOM = "\ufeff"
# A caller ID given as a JSON number: 100 digits is more than any caller ID may hold (see caller_ids).
_LONGEST_NUMBER_DIGITS = 100
_LONGEST_NUMBER_BITS = 333  # 10**100 needs 333 bits
_TOO_LONG_A_NUMBER = "a number of more than 100 digits, longer than any caller ID; send caller IDs as text"


@dataclass(frozen=True, slots=True)
class EntryInput:
    """One entry as given: `row` is its 1-based position among the entries (a CSV's header not counted)."""

    row: int
    caller_id: str
    description: str | None


def parse_entries(value: object) -> list[EntryInput]:
    """The entries in `value` (a list of objects, CSV text, or JSON text of a list), in order.

    Raises InvalidArgument saying what was wrong, by row number, and how to send it instead.
    """
    if isinstance(value, str):
        value = _text_entries(value)
    if not isinstance(value, list):
        raise _invalid(f"entries must be a list, CSV text or JSON text, not {_kind(value)}; {_EXAMPLE}.")
    if not value:
        raise _invalid("entries is empty; give at least one caller ID.")
    if len(value) > MAX_ENTRIES:
        raise _invalid(f"entries holds {len(value)} entries; send at most {MAX_ENTRIES} per call.")
    parsed: list[EntryInput] = []
    problems: list[str] = []
    for row, item in enumerate(value, start=1):
        try:
            parsed.append(_entry(row, item))
        except ValueError as exc:
            problems.append(f"row {row}: {exc}")
    if problems:
        raise _invalid(_listed(problems))
    return parsed


def _text_entries(text: str) -> list[Any]:
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_TEXT_BYTES:
        raise _invalid(
            f"entries is {size:,} bytes of text; the limit is {MAX_TEXT_BYTES:,} (split the list)."
        )
    text = text.removeprefix(_BOM)
    if text.lstrip()[:1] in ("[", "{"):  # JSON; CSV never starts with either (its header does not)
        try:
            loaded = json.loads(text, parse_int=_json_integer)
        except RecursionError:
            raise _invalid(f"entries holds JSON nested too deeply; {_EXAMPLE}.") from None
        except ValueError as exc:
            raise _invalid(f"entries is not valid JSON ({exc}); {_EXAMPLE}.") from None
        if not isinstance(loaded, list):
            raise _invalid(f"entries must hold a list, not {_kind(loaded)}; {_EXAMPLE}.")
        return loaded
    return _csv_entries(text)


def _csv_entries(text: str) -> list[Any]:
    """Rows of CSV text as objects; quoted fields may hold commas, quotes and line breaks."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next((line for line in reader if any(cell.strip() for cell in line)), None)
        if header is None:
            raise _invalid("entries is empty; give at least one caller ID.")
        names = [cell.strip().lower() for cell in header]
        if names not in (["caller_id"], list(_FIELDS)):
            extra = [quoted(n, 40) for n in names if n not in _FIELDS]
            raise _invalid(
                f"The CSV's first line must be the header caller_id,description (found {_cells(header)})"
                + (f"; unknown column(s) {', '.join(extra)}" if extra else "")
                + "; put the caller ID in the first column and the note in the second."
            )
        rows: list[Any] = []
        problems: list[str] = []
        for line in reader:
            if not any(cell.strip() for cell in line):
                continue  # blank lines between rows, a trailing newline
            if len(line) > len(names):
                problems.append(
                    f"row {len(rows) + 1} (line {reader.line_num}): {len(line)} fields where the header has "
                    f"{len(names)}; quote a field that holds a comma"
                )
            # A cell `threecx-mcp export` protected from spreadsheets starts with one extra ' (see `export`).
            rows.append({name: from_cell(cell) for name, cell in zip(names, line, strict=False)})
            if len(rows) > MAX_ENTRIES:
                raise _invalid(
                    f"entries holds more than {MAX_ENTRIES} rows; send at most {MAX_ENTRIES} per call."
                )
    except csv.Error as exc:
        raise _invalid(f"entries is not valid CSV at line {reader.line_num} ({exc}); {_EXAMPLE}.") from None
    if problems:
        raise _invalid(_listed(problems))
    return rows


def _entry(row: int, item: object) -> EntryInput:
    if not isinstance(item, dict):
        raise ValueError(f'must be an object such as {{"caller_id": "+4420..."}}, not {_kind(item)}')
    unknown = [quoted(str(key), 40) for key in item if key not in _FIELDS + _IGNORED]
    if unknown:
        raise ValueError(
            f"unknown field(s) {', '.join(unknown[:5])}; only caller_id and description are read "
            "(and an export's id, which is ignored)"
        )
    if "caller_id" not in item:
        raise ValueError("caller_id is missing")
    caller_id = item["caller_id"]
    if isinstance(caller_id, bool) or not isinstance(caller_id, str | int):
        raise ValueError(f"caller_id must be text, not {_kind(caller_id)}")
    if isinstance(caller_id, int) and caller_id.bit_length() > _LONGEST_NUMBER_BITS:
        raise ValueError(_TOO_LONG_A_NUMBER)
    description = item.get("description")
    if description is not None and not isinstance(description, str):
        raise ValueError(f"description must be text, not {_kind(description)}")
    return EntryInput(row, str(caller_id), description or None)


def _json_integer(digits: str) -> int:
    """A JSON integer; one too long for any caller ID is refused before Python's own digit limit is hit."""
    if len(digits.lstrip("-")) > _LONGEST_NUMBER_DIGITS:
        raise ValueError(_TOO_LONG_A_NUMBER)
    return int(digits)


def _invalid(message: str) -> InvalidArgument:
    return InvalidArgument(message, hint="Nothing was changed.")


def _listed(problems: list[str]) -> str:
    more = len(problems) - _LISTED_PROBLEMS
    text = "; ".join(problems[:_LISTED_PROBLEMS]) + (f"; and {more} more rows" if more > 0 else "") + "."
    return text[:1].upper() + text[1:]


def _cells(header: list[str]) -> str:
    return ",".join(quoted(cell, 40) for cell in header[:5]) + (",…" if len(header) > 5 else "")
