"""Settings from the environment and .env files, where they came from, and PBX URL normalisation.

Precedence, highest first: the command line (`--sandbox`, `--read-only`), environment variables
(what a client's `env` block sets), a `.env` in the working directory, a `.env` in the user config
directory. Desktop clients start the server in a folder the user cannot choose, so the user config
directory is where a desktop user keeps settings; a project folder's `.env` is more specific and
wins over it, and a client configuration's own `env` wins over both. Precedence holds per setting:
the API key given as THREECX_CLIENT_SECRET in one source and as THREECX_CLIENT_SECRET_FILE in a lower
one is taken from the higher. Each source is read once, here, and a value is never shown (it could be
the API key): messages name the variable and its source.
"""

from __future__ import annotations

import codecs
import io
import ipaddress
import logging
import os
import re
import ssl
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

import platformdirs
from dotenv.main import resolve_variables
from dotenv.parser import parse_stream
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, SecretStr, ValidationError, field_validator

from .display import quoted
from .errors import ConfigError
from .sanitise import clean, remember_secret

logger = logging.getLogger(__name__)

ENV_PREFIX = "THREECX_"
_DEFAULT_PORTS = {"https": 443, "http": 80}
_T = TypeVar("_T")
# Where to look for the user's .env instead of the per-user config directory (tests, portable setups).
CONFIG_DIR_VARIABLE = f"{ENV_PREFIX}CONFIG_DIR"
ENVIRONMENT = "the environment"
COMMAND_LINE = "the command line"
CONFIG_FILE_NAME = "config.toml"  # the config file naming several PBXs (see `pbx_file`), beside the .env


@dataclass(frozen=True)
class SettingNames:
    """How messages name one PBX's settings: the THREECX_* variables, or the keys of its `[pbx.NAME]`
    table in the config file. A message must send the user to the place they actually wrote."""

    url: str
    client_id: str
    client_secret: str
    client_secret_file: str
    verify_tls: str
    ca_bundle: str

    @classmethod
    def table(cls, name: str, path: Path) -> SettingNames:
        where = f"of [pbx.{name}] in {path}"
        return cls(*(f"{key} {where}" for key in _PBX_KEYS))


_PBX_KEYS = ("url", "client_id", "client_secret", "client_secret_file", "verify_tls", "ca_bundle")
ENV_NAMES = SettingNames(*(f"{ENV_PREFIX}{key.upper()}" for key in _PBX_KEYS))


def user_config_dir() -> Path:
    """The folder whose .env applies wherever the server starts: THREECX_CONFIG_DIR, or the per-user
    config directory (~/.config/threecx-mcp on Linux, ~/Library/Application Support/threecx-mcp on
    macOS, %LOCALAPPDATA%\\threecx-mcp on Windows)."""
    chosen = os.environ.get(CONFIG_DIR_VARIABLE, "").strip()
    return Path(chosen) if chosen else Path(platformdirs.user_config_dir("threecx-mcp", appauthor=False))


def env_files() -> tuple[Path, ...]:
    """The .env files to read, lowest precedence first (a later file wins)."""
    user, local = user_config_dir() / ".env", Path.cwd() / ".env"
    same = user.exists() and local.exists() and user.resolve() == local.resolve()
    return (local,) if same else (user, local)


def read_env_file(path: Path) -> dict[str, str]:
    """A .env file's non-empty THREECX_* settings, by upper-case name, read once.

    python-dotenv parses the lines (quotes, `export`, `${VAR}`), but it would decode the file only as
    UTF-8, failing with a traceback on Windows Notepad's "Unicode" (UTF-16), and warn about a bad line
    without naming the file. So the file is decoded here, and each line it cannot parse is reported
    by file and line number, never by its text, which could be an API key pasted on a line of its own.
    """
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"The settings file {clean(str(path), None)} cannot be read ({exc.strerror or 'an operating-system error'})."
        ) from None
    try:
        text = raw.decode("utf-8-sig")  # a BOM, as Notepad's "UTF-8 with BOM" writes, is fine
    except UnicodeDecodeError:
        utf16 = raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE))
        saved = (
            "as UTF-16 (what Windows Notepad calls Unicode)" if utf16 else "in an encoding other than UTF-8"
        )
        raise ConfigError(
            f"The settings file {clean(str(path), None)} is saved {saved}, so it cannot be read. Save it again "
            "as UTF-8 (in Notepad: File > Save as, Encoding: UTF-8)."
        ) from None
    bindings = list(parse_stream(io.StringIO(text)))
    for binding in bindings:
        if binding.error:
            quotes = any(quote in binding.original.string for quote in "\"'")
            logger.warning(
                "%s, line %d, is not a KEY=value setting, so it is ignored; correct or remove it%s.",
                clean(str(path), None),
                binding.original.line,
                " (is a quote left open?)" if quotes else "",
            )
    pairs = ((b.key, b.value) for b in bindings if b.key is not None)
    return {
        name.upper(): value
        for name, value in resolve_variables(pairs, override=True).items()
        if value and name.upper().startswith(ENV_PREFIX)
    }


def environment_settings() -> dict[str, str]:
    """The environment's non-empty THREECX_* variables, by upper-case name (any case counts, as on Windows)."""
    return {
        name.upper(): value
        for name, value in os.environ.items()
        if value and name.upper().startswith(ENV_PREFIX)
    }


# A layer: where settings came from (a .env file's path, or ENVIRONMENT) and what it set, by variable.
Layer = tuple[str, Mapping[str, str]]
# Variables that give one setting in two ways: the API key, or a file holding it.
_ALTERNATIVES = ((f"{ENV_PREFIX}CLIENT_SECRET", f"{ENV_PREFIX}CLIENT_SECRET_FILE"),)


@dataclass(frozen=True)
class SettingSources:
    """Where each setting came from, by variable name, for `doctor`; never a value, so never a secret.

    `origin` maps each THREECX_* variable in effect to its source: the environment, a .env file's
    path, or the command line. `unknown` maps THREECX_* names the server does not know (typos, such
    as THREECX_CLIENT_SECERT) to where they were found: each is otherwise silently ignored.
    `overridden` maps a variable set aside to where it was found and the variable that won over it:
    precedence holds per setting, so THREECX_CLIENT_SECRET in the environment beats
    THREECX_CLIENT_SECRET_FILE in a .env, and only two ways to give the key in one place contradict.
    """

    env_files: tuple[Path, ...]
    origin: Mapping[str, str] = field(default_factory=dict)
    unknown: Mapping[str, str] = field(default_factory=dict)
    overridden: Mapping[str, tuple[str, str]] = field(default_factory=dict)

    @classmethod
    def find(
        cls,
        known: set[str],
        files: tuple[Path, ...],
        layers: Sequence[Layer],
        overrides: Mapping[str, object],
    ) -> SettingSources:
        """Note which layer (lowest precedence first) each variable comes from; the command line wins."""
        origin: dict[str, str] = {}
        unknown: dict[str, str] = {}
        for where, values in layers:  # a later layer overwrites
            for variable in values:
                if variable in known:
                    origin[variable] = where
                elif variable != CONFIG_DIR_VARIABLE:
                    unknown[variable] = where
        origin.update({f"{ENV_PREFIX}{name}".upper(): COMMAND_LINE for name in overrides})
        rank = [*(where for where, _ in layers), COMMAND_LINE].index
        overridden: dict[str, tuple[str, str]] = {}
        for pair in _ALTERNATIVES:
            if all(variable in origin for variable in pair) and len({origin[v] for v in pair}) == 2:
                lower, higher = sorted(pair, key=lambda variable: rank(origin[variable]))
                overridden[lower] = (origin.pop(lower), higher)
        return cls(files, origin, unknown, overridden)

    def where(self, variable: str) -> str:
        return self.origin.get(variable, "nowhere")


@dataclass(frozen=True)
class PbxEndpoint:
    """Where the PBX lives; every URL the client uses derives from `origin`."""

    origin: str

    @property
    def api_base(self) -> str:
        return f"{self.origin}/xapi/v1"

    @property
    def token_url(self) -> str:
        return f"{self.origin}/connect/token"

    @property
    def host(self) -> str:
        return urlsplit(self.origin).hostname or ""

    @property
    def port(self) -> int:
        parts = urlsplit(self.origin)
        return parts.port or _DEFAULT_PORTS[parts.scheme]

    @property
    def uses_tls(self) -> bool:
        return self.origin.startswith("https://")

    @classmethod
    def parse(cls, raw: str, *, setting: str = ENV_NAMES.url) -> PbxEndpoint:
        """Accept whatever an administrator pastes: a bare host, a console link, the API URL.
        `setting` is how a message names where `raw` was written."""
        text = raw.strip()
        example = "Use the PBX's address, e.g. https://pbx.example.com or pbx.example.com:5001."
        if not text:
            raise ConfigError(f"{setting} is empty. {example}")
        if "://" not in text:
            text = "https://" + text
        try:
            parts = urlsplit(text)
            port = parts.port
        except ValueError as exc:
            raise ConfigError(
                f"{setting} {quoted(raw.strip(), 80)} is not a valid URL ({exc}). {example}"
            ) from None
        scheme = parts.scheme.lower()
        if scheme not in _DEFAULT_PORTS:
            raise ConfigError(
                f"{setting} {quoted(raw.strip(), 80)} must use https (or http), not {quoted(scheme, 20)}. {example}"
            )
        if parts.username is not None or parts.password is not None:
            raise ConfigError(
                f"{setting} must not contain credentials; give the API client's id and key as their own settings."
            )
        host = (parts.hostname or "").lower()
        if not host or any(c in host for c in " /\\"):
            raise ConfigError(f"{setting} {quoted(raw.strip(), 80)} has no host name. {example}")
        try:
            if ipaddress.ip_address(host).version == 6:
                host = f"[{host}]"
        except ValueError:
            if not _is_host_name(host):
                raise ConfigError(
                    f"{setting} {quoted(raw.strip(), 80)} names the host {quoted(host, 80)}, which has characters "
                    f"no host name has. {example}"
                ) from None
        netloc = host if port in (None, _DEFAULT_PORTS[scheme]) else f"{host}:{port}"
        return cls(f"{scheme}://{netloc}")


_HOST_NAME = re.compile(r"[a-z0-9_-]+(?:\.[a-z0-9_-]+)*\.?")


def _is_host_name(host: str) -> bool:
    """Letters, digits, '-' and '_' in dot-separated labels, an internationalised name once IDNA-encoded."""
    try:
        encoded = host.encode("idna").decode("ascii")
    except UnicodeError:
        return False
    return _HOST_NAME.fullmatch(encoded) is not None


def _not_valid(variable: str, where: str, said: str) -> ConfigError:
    """A value pydantic refused, in a sentence: `said` is its reason ("Input should be ..."), never the value."""
    reason = f"it {said[len('Input ') :]}" if said.startswith("Input ") else said[:1].lower() + said[1:]
    return ConfigError(f"{variable} (from {where}) is not valid: {reason}.")


class SettingsIncomplete(ConfigError):
    """Several settings are missing or wrong: each is in `problems`, and the message names them all."""

    def __init__(self, problems: list[ConfigError]) -> None:
        super().__init__(" ".join(problem.user_message() for problem in problems))
        self.problems = tuple(problems)


@dataclass(frozen=True)
class Connection:
    """One PBX and how to reach it, resolved and validated once from the settings.

    Everything the XAPI client and the journal need; nothing here is re-read from the
    environment later, so a running server cannot drift from what `doctor` checked.
    """

    endpoint: PbxEndpoint
    client_id: str
    client_secret: SecretStr
    verify: bool | ssl.SSLContext
    timeout: float
    # Write requests a bulk operation keeps outstanding at once (see `operations.concurrency`).
    max_in_flight: int = 8
    names: SettingNames = ENV_NAMES  # where the user wrote these, for messages about them

    @property
    def pbx_key(self) -> str:
        """How the journal names this PBX: its origin, so two PBXs never share undo history."""
        return self.endpoint.origin


@dataclass(frozen=True)
class PbxAccess:
    """One PBX's address, API client and TLS trust as written (THREECX_* variables, or a `[pbx.NAME]`
    table of the config file), checked together by `connection`; `names` says where each was written."""

    url: str | None
    client_id: str | None
    client_secret: SecretStr | None
    client_secret_file: Path | None
    verify_tls: bool
    ca_bundle: Path | None
    names: SettingNames = ENV_NAMES
    # Set when the API key was given two ways in one place: the message saying so.
    secret_clash: str | None = None

    def connection(
        self, timeout: float, max_in_flight: int, known_problems: Sequence[ConfigError] = ()
    ) -> Connection:
        """The PBX, credentials and TLS trust, checked together; raises a `SettingsIncomplete` naming every
        setting to fix at once (`known_problems` first), not one per attempt."""
        problems = list(known_problems)

        def attempt(resolve: Callable[[], _T]) -> _T | None:
            try:
                return resolve()
            except ConfigError as exc:
                problems.append(exc)
                return None

        endpoint, client_id = attempt(self.endpoint), attempt(self.api_client_id)
        secret, verify = attempt(self.api_key), attempt(self.tls_verify)
        if problems:
            raise SettingsIncomplete(problems)
        assert endpoint is not None and client_id is not None and secret is not None and verify is not None
        remember_secret(secret.get_secret_value())  # redacted from every text shown from now on
        return Connection(endpoint, client_id, secret, verify, timeout, max_in_flight, self.names)

    def endpoint(self) -> PbxEndpoint:
        if self.url is None:
            raise ConfigError(
                f"{self.names.url} is not set. Set it to your PBX's address (e.g. https://pbx.example.com), "
                "or start with --sandbox to try the server without a PBX."
            )
        return PbxEndpoint.parse(self.url, setting=self.names.url)

    def api_client_id(self) -> str:
        if self.client_id is None:
            raise ConfigError(
                f"{self.names.client_id} is not set. Create an API client in the 3CX admin console "
                "(Integrations > API) and use its Client ID."
            )
        return self.client_id

    def api_key(self) -> SecretStr:
        """The API key, given itself or read from the file named for it."""
        secret, secret_file = self.names.client_secret, self.names.client_secret_file
        if self.secret_clash is not None:
            raise ConfigError(self.secret_clash)
        if self.client_secret_file is not None:
            path = self.client_secret_file
            try:
                key = path.read_text(encoding="utf-8-sig").strip()
            except UnicodeDecodeError:
                raise ConfigError(
                    f"{secret_file} {quoted(str(path), 120)} is not a text file in UTF-8; save the API key "
                    "in it as plain UTF-8 text."
                ) from None
            except OSError as exc:
                raise ConfigError(
                    f"{secret_file} {_named_file(path)} cannot be read ({exc.strerror or 'an operating-system error'}). "
                    f"Set it to the absolute path of a file holding the API key, or give the key itself in {secret}."
                ) from None
            if not key:
                raise ConfigError(f"{secret_file} {quoted(str(path), 120)} is empty.")
            return SecretStr(key)
        if self.client_secret is None or not self.client_secret.get_secret_value().strip():
            raise ConfigError(
                f"{secret} is not set. Use the API key shown when the API client was "
                f"created (or point {secret_file} at a file holding it)."
            )
        return SecretStr(self.client_secret.get_secret_value().strip())

    def tls_verify(self) -> bool | ssl.SSLContext:
        """What httpx2 should verify against: the system store, a CA bundle, or nothing."""
        names = self.names
        if self.ca_bundle is None:
            return self.verify_tls
        if not self.verify_tls:
            raise ConfigError(f"{names.ca_bundle} is set but {names.verify_tls} is false; keep only one.")
        if not self.ca_bundle.is_file():
            raise ConfigError(
                f"{names.ca_bundle} {_named_file(self.ca_bundle)} is not a readable file; set it to the "
                "path of the PEM file of the CA that signed the PBX's certificate."
            )
        try:
            return ssl.create_default_context(cafile=str(self.ca_bundle))
        except ssl.SSLError as exc:
            raise ConfigError(
                f"{names.ca_bundle} {quoted(str(self.ca_bundle), 120)} holds no usable PEM certificate ({exc})."
            ) from None


class Settings(BaseModel):
    """Everything the server reads from THREECX_* variables.

    Only `load` reads them: each .env file once, then the environment, noting where each value came
    from. An empty value counts as unset, as a client's form leaves an optional field.
    """

    model_config = ConfigDict(extra="ignore")

    url: str | None = None
    client_id: str | None = None
    client_secret: SecretStr | None = None
    client_secret_file: Path | None = None
    verify_tls: bool = True
    ca_bundle: Path | None = None
    timeout: float = Field(default=30.0, gt=0, le=300)
    max_in_flight: int = Field(default=8, ge=1, le=64)
    read_only: bool = False
    sandbox: bool = False
    # Several embedded sandbox PBXs, named sandbox-1, sandbox-2, ...: a multi-PBX setup to try out.
    sandboxes: int = Field(default=0, ge=0, le=20)
    # The config file naming several PBXs (see `pbx_file`); by default config.toml in user_config_dir().
    config: Path | None = None
    journal: Path | None = None
    journal_retention_days: int = Field(default=90, ge=0, le=36_500)
    mcp_auth_token: SecretStr | None = None
    _sources: SettingSources = PrivateAttr(default_factory=lambda: SettingSources(()))
    # What `load(collect_problems=True)` set aside as unusable; `connection()` reports it.
    _unusable: tuple[ConfigError, ...] = PrivateAttr(default=())

    @field_validator("client_id", "url", mode="after")
    @classmethod
    def _blank_is_unset(cls, value: str | None) -> str | None:
        return value.strip() or None if value is not None else None

    @classmethod
    def load(cls, *, collect_problems: bool = False, **overrides: object) -> Settings:
        """Read the .env files (each once) and the environment; `overrides` are the command line's.

        A value that cannot be used (THREECX_TIMEOUT=abc) or a .env file that cannot be read raises a
        `SettingsIncomplete` naming each, and where it came from. With `collect_problems` (doctor)
        they are set aside instead, the rest is loaded, and `connection()` reports them with every
        other problem, so that one mistake does not hide the others.
        """
        files = env_files()
        layers: list[Layer] = []
        unusable: list[ConfigError] = []
        for path in filter(Path.is_file, files):
            try:
                layers.append((str(path), read_env_file(path)))
            except ConfigError as exc:
                unusable.append(exc)
        layers.append((ENVIRONMENT, environment_settings()))
        known = {f"{ENV_PREFIX}{name}".upper() for name in cls.model_fields}
        sources = SettingSources.find(known, files, layers, overrides)
        merged = {variable: value for _, values in layers for variable, value in values.items()}
        chosen = {
            variable.removeprefix(ENV_PREFIX).lower(): merged[variable]
            for variable, where in sources.origin.items()
            if where != COMMAND_LINE
        }
        try:
            settings = cls.model_validate({**chosen, **overrides})
        except ValidationError as exc:
            invalid = [str(error["loc"][0]) for error in exc.errors(include_input=False)]
            unusable.extend(
                _not_valid(variable, sources.where(variable), str(error["msg"]))
                for error in exc.errors(include_input=False)
                for variable in [f"{ENV_PREFIX}{str(error['loc'][0]).upper()}"]
            )
            if not collect_problems:
                raise SettingsIncomplete(unusable) from None
            kept = {name: value for name, value in chosen.items() if name not in invalid}
            settings = cls.model_validate({**kept, **overrides})
        if unusable and not collect_problems:
            raise SettingsIncomplete(unusable)
        settings._sources, settings._unusable = sources, tuple(unusable)
        return settings

    @property
    def unusable(self) -> tuple[ConfigError, ...]:
        """What `load(collect_problems=True)` set aside as unusable (THREECX_TIMEOUT=abc, an unreadable .env):
        `connection()` reports it for the one PBX of the THREECX_* variables, doctor beside a config file's."""
        return self._unusable

    @property
    def sources(self) -> SettingSources:
        """Where each setting came from (empty for settings not made by `load`)."""
        return self._sources

    def access(self) -> PbxAccess:
        """The PBX these variables name; where the API key is given two ways, `load` kept the one from
        the source that comes first, unless both share it (then `api_key` refuses both)."""
        secret, secret_file = ENV_NAMES.client_secret, ENV_NAMES.client_secret_file
        clash = None
        if self.client_secret is not None and self.client_secret_file is not None:
            where = self.sources.where(secret)
            shared = f" in {where}" if where == self.sources.where(secret_file) else ""
            clash = f"Both {secret} and {secret_file} are set{shared}; keep only one."
        return PbxAccess(
            self.url,
            self.client_id,
            self.client_secret,
            self.client_secret_file,
            self.verify_tls,
            self.ca_bundle,
            secret_clash=clash,
        )

    def connection(self) -> Connection:
        """The PBX, credentials and TLS trust, checked together; raises ConfigError naming every
        setting to fix at once (a `SettingsIncomplete` listing them, values `load` set aside first),
        not one per attempt."""
        return self.access().connection(self.timeout, self.max_in_flight, self._unusable)

    def pbx_file_path(self) -> Path | None:
        """The config file naming several PBXs: THREECX_CONFIG (which must exist), else config.toml in the
        user config directory if it is there; None means the THREECX_* variables name the one PBX."""
        if self.config is not None:
            if not self.config.exists():
                raise ConfigError(
                    f"{ENV_PREFIX}CONFIG (from {self.sources.where(f'{ENV_PREFIX}CONFIG')}) names "
                    f"{quoted(str(self.config), 200)}, which does not exist; correct the path, or remove "
                    f"{ENV_PREFIX}CONFIG to use {user_config_dir() / CONFIG_FILE_NAME}."
                )
            return self.config
        default = user_config_dir() / CONFIG_FILE_NAME
        return default if default.exists() else None

    def sandbox_notice(self) -> str | None:
        """Said wherever the sandbox is in use while THREECX_URL names a PBX, so that a forgotten
        THREECX_SANDBOX cannot silently stand in for the real PBX; None when no PBX is named."""
        if not self.sandbox or self.url is None:
            return None
        variable = f"{ENV_PREFIX}SANDBOX"
        if self.sources.where(variable) == COMMAND_LINE:
            how, fix = "--sandbox", "Run without --sandbox to use that PBX."
        else:
            how = f"{variable}=true from {self.sources.where(variable)}"
            fix = f"Remove {variable} to use that PBX."
        return (
            f"Using the embedded sandbox PBX ({how}), not a real one: {ENV_PREFIX}URL is set but ignored, "
            f"and nothing is changed on that PBX. {fix}"
        )

    def journal_path(self) -> Path:
        """THREECX_JOURNAL, or the per-user state directory (the sandbox keeps its own file)."""
        if self.journal is not None:
            # A 0.1 setting named the JSON Lines file; the store now sits beside it and imports it once.
            return self.journal.with_suffix(".sqlite3") if self.journal.suffix == ".jsonl" else self.journal
        name = "sandbox-journal.sqlite3" if self.sandbox or self.sandboxes else "journal.sqlite3"
        return Path(platformdirs.user_state_dir("threecx-mcp", appauthor=False)) / name

    def endpoint(self) -> PbxEndpoint:
        return self.access().endpoint()

    def credentials(self) -> tuple[str, SecretStr]:
        """The API client's id and key, read from a file if so configured."""
        return self.api_client_id(), self.api_key()

    def api_client_id(self) -> str:
        return self.access().api_client_id()

    def api_key(self) -> SecretStr:
        return self.access().api_key()

    def tls_verify(self) -> bool | ssl.SSLContext:
        return self.access().tls_verify()


def _named_file(path: Path) -> str:
    """How a message names the file a setting points at: quoted when it is a file; otherwise only by
    its length, since a value that names no file may be the API key pasted in place of a path (so it
    is also remembered as a secret: no later message shows it either)."""
    if path.is_file():
        return quoted(str(path), 120)
    remember_secret(str(path))
    return f"(a value of {len(str(path))} characters, not shown in case it is the API key itself)"
