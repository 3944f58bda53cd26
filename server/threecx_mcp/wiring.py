"""Settings resolved into what a server needs: the PBXs it manages (each with its client factory, the token
file its processes share, and its view of the journal) and the plan book. One place, so the stdio and HTTP
servers, `doctor`, `export`, `import` and `journal` all work on the same state.

The PBXs come from one of: the config file naming several (see `pbx_file`); `--sandboxes N` (several
embedded sandbox PBXs); or the THREECX_* variables, one unnamed PBX as before. `--sandbox` stands the
embedded sandbox in for every PBX, keeping the config file's names, so a setup can be rehearsed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx2
from pydantic import SecretStr

from .client import XapiClient
from .config import ENV_NAMES, Connection, PbxEndpoint, Settings, SettingsIncomplete
from .confirmation import PlanBook
from .display import quoted
from .errors import ConfigError
from .journal import Journal
from .pbx_file import NamedPbx, PbxFile, read_pbx_file
from .pbxs import Pbx, PbxRoster, listed
from .sandbox import SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET, Sandbox
from .token_store import TokenFile

logger = logging.getLogger(__name__)


SANDBOX_PBX_KEY = "sandbox"
SANDBOX_LOCATION = "sandbox"
# Variables that name the one PBX of the environment setup: with a config file they would be ignored.
_ONE_PBX_VARIABLES = (
    ENV_NAMES.url,
    ENV_NAMES.client_id,
    ENV_NAMES.client_secret,
    ENV_NAMES.client_secret_file,
    ENV_NAMES.ca_bundle,
)


@dataclass(frozen=True)
class PbxSetting:
    """One PBX as configured, before anything is made: its name (None for the one unnamed PBX), its
    journal key, and its connection (None for an embedded sandbox)."""

    name: str | None
    key: str
    connection: Connection | None
    read_only: bool
    # Whether the API key was read from a file (doctor's advice on a refused key names that file's setting).
    secret_in_file: bool = False

    @property
    def location(self) -> str:
        return SANDBOX_LOCATION if self.connection is None else self.connection.endpoint.origin


def pbx_file(settings: Settings) -> PbxFile | None:
    """The config file's PBXs, or None when the THREECX_* variables name the one PBX; a file beside such
    variables is refused, since one of the two would be silently ignored."""
    path = settings.pbx_file_path()
    if path is None:
        return None
    set_too = [variable for variable in _ONE_PBX_VARIABLES if variable in settings.sources.origin]
    if set_too:
        where = ", ".join(f"{variable} (from {settings.sources.where(variable)})" for variable in set_too)
        raise ConfigError(
            f"The config file {path} names the PBXs, but {where} names one too, and would be ignored: move it "
            f"into a [pbx.NAME] table of that file, or remove it."
        )
    if settings.sandboxes:
        raise ConfigError(
            f"--sandboxes (THREECX_SANDBOXES) makes PBXs of its own, but the config file {path} names the PBXs: "
            "use --sandbox to stand the sandbox in for that file's PBXs, or remove one of the two."
        )
    return read_pbx_file(path)


@dataclass(frozen=True)
class Configured:
    """Every PBX configured and checked, the default, the config file they came from (None: the THREECX_*
    variables or --sandboxes), and, for doctor, the problems of the PBXs left out (`faults`, by name)."""

    pbxs: list[PbxSetting]
    default: str | None
    file: Path | None = None
    faults: Mapping[str, tuple[ConfigError, ...]] = field(default_factory=dict)
    # Every name, in the config file's order, those left out for their problems included.
    order: tuple[str, ...] = ()

    @property
    def names(self) -> list[str]:
        """Every PBX's name, in order (none for the one unnamed PBX of the THREECX_* variables)."""
        return list(self.order) or [pbx.name for pbx in self.pbxs if pbx.name is not None]

    def listed(self) -> str:
        """The names as a message offers them: "a", "b" or "c"."""
        return listed(self.names)

    def choose(self, name: str | None, *, option: str = "--pbx") -> PbxSetting:
        """The PBX a command acts on: the one named, else the default, else the only one. A name that is
        not configured, or none where several PBXs and no default are, is refused listing the names; the
        PBX chosen must be configured correctly (another PBX's mistakes do not stop a command on it)."""
        names = self.names
        if name is not None and not names:
            raise unnamed_pbx(name, option)
        if name is None:
            if len(self.pbxs) + len(self.faults) == 1:
                name = names[0] if names else None
            elif self.default is not None:
                name = self.default
            else:
                raise ConfigError(
                    f"Several PBXs are configured and none is the default: say which with {option} NAME, "
                    f"one of {self.listed()}."
                )
        elif name not in names:
            raise ConfigError(
                f"There is no PBX named {quoted(name, 40)}; {option} is one of {self.listed()}."
            )
        if name is not None and name in self.faults:
            raise SettingsIncomplete(list(self.faults[name]))
        return next(pbx for pbx in self.pbxs if pbx.name == name)


def unnamed_pbx(name: str, option: str = "--pbx") -> ConfigError:
    """`option` names a PBX where the THREECX_* variables configure one PBX, which has no name."""
    return ConfigError(
        f"{option} {quoted(name, 40)} names a PBX, but no PBX has a name here: the THREECX_* settings "
        f"configure one PBX (a config file or --sandboxes names several). Run without {option}."
    )


def pbx_settings(settings: Settings, *, collect_problems: bool = False) -> Configured:
    """Every PBX configured, checked; raises a `SettingsIncomplete` naming every problem of every PBX at
    once, or, with `collect_problems` (doctor), leaves out the PBXs at fault and returns their problems."""
    file = pbx_file(settings)
    if file is None and settings.sandboxes:
        names = sandbox_names(settings.sandboxes)
        return Configured(
            [PbxSetting(n, f"{SANDBOX_PBX_KEY}/{n}", None, settings.read_only) for n in names], None
        )
    if file is None:
        if settings.sandbox:
            return Configured([PbxSetting(None, SANDBOX_PBX_KEY, None, settings.read_only)], None)
        connection = settings.connection()
        return Configured([PbxSetting(None, connection.pbx_key, connection, settings.read_only)], None)
    faults: dict[str, tuple[ConfigError, ...]] = {}
    found = []
    for named in file.pbxs:
        try:
            found.append(_named_setting(named, settings))
        except SettingsIncomplete as exc:
            faults[named.name] = exc.problems
        except ConfigError as exc:
            faults[named.name] = (exc,)
    if faults and not collect_problems:
        raise SettingsIncomplete([problem for problems in faults.values() for problem in problems])
    order = tuple(named.name for named in file.pbxs)
    return Configured(found, file.default, file.path, faults, order)


def sandbox_names(count: int) -> list[str]:
    """The names of --sandboxes N's embedded sandbox PBXs."""
    return [f"sandbox-{number}" for number in range(1, count + 1)]


def _named_setting(named: NamedPbx, settings: Settings) -> PbxSetting:
    read_only = named.read_only or settings.read_only
    if named.problems:
        raise SettingsIncomplete(list(named.problems))
    if named.access is None or settings.sandbox:
        return PbxSetting(named.name, f"{SANDBOX_PBX_KEY}/{named.name}", None, read_only)
    connection = named.access.connection(settings.timeout, settings.max_in_flight)
    in_file = named.access.client_secret_file is not None
    return PbxSetting(named.name, connection.pbx_key, connection, read_only, in_file)


def roster_for(settings: Settings) -> PbxRoster:
    """The PBXs a server on these settings manages, each with its client factory and journal view."""
    configured = pbx_settings(settings)
    return PbxRoster([made(settings, pbx) for pbx in configured.pbxs], configured.default)


def made(settings: Settings, pbx: PbxSetting) -> Pbx:
    """One configured PBX with its journal view and client factory."""
    journal = Journal(settings.journal_path(), pbx.key, retention_days=settings.journal_retention_days)
    return Pbx(pbx.name, pbx.location, journal, client_factory(settings, pbx.connection), pbx.read_only)


def pbx_for(settings: Settings, name: str | None, *, option: str = "--pbx") -> Pbx:
    """The PBX a command-line command (export, import) acts on: the one `option` names, else the default,
    else the only one (see `Configured.choose`)."""
    return made(settings, pbx_settings(settings, collect_problems=True).choose(name, option=option))


def journal_for(settings: Settings) -> Journal:
    """The journal of the one PBX of these settings (`doctor --probe` writes to it)."""
    return roster_for(settings).pick(None).journal


def plans_for(settings: Settings) -> PlanBook:
    """Plans beside the journal, so a client that starts a server per call can still apply one."""
    return PlanBook(settings.journal_path().parent / "plans.sqlite3")


def client_factory(settings: Settings, connection: Connection | None) -> Callable[[], XapiClient]:
    """How to make a PBX's client: over its connection, sharing the token with this machine's other
    processes; or, with no connection, on an embedded sandbox of its own (in-process: no port, no
    credentials to set; each sandbox PBX has its own entries and tokens)."""
    if connection is None:
        sandbox = Sandbox()
        return lambda: XapiClient(
            PbxEndpoint.parse("http://sandbox.pbx.invalid"),
            SANDBOX_CLIENT_ID,
            SecretStr(SANDBOX_CLIENT_SECRET),
            timeout=settings.timeout,
            transport=httpx2.ASGITransport(app=sandbox.app),
            max_in_flight=settings.max_in_flight,
        )
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
