"""Reads of many entries (lookups by key, full scans, keyset pages) against every way a PBX may page.

All over real HTTP against the sandbox on 127.0.0.1. The request counts are exact: they are the
cost a tool call pays, and a change that makes a lookup positional, unbatched or too large for
ASP.NET's node limit shows up in them.
"""

from __future__ import annotations

import math
import random
from urllib.parse import parse_qsl

import pytest
from threecx_mcp.client import XapiClient
from threecx_mcp.errors import InvalidArgument, UnexpectedResponse
from threecx_mcp.sandbox import SEED_ENTRIES, Sandbox
from threecx_mcp.sandbox.filters import compile_filter
from threecx_mcp.sandbox.pbx import PROPERTIES, RecordedRequest

pytestmark = pytest.mark.anyio
COLLECTION = "/xapi/v1/BlackListNumbers"


def reads(sandbox: Sandbox) -> list[dict[str, str]]:
    """The query options of every collection GET the sandbox received, in order."""
    return [
        dict(parse_qsl(r.query, keep_blank_values=True))
        for r in sandbox.requests
        if r.method == "GET" and r.path == COLLECTION
    ]


def fill(sandbox: Sandbox, ids: list[str]) -> None:
    sandbox.entries.clear()
    for key in ids:
        sandbox.add(f"+1555{key}", f"entry {key}", entry_id=key)


@pytest.fixture
def big(sandbox: Sandbox) -> Sandbox:
    """100,000 entries, ids '1'..'100000'."""
    fill(sandbox, [str(i) for i in range(1, 100_001)])
    return sandbox


def some_ids(n: int) -> list[str]:
    """n ids spread over '7'..'~197n': on 100,000 entries all exist up to n=507, about half at n=1,000."""
    return [str(7 + 197 * i) for i in range(n)]


# (ids asked, `in` understood) -> collection GETs. With `in`: ceil(n/100) batches, and a count first
# when more than 3 are needed (to price a full scan: 200 pages here, so batches win). Without `in`:
# one refused probe, then ceil(n/20) `or` batches, again priced by a count when more than 3.
REQUESTS = {
    (1, True): 1,
    (16, True): 1,
    (100, True): 1,
    (1_000, True): 1 + 10,
    (1, False): 1 + 1,
    (16, False): 1 + 1,
    (100, False): 1 + 1 + 5,
    (1_000, False): 1 + 1 + 50,
}


@pytest.mark.parametrize(("n", "supports_in"), sorted(REQUESTS))
async def test_find_by_ids_on_100000_entries(
    xapi: XapiClient, big: Sandbox, n: int, supports_in: bool
) -> None:
    big.supports_in = supports_in
    wanted = some_ids(n)
    found = await xapi.find_by_ids(wanted)
    assert set(found) == {k for k in wanted if k in big.entries}
    assert all(found[k].id == k and found[k].caller_id == f"+1555{k}" for k in found)
    sent = reads(big)
    assert len(sent) == REQUESTS[(n, supports_in)]
    lookups = [o["$filter"] for o in sent if "$filter" in o]
    if supports_in:
        assert all(" in (" in f and f.count("','") < 100 for f in lookups)
    else:
        assert " in (" in lookups[0] and not any(" in (" in f for f in lookups[1:])
        sizes = [compile_filter(f, frozenset(PROPERTIES)).nodes for f in lookups[1:]]
        assert max(sizes) == (99 if n >= 20 else 5 * n - 1)  # 20 clauses: 99 nodes; 21 would be refused


async def test_the_in_fallback_is_remembered(xapi: XapiClient, big: Sandbox) -> None:
    big.supports_in = False
    await xapi.find_by_ids(some_ids(16))
    big.requests.clear()
    assert len(await xapi.find_by_ids(some_ids(16))) == 16
    assert len(reads(big)) == 1


async def test_or_chains_are_halved_when_the_pbx_allows_fewer_nodes(xapi: XapiClient, big: Sandbox) -> None:
    big.supports_in, big.filter_node_limit = False, 50  # 20 clauses (99 nodes) refused, 10 (49) accepted
    assert set(await xapi.find_by_ids(some_ids(20))) == set(some_ids(20))
    assert len(reads(big)) == 1 + 1 + 2  # the `in` probe, the refused 20, two halves
    big.requests.clear()
    assert set(await xapi.find_by_ids(some_ids(30))) == set(some_ids(30))
    assert len(reads(big)) == 3  # remembered: batches of 10 from the start


async def test_a_lookup_prefers_one_scan_when_it_is_cheaper(xapi: XapiClient, sandbox: Sandbox) -> None:
    wanted = [str(i) for i in range(1, 1_001)]
    found = await xapi.find_by_ids(wanted)
    assert set(found) == set(sandbox.entries)
    sent = reads(sandbox)
    assert len(sent) == 2  # a count (12), then one page holding all 12: not 10 batches
    assert sent[0]["$top"] == "0" and sent[1]["$orderby"] == "Id"


async def test_find_by_caller_ids_matches_exactly_and_keys_by_caller_id(
    xapi: XapiClient, sandbox: Sandbox
) -> None:
    sandbox.add("anonymous", "lower case is another caller ID", entry_id="lower")
    found = await xapi.find_by_caller_ids(["Anonymous", "ANONYMOUS", "John O'Brien", "+1555"])
    assert {k: v.id for k, v in found.items()} == {"Anonymous": "5", "John O'Brien": "12"}
    assert (await xapi.find_by_caller_ids(["anonymous"]))["anonymous"].id == "lower"


async def test_no_keys_no_request(xapi: XapiClient, sandbox: Sandbox) -> None:
    assert await xapi.find_by_ids([]) == {} and await xapi.find_by_caller_ids(set()) == {}
    assert reads(sandbox) == []


async def test_a_key_longer_than_the_url_budget_goes_alone(xapi: XapiClient, sandbox: Sandbox) -> None:
    long = "x" * 5_000
    sandbox.add("+15550001", None, entry_id=long)
    found = await xapi.find_by_ids(["1", long, "2"])
    assert set(found) == {"1", long, "2"}
    # sorted: '1' and '2' in one batch, then the long one alone
    assert [len(o["$filter"]) > 5_000 for o in reads(sandbox)] == [False, True]


# -- page caps ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("next_link", "counts"), [(True, True), (False, True), (True, False), (False, False)]
)
async def test_a_page_cap_of_7_loses_nothing_in_a_batch_of_100(
    xapi: XapiClient, sandbox: Sandbox, next_link: bool, counts: bool
) -> None:
    fill(sandbox, [str(i) for i in range(1, 1_001)])
    sandbox.page_cap, sandbox.next_link, sandbox.supports_count = 7, next_link, counts
    wanted = [str(i) for i in range(1, 51)] + [f"gone-{i}" for i in range(50)]
    found = await xapi.find_by_ids(wanted)
    assert set(found) == {str(i) for i in range(1, 51)}
    # ceil(50/7) answers of found entries; with neither counts nor nextLinks the last of them may have been
    # cut silently too, so one more question learns that nothing was left.
    expected = math.ceil(50 / 7) + (0 if counts or next_link else 1)
    assert len(reads(sandbox)) == expected
    assert all(o["$top"] == str(len(o["$filter"].split("','"))) for o in reads(sandbox))  # $top = batch size


@pytest.mark.parametrize("next_link", [True, False])
async def test_a_page_cap_of_100_loses_nothing_in_scans_and_lookups(
    xapi: XapiClient, sandbox: Sandbox, next_link: bool
) -> None:
    fill(sandbox, [str(i) for i in range(1, 1_001)])
    sandbox.page_cap, sandbox.next_link = 100, next_link
    everything = await xapi.scan()
    assert sorted(r.id for r in everything) == sorted(sandbox.entries)
    assert len(reads(sandbox)) == 10  # the last page holds all that its count announced: no empty page
    assert xapi.page_cap == 100
    sandbox.requests.clear()
    found = await xapi.find_by_ids(list(sandbox.entries))
    assert set(found) == set(sandbox.entries)
    # A count, then 10 batches of 100: a scan would cost 10 as well, and a tie keeps the lookup by key.
    assert len(reads(sandbox)) == 1 + 10


@pytest.mark.parametrize("next_link", [True, False])
async def test_without_counts_a_scan_ends_on_an_empty_page_never_on_a_short_one(
    xapi: XapiClient, sandbox: Sandbox, next_link: bool
) -> None:
    fill(sandbox, [str(i) for i in range(1, 1_001)])
    sandbox.page_cap, sandbox.next_link, sandbox.supports_count = 100, next_link, False
    assert len(await xapi.scan()) == 1_000
    # A PBX that announces the rest by nextLink ends where it stops announcing; a silent one needs an empty page.
    assert len(reads(sandbox)) == (10 if next_link else 11)
    assert await xapi.count() is None
    page = await xapi.page(terms=[], after=None, limit=5)
    assert page.remaining is None and len(page.records) == 5


async def test_a_pbx_ignoring_skip_cannot_make_a_scan_loop(xapi: XapiClient, sandbox: Sandbox) -> None:
    fill(sandbox, [str(i) for i in range(1, 1_001)])
    sandbox.page_cap, sandbox.ignore_skip = 100, True  # its own nextLinks would repeat page 1 forever
    assert len(await xapi.scan()) == 1_000
    assert len(reads(sandbox)) == 10
    assert not any("$skip" in o for o in reads(sandbox))


# -- lying servers and concurrent editors ---------------------------------------------------


async def test_a_pbx_ignoring_the_keyset_filter_stops_the_scan_clearly(
    xapi: XapiClient, sandbox: Sandbox
) -> None:
    fill(sandbox, [str(i) for i in range(1, 1_001)])
    sandbox.ignore_filter = True
    with pytest.raises(UnexpectedResponse, match="a second time") as caught:
        await xapi.scan()
    assert len(reads(sandbox)) == 2
    message = caught.value.user_message()
    assert "ignored the filter" in message and "THREECX_URL" in message


async def test_a_pbx_ignoring_the_filter_cannot_pass_other_entries_off_as_lookup_results(
    xapi: XapiClient, sandbox: Sandbox
) -> None:
    sandbox.ignore_filter = True
    with pytest.raises(UnexpectedResponse, match="cannot be told"):
        await xapi.find_by_ids(["5", "1"])  # it answers '1', '2', ... whatever is asked
    assert len(reads(sandbox)) <= 3


async def test_a_pbx_that_never_stops_sending_new_pages_is_cut_off(
    xapi: XapiClient, sandbox: Sandbox
) -> None:
    fill(sandbox, ["1", "2", "3"])
    sandbox.page_cap = 1

    def grow(request: RecordedRequest) -> None:
        if request.method == "GET":
            sandbox.add("+1", None, entry_id=f"z{len(sandbox.requests):06d}")

    sandbox.hooks.append(grow)
    with pytest.raises(UnexpectedResponse, match="kept sending new pages"):
        await xapi.scan()
    assert len(reads(sandbox)) == 4 + 10  # the count of its first answer (3 and one grown), plus slack


async def test_a_scan_misses_nothing_while_others_delete(xapi: XapiClient, sandbox: Sandbox) -> None:
    fill(sandbox, [f"{i:04d}" for i in range(1, 1_001)])
    sandbox.page_cap = 100
    behind, ahead = [f"{i:04d}" for i in range(1, 26)], [f"{i:04d}" for i in range(500, 525)]

    def delete_after_two_pages(request: RecordedRequest) -> None:
        if len(reads(sandbox)) == 3:
            for key in behind + ahead:
                del sandbox.entries[key]

    sandbox.hooks.append(delete_after_two_pages)
    scanned = {r.id for r in await xapi.scan()}
    assert set(sandbox.entries) <= scanned  # an offset would have skipped 25 of these
    assert scanned.isdisjoint(ahead) and set(behind) <= scanned


async def test_a_scan_orders_by_id_so_the_keyset_holds(xapi: XapiClient, sandbox: Sandbox) -> None:
    """The sandbox answers unordered queries in insertion order; '10' is inserted after '9'."""
    ids = [str(i) for i in range(1, 1_201)]
    random.Random(9).shuffle(ids)
    fill(sandbox, ids)
    scanned = [r.id for r in await xapi.scan()]
    assert scanned == sorted(ids)
    assert len(reads(sandbox)) == 3


# -- keyset pages ---------------------------------------------------------------------------


async def test_paging_while_deleting_each_page_skips_nothing(xapi: XapiClient, sandbox: Sandbox) -> None:
    for i in range(130):
        sandbox.add(f"+4930{i:05d}", f"Spam wave {i}")
    seen: list[str] = []
    remaining: list[int | None] = []
    after = None
    while True:
        page = await xapi.page(terms=["spam wave"], after=after, limit=50)
        remaining.append(page.remaining)
        seen += [r.caller_id for r in page.records]
        await xapi.bulk_delete_blacklist_numbers([r.id for r in page.records])
        if page.remaining is None or page.remaining <= len(page.records):
            break
        after = (page.records[-1].caller_id, page.records[-1].id)
    assert seen == [f"+4930{i:05d}" for i in range(130)]
    assert remaining == [130, 80, 30]


async def test_pages_break_caller_id_ties_by_id(xapi: XapiClient, sandbox: Sandbox) -> None:
    for key in ("e", "d", "c", "b", "a"):  # inserted against the order a page must show
        sandbox.add("Same caller", None, entry_id=key)
    pages, after = [], None
    while True:
        page = await xapi.page(terms=["same"], after=after, limit=2)
        pages.append([r.id for r in page.records])
        if not page.remaining or page.remaining <= len(page.records):
            break
        after = (page.records[-1].caller_id, page.records[-1].id)
    assert pages == [["a", "b"], ["c", "d"], ["e"]]


@pytest.mark.parametrize(
    ("terms", "caller_ids"),
    [
        (["ABC"], ["+1", "AbC-caller"]),  # CallerId or Description, either case
        (["abc", "energy"], ["+1", "+442071838750", "AbC-caller"]),  # any term
        (["o'brien"], ["John O'Brien"]),
        (["100%"], ["+2"]),  # a percent sign is a character, not an escape
        (["*"], ["*eremy"]),  # an asterisk is a character, not 3CX's wildcard
        (["') or true or ('"], ["+3"]),
        (["x' or CallerId ne '"], []),
    ],
)
async def test_search_terms_match_literally_and_ignore_case(
    xapi: XapiClient, sandbox: Sandbox, terms: list[str], caller_ids: list[str]
) -> None:
    sandbox.add("AbC-caller", None)
    sandbox.add("+1", "Has aBc inside")
    sandbox.add("+2", "100% spam")
    sandbox.add("+4", "1000 calls")
    sandbox.add("+3", "') or true or ('")
    page = await xapi.page(terms=terms, after=None, limit=50)
    assert [r.caller_id for r in page.records] == caller_ids
    assert page.remaining == len(caller_ids)


async def test_a_search_too_big_for_the_node_limit_is_refused_before_sending(
    xapi: XapiClient, sandbox: Sandbox
) -> None:
    seven = [f"w{i}" for i in range(7)]
    first = await xapi.page(terms=seven, after=None, limit=1)
    await xapi.page(terms=seven, after=("+1", "1"), limit=1)  # 98 nodes with the keyset: the PBX takes it
    assert first.remaining == 0
    sandbox.requests.clear()
    with pytest.raises(InvalidArgument, match="8 words") as caught:
        await xapi.page(terms=[*seven, "w7"], after=None, limit=1)
    assert "fewer words" in caught.value.user_message()
    assert reads(sandbox) == []


async def test_the_seeded_blacklist_pages_in_caller_id_order(xapi: XapiClient, sandbox: Sandbox) -> None:
    shown: list[str] = []
    after = None
    for _ in range(5):
        page = await xapi.page(terms=[], after=after, limit=5)
        shown += [r.caller_id for r in page.records]
        if page.remaining is not None and page.remaining <= len(page.records):
            break
        after = (page.records[-1].caller_id, page.records[-1].id)
    assert shown == sorted(c for c, _ in SEED_ENTRIES)
