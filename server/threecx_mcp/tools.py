"""The MCP tools and the operation resource: schemas, hints and descriptions beside each tool."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from inspect import Parameter
from typing import Annotated, Any, Literal
from urllib.parse import parse_qs, urlsplit

from mcp.server.mcpserver import (
    Context,
    Elicit,
    ElicitationResult,
    MCPServer,
    Resolve,
)
from mcp.server.mcpserver.exceptions import ResourceError
from mcp_types import CallToolResult, ToolAnnotations
from pydantic import BeforeValidator, Field, WithJsonSchema
from pydantic.json_schema import SkipJsonSchema

from .app_state import AppState, state_of
from .asking import BulkWrite, ask_before_bulk_write, confirm_one_write, confirmed_bulk_write
from .caller_ids import check_caller_id
from .client import XapiClient
from .confirmation import Confirmation, Unasked, caller_id_list, can_ask
from .display import quoted
from .errors import InvalidArgument, ThreeCXMcpError
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
    PbxListResult,
    PlanId,
    RecentCallersResult,
    RestoreResult,
    SearchInput,
    UpdateResult,
)
from .operations import bulk_add, bulk_delete, callers, copy, entries, export, history, pbx_status, restore
from .operations.bulk_delete import ProgressFn
from .operations.entry_lists import EntryInput, parse_entries
from .operations.reporting import OPERATION_URI_PREFIX
from .pbxs import Pbx, PbxRoster
from .presentation import tool_result

_DELETE = "bulk_delete_blacklist_numbers"  # the action a delete plan is bound to
_ADD = "add_blacklist_numbers"  # the action a bulk add plan is bound to
_COPY = "copy_blacklist_numbers"  # the action a copy plan is bound to


@dataclass(frozen=True)
class _Target:
    """The PBX a call acts on, with its client and its journal."""

    pbx: Pbx
    client: XapiClient
    journal: Journal


def _on(ctx: Context, pbx: str | None, *, write: bool = False) -> _Target:
    """The PBX a call names (or the default), refusing a write to a read-only one before anything is sent."""
    state = state_of(ctx)
    chosen = state.pbxs.pick(pbx)
    if write:
        state.pbxs.writable(chosen)
    return _Target(chosen, state.client(chosen), chosen.journal)


# Each tool's `pbx` argument; `register` gives it the configured names (see `pbx_choice`).
PbxArgument = Annotated[str | None, Field(max_length=40)]


@dataclass(frozen=True)
class _Registered:
    fn: Callable[..., Any]
    annotations: ToolAnnotations
    name: str | None = None  # the tool's name when it is not the function's
    several_pbxs_only: bool = False  # registered only when the server manages several PBXs
    pbx_optional: bool = False  # pbx may be omitted even without a default: the call finds its PBX


_TOOLS: list[_Registered] = []


def _tool(
    title: str,
    *,
    read_only: bool,
    destructive: bool = False,
    idempotent: bool = False,
    name: str | None = None,
    several_pbxs_only: bool = False,
    pbx_optional: bool = False,
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
        _TOOLS.append(_Registered(fn, hints, name, several_pbxs_only, pbx_optional))
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
    pbx: PbxArgument = None,
) -> Annotated[CallToolResult, BlacklistPageResult]:
    """List or search the PBX's caller blacklist, a page at a time.

    Use it to find the id of an entry before get, update or delete. Results come sorted by
    caller ID, with the total number of matches; pass next_cursor back to get the next page
    (deleting entries between pages skips nothing).
    """
    return tool_result(await entries.list_entries(_on(ctx, pbx).client, search, limit, cursor))


@_tool("Get blacklist entry", read_only=True, idempotent=True)
async def get_blacklist_number(
    ctx: Context, id: EntryId, pbx: PbxArgument = None
) -> Annotated[CallToolResult, BlacklistEntry]:
    """Read one blacklist entry by id (ids come from list_blacklist_numbers)."""
    return tool_result(await entries.get_entry(_on(ctx, pbx).client, str(id)))


_BROAD = Annotated[
    bool,
    Field(
        description="Allow a pattern that blocks (nearly) every caller, such as * or +*; the user confirms it."
    ),
]


async def _ask_before_broad_pattern(
    caller_id: str | None, allow_broad_pattern: bool, pbx: str | None, ctx: Context
) -> Elicit[Confirmation] | Unasked:
    """Ask before storing a pattern that blocks (nearly) everyone; only reached with allow_broad_pattern."""
    if caller_id is None or not allow_broad_pattern:
        return Unasked.NOT_NEEDED  # a broad pattern is refused outright by the operation
    try:
        checked, target = check_caller_id(caller_id), _on(ctx, pbx, write=True)
    except ThreeCXMcpError:
        return Unasked.NOT_NEEDED  # the tool refuses the caller ID, or the PBX, with the reason
    if checked.broad_reason is None:
        return Unasked.NOT_NEEDED
    if not can_ask(ctx.client_capabilities):
        return Unasked.CANNOT_ASK
    return Elicit(
        f"Blacklist the pattern {quoted(checked.value, 40)} on {target.pbx.label}? {checked.broad_reason}",
        Confirmation,
    )


def _broad_why(target: _Target) -> str:
    """Why a broad pattern waits for the user, naming the PBX when there are several."""
    return (
        f"this pattern blocks (nearly) every caller{_where(target)} and the user must agree. Show the user "
        "the caller ID and why."
    )


def _where(target: _Target) -> str:
    """Which PBX a plan changes, when there are several to choose from ("" when there is one)."""
    return "" if target.pbx.name is None else f" on {target.pbx.label}"


@_tool("Add blacklist entry", read_only=False)
async def add_blacklist_number(
    ctx: Context,
    caller_id: CallerIdInput,
    asked: Annotated[ElicitationResult[Confirmation], Resolve(_ask_before_broad_pattern)],
    description: DescriptionInput | None = None,
    allow_broad_pattern: _BROAD = False,
    plan_id: PlanId | None = None,
    pbx: PbxArgument = None,
) -> Annotated[CallToolResult, AddResult]:
    """Block a caller: add a caller ID (number, name, or * pattern) to the PBX's blacklist.

    Refuses a caller ID that is already blacklisted and names the existing entry instead. A
    pattern that would block (nearly) every caller (*, +*, fewer than 3 characters besides *)
    needs allow_broad_pattern=true and the user's confirmation: if the answer carries a
    plan_id, show the user the caller ID and the reason, and only if they agree call again with it.
    """
    target = _on(ctx, pbx, write=True)
    request = [target.pbx.key, str(caller_id), description]
    confirm_one_write(ctx, asked, "add_blacklist_number", request, plan_id, _broad_why(target))
    return tool_result(
        await entries.add_entry(
            target.client, str(caller_id), description, allow_broad_pattern=allow_broad_pattern
        )
    )


async def _adding_question(
    target: _Target, parsed: list[EntryInput], allow_broad_pattern: bool, source: Pbx | None = None
) -> tuple[str | None, object]:
    """A bulk add's question (a copy's, with its `source`): how many callers would be blocked where, which,
    and any broad pattern among them; and the caller IDs the add is then bound to."""
    to_add = (await bulk_add.prepare(target.client, parsed, allow_broad_pattern)).to_add
    if not to_add:
        return None, []  # nothing would be added: nothing to confirm, and nothing may be
    count, broad = len(to_add), [c.caller_id for c in to_add if c.broad]
    entries = f"{count} entr{'y' if count == 1 else 'ies'}"
    where = "the PBX's blacklist" if target.pbx.name is None else f"the blacklist of {target.pbx.label}"
    text = (
        f"Add {entries} to {where}?" if source is None else f"Copy {entries} from {source.label} to {where}?"
    ) + (
        " Those callers will be blocked. The caller IDs (as they would be stored, in quotes): "
        f"{caller_id_list([c.caller_id for c in to_add], count)}."
    )
    if broad:
        text += f" {len(broad)} of them block (nearly) every caller: {caller_id_list(broad, len(broad))}."
    return text, [c.caller_id for c in to_add]  # the add is bound to these: the user saw them


def _bulk_add_write(
    target: _Target,
    parsed: list[EntryInput],
    allow_broad_pattern: bool,
    *,
    action: str,
    argument: str,
    request: Mapping[str, object],
) -> BulkWrite[BulkAddResult]:
    """A bulk add (or a copy, which is one) as the confirmation flow runs it; `request` is what a plan is
    bound to besides the normalised set of entries (a plan covers that set, not its spelling)."""

    async def run(dry: bool, progress: ProgressFn, seen: list[str] | None) -> tuple[BulkAddResult, object]:
        # Bound to the caller IDs the user saw as to be added: one blocked then and unblocked since is
        # skipped, one added by someone meanwhile is already_present.
        if dry:
            return await bulk_add.preview(target.client, parsed, allow_broad_pattern)
        added = await bulk_add.bulk_add(
            target.client,
            target.journal,
            parsed,
            dry_run=False,
            allow_broad_pattern=allow_broad_pattern,
            progress=progress,
            shown=seen,
        )
        return added, None

    return BulkWrite(
        action=action,
        # Plans may be shared by servers of other PBXs: each is bound to its PBX.
        request={**request, "entries": bulk_add.plan_request(parsed, allow_broad_pattern)},
        argument=argument,
        where=_where(target),
        verb="add",
        done="added",
        run=run,
        pending=lambda r: r.would_add,
        leftover=lambda r: (
            f"{r.already_present} already present, {r.invalid} invalid, {r.duplicate} repeated"
        ),
        declined=lambda: bulk_add.declined(parsed),
    )


async def _ask_before_adding(
    entries: Any, dry_run: bool, allow_broad_pattern: bool, pbx: str | None, ctx: Context
) -> Elicit[Confirmation] | Unasked:
    """The bulk add's question: how many callers would be blocked, which, and any broad pattern among them."""

    async def question() -> tuple[str | None, object]:
        try:
            parsed, target = parse_entries(entries), _on(ctx, pbx, write=True)
        except ThreeCXMcpError:
            return None, []  # the tool refuses the list, or the PBX, with the reason
        return await _adding_question(target, parsed, allow_broad_pattern)

    return await ask_before_bulk_write(dry_run, ctx, question)


@_tool("Add blacklist entries", read_only=False, idempotent=True)
async def add_blacklist_numbers(
    ctx: Context,
    entries: EntryList,
    asked: Annotated[ElicitationResult[Confirmation], Resolve(_ask_before_adding)],
    dry_run: Annotated[bool, Field(description="Report what would be added, add nothing.")] = False,
    allow_broad_pattern: _BROAD = False,
    plan_id: PlanId | None = None,
    pbx: PbxArgument = None,
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
    target = _on(ctx, pbx, write=True)
    write = _bulk_add_write(
        target,
        parsed,
        allow_broad_pattern,
        action=_ADD,
        argument="entries" if target.pbx.name is None else "entries and pbx",
        request={"pbx": target.pbx.key},
    )
    return tool_result(await confirmed_bulk_write(ctx, asked, write, dry_run=dry_run, plan_id=plan_id))


def _copy_ends(ctx: Context, from_pbx: str | None, to_pbx: str | None) -> tuple[_Target, _Target]:
    """The source (read only) and the target (written) of a copy: two different PBXs."""
    source, target = _on(ctx, from_pbx), _on(ctx, to_pbx, write=True)
    if source.pbx.key == target.pbx.key:
        raise InvalidArgument(
            f"from_pbx and to_pbx name the same PBX ({source.pbx.location}); name two different PBXs "
            "(list_pbxs lists them). Nothing was changed."
        )
    return source, target


async def _ask_before_copying(
    from_pbx: str | None,
    to_pbx: str | None,
    search: str | None,
    dry_run: bool,
    allow_broad_pattern: bool,
    ctx: Context,
) -> Elicit[Confirmation] | Unasked:
    """A copy's question: how many callers would be blocked on the target, which, and from where."""

    async def question() -> tuple[str | None, object]:
        try:
            source, target = _copy_ends(ctx, from_pbx, to_pbx)
            parsed = await copy.source_entries(source.client, search)
        except InvalidArgument:
            return None, []  # the tool refuses with the reason; should it not, nothing may be added
        return await _adding_question(target, parsed, allow_broad_pattern, source=source.pbx)

    return await ask_before_bulk_write(dry_run, ctx, question)


@_tool("Copy blacklist entries to another PBX", read_only=False, idempotent=True, several_pbxs_only=True)
async def copy_blacklist_numbers(
    ctx: Context,
    from_pbx: PbxArgument,
    to_pbx: PbxArgument,
    asked: Annotated[ElicitationResult[Confirmation], Resolve(_ask_before_copying)],
    search: Annotated[
        SearchInput | None,
        Field(description="Copy only the entries this search finds (as list_blacklist_numbers)."),
    ] = None,
    dry_run: Annotated[bool, Field(description="Report what would be copied, add nothing.")] = False,
    allow_broad_pattern: _BROAD = False,
    plan_id: PlanId | None = None,
) -> Annotated[CallToolResult, BulkAddResult]:
    """Copy blacklist entries from one PBX to another: all of them, or those a search finds.

    It is a bulk add on to_pbx of what from_pbx holds (from_pbx is only read): each caller ID is
    checked as for add_blacklist_number, and those to_pbx already blocks are reported with their
    entry and left alone. The user confirms as for add_blacklist_numbers: if the answer carries a
    plan_id, show the user the plan and only if they agree call again with the same from_pbx, to_pbx
    and search and that plan_id. Up to 10,000 entries at a time. Pass the returned operation_id to
    restore_blacklist_numbers to remove what was copied.
    """
    source, target = _copy_ends(ctx, from_pbx, to_pbx)
    parsed = await copy.source_entries(source.client, search)
    request = {"from": source.pbx.key, "pbx": target.pbx.key, "search": search}
    write = _bulk_add_write(
        target,
        parsed,
        allow_broad_pattern,
        action=_COPY,
        argument="from_pbx, to_pbx and search",
        request=request,
    )
    result = await confirmed_bulk_write(ctx, asked, write, dry_run=dry_run, plan_id=plan_id)
    copied = f"Copy from {source.pbx.label} to {target.pbx.label}: "
    return tool_result(result.model_copy(update={"summary": copied + result.summary}))


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
    pbx: PbxArgument = None,
) -> Annotated[CallToolResult, UpdateResult]:
    """Change an existing blacklist entry's caller ID and/or description.

    Give the id (from list_blacklist_numbers) and at least one of caller_id or description;
    omitted fields stay as they are. Returns the entry as stored afterwards, the previous
    values, which fields changed, and an operation_id that restore_blacklist_numbers undoes.
    A caller ID blocking (nearly) everyone needs allow_broad_pattern=true, as for add.
    """
    target = _on(ctx, pbx, write=True)
    request = [target.pbx.key, str(id), caller_id, description]
    confirm_one_write(ctx, asked, "update_blacklist_number", request, plan_id, _broad_why(target))
    return tool_result(
        await entries.update_entry(
            target.client,
            target.journal,
            str(id),
            caller_id,
            description,
            allow_broad_pattern=allow_broad_pattern,
        )
    )


async def _ask_before_deleting(
    ids: list[str], dry_run: bool, pbx: str | None, ctx: Context
) -> Elicit[Confirmation] | Unasked:
    """The delete's question: how many callers would be unblocked, and which."""

    async def question() -> tuple[str | None, object]:
        try:
            target = _on(ctx, pbx, write=True)
        except ThreeCXMcpError:
            return None, None  # the tool refuses the PBX with the reason
        existing = await target.client.find_by_ids(ids)
        if not existing:
            return None, {}  # nothing would be deleted: nothing to confirm, and nothing may be
        count = len(existing)
        caller_ids = [existing[i].caller_id for i in ids if i in existing]
        text = (
            f"Delete {count} blacklist entr{'y' if count == 1 else 'ies'} from {target.pbx.label}? "
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
    pbx: PbxArgument = None,
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
    target = _on(ctx, pbx, write=True)
    client, journal = target.client, target.journal

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
        request={
            "pbx": target.pbx.key,
            "ids": sorted(id_list),
        },  # plans may be shared by servers of other PBXs
        argument="ids" if target.pbx.name is None else "ids and pbx",
        where=_where(target),
        verb="delete",
        done="deleted",
        run=run,
        pending=lambda r: r.would_delete,
        leftover=lambda r: f"{r.not_found} of the ids were not found",
        declined=lambda: bulk_delete.declined(id_list),
    )
    result = await confirmed_bulk_write(ctx, asked, write, dry_run=dry_run, plan_id=plan_id)
    return tool_result(result)


async def _restoring_on(ctx: Context, operation_id: str | None, pbx: str | None) -> _Target:
    """Where a restore writes: the PBX its operation was made on (whatever the default), else the one named."""
    state = state_of(ctx)
    if operation_id is None or not state.pbxs.several:
        return _on(ctx, pbx, write=True)
    owner = state.pbxs.writable(await state.pbxs.owner_of(operation_id, pbx))
    return _Target(owner, state.client(owner), owner.journal)


async def _ask_before_removing(
    operation_id: str | None, ids: list[str] | None, overwrite: bool, pbx: str | None, ctx: Context
) -> Elicit[Confirmation] | Unasked:
    """Ask before a restore removes entries; re-creating and rolling back need no question."""
    id_list = None if ids is None else [str(i) for i in ids]
    try:
        target = await _restoring_on(ctx, operation_id, pbx)
        removed = await restore.removals(
            target.client, target.journal, operation_id, id_list, overwrite=overwrite
        )
    except ThreeCXMcpError:
        return Unasked.NOT_NEEDED  # the restore itself refuses with the reason
    if not removed:
        return Unasked.NOT_NEEDED
    if not can_ask(ctx.client_capabilities):
        return Unasked.CANNOT_ASK
    count = len(removed)
    return Elicit(
        f"Remove {count} blacklist entr{'y' if count == 1 else 'ies'} from {target.pbx.label} to undo this? Those "
        f"callers will no longer be blocked. The caller IDs (as stored, in quotes): "
        f"{caller_id_list(removed, count)}.",
        Confirmation,
    )


@_tool("Restore blacklist entries", read_only=False, destructive=True, idempotent=True, pbx_optional=True)
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
    pbx: PbxArgument = None,
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
    target = await _restoring_on(ctx, operation_id, pbx)
    request = [target.pbx.key, operation_id, sorted(id_list or []), overwrite]
    confirm_one_write(
        ctx,
        asked,
        "restore_blacklist_numbers",
        request,
        plan_id,
        f"this restore removes entries from the blacklist{_where(target)} (it undoes adding them), so those "
        "callers would no longer be blocked, and the user must agree. Show the user which entries.",
    )
    result = await restore.restore(
        target.client,
        target.journal,
        operation_id,
        id_list,
        overwrite=overwrite,
        progress=ctx.report_progress,
    )
    return tool_result(result)


# Named check_caller_id over MCP; in Python that name is caller_ids' normaliser, used above.
@_tool("Check whether a caller is blocked", read_only=True, idempotent=True, name="check_caller_id")
async def check_caller_id_tool(
    ctx: Context, caller_id: CheckedCallerId, pbx: PbxArgument = None
) -> Annotated[CallToolResult, CallerCheckResult]:
    """Say whether the PBX's blacklist blocks a caller, and by which entries.

    Matches as 3CX does: exactly, case included, * in an entry matching anything (so "Jeremy"
    is blocked by the entry *eremy, which a search for "Jeremy" does not find). The caller ID is
    normalised as add_blacklist_number would store it, and the result says when it was.
    """
    return tool_result(await callers.check_caller(_on(ctx, pbx).client, str(caller_id)))


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
    pbx: PbxArgument = None,
) -> Annotated[CallToolResult, RecentCallersResult]:
    """Who has been calling: inbound callers from the PBX's call log, most calls first.

    Each caller comes with the number of calls, the first and last time, how many were answered,
    and whether an entry already blocks it (and which). Use it to decide whom to blacklist. Needs
    3CX V20 Update 6 or later and an API client with the System Owner role; reads at most the
    newest 10,000 call log records and says so when there were more.
    """
    return tool_result(await callers.recent_callers(_on(ctx, pbx).client, hours, min_calls, limit))


@_tool("List the PBXs", read_only=True, idempotent=True, several_pbxs_only=True)
async def list_pbxs(ctx: Context) -> Annotated[CallToolResult, PbxListResult]:
    """The PBXs this server manages: each one's name (what pbx takes), URL, whether it is read-only or
    the default, and whether it answers now (with its number of blacklist entries)."""
    state = state_of(ctx)
    return tool_result(await pbx_status.pbx_statuses(state.pbxs, state.client))


@_tool("List journaled operations", read_only=True, idempotent=True)
async def list_operations(
    ctx: Context,
    limit: Annotated[int, Field(ge=1, le=200, description="Operations per page (1-200).")] = 20,
    cursor: Annotated[
        str | None, Field(description="next_cursor from the previous page.", max_length=64)
    ] = None,
    pbx: PbxArgument = None,
) -> Annotated[CallToolResult, OperationsPage]:
    """Recent changes on this PBX (updates, adds, deletes, restores), newest first, from the safety journal.

    Each has its operation_id, time, kind, outcome, how many entries ended in each status, and
    whether restore_blacklist_numbers can undo it. Use it to find what to undo when the
    operation_id is no longer at hand.
    """
    return tool_result(await history.list_operations(_on(ctx, pbx).journal, limit, cursor))


async def operation_resource(operation_id: str, ctx: Context, start: str = "0") -> str:
    """Every entry of one journaled operation (JSON, up to ~400 KB a page; `next_page` names the next)."""
    # `start` is text, parsed by `entry_position`: typed as int, a bad value fails inside the SDK with no
    # reason given and the whole URI echoed (so for the CSV resource below too).
    try:
        pbxs = state_of(ctx).pbxs
        journal = (await pbxs.owner_of(operation_id) if pbxs.several else pbxs.pick(None)).journal
        return await history.operation_detail(journal, operation_id, start)
    except ThreeCXMcpError as exc:  # the reader gets our sentence, not the SDK's generic one
        raise ResourceError(exc.user_message()) from None


async def blacklist_csv_resource(ctx: Context, pbx: str | None = None, start: str | None = None) -> str:
    """The whole blacklist as CSV (caller_id,description), sorted by caller ID, as `threecx-mcp export` writes it.

    A cell a spreadsheet would run as a formula starts with one ' (so does a cell starting with ');
    `threecx-mcp import` and add_blacklist_numbers strip it. Up to ~0.9 MB a read: a larger blacklist
    is refused with the parts to read instead (`?start=N`, each a CSV with its header).
    """
    # A template with an optional variable rather than a static resource: only templates get the Context
    # (and with it the PBX client), and `start` is what a blacklist too large for one read needs anyway.
    try:
        _each_once(ctx)
        return await export.csv_resource(_on(ctx, pbx).client, start)
    except ThreeCXMcpError as exc:  # the reader gets our sentence, not the SDK's generic one
        raise ResourceError(exc.user_message()) from None


def _each_once(ctx: Context) -> None:
    """Refuse a resource URI giving a variable twice (`?pbx=a&pbx=b`): the template match would keep one of
    them without a word, and the reader would get another PBX's data than they think."""
    uri = str((ctx.request_context.params or {}).get("uri", ""))
    repeated = sorted(name for name, values in parse_qs(urlsplit(uri).query).items() if len(values) > 1)
    if repeated:
        names = state_of(ctx).pbxs
        raise InvalidArgument(
            f"{', '.join(quoted(name, 20) for name in repeated[:5])} is given more than once; give each once"
            + (f" (pbx is one of {names.listed()})." if "pbx" in repeated else ".")
        )


PBX_ARGUMENTS = ("pbx", "from_pbx", "to_pbx")


def with_pbx_choice(
    fn: Callable[..., Any], pbxs: PbxRoster, *, is_tool: bool, optional: bool = False
) -> Callable[..., Any]:
    """`fn` with its PBX arguments (`PBX_ARGUMENTS`) offering exactly the configured PBXs.

    With several PBXs each becomes an enum of their names: `pbx` defaults to the default PBX, or is
    required when none is set (unless `optional`: the call finds its PBX, as a restore finds the PBX its
    operation was made on); `from_pbx` and `to_pbx` are always required. With one PBX there is nothing
    to choose: a tool's schema leaves the argument out (so sending it is an unknown argument), and a
    resource's template has no such variable. The schema is pydantic's, from the rewritten signature.
    """
    signature = inspect.signature(fn, eval_str=True)
    kept, chosen = [], []
    for parameter in signature.parameters.values():
        if parameter.name not in PBX_ARGUMENTS:
            kept.append(parameter)
        elif not pbxs.several:
            if is_tool:
                hidden: object = SkipJsonSchema[str | None]  # type: ignore[misc]
                kept.append(parameter.replace(annotation=hidden))
        elif is_tool:
            choice: Any = Literal[tuple(pbxs.names)]
            default: object = Parameter.empty
            if parameter.name == "pbx" and optional:  # a restore goes where its operation was made
                choice, default = choice | None, None
            elif parameter.name == "pbx" and pbxs.default is not None:
                # null too: clients with strict schemas send it for every optional argument left unset
                choice, default = choice | None, pbxs.default
            said = "" if default is Parameter.empty or default is None else f" Default: {default}."
            described = Field(description=f"{_PBX_DESCRIPTIONS[parameter.name]}{said}")
            # Offered as the names alone (null is taken where the argument may be left out, not offered).
            offered = WithJsonSchema({"type": "string", "enum": pbxs.names})
            choice = Annotated[choice, BeforeValidator(_number_as_name), offered]
            chosen.append(
                parameter.replace(
                    kind=Parameter.KEYWORD_ONLY, annotation=Annotated[choice, described], default=default
                )
            )
        else:
            kept.append(parameter)

    @functools.wraps(fn)
    async def routed(**arguments: Any) -> Any:
        return await fn(**arguments)

    routed.__signature__ = signature.replace(parameters=[*kept, *chosen])  # type: ignore[attr-defined]
    return routed


def _number_as_name(value: object) -> object:
    """A PBX named "2" sent as the number 2 is that PBX, as an id sent as a number is that id."""
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


_PBX_DESCRIPTIONS = {
    "pbx": "The PBX to act on (list_pbxs lists them).",
    "from_pbx": "The PBX to copy from.",
    "to_pbx": "The PBX to copy to.",
}


def register(server: MCPServer[AppState], pbxs: PbxRoster, *, read_only: bool) -> None:
    """Add the tools, each offering the configured PBXs; in read-only mode the write tools are not
    registered at all, and tools for several PBXs only when there are several."""
    for tool in _TOOLS:
        if read_only and not tool.annotations.read_only_hint:
            continue
        if tool.several_pbxs_only and not pbxs.several:
            continue
        server.add_tool(
            with_pbx_choice(tool.fn, pbxs, is_tool=True, optional=tool.pbx_optional),
            name=tool.name or tool.fn.__name__,
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
        export.BLACKLIST_CSV_URI + ("{?pbx,start}" if pbxs.several else "{?start}"),
        name="blacklist.csv",
        title="Blacklist as CSV",
        description=inspect.cleandoc(blacklist_csv_resource.__doc__ or "")
        + (" With several PBXs, ?pbx=NAME says which." if pbxs.several else ""),
        mime_type="text/csv",
    )(with_pbx_choice(blacklist_csv_resource, pbxs, is_tool=False))
