"""The MCP tools and the operation resource: schemas, hints and descriptions beside each tool."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, cast

from mcp.server.mcpserver import (
    AcceptedElicitation,
    Context,
    Elicit,
    ElicitationResult,
    MCPServer,
    Resolve,
)
from mcp.server.mcpserver.exceptions import ResourceError
from mcp_types import CallToolResult, ToolAnnotations
from pydantic import Field

from .client import XapiClient
from .display import quoted
from .errors import ThreeCXMcpError
from .journal import Journal
from .models import (
    AddResult,
    BlacklistEntry,
    BlacklistPageResult,
    BulkDeleteResult,
    CallerIdInput,
    DeleteConfirmation,
    DescriptionInput,
    EntryId,
    IdList,
    OperationsPage,
    RestoreResult,
    SearchInput,
    UpdateResult,
)
from .operations import bulk_delete, entries, history, restore
from .operations.reporting import OPERATION_URI_PREFIX
from .presentation import tool_result

_PREVIEW_CALLER_IDS = 10


@dataclass
class AppState:
    """What the tools share for the server's lifetime."""

    client: XapiClient
    journal: Journal


def _state(ctx: Context) -> AppState:
    return cast(AppState, ctx.request_context.lifespan_context)


def _client(ctx: Context) -> XapiClient:
    return _state(ctx).client


def _journal(ctx: Context) -> Journal:
    return _state(ctx).journal


@dataclass(frozen=True)
class _Registered:
    fn: Callable[..., Any]
    annotations: ToolAnnotations


_TOOLS: list[_Registered] = []


def _tool(
    title: str, *, read_only: bool, destructive: bool = False, idempotent: bool = False
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
        _TOOLS.append(_Registered(fn, hints))
        return fn

    return declare


@_tool("List or search blacklist", read_only=True, idempotent=True)
async def list_blacklist_numbers(
    ctx: Context,
    search: SearchInput | None = None,
    limit: Annotated[int, Field(ge=1, le=500, description="Entries per page (1-500).")] = 50,
    cursor: Annotated[str | None, Field(description="next_cursor from the previous page.")] = None,
) -> BlacklistPageResult:
    """List or search the PBX's caller blacklist, a page at a time.

    Use it to find the id of an entry before get, update or delete. Results come sorted by
    caller ID, with the total number of matches; pass next_cursor back to get the next page
    (deleting entries between pages skips nothing).
    """
    return await entries.list_entries(_client(ctx), search, limit, cursor)


@_tool("Get blacklist entry", read_only=True, idempotent=True)
async def get_blacklist_number(ctx: Context, id: EntryId) -> BlacklistEntry:
    """Read one blacklist entry by id (ids come from list_blacklist_numbers)."""
    return await entries.get_entry(_client(ctx), str(id))


@_tool("Add blacklist entry", read_only=False)
async def add_blacklist_number(
    ctx: Context, caller_id: CallerIdInput, description: DescriptionInput | None = None
) -> AddResult:
    """Block a caller: add a caller ID (number, name, or * pattern) to the PBX's blacklist.

    Refuses a caller ID that is already blacklisted and names the existing entry instead.
    """
    return await entries.add_entry(_client(ctx), str(caller_id), description)


@_tool("Update blacklist entry", read_only=False, destructive=True, idempotent=True)
async def update_blacklist_number(
    ctx: Context,
    id: EntryId,
    caller_id: CallerIdInput | None = None,
    description: Annotated[
        DescriptionInput | None, Field(description='New note; "" clears it; omit to leave it unchanged.')
    ] = None,
) -> UpdateResult:
    """Change an existing blacklist entry's caller ID and/or description.

    Give the id (from list_blacklist_numbers) and at least one of caller_id or description;
    omitted fields stay as they are. Returns the entry as stored afterwards, the previous
    values, which fields changed, and an operation_id that restore_blacklist_numbers undoes.
    """
    return await entries.update_entry(_client(ctx), _journal(ctx), str(id), caller_id, description)


async def _confirm_bulk_delete(
    ids: list[str], dry_run: bool, confirm: bool, ctx: Context
) -> Elicit[DeleteConfirmation] | bool:
    """Ask the user first when the client can be asked; otherwise its own approval prompt stands."""
    capabilities = ctx.client_capabilities
    if dry_run or confirm or capabilities is None or capabilities.elicitation is None:
        return True
    existing = await _client(ctx).find_by_ids(ids)
    if not existing:
        return True  # nothing would be deleted: nothing to confirm
    shown = [quoted(existing[i].caller_id, 40) for i in ids if i in existing][:_PREVIEW_CALLER_IDS]
    more = len(existing) - len(shown)
    message = (
        f"Delete {len(existing)} blacklist entr{'y' if len(existing) == 1 else 'ies'} from the PBX? "
        f"Caller IDs: {', '.join(shown)}{f' and {more} more' if more else ''}. "
        "Those callers will no longer be blocked."
    )
    return Elicit(message, DeleteConfirmation)


@_tool("Delete blacklist entries", read_only=False, destructive=True, idempotent=True)
async def bulk_delete_blacklist_numbers(
    ctx: Context,
    ids: IdList,
    confirmation: Annotated[ElicitationResult[DeleteConfirmation], Resolve(_confirm_bulk_delete)],
    dry_run: Annotated[bool, Field(description="Report what would be deleted, delete nothing.")] = False,
    confirm: Annotated[
        bool, Field(description="Set true only when the user has already confirmed this exact deletion.")
    ] = False,
) -> Annotated[CallToolResult, BulkDeleteResult]:
    """Delete many blacklist entries at once (unblocks those callers).

    Get ids from list_blacklist_numbers. Reports the counts, every id that was not deleted
    (not found, failed with the reason, or unknown) and the deleted entries' caller IDs; the
    full per-id detail is in the resource named by `details`. Pass the returned operation_id to
    restore_blacklist_numbers to undo. Use dry_run=true first to preview. Up to 10,000 ids.
    """
    id_list = [str(i) for i in ids]
    # The resolver answers True itself when there is no one to ask (dry run, no elicitation).
    accepted = isinstance(confirmation, AcceptedElicitation) and (
        not isinstance(confirmation.data, DeleteConfirmation) or confirmation.data.confirm
    )
    if not accepted:
        return tool_result(bulk_delete.declined(id_list))
    result = await bulk_delete.bulk_delete(
        _client(ctx), _journal(ctx), id_list, dry_run=dry_run, progress=ctx.report_progress
    )
    return tool_result(result)


@_tool("Restore blacklist entries", read_only=False, destructive=True, idempotent=True)
async def restore_blacklist_numbers(
    ctx: Context,
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
) -> Annotated[CallToolResult, RestoreResult]:
    """Undo an update, a bulk delete or a restore from the local safety journal.

    Give operation_id (from a result, or list_operations), ids, or both. Entries already as
    journaled are left alone, so restoring twice is safe; entries changed since the operation
    are reported changed_since and left alone unless overwrite=true. Re-created entries get new
    ids; the result lists them. The restore is journaled too: its own operation_id undoes it.
    """
    id_list = None if ids is None else [str(i) for i in ids]
    result = await restore.restore(
        _client(ctx), _journal(ctx), operation_id, id_list, overwrite=overwrite, progress=ctx.report_progress
    )
    return tool_result(result)


@_tool("List journaled operations", read_only=True, idempotent=True)
async def list_operations(
    ctx: Context,
    limit: Annotated[int, Field(ge=1, le=200, description="Operations per page (1-200).")] = 20,
    cursor: Annotated[
        str | None, Field(description="next_cursor from the previous page.", max_length=64)
    ] = None,
) -> Annotated[CallToolResult, OperationsPage]:
    """Recent updates, bulk deletes and restores on this PBX, newest first, from the safety journal.

    Each has its operation_id, time, kind, outcome, how many entries ended in each status, and
    whether restore_blacklist_numbers can undo it. Use it to find what to undo when the
    operation_id is no longer at hand.
    """
    return tool_result(await history.list_operations(_journal(ctx), limit, cursor))


async def operation_resource(operation_id: str, ctx: Context, start: int = 0) -> str:
    """Every entry of one journaled operation (JSON, up to ~400 KB a page; `next_page` names the next)."""
    try:
        return await history.operation_detail(_journal(ctx), operation_id, start)
    except ThreeCXMcpError as exc:  # the reader gets our sentence, not the SDK's generic one
        raise ResourceError(exc.user_message()) from None


def register(server: MCPServer[AppState], *, read_only: bool) -> None:
    """Add the tools; in read-only mode the write tools are not registered at all."""
    for tool in _TOOLS:
        if read_only and not tool.annotations.read_only_hint:
            continue
        server.add_tool(
            tool.fn,
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
