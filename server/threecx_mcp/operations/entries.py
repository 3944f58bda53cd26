"""Single-entry operations: list (keyset-paged), get, add and update, each with what it promises."""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass

from ..caller_ids import check_caller_id, search_terms
from ..client import XapiClient
from ..display import quoted
from ..errors import InvalidArgument, NotFound, PbxError, UncertainOutcome
from ..journal import EntryImage, ItemRecord, Journal, OperationKind
from ..models import AddResult, BlacklistEntry, BlacklistPageResult, UpdateResult
from .journaling import begin, end
from .outcomes import REFUSED

_MAX_CURSOR_LENGTH = 2_000


def _listing(search: str | None) -> str:
    return "the listing without a search" if search is None else f"the search {quoted(search)}"


def _not_found(entry_id: str) -> InvalidArgument:
    return InvalidArgument(
        f"No blacklist entry with id {quoted(entry_id)}; use list_blacklist_numbers to find it. Nothing was changed."
    )


async def get_entry(client: XapiClient, entry_id: str) -> BlacklistEntry:
    try:
        return BlacklistEntry.of(await client.get_blacklist_number(entry_id))
    except NotFound:
        raise _not_found(entry_id) from None


@dataclass(frozen=True)
class _Cursor:
    """Where the previous page ended, by value: deleting entries meanwhile cannot make a page skip."""

    search: str | None
    after: tuple[str, str]  # (caller_id, id) of the previous page's last entry
    seen: int  # entries shown on the pages before, so the total stays meaningful

    def encode(self) -> str:
        raw = json.dumps({"s": self.search, "a": list(self.after), "n": self.seen}, separators=(",", ":"))
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str, search: str | None) -> _Cursor:
        try:
            if len(text) > _MAX_CURSOR_LENGTH:
                raise ValueError
            state = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
            after, seen, cursor_search = state["a"], state["n"], state["s"]
            if not (
                isinstance(after, list)
                and len(after) == 2
                and all(isinstance(part, str) for part in after)
                and isinstance(seen, int)
                and seen >= 0
                and (cursor_search is None or isinstance(cursor_search, str))
            ):
                raise ValueError
            "".join([*after, cursor_search or ""]).encode("utf-8")  # unpaired surrogates: not ours
        except (ValueError, KeyError, TypeError, binascii.Error, RecursionError, UnicodeError):
            raise InvalidArgument(
                "cursor is not one this server issued; omit it to start from the first page."
            ) from None
        if cursor_search != search:
            raise InvalidArgument(
                f"cursor belongs to {_listing(cursor_search)}, not {_listing(search)}; repeat that listing or omit cursor."
            )
        return cls(search, (after[0], after[1]), seen)


async def list_entries(
    client: XapiClient, search: str | None, limit: int, cursor: str | None
) -> BlacklistPageResult:
    search = search.strip() or None if search is not None else None
    position = _Cursor.decode(cursor, search) if cursor else None
    terms = search_terms(search) if search else []
    page = await client.page(terms=terms, after=position.after if position else None, limit=limit)
    seen = position.seen if position else 0
    records = page.records
    if page.remaining is not None:
        # The count covers this page and everything after it, so it says whether more remain even when
        # the PBX caps its pages below `limit`.
        more = page.remaining > len(records)
        total: int | None = seen + page.remaining
    else:
        # No count: a short page may only be the PBX's own page cap, so only an empty page ends a listing.
        more, total = bool(records), None
    next_cursor = None
    if more and records:
        next_cursor = _Cursor(search, (records[-1].caller_id, records[-1].id), seen + len(records)).encode()
    return BlacklistPageResult(
        entries=[BlacklistEntry.of(r) for r in records], total=total, next_cursor=next_cursor
    )


async def add_entry(
    client: XapiClient, caller_id: str, description: str | None, *, allow_broad_pattern: bool = False
) -> AddResult:
    """Add one entry in the form 3CX can match; a pattern blocking (nearly) everyone only when allowed."""
    checked = check_caller_id(caller_id)
    checked.refuse_if_broad(allow_broad_pattern)
    existing = (await client.find_by_caller_ids([checked.value])).get(checked.value)
    if existing is not None:
        raise InvalidArgument(
            f"Caller ID {quoted(checked.value)} is already blacklisted (id {quoted(existing.id)}); "
            "use update_blacklist_number to change that entry."
        )
    created = await client.create_blacklist_number(checked.value, description or None)
    return AddResult(entry=BlacklistEntry.of(created), notes=checked.notes)


async def update_entry(
    client: XapiClient,
    journal: Journal,
    entry_id: str,
    caller_id: str | None,
    description: str | None,
    *,
    allow_broad_pattern: bool = False,
) -> UpdateResult:
    """PATCH only what changes, journaled first; the result says what is true even if a later step fails."""
    if caller_id is None and description is None:
        raise InvalidArgument(
            'Give caller_id, description, or both; description="" clears the description. Nothing was changed.'
        )
    checked = None if caller_id is None else check_caller_id(caller_id)
    if checked is not None:
        checked.refuse_if_broad(allow_broad_pattern)  # before any request: a refusal sends nothing
    before = await get_entry(client, entry_id)
    notes = checked.notes if checked else []
    changes: dict[str, str] = {}
    if checked is not None and checked.value != before.caller_id:
        changes["CallerId"] = checked.value
    if description is not None and (description or None) != before.description:
        changes["Description"] = description
    if not changes:
        return UpdateResult(
            operation_id=None,
            entry=before,
            previous=before,
            changed_fields=[],
            notes=[*notes, "Nothing to change."],
        )
    intended = BlacklistEntry(
        id=before.id,
        caller_id=changes.get("CallerId", before.caller_id),
        description=(changes["Description"] or None) if "Description" in changes else before.description,
    )
    item = ItemRecord(before=_image(before), after=_image(intended))
    operation_id = await begin(journal, OperationKind.UPDATE, [item])
    try:
        await client.update_blacklist_number(entry_id, changes)
    except PbxError as exc:
        refused = isinstance(exc, (REFUSED, NotFound))
        status = "failed" if refused else "unknown"
        await end(journal, operation_id, status, [_final(item, status, exc.user_message())])
        if isinstance(exc, NotFound):
            raise _not_found(entry_id) from None  # deleted between our read and our write
        if refused:
            raise
        raise UncertainOutcome(
            f"{exc.user_message()} The PBX may still have applied the change: check with get_blacklist_number; "
            f"restore_blacklist_numbers with operation_id {quoted(operation_id)} undoes it."
        ) from None
    warnings = await end(journal, operation_id, "completed", [_final(item, "updated")])
    try:
        stored, read_back = await get_entry(client, entry_id), True
    except (PbxError, InvalidArgument) as exc:
        warnings.append(f"The change was applied, but reading the entry back failed: {exc.user_message()}")
        stored, read_back = intended, False
    changed = [f for f in ("caller_id", "description") if getattr(stored, f) != getattr(before, f)]
    return UpdateResult(
        operation_id=operation_id,
        entry=stored,
        previous=before,
        changed_fields=changed,  # type: ignore[arg-type]
        read_back=read_back,
        notes=notes,
        warnings=warnings,
    )


def _image(entry: BlacklistEntry) -> EntryImage:
    return EntryImage(entry.id, entry.caller_id, entry.description)


def _final(item: ItemRecord, status: str, reason: str | None = None) -> ItemRecord:
    return ItemRecord(before=item.before, after=item.after, status=status, reason=reason)
