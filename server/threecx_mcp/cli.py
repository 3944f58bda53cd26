"""The `threecx-mcp` command: serve over stdio or streamable HTTP, or run `doctor`, `journal`, `export`
or `import`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hmac
import ipaddress
import logging
import os
import re
import signal
import socket
import sys
import textwrap
import threading
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Self

import anyio
import httpx2
import uvicorn
from mcp.server.mcpserver import MCPServer
from mcp.server.transport_security import TransportSecuritySettings
from pydantic import SecretStr
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from . import __version__, journal_cli, transfer_cli
from .client import XapiClient
from .config import Connection, PbxEndpoint, Settings, SettingsIncomplete, user_config_dir
from .confirmation import PlanBook
from .display import escape, quoted
from .doctor import run_checks, sandbox_mode, sources
from .errors import ConfigError
from .journal import Journal
from .probe import run_probe
from .sandbox import SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET, LoopbackServer, Sandbox
from .server import build_server
from .token_store import TokenFile

logger = logging.getLogger(__name__)


COMMANDS = ("serve", "doctor", "journal", "export", "import")
_SETTINGS_HELP = (
    "Settings come from THREECX_* environment variables, else a .env file in the working directory, "
    "else a .env file in {folder} (THREECX_CONFIG_DIR moves it), which applies wherever the server "
    "starts; see README.md. threecx-mcp doctor says which it read."
)
_SERVE_HELP = """\
commands:
  serve (default)  serve MCP, as below
  doctor           check the settings, the journal, and the way to the PBX (threecx-mcp doctor --help)
  journal          read the safety journal: list, show, export (threecx-mcp journal --help)
  export           write the whole blacklist to a CSV or JSON file (threecx-mcp export --help)
  import           add what a CSV or JSON file holds and the blacklist lacks (threecx-mcp import --help)

serving:
  stdio (the default) is for clients that start the server themselves (Claude Desktop, Cursor,
  VS Code): give them the absolute path of this command. Standard output carries the MCP
  protocol; logs go to standard error.
  --transport http serves streamable HTTP at http://HOST:PORT/mcp for clients that connect to a
  URL; it binds 127.0.0.1:8000 unless --host and --port say otherwise. Any address beyond
  loopback needs THREECX_MCP_AUTH_TOKEN, which every request must send as a bearer token.

{settings}
"""


def port_number(text: str) -> int:
    """--port: a TCP port a client can be told in advance (0, "any free port", could not be)."""
    try:
        port = int(text)
    except ValueError:
        port = 0
    if not 1 <= port <= 65_535:
        raise argparse.ArgumentTypeError(
            f"the port must be a whole number from 1 to 65535, such as 8000, not {escape(text[:40])}"
        )
    return port


_HOST_NAME = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*\.?")


def host_address(text: str) -> str:
    """--host: an IP address (IPv6 with or without brackets) or a host name, nothing more (no scheme,
    no port, no path)."""
    bare = text.strip()
    bare = bare[1:-1] if bare.startswith("[") and bare.endswith("]") else bare
    try:
        return str(ipaddress.ip_address(bare))
    except ValueError:
        if len(bare) <= 253 and _HOST_NAME.fullmatch(bare):
            return bare
    raise argparse.ArgumentTypeError(
        f"give an IP address or a host name, such as 127.0.0.1, 0.0.0.0, ::1 or localhost, without a "
        f"scheme or port (use --port), not {quoted(text, 80)}"
    )


def _serve_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="threecx-mcp",
        usage="%(prog)s [serve] [--transport {stdio,http}] [--host HOST] [--port PORT] [--sandbox] "
        "[--read-only]\n       %(prog)s {doctor,journal,export,import} ...",
        description="MCP server for the caller blacklist of a 3CX PBX.",
        epilog=_SERVE_HELP.format(
            settings=textwrap.fill(_SETTINGS_HELP.format(folder=user_config_dir()), 98)
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--transport",
        choices=("stdio", "http"),
        default="stdio",
        help="stdio (default) for clients that start the server, http (streamable HTTP) for clients "
        "that connect to a URL",
    )
    parser.add_argument(
        "--host", type=host_address, default="127.0.0.1", help="HTTP: the address to bind (default 127.0.0.1)"
    )
    parser.add_argument(
        "--port", type=port_number, default=8000, help="HTTP: the port to listen on, 1-65535 (default 8000)"
    )
    _sandbox_option(parser)
    parser.add_argument(
        "--read-only", action="store_true", help="register no write tools (THREECX_READ_ONLY=true)"
    )
    parser.add_argument("--probe", action="store_true", help=argparse.SUPPRESS)  # to say where it belongs
    parser.add_argument("--version", action="version", version=f"threecx-mcp {__version__}")
    return parser


def _doctor_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="threecx-mcp doctor",
        description="Check, one line each, that this machine can manage the PBX's blacklist: which "
        "settings were read and from where (names only), every missing or wrong setting, that the "
        "safety journal's folder is writable, then DNS, TCP, TLS, the API client's token and "
        "permission to read the blacklist. Each FAIL says what to do. Exit code 0 only if all pass.",
        epilog=_SETTINGS_HELP.format(folder=user_config_dir()),
    )
    _sandbox_option(parser)
    parser.set_defaults(read_only=False)  # what a running server would register does not matter here
    parser.add_argument(
        "--probe",
        action="store_true",
        help="once the checks pass, try out how the PBX treats writes, paging and filters, with one "
        "marker entry that is removed afterwards (journaled); exit code 1 if a step fails",
    )
    return parser


def _sandbox_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--sandbox",
        action="store_true",
        help="use the embedded sandbox PBX instead of THREECX_URL (as THREECX_SANDBOX=true does)",
    )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Options of `serve` (the default) or `doctor`; `journal`, `export` and `import` parse their own.

    A command comes first: `threecx-mcp doctor --sandbox`. Usage errors exit with code 2.
    """
    words = list(sys.argv[1:] if argv is None else argv)
    command = words[0] if words[:1] in (["serve"], ["doctor"]) else "serve"
    if command != "serve" or words[:1] == ["serve"]:
        words = words[1:]
    parser = _doctor_parser() if command == "doctor" else _serve_parser()
    misplaced = next((word for word in words if word in COMMANDS), None)
    if misplaced is not None:
        parser.error(f"give the command first, then its options: threecx-mcp {misplaced} --help shows them")
    args = parser.parse_args(words)
    if command == "serve" and args.probe:
        parser.error("--probe goes with the doctor command: threecx-mcp doctor --probe")
    args.command = command
    return args


SANDBOX_PBX_KEY = "sandbox"


def pbx_key(settings: Settings) -> str:
    """How the journal names the PBX this server manages."""
    return SANDBOX_PBX_KEY if settings.sandbox else settings.endpoint().origin


def journal_for(settings: Settings) -> Journal:
    return Journal(settings.journal_path(), pbx_key(settings), retention_days=settings.journal_retention_days)


def plans_for(settings: Settings) -> PlanBook:
    """Plans beside the journal, so a client that starts a server per call can still apply one."""
    return PlanBook(settings.journal_path().parent / "plans.sqlite3")


def client_factory(settings: Settings) -> Callable[[], XapiClient]:
    if settings.sandbox:  # in-process: no port, no credentials to set
        sandbox = Sandbox()
        return lambda: XapiClient(
            PbxEndpoint.parse("http://sandbox.pbx.invalid"),
            SANDBOX_CLIENT_ID,
            SecretStr(SANDBOX_CLIENT_SECRET),
            timeout=settings.timeout,
            transport=httpx2.ASGITransport(app=sandbox.app),
            max_in_flight=settings.max_in_flight,
        )
    connection = settings.connection()  # resolved once: fails fast, before a client connects
    shared = shared_token_file(settings, connection)
    return lambda: XapiClient.from_connection(connection, token_file=shared)


def shared_token_file(settings: Settings, connection: Connection) -> TokenFile | None:
    """The token file this machine's servers on this PBX and API client share (see `token_store`).

    3CX keeps one token per API client, so two servers minting their own (two desktop clients, or
    stdio beside HTTP) would end each other's sessions. The file lives in the state directory, beside
    the journal: where THREECX_JOURNAL moves this server's state (a writable volume, a test's own
    directory), the tokens go too. Where files cannot be locked (Windows) each process keeps its own
    token, and this says so once, at start.
    """
    directory = settings.journal_path().parent / "tokens"
    shared = TokenFile.for_client(
        connection.endpoint.origin,
        connection.client_id,
        connection.client_secret.get_secret_value(),
        directory,
    )
    if shared is None:
        logger.warning(
            "This platform cannot lock files, so the PBX token is not shared with other threecx-mcp "
            "processes: give each process that runs at the same time its own API client."
        )
    return shared


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


def http_app(settings: Settings, factory: Callable[[], XapiClient], host: str) -> ASGIApp:
    token = auth_token(settings, host)
    server = build_server(
        factory, journal_for(settings), read_only=settings.read_only, plans=plans_for(settings)
    )
    security = None if is_loopback(host) else TransportSecuritySettings(enable_dns_rebinding_protection=False)
    app: ASGIApp = server.streamable_http_app(
        host=host,
        transport_security=security,
        session_idle_timeout=SESSION_IDLE_TIMEOUT,
        max_sessions=MAX_SESSIONS,
    )
    return app if token is None else RequireBearerToken(app, token)


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO, format="threecx-mcp: %(levelname)s %(message)s"
    )
    logging.getLogger("httpx2").setLevel(logging.WARNING)
    if words[:1] == ["journal"]:  # its own arguments, parsed by journal_cli
        return journal(words[1:])
    if words[:1] in (["export"], ["import"]):  # their own arguments, parsed by transfer_cli
        return transfer_cli.main(words, lambda settings: (client_factory(settings), journal_for(settings)))
    args = parse_args(words)
    try:
        overrides = {k: True for k, on in (("sandbox", args.sandbox), ("read_only", args.read_only)) if on}
        settings = Settings.load(**overrides)
        if args.command == "doctor":
            return doctor(settings, probe=args.probe)
        if notice := settings.sandbox_notice():
            logger.warning("%s", notice)
        factory = client_factory(settings)
        if args.transport == "stdio":
            serve_stdio(
                build_server(
                    factory, journal_for(settings), read_only=settings.read_only, plans=plans_for(settings)
                )
            )
            return 0
        app = http_app(settings, factory, args.host)
        listener = bind(args.host, args.port)
    except ConfigError as exc:
        for problem in exc.problems if isinstance(exc, SettingsIncomplete) else (exc,):  # a line each
            print(f"threecx-mcp: {problem.user_message()}", file=sys.stderr)
        return 2
    shown_host = f"[{args.host}]" if ":" in args.host else args.host
    pbx = "the sandbox PBX" if settings.sandbox else settings.endpoint().origin
    print(
        f"threecx-mcp: MCP over streamable HTTP at http://{shown_host}:{args.port}/mcp ({pbx})",
        file=sys.stderr,
    )
    serve_http(app, listener)
    return 0


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


def serve_stdio(server: MCPServer) -> None:
    """Serve stdio until stdin ends or SIGINT/SIGTERM arrives, then stop within seconds.

    The SDK reads stdin in a worker thread, and a task group cannot finish while that thread is
    blocked in a read: on SIGINT the tool calls were cancelled (their journal records settled) but
    the process stayed, deaf, until the client closed the pipe; SIGTERM killed it mid-write. So the
    signals are received here, and the read is ended by a relay in front of fd 0.
    """
    if sys.platform == "win32":  # no POSIX signal handlers or socket fds at fd 0: the SDK's own loop
        server.run("stdio")
        return
    with StdinRelay() as stdin:

        async def serve_until_signalled() -> None:
            serving = anyio.CancelScope()

            async def serve() -> None:
                with serving:
                    await server.run_stdio_async()

            def stop() -> None:
                serving.cancel()  # tool calls are cancelled, and settle their journal records
                stdin.end()  # so that the SDK's stdin reader, and with it the server, can finish

            await until_signalled(serve, stop)

        anyio.run(serve_until_signalled)


async def until_signalled(serve: Callable[[], Awaitable[None]], stop: Callable[[], None]) -> None:
    """Run `serve` until it returns; the first SIGINT or SIGTERM calls `stop`, which makes it return."""
    async with anyio.create_task_group() as group:

        async def watch() -> None:
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for received in signals:
                    logger.info("%s received: stopping", signal.Signals(received).name)
                    stop()
                    return

        group.start_soon(watch)
        await serve()
        group.cancel_scope.cancel()


class StdinRelay:
    """Feed fd 0 from a socket that a daemon thread fills from the real stdin.

    Shutting the socket's read side wakes a thread blocked reading it with end-of-file, which no
    operation on a pipe can do; the daemon thread left blocked on the real stdin does not keep the
    process alive. No descriptor is closed while another thread may use it, so none can be reused
    under a reader.
    """

    def __enter__(self) -> Self:
        self._wire = os.dup(0)
        self._inner, outer = socket.socketpair()
        os.dup2(self._inner.fileno(), 0)
        threading.Thread(target=self._pump, args=(outer,), name="stdin relay", daemon=True).start()
        return self

    def _pump(self, outer: socket.socket) -> None:
        with outer:
            try:
                while data := os.read(self._wire, 65_536):
                    outer.sendall(data)
            except OSError:  # the read side was shut: nobody listens any more
                pass

    def end(self) -> None:
        """Make the reader of fd 0 see end-of-file now."""
        with contextlib.suppress(OSError):
            self._inner.shutdown(socket.SHUT_RD)

    def __exit__(self, *exc: object) -> None:
        self.end()
        os.dup2(self._wire, 0)
        self._inner.close()  # the daemon thread may still block on the wire: that one stays open


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


def doctor(settings: Settings, *, probe: bool = False) -> int:
    """Run the checks; with `probe`, once they pass, the probe too (journaled like the tools' writes)."""
    if settings.sandbox:
        with LoopbackServer(Sandbox().app) as pbx:  # over real TCP, so every check runs for real
            sandbox_settings = settings.model_copy(
                update={
                    "url": pbx.url,
                    "client_id": SANDBOX_CLIENT_ID,
                    "client_secret": SecretStr(SANDBOX_CLIENT_SECRET),
                    "client_secret_file": None,
                    "ca_bundle": None,
                    "sandbox": False,
                }
            )
            # This sandbox lives only as long as the command: its token is not worth sharing.
            connection = sandbox_settings.connection()
            return _doctor(sandbox_settings, lambda: XapiClient.from_connection(connection), settings, probe)
    # Made once the settings check passed, so a bad setting is reported as a doctor line.
    return _doctor(settings, lambda: client_factory(settings)(), settings, probe)


def _doctor(checked: Settings, factory: Callable[[], XapiClient], settings: Settings, probe: bool) -> int:
    """Print what `settings` read, then `checked`'s checks (the sandbox's, when it stands in for the PBX);
    the journal is `settings`', opened only to probe, since naming its PBX needs a valid THREECX_URL."""
    said = [sources(settings), *([sandbox_mode(settings)] if settings.sandbox else [])]
    checks = anyio.run(lambda: run_checks(checked, factory, journal=settings.journal_path()))
    for finding in [*said, *checks]:
        print(finding.line())
    ok = all(c.ok for c in checks)
    if ok:
        print(
            "All checks passed on the sandbox PBX; your PBX was not checked."
            if settings.sandbox
            else "All checks passed."
        )
    else:
        print("Some checks failed; fix each FAIL above and run doctor again.")
    if not ok or not probe:
        return 0 if ok else 1
    print("Probing the PBX with one marker entry (removed at the end):")
    return probe_pbx(factory, journal_for(settings))


def probe_pbx(factory: Callable[[], XapiClient], journal: Journal) -> int:
    async def probe() -> list[str]:
        async with factory() as client:
            return [finding.line() for finding in await run_probe(client, journal)]

    try:
        lines = anyio.run(probe)
    except KeyboardInterrupt:  # the probe's own cleanup ran first, shielded from the cancellation
        print(
            "threecx-mcp: the probe was interrupted after removing its marker entry where it could; "
            "threecx-mcp journal list shows what it changed.",
            file=sys.stderr,
        )
        return 130
    finally:
        journal.close()
    for line in lines:
        print(line)
    failed = [line for line in lines if line.startswith("FAIL")]
    if failed:
        print(
            f"threecx-mcp: the probe found {len(failed)} problem(s); see the FAIL lines above.",
            file=sys.stderr,
        )
        return 1
    print("The probe found nothing this server cannot handle.")
    return 0
