"""`threecx-mcp doctor --probe`: ask the real PBX what the XAPI contract leaves open.

The published contract does not say whether a PBX caps its pages or sends nextLinks, how large a
`$filter` may be, whether it understands `in`, `contains` and `tolower`, how it stores a cleared
description, or what a bulk delete naming an unknown id does. The server is built to survive every
answer (the sandbox plays each), but an administrator should know which one their PBX gives, and a
broken assumption should show up here rather than in a tool call. So the probe tries each on one
marker entry of its own and says per finding what the PBX did: PASS (as the server assumes), NOTE
(different, and handled; what it costs) or FAIL (an assumption breaks; what to do).

It writes through the same operations as the tools, so the journal records the probe's update and
delete like any other (`threecx-mcp journal list` shows them), and it removes its marker whatever
fails on the way, cancellation included.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

import anyio

from . import odata
from .client import NODE_LIMIT, XapiClient
from .display import quoted
from .doctor import Finding, Verdict
from .errors import Conflict, InvalidRequest, NotFound, ThreeCXMcpError
from .journal import Journal
from .operations import bulk_delete, entries

MARKER_PREFIX = "threecx-mcp-probe-"
_PAGE_ASKED = 1_000
_CLEANUP_SECONDS = 60.0
_ASPNET_OR_CHAIN = odata.max_or_chain(odata.eq("Id", ""), NODE_LIMIT)  # 20 `Id eq` clauses: 99 nodes


@dataclass
class _Probe:
    client: XapiClient
    journal: Journal
    token: str  # random hex that makes the marker, and everything else the probe names, unique
    entry_id: str | None = None  # the marker entry's id, once the PBX has created it
    stored_as: str | None = None  # the caller ID the PBX gave it (the marker, unless the PBX changed it)

    @property
    def marker(self) -> str:
        return MARKER_PREFIX + self.token

    @property
    def mixed_case(self) -> str:
        """Upper-case text only the marker's first description holds: finding it by its lower-case
        form proves the PBX applies `tolower`, since the caller ID cannot match it."""
        return f"CASE{self.token.upper()}"

    @property
    def created_id(self) -> str:
        if self.entry_id is None:  # the runner runs no step that needs it before `create` succeeded
            raise RuntimeError("the marker entry was not created")
        return self.entry_id

    def absent_ids(self, count: int) -> list[str]:
        """Ids that exist on no PBX, shaped like the PBX's own (a numeric-looking id stays numeric)."""
        if self.created_id.isdigit():
            return [str(2_000_000_000 + number) for number in range(count)]
        return [f"{MARKER_PREFIX}absent-{self.token}-{number}" for number in range(count)]


async def run_probe(client: XapiClient, journal: Journal, token: str | None = None) -> list[Finding]:
    """Every step in order, then the marker's removal; a failed step is a FAIL finding, not the end.

    Only a failed `create` ends the steps early, since the rest need the marker.
    """
    probe = _Probe(client, journal, token or secrets.token_hex(6))
    findings: list[Finding] = []
    try:
        for name, step in _STEPS:
            try:
                findings.append(await step(probe))
            except ThreeCXMcpError as exc:
                findings.append(Finding(name, "FAIL", exc.user_message()))
            if probe.entry_id is None:
                break
    finally:
        with anyio.CancelScope(shield=True):
            findings.append(await remove_marker(probe))
    return findings


# -- the steps, one per finding ---------------------------------------------------------------


async def create(probe: _Probe) -> Finding:
    description = f"threecx-mcp doctor --probe {probe.mixed_case}: safe to delete"
    added = await entries.add_entry(probe.client, probe.marker, description)
    entry_id = probe.entry_id = added.entry.id
    probe.stored_as = added.entry.caller_id
    if added.entry.caller_id != probe.marker:
        return Finding(
            "create",
            "FAIL",
            f"the PBX stored caller ID {quoted(probe.marker)} as {quoted(added.entry.caller_id)}: it changes "
            "caller IDs, so lookups by caller ID (duplicate checks) will miss entries. Report this PBX version.",
        )
    shape = "digits only" if entry_id.isdigit() else "not a number: keep treating ids as strings"
    return Finding(
        "create", "PASS", f"created the marker entry, id {quoted(entry_id)} ({shape}); the PBX returned it"
    )


async def read(probe: _Probe) -> Finding:
    record = await probe.client.get_blacklist_number(probe.created_id)
    if record.id != probe.created_id or record.caller_id != probe.marker:
        return Finding(
            "read",
            "FAIL",
            f"asking for id {quoted(probe.created_id)} returned entry {quoted(record.id)} with caller ID "
            f"{quoted(record.caller_id)}: the PBX does not address entries by their quoted string key. "
            "Report this PBX version; do not use the write tools on it.",
        )
    return Finding("read", "PASS", f"BlackListNumbers({odata.string_literal(record.id)}) returns the entry")


async def search(probe: _Probe) -> Finding:
    """`contains(tolower(P),'x')`: what list_blacklist_numbers' search sends."""
    try:
        page = await probe.client.page(terms=[probe.mixed_case.lower()], after=None, limit=10)
    except InvalidRequest as exc:
        return Finding(
            "search",
            "FAIL",
            f"the PBX refuses contains/tolower in $filter ({exc.user_message()}). Searching with "
            "list_blacklist_numbers will fail on it; listing without a search still works.",
        )
    if [r.id for r in page.records] == [probe.created_id]:
        return Finding(
            "search", "PASS", "contains(tolower(Description),'…') found the marker by its upper-case note"
        )
    plain = await probe.client.page(terms=[probe.token], after=None, limit=10)  # contains alone
    without = "contains works but tolower does not" if plain.records else "contains finds nothing"
    return Finding(
        "search",
        "FAIL",
        f"a search for the marker's note in lower case found {len(page.records)} entries ({without}): "
        "list_blacklist_numbers' search misses entries on this PBX. Search with the exact case instead.",
    )


async def lookup_in(probe: _Probe) -> Finding:
    """`Id in ('a','b')`: how the server looks up many ids at once (1 node, 100 ids a request)."""
    absent = probe.absent_ids(1)
    found = await probe.client.find_by_ids([probe.created_id, *absent])
    if missed := _missed_marker("in", probe, found, len(absent)):
        return missed
    if probe.client.uses_in:
        return Finding("in", "PASS", "the PBX understands `Id in (…)`: ids are looked up 100 per request")
    return Finding(
        "in",
        "NOTE",
        f"the PBX refuses `in` (OData 4.01); this server looks ids up with `or` chains of "
        f"{probe.client.or_batch} instead, which finds the same entries with more requests.",
    )


async def filter_size(probe: _Probe) -> Finding:
    """An `or` chain of 20 `Id eq` clauses, 99 nodes: just within ASP.NET's default MaxNodeCount of 100."""
    absent = probe.absent_ids(_ASPNET_OR_CHAIN - 1)
    uses_in, probe.client.uses_in = probe.client.uses_in, False  # the `or` chains, even where `in` works
    try:
        found = await probe.client.find_by_ids([probe.created_id, *absent])
    finally:
        probe.client.uses_in = uses_in
    if missed := _missed_marker("filter size", probe, found, len(absent)):
        return missed
    if probe.client.or_batch >= _ASPNET_OR_CHAIN:
        return Finding(
            "filter size",
            "PASS",
            f"a $filter of {_ASPNET_OR_CHAIN} `or`ed comparisons (99 nodes) is accepted, as with ASP.NET's "
            "default limit of 100 nodes that lookups and searches are sized for",
        )
    nodes = odata.any_of([odata.eq("Id", "")] * probe.client.or_batch).nodes
    return Finding(
        "filter size",
        "NOTE",
        f"the PBX allows fewer $filter nodes than ASP.NET's default of 100: {probe.client.or_batch} `or`ed "
        f"comparisons ({nodes} nodes) passed, more were refused. Lookups adapt (more requests); a search for "
        "several words at once may be refused, so search for one word at a time.",
    )


async def paging(probe: _Probe) -> Finding:
    """`$top=1000`: does the PBX cap its pages, and does it announce the rest by nextLink?"""
    page = await probe.client.page(terms=[], after=None, limit=_PAGE_ASKED)
    shown, total = len(page.records), page.remaining
    if total is None:
        total = len(await probe.client.scan())  # no count: only reading on shows a silent cap
    if shown >= min(_PAGE_ASKED, total):
        return Finding(
            "paging",
            "PASS",
            f"$top={_PAGE_ASKED} returned {shown} of {total} entries: no page cap below {shown} "
            "(a larger blacklist could still show one; paging holds either way)",
        )
    announced = (
        "announces the rest by @odata.nextLink"
        if probe.client.next_links
        else "says nothing about the rest (no nextLink)"
    )
    return Finding(
        "paging",
        "NOTE",
        f"$top={_PAGE_ASKED} returned {shown} of {total} entries: the PBX caps pages at {shown} and {announced}. "
        "Handled: scans go on by keyset until the end, so nothing is lost; they take more requests.",
    )


async def count(probe: _Probe) -> Finding:
    total = await probe.client.count()
    if total is None:
        return Finding(
            "count",
            "NOTE",
            "the PBX sends no @odata.count: list totals show as unknown, and a scan ends only at an empty page",
        )
    return Finding("count", "PASS", f"$count=true answers with @odata.count ({total} entries)")


async def patch(probe: _Probe) -> Finding:
    text = f"threecx-mcp doctor --probe {probe.token}: patched"
    result = await entries.update_entry(probe.client, probe.journal, probe.created_id, None, text)
    stored = (await probe.client.get_blacklist_number(probe.created_id)).description
    if stored != text:
        return Finding(
            "patch",
            "FAIL",
            f"after a PATCH of the description the PBX holds {quoted(stored)}: updates do not apply on this "
            "PBX. Report this PBX version; do not rely on update_blacklist_number.",
        )
    return Finding(
        "patch", "PASS", f"PATCH (answered 204) changed the description; journaled as {result.operation_id}"
    )


async def clear(probe: _Probe) -> Finding:
    """description="" is how a user clears a note: the PBX must not keep the old one."""
    result = await entries.update_entry(probe.client, probe.journal, probe.created_id, None, "")
    stored = (await probe.client.get_blacklist_number(probe.created_id)).description
    if stored:
        return Finding(
            "clear",
            "FAIL",
            f'after a PATCH with Description "" the PBX still holds {quoted(stored)}: clearing a note does not '
            'work on this PBX. Set a placeholder such as "-" instead.',
        )
    kept = "null" if stored is None else 'an empty string ""'
    return Finding(
        "clear",
        "PASS",
        f'Description "" cleared the note (stored as {kept}); journaled as {result.operation_id}',
    )


async def delete(probe: _Probe) -> Finding:
    """How the bulk delete action treats an unknown id, then the marker's own journaled delete."""
    (missing,) = probe.absent_ids(1)
    if await probe.client.find_by_ids([missing]):  # someone's real entry: never sent, never deleted
        return Finding(
            "bulk delete",
            "NOTE",
            f"id {quoted(missing)} exists on this PBX, so sending an unknown id was skipped; the cleanup "
            "removes the marker",
        )
    verdict, unknown = await _bulk_delete_unknown(probe, missing)
    result = await bulk_delete.bulk_delete(
        probe.client, probe.journal, [probe.created_id, missing], dry_run=False
    )
    statuses = {outcome.id: outcome.status for outcome in result.results}
    if statuses.get(probe.created_id) != "deleted" or statuses.get(missing) != "not_found":
        return Finding(
            "bulk delete",
            "FAIL",
            f"{unknown}; deleting the marker with an unknown id: {result.summary} "
            f"(journaled as {result.operation_id}).",
        )
    return Finding(
        "bulk delete",
        verdict,
        f"{unknown}; the marker deleted with an unknown id beside it was reported deleted and the unknown "
        f"id not_found, by looking both up (journaled as {result.operation_id})",
    )


async def _bulk_delete_unknown(probe: _Probe, missing: str) -> tuple[Verdict, str]:
    """The action with only an id that exists nowhere: nothing can change, so nothing is journaled."""
    try:
        await probe.client.bulk_delete_blacklist_numbers([missing])
    except (InvalidRequest, NotFound, Conflict) as exc:
        return "NOTE", (
            f"a bulk delete naming only an unknown id is refused ({exc.user_message()}); this server sends "
            "only ids it has just found, and one deleted by someone else meanwhile is reported failed, "
            "not deleted"
        )
    return "PASS", "a bulk delete naming only an unknown id is answered with success and ignored"


def _missed_marker(step: str, probe: _Probe, found: Mapping[str, object], others: int) -> Finding | None:
    """A lookup must find the marker (the client itself refuses answers holding ids not asked for)."""
    if probe.created_id in found:
        return None
    return Finding(
        step,
        "FAIL",
        f"looking up the marker's id beside {others} other id(s) did not find it: the PBX does not filter "
        "by id as OData says, so deletes would be misreported. Do not use the write tools on it.",
    )


_STEPS: tuple[tuple[str, Callable[[_Probe], Awaitable[Finding]]], ...] = (
    ("create", create),
    ("read", read),
    ("search", search),
    ("in", lookup_in),
    ("filter size", filter_size),
    ("paging", paging),
    ("count", count),
    ("patch", patch),
    ("clear", clear),
    ("bulk delete", delete),
)


# -- cleanup ------------------------------------------------------------------------------------


async def remove_marker(probe: _Probe) -> Finding:
    """Make sure no marker entry is left, whatever happened: looked up by caller ID too, since a create
    whose answer was lost may have been applied without telling its id."""
    by_hand = (
        f"Delete the entry with caller ID {quoted(probe.marker)} in the 3CX console (Blacklist), or with "
        "bulk_delete_blacklist_numbers."
    )
    with anyio.move_on_after(_CLEANUP_SECONDS):
        try:
            left = await _marker_entries(probe)
            if not left:
                return Finding("cleanup", "PASS", "no marker entry is left on the PBX")
            result = await bulk_delete.bulk_delete(probe.client, probe.journal, left, dry_run=False)
            if still := await _marker_entries(probe):
                return Finding(
                    "cleanup",
                    "FAIL",
                    f"marker entry id(s) {', '.join(quoted(i) for i in still)} could not be removed "
                    f"({result.summary}). {by_hand}",
                )
            return Finding(
                "cleanup",
                "PASS",
                f"removed the marker entry an earlier step left (journaled as {result.operation_id})",
            )
        except ThreeCXMcpError as exc:  # the PBX, or the journal refusing the delete's record
            return Finding(
                "cleanup",
                "FAIL",
                f"whether the marker entry is gone cannot be told: {exc.user_message()} {by_hand}",
            )
    return Finding(
        "cleanup",
        "FAIL",
        f"removing the marker entry took over {_CLEANUP_SECONDS:.0f} s and was abandoned. {by_hand}",
    )


async def _marker_entries(probe: _Probe) -> list[str]:
    """Entries holding the marker, and the created entry while it still holds what the PBX stored: an
    id alone is not enough, since a PBX that reuses ids could have given it to someone else's entry."""
    ids = {r.id for r in (await probe.client.find_by_caller_ids([probe.marker])).values()}
    if probe.entry_id is not None:
        created = (await probe.client.find_by_ids([probe.entry_id])).get(probe.entry_id)
        if created is not None and created.caller_id == probe.stored_as:
            ids.add(created.id)
    return sorted(ids)
