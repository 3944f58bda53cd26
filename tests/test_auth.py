"""Logins that cannot storm: one mint outcome for all waiters, a cool-down after refused credentials,
token-endpoint throttling retried by one caller, token lifetimes on the local clock, Retry-After
beyond the budget, and the message when another program fights over the same API client.

All against the sandbox PBX over real HTTP on 127.0.0.1; `sandbox.token_requests` counts what
reached its `/connect/token`.
"""

from __future__ import annotations

import json
import stat
import time
from pathlib import Path

import anyio
import httpx2
import jwt
import pytest
from pydantic import SecretStr
from threecx_mcp.auth import _lifetime
from threecx_mcp.client import RetryPolicy, XapiClient
from threecx_mcp.config import PbxEndpoint
from threecx_mcp.errors import (
    AuthenticationFailed,
    LoginPaused,
    PbxError,
    PbxServerError,
    RateLimited,
    TokenContention,
)
from threecx_mcp.sandbox import SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET, Fault, Sandbox
from threecx_mcp.sandbox.pbx import RecordedRequest
from threecx_mcp.token_store import StoredToken, TokenFile

from bench.token_sharing import run as run_token_sharing

from .support import FAST_RETRY

pytestmark = pytest.mark.anyio


def client(
    sandbox_url: str,
    secret: str = SANDBOX_CLIENT_SECRET,
    retry: RetryPolicy = FAST_RETRY,
    token_file: TokenFile | None = None,
) -> XapiClient:
    return XapiClient(
        PbxEndpoint.parse(sandbox_url),
        SANDBOX_CLIENT_ID,
        SecretStr(secret),
        retry=retry,
        token_file=token_file,
    )


def token_file(sandbox_url: str, directory: Path) -> TokenFile:
    shared = TokenFile.for_client(
        PbxEndpoint.parse(sandbox_url).origin, SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET, directory
    )
    assert shared is not None  # None only on Windows
    return shared


def bearer_tokens(sandbox: Sandbox) -> list[str]:
    return [
        r.headers["authorization"].removeprefix("Bearer ")
        for r in sandbox.requests
        if r.headers.get("authorization", "").startswith("Bearer ")
    ]


async def concurrently(xapi: XapiClient, calls: int) -> tuple[int, list[PbxError]]:
    """Run `calls` reads at once; how many succeeded, and the errors of the rest."""
    succeeded: list[str] = []
    failed: list[PbxError] = []

    async def one(i: int) -> None:
        try:
            succeeded.append((await xapi.get_blacklist_number(str(i % 12 + 1))).id)
        except PbxError as exc:
            failed.append(exc)

    async with anyio.create_task_group() as tg:
        for i in range(calls):
            tg.start_soon(one, i)
    return len(succeeded), failed


async def test_wrong_key_with_50_concurrent_calls_costs_one_login_and_a_cool_down(
    sandbox_url: str, sandbox: Sandbox
) -> None:
    async with client(sandbox_url, "wrong-api-key") as xapi:
        xapi.auth.login_cooldown = 0.5
        succeeded, failed = await concurrently(xapi, 50)
        assert (succeeded, len(failed)) == (0, 50)
        assert sandbox.token_requests == 1
        for error in failed:
            assert isinstance(error, AuthenticationFailed)
            message = error.user_message()
            assert "invalid_client" in message and "THREECX_CLIENT_SECRET" in message
            assert "wrong-api-key" not in message

        # Within the cool-down: fail fast, saying why, without asking the PBX again.
        succeeded, failed = await concurrently(xapi, 10)
        assert (succeeded, len(failed)) == (0, 10)
        assert sandbox.token_requests == 1
        assert all(isinstance(e, LoginPaused) for e in failed)
        assert "No new login is tried for" in failed[0].user_message()
        assert "THREECX_CLIENT_SECRET" in failed[0].user_message()

        await anyio.sleep(0.6)  # the cool-down is over: exactly one more login for all these calls
        succeeded, failed = await concurrently(xapi, 10)
        assert (succeeded, len(failed)) == (0, 10)
        assert sandbox.token_requests == 2


async def test_the_cool_down_ends_and_a_fixed_key_then_works(sandbox_url: str, sandbox: Sandbox) -> None:
    sandbox.api_clients[SANDBOX_CLIENT_ID] = "rotated-key"  # the admin rotated the key; we still have the old
    try:
        async with client(sandbox_url) as xapi:
            xapi.auth.login_cooldown = 0.3
            with pytest.raises(AuthenticationFailed):
                await xapi.count()
            sandbox.api_clients[SANDBOX_CLIENT_ID] = SANDBOX_CLIENT_SECRET  # and rotated it back
            with pytest.raises(LoginPaused):
                await xapi.count()
            await anyio.sleep(0.4)
            assert await xapi.count() == 12
        assert sandbox.token_requests == 2
    finally:
        sandbox.api_clients[SANDBOX_CLIENT_ID] = SANDBOX_CLIENT_SECRET


@pytest.mark.parametrize(
    ("fault", "token_requests"),
    [
        (Fault(status=503, path="/connect/token", times=2), 3),
        (Fault(status=429, path="/connect/token", times=2, retry_after="0"), 3),
        (Fault(status=502, body="html", path="/connect/token", times=1), 2),
    ],
    ids=["503x2", "429x2", "502-html"],
)
async def test_a_throttled_token_endpoint_is_retried_by_one_caller(
    sandbox_url: str, sandbox: Sandbox, fault: Fault, token_requests: int
) -> None:
    sandbox.inject(fault)
    async with client(sandbox_url) as xapi:
        succeeded, failed = await concurrently(xapi, 20)
    assert (succeeded, failed) == (20, [])
    assert sandbox.token_requests == token_requests


async def test_waiters_share_a_failed_mint_instead_of_each_starting_one(
    sandbox_url: str, sandbox: Sandbox
) -> None:
    sandbox.inject(Fault(status=503, path="/connect/token", times=1000))
    async with client(sandbox_url) as xapi:
        succeeded, failed = await concurrently(xapi, 20)
    assert succeeded == 0 and len(failed) == 20
    assert all(isinstance(e, PbxServerError) and "HTTP 503" in e.user_message() for e in failed)
    assert sandbox.token_requests == FAST_RETRY.attempts  # one caller's retries, nobody else's


@pytest.mark.parametrize("offset_hours", [-3, 3])
async def test_a_pbx_clock_hours_off_costs_one_mint(
    sandbox_url: str, sandbox: Sandbox, offset_hours: int
) -> None:
    sandbox.clock_offset = offset_hours * 3600.0  # -3 h: the JWT's exp is 2 h in the past on arrival
    async with client(sandbox_url) as xapi:
        for i in range(394):
            await xapi.get_blacklist_number(str(i % 12 + 1))
    assert sandbox.token_requests == 1
    assert sandbox.count("GET", "/xapi/v1/") == 394  # and no call was spent on a 401


def test_token_lifetime_is_measured_on_the_local_clock() -> None:
    behind = time.time() - 3 * 3600
    token = jwt.encode({"iat": int(behind), "exp": int(behind) + 3600}, b"k" * 32, algorithm="HS256")
    assert _lifetime(token, 3600) == 3600.0  # exp - iat, never exp - now (which is 2 h in the past)
    no_iat = jwt.encode({"exp": int(behind) + 3600}, b"k" * 32, algorithm="HS256")
    assert _lifetime(no_iat, 1800) == 1800.0  # an exp already past says nothing: expires_in does


@pytest.mark.parametrize("where", ["/xapi/v1/", "/connect/token"])
async def test_a_retry_after_beyond_the_budget_fails_at_once_with_the_pbx_wait(
    sandbox_url: str, sandbox: Sandbox, where: str
) -> None:
    sandbox.inject(Fault(status=429, path=where, retry_after="3600", times=10))
    async with client(sandbox_url, retry=RetryPolicy(attempts=4, max_delay=8, max_total=30)) as xapi:
        with pytest.raises(RateLimited) as caught:
            await xapi.count()
    assert sandbox.count("POST" if where == "/connect/token" else "GET", where) == 1  # no retry, no sleep
    message = caught.value.user_message()
    assert "asks to wait 60 minutes" in message
    assert "a minute" not in message


async def test_a_retry_after_within_the_budget_is_honoured(sandbox_url: str, sandbox: Sandbox) -> None:
    sandbox.inject(Fault(status=429, retry_after="0", times=2))
    async with client(sandbox_url) as xapi:
        assert await xapi.count() == 12
    assert sandbox.count("GET", "/xapi/v1/") == 3


async def test_another_program_on_the_same_api_client_is_named_not_the_credentials(
    sandbox_url: str, sandbox: Sandbox
) -> None:
    def another_program_logs_in(request: RecordedRequest) -> None:
        if request.path.startswith("/xapi/"):
            sandbox.revoke_tokens()  # between our mint and our use, every time

    async with client(sandbox_url) as xapi:
        assert await xapi.count() == 12  # this API client works
        sandbox.hooks.append(another_program_logs_in)
        with pytest.raises(TokenContention) as caught:
            await xapi.get_blacklist_number("1")
    message = caught.value.user_message()
    assert "Another program is probably using the same API client" in message
    assert "own API client" in message
    assert "THREECX_CLIENT_SECRET" not in message  # the key is not what is wrong
    assert sandbox.token_requests == 2  # one re-mint, then it stops


async def test_a_client_that_never_worked_is_told_about_its_credentials_and_access(
    sandbox_url: str, sandbox: Sandbox
) -> None:
    sandbox.inject(Fault(status=401, path="/xapi/", times=10))  # tokens are issued but never accepted
    async with client(sandbox_url) as xapi:
        with pytest.raises(AuthenticationFailed) as caught:
            await xapi.count()
    assert not isinstance(caught.value, TokenContention)
    assert "3CX Configuration API" in caught.value.user_message()
    assert sandbox.token_requests == 2


async def test_the_token_file_is_private_and_holds_no_api_key(
    sandbox_url: str, sandbox: Sandbox, tmp_path: Path
) -> None:
    shared = token_file(sandbox_url, tmp_path / "tokens")
    async with client(sandbox_url, token_file=shared) as xapi:
        assert await xapi.count() == 12
    assert stat.S_IMODE(shared.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(shared.path.parent.stat().st_mode) == 0o700
    text = shared.path.read_text()
    assert SANDBOX_CLIENT_SECRET not in text and SANDBOX_CLIENT_ID not in text
    assert set(json.loads(text)) == {"token", "expires_at"}
    assert json.loads(text)["token"] == bearer_tokens(sandbox)[-1]
    assert SANDBOX_CLIENT_SECRET not in repr(shared)


@pytest.mark.parametrize(
    "damage", [b"", b"{", b'{"token": 5, "expires_at": 1e12}', b"\xff\xfe", b"[]", b"null"]
)
async def test_a_damaged_token_file_is_ignored_and_rewritten(
    sandbox_url: str, sandbox: Sandbox, tmp_path: Path, damage: bytes
) -> None:
    shared = token_file(sandbox_url, tmp_path)
    shared.path.write_bytes(damage)
    async with client(sandbox_url, token_file=shared) as xapi:
        assert await xapi.count() == 12
    assert sandbox.token_requests == 1
    stored = shared.read()
    assert stored is not None and stored.token == bearer_tokens(sandbox)[-1]


async def test_clients_sharing_a_token_file_converge_on_one_token(
    sandbox_url: str, sandbox: Sandbox, tmp_path: Path
) -> None:
    """Two clients with their own memory, as two processes have, and one token file."""
    async with (
        client(sandbox_url, token_file=token_file(sandbox_url, tmp_path)) as first,
        client(sandbox_url, token_file=token_file(sandbox_url, tmp_path)) as second,
    ):
        await first.count()
        await second.count()  # finds the first one's token: no mint of its own
        assert sandbox.token_requests == 1
        sandbox.revoke_tokens()  # something ended the shared token
        await first.count()  # refused: re-mints, and writes the new token to the file
        await second.count()  # refused: finds the first one's new token in the file
        succeeded, failed = await concurrently(second, 8)
        assert (succeeded, failed) == (8, [])
    assert sandbox.token_requests == 2


def test_two_processes_on_one_api_client_converge(sandbox: Sandbox) -> None:
    """The bench at a tiny size: two real OS processes x 8 workers against one sandbox PBX."""
    report = run_token_sharing(processes=2, workers=8, seconds=2.0)
    assert report.calls > 16 and report.failures == 0, report.messages
    assert report.mints <= 3


async def test_the_sandbox_can_play_a_pbx_that_echoes_the_request_in_its_errors(
    sandbox_url: str, sandbox: Sandbox
) -> None:
    """The switches the sanitiser's tests rely on: a token endpoint quoting the submitted form, and an
    API quoting the request headers, in their error texts."""
    sandbox.echo_form_in_errors = sandbox.echo_headers_in_errors = True
    async with httpx2.AsyncClient() as http:
        refused = await http.post(
            f"{sandbox_url}/connect/token",
            data={
                "grant_type": "client_credentials",
                "client_id": SANDBOX_CLIENT_ID,
                "client_secret": "typo-key",
            },
        )
        unauthorized = await http.get(
            f"{sandbox_url}/xapi/v1/BlackListNumbers", headers={"Authorization": "Bearer not-a-live-token"}
        )
    assert refused.status_code == 400 and "client_secret=typo-key" in refused.json()["error_description"]
    assert unauthorized.status_code == 401
    assert "authorization: Bearer not-a-live-token" in unauthorized.json()["error"]["message"]
    sandbox.reset()
    assert not sandbox.echo_form_in_errors and not sandbox.echo_headers_in_errors


def test_a_wrong_key_never_picks_up_the_token_the_right_key_minted(tmp_path: Path) -> None:
    """Otherwise `doctor` with a revoked key would report its credentials as accepted."""
    right = TokenFile.for_client("https://pbx.example.com", "client", "right-key-0123456789", tmp_path)
    wrong = TokenFile.for_client("https://pbx.example.com", "client", "wrong-key-0123456789", tmp_path)
    again = TokenFile.for_client("https://pbx.example.com", "client", "right-key-0123456789", tmp_path)
    assert right is not None and wrong is not None and again is not None
    right.write(StoredToken("minted-by-the-right-key", time.time() + 3600))
    assert wrong.read() is None and again.read() == right.read()
    assert "right-key" not in right.path.name
