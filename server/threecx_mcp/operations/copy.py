"""Copying blacklist entries from one PBX to another (`copy_blacklist_numbers`).

The source is only read: all of its blacklist, or what a search finds there (as list_blacklist_numbers
searches). What it holds becomes the input of the bulk add engine on the target, so a copy is checked,
confirmed, journaled (on the target) and undone exactly as a bulk add is: entries the target already
holds are `already_present`, an interrupted copy is accounted for per entry, and restoring its
operation removes exactly what it added.

Public API:

    source_entries(client, search) -> list[EntryInput]   # in caller ID order; at most MAX_ENTRIES
"""

from __future__ import annotations

from ..caller_ids import search_terms
from ..client import BlacklistRecord, XapiClient
from ..display import quoted
from ..errors import InvalidArgument
from .entry_lists import MAX_ENTRIES, EntryInput

_PAGE = 500


async def source_entries(client: XapiClient, search: str | None) -> list[EntryInput]:
    """The source's entries to copy, sorted by caller ID; refused when there are more than one bulk add takes."""
    search = search.strip() or None if search is not None else None
    records = await (client.scan() if search is None else _searched(client, search_terms(search)))
    if len(records) > MAX_ENTRIES:
        what = "entries" if search is None else f"entries matching {quoted(search)}"
        raise InvalidArgument(
            f"The source PBX holds more than {MAX_ENTRIES:,} {what}, more than one copy takes; copy them in "
            "parts with search (for example by country code, such as +44). Nothing was changed."
        )
    records.sort(key=lambda record: (record.caller_id, record.id))
    return [EntryInput(row, r.caller_id, r.description) for row, r in enumerate(records, start=1)]


async def _searched(client: XapiClient, terms: list[str]) -> list[BlacklistRecord]:
    """Every entry a search finds, page by page on the keyset (as list_blacklist_numbers pages), stopping
    once more than MAX_ENTRIES are found."""
    found: list[BlacklistRecord] = []
    after: tuple[str, str] | None = None
    while len(found) <= MAX_ENTRIES:
        page = await client.page(terms=terms, after=after, limit=_PAGE)
        found += page.records
        if not page.records or (page.remaining is not None and page.remaining <= len(page.records)):
            break
        after = (page.records[-1].caller_id, page.records[-1].id)
    return found
