"""What a tool result says in words: short enough for any assistant, whatever the number of ids.

Structured content carries the data (bounded, see `operations.reporting`); the text block is
what a model or a person reads first, so it leads with the counts, lists what needs attention,
and says where the rest is. Every value from the PBX is shown quoted and escaped, and each line
passes the sanitiser once more on its way out (see `sanitise`), so nothing in a summary, a reason
or a warning can carry a secret or break a line.
"""

from __future__ import annotations

from collections.abc import Iterable

from mcp_types import CallToolResult, TextContent
from pydantic import BaseModel

from .display import quoted
from .models import (
    BulkAddResult,
    BulkDeleteResult,
    CallerCheckResult,
    OperationsPage,
    PbxListResult,
    RecentCallersResult,
    RestoreResult,
)
from .sanitise import clean

MAX_TEXT_BYTES = 16_000
_MAX_LINES = 30
_NAMED_ROWS = (
    20  # rows of each kind named in a bulk add's text (all listed ones are in the structured result)
)
_RECENT_CALLER_LINES = 25  # callers listed in the text (all are in the structured result): under 16 KB


def tool_result(model: BaseModel) -> CallToolResult:
    """The model as structured content, with its own short text (or compact JSON for small models)."""
    text = "\n".join(clean(line, MAX_TEXT_BYTES) for line in _text(model).split("\n"))
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
    if isinstance(model, BulkAddResult):
        return _bulk_add(model)
    if isinstance(model, OperationsPage):
        return _operations(model)
    if isinstance(model, RecentCallersResult):
        return _recent_callers(model)
    if isinstance(model, PbxListResult):
        return _pbx_list(model)
    if isinstance(model, CallerCheckResult):
        return "\n".join([model.summary, *(f"Note: {n}" for n in model.notes)])
    return model.model_dump_json()


def _pbx_list(result: PbxListResult) -> str:
    lines = [result.summary]
    for pbx in result.pbxs:
        flags = ", ".join(flag for flag, on in (("default", pbx.default), ("read-only", pbx.read_only)) if on)
        count = "" if pbx.entries is None else f", {pbx.entries} entries"
        state = f"answers{count}" if pbx.answers else f"does not answer: {pbx.problem}"
        lines.append(
            f"{quoted(pbx.name, 40)} at {quoted(pbx.url, 200)}{f' ({flags})' if flags else ''}: {state}"
        )
    return "\n".join(lines)


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
    verb = "Deleted" if result.operation_id else "Would delete"
    count = result.deleted if result.operation_id else result.would_delete
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
    """A reason is a sentence of ours (a `user_message`, whose PBX words are already quoted data)."""
    return clean(reason, 200)


def _recent_callers(result: RecentCallersResult) -> str:
    """The result in words: a line per caller, every PBX value quoted and escaped."""
    lines = [result.summary]
    for caller in result.callers[:_RECENT_CALLER_LINES]:
        name = f" {quoted(caller.name, 40)}" if caller.name else ""
        blocked = (
            f"; blocked by {quoted(caller.blocked_by.caller_id, 40)} (id {quoted(caller.blocked_by.id, 20)}, "
            f"on its {caller.blocked_on})"
            if caller.blocked_by is not None
            else "; not blocked"
        )
        lines.append(
            f"- {quoted(caller.caller_id, 40)}{name}: {caller.calls} call{'' if caller.calls == 1 else 's'} "
            f"({caller.answered} answered, "
            f"{caller.unanswered} unanswered), {caller.first_call} to {caller.last_call}{blocked}"
        )
    if len(result.callers) > _RECENT_CALLER_LINES:
        lines.append(f"- … and {len(result.callers) - _RECENT_CALLER_LINES} more in the structured result")
    return "\n".join(lines)


def _bulk_add(result: BulkAddResult) -> str:
    """The bulk add's result in words: the counts, what needs attention by row, then what was added."""
    lines = [result.summary]
    if result.operation_id:
        lines.append(
            f"operation_id: {result.operation_id} (restore_blacklist_numbers removes what was added)"
        )
    if result.omitted:
        where = (
            f"the resource {result.details} holds every entry sent to the PBX"
            if result.details
            else "the structured result lists those that need attention first"
        )
        lines.append(f"{result.omitted} per-entry results are not listed here; {where}.")
    lines += [f"Warning: {w}" for w in result.warnings]
    attention = [r for r in result.results if r.status not in ("added", "would_add", "already_present")]
    if attention:
        lines.append("Not added:")
        lines += [
            f"- row {r.row} {quoted(r.caller_id, 40)} {r.status}"
            + (f": {clean(r.reason, 200)}" if r.reason else "")
            for r in attention[:_NAMED_ROWS]
        ]
    for status, heading in (
        ("already_present", "Already blacklisted"),
        ("added", "Added"),
        ("would_add", "Would add"),
    ):
        shown = [r for r in result.results if r.status == status][:_NAMED_ROWS]
        if shown:
            lines.append(
                f"{heading}: "
                + ", ".join(
                    f"{quoted(r.caller_id, 40)} (id {quoted(r.id, 20)})" if r.id else quoted(r.caller_id, 40)
                    for r in shown
                )
            )
    return "\n".join(lines)
