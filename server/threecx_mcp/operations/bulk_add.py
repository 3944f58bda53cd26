"""The bulk add engine: check every entry, skip what is blocked already, journal, then add concurrently.

Public API (the `add_blacklist_numbers` tool and `threecx-mcp import` both use it):

    bulk_add(client, journal, entries: Sequence[EntryInput], *, dry_run: bool,
             allow_broad_pattern: bool = False, progress: ProgressFn = no_progress,
             shown: Collection[str] | None = None) -> BulkAddResult
    preview(client, entries, allow_broad_pattern) -> (BulkAddResult, caller IDs it would add)
    prepare(client, entries, allow_broad_pattern) -> Prepared   # what would be added (reads only)
    plan_request(entries, allow_broad_pattern) -> list          # what a confirmation plan is bound to
    declined(entries) -> BulkAddResult

Each entry gets exactly one status: `invalid` (the single add's rules refuse it; the reason says
why), `duplicate` (the same caller ID, once normalised, as an earlier entry), `already_present`
(the PBX holds that caller ID: the existing entry's id is given), `skipped` (with `shown`, the
caller IDs the user agreed to add: one they did not see as to be added, because it was blocked
then, is not added now), `added`, `failed` (the PBX's reason) or `unknown` (the request got no
answer and the entry cannot be found: the PBX may still add it). Every row is journaled before the
first request (kind `add`, no before-image): the entries to add as pending, the others as they end,
so the operation's record accounts for each row given and restoring it removes only what it added.
Requests go out through the PBX's `AdaptiveLimiter`; whatever ends the run (a PBX failure, a
timeout, a cancellation), entries without a clean answer are looked up by caller ID before the
journal is closed, and those never sent say so. A PBX naming one id for two new entries is not
believed for either: both are looked up by caller ID.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field, replace

import anyio

from ..caller_ids import TOOL_BROAD_REMEDY, check_caller_id
from ..client import BlacklistRecord, XapiClient
from ..display import quoted
from ..errors import InvalidArgument, PbxError, PbxUnreachable
from ..journal import EntryImage, ItemRecord, Journal, OperationKind
from ..models import AddOutcome, BulkAddResult, checked_description
from ..sanitise import clean
from .bulk_delete import ProgressFn, no_progress
from .callers import Blocklist, pattern_entries
from .concurrency import AdaptiveLimiter, for_each, limiter_for
from .entry_lists import EntryInput
from .journaling import begin, end
from .outcomes import REFUSED, stops_the_operation
from .reporting import Row, bounded_rows, counts, operation_uri, yielding

_PROGRESS_EVERY = 100  # entries per progress notification
_SETTLE_SECONDS = 15.0  # looking up what an interrupted add left, before letting the cancellation go
_IMPORTANT = ("invalid", "failed", "unknown", "skipped", "duplicate", "already_present")
_COUNTED = ("added", "already_present", "invalid", "duplicate", "skipped", "failed", "unknown", "would_add")
_UNSHOWN = (
    "not added: when the user agreed, it was already blocked, so they were not asked to add it; ask again "
    "to add it now"
)

__all__ = ["Prepared", "bulk_add", "declined", "no_progress", "plan_request", "prepare", "preview"]


@dataclass(frozen=True, slots=True)
class _Checked:
    """One input entry after the single add's rules: what would be stored, or why it cannot be."""

    entry: EntryInput
    status: str  # "candidate", "invalid" or "duplicate"
    caller_id: str  # normalised; as given when invalid
    description: str | None
    note: str | None = None  # normalisation or a warning (mixed scripts), for candidates
    reason: str | None = None  # for invalid and duplicate entries
    broad: bool = False  # a pattern blocking (nearly) every caller, allowed by allow_broad_pattern


def _check(
    entries: Sequence[EntryInput], allow_broad_pattern: bool, broad_remedy: str = TOOL_BROAD_REMEDY
) -> list[_Checked]:
    checked: list[_Checked] = []
    first_row: dict[str, int] = {}
    for entry in entries:
        try:
            caller_id = check_caller_id(entry.caller_id)
            caller_id.refuse_if_broad(allow_broad_pattern, broad_remedy)
            description = checked_description(entry.description)
        except InvalidArgument as exc:
            checked.append(_Checked(entry, "invalid", entry.caller_id, entry.description, reason=exc.message))
            continue
        except ValueError as exc:  # the description's rule
            checked.append(_Checked(entry, "invalid", entry.caller_id, entry.description, reason=f"{exc}."))
            continue
        value = caller_id.value
        if value in first_row:
            reason = f"the same caller ID as row {first_row[value]} once normalised; only that row is added"
            checked.append(_Checked(entry, "duplicate", value, description, reason=reason))
            continue
        first_row[value] = entry.row
        note = " ".join(caller_id.notes) or None
        broad = caller_id.broad_reason is not None
        checked.append(_Checked(entry, "candidate", value, description, note=note, broad=broad))
    return checked


def plan_request(entries: Sequence[EntryInput], allow_broad_pattern: bool) -> list[object]:
    """What a plan for these entries covers: the normalised set to add (input order and spelling aside)."""
    wanted = sorted(
        (c.caller_id, c.description or "")
        for c in _check(entries, allow_broad_pattern)
        if c.status == "candidate"
    )
    return [allow_broad_pattern, [list(pair) for pair in wanted]]


@dataclass(frozen=True)
class Prepared:
    """Every entry checked, which of the candidates the PBX already holds (by caller ID), and which the
    user was not shown as to be added (`unshown`: they are skipped)."""

    checked: list[_Checked]
    existing: dict[str, BlacklistRecord]
    covered: dict[str, str] = field(default_factory=dict)  # caller ID -> which patterns block it already
    unshown: frozenset[str] = frozenset()

    def note(self, checked: _Checked) -> str | None:
        """What to say about a candidate that is added: its normalisation, and any pattern blocking it."""
        said = [n for n in (checked.note, self.covered.get(checked.caller_id)) if n]
        return " ".join(said) or None

    @property
    def to_add(self) -> list[_Checked]:
        return [
            c
            for c in self.checked
            if c.status == "candidate"
            and c.caller_id not in self.existing
            and c.caller_id not in self.unshown
        ]


async def prepare(
    client: XapiClient,
    entries: Sequence[EntryInput],
    allow_broad_pattern: bool,
    broad_remedy: str = TOOL_BROAD_REMEDY,
) -> Prepared:
    """Every entry checked, looked up by caller ID, and matched against the blacklist's patterns: an
    entry a pattern already blocks is still added (the user listed it) but says which pattern."""
    checked = _check(entries, allow_broad_pattern, broad_remedy)
    candidates = [c.caller_id for c in checked if c.status == "candidate"]
    if not candidates:
        return Prepared(checked, {})
    existing = await client.find_by_caller_ids(candidates)
    patterns = Blocklist({}, await pattern_entries(client))
    covered = {}
    for caller_id in candidates:
        blockers = [] if caller_id in existing else patterns.blockers(caller_id)
        if blockers:
            named = ", ".join(f"{quoted(b.entry.caller_id, 40)} (id {b.entry.id})" for b in blockers[:3])
            more = f" and {len(blockers) - 3} more" if len(blockers) > 3 else ""
            covered[caller_id] = (
                f"Already blocked by the pattern(s) {named}{more}; added as its own entry too."
            )
    return Prepared(checked, existing, covered)


async def preview(
    client: XapiClient,
    entries: Sequence[EntryInput],
    allow_broad_pattern: bool,
    broad_remedy: str = TOOL_BROAD_REMEDY,
) -> tuple[BulkAddResult, list[str]]:
    """The dry run, and the caller IDs it would add: what a plan or question shows, so what may be added."""
    prepared = await prepare(client, entries, allow_broad_pattern, broad_remedy)
    return await _summarise(prepared, None, "dry_run", None, []), [c.caller_id for c in prepared.to_add]


async def bulk_add(
    client: XapiClient,
    journal: Journal,
    entries: Sequence[EntryInput],
    *,
    dry_run: bool,
    allow_broad_pattern: bool = False,
    progress: ProgressFn = no_progress,
    shown: Collection[str] | None = None,
    broad_remedy: str = TOOL_BROAD_REMEDY,
) -> BulkAddResult:
    """Add the entries the PBX lacks, at most `client.max_in_flight` requests at once; see the module's doc.

    With `shown` (the caller IDs the user agreed to add), an entry to add that is not among them is
    `skipped`: it was blocked when they agreed, and they agreed to add what they saw, not what changed.
    """
    prepared = await prepare(client, entries, allow_broad_pattern, broad_remedy)
    if shown is not None:
        agreed = frozenset(shown)
        prepared = replace(prepared, unshown=frozenset(c.caller_id for c in prepared.to_add) - agreed)
    to_add = prepared.to_add
    if dry_run or not to_add:
        return await _summarise(prepared, None, "dry_run" if dry_run else "completed", None, [])
    run = _AddRun(to_add, limiter_for(client), progress, settled=_settled_rows(prepared))
    operation_id = await begin(journal, OperationKind.ADD, run.final_items())
    try:
        await run.send(client)
        await run.verify(client, run.to_check)
    except BaseException:
        # Cancelled or crashed midway: find out what the requests in flight did before letting go.
        with anyio.CancelScope(shield=True), anyio.move_on_after(_SETTLE_SECONDS):
            await run.verify(client, run.to_check | run.in_flight)
        await end(journal, operation_id, "interrupted", run.final_items())
        raise
    outcome = "partial" if any(s in ("failed", "unknown") for s in run.statuses.values()) else "completed"
    warnings = await end(journal, operation_id, outcome, run.final_items())
    return await _summarise(prepared, run, outcome, operation_id, warnings)


def _settled_rows(prepared: Prepared) -> list[ItemRecord]:
    """The journal's record of every row that is not sent (invalid, repeated, present, not agreed to).

    An invalid row is kept as given but escaped and capped (`clean`): it may hold what a database
    cannot store (an unpaired surrogate) or be very long, and it is shown, never sent.
    """
    items = []
    for checked in prepared.checked:
        row = _row(checked, prepared, None, None, "completed")
        if row.status == "added":
            continue
        caller_id, description = checked.caller_id, checked.description
        if row.status == "invalid":
            caller_id, description = clean(caller_id), None if description is None else clean(description)
        said = f"row {row.id}" + (f": {row.reason}" if row.reason else "")
        items.append(
            ItemRecord(
                before=None,
                after=EntryImage(row.current_id or "", caller_id, description),
                status=row.status,
                reason=said,
            )
        )
    return items


@dataclass
class _AddRun:
    """One bulk add in progress, by position in `planned`; knows which requests are in flight."""

    planned: list[_Checked]
    limiter: AdaptiveLimiter
    progress: ProgressFn
    ids: dict[int, str] = field(default_factory=dict)
    statuses: dict[int, str] = field(default_factory=dict)
    reasons: dict[int, str] = field(default_factory=dict)
    in_flight: set[int] = field(default_factory=set)  # sent, no answer yet: stays set if we are cut short
    to_check: set[int] = field(default_factory=set)  # answered with an error: look them up by caller ID
    refused: set[int] = field(default_factory=set)  # the PBX refused them: it did not add them
    claimed: dict[str, list[int]] = field(default_factory=dict)  # id the PBX named -> entries it named it for
    settled: list[ItemRecord] = field(default_factory=list)  # the rows never to be sent, as they ended
    fatal: PbxError | None = None
    done: int = 0
    started: bool = False

    async def send(self, client: XapiClient) -> None:
        self.started = True
        await for_each(range(len(self.planned)), lambda i: self._add(client, i), workers=self.limiter.ceiling)

    async def _add(self, client: XapiClient, index: int) -> None:
        entry = self.planned[index]
        if self.fatal is not None:
            self.statuses[index] = "failed"
            self.reasons[index] = f"not sent after an earlier failure: {self.fatal.user_message()}"
        else:

            async def create() -> BlacklistRecord:
                self.in_flight.add(index)  # inside the slot: from here on the PBX may have it
                return await client.create_blacklist_number(entry.caller_id, entry.description)

            try:
                record = await self.limiter.call(create)
            except PbxError as exc:
                self.in_flight.discard(index)
                self.to_check.add(index)
                self.reasons[index] = exc.user_message()
                if isinstance(exc, REFUSED):
                    self.refused.add(index)
                # A refusal or an error answer: not added unless found; no answer at all: unknown unless found.
                self.statuses[index] = "unknown" if isinstance(exc, PbxUnreachable) else "failed"
                self.fatal = exc if stops_the_operation(exc) else self.fatal
            else:
                self.in_flight.discard(index)
                self._created(index, record.id)
        self.done += 1
        if self.done % _PROGRESS_EVERY == 0 or self.done == len(self.planned):
            await self.progress(
                self.done, len(self.planned), f"added {self.done} of {len(self.planned)} entries"
            )

    def _created(self, index: int, entry_id: str) -> None:
        """Added, under the id the PBX named, unless it named that id for another new entry too: then
        neither id can be trusted (undo would delete the wrong entry), so both are looked up by caller ID."""
        claimants = self.claimed.setdefault(entry_id, [])
        claimants.append(index)
        if len(claimants) == 1:
            self.ids[index], self.statuses[index] = entry_id, "added"
            return
        for claimant in claimants:
            self.ids.pop(claimant, None)
            self.statuses[claimant] = "unknown"
            self.reasons[claimant] = f"the PBX named the same id ({entry_id}) for more than one new entry"
            self.to_check.add(claimant)

    async def verify(self, client: XapiClient, indices: set[int]) -> None:
        """Look up by caller ID the entries without a clean answer: found as sent is added, found otherwise
        (or refused) is someone else's entry, absent keeps its status (in flight: unknown)."""
        for index in self.in_flight & indices:
            self.statuses[index] = "unknown"
            self.reasons[index] = "interrupted while the PBX had the request; it may still add the entry"
        if not indices:
            return
        wanted = {self.planned[i].caller_id: i for i in indices}
        try:
            found = await client.find_by_caller_ids(list(wanted))
        except PbxError as exc:
            for index in indices:
                self.reasons[index] += f" Whether it was added could not be checked: {exc.user_message()}"
            return
        for caller_id, index in wanted.items():
            record = found.get(caller_id)
            if record is None:
                continue
            self.ids[index] = record.id
            if index not in self.refused and (record.description or None) == self.planned[index].description:
                self.statuses[index] = "added"
                self.reasons.pop(index, None)
            else:
                self.statuses[index] = "already_present"
                self.reasons[index] = "an entry with this caller ID exists (someone else added it meanwhile)"
        self.to_check -= indices

    def final_items(self) -> list[ItemRecord]:
        """Every planned entry as it ended (those never sent are failed, saying so), then every input row
        that was never to be sent, so that the journal accounts for each row given."""
        items = []
        for index, entry in enumerate(self.planned):
            status = self.statuses.get(index, "failed" if self.started else "pending")
            reason = self.reasons.get(index, "not sent: the operation was interrupted first")
            after = EntryImage(self.ids.get(index, ""), entry.caller_id, entry.description)
            items.append(
                ItemRecord(
                    before=None,
                    after=after,
                    status=status,
                    reason=None if status in ("added", "pending") else reason,
                )
            )
        return items + self.settled


async def _summarise(
    prepared: Prepared, run: _AddRun | None, outcome: str, operation_id: str | None, warnings: list[str]
) -> BulkAddResult:
    position = {id(c): i for i, c in enumerate(run.planned)} if run is not None else {}
    rows: list[Row] = []
    async for checked in yielding(prepared.checked):
        rows.append(_row(checked, prepared, run, position.get(id(checked)), outcome))
    tally = counts(rows)
    counted = {status: tally.get(status, 0) for status in _COUNTED}
    listed, omitted = bounded_rows(rows, important=_IMPORTANT)
    others = (
        f"{counted['already_present']} already present, {counted['invalid']} invalid, "
        f"{counted['duplicate']} duplicates folded"
        + (f", {counted['skipped']} skipped (blocked when the user agreed)" if counted["skipped"] else "")
    )
    if outcome == "dry_run":
        summary = f"Dry run: {counted['would_add']} would be added, {others}; nothing was added."
    else:
        summary = (
            f"{counted['added']} added, {others}, {counted['failed']} failed"
            + (f", {counted['unknown']} unknown" if counted["unknown"] else "")
            + f" of {len(rows)} entries."
        )
        if counted["failed"] or counted["unknown"]:
            summary += " See each result's reason; restore_blacklist_numbers with the operation_id removes what was added."
    return BulkAddResult(
        operation_id=operation_id,
        outcome=outcome,  # type: ignore[arg-type]
        summary=summary,
        requested=len(rows),
        results=[_outcome(r) for r in listed],
        omitted=omitted,
        details=operation_uri(operation_id) if operation_id else None,
        warnings=warnings,
        added=counted["added"],
        already_present=counted["already_present"],
        invalid=counted["invalid"],
        duplicate=counted["duplicate"],
        skipped=counted["skipped"],
        failed=counted["failed"],
        unknown=counted["unknown"],
        would_add=counted["would_add"],
    )


def _row(
    checked: _Checked,
    prepared: Prepared,
    run: _AddRun | None,
    index: int | None,
    outcome: str,
) -> Row:
    """One entry's outcome; `id` carries its row number and `current_id` the entry's id on the PBX."""
    row, caller_id, description = str(checked.entry.row), checked.caller_id, checked.description
    if checked.status != "candidate":
        return Row(row, checked.status, caller_id, description, checked.reason)
    if caller_id in prepared.existing:
        existing = prepared.existing[caller_id]
        return Row(row, "already_present", caller_id, description, checked.note, existing.id)
    if caller_id in prepared.unshown:
        return Row(row, "skipped", caller_id, description, _UNSHOWN)
    if run is None or index is None:
        return Row(
            row,
            "would_add" if outcome == "dry_run" else "added",
            caller_id,
            description,
            prepared.note(checked),
        )
    status = run.statuses.get(index, "failed")
    reason = prepared.note(checked) if status == "added" else run.reasons.get(index)
    return Row(row, status, caller_id, description, reason, run.ids.get(index))


def _outcome(row: Row) -> AddOutcome:
    return AddOutcome(
        row=int(row.id),
        status=row.status,  # type: ignore[arg-type]
        caller_id=row.caller_id or "",
        description=row.description,
        id=row.current_id,
        reason=row.reason,
    )


def declined(entries: Sequence[EntryInput]) -> BulkAddResult:
    return BulkAddResult(
        outcome="declined",
        summary=f"The user declined; none of the {len(entries)} entries was added.",
        requested=len(entries),
        added=0,
        already_present=0,
        invalid=0,
        duplicate=0,
        failed=0,
        unknown=0,
        results=[],
    )
