"""Results that fit an assistant: a bounded list per operation, the rest behind a resource URI.

A 10,000-id result listed in full is megabytes: past what assistants accept and past the
SDK's event size on streamable HTTP, where the answer of an applied delete would be lost. So a
result lists the entries that need attention first, up to a count and a size, counts the rest,
and names the MCP resource that holds every entry's detail.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import AsyncIterator, Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import anyio.lowlevel

from ..display import quoted
from ..errors import InvalidArgument
from ..models import MAX_LISTED_RESULTS

# JSON characters of listed results at most, counted as they travel (non-ASCII escaped): ids, caller IDs,
# descriptions and reasons can each be long, and a lying PBX may send anything.
_LISTED_JSON_CHARACTERS = 150_000
_ROW_OVERHEAD = 120  # field names and punctuation of one listed result
OPERATION_URI_PREFIX = "threecx://operations/"
_STRIDE = 500  # items handled between two chances for the event loop to run other tasks

_T = TypeVar("_T")


async def yielding(items: Iterable[_T]) -> AsyncIterator[_T]:
    """The items, letting the event loop run other tasks every few hundred: an operation over 10,000
    entries must not hold up other clients' calls (or the server's own progress and pings)."""
    for position, item in enumerate(items):
        if position % _STRIDE == _STRIDE - 1:
            await anyio.lowlevel.checkpoint()
        yield item


@dataclass(frozen=True, slots=True)
class Row:
    """One entry's outcome, cheap to make for every id; only the listed ones become output models."""

    id: str
    status: str
    caller_id: str | None
    description: str | None
    reason: str | None = None
    current_id: str | None = None


def operation_uri(operation_id: str) -> str:
    return f"{OPERATION_URI_PREFIX}{operation_id}"


def counts(rows: Sequence[Row]) -> dict[str, int]:
    return dict(Counter(row.status for row in rows))


def bounded_rows(rows: Sequence[Row], important: Collection[str]) -> tuple[list[Row], int]:
    """The rows to list (in their order) and how many were left out: rows whose status is important
    come first, then the others, up to a count and a size."""
    chosen: set[int] = set()
    budget = _LISTED_JSON_CHARACTERS
    for wanted in (True, False):
        for position, row in enumerate(rows):
            if len(chosen) == MAX_LISTED_RESULTS:
                break
            if (row.status in important) is not wanted:
                continue
            size = _ROW_OVERHEAD + sum(
                len(json.dumps(text))
                for text in (row.id, row.caller_id, row.description, row.reason, row.current_id)
            )
            if size > budget:
                continue
            budget -= size
            chosen.add(position)
    listed = [row for position, row in enumerate(rows) if position in chosen]
    return listed, len(rows) - len(listed)


_MAX_START_DIGITS = (
    9  # entry positions below a billion: far beyond any journal or blacklist, well inside an int
)


def entry_position(start: str) -> int:
    """A resource's `?start=` as an entry position: ASCII digits only (no sign, exponent or spaces), and a
    bounded count of them, so a 5,000-digit value is refused before it is turned into a number or repeated.
    Resources take it as text because the SDK fails an int it cannot convert with no reason given."""
    if not (start.isascii() and start.isdigit()) or len(start) > _MAX_START_DIGITS:
        raise InvalidArgument(
            f"start is the position of an entry, a whole number from 0 to {10**_MAX_START_DIGITS - 1}, not "
            f"{quoted(start, 20)}: take it from the link that named it, or omit it to start at the first entry."
        )
    return int(start)
