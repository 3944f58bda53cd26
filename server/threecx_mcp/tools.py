"""The MCP tools: thin wrappers that declare schemas, hints and descriptions, and call `blacklist`."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Annotated

from mcp.server.mcpserver import (
    AcceptedElicitation,
    Context,
    Elicit,
    ElicitationResult,
    MCPServer,
    Resolve,
)
from mcp_types import ToolAnnotations
from pydantic import Field

from . import blacklist
from .client import XapiClient
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
    RestoreResult,
    SearchInput,
    UpdateResult,
)

_PREVIEW_CALLER_IDS = 10


@dataclass
class AppState:
    """What the tools share for the server's lifetime."""

    client: XapiClient
    journal: Journal


def _client(ctx: Context) -> XapiClient:
    return ctx.request_context.lifespan_context.client


def _journal(ctx: Context) -> Journal:
    return ctx.request_context.lifespan_context.journal


async def list_blacklist_numbers(
    ctx: Context,
    search: SearchInput | None = None,
    limit: Annotated[int, Field(ge=1, le=500, description="Entries per page (1-500).")] = 50,
    cursor: Annotated[str | None, Field(description="next_cursor from the previous page.")] = None,
) -> BlacklistPageResult:
    """List or search the PBX's caller blacklist, a page at a time.

    Use it to find the id of an entry before get, update or delete. Results come sorted by
    caller ID, with the total number of matches; pass next_cursor back to get the next page.
    """
    return await blacklist.list_entries(_client(ctx), search, limit, cursor)


async def get_blacklist_number(ctx: Context, id: EntryId) -> BlacklistEntry:
    """Read one blacklist entry by id (ids come from list_blacklist_numbers)."""
    return await blacklist.get_entry(_client(ctx), str(id))


async def add_blacklist_number(
    ctx: Context, caller_id: CallerIdInput, description: DescriptionInput | None = None
) -> AddResult:
    """Block a caller: add a caller ID (number, name, or * pattern) to the PBX's blacklist.

    Refuses a caller ID that is already blacklisted and names the existing entry instead.
    """
    return await blacklist.add_entry(_client(ctx), str(caller_id), description)


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
    values, and which fields changed.
    """
    return await blacklist.update_entry(_client(ctx), _journal(ctx), str(id), caller_id, description)


async def _confirm_bulk_delete(
    ids: list[str], dry_run: bool, confirm: bool, ctx: Context
) -> Elicit[DeleteConfirmation] | bool:
    """Ask the user first when the client can be asked; otherwise its own approval prompt stands."""
    capabilities = ctx.client_capabilities
    if dry_run or confirm or capabilities is None or capabilities.elicitation is None:
        return True
    existing = await blacklist.find_existing(_client(ctx), ids)
    if not existing:
        return True  # nothing would be deleted: nothing to confirm
    shown = [existing[i].caller_id for i in ids if i in existing][:_PREVIEW_CALLER_IDS]
    more = len(existing) - len(shown)
    message = (
        f"Delete {len(existing)} blacklist entr{'y' if len(existing) == 1 else 'ies'} from the PBX? "
        f"Caller IDs: {', '.join(shown)}{f' and {more} more' if more else ''}. "
        "Those callers will no longer be blocked."
    )
    return Elicit(message, DeleteConfirmation)


async def bulk_delete_blacklist_numbers(
    ctx: Context,
    ids: IdList,
    confirmation: Annotated[ElicitationResult[DeleteConfirmation], Resolve(_confirm_bulk_delete)],
    dry_run: Annotated[bool, Field(description="Report what would be deleted, delete nothing.")] = False,
    confirm: Annotated[
        bool, Field(description="Set true only when the user has already confirmed this exact deletion.")
    ] = False,
) -> BulkDeleteResult:
    """Delete many blacklist entries at once (unblocks those callers).

    Get ids from list_blacklist_numbers. Reports per id whether it was deleted or not found
    (or failed, with the reason), with each deleted entry's caller ID and description; pass
    the returned operation_id to restore_blacklist_numbers to undo. Use dry_run=true first to
    preview. Up to 10,000 ids per call.
    """
    id_list = [str(i) for i in ids]
    accepted = isinstance(confirmation, AcceptedElicitation) and (
        confirmation.data is True or (isinstance(confirmation.data, DeleteConfirmation) and confirmation.data.confirm)
    )
    if not accepted:
        return blacklist.declined(id_list)
    return await blacklist.bulk_delete(
        _client(ctx), _journal(ctx), id_list, dry_run=dry_run, progress=ctx.report_progress
    )


async def restore_blacklist_numbers(
    ctx: Context,
    operation_id: Annotated[
        str | None, Field(description="operation_id from an update or bulk delete result: undo that operation.")
    ] = None,
    ids: Annotated[
        IdList | None, Field(description="Entry ids to put back as they were before their latest change or delete.")
    ] = None,
) -> RestoreResult:
    """Undo updates and re-create deleted entries from the local safety journal.

    Give operation_id (returned by update_blacklist_number and bulk_delete_blacklist_numbers),
    ids, or both. Entries already as journaled are left alone, so restoring twice is safe.
    Re-created entries get new ids; the result lists them.
    """
    id_list = None if ids is None else [str(i) for i in ids]
    return await blacklist.restore(_client(ctx), _journal(ctx), operation_id, id_list)


# name -> (function, title, read_only, destructive, idempotent)
_TOOLS = (
    (list_blacklist_numbers, "List or search blacklist", True, False, True),
    (get_blacklist_number, "Get blacklist entry", True, False, True),
    (add_blacklist_number, "Add blacklist entry", False, False, False),
    (update_blacklist_number, "Update blacklist entry", False, True, True),
    (bulk_delete_blacklist_numbers, "Delete blacklist entries", False, True, True),
    (restore_blacklist_numbers, "Restore blacklist entries", False, True, True),
)


def register(server: MCPServer, *, read_only: bool) -> None:
    """Add the tools; in read-only mode the write tools are not registered at all."""
    for fn, title, is_read_only, destructive, idempotent in _TOOLS:
        if read_only and not is_read_only:
            continue
        hints = ToolAnnotations(
            title=title,
            read_only_hint=is_read_only,
            destructive_hint=destructive,
            idempotent_hint=idempotent,
            open_world_hint=False,
        )
        server.add_tool(fn, title=title, description=inspect.cleandoc(fn.__doc__ or ""), annotations=hints)
