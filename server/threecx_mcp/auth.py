"""OAuth2 client-credentials auth for XAPI, as an httpx2 auth flow.

A 3CX PBX keeps only one access token per API client alive: minting a new one kills
the old, and it blocks an IP after a few failed logins. So logins here are scarce:

- every request in this process shares one token, and one mint runs at a time; calls that
  waited for it take its outcome, token or error, and never start their own;
- after the PBX refuses the credentials, no login is tried for a cool-down: calls fail fast;
- a throttled or unavailable token endpoint (429, 503) is retried by the one caller that
  mints, within the retry budget, never by each waiter;
- the token's lifetime is measured on the local clock (`exp - iat`, or `expires_in`), so a
  PBX whose clock is hours off does not cause one mint per call;
- processes on one machine using one API client share the token through a locked file
  (`token_store`), so they converge on one token instead of ending each other's sessions;
- a 401 retries once with a fresh token; when even a fresh token is refused by a PBX that
  has accepted this API client before, the error says another program is probably logging
  in with the same API client, instead of blaming the credentials.
"""

from __future__ import annotations

import copy
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Generator
from typing import Protocol

import anyio
import httpx2
import jwt
from pydantic import SecretStr

from .errors import (
    AuthenticationFailed,
    LoginPaused,
    PbxServerError,
    PbxUnreachable,
    RateLimited,
    TlsError,
    TokenContention,
    UnexpectedResponse,
)
from .http_errors import TRANSIENT_STATUSES, error_from_response, unexpected_body
from .sanitise import remember_secret, remember_token
from .token_store import StoredToken, TokenFile

TokenPoster = Callable[[str, dict[str, str]], Awaitable[httpx2.Response]]

_REFRESH_MARGIN_SECONDS = 60.0
_DEFAULT_LIFETIME_SECONDS = 3600.0
DEFAULT_LOGIN_COOLDOWN_SECONDS = 30.0


class RetryBudget(Protocol):
    """How long to wait before another attempt, or None when the budget (count, time) is spent."""

    def pause(self, attempt: int, retry_after: float | None, elapsed: float) -> float | None: ...


class _NoRetry:
    def pause(self, attempt: int, retry_after: float | None, elapsed: float) -> float | None:
        return None


_NO_RETRY = _NoRetry()


class ClientCredentialsAuth(httpx2.Auth):
    """Bearer auth whose token comes from `POST /connect/token` and is shared by all requests."""

    def __init__(
        self,
        token_url: str,
        client_id: str,
        client_secret: SecretStr,
        post: TokenPoster,
        *,
        retry: RetryBudget = _NO_RETRY,
        login_cooldown: float = DEFAULT_LOGIN_COOLDOWN_SECONDS,
        shared: TokenFile | None = None,
    ) -> None:
        self._token_url = token_url
        self._client_id = client_id
        self._client_secret = client_secret
        remember_secret(client_secret.get_secret_value())  # redacted from every text shown from now on
        self._post = post
        self._retry = retry
        self.login_cooldown = login_cooldown
        self._shared = shared
        self._lock = anyio.Lock()
        self._token: str | None = None
        self._expires_at = 0.0  # time.monotonic() after which the token is not offered any more
        self._outcomes = 0  # mints finished (either way): a waiter that saw this change takes the outcome
        self._failure: Exception | None = None  # the last mint's error, None after a success
        self._no_login_until = float("-inf")  # time.monotonic() before which no login is tried
        self._accepted = False  # whether the PBX has ever accepted one of this object's tokens
        self.mint_count = 0  # token requests sent, retries included

    def __repr__(self) -> str:
        return f"ClientCredentialsAuth(client_id={self._client_id!r}, token_url={self._token_url!r})"

    async def async_auth_flow(
        self, request: httpx2.Request
    ) -> AsyncGenerator[httpx2.Request, httpx2.Response]:
        token = await self.token()
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code != 401:
            self._accepted = True
            return
        # Our token may have been replaced by another process minting for the same API client.
        token = await self.token(stale=token)
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code != 401:
            self._accepted = True
        elif self._accepted:
            # A token this fresh cannot have expired, and this API client has worked before.
            raise TokenContention("The PBX refused a token minted moments ago.", status=401)

    def sync_auth_flow(self, request: httpx2.Request) -> Generator[httpx2.Request, httpx2.Response, None]:
        raise RuntimeError("ClientCredentialsAuth works only with an async client")

    async def token(self, *, stale: str | None = None) -> str:
        """A valid token; mints one (once, for all waiters) when none is valid or `stale` was refused.

        A call that waited while another minted gets that mint's outcome: its token (even when
        the refused `stale` token was its own) or its error.
        """
        if self._token is not None and self._token != stale and time.monotonic() < self._expires_at:
            return (
                self._token
            )  # the common case, without the lock's checkpoint (a bulk write asks per request)
        seen = self._outcomes
        async with self._lock:
            if self._outcomes != seen and self._failure is not None:
                raise copy.copy(self._failure)
            paused_for = self._no_login_until - time.monotonic()
            if paused_for > 0 and isinstance(self._failure, AuthenticationFailed):
                raise LoginPaused(self._failure, paused_for)
            if paused_for > 0 and isinstance(self._failure, RateLimited):
                raise RateLimited(  # the token endpoint's own wait, counted down: no login before it ends
                    "The PBX's token endpoint asked this server to wait before logging in again.",
                    retry_after=paused_for,
                    status=self._failure.status,
                )
            if self._token is not None and self._token != stale and time.monotonic() < self._expires_at:
                return self._token
            self._token = self._failure = None  # a mint that ends without an outcome (cancelled) leaves none
            try:
                stored = await self._obtain(stale)
            except Exception as exc:  # whatever ended the mint is every waiter's outcome, not a cue to retry
                self._failure = exc
                if isinstance(exc, AuthenticationFailed):
                    self._no_login_until = time.monotonic() + self.login_cooldown
                elif isinstance(exc, RateLimited) and exc.retry_after:
                    self._no_login_until = time.monotonic() + exc.retry_after  # beyond the retry budget
                raise
            finally:
                self._outcomes += 1
            self._failure = None
            self._token = stored.token
            remember_token(stored.token, self)
            self._expires_at = time.monotonic() + (stored.expires_at - time.time())
            return stored.token

    async def _obtain(self, stale: str | None) -> StoredToken:
        """Another process's token when it minted one that was not the one refused, else a new one."""
        if self._shared is None:
            return await self._mint_with_retries()
        async with self._shared.locked():
            held = self._shared.read()
            if held is not None and held.token != stale and held.expires_at > time.time():
                return held
            stored = await self._mint_with_retries()
            self._shared.write(stored)
            return stored

    async def _mint_with_retries(self) -> StoredToken:
        """One mint, retried here (and only here) while the token endpoint is throttled or down."""
        started = time.monotonic()
        attempt = 0
        while True:
            try:
                token, lifetime = await self._mint()
                margin = min(_REFRESH_MARGIN_SECONDS, lifetime / 10)
                return StoredToken(token, time.time() + max(lifetime - margin, 0.0))
            except (RateLimited, PbxServerError, PbxUnreachable) as exc:
                transient = not isinstance(exc, TlsError) and (
                    not isinstance(exc, PbxServerError) or exc.status in TRANSIENT_STATUSES
                )
                retry_after = exc.retry_after if isinstance(exc, RateLimited) else None
                delay = self._retry.pause(attempt, retry_after, time.monotonic() - started)
                if not transient or delay is None:
                    raise
            attempt += 1
            await anyio.sleep(delay)

    async def _mint(self) -> tuple[str, float]:
        self.mint_count += 1
        response = await self._post(
            self._token_url,
            {
                "client_id": self._client_id,
                "client_secret": self._client_secret.get_secret_value(),
                "grant_type": "client_credentials",
            },
        )
        code, description = _oauth_error(response)
        # A 400 is a refusal only in OAuth's words: a proxy's page for http:// on the HTTPS port is a 400 too.
        if response.status_code == 401 or (response.status_code == 400 and code is not None):
            raise AuthenticationFailed(
                "The PBX refused the API client's credentials.",
                status=response.status_code,
                code=code,
                pbx_message=description,
            )
        if not response.is_success:
            raise error_from_response(response)
        try:
            body = response.json()
            token = body["access_token"]
        except (ValueError, KeyError, TypeError):
            raise unexpected_body(response, "a JSON token answer") from None
        if not isinstance(token, str) or not token:
            raise UnexpectedResponse("The PBX's token answer carried no access token.")
        return token, _lifetime(token, body.get("expires_in"))


def _oauth_error(response: httpx2.Response) -> tuple[str | None, str | None]:
    if response.is_success:
        return None, None
    try:
        body = response.json()
        return str(body.get("error") or "") or None, str(body.get("error_description") or "") or None
    except (ValueError, AttributeError):
        return None, None


def _lifetime(token: str, expires_in: object) -> float:
    """Seconds the token lives, counted from now on the local clock.

    The JWT's own span (`exp - iat`) when it has both: a PBX whose clock is off still issues
    tokens that live that long. Without `iat`, `exp - now` only when that is positive (a PBX
    clock far behind would make it negative and cost one mint per call), else `expires_in`.
    """
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        claims = {}
    exp, iat = claims.get("exp"), claims.get("iat")
    if isinstance(exp, int | float) and isinstance(iat, int | float) and exp > iat:
        return float(exp - iat)
    if isinstance(exp, int | float) and exp > time.time():
        return float(exp) - time.time()
    if isinstance(expires_in, int | float | str):
        try:
            return max(float(expires_in), 0.0)
        except ValueError:
            pass
    return _DEFAULT_LIFETIME_SECONDS
