"""The one shared client for 3CX XAPI: auth, retries, and the BlackListNumbers calls and lookups.

Every read of many entries is built here, so the rest of the package never writes OData and
never depends on how a given PBX pages: lookups go by key (never by position), full scans go
by keyset on `Id`, and answers are checked for truncation and for progress, because the
PBX's page cap, nextLinks and `$filter` limits are unknown and must not change a result.
"""

from __future__ import annotations

import functools
import inspect
import logging
import math
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, Self, TypeVar
from urllib.parse import quote

import anyio
import httpx2
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from . import __version__, odata
from .auth import ClientCredentialsAuth
from .config import Connection, PbxEndpoint
from .display import quoted
from .errors import (
    InvalidArgument,
    InvalidRequest,
    PbxError,
    RateLimited,
    TlsError,
    UnexpectedResponse,
)
from .http_errors import (
    TRANSIENT_STATUSES,
    error_from_response,
    error_from_transport,
    parse_retry_after,
    unexpected_body,
)
from .token_store import TokenFile

_C = TypeVar("_C")

log = logging.getLogger(__name__)

BLACKLIST = "BlackListNumbers"
BULK_DELETE_ACTION = f"{BLACKLIST}/Pbx.BulkNumbersDelete"

NODE_LIMIT = 100  # ASP.NET Core OData's default MaxNodeCount for $filter; 3CX XAPI is built on it
_IN_BATCH = 100  # values per `in` lookup
_QUERY_BUDGET = 4_000  # encoded characters of lookup values per request: nginx takes 8 KiB request lines
_SCAN_PAGE = 500
_DIRECT_BATCHES = 3  # up to this many lookup requests are sent without first pricing a full scan
# A count prices lookups only, never decides what exists, so one this recent is good enough to reuse
# (a bulk delete's check after the delete need not ask again).
_COUNT_REUSE_SECONDS = 60.0
_PAGES_WITHOUT_COUNT = 10_000  # page budget of a scan when the PBX gives no $count to derive one from
_SCAN_SLACK_PAGES = 10
# Told of every 429 or 503 answer (with its Retry-After in seconds, if any) in the task that sent the
# request, retried or not: a bulk operation's limiter (`operations.concurrency`) sets it so that all its
# workers slow down together. A context variable, because one client serves many calls at once.
throttle_listener: ContextVar[Callable[[float | None], None] | None] = ContextVar(
    "throttle_listener", default=None
)
THROTTLE_STATUSES = frozenset({429, 503})
_INCONSISTENT_HINT = (
    "Nothing was concluded from these answers. Try again; if it keeps happening, the PBX (or a proxy in "
    "front of it) is not honouring OData $filter/$orderby, so check that THREECX_URL points at the PBX itself."
)


class BlacklistRecord(BaseModel):
    """One `Pbx.BlackListNumber` as XAPI sends it."""

    model_config = ConfigDict(populate_by_name=True, frozen=True)

    id: str = Field(alias="Id")
    caller_id: str = Field(alias="CallerId")
    description: str | None = Field(default=None, alias="Description")

    @field_validator("id", "caller_id", "description", mode="after")
    @classmethod
    def _valid_unicode(cls, text: str | None) -> str | None:
        """A PBX may send a lone UTF-16 surrogate (`\\ud800` in its JSON): not text, and it could be
        neither journaled nor shown. It becomes U+FFFD; no real caller ID holds one."""
        if text is None or text.isascii():
            return text
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
        return text


KeyProperty = Literal["Id", "CallerId"]
_KEY_OF: dict[KeyProperty, Callable[[BlacklistRecord], str]] = {
    "Id": lambda r: r.id,
    "CallerId": lambda r: r.caller_id,
}


@dataclass(frozen=True)
class BlacklistPage:
    records: list[BlacklistRecord]
    # How many match from this page's first record on ($count with the keyset applied); None without a count.
    remaining: int | None


@dataclass(frozen=True)
class _Answer:
    """One collection answer: its records, its `@odata.count`, and whether it announced more by nextLink."""

    records: list[BlacklistRecord]
    count: int | None
    next_link: bool

    @property
    def cut_short(self) -> bool:
        """The PBX said it left matches out (by a nextLink, or by counting more than it sent)."""
        return self.next_link or (self.count is not None and self.count > len(self.records))

    def complete(self, top: int, next_links: bool) -> bool:
        """The PBX said nothing was left out: its count says so, or, on a PBX that announces the rest
        by nextLink, the answer has none and was not cut by our own `$top`."""
        if self.count is not None:
            return self.count <= len(self.records)
        return next_links and not self.next_link and len(self.records) < top


class _InUnsupported(Exception):
    """The PBX refused `in`: the lookup is priced and batched again as `or` chains."""


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded in count and in total time; only for requests that are safe to repeat."""

    attempts: int = 4
    base_delay: float = 0.5
    max_delay: float = 8.0
    max_total: float = 30.0

    def pause(self, attempt: int, retry_after: float | None, elapsed: float) -> float | None:
        """Seconds to wait before attempt `attempt + 1`, or None when the budget is spent.

        A `Retry-After` the budget cannot honour (beyond `max_delay`, or past `max_total`) ends the
        retries at once: sleeping less than the PBX asked would only be refused again.
        """
        if attempt + 1 >= self.attempts:
            return None
        if retry_after is not None:
            if retry_after > self.max_delay:
                return None
            delay = retry_after
        else:
            delay = min(self.base_delay * 2.0**attempt, self.max_delay) * (0.5 + random.random() / 2)
        return None if elapsed + delay > self.max_total else delay


def _naming_its_pbx(cls: type[_C]) -> type[_C]:
    """Every public coroutine of the client names its PBX in the `PbxError` it raises (`pbx_name`, when the
    server manages several): one place for every error, whether an HTTP answer, a body that is not what the
    contract says, or a scan that cannot be trusted."""
    for name, method in list(vars(cls).items()):
        if not name.startswith("_") and inspect.iscoroutinefunction(method):
            setattr(cls, name, _naming(method))
    return cls


def _naming(method: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    @functools.wraps(method)
    async def call(self: XapiClient, *args: Any, **kwargs: Any) -> Any:
        try:
            return await method(self, *args, **kwargs)
        except PbxError as exc:
            if exc.pbx_name is None:
                exc.pbx_name = self.pbx_name
            raise

    return call


@_naming_its_pbx
class XapiClient:
    """Async XAPI client over one pooled `httpx2.AsyncClient`; use as an async context manager.

    It learns, for its lifetime, what the PBX showed about itself: whether it understands `in`,
    how many clauses an `or` lookup may hold, and the page cap it applies.
    """

    def __init__(
        self,
        endpoint: PbxEndpoint,
        client_id: str,
        client_secret: SecretStr,
        *,
        timeout: float = 30.0,
        verify: Any = True,
        retry: RetryPolicy = RetryPolicy(),
        transport: httpx2.AsyncBaseTransport | None = None,
        token_file: TokenFile | None = None,
        max_in_flight: int = 8,
    ) -> None:
        """`token_file` shares the access token with this machine's other processes on the same API
        client (see `token_store`); None keeps it to this process. `max_in_flight` is how many write
        requests a bulk operation on this PBX may have outstanding at once (THREECX_MAX_IN_FLIGHT): it
        travels with the client because it describes how hard this PBX may be pushed."""
        self.endpoint = endpoint
        self.max_in_flight = max_in_flight
        # Its name in the config file when a server manages several PBXs: errors say which PBX failed.
        self.pbx_name: str | None = None
        self.retry = retry
        self._http = httpx2.AsyncClient(
            timeout=timeout,
            verify=verify,
            transport=transport,
            headers={"User-Agent": f"threecx-mcp/{__version__}", "Accept": "application/json"},
            follow_redirects=False,
        )
        self.auth = ClientCredentialsAuth(
            endpoint.token_url, client_id, client_secret, self._post_form, retry=retry, shared=token_file
        )
        self.uses_in = True
        self.or_batch = odata.max_or_chain(odata.eq("Id", ""), NODE_LIMIT)
        self.page_cap: int | None = None
        self._counted: tuple[float, int | None] | None = None  # (when, how many) of the last count
        self.next_links = False  # whether this PBX announces the rest of a cut-short answer by nextLink

    @classmethod
    def from_connection(cls, connection: Connection, **kwargs: Any) -> XapiClient:
        return cls(
            connection.endpoint,
            connection.client_id,
            connection.client_secret,
            timeout=connection.timeout,
            verify=connection.verify,
            max_in_flight=connection.max_in_flight,
            **kwargs,
        )

    def __repr__(self) -> str:
        return f"XapiClient(origin={self.endpoint.origin!r})"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- BlackListNumbers: reads of many entries ----------------------------------------------

    async def find_by_ids(self, ids: Collection[str]) -> dict[str, BlacklistRecord]:
        """Exactly the given ids that exist now, with their current values, looked up by key."""
        return await self._find("Id", ids)

    async def find_by_caller_ids(self, caller_ids: Collection[str]) -> dict[str, BlacklistRecord]:
        """Entries whose CallerId equals one of these exactly (case included), keyed by caller ID."""
        return await self._find("CallerId", caller_ids)

    async def count(self) -> int | None:
        """How many entries the blacklist holds, or None when the PBX gives no `$count`."""
        return (await self._collection({"$top": "0", "$count": "true"})).count

    async def _estimated_total(self) -> int | None:
        """The blacklist's size for pricing a lookup: a count from the last minute, or a new one."""
        if self._counted is None or time.monotonic() - self._counted[0] > _COUNT_REUSE_SECONDS:
            self._counted = (time.monotonic(), await self.count())
        return self._counted[1]

    async def scan(self) -> list[BlacklistRecord]:
        """Every entry, by keyset on `Id`: immune to concurrent edits, page caps and ignored `$skip`.

        The end is an empty page, or a page the PBX marks as the last (its count covers it, or, on
        a PBX that sends nextLinks, it carries none); never merely a short page, since a PBX may
        cap its pages silently. A nextLink is not followed, only believed: following a `$skip`
        nextLink would skip entries when others are deleted meanwhile, and loop on a PBX that
        ignores `$skip`. An entry sent twice means the PBX ignored the keyset, and the scan stops
        instead of looping; so does a scan that runs past the PBX's own count.
        """
        seen: dict[str, BlacklistRecord] = {}
        options = {"$orderby": "Id", "$top": str(_SCAN_PAGE), "$count": "true"}
        budget, requests = _PAGES_WITHOUT_COUNT, 0
        while True:
            answer = await self._collection(options)
            requests += 1
            if requests == 1 and answer.count is not None:
                budget = answer.count + _SCAN_SLACK_PAGES  # every page must bring at least one new entry
            for record in answer.records:
                if record.id in seen:
                    raise UnexpectedResponse(
                        f"While reading the whole blacklist the PBX sent entry {quoted(record.id, 40)} a "
                        f"second time (request {requests}): it repeated a page or ignored the filter, so the "
                        "list it gives cannot be trusted.",
                        hint=_INCONSISTENT_HINT,
                    )
                seen[record.id] = record
            if not answer.records or answer.complete(_SCAN_PAGE, self.next_links):
                return list(seen.values())
            if requests >= budget:
                raise UnexpectedResponse(
                    f"While reading the whole blacklist the PBX kept sending new pages: {requests} requests "
                    f"brought {len(seen)} entries and it still announced more.",
                    hint=_INCONSISTENT_HINT,
                )
            options["$filter"] = odata.gt("Id", answer.records[-1].id).text  # as the PBX ordered them

    async def page(self, *, terms: Sequence[str], after: tuple[str, str] | None, limit: int) -> BlacklistPage:
        """Entries ordered by (CallerId, Id), from just after `after` = (caller_id, id) of the last one shown.

        With `terms`, only entries whose CallerId or Description contains any term, ignoring case.
        A keyset instead of an offset: deleting entries between pages cannot make a page skip.
        """
        clauses: list[odata.Filter] = []
        if terms:
            searched = odata.any_of(
                [odata.contains_ignoring_case(p, t) for t in terms for p in ("CallerId", "Description")]
            )
            # Sized with a keyset even on the first page, so a search that starts can always go on.
            if odata.all_of([searched, _after("", "")]).nodes > NODE_LIMIT:
                raise InvalidArgument(
                    f"A search for {len(terms)} words at once is more than the PBX accepts in one query; "
                    "search for fewer words."
                )
            clauses.append(searched)
        if after is not None:
            clauses.append(_after(*after))
        options = {"$orderby": "CallerId,Id", "$top": str(limit), "$count": "true"}
        if clauses:
            options["$filter"] = odata.all_of(clauses).text
        answer = await self._collection(options)
        _check_page(answer.records, terms, after)
        return BlacklistPage(answer.records, answer.count)

    async def call_log(
        self, period_from: datetime, period_to: datetime, *, top: int, skip: int
    ) -> tuple[list[dict[str, Any]], int | None]:
        """One page of the PBX's call log (`ReportCallLogData/Pbx.GetCallLogData`, 3CX V20 Update 6 or
        later, System Owner role): its rows in the period, newest first, unfiltered, and `@odata.count`.

        The function takes its parameters in the path: date-times as bare OData literals
        (`2026-11-21T10:00:00Z`), strings as quoted literals, the whole segment percent-encoded. The
        other filters are left at what 3CX's own console sends for "all calls". Rows come back as
        the PBX sent them: what they mean is the caller's business (see `operations.callers`).
        """
        function = "ReportCallLogData/Pbx.GetCallLogData"
        when = {
            "periodFrom": period_from.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "periodTo": period_to.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        rest = {"sourceType": "0", "sourceFilter": odata.string_literal(""), "destinationType": "0"}
        rest |= {"destinationFilter": odata.string_literal(""), "callsType": "0", "callTimeFilterType": "0"}
        rest |= {k: odata.string_literal("0:00:0") for k in ("callTimeFilterFrom", "callTimeFilterTo")}
        arguments = ",".join(
            f"{name}={value}" for name, value in (when | rest | {"hidePcalls": "false"}).items()
        )
        options = {"$orderby": "StartTime desc", "$top": str(top), "$skip": str(skip), "$count": "true"}
        response = await self._request(
            "GET",
            quote(f"{function}({arguments})", safe="/(),=':"),
            query=odata.query(options),
            idempotent=True,
        )
        expected = "a JSON collection of call log records"
        body = _json(response, expected)
        rows, count = (
            (body.get("value"), body.get("@odata.count")) if isinstance(body, dict) else (None, None)
        )
        if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
            raise unexpected_body(response, expected)
        if count is not None and (type(count) is not int or count < 0):
            raise unexpected_body(response, expected)
        return rows, count

    # -- lookups by key ---------------------------------------------------------------------

    async def _find(self, prop: KeyProperty, keys: Collection[str]) -> dict[str, BlacklistRecord]:
        """Batched lookups by key, or one full scan when that costs fewer requests."""
        wanted = sorted(set(keys))
        if not wanted:
            return {}
        total: int | None = None
        priced = False
        while True:
            batches = self._batches(prop, wanted)
            cost = sum(math.ceil(len(b) / (self.page_cap or len(b))) for b in batches)
            if cost > _DIRECT_BATCHES:
                if not priced:
                    total, priced = await self._estimated_total(), True
                scan_cost = math.ceil((total or 0) / min(_SCAN_PAGE, self.page_cap or _SCAN_PAGE)) or 1
                if total is not None and scan_cost < cost:
                    key_of, chosen = _KEY_OF[prop], set(wanted)
                    return {key_of(r): r for r in await self.scan() if key_of(r) in chosen}
            try:
                return await self._lookup(prop, deque(batches))
            except _InUnsupported:
                log.info(
                    "The PBX does not accept the OData `in` operator; looking entries up by `or` filters."
                )

    def _batches(self, prop: KeyProperty, keys: list[str]) -> list[list[str]]:
        """Consecutive groups within the batch size and the URL budget (a longer single key goes alone)."""
        size = _IN_BATCH if self.uses_in else self.or_batch
        overhead = 0 if self.uses_in else len(odata.query({"": f"({prop} eq ) or "}))
        batches: list[list[str]] = []
        length = 0
        for key in keys:
            cost = odata.encoded_length(odata.string_literal(key) + ",") + overhead
            if batches and len(batches[-1]) < size and length + cost <= _QUERY_BUDGET:
                batches[-1].append(key)
                length += cost
            else:
                batches.append([key])
                length = cost
        return batches

    async def _lookup(self, prop: KeyProperty, queue: deque[list[str]]) -> dict[str, BlacklistRecord]:
        """Ask for each batch; ask again for what a cut-short answer left out, so a page cap loses nothing.

        An answer that neither counts its matches nor comes from a PBX known to send nextLinks may
        have been cut silently, so its missing keys are asked for once more whenever it found some.
        Each new question holds fewer keys than the one before (or half of them), so a lookup
        always ends, whatever the PBX answers.
        """
        key_of = _KEY_OF[prop]
        found: dict[str, BlacklistRecord] = {}
        while queue:
            keys = queue.popleft()
            try:
                answer = await self._lookup_batch(prop, keys)
            except InvalidRequest as exc:
                if exc.status != 400 or len(keys) == 1:
                    raise
                # Too many `or` clauses for this PBX's node limit: halve, for this lookup and the next.
                self.or_batch = min(self.or_batch, len(keys) // 2)
                queue.extendleft([keys[len(keys) // 2 :], keys[: len(keys) // 2]])
                continue
            asked = set(keys)
            folded = {k.casefold() for k in keys}  # a PBX's collation may compare caller IDs ignoring case
            for record in answer.records:
                if key_of(record) in asked:
                    found.setdefault(key_of(record), record)
                elif key_of(record).casefold() not in folded:
                    raise UnexpectedResponse(
                        f"The PBX answered a lookup of {len(keys)} {prop} value(s) with an entry that was not "
                        "asked for: it ignored the filter, so which entries exist cannot be told from it.",
                        hint=_INCONSISTENT_HINT,
                    )
            unseen = [k for k in keys if k not in found]
            progress = len(unseen) < len(keys)
            if not unseen or answer.complete(len(keys), self.next_links):
                continue
            if not answer.cut_short and not progress:
                continue  # nothing announced as left out, and asking again would bring the same answer
            if progress:
                queue.appendleft(unseen)
            elif len(keys) > 1:
                queue.extendleft([keys[len(keys) // 2 :], keys[: len(keys) // 2]])
            else:
                raise UnexpectedResponse(
                    f"The PBX answered a lookup of {prop} {quoted(keys[0], 40)} with other entries only and "
                    "said more remain, so whether it exists cannot be told.",
                    hint=_INCONSISTENT_HINT,
                )
        return found

    async def _lookup_batch(self, prop: KeyProperty, keys: list[str]) -> _Answer:
        if self.uses_in:
            where = odata.one_of(prop, keys)
        else:
            where = odata.any_of([odata.eq(prop, k) for k in keys])
        try:
            return await self._collection({"$filter": where.text, "$top": str(len(keys)), "$count": "true"})
        except InvalidRequest as exc:
            if not self.uses_in or exc.status != 400:
                raise
            self.uses_in = False
            raise _InUnsupported from None

    # -- one collection request ---------------------------------------------------------------

    async def _collection(self, options: Mapping[str, str]) -> _Answer:
        response = await self._request("GET", BLACKLIST, query=odata.query(options), idempotent=True)
        expected = "a JSON collection of blacklist entries"
        body = _json(response, expected)
        try:
            records = [BlacklistRecord.model_validate(item) for item in body["value"]]
            count, next_link = body.get("@odata.count"), body.get("@odata.nextLink")
        except (KeyError, TypeError, AttributeError, ValidationError):
            raise unexpected_body(response, expected) from None
        if (count is not None and (type(count) is not int or count < 0)) or not isinstance(
            next_link, str | None
        ):
            raise unexpected_body(response, expected)
        answer = _Answer(records, count, next_link is not None)
        self.next_links |= answer.next_link
        top = int(options.get("$top", _SCAN_PAGE))
        if answer.cut_short and 0 < len(records) < top:
            # The PBX cut the answer below what was asked: that is its page cap (lowest seen wins).
            self.page_cap = min(self.page_cap or len(records), len(records))
        return answer

    # -- BlackListNumbers: single entries ------------------------------------------------------

    async def get_blacklist_number(self, entry_id: str) -> BlacklistRecord:
        response = await self._request("GET", odata.entity_path(BLACKLIST, entry_id), idempotent=True)
        return _record(response)

    async def create_blacklist_number(self, caller_id: str, description: str | None) -> BlacklistRecord:
        body: dict[str, Any] = {"CallerId": caller_id}
        if description is not None:
            body["Description"] = description
        response = await self._request("POST", BLACKLIST, json=body, idempotent=False)
        return _record(response)

    async def update_blacklist_number(self, entry_id: str, changes: Mapping[str, str | None]) -> None:
        """PATCH only the given XAPI properties; the PBX answers 204 with no body."""
        await self._request(
            "PATCH", odata.entity_path(BLACKLIST, entry_id), json=dict(changes), idempotent=True
        )

    async def delete_blacklist_number(self, entry_id: str) -> None:
        await self._request("DELETE", odata.entity_path(BLACKLIST, entry_id), idempotent=True)

    async def bulk_delete_blacklist_numbers(self, ids: Sequence[str]) -> None:
        """One `Pbx.BulkNumbersDelete` call; 204 says nothing about which ids existed."""
        await self._request("POST", BULK_DELETE_ACTION, json={"ids": list(ids)}, idempotent=True)

    # -- transport --------------------------------------------------------------------------

    async def _post_form(self, url: str, form: dict[str, str]) -> httpx2.Response:
        try:
            return await self._http.post(url, data=form)
        except httpx2.TransportError as exc:
            raise error_from_transport(exc, self.endpoint.origin) from None

    async def _request(
        self,
        method: str,
        path: str,
        *,
        query: str = "",
        json: Any = None,
        idempotent: bool,
    ) -> httpx2.Response:
        """Send with auth; retry 429 always, and 502/503/504 or a broken connection only when `idempotent`.

        `query` arrives encoded (see `odata.query`): httpx2's own `params=` would send spaces as `+`.
        """
        url = f"{self.endpoint.api_base}/{path}" + (f"?{query}" if query else "")
        started = time.monotonic()
        for attempt in range(self.retry.attempts):
            try:
                response = await self._http.request(method, url, json=json, auth=self.auth)
            except httpx2.InvalidURL as exc:
                raise InvalidArgument(
                    f"The request is too large to send to the PBX ({exc}); shorten the values."
                ) from None
            except httpx2.TransportError as exc:
                error: PbxError = error_from_transport(exc, self.endpoint.origin)
                request_sent = not isinstance(exc, httpx2.ConnectError | httpx2.ConnectTimeout)
                # A certificate or a port's protocol does not change between attempts.
                retryable = not isinstance(error, TlsError) and (idempotent or not request_sent)
            except PbxError as exc:  # from auth: a mint already retried by the one caller that minted
                error, retryable = exc, False
            else:
                if response.is_success:
                    return response
                error = error_from_response(response)
                listener = throttle_listener.get()
                if listener is not None and response.status_code in THROTTLE_STATUSES:
                    listener(parse_retry_after(response.headers.get("retry-after")))
                retryable = response.status_code == 429 or (
                    idempotent and response.status_code in TRANSIENT_STATUSES
                )
            retry_after = error.retry_after if isinstance(error, RateLimited) else None
            delay = self.retry.pause(attempt, retry_after, time.monotonic() - started)
            if not retryable or delay is None:
                raise error
            what = path.split("(")[0]  # the entity set, never a key
            log.warning(
                "%s %s failed (%s); retry %d in %.1fs", method, what, type(error).__name__, attempt + 1, delay
            )
            await anyio.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover


def _after(caller_id: str, entry_id: str) -> odata.Filter:
    """Entries after (caller_id, entry_id) in (CallerId, Id) order: the keyset of `page`."""
    same_caller = odata.all_of([odata.eq("CallerId", caller_id), odata.gt("Id", entry_id)])
    return odata.any_of([odata.gt("CallerId", caller_id), same_caller])


def _json(response: httpx2.Response, expected: str) -> Any:
    if "json" not in response.headers.get("content-type", ""):
        raise unexpected_body(response, expected)
    try:
        return response.json()
    except ValueError:
        raise unexpected_body(response, expected) from None


def _check_page(
    records: Sequence[BlacklistRecord], terms: Sequence[str], after: tuple[str, str] | None
) -> None:
    """A page must hold only what was asked for: a PBX (or a proxy) that drops `$filter` would turn a
    search into the whole blacklist, and a keyset page into the first page again, forever.

    Matching is checked only where Python and the PBX surely agree (ASCII terms; the keyset's own
    entry coming back), so a PBX's collation cannot make a correct page look wrong.
    """
    plain = [t.lower() for t in terms if t.isascii()]
    for record in records:
        if after is not None and (record.caller_id, record.id) == after:
            raise UnexpectedResponse(
                "The PBX sent the entry a page should start after again: it ignored the filter, so the "
                "listing cannot go on.",
                hint=_INCONSISTENT_HINT,
            )
        if plain and len(plain) == len(terms):
            text = f"{record.caller_id}\n{record.description or ''}".lower()
            if not any(term in text for term in plain):
                raise UnexpectedResponse(
                    f"The PBX answered a search with entry {quoted(record.id, 40)}, which does not contain "
                    "what was searched for: it ignored the filter, so its answer cannot be shown as the "
                    "matches.",
                    hint=_INCONSISTENT_HINT,
                )


def _record(response: httpx2.Response) -> BlacklistRecord:
    try:
        return BlacklistRecord.model_validate(_json(response, "a JSON blacklist entry"))
    except ValidationError:
        raise unexpected_body(response, "a JSON blacklist entry") from None
