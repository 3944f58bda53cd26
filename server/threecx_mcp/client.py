"""The one shared client for 3CX XAPI: auth, retries, error mapping and the BlackListNumbers calls."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Self

import anyio
import httpx2
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from . import __version__, odata
from .auth import ClientCredentialsAuth
from .config import PbxEndpoint, Settings
from .errors import (
    InvalidArgument,
    PbxError,
    PbxServerError,
    PbxUnreachable,
    RateLimited,
    error_from_response,
    error_from_transport,
    unexpected_body,
)

log = logging.getLogger(__name__)

BLACKLIST = "BlackListNumbers"
BULK_DELETE_ACTION = f"{BLACKLIST}/Pbx.BulkNumbersDelete"


class BlacklistRecord(BaseModel):
    """One `Pbx.BlackListNumber` as XAPI sends it."""

    model_config = ConfigDict(populate_by_name=True, frozen=True)

    id: str = Field(alias="Id")
    caller_id: str = Field(alias="CallerId")
    description: str | None = Field(default=None, alias="Description")


@dataclass(frozen=True)
class BlacklistPage:
    records: list[BlacklistRecord]
    total: int | None


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded in count and in total time; only for requests that are safe to repeat."""

    attempts: int = 4
    base_delay: float = 0.5
    max_delay: float = 8.0
    max_total: float = 30.0

    def delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.max_delay)
        return min(self.base_delay * 2**attempt, self.max_delay) * (0.5 + random.random() / 2)


_TRANSIENT_STATUSES = frozenset({502, 503, 504})


class XapiClient:
    """Async XAPI client over one pooled `httpx2.AsyncClient`; use as an async context manager."""

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
    ) -> None:
        self.endpoint = endpoint
        self.retry = retry
        self._http = httpx2.AsyncClient(
            timeout=timeout,
            verify=verify,
            transport=transport,
            headers={"User-Agent": f"threecx-mcp/{__version__}", "Accept": "application/json"},
            follow_redirects=False,
        )
        self.auth = ClientCredentialsAuth(endpoint.token_url, client_id, client_secret, self._post_form)

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: Any) -> XapiClient:
        endpoint = settings.endpoint()
        client_id, secret = settings.credentials()
        return cls(endpoint, client_id, secret, timeout=settings.timeout, verify=settings.tls_verify(), **kwargs)

    def __repr__(self) -> str:
        return f"XapiClient(origin={self.endpoint.origin!r})"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- BlackListNumbers -------------------------------------------------------------------

    async def list_blacklist(
        self,
        *,
        filter: str | None = None,
        search: str | None = None,
        top: int | None = None,
        skip: int | None = None,
        count: bool = False,
        orderby: Sequence[str] = (),
        select: Sequence[str] = (),
    ) -> BlacklistPage:
        params: dict[str, str] = {}
        if filter:
            params["$filter"] = filter
        if search:
            params["$search"] = search
        if top is not None:
            params["$top"] = str(top)
        if skip:
            params["$skip"] = str(skip)
        if count:
            params["$count"] = "true"
        if orderby:
            params["$orderby"] = ",".join(orderby)
        if select:
            params["$select"] = ",".join(select)
        response = await self._request("GET", BLACKLIST, params=params, idempotent=True)
        body = _json(response, "a JSON collection of blacklist entries")
        try:
            records = [BlacklistRecord.model_validate(item) for item in body["value"]]
            total = body.get("@odata.count")
        except (KeyError, TypeError, AttributeError, ValidationError):
            raise unexpected_body(response, "a JSON collection of blacklist entries") from None
        return BlacklistPage(records, int(total) if isinstance(total, int) else None)

    async def iter_blacklist(self, *, filter: str | None = None, page_size: int = 500) -> list[BlacklistRecord]:
        """Every matching entry, paged by `$top`/`$skip` in a stable order (XAPI has no nextLink)."""
        records: list[BlacklistRecord] = []
        while True:
            page = await self.list_blacklist(filter=filter, top=page_size, skip=len(records), orderby=("Id",))
            records.extend(page.records)
            if len(page.records) < page_size:
                return records

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
        await self._request("PATCH", odata.entity_path(BLACKLIST, entry_id), json=dict(changes), idempotent=True)

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
        params: Mapping[str, str] | None = None,
        json: Any = None,
        idempotent: bool,
    ) -> httpx2.Response:
        """Send with auth; retry 429 always, and 502/503/504 or a broken connection only when `idempotent`."""
        url = f"{self.endpoint.api_base}/{path}"
        started = time.monotonic()
        for attempt in range(self.retry.attempts):
            try:
                response = await self._http.request(method, url, params=params, json=json, auth=self.auth)
            except httpx2.InvalidURL as exc:
                raise InvalidArgument(f"The request is too large to send to the PBX ({exc}); shorten the values.") from None
            except httpx2.TransportError as exc:
                error: PbxError = error_from_transport(exc, self.endpoint.origin)
                request_sent = not isinstance(exc, httpx2.ConnectError | httpx2.ConnectTimeout)
                retryable = idempotent or not request_sent
            except PbxError as exc:  # from minting a token
                error, retryable = exc, isinstance(exc, RateLimited | PbxUnreachable) or (
                    isinstance(exc, PbxServerError) and exc.status in _TRANSIENT_STATUSES
                )
            else:
                if response.is_success:
                    return response
                error = error_from_response(response)
                retryable = response.status_code == 429 or (idempotent and response.status_code in _TRANSIENT_STATUSES)
            delay = self.retry.delay(attempt, getattr(error, "retry_after", None))
            out_of_time = time.monotonic() - started + delay > self.retry.max_total
            if not retryable or attempt + 1 == self.retry.attempts or out_of_time:
                raise error
            what = path.split("(")[0]  # the entity set, never a key
            log.warning("%s %s failed (%s); retry %d in %.1fs", method, what, type(error).__name__, attempt + 1, delay)
            await anyio.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover


def _json(response: httpx2.Response, expected: str) -> Any:
    if "json" not in response.headers.get("content-type", ""):
        raise unexpected_body(response, expected)
    try:
        return response.json()
    except ValueError:
        raise unexpected_body(response, expected) from None


def _record(response: httpx2.Response) -> BlacklistRecord:
    try:
        return BlacklistRecord.model_validate(_json(response, "a JSON blacklist entry"))
    except ValidationError:
        raise unexpected_body(response, "a JSON blacklist entry") from None
