"""Streamable HTTP: the MCP app behind a bearer token, bound before it is announced, and served by
uvicorn until a signal, with a short grace for open requests."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import logging
import socket
import sys
from collections.abc import Iterator

import anyio
import uvicorn
from mcp.server.transport_security import TransportSecuritySettings
from pydantic import SecretStr
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from .config import Settings
from .errors import ConfigError
from .pbxs import PbxRoster
from .server import build_server
from .stdio_transport import until_signalled
from .wiring import plans_for

logger = logging.getLogger(__name__)


def is_loopback(host: str) -> bool:
    """Whether binding `host` stays on this machine: a loopback address, or localhost however spelt."""
    if host.lower().rstrip(".") == "localhost":
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


MIN_AUTH_TOKEN_LENGTH = 32


MAKE_A_TOKEN = 'python -c "import secrets; print(secrets.token_urlsafe(32))"'


# Sessions cost memory and the SDK refuses new ones (503) at the cap, so a local flood of `initialize`
# requests could lock every client out until the flood's sessions expire (30 minutes by default).
# A session with a request in flight (real clients hold a GET stream open) never idles; a flood's
# sessions idle at once, so they go after SESSION_IDLE_TIMEOUT seconds and a real client is back
# within seconds. A client that idles without a stream gets 404 and, per the spec, opens a new session.
SESSION_IDLE_TIMEOUT = 10.0


MAX_SESSIONS = 1_000


def auth_token(settings: Settings, host: str) -> SecretStr | None:
    """The bearer token to demand, refusing one short enough to guess; None (blank) only on loopback."""
    token = settings.mcp_auth_token
    if token is None or not token.get_secret_value():
        if is_loopback(host):
            return None
        raise ConfigError(
            f"Serving on {host} exposes the PBX to the network: set THREECX_MCP_AUTH_TOKEN to a long random "
            f"value (clients send it as a bearer token; make one with {MAKE_A_TOKEN}), or bind 127.0.0.1."
        )
    if len(token.get_secret_value()) < MIN_AUTH_TOKEN_LENGTH:
        raise ConfigError(
            f"THREECX_MCP_AUTH_TOKEN is {len(token.get_secret_value())} characters; it needs at least "
            f"{MIN_AUTH_TOKEN_LENGTH} random ones so it cannot be guessed. Make one with {MAKE_A_TOKEN}."
        )
    return token


def http_app(settings: Settings, pbxs: PbxRoster, host: str) -> ASGIApp:
    token = auth_token(settings, host)
    server = build_server(pbxs, read_only=settings.read_only, plans=plans_for(settings))
    security = None if is_loopback(host) else TransportSecuritySettings(enable_dns_rebinding_protection=False)
    app: ASGIApp = server.streamable_http_app(
        host=host,
        transport_security=security,
        session_idle_timeout=SESSION_IDLE_TIMEOUT,
        max_sessions=MAX_SESSIONS,
    )
    return app if token is None else RequireBearerToken(app, token)


# After SIGINT/SIGTERM, how long open requests may finish before they are cut. A client's event
# stream never ends by itself, so without a limit uvicorn would wait for it for ever.
HTTP_SHUTDOWN_GRACE = 2


class _UvicornServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """Leave the signals to `until_signalled`: uvicorn re-raises the one it caught once it has
        shut down, which ends the process in a KeyboardInterrupt traceback or killed by SIGTERM."""
        yield


class _ExpectedShutdownCuts(logging.Filter):
    """uvicorn logs each request it cuts at the end of the grace period as an ERROR with a traceback;
    after a signal that cut is the plan, and stderr should not look like a crash."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], asyncio.CancelledError):
            return False
        return "timeout graceful shutdown exceeded" not in record.getMessage()


def serve_http(app: ASGIApp, listener: socket.socket) -> None:
    """Serve until SIGINT/SIGTERM, then shut down: open requests get a grace period, and the lifespan
    shutdown cancels the tool calls still running, each settling its journal record on the way out."""
    config = uvicorn.Config(
        app, log_level="warning", interface="asgi3", timeout_graceful_shutdown=HTTP_SHUTDOWN_GRACE
    )
    if sys.platform == "win32":  # no POSIX signal handlers: uvicorn's own
        uvicorn.Server(config).run(sockets=[listener])
        return
    server = _UvicornServer(config)
    logging.getLogger("uvicorn.error").addFilter(_ExpectedShutdownCuts())

    def stop() -> None:
        logger.info("open requests get %d s to finish, then are cut", HTTP_SHUTDOWN_GRACE)
        server.should_exit = True

    anyio.run(until_signalled, lambda: server.serve(sockets=[listener]), stop)


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
