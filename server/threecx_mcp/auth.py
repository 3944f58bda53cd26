"""OAuth2 client-credentials auth for XAPI, as an httpx2 auth flow.

A 3CX PBX keeps only one access token per API client alive: minting a new one kills
the old. So every request in this process shares one token, minted by one request at
a time, and a 401 re-mints once and retries once.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Generator

import anyio
import httpx2
import jwt
from pydantic import SecretStr

from .errors import AuthenticationFailed, UnexpectedResponse
from .http_errors import error_from_response, unexpected_body

TokenPoster = Callable[[str, dict[str, str]], Awaitable[httpx2.Response]]

_REFRESH_MARGIN_SECONDS = 60.0
_DEFAULT_LIFETIME_SECONDS = 3600.0


class ClientCredentialsAuth(httpx2.Auth):
    """Bearer auth whose token comes from `POST /connect/token` and is shared by all requests."""

    def __init__(self, token_url: str, client_id: str, client_secret: SecretStr, post: TokenPoster) -> None:
        self._token_url = token_url
        self._client_id = client_id
        self._client_secret = client_secret
        self._post = post
        self._lock = anyio.Lock()
        self._token: str | None = None
        self._expires_at = 0.0
        self.mint_count = 0

    def __repr__(self) -> str:
        return f"ClientCredentialsAuth(client_id={self._client_id!r}, token_url={self._token_url!r})"

    async def async_auth_flow(
        self, request: httpx2.Request
    ) -> AsyncGenerator[httpx2.Request, httpx2.Response]:
        token = await self.token()
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code == 401:
            # Our token may have been replaced by another process minting for the same API client.
            token = await self.token(stale=token)
            request.headers["Authorization"] = f"Bearer {token}"
            yield request

    def sync_auth_flow(self, request: httpx2.Request) -> Generator[httpx2.Request, httpx2.Response, None]:
        raise RuntimeError("ClientCredentialsAuth works only with an async client")

    async def token(self, *, stale: str | None = None) -> str:
        """A valid token; mints one (once, for all waiters) when none is valid or `stale` was refused.

        A waiter whose refused token was already replaced by another waiter gets the new one.
        """
        async with self._lock:
            if self._token is not None and self._token != stale and time.time() < self._expires_at:
                return self._token
            self._token = None
            token, lifetime = await self._mint()
            self._token = token
            self._expires_at = time.time() + max(lifetime - min(_REFRESH_MARGIN_SECONDS, lifetime / 10), 0.0)
            return token

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
        if response.status_code in (400, 401):
            code, description = _oauth_error(response)
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
    try:
        body = response.json()
        return str(body.get("error") or "") or None, str(body.get("error_description") or "") or None
    except (ValueError, AttributeError):
        return None, None


def _lifetime(token: str, expires_in: object) -> float:
    """Seconds the token lives: the JWT's own `exp` when it has one, else `expires_in` (seconds)."""
    try:
        exp = jwt.decode(token, options={"verify_signature": False}).get("exp")
        if isinstance(exp, int | float):
            return max(float(exp) - time.time(), 0.0)
    except jwt.PyJWTError:
        pass
    if isinstance(expires_in, int | float | str):
        try:
            return max(float(expires_in), 0.0)
        except ValueError:
            pass
    return _DEFAULT_LIFETIME_SECONDS
