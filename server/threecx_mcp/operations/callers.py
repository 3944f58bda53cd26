"""Which entries block a caller, and who has been calling: 3CX's blacklist matching, applied here.

3CX compares an incoming caller ID with each entry exactly, case included, and `*` in an entry
matches any run of characters, anywhere and any number of times. No XAPI call answers "would this
caller be blocked?", so the answer is computed from the entries, without reading the whole
blacklist: the exact entry by a lookup of the caller ID itself, and the patterns by reading only
the entries that hold a `*` (a search the PBX runs; a PBX that refuses it gets a full scan).

The call log comes from `ReportCallLogData/Pbx.GetCallLogData`, whose rows are call segments: the
rows of one call share its `MainCallHistoryId`, and the call is inbound when its first row says so.
It is read newest first and at most `MAX_RECORDS` records, so the answer stays bounded on a busy PBX.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from ..caller_ids import check_caller_id
from ..client import BlacklistRecord, XapiClient
from ..display import quoted
from ..errors import InvalidRequest, NotFound, PbxError, UnexpectedResponse
from ..models import (
    MAX_LISTED_RESULTS,
    BlacklistEntry,
    BlockingEntry,
    CallerCheckResult,
    RecentCaller,
    RecentCallersResult,
)

log = logging.getLogger(__name__)

MAX_RECORDS = 10_000  # call log records read per call of list_recent_callers
_PAGE = 500
_PATTERN_PAGE = 500
_MAX_PATTERN_PAGES = 1_000  # 500,000 pattern entries: beyond any real blacklist, so a lying PBX ends
_NEEDS_UPDATE = (
    "This PBX has no call log function (ReportCallLogData/Pbx.GetCallLogData): list_recent_callers needs "
    "3CX V20 Update 6 or later."
)
_UPDATE_HINT = (
    "Update the PBX (3CX admin console: Updates) to use it; check_caller_id and the blacklist tools work "
    "without it."
)
# What ASP.NET OData says, with a 400, for a function segment it does not know.
_UNKNOWN_FUNCTION = ("not found", "no function", "could not find", "unknown function", "segment")


def wildcard_match(pattern: str, text: str) -> bool:
    """Whether `text` matches `pattern` as 3CX matches a blacklist entry: exactly, `*` any run of characters.

    Leftmost matching of the pieces between the `*`s is exact for this kind of pattern and takes
    linear time; a regular expression would backtrack for ages on `*a*a*a*a*b` and a long caller ID.
    """
    pieces = pattern.split("*")
    if len(pieces) == 1:
        return pattern == text
    first, *middle, last = pieces
    end = len(text) - len(last)
    if end < len(first) or not text.startswith(first) or not text.endswith(last):
        return False
    position = len(first)
    for piece in middle:
        found = text.find(piece, position, end)
        if found < 0:
            return False
        position = found + len(piece)
    return True


@dataclass(frozen=True)
class Blocklist:
    """The entries that matter for some caller IDs: those equal to one of them, and every pattern."""

    exact: Mapping[str, BlacklistRecord]
    patterns: Sequence[BlacklistRecord]

    def blockers(self, caller_id: str) -> list[BlockingEntry]:
        """Every entry that blocks `caller_id`: the exact one first, then the patterns by caller ID."""
        found: list[BlockingEntry] = []
        exact = self.exact.get(caller_id)
        if exact is not None:
            found.append(BlockingEntry(entry=BlacklistEntry.of(exact), match="exact"))
        for record in sorted(self.patterns, key=lambda r: (r.caller_id, r.id)):
            if (exact is None or record.id != exact.id) and wildcard_match(record.caller_id, caller_id):
                found.append(BlockingEntry(entry=BlacklistEntry.of(record), match="pattern"))
        return found


async def blocklist_for(client: XapiClient, caller_ids: Iterable[str]) -> Blocklist:
    """What decides whether these caller IDs are blocked: one batched lookup, one read of the patterns."""
    wanted = {c for c in caller_ids if c}
    patterns = await pattern_entries(client)
    return Blocklist(await client.find_by_caller_ids(wanted) if wanted else {}, patterns)


async def pattern_entries(client: XapiClient) -> list[BlacklistRecord]:
    """Every entry whose caller ID holds a `*`, by a search for `*` on the PBX, page by page.

    The search also finds entries with a `*` in their description only; they are dropped here. A
    PBX that refuses the search (a 400: no `contains` or `tolower`) is read whole instead.
    """
    try:
        records = await _search_stars(client)
    except InvalidRequest as exc:
        if exc.status != 400:
            raise
        log.info("The PBX refused a search for '*'; reading the whole blacklist for its patterns.")
        records = await client.scan()
    return [r for r in records if "*" in r.caller_id]


async def _search_stars(client: XapiClient) -> list[BlacklistRecord]:
    found: list[BlacklistRecord] = []
    after: tuple[str, str] | None = None
    for _ in range(_MAX_PATTERN_PAGES):
        page = await client.page(terms=["*"], after=after, limit=_PATTERN_PAGE)
        found += page.records
        # With a count, it says whether more remain even when the PBX caps its pages; without one,
        # only an empty page ends the search (a short page may be the PBX's own cap).
        more = page.remaining > len(page.records) if page.remaining is not None else bool(page.records)
        if not more or not page.records:
            return found
        after = (page.records[-1].caller_id, page.records[-1].id)
    raise UnexpectedResponse(
        f"The PBX kept sending entries with a * ({len(found)} so far) without announcing the end of them."
    )


async def check_caller(client: XapiClient, text: str) -> CallerCheckResult:
    """Which entries would block this caller, after the same normalisation (and refusals) as add."""
    checked = check_caller_id(text)
    blockers = (await blocklist_for(client, [checked.value])).blockers(checked.value)
    shown = blockers[:MAX_LISTED_RESULTS]
    if not blockers:
        summary = f"Not blocked: no blacklist entry matches {quoted(checked.value)}."
    else:
        listed = ", ".join(
            f"{quoted(b.entry.caller_id, 40)} (id {quoted(b.entry.id, 20)}, {b.match})" for b in shown[:10]
        )
        more = f" and {len(blockers) - 10} more" if len(blockers) > 10 else ""
        count = f"{len(blockers)} entr{'y' if len(blockers) == 1 else 'ies'}"
        summary = f"Blocked by {count}: {listed}{more}."
    return CallerCheckResult(
        caller_id=checked.value,
        blocked=bool(blockers),
        blocked_by=shown,
        omitted=len(blockers) - len(shown),
        summary=summary,
        notes=checked.notes,
    )


# -- the call log -----------------------------------------------------------------------------


@dataclass
class _Call:
    """One call: the rows sharing its call history id, seen through its first row."""

    started: datetime | None
    caller_id: str
    name: str | None
    inbound: bool
    answered: bool
    indent: int


@dataclass
class _Caller:
    caller_id: str
    name: str | None = None
    calls: int = 0
    answered: int = 0
    times: list[datetime] = field(default_factory=list)
    latest: datetime | None = None


def _text(row: Mapping[str, Any], name: str) -> str | None:
    value = row.get(name)
    return value if isinstance(value, str) else None


def _time(row: Mapping[str, Any]) -> datetime | None:
    text = _text(row, "StartTime")
    if text is None:
        return None
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return None
    return when.astimezone(UTC) if when.tzinfo else when.replace(tzinfo=UTC)


def _indent(row: Mapping[str, Any]) -> int:
    value = row.get("Indent")
    return value if type(value) is int else 0


def _is_inbound(row: Mapping[str, Any]) -> bool:
    direction = (_text(row, "Direction") or "").lower()
    return "inbound" in direction or "incoming" in direction


def calls_of(rows: Iterable[Mapping[str, Any]]) -> list[_Call]:
    """Rows grouped into calls by `MainCallHistoryId` (else `CallHistoryId`); a row without either
    stands alone. A call's first row (lowest indent, then earliest) says who called and how."""
    calls: dict[str, _Call] = {}
    alone: list[_Call] = []
    for row in rows:
        started = _time(row)
        call = _Call(
            started=started,
            caller_id=_text(row, "SourceCallerId") or "",
            name=_text(row, "SourceDisplayName") or None,
            inbound=_is_inbound(row),
            answered=row.get("Answered") is True,
            indent=_indent(row),
        )
        key = _text(row, "MainCallHistoryId") or _text(row, "CallHistoryId")
        if not key:
            alone.append(call)
            continue
        known = calls.get(key)
        if known is None:
            calls[key] = call
            continue
        answered = known.answered or call.answered
        if _first(call, known):
            calls[key] = call
        calls[key].answered = answered
    return [*calls.values(), *alone]


def _first(row: _Call, than: _Call) -> bool:
    if row.indent != than.indent:
        return row.indent < than.indent
    return row.started is not None and (than.started is None or row.started < than.started)


async def read_call_log(
    client: XapiClient, period_from: datetime, period_to: datetime
) -> tuple[list[dict[str, Any]], bool]:
    """The period's call log records, newest first, at most MAX_RECORDS, and whether more were left out.

    Pages go by `$skip`. A call that ends while the pages are read enters the period and shifts
    the later pages by one, so a record seen before (same `CdrId`) is skipped; a page bringing
    nothing new means the PBX ignores `$skip`, and reading stops instead of counting calls twice.
    """
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    skip = 0
    while True:
        # One record more than the bound, so that a cut is known without a count.
        top = min(_PAGE, MAX_RECORDS + 1 - len(rows))
        try:
            page, total = await client.call_log(period_from, period_to, top=top, skip=skip)
        except NotFound:
            raise PbxError(_NEEDS_UPDATE, status=404, hint=_UPDATE_HINT) from None
        except InvalidRequest as exc:
            said = " ".join(filter(None, [exc.pbx_message, *(d.message for d in exc.details)])).lower()
            if exc.status == 400 and any(words in said for words in _UNKNOWN_FUNCTION):
                raise PbxError(_NEEDS_UPDATE, status=400, hint=_UPDATE_HINT) from None
            raise
        if not page:
            return rows, False
        skip += len(page)
        new = [row for row in page if (cdr := _text(row, "CdrId")) is None or cdr not in seen]
        if not new:
            raise UnexpectedResponse(
                f"While reading the call log the PBX sent the same records again (at record {skip - len(page)}): "
                "it ignores $skip, so the calls cannot be counted."
            )
        seen.update(cdr for row in new if (cdr := _text(row, "CdrId")) is not None)
        rows += new
        if len(rows) > MAX_RECORDS:
            return rows[:MAX_RECORDS], True
        if total is not None and skip >= total:
            return rows, False


def _iso(when: datetime | None) -> str | None:
    return None if when is None else when.strftime("%Y-%m-%dT%H:%M:%SZ")


async def recent_callers(
    client: XapiClient, hours: int, min_calls: int, limit: int, *, now: datetime | None = None
) -> RecentCallersResult:
    """Inbound callers of the last `hours`, most calls first, each with whether (and by what) it is blocked."""
    period_to = (now or datetime.now(UTC)).replace(microsecond=0)
    period_from = period_to - timedelta(hours=hours)
    rows, truncated = await read_call_log(client, period_from, period_to)
    inbound = [c for c in calls_of(rows) if c.inbound]
    callers: dict[str, _Caller] = {}
    for call in inbound:
        caller = callers.setdefault(call.caller_id, _Caller(call.caller_id))
        caller.calls += 1
        caller.answered += call.answered
        if call.started is not None:
            caller.times.append(call.started)
        if call.name and (
            caller.latest is None or (call.started is not None and call.started >= caller.latest)
        ):
            caller.name, caller.latest = call.name, call.started
    frequent = sorted(
        (c for c in callers.values() if c.calls >= min_calls),
        key=lambda c: (-c.calls, -max(c.times, default=period_from).timestamp(), c.caller_id),
    )
    shown = frequent[:limit]
    blocklist = await blocklist_for(client, [v for c in shown for v in (c.caller_id, c.name) if v])
    listed = [_recent(c, blocklist) for c in shown]
    return RecentCallersResult(
        period_from=_iso(period_from) or "",
        period_to=_iso(period_to) or "",
        records_read=len(rows),
        inbound_calls=len(inbound),
        callers_total=len(frequent),
        callers=listed,
        truncated=truncated,
        summary=_summary(hours, min_calls, len(inbound), len(frequent), listed, truncated),
    )


def _recent(caller: _Caller, blocklist: Blocklist) -> RecentCaller:
    blocked_on: Literal["caller_id", "name"] | None = None
    blocked_by: BlacklistEntry | None = None
    candidates: list[tuple[Literal["caller_id", "name"], str | None]] = [
        ("caller_id", caller.caller_id),
        ("name", caller.name),
    ]
    for on, value in candidates:
        blockers = blocklist.blockers(value) if value else []
        if blockers:
            blocked_by, blocked_on = blockers[0].entry, on
            break
    return RecentCaller(
        caller_id=caller.caller_id,
        name=caller.name,
        calls=caller.calls,
        answered=caller.answered,
        unanswered=caller.calls - caller.answered,
        first_call=_iso(min(caller.times, default=None)),
        last_call=_iso(max(caller.times, default=None)),
        blocked_by=blocked_by,
        blocked_on=blocked_on,
    )


def _summary(
    hours: int, min_calls: int, inbound: int, total: int, shown: list[RecentCaller], truncated: bool
) -> str:
    at_least = f" with at least {min_calls} calls" if min_calls > 1 else ""
    text = f"{inbound} inbound calls in the last {hours} hours from {total} callers{at_least}"
    text += f"; the {len(shown)} most frequent are listed." if len(shown) < total else "."
    blocked = sum(1 for c in shown if c.blocked_by is not None)
    if shown:
        text += f" {blocked} of those listed are blocked already."
    if truncated:
        text += (
            f" The call log held more than {MAX_RECORDS} records in this period: only the newest "
            f"{MAX_RECORDS} were read; ask for fewer hours to see them all."
        )
    return text
