"""What a tool result says in words: short enough for any assistant, whatever the number of ids.

Structured content carries the data (bounded, see `operations.reporting`); the text block is
what a model or a person reads first, so it leads with the counts, lists what needs attention,
and says where the rest is. Every value from the PBX is shown quoted and escaped.
"""

from __future__ import annotations

from collections.abc import Iterable

from mcp_types import CallToolResult, TextContent
from pydantic import BaseModel

from .display import quoted
from .models import BulkDeleteResult, OperationsPage, RestoreResult

MAX_TEXT_BYTES = 16_000
_MAX_LINES = 30


def tool_result(model: BaseModel) -> CallToolResult:
    """The model as structured content, with its own short text (or compact JSON for small models)."""
    text = _text(model)
    encoded = text.encode()
    if len(encoded) > MAX_TEXT_BYTES:  # a safety net: the renderers already stay well below it
        text = encoded[: MAX_TEXT_BYTES - 40].decode(errors="ignore") + "\n… (cut; see the structured result)"
    return CallToolResult(
        content=[TextContent(type="text", text=text)], structured_content=model.model_dump(mode="json")
    )


def _text(model: BaseModel) -> str:
    if isinstance(model, BulkDeleteResult):
        return _bulk_delete(model)
    if isinstance(model, RestoreResult):
        return _restore(model)
    if isinstance(model, OperationsPage):
        return _operations(model)
    return model.model_dump_json()


def _head(result: BulkDeleteResult | RestoreResult, undo: str) -> list[str]:
    """What must never be cut comes first (the safety net trims the end of an over-long text): the
    summary, the operation_id, where the unlisted results are, and the warnings."""
    lines = [result.summary]
    if result.operation_id:
        lines.append(f"operation_id: {result.operation_id} ({undo})")
    if result.omitted:
        where = f"read the resource {result.details}" if result.details else "repeat with fewer ids"
        lines.append(
            f"{result.omitted} per-id results are not listed here; {where} (list_operations shows the operation)."
        )
    return lines + [f"Warning: {w}" for w in result.warnings]


def _bulk_delete(result: BulkDeleteResult) -> str:
    lines = _head(result, "restore_blacklist_numbers undoes it")
    problems = [r for r in result.results if r.status not in ("deleted", "would_delete")]
    lines += _listed(
        "Not deleted:",
        (
            f"- id {quoted(r.id, 40)} {r.status}" + (f": {_reason(r.reason)}" if r.reason else "")
            for r in problems
        ),
        result.requested - result.deleted - result.would_delete,
    )
    done = [r for r in result.results if r.status in ("deleted", "would_delete")]
    verb = "Would delete" if result.outcome == "dry_run" else "Deleted"
    count = result.would_delete if result.outcome == "dry_run" else result.deleted
    if done:
        shown = ", ".join(f"{quoted(r.caller_id, 40)} (id {quoted(r.id, 20)})" for r in done[:20])
        lines.append(
            f"{verb} caller IDs: {shown}" + (f" and {count - min(len(done), 20)} more" if count > 20 else "")
        )
    return "\n".join(lines)


def _restore(result: RestoreResult) -> str:
    lines = _head(result, "restoring it undoes this restore")
    attention = [r for r in result.results if r.status in ("failed", "unknown", "changed_since")]
    lines += _listed(
        "Needs attention:",
        (
            f"- id {quoted(r.id, 40)} ({quoted(r.caller_id, 40)}) {r.status}"
            + (f": {_reason(r.reason)}" if r.reason else "")
            for r in attention
        ),
        sum(result.counts.get(s, 0) for s in ("failed", "unknown", "changed_since")),
    )
    recreated = [r for r in result.results if r.status == "recreated"][:10]
    if recreated:
        lines.append(
            "Re-created with new ids: "
            + ", ".join(f"{quoted(r.caller_id, 40)} -> {quoted(r.current_id, 20)}" for r in recreated)
        )
    return "\n".join(lines)


def _operations(page: OperationsPage) -> str:
    if not page.operations:
        return "No journaled operations on this PBX."
    lines = [
        f"- {op.operation_id} {op.time} {op.kind} {op.outcome}: "
        + ", ".join(f"{n} {s}" for s, n in sorted(op.counts.items()))
        + ("" if op.restorable else " (nothing to undo)")
        + (f" (undoes {op.undoes})" if op.undoes else "")
        for op in page.operations[: _MAX_LINES * 3]
    ]
    if page.next_cursor:
        lines.append(f"Older operations: pass cursor={page.next_cursor}.")
    return "\n".join(lines)


def _listed(heading: str, lines: Iterable[str], total: int) -> list[str]:
    shown = list(lines)[:_MAX_LINES]
    if not shown:
        return []
    more = total - len(shown)
    return [heading, *shown, *([f"- … and {more} more"] if more > 0 else [])]


def _reason(reason: str) -> str:
    return quoted(reason, 200)[1:-1]
