"""Settings resolved into what a server needs: the XAPI client factory (with the token file its
processes share), the journal and the plan book, each for the configured PBX. One place, so the
stdio and HTTP servers, `doctor`, `export` and `import` all work on the same state."""

from __future__ import annotations

import logging
from collections.abc import Callable

import httpx2
from pydantic import SecretStr

from .client import XapiClient
from .config import Connection, PbxEndpoint, Settings
from .confirmation import PlanBook
from .journal import Journal
from .sandbox import SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET, Sandbox
from .token_store import TokenFile

logger = logging.getLogger(__name__)


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
