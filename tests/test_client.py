"""The shared XAPI client against the sandbox PBX over real HTTP."""

from __future__ import annotations

import time

import anyio
import jwt
import pytest
from pydantic import SecretStr
from threecx_mcp.auth import _lifetime
from threecx_mcp.client import RetryPolicy, XapiClient
from threecx_mcp.config import PbxEndpoint
from threecx_mcp.errors import (
    AuthenticationFailed,
    Conflict,
    InvalidArgument,
    InvalidRequest,
    NotFound,
    PbxServerError,
    PbxTimeout,
    PbxUnreachable,
    PermissionDenied,
    RateLimited,
    UnexpectedResponse,
)
from threecx_mcp.sandbox import SANDBOX_CLIENT_ID, SEED_ENTRIES, Fault, Sandbox

from .support import FAST_RETRY

pytestmark = pytest.mark.anyio
ADVERSARIAL_KEYS = ["a'b/c #d?e%f", "Zoë ☎ 电话", "k" * 1000, "') or true or ('", "%2F..%2F$metadata", "x\ty"]


async def test_list_get_create_update_delete_round_trip(xapi: XapiClient, sandbox: Sandbox) -> None:
    page = await xapi.page(terms=[], after=None, limit=5)
    assert page.remaining == len(SEED_ENTRIES)
    assert [r.caller_id for r in page.records] == sorted(c for c, _ in SEED_ENTRIES)[:5]
    assert await xapi.count() == len(SEED_ENTRIES)

    created = await xapi.create_blacklist_number("+4915112345678", "Spam")
    assert created.caller_id == "+4915112345678" and created.description == "Spam"
    assert sandbox.entries[created.id]["CallerId"] == "+4915112345678"

    await xapi.update_blacklist_number(created.id, {"Description": None})
    fetched = await xapi.get_blacklist_number(created.id)
    assert fetched.description is None and fetched.caller_id == "+4915112345678"

    await xapi.delete_blacklist_number(created.id)
    assert created.id not in sandbox.entries
    with pytest.raises(NotFound):
        await xapi.get_blacklist_number(created.id)


async def test_patch_sends_only_the_given_fields(xapi: XapiClient, sandbox: Sandbox) -> None:
    await xapi.update_blacklist_number("2", {"Description": "changed"})
    patch = next(r for r in sandbox.requests if r.method == "PATCH")
    assert patch.path == "/xapi/v1/BlackListNumbers('2')"
    assert patch.body == b'{"Description":"changed"}'
    assert sandbox.entries["2"]["CallerId"] == SEED_ENTRIES[1][0]


async def test_bulk_delete_posts_string_ids(xapi: XapiClient, sandbox: Sandbox) -> None:
    await xapi.bulk_delete_blacklist_numbers(["1", "3", "does-not-exist"])
    bulk = next(r for r in sandbox.requests if r.path.endswith("Pbx.BulkNumbersDelete"))
    assert bulk.body == b'{"ids":["1","3","does-not-exist"]}'
    assert "1" not in sandbox.entries and "3" not in sandbox.entries and "2" in sandbox.entries


async def test_collection_queries_are_percent_encoded_with_20_never_plus(
    xapi: XapiClient, sandbox: Sandbox
) -> None:
    """OData's grammar has no `+` for a space, and a real `+` (every E.164 number) must stay a `+`."""
    tricky = "+1 555 & x=y #1 100% O'Brien"
    sandbox.add(tricky, "a b+c")
    assert set(await xapi.find_by_caller_ids([tricky, "+15550100199"])) == {tricky, "+15550100199"}
    assert [r.caller_id for r in (await xapi.page(terms=["% o'b"], after=None, limit=5)).records] == [tricky]
    assert [r.caller_id for r in (await xapi.page(terms=["B+C"], after=None, limit=5)).records] == [tricky]
    queries = [r.query for r in sandbox.requests if r.path == "/xapi/v1/BlackListNumbers"]
    assert len(queries) == 3 and all("%20" in q and "+" not in q and " " not in q for q in queries)


@pytest.mark.parametrize("key", ADVERSARIAL_KEYS)
async def test_adversarial_keys_address_exactly_their_entry(
    xapi: XapiClient, sandbox: Sandbox, key: str
) -> None:
    sandbox.add("+15550000001", "target", entry_id=key)
    assert (await xapi.get_blacklist_number(key)).id == key
    await xapi.update_blacklist_number(key, {"Description": "hit"})
    assert sandbox.entries[key]["Description"] == "hit"
    await xapi.delete_blacklist_number(key)
    assert key not in sandbox.entries
    assert len(sandbox.entries) == len(SEED_ENTRIES)
    # never the whole collection
    assert not any(r.path == "/xapi/v1/BlackListNumbers" for r in sandbox.requests)


async def test_token_is_minted_once_for_many_concurrent_calls(xapi: XapiClient, sandbox: Sandbox) -> None:
    results: list[str] = []

    async def fetch(key: str) -> None:
        results.append((await xapi.get_blacklist_number(key)).id)

    async with anyio.create_task_group() as tg:
        for i in range(50):
            tg.start_soon(fetch, str(i % 12 + 1))
    assert len(results) == 50
    assert sandbox.token_requests == 1


async def test_revoked_token_is_reminted_once_and_the_call_retried(
    xapi: XapiClient, sandbox: Sandbox
) -> None:
    await xapi.get_blacklist_number("1")
    sandbox.revoke_tokens()  # another process minted a token for the same API client
    results = []

    async def fetch() -> None:
        results.append(await xapi.get_blacklist_number("1"))

    async with anyio.create_task_group() as tg:
        for _ in range(10):
            tg.start_soon(fetch)
    assert len(results) == 10
    assert sandbox.token_requests == 2


async def test_expired_token_is_refreshed_before_use(xapi: XapiClient, sandbox: Sandbox) -> None:
    sandbox.token_lifetime = 1  # the JWT's exp claim is 1-2 s ahead (whole seconds)
    await xapi.get_blacklist_number("1")
    await anyio.sleep(2.05)
    await xapi.get_blacklist_number("1")
    assert sandbox.token_requests == 2
    assert sandbox.count("GET", "/xapi/v1/") == 2  # no request was wasted on a 401


async def test_a_401_storm_remints_once_and_then_fails_clearly(xapi: XapiClient, sandbox: Sandbox) -> None:
    sandbox.inject(Fault(status=401, times=100))
    with pytest.raises(AuthenticationFailed) as caught:
        await xapi.get_blacklist_number("1")
    assert sandbox.token_requests == 2
    assert sandbox.count("GET", "/xapi/v1/") == 2
    assert "3CX Configuration API" in caught.value.user_message()


async def test_wrong_credentials_are_not_retried(sandbox_url: str, sandbox: Sandbox) -> None:
    async with XapiClient(
        PbxEndpoint.parse(sandbox_url), SANDBOX_CLIENT_ID, SecretStr("wrong-key"), retry=FAST_RETRY
    ) as client:
        with pytest.raises(AuthenticationFailed) as caught:
            await client.count()
    assert sandbox.token_requests == 1
    assert "invalid_client" in caught.value.user_message()
    assert "wrong-key" not in caught.value.user_message()


@pytest.mark.parametrize(
    ("fault", "error", "hint"),
    [
        (Fault(status=403), PermissionDenied, "System Owner"),
        (Fault(status=400), InvalidRequest, "Correct the values"),
        (Fault(status=500), PbxServerError, "try again later"),
        (Fault(status=502, body="html", times=10), PbxServerError, "text/html"),
        (Fault(status=200, body="truncated"), UnexpectedResponse, "reverse proxy"),
        (Fault(status=200, body="html"), UnexpectedResponse, "text/html"),
        (Fault(status=200, body="empty"), UnexpectedResponse, "empty body"),
        (Fault(status=429, times=10), RateLimited, "wait"),
    ],
)
async def test_each_failure_maps_to_a_typed_error_with_a_hint(
    xapi: XapiClient, sandbox: Sandbox, fault: Fault, error: type[Exception], hint: str
) -> None:
    sandbox.inject(fault)
    with pytest.raises(error) as caught:
        await xapi.count()
    assert hint in caught.value.user_message()  # type: ignore[attr-defined]


async def test_vendor_tokens_decide_the_class(xapi: XapiClient, sandbox: Sandbox) -> None:
    with pytest.raises(Conflict, match="already") as caught:
        await xapi.create_blacklist_number(SEED_ENTRIES[0][0], None)
    assert "WARNINGS.XAPI.DUPLICATE" in caught.value.user_message()
    with pytest.raises(NotFound):
        await xapi.delete_blacklist_number("nope")


async def test_pbx_text_is_shortened_and_flattened(xapi: XapiClient, sandbox: Sandbox) -> None:
    with pytest.raises(NotFound) as caught:
        await xapi.get_blacklist_number("x\n" * 500)  # the PBX echoes the key back in its error text
    message = caught.value.user_message()
    assert "\n" not in message
    assert len(message) < 600 and "…" in message


@pytest.mark.parametrize("status", [429, 502, 503, 504])
async def test_transient_failures_are_retried(xapi: XapiClient, sandbox: Sandbox, status: int) -> None:
    sandbox.inject(Fault(status=status, times=2, retry_after="0" if status == 429 else None))
    assert len(await xapi.scan()) == len(SEED_ENTRIES)
    assert sandbox.count("GET", "/xapi/v1/") == 3


async def test_retries_are_bounded_in_count(xapi: XapiClient, sandbox: Sandbox) -> None:
    sandbox.inject(Fault(status=503, times=100))
    with pytest.raises(PbxServerError):
        await xapi.count()
    assert sandbox.count("GET", "/xapi/v1/") == FAST_RETRY.attempts


async def test_retries_are_bounded_in_time(sandbox_url: str, sandbox: Sandbox) -> None:
    sandbox.inject(Fault(status=429, retry_after="3", times=100))
    policy = RetryPolicy(attempts=10, max_delay=5, max_total=2)
    async with XapiClient(
        PbxEndpoint.parse(sandbox_url), SANDBOX_CLIENT_ID, SecretStr("sandbox-api-key"), retry=policy
    ) as c:
        with anyio.fail_after(3):
            with pytest.raises(RateLimited):
                await c.count()
    assert sandbox.count("GET", "/xapi/v1/") == 1  # a 3 s Retry-After does not fit in 2 s: give up at once


async def test_create_is_not_retried_after_a_gateway_error(xapi: XapiClient, sandbox: Sandbox) -> None:
    sandbox.inject(Fault(status=502, method="POST", path="/xapi/v1/BlackListNumbers", times=5))
    with pytest.raises(PbxServerError):
        await xapi.create_blacklist_number("+15550000002", None)
    assert sandbox.count("POST", "/xapi/v1/BlackListNumbers") == 1


async def test_token_endpoint_outage_is_retried(xapi: XapiClient, sandbox: Sandbox) -> None:
    sandbox.inject(Fault(status=503, path="/connect/token", times=1))
    await xapi.count()
    assert sandbox.token_requests == 2


async def test_read_timeout(sandbox_url: str, sandbox: Sandbox) -> None:
    sandbox.inject(Fault(status=200, delay=1.0, times=10))
    async with XapiClient(
        PbxEndpoint.parse(sandbox_url),
        SANDBOX_CLIENT_ID,
        SecretStr("sandbox-api-key"),
        timeout=0.2,
        retry=RetryPolicy(attempts=2, base_delay=0.01),
    ) as client:
        with pytest.raises(PbxTimeout, match="did not answer in time"):
            await client.count()
    assert sandbox.count("GET", "/xapi/v1/") == 2


async def test_unreachable_pbx() -> None:
    async with XapiClient(
        PbxEndpoint.parse("http://127.0.0.1:9"),
        "id",
        SecretStr("secret-value"),
        retry=RetryPolicy(attempts=2, base_delay=0.01),
    ) as client:
        with pytest.raises(PbxUnreachable) as caught:
            await client.count()
    assert "127.0.0.1:9" in caught.value.user_message()
    assert "THREECX_URL" in caught.value.user_message()
    assert "secret-value" not in caught.value.user_message()


def test_reprs_hold_no_secret(sandbox_url: str) -> None:
    client = XapiClient(PbxEndpoint.parse(sandbox_url), "id", SecretStr("secret-value"))
    assert "secret-value" not in repr(client) and "secret-value" not in repr(client.auth)


@pytest.mark.parametrize(
    ("expires_in", "seconds"), [(3600, 3600.0), ("120", 120.0), (None, 3600.0), ("soon", 3600.0), (-5, 0.0)]
)
def test_opaque_token_lifetime_comes_from_expires_in(expires_in: object, seconds: float) -> None:
    assert _lifetime("opaque-token", expires_in) == seconds


def test_jwt_exp_wins_over_expires_in() -> None:
    token = jwt.encode({"exp": int(time.time()) + 600}, b"k" * 32, algorithm="HS256")
    assert 590 < _lifetime(token, 60) <= 600


async def test_a_request_too_large_for_a_url_is_refused_before_sending(
    xapi: XapiClient, sandbox: Sandbox
) -> None:
    with pytest.raises(InvalidArgument, match="too large to send"):
        await xapi.find_by_caller_ids(["x" * 100_000])
    assert sandbox.count("GET", "/xapi/") == 0


def test_retry_after_in_both_http_forms() -> None:
    from datetime import UTC, datetime, timedelta
    from email.utils import format_datetime

    from threecx_mcp.http_errors import parse_retry_after

    assert parse_retry_after("7") == 7.0
    assert parse_retry_after("-3") == 0.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    soon = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert 25 < parse_retry_after(soon) <= 30  # type: ignore[operator]
    assert parse_retry_after("soonish") is None and parse_retry_after(None) is None
