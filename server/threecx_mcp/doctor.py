"""`threecx-mcp doctor`: check, step by step, that this machine can manage the PBX's blacklist.

First what was read (which .env files and variables, by name only: a value could be the API key),
then every setting that is missing or wrong at once, whether the journal's folder takes an fsynced
write and an existing journal opens as the server opens it (a journal that cannot be written stops
every change the tools would make), and then the network, in order. Each failure names its own
cause and fix: a TLS failure is diagnosed from the exception's cause chain (see
`http_errors.tls_error`), so an IP address instead of the certificate's name, an expired
certificate, or a port that speaks the other protocol is never answered with "set THREECX_CA_BUNDLE".
Every line passes the sanitiser: what the PBX said is shown redacted and escaped. `check_pbx` is the way
to one PBX; the CLI runs it once per PBX of a config file, whose lines name the [pbx.NAME] keys to fix
instead of the THREECX_* variables.
"""

from __future__ import annotations

import os
import re
import socket
import ssl
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import anyio
import anyio.abc

from .client import XapiClient
from .config import (
    COMMAND_LINE,
    ENV_NAMES,
    Connection,
    PbxEndpoint,
    SettingNames,
    Settings,
    SettingsIncomplete,
    user_config_dir,
)
from .errors import AuthenticationFailed, HttpsOnlyPort, JournalError, ThreeCXMcpError, in_words
from .http_errors import tls_error
from .journal import Journal
from .sanitise import clean

_LINE_LIMIT = 2_000
_SCHEME_PROBE_SECONDS = 5.0  # a plain-HTTP server may wait for more than a TLS hello: then it is not TLS


# INFO: what doctor read, not a check; NOTE: works, but worth knowing.
Verdict = Literal["INFO", "PASS", "NOTE", "FAIL"]


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


def sources(settings: Settings) -> Finding:
    """Which .env files and which variables were read, by name; where to put a .env a desktop client finds."""
    by_source: dict[str, list[str]] = {}
    for variable, where in sorted(settings.sources.origin.items()):
        by_source.setdefault(where, []).append(variable)
    read = "; ".join(f"{', '.join(names)} from {where}" for where, names in by_source.items())
    sentences = [f"read {read}" if read else "no THREECX_* setting found"]
    absent = [str(path) for path in settings.sources.env_files if not path.is_file()]
    if absent:
        sentences.append(f"No .env at {' or '.join(absent)}")
    sentences.append(
        f"Settings for every folder go in {user_config_dir() / '.env'} (precedence: the command line, "
        "the environment, a .env in the working directory, then that file)"
    )
    for name, (where, winner) in sorted(settings.sources.overridden.items()):
        sentences.append(
            f"{name} (from {where}) is ignored: {winner} from {settings.sources.where(winner)} gives the same "
            "setting and comes first"
        )
    if unknown := settings.sources.unknown:
        names = ", ".join(f"{name} (from {where})" for name, where in sorted(unknown.items()))
        sentences.append(f"Ignored, as no setting has that name: {names}")
    return Finding("sources", "INFO", ". ".join(sentences) + ".")


def sandbox_mode(settings: Settings) -> Finding:
    """Said first when doctor tests the sandbox: a forgotten THREECX_SANDBOX must never pass for the PBX."""
    notice = settings.sandbox_notice()
    origin = settings.sources.where("THREECX_SANDBOX")
    how = "--sandbox" if origin == COMMAND_LINE else f"THREECX_SANDBOX=true from {origin}"
    return Finding(
        "sandbox",
        "NOTE",
        notice or f"testing the embedded sandbox PBX ({how}), not a real one; nothing here checks your PBX",
    )


def check_journal(path: Path) -> Finding:
    """Create, fsync and delete a file beside the journal, then open an existing journal as the server
    does: a failure of either would stop every tool's change, since nothing is changed on the PBX
    before the journal holds its record. The folder is created as the server would on first use
    (mode 0700); a journal not made yet is left for the server to make."""
    folder = path.parent
    try:
        if not folder.is_dir():
            folder.mkdir(parents=True, mode=0o700)
        descriptor, probe = tempfile.mkstemp(dir=folder, prefix=".doctor-", suffix=".probe")
        try:
            os.write(descriptor, b"threecx-mcp doctor\n")
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
            os.unlink(probe)
    except (FileExistsError, NotADirectoryError):  # a file where a folder on the way should be
        blocking = next(p for p in (folder, *folder.parents) if p.exists())
        problem = f"cannot make the journal {path}: {blocking} is a file, not a folder; move it away"
    except OSError as exc:
        reason = exc.strerror or "an operating-system error"
        problem = f"cannot write the journal {path} ({reason}); make {folder} writable for this user"
    else:
        exists = path.exists()
        refused = _open_journal(path) if exists else None
        if refused is None:
            opens = ", and the journal opens as the server opens it" if exists else ""
            return _check("journal", True, f"{path} (its folder takes an fsynced write{opens})")
        return _check("journal", False, refused)
    return _check("journal", False, f"{problem}. {JournalError.hint}")


def _open_journal(path: Path) -> str | None:
    """Why the server could not use the journal file at `path` (not SQLite, another program's database,
    a newer format, a special file), in the journal's own words; None if it can. Opened as the server
    opens it, except that no old operation is deleted (retention 0)."""
    journal = Journal(path, None, retention_days=0)
    try:
        anyio.run(journal.recent, 1)
    except JournalError as exc:
        return exc.user_message()
    finally:
        journal.close()
    return None


async def run_checks(
    settings: Settings,
    make_client: Callable[[], XapiClient] | None = None,
    *,
    journal: Path | None = None,
    sandbox: bool = False,
) -> list[Finding]:
    """Every check in order: every settings problem, the journal, then the network, where the first
    failure ends the run, since later steps would only repeat it.

    `journal` is the journal file to check (default: the one `settings` names). `make_client` is how
    the CLI shares the running servers' token (see `token_store`): a doctor minting its own token
    would end theirs, since 3CX keeps one per API client. `sandbox`: `settings` point at the embedded
    sandbox standing in for the PBX, so its URL is not THREECX_URL.
    """
    journal_check = await anyio.to_thread.run_sync(check_journal, journal or settings.journal_path())
    try:
        connection = settings.connection()
    except SettingsIncomplete as exc:
        return [*(_check("settings", False, p.user_message()) for p in exc.problems), journal_check]
    except ThreeCXMcpError as exc:
        return [_check("settings", False, exc.user_message()), journal_check]
    checks = [_check("settings", True, f"PBX at {connection.endpoint.origin}"), journal_check]
    secret_in_file = settings.client_secret_file is not None
    return checks + await check_pbx(connection, make_client, sandbox=sandbox, secret_in_file=secret_in_file)


async def check_pbx(
    connection: Connection,
    make_client: Callable[[], XapiClient] | None = None,
    *,
    sandbox: bool = False,
    secret_in_file: bool = False,
) -> list[Finding]:
    """The way to one PBX, in order: DNS, TCP, TLS (or that an http:// port speaks no TLS), the API client's
    token, then reading the blacklist; the first failure ends the run. Each line names the setting to fix
    where the user wrote it (a THREECX_* variable, or a key of the PBX's [pbx.NAME] table)."""
    checks = await _network_checks(connection, make_client, sandbox=sandbox, secret_in_file=secret_in_file)
    return _named(checks, connection.names)


async def _network_checks(
    connection: Connection,
    make_client: Callable[[], XapiClient] | None,
    *,
    sandbox: bool,
    secret_in_file: bool,
) -> list[Finding]:
    endpoint = connection.endpoint
    checks: list[Finding] = []
    steps: list[tuple[str, Callable[[], Awaitable[str]]]] = [
        ("dns", lambda: _resolve(endpoint)),
        ("tcp", lambda: _connect(endpoint, connection.timeout)),
    ]
    if endpoint.uses_tls:
        steps.append(("tls", lambda: _handshake(connection)))
    else:
        steps.append(("scheme", lambda: _plain_http(endpoint, "the sandbox's URL" if sandbox else None)))
    for name, step in steps:
        try:
            checks.append(_check(name, True, await step()))
        except (OSError, TimeoutError, ThreeCXMcpError) as exc:
            ca_bundle = isinstance(connection.verify, ssl.SSLContext)
            explained = _explain(name, exc, connection, ca_bundle=ca_bundle)
            checks.append(_check(name, False, explained))
            return checks

    async with (make_client or (lambda: XapiClient.from_connection(connection)))() as client:
        try:
            await client.auth.token()
        except ThreeCXMcpError as exc:
            return [*checks, _check("token", False, _token_refused(exc, secret_in_file))]
        checks.append(_check("token", True, "the API client's credentials were accepted"))
        try:
            total = await client.count()
        except ThreeCXMcpError as exc:
            return [*checks, _check("blacklist", False, exc.user_message())]
    count = "?" if total is None else str(total)
    return [*checks, _check("blacklist", True, f"can read the blacklist ({count} entries)")]


# The variables a line may name, longest first, and the field of `SettingNames` naming the same setting.
_VARIABLES = re.compile(r"THREECX_(CLIENT_SECRET_FILE|CLIENT_SECRET|CLIENT_ID|CA_BUNDLE|VERIFY_TLS|URL)\b")


def _named(findings: list[Finding], names: SettingNames) -> list[Finding]:
    """Findings whose advice names THREECX_* variables, reworded for a PBX configured elsewhere (the config
    file's [pbx.NAME] table): "url of [pbx.hq] in /path/config.toml" instead of THREECX_URL."""
    if names == ENV_NAMES:
        return findings
    return [
        Finding(f.name, f.verdict, _VARIABLES.sub(lambda m: getattr(names, m[1].lower()), f.detail))
        for f in findings
    ]


def _token_refused(exc: ThreeCXMcpError, secret_in_file: bool) -> str:
    """The token step's failure; when the API key came from a file, the advice names that variable, not
    THREECX_CLIENT_SECRET (which `AuthenticationFailed`'s hint names, as most users set it)."""
    said = exc.user_message()
    if isinstance(exc, AuthenticationFailed) and secret_in_file:
        return said.replace("(THREECX_CLIENT_SECRET)", "(in the file THREECX_CLIENT_SECRET_FILE names)")
    return said


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


async def _plain_http(endpoint: PbxEndpoint, named: str | None = None) -> str:
    """THREECX_URL (or, as `named` says, another URL) says http://: fail if the port completes a TLS
    handshake, so it wants https://."""
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE  # only the protocol is asked
    try:
        with anyio.fail_after(_SCHEME_PROBE_SECONDS):
            stream = await anyio.connect_tcp(
                endpoint.host.strip("[]"), endpoint.port, tls=True, ssl_context=context
            )
    except (OSError, TimeoutError, anyio.BrokenResourceError, anyio.EndOfStream):
        return f"port {endpoint.port} does not speak HTTPS, as {named or 'the http:// in THREECX_URL'} says"
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


def _explain(step: str, exc: BaseException, connection: Connection, *, ca_bundle: bool) -> str:
    endpoint = connection.endpoint
    if isinstance(exc, ThreeCXMcpError):
        return exc.user_message()
    if step == "tls":
        tls = tls_error(exc, endpoint.origin, ca_bundle=ca_bundle)
        if tls is not None:
            return tls.user_message()
    where = f"{endpoint.host}:{endpoint.port}"
    failed, fix = {
        "dns": (
            f"cannot resolve {endpoint.host}",
            "check the spelling in THREECX_URL and this machine's DNS",
        ),
        "tcp": (
            f"nothing answers on {where}",
            "check the port in THREECX_URL (3CX often uses 5001) and any firewall in between",
        ),
        "tls": (
            f"the TLS handshake with {where} failed",
            "check that THREECX_URL names the PBX's HTTPS address and port",
        ),
    }[step]
    if isinstance(exc, TimeoutError):
        said = f"no answer within {in_words(connection.timeout)}"
    else:  # the operating system's words, never a Python class name
        said = (exc.strerror if isinstance(exc, OSError) else None) or str(exc) or "no reason given"
    return f"{failed} ({said}): {fix}."
