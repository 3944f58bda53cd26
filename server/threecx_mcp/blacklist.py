"""Blacklist operations with the guarantees the tools promise: read-back, verification, no half-done work."""

from __future__ import annotations

import base64
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import anyio

from . import odata
from .client import BlacklistRecord, XapiClient
from .errors import (
    AuthenticationFailed,
    Conflict,
    InvalidArgument,
    InvalidRequest,
    NotFound,
    PbxError,
    PbxUnreachable,
    PermissionDenied,
)
from .journal import Journal, Operation
from .models import (
    AddResult,
    BlacklistEntry,
    BlacklistPageResult,
    BulkDeleteResult,
    DeleteOutcome,
    RestoreOutcome,
    RestoreResult,
    UpdateResult,
    normalize_caller_id,
)

BULK_CHUNK_SIZE = 500
# Small id sets are looked up with one `Id eq … or …` filter; OData servers cap filter size
# (ASP.NET OData's default MaxNodeCount is 100), so larger sets page through the collection.
FILTER_LOOKUP_LIMIT = 15
_FATAL = (AuthenticationFailed, PermissionDenied, PbxUnreachable)
# Refusals mean the PBX did not apply the change; anything else (5xx, timeouts) might have.
_REFUSED = (InvalidRequest, Conflict, AuthenticationFailed, PermissionDenied)
UPDATE_TOOL = "update_blacklist_number"
DELETE_TOOL = "bulk_delete_blacklist_numbers"
RESTORE_TOOL = "restore_blacklist_numbers"

ProgressFn = Callable[[float, float, str], Awaitable[None]]


async def _no_progress(done: float, total: float, message: str) -> None:
    return None


def _not_found(entry_id: str) -> InvalidArgument:
    return InvalidArgument(
        f"No blacklist entry with id {entry_id!r}; use list_blacklist_numbers to find it. Nothing was changed."
    )


async def get_entry(client: XapiClient, entry_id: str) -> BlacklistEntry:
    try:
        return BlacklistEntry.of(await client.get_blacklist_number(entry_id))
    except NotFound:
        raise _not_found(entry_id) from None


def _encode_cursor(offset: int, search: str | None) -> str:
    raw = json.dumps({"offset": offset, "search": search}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str, search: str | None) -> int:
    try:
        state = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        offset = state["offset"]
        if not isinstance(offset, int) or offset < 0:
            raise ValueError
    except (ValueError, KeyError, TypeError):
        raise InvalidArgument(
            "cursor is not one this server issued; omit it to start from the first page."
        ) from None
    if state.get("search") != search:
        raise InvalidArgument(
            f"cursor belongs to the search {state.get('search')!r}, not {search!r}; repeat that search or omit cursor."
        )
    return offset


def _search_filter(search: str) -> str:
    terms = {search}
    normalized, _ = normalize_caller_id(search)
    terms.add(normalized)
    return odata.any_of(
        odata.contains(prop, term, ignore_case=True) for term in sorted(terms) for prop in ("CallerId", "Description")
    )


async def list_entries(client: XapiClient, search: str | None, limit: int, cursor: str | None) -> BlacklistPageResult:
    search = search.strip() or None if search is not None else None
    offset = _decode_cursor(cursor, search) if cursor else 0
    page = await client.list_blacklist(
        filter=_search_filter(search) if search else None,
        top=limit,
        skip=offset,
        count=True,
        orderby=("CallerId", "Id"),
    )
    end = offset + len(page.records)
    more = len(page.records) == limit and (page.total is None or end < page.total)
    return BlacklistPageResult(
        entries=[BlacklistEntry.of(r) for r in page.records],
        total=page.total,
        next_cursor=_encode_cursor(end, search) if more else None,
    )


async def add_entry(client: XapiClient, caller_id: str, description: str | None) -> AddResult:
    caller_id, note = normalize_caller_id(caller_id)
    existing = (await client.list_blacklist(filter=odata.eq("CallerId", caller_id), top=1)).records
    if existing:
        raise InvalidArgument(
            f"Caller ID {caller_id!r} is already blacklisted (id {existing[0].id!r}); "
            "use update_blacklist_number to change that entry."
        )
    created = await client.create_blacklist_number(caller_id, description or None)
    return AddResult(entry=BlacklistEntry.of(created), notes=[note] if note else [])


async def update_entry(
    client: XapiClient, journal: Journal, entry_id: str, caller_id: str | None, description: str | None
) -> UpdateResult:
    if caller_id is None and description is None:
        raise InvalidArgument(
            "Give caller_id, description, or both; description=\"\" clears the description. Nothing was changed."
        )
    before = await get_entry(client, entry_id)
    notes: list[str] = []
    changes: dict[str, str] = {}
    if caller_id is not None:
        caller_id, note = normalize_caller_id(caller_id)
        notes += [note] if note else []
        if caller_id != before.caller_id:
            changes["CallerId"] = caller_id
    if description is not None and (description or None) != before.description:
        changes["Description"] = description
    if not changes:
        return UpdateResult(
            operation_id=None, entry=before, previous=before, changed_fields=[], notes=[*notes, "Nothing to change."]
        )
    operation_id = journal.begin(UPDATE_TOOL, [before])
    status = "unknown"
    try:
        await client.update_blacklist_number(entry_id, changes)
        status = "updated"
    except NotFound:
        status = "failed"
        raise _not_found(entry_id) from None  # deleted between our read and our write
    except PbxError as exc:
        status = "failed" if isinstance(exc, _REFUSED) else "unknown"
        raise
    finally:
        journal.end(operation_id, status, {entry_id: status})
    after = await get_entry(client, entry_id)
    changed = [f for f in ("caller_id", "description") if getattr(after, f) != getattr(before, f)]
    return UpdateResult(
        operation_id=operation_id, entry=after, previous=before, changed_fields=changed, notes=notes  # type: ignore[arg-type]
    )


async def find_existing(client: XapiClient, ids: Sequence[str]) -> dict[str, BlacklistRecord]:
    """Which of `ids` exist now, with their current values."""
    wanted = set(ids)
    if len(wanted) <= FILTER_LOOKUP_LIMIT:
        page = await client.list_blacklist(filter=odata.any_of(odata.eq("Id", i) for i in sorted(wanted)), top=len(wanted))
        records = page.records
    else:
        records = await client.iter_blacklist()
    return {r.id: r for r in records if r.id in wanted}


async def bulk_delete(
    client: XapiClient, journal: Journal, ids: Sequence[str], *, dry_run: bool, progress: ProgressFn = _no_progress
) -> BulkDeleteResult:
    """Journal, delete in chunks, then look again: the PBX's 204 does not say what it deleted."""
    before = await find_existing(client, ids)
    present = [i for i in ids if i in before]
    if dry_run:
        results = [_outcome(i, before, "would_delete" if i in before else "not_found") for i in ids]
        missing = len(ids) - len(present)
        return _summarise(
            results, "dry_run", f"Dry run: {len(present)} would be deleted, {missing} not found; nothing was deleted."
        )
    if not present:
        return _summarise([_outcome(i, before, "not_found") for i in ids], "completed", "")
    operation_id = journal.begin(DELETE_TOOL, [BlacklistEntry.of(before[i]) for i in present])
    run = _BulkRun(ids, present, before, progress)
    try:
        result = await run.delete_and_verify(client)
    except BaseException:
        # Cancelled or crashed midway: record what really happened before letting go.
        with anyio.CancelScope(shield=True), anyio.move_on_after(15):
            await run.settle(client)
        journal.end(operation_id, "interrupted", run.statuses)
        raise
    journal.end(operation_id, result.outcome, {r.id: r.status for r in result.results if r.id in before})
    return result.model_copy(update={"operation_id": operation_id})


@dataclass
class _BulkRun:
    """One bulk delete in progress; knows which ids are in flight if it is cut short."""

    ids: Sequence[str]
    present: list[str]
    before: dict[str, BlacklistRecord]
    progress: ProgressFn
    in_flight: list[str] = field(default_factory=list)
    reasons: dict[str, str] = field(default_factory=dict)
    uncertain: set[str] = field(default_factory=set)  # their request got no answer: it may still apply
    statuses: dict[str, str] = field(default_factory=dict)

    async def delete_and_verify(self, client: XapiClient) -> BulkDeleteResult:
        chunks = [self.present[i : i + BULK_CHUNK_SIZE] for i in range(0, len(self.present), BULK_CHUNK_SIZE)]
        for number, chunk in enumerate(chunks):
            self.in_flight = chunk  # stays set if we are cancelled while the PBX has it
            try:
                await client.bulk_delete_blacklist_numbers(chunk)
                self.in_flight = []
            except PbxError as exc:
                self.in_flight = []
                self.reasons.update(dict.fromkeys(chunk, exc.user_message()))
                if isinstance(exc, PbxUnreachable):
                    self.uncertain.update(chunk)
                if isinstance(exc, _FATAL):
                    skipped = [i for later in chunks[number + 1 :] for i in later]
                    self.reasons.update(dict.fromkeys(skipped, f"not attempted after an earlier failure: {exc.message}"))
                    break
            await self.progress(number + 1, len(chunks), f"sent {number + 1} of {len(chunks)} delete requests")

        try:
            still_there = await find_existing(client, self.present)
        except PbxError as exc:
            reason = f"could not check the result: {exc.user_message()}"
            results = [
                _outcome(i, self.before, "not_found")
                if i not in self.before
                else _outcome(
                    i,
                    self.before,
                    "failed" if i in self.reasons and i not in self.uncertain else "unknown",
                    self.reasons.get(i, reason),
                )
                for i in self.ids
            ]
            return _summarise(results, "partial", "The deletes were sent but the result could not be checked.")

        results = []
        for i in self.ids:
            if i not in self.before:
                results.append(_outcome(i, self.before, "not_found"))
            elif i in still_there and i in self.uncertain:
                why = f"{self.reasons[i]} The PBX may still delete it; check with get_blacklist_number."
                results.append(_outcome(i, self.before, "unknown", why))
            elif i in still_there:
                why = self.reasons.get(i, "the PBX accepted the request but the entry still exists")
                results.append(_outcome(i, self.before, "failed", why))
            else:
                results.append(_outcome(i, self.before, "deleted"))
        failed = sum(r.status in ("failed", "unknown") for r in results)
        return _summarise(results, "partial" if failed else "completed", "")

    async def settle(self, client: XapiClient) -> None:
        """After an interruption: gone means deleted, present means not, in flight means unknown."""
        self.statuses = dict.fromkeys(self.present, "unknown")
        try:
            still_there = await find_existing(client, self.present)
        except PbxError:
            return
        for i in self.present:
            if i not in still_there:
                self.statuses[i] = "deleted"
            elif i not in self.in_flight and i not in self.uncertain:
                self.statuses[i] = "failed"


def _outcome(entry_id: str, before: dict[str, BlacklistRecord], status: str, reason: str | None = None) -> DeleteOutcome:
    record = before.get(entry_id)
    return DeleteOutcome(
        id=entry_id,
        status=status,  # type: ignore[arg-type]
        caller_id=record.caller_id if record else None,
        description=(record.description or None) if record else None,
        reason=reason,
    )


def _summarise(results: list[DeleteOutcome], outcome: str, lead: str) -> BulkDeleteResult:
    counts = {s: sum(r.status == s for r in results) for s in ("deleted", "not_found", "failed", "unknown")}
    parts = [lead] if lead else []
    if outcome != "dry_run":
        parts.append(
            f"{counts['deleted']} deleted, {counts['not_found']} not found, {counts['failed']} failed"
            + (f", {counts['unknown']} unknown" if counts["unknown"] else "")
            + f" of {len(results)} requested."
        )
    if counts["failed"] or counts["unknown"]:
        parts.append("See each result's reason; nothing reported deleted still exists.")
    return BulkDeleteResult(
        outcome=outcome,  # type: ignore[arg-type]
        summary=" ".join(parts),
        deleted=counts["deleted"],
        not_found=counts["not_found"],
        failed=counts["failed"],
        results=results,
    )


def declined(ids: Sequence[str]) -> BulkDeleteResult:
    return BulkDeleteResult(
        outcome="declined",
        summary=f"The user declined; none of the {len(ids)} entries was deleted.",
        deleted=0,
        not_found=0,
        failed=0,
        results=[],
    )


# -- restore ----------------------------------------------------------------------------------


def _restore_targets(journal: Journal, operation_id: str | None, ids: Sequence[str] | None) -> list[tuple[Operation, BlacklistEntry]]:
    operations = [op for op in journal.operations() if op.tool in (UPDATE_TOOL, DELETE_TOOL)]
    if operation_id is not None:
        operations = [op for op in operations if op.operation_id == operation_id]
        if not operations:
            raise InvalidArgument(
                f"No journaled update or delete with operation_id {operation_id!r}; update_blacklist_number and "
                "bulk_delete_blacklist_numbers return it. Nothing was changed."
            )
    if ids is None:
        if operation_id is None:
            raise InvalidArgument("Give operation_id (from an update or bulk delete result), ids, or both.")
        return [(operations[0], entry) for entry in operations[0].before]
    targets = []
    for entry_id in ids:
        latest = next(((op, e) for op in reversed(operations) for e in op.before if e.id == entry_id), None)
        if latest is None:
            raise InvalidArgument(f"The journal has no earlier state of id {entry_id!r}; nothing was changed.")
        targets.append(latest)
    return targets


async def restore(
    client: XapiClient, journal: Journal, operation_id: str | None, ids: Sequence[str] | None
) -> RestoreResult:
    """Put journaled entries back as they were; what is already back is left alone, so twice is safe."""
    targets = _restore_targets(journal, operation_id, ids)
    current = {r.id: r for r in await client.iter_blacklist()}
    by_caller_id = {r.caller_id: r.id for r in current.values()}
    rollbacks = [entry for op, entry in targets if op.tool == UPDATE_TOOL and entry.id in current]
    restore_id = journal.begin(RESTORE_TOOL, [BlacklistEntry.of(current[e.id]) for e in rollbacks])
    results: list[RestoreOutcome] = []
    fatal: PbxError | None = None
    try:
        for op, entry in targets:
            outcome = RestoreOutcome(id=entry.id, status="failed", caller_id=entry.caller_id, description=entry.description)
            if fatal is not None:
                results.append(outcome.model_copy(update={"reason": f"not attempted: {fatal.message}"}))
                continue
            try:
                results.append(await _restore_one(client, op, entry, current, by_caller_id, outcome))
            except PbxError as exc:
                results.append(outcome.model_copy(update={"reason": exc.user_message()}))
                fatal = exc if isinstance(exc, _FATAL) else None
    finally:
        journal.end(restore_id, "completed" if len(results) == len(targets) else "interrupted", {r.id: r.status for r in results})
    counts = {s: sum(r.status == s for r in results) for s in ("recreated", "rolled_back", "failed")}
    untouched = len(results) - counts["recreated"] - counts["rolled_back"] - counts["failed"]
    summary = (
        f"{counts['recreated']} re-created, {counts['rolled_back']} rolled back, {untouched} already as journaled, "
        f"{counts['failed']} failed."
    )
    return RestoreResult(operation_id=restore_id, summary=summary, results=results)


async def _restore_one(
    client: XapiClient,
    op: Operation,
    entry: BlacklistEntry,
    current: dict[str, BlacklistRecord],
    by_caller_id: dict[str, str],
    outcome: RestoreOutcome,
) -> RestoreOutcome:
    now = current.get(entry.id)
    if op.tool == UPDATE_TOOL and now is not None:
        if now.caller_id == entry.caller_id and (now.description or None) == entry.description:
            return outcome.model_copy(update={"status": "already_restored", "current_id": entry.id})
        await client.update_blacklist_number(
            entry.id, {"CallerId": entry.caller_id, "Description": entry.description or ""}
        )
        by_caller_id[entry.caller_id] = entry.id
        return outcome.model_copy(update={"status": "rolled_back", "current_id": entry.id})
    if entry.caller_id in by_caller_id:
        return outcome.model_copy(update={"status": "already_present", "current_id": by_caller_id[entry.caller_id]})
    created = await client.create_blacklist_number(entry.caller_id, entry.description)
    by_caller_id[created.caller_id] = created.id
    return outcome.model_copy(update={"status": "recreated", "current_id": created.id})
