"""Undo from the safety journal: put each journaled entry back in the state it had before.

Every journal item says what an entry was (`before`) and what the operation left (`after`);
undoing it means: make the PBX match `before` again, but only where the entry still is as the
operation left it. An entry someone changed since is left alone and reported `changed_since`
(unless the caller insists with `overwrite`), so an old undo never silently wipes later work.
A restore is itself journaled the same way, so it can be undone too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from ..client import BlacklistRecord, XapiClient
from ..display import quoted
from ..errors import InvalidArgument, NotFound, PbxError
from ..journal import EntryImage, ItemRecord, Journal, OperationKind
from ..models import RestoreOutcome, RestoreResult
from .bulk_delete import ProgressFn, no_progress
from .concurrency import AdaptiveLimiter, for_each, limiter_for
from .journaling import begin, end
from .outcomes import REFUSED, UNCHANGED, stops_the_operation
from .reporting import Row, bounded_rows, counts, operation_uri, yielding

_MAX_NAMED_IDS = 20
_PROGRESS_EVERY = 50


@dataclass(frozen=True)
class _Step:
    """What undoing one journal item takes: an action on the PBX, or a status with nothing to do."""

    item: ItemRecord
    action: str | None  # "create", "patch", "delete" or None
    status: str  # the status if nothing is done, else the status on success
    current: BlacklistRecord | None = None
    reason: str | None = None

    def journal_item(self) -> ItemRecord:
        """The change this step makes, as the journal records it (so the restore can be undone)."""
        target = self.item.before
        now = _image(self.current) if self.current is not None else None
        if self.action == "create":
            assert target is not None
            return ItemRecord(before=None, after=EntryImage("", target.caller_id, target.description))
        if self.action == "patch":
            assert target is not None and now is not None
            return ItemRecord(before=now, after=EntryImage(now.id, target.caller_id, target.description))
        return ItemRecord(before=now, after=None)


async def restore(
    client: XapiClient,
    journal: Journal,
    operation_id: str | None,
    ids: Sequence[str] | None,
    *,
    overwrite: bool = False,
    progress: ProgressFn = no_progress,
) -> RestoreResult:
    """Make the PBX match the journal's before-images where it still matches what the operation left.

    The creates, patches and deletes go out at most `client.max_in_flight` at once (see `concurrency`); each
    touches its own entry and two creates of one caller ID are never planned, and the deletes go
    before the patches and those before the creates, so a caller ID is freed before it is taken.
    """
    targets = await _targets(journal, operation_id, ids)
    steps = await _plan(client, targets, overwrite)
    actions = [s for s in steps if s.action is not None]
    if not actions:
        return await _result(steps, {}, None, operation_id, "nothing_to_do", [])
    planned = [s.journal_item() async for s in yielding(actions)]
    restore_id = await begin(journal, OperationKind.RESTORE, planned, undoes=operation_id)
    run = _RestoreRun(actions, planned, limiter_for(client))
    try:
        await run.apply(client, progress)
    except BaseException:
        await end(journal, restore_id, "interrupted", run.final_items())
        raise
    outcome = "partial" if any(item.status in ("failed", "unknown") for item in run.done) else "completed"
    warnings = await end(journal, restore_id, outcome, run.final_items())
    return await _result(steps, run.results(), restore_id, operation_id, outcome, warnings)


async def removals(
    client: XapiClient,
    journal: Journal,
    operation_id: str | None,
    ids: Sequence[str] | None,
    *,
    overwrite: bool,
) -> list[str]:
    """The caller IDs this restore would remove from the blacklist (undoing an add or a re-creation):
    the one kind of undo that unblocks callers, so the user confirms it first. Reads only."""
    # Only an entry the operation created (no before-image) is removed by undoing it: others need no read.
    created = [t for t in await _targets(journal, operation_id, ids) if t.before is None]
    steps = await _plan(client, created, overwrite) if created else []
    return [s.current.caller_id for s in steps if s.action == "delete" and s.current is not None]


async def _targets(journal: Journal, operation_id: str | None, ids: Sequence[str] | None) -> list[ItemRecord]:
    if operation_id is not None:
        if await journal.operation(operation_id) is None:
            raise InvalidArgument(
                f"No journaled operation with operation_id {quoted(operation_id, 40)} on this PBX; "
                "list_operations shows them. Nothing was changed."
            )
        items = await journal.items(operation_id)
        if ids is None:
            return items
        wanted = set(ids)
        chosen = [item for item in items if _ids_of(item) & wanted]
        missing = wanted - {i for item in chosen for i in _ids_of(item)}
        if missing:
            raise InvalidArgument(
                f"Operation {operation_id} did not touch {_named(missing)}; nothing was changed."
            )
        return chosen
    if ids is None:
        raise InvalidArgument("Give operation_id (from a result or list_operations), ids, or both.")
    # A restore is undone by its operation_id; by ids, what is put back is the state before the latest
    # change that was not itself a restore, so restoring by ids twice changes nothing the second time.
    latest = await journal.latest(ids, kinds=[k for k in OperationKind if k is not OperationKind.RESTORE])
    unknown = [i for i in ids if i not in latest]
    if unknown:
        raise InvalidArgument(f"The journal has no earlier state of {_named(unknown)}; nothing was changed.")
    unique: dict[tuple[str, EntryImage | None, EntryImage | None], ItemRecord] = {}
    async for entry_id in yielding(ids):
        operation, item = latest[entry_id]
        unique.setdefault((operation.operation_id, item.before, item.after), item)
    return list(unique.values())


async def _plan(client: XapiClient, targets: Sequence[ItemRecord], overwrite: bool) -> list[_Step]:
    by_id = await client.find_by_ids({_where(t) for t in targets if _where(t)})
    caller_ids = {t.before.caller_id for t in targets if t.before} | {
        t.after.caller_id for t in targets if t.after and not t.after.id
    }
    by_caller_id = await client.find_by_caller_ids(caller_ids) if caller_ids else {}
    steps = []
    claimed: set[str] = set()  # caller IDs this restore will create, so two items never create one twice
    async for item in yielding(targets):
        step = _step(item, by_id, by_caller_id, overwrite)
        target = step.item.before
        if step.action == "create" and target is not None:
            if target.caller_id in claimed:
                step = replace(step, action=None, status="already_present")
            claimed.add(target.caller_id)
        steps.append(step)
    return steps


def _step(
    item: ItemRecord,
    by_id: dict[str, BlacklistRecord],
    by_caller_id: dict[str, BlacklistRecord],
    overwrite: bool,
) -> _Step:
    if item.status in UNCHANGED:
        return _Step(item, None, "nothing_to_undo", None, f"that operation did not change it ({item.status})")
    target, left = item.before, (item.after if item.after_known else None)
    where = _where(item)
    now = by_id.get(where) if where else (by_caller_id.get(left.caller_id) if left else None)
    if target is None:  # the operation created this entry: undoing it removes it
        if now is None:
            return _Step(item, None, "already_absent")
        if left is None or _same(now, left) or overwrite:
            return _Step(item, "delete", "removed", now)
        return _Step(item, None, "changed_since", now, _changed(now))
    if now is None:
        if item.after is not None and not overwrite:  # updated by the operation, deleted by someone since
            return _Step(
                item, None, "changed_since", None, "deleted since; pass overwrite=true to re-create it"
            )
        twin = by_caller_id.get(target.caller_id)
        if twin is not None:
            return _Step(item, None, "already_present", twin)
        return _Step(item, "create", "recreated")
    if _same(now, target):
        return _Step(item, None, "already_restored" if item.after is not None else "already_present", now)
    if overwrite or not item.after_known or (left is not None and _same(now, left)):
        return _Step(item, "patch", "rolled_back", now)
    return _Step(item, None, "changed_since", now, _changed(now))


class _RestoreRun:
    """The actions of one restore, sent concurrently through the limiter; knows which are in flight."""

    def __init__(
        self, actions: Sequence[_Step], planned: Sequence[ItemRecord], limiter: AdaptiveLimiter
    ) -> None:
        self.actions = list(actions)
        self.planned = list(planned)
        self.limiter = limiter
        self.ended: dict[int, tuple[ItemRecord, str | None]] = {}  # by position: the item as it ended, its id
        self.in_flight: set[int] = set()  # sent, no answer yet: stays set if we are cut short
        self.fatal: PbxError | None = None
        self.claimed: dict[str, list[int]] = {}  # id a create's answer named -> the positions it named it for

    async def apply(self, client: XapiClient, progress: ProgressFn) -> None:
        async def one(position: int) -> None:
            step = self.actions[position]
            if self.fatal is not None:
                reason = f"not attempted after an earlier failure: {self.fatal.user_message()}"
                self._record(position, "failed", None, reason)
                return

            async def send() -> str | None:
                self.in_flight.add(position)  # inside the slot: from here on the PBX may have it
                return await _apply(client, step)

            try:
                current_id = await self.limiter.call(send)
            except PbxError as exc:
                self.in_flight.discard(position)
                refused = isinstance(exc, (*REFUSED, NotFound))  # anything else may still have been applied
                self._record(position, "failed" if refused else "unknown", None, exc.user_message())
                self.fatal = exc if stops_the_operation(exc) else self.fatal
                return
            self.in_flight.discard(position)
            if step.action == "create" and current_id is not None:
                self._created(position, step.status, current_id)
            else:
                self._record(position, step.status, current_id, None)
            done = len(self.ended)
            if done % _PROGRESS_EVERY == 0 or done == len(self.actions):
                await progress(done, len(self.actions), f"restored {done} of {len(self.actions)} entries")

        # Deletes first, then patches, then creates: each may free a caller ID that a later one takes.
        for action in ("delete", "patch", "create"):
            positions = [p for p, step in enumerate(self.actions) if step.action == action]
            await for_each(positions, one, workers=self.limiter.ceiling)

    def _created(self, position: int, status: str, entry_id: str) -> None:
        """Re-created under the id the PBX named, unless it named that id for another re-creation too:
        then neither id can be trusted, and both are journaled unknown without one, so that undoing this
        restore looks them up by caller ID instead of deleting whatever holds that id."""
        claimants = self.claimed.setdefault(entry_id, [])
        claimants.append(position)
        if len(claimants) == 1:
            self._record(position, status, entry_id, None)
            return
        for claimant in claimants:
            reason = f"the PBX named the same id ({entry_id}) for more than one re-created entry"
            self._record(claimant, "unknown", None, reason)

    def _record(self, position: int, status: str, current_id: str | None, reason: str | None) -> None:
        planned = self.planned[position]
        after = planned.after
        if after is not None and current_id is not None:
            after = EntryImage(current_id, after.caller_id, after.description)
        item = ItemRecord(before=planned.before, after=after, status=status, reason=reason)
        self.ended[position] = (item, current_id)

    @property
    def done(self) -> list[ItemRecord]:
        return [item for item, _ in self.ended.values()]

    def final_items(self) -> list[ItemRecord]:
        """Every planned item: ended ones as they ended, those in flight unknown, the rest not attempted."""
        items = []
        for position, planned in enumerate(self.planned):
            if position in self.ended:
                items.append(self.ended[position][0])
            elif position in self.in_flight:
                items.append(
                    replace(planned, status="unknown", reason="interrupted while the PBX had the request")
                )
            else:
                items.append(
                    replace(planned, status="failed", reason="not attempted: the restore was interrupted")
                )
        return items

    def results(self) -> dict[int, tuple[ItemRecord, str | None]]:
        return {id(self.actions[position]): ended for position, ended in self.ended.items()}


async def _apply(client: XapiClient, step: _Step) -> str | None:
    target = step.item.before
    if step.action == "create":
        assert target is not None
        return (await client.create_blacklist_number(target.caller_id, target.description)).id
    assert step.current is not None
    if step.action == "patch":
        assert target is not None
        changes = {"CallerId": target.caller_id, "Description": target.description or ""}
        await client.update_blacklist_number(step.current.id, changes)
        return step.current.id
    await client.delete_blacklist_number(step.current.id)
    return None


async def _result(
    steps: Sequence[_Step],
    applied: dict[int, tuple[ItemRecord, str | None]],
    restore_id: str | None,
    undoes: str | None,
    outcome: str,
    warnings: list[str],
) -> RestoreResult:
    rows = []
    async for step in yielding(steps):
        shown = step.item.before or step.item.after
        assert shown is not None
        status, current_id, reason = step.status, (step.current.id if step.current else None), step.reason
        if id(step) in applied:
            record, new_id = applied[id(step)]
            status, reason = record.status, record.reason
            current_id = new_id if step.action != "delete" else None
        rows.append(Row(step.item.entry_id, status, shown.caller_id, shown.description, reason, current_id))
    tally = counts(rows)
    listed, omitted = bounded_rows(rows, important=("failed", "unknown", "changed_since"))
    summary = ", ".join(f"{n} {status.replace('_', ' ')}" for status, n in sorted(tally.items())) + "."
    if outcome == "nothing_to_do":
        summary = "Nothing to restore: " + summary
    return RestoreResult(
        operation_id=restore_id,
        undoes=undoes,
        outcome=outcome,  # type: ignore[arg-type]
        summary=summary,
        counts=tally,
        results=[
            RestoreOutcome(
                id=r.id,
                status=r.status,  # type: ignore[arg-type]
                caller_id=r.caller_id or "",
                description=r.description,
                current_id=r.current_id,
                reason=r.reason,
            )
            for r in listed
        ],
        omitted=omitted,
        details=operation_uri(restore_id) if restore_id else None,
        warnings=warnings,
    )


def _where(item: ItemRecord) -> str:
    """The id under which the entry should be found now ("" when a creation's id is unknown)."""
    if item.after is not None and item.after_known:
        return item.after.id
    return item.before.id if item.before is not None else ""


def _ids_of(item: ItemRecord) -> set[str]:
    return {image.id for image in (item.before, item.after) if image is not None and image.id}


def _same(record: BlacklistRecord, image: EntryImage) -> bool:
    return record.caller_id == image.caller_id and (record.description or None) == (image.description or None)


def _image(record: BlacklistRecord) -> EntryImage:
    return EntryImage(record.id, record.caller_id, record.description or None)


def _changed(now: BlacklistRecord) -> str:
    return (
        f"changed since (now caller ID {quoted(now.caller_id)}, description {quoted(now.description)}); "
        "pass overwrite=true to put it back anyway"
    )


def _named(ids: Sequence[str] | set[str]) -> str:
    shown = sorted(ids)[:_MAX_NAMED_IDS]
    more = len(ids) - len(shown)
    return "id " + ", ".join(quoted(i, 40) for i in shown) + (f" and {more} more" if more else "")
