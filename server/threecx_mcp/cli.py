"""The `threecx-mcp` command: serve over stdio or streamable HTTP, or run `doctor`, `journal`, `export`
or `import`."""

from __future__ import annotations

import argparse
import logging
import sys
import textwrap
from collections.abc import Callable, Sequence

import anyio
from pydantic import SecretStr

from . import __version__, journal_cli, transfer_cli
from .arguments import Parser, host_address, port_number
from .client import XapiClient
from .config import Settings, SettingsIncomplete, user_config_dir
from .doctor import run_checks, sandbox_mode, sources
from .errors import ConfigError
from .http_transport import bind, http_app, serve_http
from .journal import Journal
from .pbxs import PbxRoster
from .probe import run_probe
from .sandbox import SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET, LoopbackServer, Sandbox
from .server import build_server
from .stdio_transport import serve_stdio
from .wiring import journal_for, plans_for, roster_for

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


def _serve_parser() -> argparse.ArgumentParser:
    parser = Parser(
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
    parser = Parser(
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


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO, format="threecx-mcp: %(levelname)s %(message)s"
    )
    logging.getLogger("httpx2").setLevel(logging.WARNING)
    if words[:1] == ["journal"]:  # its own arguments, parsed by journal_cli
        return journal(words[1:])
    if words[:1] in (["export"], ["import"]):  # their own arguments, parsed by transfer_cli
        return transfer_cli.main(words)
    args = parse_args(words)
    try:
        overrides = {k: True for k, on in (("sandbox", args.sandbox), ("read_only", args.read_only)) if on}
        settings = Settings.load(collect_problems=args.command == "doctor", **overrides)
        if args.command == "doctor":
            return doctor(settings, probe=args.probe)
        if notice := settings.sandbox_notice():
            logger.warning("%s", notice)
        pbxs = roster_for(settings)
        if args.transport == "stdio":
            serve_stdio(build_server(pbxs, read_only=settings.read_only, plans=plans_for(settings)))
            return 0
        app = http_app(settings, pbxs, args.host)
        listener = bind(args.host, args.port)
    except ConfigError as exc:
        for problem in exc.problems if isinstance(exc, SettingsIncomplete) else (exc,):  # a line each
            print(f"threecx-mcp: {problem.user_message()}", file=sys.stderr)
        return 2
    shown_host = f"[{args.host}]" if ":" in args.host else args.host
    print(
        f"threecx-mcp: MCP over streamable HTTP at http://{shown_host}:{args.port}/mcp ({serving(pbxs)})",
        file=sys.stderr,
    )
    serve_http(app, listener)
    return 0


def serving(pbxs: PbxRoster) -> str:
    """What the start-up line says the server manages: "the sandbox PBX", an origin, or every PBX by name."""
    if not pbxs.several:
        location = pbxs.pbxs[0].location
        return "the sandbox PBX" if location == "sandbox" else location
    default = f"; default {pbxs.default}" if pbxs.default else ""
    return (
        f"{len(pbxs.pbxs)} PBXs: " + ", ".join(f"{pbx.name} at {pbx.location}" for pbx in pbxs.pbxs) + default
    )


def journal(words: Sequence[str]) -> int:
    """`threecx-mcp journal …`: this PBX's operations when one is configured, else every PBX's."""
    try:
        settings = Settings.load()
        pbxs = roster_for(settings) if settings.sandbox or settings.url else None
        key = pbxs.pick(None).key if pbxs is not None and not pbxs.several else None
    except ConfigError as exc:
        print(f"threecx-mcp: {exc.user_message()}", file=sys.stderr)
        return 2
    return journal_cli.main(words, settings.journal_path(), key)


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
    return _doctor(settings, lambda: roster_for(settings).pick(None).make_client(), settings, probe)


def _doctor(checked: Settings, factory: Callable[[], XapiClient], settings: Settings, probe: bool) -> int:
    """Print what `settings` read, then `checked`'s checks (the sandbox's, when it stands in for the PBX);
    the journal is `settings`', opened only to probe, since naming its PBX needs a valid THREECX_URL."""
    said = [sources(settings), *([sandbox_mode(settings)] if settings.sandbox else [])]
    checks = anyio.run(
        lambda: run_checks(checked, factory, journal=settings.journal_path(), sandbox=settings.sandbox)
    )
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
