"""The MCP tools and the operation resource: schemas, hints and descriptions beside each tool."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from mcp.server.mcpserver import (
    Context,
    Elicit,
    ElicitationResult,
    MCPServer,
    Resolve,
)
from mcp.server.mcpserver.exceptions import ResourceError
from mcp_types import CallToolResult, ToolAnnotations
from pydantic import Field

from .app_state import AppState, state_of
from .asking import BulkWrite, ask_before_bulk_write, confirm_one_write, confirmed_bulk_write
from .caller_ids import check_caller_id
from .client import XapiClient
from .confirmation import Confirmation, Unasked, caller_id_list, can_ask
from .display import quoted
from .errors import ThreeCXMcpError
from .journal import Journal
from .models import (
    MAX_RECENT_CALLERS,
    MAX_RECENT_HOURS,
    AddResult,
    BlacklistEntry,
    BlacklistPageResult,
    BulkAddResult,
    BulkDeleteResult,
    CallerCheckResult,
    CallerIdInput,
    CheckedCallerId,
    DescriptionInput,
    EntryId,
    EntryList,
    IdList,
    OperationsPage,
    PlanId,
    RecentCallersResult,
    RestoreResult,
    SearchInput,
    UpdateResult,
)
from .operations import bulk_add, bulk_delete, callers, entries, export, history, restore
from .operations.bulk_delete import ProgressFn
from .operations.entry_lists import parse_entries
from .operations.reporting import OPERATION_URI_PREFIX
from .presentation import tool_result

_DELETE = "bulk_delete_blacklist_numbers"  # the action a delete plan is bound to
_ADD = "add_blacklist_numbers"  # the action a bulk add plan is bound to


def _client(ctx: Context) -> XapiClient:
    return state_of(ctx).client


def _journal(ctx: Context) -> Journal:
    return state_of(ctx).journal


@dataclass(frozen=True)
class _Registered:
    fn: Callable[..., Any]
    annotations: ToolAnnotations
    name: str | None = None  # the tool's name when it is not the function's


_TOOLS: list[_Registered] = []


def _tool(
    title: str,
    *,
    read_only: bool,
    destructive: bool = False,
    idempotent: bool = False,
    name: str | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Declare a tool's hints where it is defined; `register` adds the ones the mode allows."""

    def declare(fn: Callable[..., Any]) -> Callable[..., Any]:
        hints = ToolAnnotations(
            title=title,
            read_only_hint=read_only,
            destructive_hint=destructive,
            idempotent_hint=idempotent,
            open_world_hint=False,
        )
        _TOOLS.append(_Registered(fn, hints, name))
        return fn

    return declare


@_tool("List or search blacklist", read_only=True, idempotent=True)
async def list_blacklist_numbers(
    ctx: Context,
    search: SearchInput | None = None,
    limit: Annotated[int, Field(ge=1, le=500, description="Entries per page (1-500).")] = 50,
    cursor: Annotated[
        str | None, Field(description="next_cursor from the previous page.", max_length=2_000)
    ] = None,
) -> Annotated[CallToolResult, BlacklistPageResult]:
    """List or search the PBX's caller blacklist, a page at a time.

    Use it to find the id of an entry before get, update or delete. Results come sorted by
    caller ID, with the total number of matches; pass next_cursor back to get the next page
    (deleting entries between pages skips nothing).
    """
    return tool_result(await entries.list_entries(_client(ctx), search, limit, cursor))


@_tool("Get blacklist entry", read_only=True, idempotent=True)
async def get_blacklist_number(ctx: Context, id: EntryId) -> Annotated[CallToolResult, BlacklistEntry]:
    """Read one blacklist entry by id (ids come from list_blacklist_numbers)."""
    return tool_result(await entries.get_entry(_client(ctx), str(id)))


_BROAD = Annotated[
    bool,
    Field(
        description="Allow a pattern that blocks (nearly) every caller, such as * or +*; the user confirms it."
    ),
]


async def _ask_before_broad_pattern(
    caller_id: str | None, allow_broad_pattern: bool, ctx: Context
) -> Elicit[Confirmation] | Unasked:
    """Ask before storing a pattern that blocks (nearly) everyone; only reached with allow_broad_pattern."""
    if caller_id is None or not allow_broad_pattern:
        return Unasked.NOT_NEEDED  # a broad pattern is refused outright by the operation
    try:
        checked = check_caller_id(caller_id)
    except ThreeCXMcpError:
        return Unasked.NOT_NEEDED  # the operation refuses it with the reason
    if checked.broad_reason is None:
        return Unasked.NOT_NEEDED
    if not can_ask(ctx.client_capabilities):
        return Unasked.CANNOT_ASK
    return Elicit(
        f"Blacklist the pattern {quoted(checked.value, 40)} on the PBX? {checked.broad_reason}",
        Confirmation,
    )


_BROAD_WHY = (
    "this pattern blocks (nearly) every caller and the user must agree. Show the user the caller ID and why."
)


@_tool("Add blacklist entry", read_only=False)
async def add_blacklist_number(
    ctx: Context,
    caller_id: CallerIdInput,
    asked: Annotated[ElicitationResult[Confirmation], Resolve(_ask_before_broad_pattern)],
    description: DescriptionInput | None = None,
    allow_broad_pattern: _BROAD = False,
    plan_id: PlanId | None = None,
) -> Annotated[CallToolResult, AddResult]:
    """Block a caller: add a caller ID (number, name, or * pattern) to the PBX's blacklist.

    Refuses a caller ID that is already blacklisted and names the existing entry instead. A
    pattern that would block (nearly) every caller (*, +*, fewer than 3 characters besides *)
    needs allow_broad_pattern=true and the user's confirmation: if the answer carries a
    plan_id, show the user the caller ID and the reason, and only if they agree call again with it.
    """
    request = [_journal(ctx).pbx, str(caller_id), description]
    confirm_one_write(ctx, asked, "add_blacklist_number", request, plan_id, _BROAD_WHY)
    return tool_result(
        await entries.add_entry(
            _client(ctx), str(caller_id), description, allow_broad_pattern=allow_broad_pattern
        )
    )


async def _ask_before_adding(
    entries: Any, dry_run: bool, allow_broad_pattern: bool, ctx: Context
) -> Elicit[Confirmation] | Unasked:
    """The bulk add's question: how many callers would be blocked, which, and any broad pattern among them."""

    async def question() -> tuple[str | None, object]:
        try:
            parsed = parse_entries(entries)
        except ThreeCXMcpError:
            return None, None  # the tool refuses the list with the reason
        to_add = (await bulk_add.prepare(_client(ctx), parsed, allow_broad_pattern)).to_add
        if not to_add:
            return None, []  # nothing would be added: nothing to confirm, and nothing may be
        count, broad = len(to_add), [c.caller_id for c in to_add if c.broad]
        text = (
            f"Add {count} entr{'y' if count == 1 else 'ies'} to the PBX's blacklist? Those callers will be "
            "blocked. The caller IDs (as they would be stored, in quotes): "
            f"{caller_id_list([c.caller_id for c in to_add], count)}."
        )
        if broad:
            text += f" {len(broad)} of them block (nearly) every caller: {caller_id_list(broad, len(broad))}."
        return text, [c.caller_id for c in to_add]  # the add is bound to these: the user saw them

    return await ask_before_bulk_write(dry_run, ctx, question)


@_tool("Add blacklist entries", read_only=False, idempotent=True)
async def add_blacklist_numbers(
    ctx: Context,
    entries: EntryList,
    asked: Annotated[ElicitationResult[Confirmation], Resolve(_ask_before_adding)],
    dry_run: Annotated[bool, Field(description="Report what would be added, add nothing.")] = False,
    allow_broad_pattern: _BROAD = False,
    plan_id: PlanId | None = None,
) -> Annotated[CallToolResult, BulkAddResult]:
    """Block many callers at once: add up to 10,000 caller IDs to the PBX's blacklist in one call.

    entries is a list of {caller_id, description}, CSV text with the header caller_id,description,
    or a JSON string holding the list. Each caller ID is normalised and checked as for
    add_blacklist_number; invalid ones are reported with the reason and the rest go on; repeats
    are folded; caller IDs already blacklisted are skipped and named with their entry. The user
    confirms: clients that can ask them do so; otherwise the first call adds nothing and returns a
    plan with a plan_id. Show the user the plan's summary and caller IDs, and only if they agree
    call again with the same entries and that plan_id. Pass the returned operation_id to
    restore_blacklist_numbers to remove what was added.
    """
    parsed = parse_entries(entries)
    client, journal = _client(ctx), _journal(ctx)

    async def run(dry: bool, progress: ProgressFn, seen: list[str] | None) -> tuple[BulkAddResult, object]:
        # Bound to the caller IDs the user saw as to be added: one blocked then and unblocked since is
        # skipped, one added by someone meanwhile is already_present.
        if dry:
            return await bulk_add.preview(client, parsed, allow_broad_pattern)
        added = await bulk_add.bulk_add(
            client,
            journal,
            parsed,
            dry_run=False,
            allow_broad_pattern=allow_broad_pattern,
            progress=progress,
            shown=seen,
        )
        return added, None

    write = BulkWrite(
        action=_ADD,
        # Plans may be shared by servers of other PBXs; a plan covers the normalised set, not its spelling.
        request={"pbx": journal.pbx, "entries": bulk_add.plan_request(parsed, allow_broad_pattern)},
        argument="entries",
        verb="add",
        done="added",
        run=run,
        pending=lambda r: r.would_add,
        leftover=lambda r: (
            f"{r.already_present} already present, {r.invalid} invalid, {r.duplicate} repeated"
        ),
        declined=lambda: bulk_add.declined(parsed),
    )
    result = await confirmed_bulk_write(ctx, asked, write, dry_run=dry_run, plan_id=plan_id)
    return tool_result(result)


@_tool("Update blacklist entry", read_only=False, destructive=True, idempotent=True)
async def update_blacklist_number(
    ctx: Context,
    id: EntryId,
    asked: Annotated[ElicitationResult[Confirmation], Resolve(_ask_before_broad_pattern)],
    caller_id: CallerIdInput | None = None,
    description: Annotated[
        DescriptionInput | None, Field(description='New note; "" clears it; omit to leave it unchanged.')
    ] = None,
    allow_broad_pattern: _BROAD = False,
    plan_id: PlanId | None = None,
) -> Annotated[CallToolResult, UpdateResult]:
    """Change an existing blacklist entry's caller ID and/or description.

    Give the id (from list_blacklist_numbers) and at least one of caller_id or description;
    omitted fields stay as they are. Returns the entry as stored afterwards, the previous
    values, which fields changed, and an operation_id that restore_blacklist_numbers undoes.
    A caller ID blocking (nearly) everyone needs allow_broad_pattern=true, as for add.
    """
    request = [_journal(ctx).pbx, str(id), caller_id, description]
    confirm_one_write(ctx, asked, "update_blacklist_number", request, plan_id, _BROAD_WHY)
    return tool_result(
        await entries.update_entry(
            _client(ctx),
            _journal(ctx),
            str(id),
            caller_id,
            description,
            allow_broad_pattern=allow_broad_pattern,
        )
    )


async def _ask_before_deleting(ids: list[str], dry_run: bool, ctx: Context) -> Elicit[Confirmation] | Unasked:
    """The delete's question: how many callers would be unblocked, and which."""

    async def question() -> tuple[str | None, object]:
        existing = await _client(ctx).find_by_ids(ids)
        if not existing:
            return None, {}  # nothing would be deleted: nothing to confirm, and nothing may be
        count = len(existing)
        caller_ids = [existing[i].caller_id for i in ids if i in existing]
        text = (
            f"Delete {count} blacklist entr{'y' if count == 1 else 'ies'} from the PBX? "
            f"Those callers will no longer be blocked. The caller IDs (as stored, in quotes): "
            f"{caller_id_list(caller_ids, count)}."
        )
        return text, {i: record.caller_id for i, record in existing.items()}

    return await ask_before_bulk_write(dry_run, ctx, question)


@_tool("Delete blacklist entries", read_only=False, destructive=True, idempotent=True)
async def bulk_delete_blacklist_numbers(
    ctx: Context,
    ids: IdList,
    asked: Annotated[ElicitationResult[Confirmation], Resolve(_ask_before_deleting)],
    dry_run: Annotated[bool, Field(description="Report what would be deleted, delete nothing.")] = False,
    plan_id: PlanId | None = None,
) -> Annotated[CallToolResult, BulkDeleteResult]:
    """Delete many blacklist entries at once (unblocks those callers).

    Get ids from list_blacklist_numbers. The user confirms every delete: clients that can ask
    them do so; otherwise the first call deletes nothing and returns a plan with a plan_id. Show
    the user the plan's summary and caller IDs, and only if they agree call again with the same
    ids and that plan_id. Never apply a plan the user has not seen. Reports the counts, every id
    that was not deleted (not found, failed with the reason, or unknown) and the deleted entries'
    caller IDs; the full per-id detail is in the resource named by `details`. Pass the returned
    operation_id to restore_blacklist_numbers to undo. Up to 10,000 ids.
    """
    id_list = [str(i) for i in ids]
    client, journal = _client(ctx), _journal(ctx)

    async def run(
        dry: bool, progress: ProgressFn, seen: dict[str, str] | None
    ) -> tuple[BulkDeleteResult, object]:
        if dry:
            return await bulk_delete.preview(client, id_list)
        return await bulk_delete.bulk_delete(
            client, journal, id_list, dry_run=False, progress=progress, shown=seen
        ), None

    write = BulkWrite(
        action=_DELETE,
        request={"pbx": journal.pbx, "ids": sorted(id_list)},  # plans may be shared by servers of other PBXs
        argument="ids",
        verb="delete",
        done="deleted",
        run=run,
        pending=lambda r: r.would_delete,
        leftover=lambda r: f"{r.not_found} of the ids were not found",
        declined=lambda: bulk_delete.declined(id_list),
    )
    result = await confirmed_bulk_write(ctx, asked, write, dry_run=dry_run, plan_id=plan_id)
    return tool_result(result)


async def _ask_before_removing(
    operation_id: str | None, ids: list[str] | None, overwrite: bool, ctx: Context
) -> Elicit[Confirmation] | Unasked:
    """Ask before a restore removes entries; re-creating and rolling back need no question."""
    id_list = None if ids is None else [str(i) for i in ids]
    try:
        removed = await restore.removals(
            _client(ctx), _journal(ctx), operation_id, id_list, overwrite=overwrite
        )
    except ThreeCXMcpError:
        return Unasked.NOT_NEEDED  # the restore itself refuses with the reason
    if not removed:
        return Unasked.NOT_NEEDED
    if not can_ask(ctx.client_capabilities):
        return Unasked.CANNOT_ASK
    count = len(removed)
    return Elicit(
        f"Remove {count} blacklist entr{'y' if count == 1 else 'ies'} from the PBX to undo this? Those "
        f"callers will no longer be blocked. The caller IDs (as stored, in quotes): "
        f"{caller_id_list(removed, count)}.",
        Confirmation,
    )


@_tool("Restore blacklist entries", read_only=False, destructive=True, idempotent=True)
async def restore_blacklist_numbers(
    ctx: Context,
    asked: Annotated[ElicitationResult[Confirmation], Resolve(_ask_before_removing)],
    operation_id: Annotated[
        str | None,
        Field(
            description="operation_id of an update, delete or restore (see list_operations): undo it.",
            max_length=64,
        ),
    ] = None,
    ids: Annotated[
        IdList | None,
        Field(description="Entry ids to put back as they were before their latest journaled change."),
    ] = None,
    overwrite: Annotated[
        bool,
        Field(
            description="Also put back entries that someone changed since (they are left alone otherwise)."
        ),
    ] = False,
    plan_id: PlanId | None = None,
) -> Annotated[CallToolResult, RestoreResult]:
    """Undo an update, a bulk delete, a bulk add or a restore from the local safety journal.

    Give operation_id (from a result, or list_operations), ids, or both. Entries already as
    journaled are left alone, so restoring twice is safe; entries changed since the operation
    are reported changed_since and left alone unless overwrite=true. Re-created entries get new
    ids; the result lists them. The restore is journaled too: its own operation_id undoes it.
    A restore that removes entries (undoing an add) unblocks callers, so the user confirms it:
    if the answer carries a plan_id, show the user what would be removed (list_operations and
    the operation's resource show it) and only if they agree call again with it.
    """
    id_list = None if ids is None else [str(i) for i in ids]
    request = [_journal(ctx).pbx, operation_id, sorted(id_list or []), overwrite]
    confirm_one_write(
        ctx,
        asked,
        "restore_blacklist_numbers",
        request,
        plan_id,
        "this restore removes entries from the blacklist (it undoes adding them), so those callers "
        "would no longer be blocked, and the user must agree. Show the user which entries.",
    )
    result = await restore.restore(
        _client(ctx), _journal(ctx), operation_id, id_list, overwrite=overwrite, progress=ctx.report_progress
    )
    return tool_result(result)


# Named check_caller_id over MCP; in Python that name is caller_ids' normaliser, used above.
@_tool("Check whether a caller is blocked", read_only=True, idempotent=True, name="check_caller_id")
async def check_caller_id_tool(
    ctx: Context, caller_id: CheckedCallerId
) -> Annotated[CallToolResult, CallerCheckResult]:
    """Say whether the PBX's blacklist blocks a caller, and by which entries.

    Matches as 3CX does: exactly, case included, * in an entry matching anything (so "Jeremy"
    is blocked by the entry *eremy, which a search for "Jeremy" does not find). The caller ID is
    normalised as add_blacklist_number would store it, and the result says when it was.
    """
    return tool_result(await callers.check_caller(_client(ctx), str(caller_id)))


@_tool("List recent callers", read_only=True, idempotent=True)
async def list_recent_callers(
    ctx: Context,
    hours: Annotated[
        int,
        Field(
            ge=1, le=MAX_RECENT_HOURS, description=f"How far back to look, in hours (1-{MAX_RECENT_HOURS})."
        ),
    ] = 24,
    min_calls: Annotated[
        int, Field(ge=1, le=10_000, description="Only callers with at least this many inbound calls.")
    ] = 1,
    limit: Annotated[
        int, Field(ge=1, le=MAX_RECENT_CALLERS, description=f"Callers to list (1-{MAX_RECENT_CALLERS}).")
    ] = 50,
) -> Annotated[CallToolResult, RecentCallersResult]:
    """Who has been calling: inbound callers from the PBX's call log, most calls first.

    Each caller comes with the number of calls, the first and last time, how many were answered,
    and whether an entry already blocks it (and which). Use it to decide whom to blacklist. Needs
    3CX V20 Update 6 or later and an API client with the System Owner role; reads at most the
    newest 10,000 call log records and says so when there were more.
    """
    return tool_result(await callers.recent_callers(_client(ctx), hours, min_calls, limit))


@_tool("List journaled operations", read_only=True, idempotent=True)
async def list_operations(
    ctx: Context,
    limit: Annotated[int, Field(ge=1, le=200, description="Operations per page (1-200).")] = 20,
    cursor: Annotated[
        str | None, Field(description="next_cursor from the previous page.", max_length=64)
    ] = None,
) -> Annotated[CallToolResult, OperationsPage]:
    """Recent changes on this PBX (updates, adds, deletes, restores), newest first, from the safety journal.

    Each has its operation_id, time, kind, outcome, how many entries ended in each status, and
    whether restore_blacklist_numbers can undo it. Use it to find what to undo when the
    operation_id is no longer at hand.
    """
    return tool_result(await history.list_operations(_journal(ctx), limit, cursor))


async def operation_resource(operation_id: str, ctx: Context, start: str = "0") -> str:
    """Every entry of one journaled operation (JSON, up to ~400 KB a page; `next_page` names the next)."""
    # `start` is text, parsed by `entry_position`: typed as int, a bad value fails inside the SDK with no
    # reason given and the whole URI echoed (so for the CSV resource below too).
    try:
        return await history.operation_detail(_journal(ctx), operation_id, start)
    except ThreeCXMcpError as exc:  # the reader gets our sentence, not the SDK's generic one
        raise ResourceError(exc.user_message()) from None


async def blacklist_csv_resource(ctx: Context, start: str | None = None) -> str:
    """The whole blacklist as CSV (caller_id,description), sorted by caller ID, as `threecx-mcp export` writes it.

    A cell a spreadsheet would run as a formula starts with one ' (so does a cell starting with ');
    `threecx-mcp import` and add_blacklist_numbers strip it. Up to ~0.9 MB a read: a larger blacklist
    is refused with the parts to read instead (`?start=N`, each a CSV with its header).
    """
    # A template with an optional variable rather than a static resource: only templates get the Context
    # (and with it the PBX client), and `start` is what a blacklist too large for one read needs anyway.
    try:
        return await export.csv_resource(_client(ctx), start)
    except ThreeCXMcpError as exc:  # the reader gets our sentence, not the SDK's generic one
        raise ResourceError(exc.user_message()) from None


def register(server: MCPServer[AppState], *, read_only: bool) -> None:
    """Add the tools; in read-only mode the write tools are not registered at all."""
    for tool in _TOOLS:
        if read_only and not tool.annotations.read_only_hint:
            continue
        server.add_tool(
            tool.fn,
            name=tool.name,
            title=tool.annotations.title,
            description=inspect.cleandoc(tool.fn.__doc__ or ""),
            annotations=tool.annotations,
        )
    server.resource(
        OPERATION_URI_PREFIX + "{operation_id}{?start}",
        name="operation",
        title="Journaled operation",
        description=inspect.cleandoc(operation_resource.__doc__ or ""),
        mime_type="application/json",
    )(operation_resource)
    server.resource(
        export.BLACKLIST_CSV_URI + "{?start}",
        name="blacklist.csv",
        title="Blacklist as CSV",
        description=inspect.cleandoc(blacklist_csv_resource.__doc__ or ""),
        mime_type="text/csv",
    )(blacklist_csv_resource)
