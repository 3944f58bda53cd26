"""`threecx-mcp doctor`: check, step by step, that this machine can manage the PBX's blacklist.

Each failure names its own cause and fix: a TLS failure is diagnosed from the exception's cause
chain (see `http_errors.tls_error`), so an IP address instead of the certificate's name, an
expired certificate, or a port that speaks the other protocol is never answered with "set
THREECX_CA_BUNDLE". Every line passes the sanitiser: what the PBX said is shown redacted and escaped.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

import anyio
import anyio.abc

from .client import XapiClient
from .config import Connection, PbxEndpoint, Settings
from .errors import HttpsOnlyPort, ThreeCXMcpError
from .http_errors import tls_error
from .sanitise import clean

_LINE_LIMIT = 2_000
_SCHEME_PROBE_SECONDS = 5.0  # a plain-HTTP server may wait for more than a TLS hello: then it is not TLS


Verdict = Literal["PASS", "NOTE", "FAIL"]


@dataclass(frozen=True)
class Finding:
    """One line of doctor (and of its probe): what was checked, the verdict, and what to do about it."""

    name: str
    verdict: Verdict
    detail: str

    @property
    def ok(self) -> bool:
        return self.verdict != "FAIL"

    def line(self) -> str:
        return f"{self.verdict}  {self.name}: {clean(self.detail, _LINE_LIMIT)}"


def _check(name: str, ok: bool, detail: str) -> Finding:
    return Finding(name, "PASS" if ok else "FAIL", detail)


async def run_checks(
    settings: Settings, make_client: Callable[[], XapiClient] | None = None
) -> list[Finding]:
    """Every check in order; the first failure ends the run, since later checks would only repeat it.

    `make_client` is how the CLI shares the running servers' token (see `token_store`): a doctor
    minting its own token would end theirs, since 3CX keeps one per API client.
    """
    try:
        connection = settings.connection()
    except ThreeCXMcpError as exc:
        return [_check("settings", False, exc.user_message())]
    endpoint = connection.endpoint
    checks = [_check("settings", True, f"PBX at {endpoint.origin}")]

    steps: list[tuple[str, Callable[[], Awaitable[str]]]] = [
        ("dns", lambda: _resolve(endpoint)),
        ("tcp", lambda: _connect(endpoint, connection.timeout)),
    ]
    if endpoint.uses_tls:
        steps.append(("tls", lambda: _handshake(connection)))
    else:
        steps.append(("scheme", lambda: _plain_http(endpoint)))
    for name, step in steps:
        try:
            checks.append(_check(name, True, await step()))
        except (OSError, TimeoutError, ThreeCXMcpError) as exc:
            checks.append(
                _check(name, False, _explain(name, exc, endpoint, ca_bundle=settings.ca_bundle is not None))
            )
            return checks

    async with (make_client or (lambda: XapiClient.from_connection(connection)))() as client:
        try:
            await client.auth.token()
        except ThreeCXMcpError as exc:
            return [*checks, _check("token", False, exc.user_message())]
        checks.append(_check("token", True, "the API client's credentials were accepted"))
        try:
            total = await client.count()
        except ThreeCXMcpError as exc:
            return [*checks, _check("blacklist", False, exc.user_message())]
    count = "?" if total is None else str(total)
    return [*checks, _check("blacklist", True, f"can read the blacklist ({count} entries)")]


async def _resolve(endpoint: PbxEndpoint) -> str:
    infos = await anyio.getaddrinfo(endpoint.host.strip("[]"), endpoint.port, type=socket.SOCK_STREAM)
    return f"{endpoint.host} resolves to {', '.join(sorted({str(i[4][0]) for i in infos}))}"


async def _connect(endpoint: PbxEndpoint, timeout: float) -> str:
    with anyio.fail_after(timeout):
        stream = await anyio.connect_tcp(endpoint.host.strip("[]"), endpoint.port)
    await stream.aclose()
    return f"port {endpoint.port} accepts connections"


async def _handshake(connection: Connection) -> str:
    endpoint, verify = connection.endpoint, connection.verify
    context = verify if isinstance(verify, ssl.SSLContext) else ssl.create_default_context()
    if verify is False:
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    with anyio.fail_after(connection.timeout):
        stream = await anyio.connect_tcp(
            endpoint.host.strip("[]"), endpoint.port, tls=True, ssl_context=context
        )
    await _close(stream)
    return "certificate verified" if verify is not False else "connected WITHOUT verifying the certificate"


async def _plain_http(endpoint: PbxEndpoint) -> str:
    """THREECX_URL says http://: fail if the port completes a TLS handshake, so it wants https://."""
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE  # only the protocol is asked
    try:
        with anyio.fail_after(_SCHEME_PROBE_SECONDS):
            stream = await anyio.connect_tcp(
                endpoint.host.strip("[]"), endpoint.port, tls=True, ssl_context=context
            )
    except (OSError, TimeoutError, anyio.BrokenResourceError, anyio.EndOfStream):
        return f"port {endpoint.port} does not speak HTTPS, as the http:// in THREECX_URL says"
    await _close(stream)
    raise HttpsOnlyPort(
        f"THREECX_URL says http://, but port {endpoint.port} of {endpoint.host} speaks HTTPS."
    )


async def _close(stream: anyio.abc.ByteStream) -> None:
    """Close after a handshake; a server that hung up first changes nothing about the answer."""
    try:
        await stream.aclose()
    except (OSError, anyio.BrokenResourceError):
        pass


def _explain(step: str, exc: BaseException, endpoint: PbxEndpoint, *, ca_bundle: bool) -> str:
    if isinstance(exc, ThreeCXMcpError):
        return exc.user_message()
    if step == "tls":
        tls = tls_error(exc, endpoint.origin, ca_bundle=ca_bundle)
        if tls is not None:
            return tls.user_message()
    fixes = {
        "dns": f"cannot resolve {endpoint.host}: check the spelling in THREECX_URL and this machine's DNS.",
        "tcp": f"nothing answers on {endpoint.host}:{endpoint.port}: check the port in THREECX_URL "
        "(3CX often uses 5001) and any firewall in between.",
        "tls": f"the TLS handshake with {endpoint.host}:{endpoint.port} failed: check that THREECX_URL names "
        "the PBX's HTTPS address and port.",
    }
    return f"{fixes[step]} ({type(exc).__name__}: {exc})"
