"""The `threecx-mcp` command: serve over stdio or streamable HTTP, or run `doctor`."""

from __future__ import annotations

import argparse
import hmac
import ipaddress
import logging
import socket
import sys
from collections.abc import Callable, Sequence

import anyio
import httpx2
import uvicorn
from mcp.server.transport_security import TransportSecuritySettings
from pydantic import SecretStr
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from . import __version__, journal_cli
from .client import XapiClient
from .config import PbxEndpoint, Settings
from .doctor import run_checks
from .errors import ConfigError
from .journal import Journal
from .sandbox import SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET, LoopbackServer, Sandbox
from .server import build_server


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="threecx-mcp",
        description="MCP server for the caller blacklist of a 3CX PBX. Settings come from THREECX_* "
        "environment variables (or a .env file); see README.md.",
    )
    parser.add_argument(
        "command",
        nargs="?",
        choices=("serve", "doctor", "journal"),
        default="serve",
        help="serve (default), doctor (check the setup), or journal (read the safety journal; "
        "see threecx-mcp journal --help)",
    )
    parser.add_argument("--transport", choices=("stdio", "http"), default="stdio", help="default: stdio")
    parser.add_argument("--host", default="127.0.0.1", help="HTTP bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="HTTP port (default 8000)")
    parser.add_argument(
        "--sandbox", action="store_true", help="use the embedded sandbox PBX (THREECX_SANDBOX=true)"
    )
    parser.add_argument(
        "--read-only", action="store_true", help="register no write tools (THREECX_READ_ONLY=true)"
    )
    parser.add_argument("--version", action="version", version=f"threecx-mcp {__version__}")
    return parser.parse_args(argv)


SANDBOX_PBX_KEY = "sandbox"


def pbx_key(settings: Settings) -> str:
    """How the journal names the PBX this server manages."""
    return SANDBOX_PBX_KEY if settings.sandbox else settings.endpoint().origin


def journal_for(settings: Settings) -> Journal:
    return Journal(settings.journal_path(), pbx_key(settings), retention_days=settings.journal_retention_days)


def client_factory(settings: Settings) -> Callable[[], XapiClient]:
    if settings.sandbox:  # in-process: no port, no credentials to set
        sandbox = Sandbox()
        return lambda: XapiClient(
            PbxEndpoint.parse("http://sandbox.pbx.invalid"),
            SANDBOX_CLIENT_ID,
            SecretStr(SANDBOX_CLIENT_SECRET),
            timeout=settings.timeout,
            transport=httpx2.ASGITransport(app=sandbox.app),
        )
    connection = settings.connection()  # resolved once: fails fast, before a client connects
    return lambda: XapiClient.from_connection(connection)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class RequireBearerToken:
    """Refuse every HTTP request that lacks `Authorization: Bearer <THREECX_MCP_AUTH_TOKEN>`."""

    def __init__(self, app: ASGIApp, token: SecretStr) -> None:
        self.app = app
        self._expected = f"Bearer {token.get_secret_value()}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not hmac.compare_digest(given, self._expected):
                response = JSONResponse(
                    {
                        "error": "unauthorized",
                        "error_description": "Send Authorization: Bearer <THREECX_MCP_AUTH_TOKEN>.",
                    },
                    status_code=401,
                    headers={"WWW-Authenticate": "Bearer"},
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def http_app(settings: Settings, factory: Callable[[], XapiClient], host: str) -> ASGIApp:
    token = settings.mcp_auth_token
    if not is_loopback(host) and (token is None or not token.get_secret_value()):
        raise ConfigError(
            f"Serving on {host} exposes the PBX to the network: set THREECX_MCP_AUTH_TOKEN to a long random "
            "value (clients send it as a bearer token), or bind 127.0.0.1."
        )
    server = build_server(factory, journal_for(settings), read_only=settings.read_only)
    security = None if is_loopback(host) else TransportSecuritySettings(enable_dns_rebinding_protection=False)
    app: ASGIApp = server.streamable_http_app(host=host, transport_security=security)
    return RequireBearerToken(app, token) if token is not None and token.get_secret_value() else app


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO, format="threecx-mcp: %(levelname)s %(message)s"
    )
    logging.getLogger("httpx2").setLevel(logging.WARNING)
    if words[:1] == ["journal"]:  # its own arguments, parsed by journal_cli
        return journal(words[1:])
    args = parse_args(words)
    try:
        overrides = {k: True for k, on in (("sandbox", args.sandbox), ("read_only", args.read_only)) if on}
        settings = Settings.load(**overrides)
        if args.command == "doctor":
            return doctor(settings)
        if args.command == "journal":
            return journal([])
        factory = client_factory(settings)
        if args.transport == "stdio":
            build_server(factory, journal_for(settings), read_only=settings.read_only).run("stdio")
            return 0
        app = http_app(settings, factory, args.host)
        listener = bind(args.host, args.port)
    except ConfigError as exc:
        print(f"threecx-mcp: {exc.user_message()}", file=sys.stderr)
        return 2
    shown_host = f"[{args.host}]" if ":" in args.host else args.host
    pbx = "the sandbox PBX" if settings.sandbox else settings.endpoint().origin
    print(
        f"threecx-mcp: MCP over streamable HTTP at http://{shown_host}:{args.port}/mcp ({pbx})",
        file=sys.stderr,
    )
    config = uvicorn.Config(app, log_level="warning", interface="asgi3")
    uvicorn.Server(config).run(sockets=[listener])
    return 0


def journal(words: Sequence[str]) -> int:
    """`threecx-mcp journal …`: this PBX's operations when one is configured, else every PBX's."""
    try:
        settings = Settings.load()
        key = pbx_key(settings) if settings.sandbox or settings.url else None
    except ConfigError as exc:
        print(f"threecx-mcp: {exc.user_message()}", file=sys.stderr)
        return 2
    return journal_cli.main(words, settings.journal_path(), key)


def bind(host: str, port: int) -> socket.socket:
    """Bind before announcing the URL, so a busy port is a clear error rather than a traceback."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        listener = socket.socket(family, kind, proto)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(address)
    except OSError as exc:
        raise ConfigError(
            f"Cannot listen on {host}:{port} ({exc.strerror or exc}); pass another --port, or stop what uses it."
        ) from None
    return listener


def doctor(settings: Settings) -> int:
    if settings.sandbox:
        with LoopbackServer(Sandbox().app) as pbx:  # over real TCP, so every check runs for real
            sandbox_settings = settings.model_copy(
                update={
                    "url": pbx.url,
                    "client_id": SANDBOX_CLIENT_ID,
                    "client_secret": SecretStr(SANDBOX_CLIENT_SECRET),
                    "sandbox": False,
                }
            )
            return doctor(sandbox_settings)
    checks = anyio.run(run_checks, settings)
    for check in checks:
        print(check.line())
    ok = all(c.ok for c in checks)
    print("All checks passed." if ok else "Some checks failed; fix the first FAIL and run doctor again.")
    return 0 if ok else 1
