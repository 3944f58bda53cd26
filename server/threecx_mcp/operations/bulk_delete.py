"""The bulk delete engine: journal, delete in chunks, then look again by id.

The PBX answers a bulk delete with an empty 204 that does not say which ids it removed, so the
truth comes from looking up the ids before and after, by id (never by position, which shifts when
someone else edits the blacklist meanwhile). An interruption at any point still ends in a journal
record that says, per id, what is known: gone, still there, or unknowable (in flight).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

import anyio

from ..client import BlacklistRecord, XapiClient
from ..display import quoted
from ..errors import PbxError, PbxUnreachable
from ..journal import EntryImage, ItemRecord, Journal, OperationKind
from ..models import BulkDeleteResult, DeleteOutcome
from .journaling import begin, end
from .outcomes import stops_the_operation
from .reporting import Row, bounded_rows, counts, operation_uri, yielding

BULK_CHUNK_SIZE = 500

ProgressFn = Callable[[float, float, str], Awaitable[None]]


async def no_progress(done: float, total: float, message: str) -> None:
    return None


async def preview(client: XapiClient, ids: Sequence[str]) -> tuple[BulkDeleteResult, dict[str, str]]:
    """The dry run, and what it showed: each id that would be deleted with its caller ID."""
    before = await client.find_by_ids(ids)
    statuses = {i: "would_delete" if i in before else "not_found" for i in ids}
    shown = {i: before[i].caller_id for i in ids if i in before}
    return await summarise(ids, before, statuses, {}, "dry_run", None, []), shown


async def bulk_delete(
    client: XapiClient,
    journal: Journal,
    ids: Sequence[str],
    *,
    dry_run: bool,
    progress: ProgressFn = no_progress,
    shown: Mapping[str, str] | None = None,
) -> BulkDeleteResult:
    """Delete `ids`; with `shown` (id → caller ID the user confirmed), only entries still as shown.

    An id the user was not shown (it did not exist then) or whose caller ID changed since is
    `skipped`: the user agreed to delete what they saw, not whatever holds that id now.
    """
    if dry_run:
        return (await preview(client, ids))[0]
    before = await client.find_by_ids(ids)
    reasons: dict[str, str] = {}
    if shown is not None:
        for i in (i for i in ids if i in before):
            if i not in shown:
                reasons[i] = "not deleted: it did not exist when the user confirmed, so they never saw it"
            elif shown[i] != before[i].caller_id:
                reasons[i] = (
                    f"not deleted: its caller ID changed since the user confirmed (they saw {quoted(shown[i], 40)})"
                )
    present = [i for i in ids if i in before and i not in reasons]
    skipped = {i: "skipped" for i in reasons}
    if not present:
        statuses = {i: skipped.get(i, "not_found") for i in ids}
        return await summarise(ids, before, statuses, reasons, "completed", None, [])
    items = [ItemRecord(before=_image(before[i]), after=None) async for i in yielding(present)]
    operation_id = await begin(journal, OperationKind.DELETE, items)
    run = _BulkRun(present, progress)
    try:
        await run.delete(client)
        await run.verify(client)
    except BaseException:
        # Cancelled or crashed midway: find out what really happened before letting go.
        with anyio.CancelScope(shield=True), anyio.move_on_after(15):
            await run.settle(client)
        await end(journal, operation_id, "interrupted", run.final_items(items))
        raise
    outcome = "partial" if any(s in ("failed", "unknown") for s in run.statuses.values()) else "completed"
    warnings = await end(journal, operation_id, outcome, run.final_items(items))
    statuses = {i: skipped.get(i) or run.statuses.get(i, "not_found") for i in ids}
    return await summarise(ids, before, statuses, run.reasons | reasons, outcome, operation_id, warnings)


@dataclass
class _BulkRun:
    """One bulk delete in progress; knows which ids are in flight if it is cut short."""

    present: list[str]
    progress: ProgressFn
    in_flight: list[str] = field(default_factory=list)
    reasons: dict[str, str] = field(default_factory=dict)
    uncertain: set[str] = field(default_factory=set)  # their request got no answer: it may still apply
    statuses: dict[str, str] = field(default_factory=dict)

    async def delete(self, client: XapiClient) -> None:
        chunks = [self.present[i : i + BULK_CHUNK_SIZE] for i in range(0, len(self.present), BULK_CHUNK_SIZE)]
        for number, chunk in enumerate(chunks):
            self.in_flight = chunk  # stays set if we are cancelled while the PBX has it
            try:
                await client.bulk_delete_blacklist_numbers(chunk)
            except PbxError as exc:
                self.reasons.update(dict.fromkeys(chunk, exc.user_message()))
                if isinstance(exc, PbxUnreachable):
                    self.uncertain.update(chunk)
                if stops_the_operation(exc):
                    skipped = [i for later in chunks[number + 1 :] for i in later]
                    self.reasons.update(
                        dict.fromkeys(
                            skipped, f"not attempted after an earlier failure: {exc.user_message()}"
                        )
                    )
                    self.in_flight = []
                    break
            self.in_flight = []
            await self.progress(
                number + 1, len(chunks), f"sent {number + 1} of {len(chunks)} delete requests"
            )

    async def verify(self, client: XapiClient) -> None:
        """Gone is deleted; still there is failed, or unknown if its request got no answer."""
        try:
            still_there = await client.find_by_ids(self.present)
        except PbxError as exc:
            reason = f"the deletes were sent but the result could not be checked: {exc.user_message()}"
            for i in self.present:
                known_failed = i in self.reasons and i not in self.uncertain
                self.statuses[i] = "failed" if known_failed else "unknown"
                self.reasons.setdefault(i, reason)
            return
        for i in self.present:
            if i not in still_there:
                self.statuses[i] = "deleted"
                self.reasons.pop(i, None)
            elif i in self.uncertain:
                self.statuses[i] = "unknown"
                self.reasons[i] += " The PBX may still delete it; check with get_blacklist_number."
            else:
                self.statuses[i] = "failed"
                self.reasons.setdefault(i, "the PBX accepted the request but the entry still exists")

    async def settle(self, client: XapiClient) -> None:
        """After an interruption: gone means deleted, present means not, in flight means unknown."""
        self.statuses = dict.fromkeys(self.present, "unknown")
        try:
            still_there = await client.find_by_ids(self.present)
        except PbxError:
            return
        for i in self.present:
            if i not in still_there:
                self.statuses[i] = "deleted"
            elif i not in self.in_flight and i not in self.uncertain:
                self.statuses[i] = "failed"

    def final_items(self, items: Sequence[ItemRecord]) -> list[ItemRecord]:
        return [
            ItemRecord(
                before=item.before,
                after=None,
                status=self.statuses.get(item.entry_id, "unknown"),
                reason=self.reasons.get(item.entry_id),
            )
            for item in items
        ]


async def summarise(
    ids: Sequence[str],
    before: dict[str, BlacklistRecord],
    statuses: dict[str, str],
    reasons: dict[str, str],
    outcome: str,
    operation_id: str | None,
    warnings: list[str],
) -> BulkDeleteResult:
    rows = [_row(i, before.get(i), statuses[i], reasons.get(i)) async for i in yielding(ids)]
    tally = counts(rows)
    counted = {s: tally.get(s, 0) for s in ("deleted", "not_found", "failed", "unknown", "skipped")}
    would_delete = tally.get("would_delete", 0)
    listed, omitted = bounded_rows(rows, important=("not_found", "failed", "unknown", "skipped"))
    if outcome == "dry_run":
        summary = f"Dry run: {would_delete} would be deleted, {counted['not_found']} not found; nothing was deleted."
    else:
        summary = (
            f"{counted['deleted']} deleted, {counted['not_found']} not found, {counted['failed']} failed"
            + (f", {counted['unknown']} unknown" if counted["unknown"] else "")
            + (f", {counted['skipped']} skipped (not as the user saw them)" if counted["skipped"] else "")
            + f" of {len(ids)} requested."
        )
        if counted["failed"] or counted["unknown"]:
            summary += " See each result's reason; nothing reported deleted still exists."
    return BulkDeleteResult(
        operation_id=operation_id,
        outcome=outcome,  # type: ignore[arg-type]
        summary=summary,
        requested=len(ids),
        would_delete=would_delete,
        results=[
            DeleteOutcome(
                id=r.id,
                status=r.status,  # type: ignore[arg-type]
                caller_id=r.caller_id,
                description=r.description,
                reason=r.reason,
            )
            for r in listed
        ],
        omitted=omitted,
        details=operation_uri(operation_id) if operation_id else None,
        warnings=warnings,
        deleted=counted["deleted"],
        not_found=counted["not_found"],
        failed=counted["failed"],
        unknown=counted["unknown"],
        skipped=counted["skipped"],
    )


def declined(ids: Sequence[str]) -> BulkDeleteResult:
    return BulkDeleteResult(
        outcome="declined",
        summary=f"The user declined; none of the {len(ids)} entries was deleted.",
        requested=len(ids),
        deleted=0,
        not_found=0,
        failed=0,
        unknown=0,
        results=[],
    )


def _row(entry_id: str, record: BlacklistRecord | None, status: str, reason: str | None) -> Row:
    if record is None:
        return Row(entry_id, status, None, None, reason)
    return Row(entry_id, status, record.caller_id, record.description or None, reason)


def _image(record: BlacklistRecord) -> EntryImage:
    return EntryImage(record.id, record.caller_id, record.description or None)
