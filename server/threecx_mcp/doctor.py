"""`threecx-mcp doctor`: check, step by step, that this machine can manage the PBX's blacklist."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import anyio

from .client import XapiClient
from .config import Connection, PbxEndpoint, Settings
from .errors import ThreeCXMcpError


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"{'PASS' if self.ok else 'FAIL'}  {self.name}: {self.detail}"


async def run_checks(settings: Settings) -> list[Check]:
    """Every check in order; the first failure ends the run, since later checks would only repeat it."""
    try:
        connection = settings.connection()
    except ThreeCXMcpError as exc:
        return [Check("settings", False, exc.user_message())]
    endpoint = connection.endpoint
    checks = [Check("settings", True, f"PBX at {endpoint.origin}")]

    steps: list[tuple[str, Callable[[], Awaitable[str]]]] = [
        ("dns", lambda: _resolve(endpoint)),
        ("tcp", lambda: _connect(endpoint, connection.timeout)),
    ]
    if endpoint.uses_tls:
        steps.append(("tls", lambda: _handshake(connection)))
    for name, step in steps:
        try:
            checks.append(Check(name, True, await step()))
        except (OSError, TimeoutError, ThreeCXMcpError) as exc:
            checks.append(Check(name, False, _explain(name, exc, endpoint)))
            return checks

    async with XapiClient.from_connection(connection) as client:
        try:
            await client.auth.token()
        except ThreeCXMcpError as exc:
            return [*checks, Check("token", False, exc.user_message())]
        checks.append(Check("token", True, "the API client's credentials were accepted"))
        try:
            total = await client.count()
        except ThreeCXMcpError as exc:
            return [*checks, Check("blacklist", False, exc.user_message())]
    count = "?" if total is None else str(total)
    return [*checks, Check("blacklist", True, f"can read the blacklist ({count} entries)")]


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
    await stream.aclose()
    return "certificate verified" if verify is not False else "connected WITHOUT verifying the certificate"


def _explain(step: str, exc: BaseException, endpoint: PbxEndpoint) -> str:
    fixes = {
        "dns": f"cannot resolve {endpoint.host}: check the spelling in THREECX_URL and this machine's DNS.",
        "tcp": f"nothing answers on {endpoint.host}:{endpoint.port}: check the port in THREECX_URL "
        "(3CX often uses 5001) and any firewall in between.",
        "tls": "the certificate could not be verified: set THREECX_CA_BUNDLE to your CA's PEM file.",
    }
    detail = exc.user_message() if isinstance(exc, ThreeCXMcpError) else f"{type(exc).__name__}: {exc}"
    return f"{fixes[step]} ({detail})"
