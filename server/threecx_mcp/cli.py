"""The `threecx-mcp` command: serve over stdio or streamable HTTP, or run `doctor`, `journal`, `export`
or `import`."""

from __future__ import annotations

import argparse
import logging
import sys
import textwrap
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field

import anyio
from pydantic import SecretStr

from . import __version__, journal_cli, transfer_cli
from .arguments import Parser, add_pbx, add_sandbox_options, host_address, port_number, sandbox_overrides
from .client import XapiClient
from .config import COMMAND_LINE, Connection, PbxEndpoint, Settings, SettingsIncomplete, user_config_dir
from .display import quoted
from .doctor import Finding, check_journal, check_pbx, run_checks, sandbox_mode, sources
from .errors import ConfigError
from .http_transport import bind, http_app, serve_http
from .journal import Journal
from .pbxs import PbxRoster, listed
from .probe import run_probe
from .sandbox import SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET, LoopbackServer, Sandbox
from .server import build_server
from .stdio_transport import serve_stdio
from .wiring import (
    SANDBOX_LOCATION,
    Configured,
    PbxSetting,
    client_factory,
    journal_for,
    pbx_settings,
    plans_for,
    roster_for,
    unnamed_pbx,
)

logger = logging.getLogger(__name__)


COMMANDS = ("serve", "doctor", "journal", "export", "import")
_SETTINGS_HELP = (
    "Settings come from THREECX_* environment variables, else a .env file in the working directory, "
    "else a .env file in {folder} (THREECX_CONFIG_DIR moves it), which applies wherever the server "
    "starts; see README.md. threecx-mcp doctor says which it read. Several PBXs are named in config.toml "
    "beside that .env (THREECX_CONFIG names another file), one [pbx.NAME] table each; then every tool, "
    "and export, import, journal and doctor with --pbx NAME, say which PBX."
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
        usage="%(prog)s [serve] [--transport {stdio,http}] [--host HOST] [--port PORT] "
        "[--sandbox | --sandboxes N] [--read-only]\n       %(prog)s {doctor,journal,export,import} ...",
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
        "permission to read the blacklist. With a config file naming several PBXs, every PBX is "
        "checked, each under its name (or only the one --pbx names). Each FAIL says what to do. "
        "Exit code 0 only if all pass.",
        epilog=_SETTINGS_HELP.format(folder=user_config_dir()),
    )
    _sandbox_option(parser)
    add_pbx(parser, "check (default: every PBX)")
    parser.set_defaults(read_only=False)  # what a running server would register does not matter here
    parser.add_argument(
        "--probe",
        action="store_true",
        help="once the checks pass, try out how the PBX treats writes, paging and filters, with one "
        "marker entry that is removed afterwards (journaled); exit code 1 if a step fails. With "
        "several PBXs, say which with --pbx",
    )
    return parser


def _sandbox_option(parser: argparse.ArgumentParser) -> None:
    add_sandbox_options(
        parser,
        "use the embedded sandbox PBX instead of THREECX_URL (as THREECX_SANDBOX=true does); with a "
        "config file, a sandbox stands in for each of its PBXs, keeping their names",
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
        overrides = sandbox_overrides(args.sandbox, args.sandboxes) | (
            {"read_only": True} if args.read_only else {}
        )
        settings = Settings.load(collect_problems=args.command == "doctor", **overrides)
        if args.command == "doctor":
            return doctor(settings, probe=args.probe, pbx=args.pbx)
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
        return "the sandbox PBX" if location == SANDBOX_LOCATION else location
    default = f"; default {pbxs.default}" if pbxs.default else ""
    where = [
        f"{pbx.name} (an embedded sandbox)"
        if pbx.location == SANDBOX_LOCATION
        else f"{pbx.name} at {pbx.location}"
        for pbx in pbxs.pbxs
    ]
    return f"{len(pbxs.pbxs)} PBXs: " + ", ".join(where) + default


def journal(words: Sequence[str]) -> int:
    """`threecx-mcp journal …`: this PBX's operations when one is configured, every PBX's when several are
    (each line naming its PBX) or none; `--pbx NAME` reads one PBX of several."""
    named = False
    try:
        settings = Settings.load()
        named = settings.sandboxes > 0 or settings.pbx_file_path() is not None
        configured = (
            pbx_settings(settings, collect_problems=True)
            if named or settings.sandbox or settings.url
            else None
        )
    except ConfigError as exc:
        if not named:
            for problem in exc.problems if isinstance(exc, SettingsIncomplete) else (exc,):  # a line each
                print(f"threecx-mcp journal: {problem.user_message()}", file=sys.stderr)
            return 2
        # The journal is still worth reading (an API key's variable may be set only in a client's env
        # block): every PBX's operations, by journal key; --pbx is answered with the file's problems.
        print(
            "threecx-mcp journal: the config file cannot be used as it stands (threecx-mcp doctor lists its "
            "problems), so PBXs are shown by their journal key, not by name.",
            file=sys.stderr,
        )

        unusable = exc

        def refused(name: str) -> str:
            raise unusable

        return journal_cli.main(words, settings.journal_path(), None, choose=refused)
    if configured is None:  # no PBX configured: every PBX's operations
        return journal_cli.main(words, settings.journal_path(), None)
    own = configured.pbxs[0].key if len(configured.pbxs) == 1 and not configured.faults else None
    names: dict[str, list[str]] = {}
    for pbx in configured.pbxs:
        if pbx.name is not None:
            names.setdefault(pbx.key, []).append(pbx.name)

    def key_of(name: str) -> str:
        return configured.choose(name).key

    return journal_cli.main(
        words,
        settings.journal_path(),
        own,
        names={key: " or ".join(found) for key, found in names.items()},
        choose=key_of if configured.names else None,
    )


def doctor(settings: Settings, *, probe: bool = False, pbx: str | None = None) -> int:
    """Run the checks; with `probe`, once they pass, the probe too (journaled like the tools' writes).

    The one PBX of the THREECX_* variables is checked as it always was; the PBXs of a config file or of
    --sandboxes are each checked under their name (see `_doctor_pbxs`), or only the one `pbx` names."""
    try:
        named = settings.sandboxes > 0 or settings.pbx_file_path() is not None
    except ConfigError as exc:  # THREECX_CONFIG names no file
        return _doctor_pbxs(settings, probe=probe, pbx=pbx, refused=exc)
    if named:
        return _doctor_pbxs(settings, probe=probe, pbx=pbx)
    if pbx is not None:
        print(f"threecx-mcp doctor: {unnamed_pbx(pbx).user_message()}", file=sys.stderr)
        return 2
    if settings.sandbox:
        with LoopbackServer(Sandbox().app) as server:  # over real TCP, so every check runs for real
            sandbox_settings = settings.model_copy(
                update={
                    "url": server.url,
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
    if settings.read_only:
        print(
            "threecx-mcp doctor: THREECX_READ_ONLY is set, so the probe, which writes a marker entry, was not run.",
            file=sys.stderr,
        )
        return 2
    print("Probing the PBX with one marker entry (removed at the end):")
    return probe_pbx(factory, journal_for(settings))


@dataclass
class _Section:
    """One PBX doctor checks under its name: its setting (None when its problems left it out), how to reach
    it (a sandbox's loopback server, once started), and its findings."""

    name: str
    setting: PbxSetting | None
    problems: tuple[ConfigError, ...] = ()
    connection: Connection | None = None
    factory: Callable[[], XapiClient] | None = None
    served_at: str | None = None
    findings: list[Finding] = field(default_factory=list)

    @property
    def sandbox(self) -> bool:
        return self.setting is not None and self.setting.connection is None

    @property
    def ok(self) -> bool:
        return not self.problems and all(finding.ok for finding in self.findings)

    def heading(self) -> str:
        where = "an embedded sandbox PBX" if self.sandbox else self.setting.location if self.setting else None
        return f"== PBX {quoted(self.name, 40)}" + (f" ({where})" if where else "") + " =="


def _doctor_pbxs(
    settings: Settings, *, probe: bool, pbx: str | None, refused: ConfigError | None = None
) -> int:
    """doctor over the PBXs of a config file or of --sandboxes: what was read, every problem at once (the
    file's, each naming its table and key, and every PBX's), the journal once, then a section per PBX
    headed by its name, each with the network, token and blacklist checks; a sandbox PBX is served on a
    loopback port for them, as `doctor --sandbox` serves its one. Exit code 0 only if every PBX passes."""
    problems = [*settings.unusable, *([refused] if refused else [])]
    configured = None
    if refused is None:
        try:
            configured = pbx_settings(settings, collect_problems=True)
        except SettingsIncomplete as exc:
            problems.extend(exc.problems)
        except ConfigError as exc:
            problems.append(exc)
    sections: list[_Section] = []
    if configured is not None:
        if pbx is not None and pbx not in configured.names:
            try:
                configured.choose(pbx)
            except ConfigError as exc:
                print(f"threecx-mcp doctor: {exc.user_message()}", file=sys.stderr)
                return 2
        chosen = [name for name in configured.names if pbx in (None, name)]
        if probe and len(chosen) > 1:
            print(
                "threecx-mcp doctor: --probe writes a marker entry to one PBX, so with several PBXs say which "
                f"with --pbx NAME, one of {configured.listed()}. Nothing was checked.",
                file=sys.stderr,
            )
            return 2
        by_name = {setting.name: setting for setting in configured.pbxs}
        sections = [_Section(n, by_name.get(n), configured.faults.get(n, ())) for n in chosen]
    said = [sources(settings), _config_read(settings, configured)]
    if settings.sandbox or settings.sandboxes:
        said.append(_sandboxes_note(settings))
    for finding in said:
        print(finding.line())
    for problem in problems:
        print(Finding("settings", "FAIL", problem.user_message()).line())
    journal = check_journal(settings.journal_path())
    print(journal.line())
    with ExitStack() as servers:
        for section in sections:
            _reach(section, settings, servers)
        anyio.run(_check_sections, sections, settings)
        for section in sections:
            print(section.heading())
            for finding in section.findings:
                print(finding.line())
        ok = journal.ok and not problems and all(section.ok for section in sections)
        print(_verdict(ok, sections, bool(problems) or not journal.ok))
        if not ok or not probe:
            return 0 if ok else 1
        (section,) = sections
        assert section.setting is not None and section.factory is not None
        if section.setting.read_only:
            print(
                f"threecx-mcp doctor: PBX {quoted(section.name, 40)} is configured read-only, so the probe, "
                "which writes a marker entry, was not run.",
                file=sys.stderr,
            )
            return 2
        print(f"Probing PBX {quoted(section.name, 40)} with one marker entry (removed at the end):")
        journal_view = Journal(
            settings.journal_path(), section.setting.key, retention_days=settings.journal_retention_days
        )
        return probe_pbx(section.factory, journal_view)


def _config_read(settings: Settings, configured: Configured | None) -> Finding:
    """Which config file was read and the PBXs it names (names only), or which --sandboxes made."""
    if configured is not None and configured.file is None:
        return Finding(
            "config",
            "INFO",
            f"--sandboxes made {len(configured.names)} embedded sandbox PBXs: "
            f"{listed(configured.names, 'and')}; no config file is read beside them",
        )
    try:
        path = settings.pbx_file_path()
    except ConfigError:
        return Finding("config", "INFO", "no config file was read: the one named does not exist (see below)")
    if configured is None:
        where = "no config file" if path is None else f"the config file {path}"
        return Finding(
            "config", "INFO", f"read {where}; the problems below stop every PBX from being checked"
        )
    default = f"; default PBX {quoted(configured.default, 40)}" if configured.default else "; no default PBX"
    count = len(configured.names)
    return Finding(
        "config",
        "INFO",
        f"read {path}: {count} PBX{'s' if count != 1 else ''}, {listed(configured.names, 'and')}{default}",
    )


def _sandboxes_note(settings: Settings) -> Finding:
    """Said first when the sandbox stands in: a forgotten THREECX_SANDBOX(ES) must never pass for a PBX."""
    variable = "THREECX_SANDBOXES" if settings.sandboxes else "THREECX_SANDBOX"
    origin = settings.sources.where(variable)
    if settings.sandboxes:
        how = f"--sandboxes {settings.sandboxes}" if origin == COMMAND_LINE else f"{variable} from {origin}"
        what = f"{settings.sandboxes} embedded sandbox PBXs"
    else:
        how = "--sandbox" if origin == COMMAND_LINE else f"{variable}=true from {origin}"
        what = "an embedded sandbox PBX standing in for each PBX of the config file"
    return Finding("sandbox", "NOTE", f"testing {what} ({how}), not real ones; nothing here checks your PBXs")


def _reach(section: _Section, settings: Settings, servers: ExitStack) -> None:
    """How doctor reaches the section's PBX: its connection, sharing the running servers' token; or, for a
    sandbox, one served on a loopback port for as long as the command runs (its token not shared)."""
    setting = section.setting
    if setting is None:
        return
    if setting.connection is not None:
        section.connection, section.factory = setting.connection, client_factory(settings, setting.connection)
        return
    server = servers.enter_context(LoopbackServer(Sandbox().app))
    connection = Connection(
        PbxEndpoint.parse(server.url),
        SANDBOX_CLIENT_ID,
        SecretStr(SANDBOX_CLIENT_SECRET),
        True,
        settings.timeout,
        settings.max_in_flight,
    )
    section.connection, section.served_at = connection, server.url
    section.factory = lambda: XapiClient.from_connection(connection)


async def _check_sections(sections: Sequence[_Section], settings: Settings) -> None:
    """Every section's checks, several PBXs at once (each waits up to THREECX_TIMEOUT for an answer)."""
    limit = anyio.CapacityLimiter(8)

    async def check(section: _Section) -> None:
        if section.setting is None:
            section.findings = [Finding("settings", "FAIL", p.user_message()) for p in section.problems]
            return
        assert section.connection is not None
        said: list[Finding] = []
        if section.sandbox:
            said.append(Finding("sandbox", "NOTE", _sandbox_why(section, settings)))
        said.append(Finding("settings", "PASS", f"PBX at {section.connection.endpoint.origin}"))
        async with limit:
            checks = await check_pbx(
                section.connection,
                section.factory,
                sandbox=section.sandbox,
                secret_in_file=section.setting.secret_in_file,
            )
        section.findings = [*said, *checks]

    async with anyio.create_task_group() as group:
        for section in sections:
            group.start_soon(check, section)


def _sandbox_why(section: _Section, settings: Settings) -> str:
    """Why a section's PBX is a sandbox, said before its checks: its checks pass for no real PBX."""
    if settings.sandboxes:
        why = "made by --sandboxes"
    elif settings.sandbox:
        why = "standing in for the PBX of that name (--sandbox)"
    else:
        why = f"sandbox = true in its [pbx.{section.name}] table"
    return (
        f"PBX {quoted(section.name, 40)} is an embedded sandbox PBX ({why}), not a real one, served at "
        f"{section.served_at} for these checks"
    )


def _verdict(ok: bool, sections: Sequence[_Section], shared_failed: bool) -> str:
    """The last line: which PBXs passed (saying which are sandboxes), or which failed."""
    names = [section.name for section in sections]
    if not ok:
        failed = [section.name for section in sections if not section.ok]
        on = (
            f" on {'PBX' if len(failed) == 1 else 'PBXs'} {listed(failed, 'and')}"
            if failed and not shared_failed
            else ""
        )
        return f"Some checks failed{on}; fix each FAIL above and run doctor again."
    sandboxes = [section.name for section in sections if section.sandbox]
    if not sections:
        return "All checks passed."
    if len(sandboxes) == len(sections):
        return (
            f"All checks passed on the sandbox {'PBX' if len(names) == 1 else 'PBXs'} {listed(names, 'and')}; "
            "no real PBX was checked."
        )
    passed = f"All checks passed on {'PBX' if len(names) == 1 else 'PBXs'} {listed(names, 'and')}"
    if sandboxes:
        are = "is an embedded sandbox" if len(sandboxes) == 1 else "are embedded sandboxes"
        return f"{passed} ({listed(sandboxes, 'and')} {are}, not a real PBX)."
    return f"{passed}."


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
