"""What the journal knows, for people and assistants: recent operations, and one operation in full."""

from __future__ import annotations

import json
from typing import Any

from ..display import quoted
from ..errors import InvalidArgument
from ..journal import Journal, OperationRecord
from ..models import OperationsPage, OperationSummary
from .outcomes import UNCHANGED
from .reporting import entry_position, operation_uri

ITEMS_PER_READ = 500
# Operation ids are 12 hex digits (journal.begin); a longer one is refused before any lookup.
_MAX_OPERATION_ID_LENGTH = 64
# JSON characters of entries per resource page: well under the 1 MiB an SDK client accepts in one event.
_PAGE_JSON_CHARACTERS = 400_000


async def list_operations(journal: Journal, limit: int, cursor: str | None) -> OperationsPage:
    records = await journal.recent(limit + 1, before=cursor)
    if cursor is not None and not records and await journal.operation(cursor) is None:
        raise InvalidArgument("cursor is not an operation of this PBX; omit it to start from the newest.")
    shown = records[:limit]
    return OperationsPage(
        operations=[summary(r) for r in shown],
        next_cursor=shown[-1].operation_id if len(records) > limit else None,
    )


def summary(record: OperationRecord) -> OperationSummary:
    return OperationSummary(
        operation_id=record.operation_id,
        time=record.started_at.isoformat(timespec="seconds"),
        kind=record.kind.value,
        outcome=record.outcome or "not_closed",
        counts=dict(record.counts),
        restorable=any(n and status not in UNCHANGED for status, n in record.counts.items()),
        undoes=record.undoes,
        details=operation_uri(record.operation_id),
    )


async def operation_detail(journal: Journal, operation_id: str, start: str) -> str:
    """One operation and its entries from `start` on, as JSON sized to pass any MCP transport.

    Both arguments come straight from a resource URI anyone can write, so they arrive as text and are
    checked here: `start` is parsed by `entry_position` (a readable refusal, not the SDK's "Error creating
    resource from template" echoing the whole URI), and an operation_id is quoted and capped when it is
    not found. A page ends where its JSON would pass `_PAGE_JSON_CHARACTERS` (entries from a PBX can be
    long, and non-ASCII text travels escaped), so `next_page` names the entry the next page starts at.
    """
    first = entry_position(start)
    record = None if len(operation_id) > _MAX_OPERATION_ID_LENGTH else await journal.operation(operation_id)
    if record is None:
        raise InvalidArgument(
            f"No journaled operation {quoted(operation_id, 40)} on this PBX; list_operations shows them."
        )
    shown: list[dict[str, object]] = []
    size, position, full, more = 0, first, False, True
    while more and not full:
        batch = await journal.items(operation_id, offset=position, limit=ITEMS_PER_READ)
        more = len(batch) == ITEMS_PER_READ
        for item in batch:
            entry = item.document()
            cost = len(json.dumps(entry, ensure_ascii=True))
            if shown and size + cost > _PAGE_JSON_CHARACTERS:
                full = more = True  # this entry starts the next page
                break
            shown.append(entry)
            size += cost
            position += 1
    document: dict[str, Any] = summary(record).model_dump()
    document["start"] = first
    document["items"] = shown
    document["next_page"] = f"{operation_uri(operation_id)}?start={position}" if more else None
    return json.dumps(document, ensure_ascii=True, indent=1)
