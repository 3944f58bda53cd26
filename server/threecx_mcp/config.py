"""Settings from the environment (and an optional .env), and PBX URL normalisation."""

from __future__ import annotations

import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import platformdirs
from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .display import quoted
from .errors import ConfigError

ENV_PREFIX = "THREECX_"
_DEFAULT_PORTS = {"https": 443, "http": 80}


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
    def parse(cls, raw: str) -> PbxEndpoint:
        """Accept whatever an administrator pastes: a bare host, a console link, the API URL."""
        text = raw.strip()
        example = "Use the PBX's address, e.g. https://pbx.example.com or pbx.example.com:5001."
        if not text:
            raise ConfigError(f"{ENV_PREFIX}URL is empty. {example}")
        if "://" not in text:
            text = "https://" + text
        try:
            parts = urlsplit(text)
            port = parts.port
        except ValueError as exc:
            raise ConfigError(
                f"{ENV_PREFIX}URL {quoted(raw.strip(), 80)} is not a valid URL ({exc}). {example}"
            ) from None
        scheme = parts.scheme.lower()
        if scheme not in _DEFAULT_PORTS:
            raise ConfigError(
                f"{ENV_PREFIX}URL {quoted(raw.strip(), 80)} must use https (or http), not {quoted(scheme, 20)}. {example}"
            )
        if parts.username is not None or parts.password is not None:
            raise ConfigError(
                f"{ENV_PREFIX}URL must not contain credentials; set {ENV_PREFIX}CLIENT_ID and "
                f"{ENV_PREFIX}CLIENT_SECRET instead."
            )
        host = (parts.hostname or "").lower()
        if not host or any(c in host for c in " /\\"):
            raise ConfigError(f"{ENV_PREFIX}URL {quoted(raw.strip(), 80)} has no host name. {example}")
        try:
            if ipaddress.ip_address(host).version == 6:
                host = f"[{host}]"
        except ValueError:
            pass
        netloc = host if port in (None, _DEFAULT_PORTS[scheme]) else f"{host}:{port}"
        return cls(f"{scheme}://{netloc}")


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

    @property
    def pbx_key(self) -> str:
        """How the journal names this PBX: its origin, so two PBXs never share undo history."""
        return self.endpoint.origin


class Settings(BaseSettings):
    """Everything the server reads from THREECX_* variables."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_file=".env", extra="ignore")

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
    journal: Path | None = None
    journal_retention_days: int = Field(default=90, ge=0, le=36_500)
    mcp_auth_token: SecretStr | None = None

    @field_validator("client_id", "url", mode="after")
    @classmethod
    def _blank_is_unset(cls, value: str | None) -> str | None:
        return value.strip() or None if value is not None else None

    @classmethod
    def load(cls, **overrides: object) -> Settings:
        """Read the environment, turning pydantic's report into one line per variable."""
        try:
            return cls(**overrides)  # type: ignore[arg-type]
        except ValidationError as exc:
            problems = "; ".join(
                f"{ENV_PREFIX}{str(err['loc'][0]).upper()}: {err['msg']}"
                for err in exc.errors(include_input=False)
            )
            raise ConfigError(f"Invalid settings: {problems}.") from None

    def connection(self) -> Connection:
        """The PBX, credentials and TLS trust, checked together; raises ConfigError naming what to fix."""
        endpoint = self.endpoint()
        client_id, secret = self.credentials()
        return Connection(endpoint, client_id, secret, self.tls_verify(), self.timeout, self.max_in_flight)

    def journal_path(self) -> Path:
        """THREECX_JOURNAL, or the per-user state directory (the sandbox keeps its own file)."""
        if self.journal is not None:
            # A 0.1 setting named the JSON Lines file; the store now sits beside it and imports it once.
            return self.journal.with_suffix(".sqlite3") if self.journal.suffix == ".jsonl" else self.journal
        name = "sandbox-journal.sqlite3" if self.sandbox else "journal.sqlite3"
        return Path(platformdirs.user_state_dir("threecx-mcp", appauthor=False)) / name

    def endpoint(self) -> PbxEndpoint:
        if self.url is None:
            raise ConfigError(
                f"{ENV_PREFIX}URL is not set. Set it to your PBX's address (e.g. https://pbx.example.com), "
                "or start with --sandbox to try the server without a PBX."
            )
        return PbxEndpoint.parse(self.url)

    def credentials(self) -> tuple[str, SecretStr]:
        """The API client's id and key, read from a file if so configured."""
        if self.client_id is None:
            raise ConfigError(
                f"{ENV_PREFIX}CLIENT_ID is not set. Create an API client in the 3CX admin console "
                "(Integrations > API) and use its Client ID."
            )
        if self.client_secret is not None and self.client_secret_file is not None:
            raise ConfigError(
                f"Both {ENV_PREFIX}CLIENT_SECRET and {ENV_PREFIX}CLIENT_SECRET_FILE are set; keep only one."
            )
        if self.client_secret_file is not None:
            try:
                secret = self.client_secret_file.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ConfigError(
                    f"{ENV_PREFIX}CLIENT_SECRET_FILE {quoted(str(self.client_secret_file), 120)} cannot be read: "
                    f"{exc.strerror or exc}."
                ) from None
            if not secret:
                raise ConfigError(
                    f"{ENV_PREFIX}CLIENT_SECRET_FILE {quoted(str(self.client_secret_file), 120)} is empty."
                )
            return self.client_id, SecretStr(secret)
        if self.client_secret is None or not self.client_secret.get_secret_value().strip():
            raise ConfigError(
                f"{ENV_PREFIX}CLIENT_SECRET is not set. Use the API key shown when the API client was "
                f"created (or point {ENV_PREFIX}CLIENT_SECRET_FILE at a file holding it)."
            )
        return self.client_id, SecretStr(self.client_secret.get_secret_value().strip())

    def tls_verify(self) -> bool | ssl.SSLContext:
        """What httpx2 should verify against: the system store, a CA bundle, or nothing."""
        if self.ca_bundle is None:
            return self.verify_tls
        if not self.verify_tls:
            raise ConfigError(
                f"{ENV_PREFIX}CA_BUNDLE is set but {ENV_PREFIX}VERIFY_TLS is false; keep only one."
            )
        if not self.ca_bundle.is_file():
            raise ConfigError(
                f"{ENV_PREFIX}CA_BUNDLE {quoted(str(self.ca_bundle), 120)} is not a readable file."
            )
        try:
            return ssl.create_default_context(cafile=str(self.ca_bundle))
        except ssl.SSLError as exc:
            raise ConfigError(
                f"{ENV_PREFIX}CA_BUNDLE {quoted(str(self.ca_bundle), 120)} holds no usable PEM certificate ({exc})."
            ) from None
