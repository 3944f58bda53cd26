"""What the journal knows, for people and assistants: recent operations, and one operation in full."""

from __future__ import annotations

import json
from typing import Any

from ..errors import InvalidArgument
from ..journal import Journal, OperationRecord
from ..models import OperationsPage, OperationSummary
from .outcomes import UNCHANGED
from .reporting import operation_uri

ITEMS_PER_PAGE = 500
# Statuses after which an undo has nothing to put back.


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


async def operation_detail(journal: Journal, operation_id: str, page: int) -> str:
    """One operation and a page of its entries as JSON, sized to pass any MCP transport."""
    record = await journal.operation(operation_id)
    if record is None:
        raise InvalidArgument(
            f"No journaled operation {operation_id!r} on this PBX; list_operations shows them."
        )
    if page < 1:
        raise InvalidArgument("page starts at 1.")
    items = await journal.items(operation_id, offset=(page - 1) * ITEMS_PER_PAGE, limit=ITEMS_PER_PAGE + 1)
    document: dict[str, Any] = summary(record).model_dump()
    document["page"] = page
    document["items"] = [i.document() for i in items[:ITEMS_PER_PAGE]]
    document["next_page"] = (
        f"{operation_uri(operation_id)}?page={page + 1}" if len(items) > ITEMS_PER_PAGE else None
    )
    return json.dumps(document, ensure_ascii=True, indent=1)
