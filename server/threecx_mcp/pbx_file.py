"""The config file that names several PBXs, for resellers and IT teams running many 3CX systems.

TOML (read with the standard library's `tomllib`), in the user config directory beside the `.env`
(`config.toml`), or wherever THREECX_CONFIG says:

    default = "hq"                      # optional: the PBX a tool call without `pbx` acts on

    [pbx.hq]
    url = "https://hq.example.com"
    client_id = "threecx-mcp"
    client_secret_file = "hq.key"       # relative to this file's folder; or client_secret_env = "HQ_KEY"

    [pbx.branch]
    url = "branch.example.com:5001"
    client_id = "threecx-mcp"
    client_secret_env = "BRANCH_KEY"    # the name of an environment variable holding the API key
    ca_bundle = "branch-ca.pem"
    read_only = true

    [pbx.lab]
    sandbox = true                      # an embedded sandbox PBX: no address, no credentials

The API key itself (`client_secret`) may stand in the file only while the file is readable by its
owner alone (mode 0600): a key in a file others can read is refused, naming the fix. Every problem in
the file is reported at once, each naming its table and key, never a value (it could be the key).
"""

from __future__ import annotations

import os
import re
import stat
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, StringConstraints, ValidationError

from .config import PbxAccess, SettingNames, SettingsIncomplete
from .display import quoted
from .errors import ConfigError

MAX_CONFIG_BYTES = 1_000_000
MAX_PBXS = 200
# A PBX's name: what the tools' pbx arguments take.
PBX_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,39}$"
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SECRET_WAYS = ("client_secret", "client_secret_file", "client_secret_env")
_REACHING = ("url", "client_id", *_SECRET_WAYS, "ca_bundle")  # what a sandbox table has no use for

_Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2_000)]


class PbxTable(BaseModel):
    """One `[pbx.NAME]` table, as written."""

    model_config = ConfigDict(extra="forbid", strict=True)

    url: _Text | None = None
    client_id: _Text | None = None
    client_secret: SecretStr | None = None
    client_secret_file: _Text | None = None
    client_secret_env: _Text | None = None
    verify_tls: bool = True
    ca_bundle: _Text | None = None
    read_only: bool = False
    sandbox: bool = False


class _FileContent(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    default: _Text | None = None
    pbx: dict[str, PbxTable] = Field(min_length=1, max_length=MAX_PBXS)


@dataclass(frozen=True)
class NamedPbx:
    """One PBX of the file, checked: `access` is None for a sandbox."""

    name: str
    access: PbxAccess | None
    read_only: bool


@dataclass(frozen=True)
class PbxFile:
    """The PBXs of the config file, in its order, and its default (None: every call names its PBX)."""

    path: Path
    pbxs: tuple[NamedPbx, ...]
    default: str | None


def read_pbx_file(path: Path) -> PbxFile:
    """Read and check the file; raises a `SettingsIncomplete` naming every problem in it at once."""
    shown = quoted(str(path), 200)
    try:
        raw = _read_bytes(path)
        data = tomllib.loads(raw.decode("utf-8-sig"))
    except OSError as exc:
        raise ConfigError(
            f"The config file {shown} cannot be read ({exc.strerror or 'an operating-system error'})."
        ) from None
    except UnicodeDecodeError:
        raise ConfigError(f"The config file {shown} is not UTF-8 text; save it as UTF-8.") from None
    except tomllib.TOMLDecodeError as exc:  # its message gives a position, never the text there
        raise ConfigError(f"The config file {shown} is not valid TOML: {exc}.") from None
    try:
        content = _FileContent.model_validate(data)
    except ValidationError as exc:
        raise SettingsIncomplete(
            [_problem(shown, error) for error in exc.errors(include_input=False)]
        ) from None
    problems: list[ConfigError] = []
    pbxs = []
    for name, table in content.pbx.items():
        try:
            pbxs.append(_checked(path, name, table))
        except ConfigError as problem:
            problems.append(problem)
    if content.default is not None and content.default not in content.pbx:
        names = ", ".join(quoted(name, 40) for name in content.pbx)
        problems.append(
            ConfigError(
                f"default = {quoted(content.default, 40)} in {shown} names no [pbx.NAME] table; the PBXs are {names}."
            )
        )
    if problems:
        raise SettingsIncomplete(problems)
    return PbxFile(path, tuple(pbxs), content.default)


def _read_bytes(path: Path) -> bytes:
    """The file's bytes, refusing a special file (a FIFO would block) or one too large to be a config."""
    with open(path, "rb", opener=lambda p, flags: os.open(p, flags | os.O_NONBLOCK)) as file:
        if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):
            raise OSError(0, "it is not a regular file")
        raw = file.read(MAX_CONFIG_BYTES + 1)
    if len(raw) > MAX_CONFIG_BYTES:
        raise OSError(0, f"it is larger than {MAX_CONFIG_BYTES:,} bytes")
    return raw


def _problem(shown: str, error: Any) -> ConfigError:
    """A pydantic complaint about the file's shape, as a sentence naming the table and key."""
    location = [str(part) for part in error["loc"]]
    kind, said = error["type"], str(error["msg"])
    if location[:1] == ["pbx"] and len(location) >= 2:
        table = f"[pbx.{location[1]}]"
        key = location[2] if len(location) > 2 else None
        if kind == "extra_forbidden" and key is not None:
            keys = ", ".join(PbxTable.model_fields)
            return ConfigError(
                f"{table} in {shown} has the key {quoted(key, 40)}, which means nothing here; the keys are {keys}."
            )
        if key is None:
            return ConfigError(
                f"{table} in {shown} must be a table of settings (url = ..., client_id = ...)."
            )
        return ConfigError(f"{key} of {table} in {shown} is not valid: {said[:1].lower()}{said[1:]}.")
    if kind == "extra_forbidden":
        return ConfigError(
            f"{shown} has the top-level key {quoted(location[0], 40)}; only default and [pbx.NAME] tables belong there."
        )
    if location == ["pbx"] and kind == "missing":
        return ConfigError(f"{shown} names no PBX: add a [pbx.NAME] table for each (see README.md).")
    return ConfigError(f"{'.'.join(location)} in {shown} is not valid: {said[:1].lower()}{said[1:]}.")


def _checked(path: Path, name: str, table: PbxTable) -> NamedPbx:
    """One table as a PBX: its name, how its API key is given, and whether that is allowed here."""
    names = SettingNames.table(name, path)
    where = f"[pbx.{name}] in {quoted(str(path), 200)}"
    if not re.match(PBX_NAME_PATTERN, name):
        raise ConfigError(
            f"The PBX name {quoted(name, 60)} in {quoted(str(path), 200)} is not usable: a name is 1 to 40 letters, "
            "digits, '-', '_' or '.', starting with a letter or digit (tools take it as pbx)."
        )
    given = [key for key in _SECRET_WAYS if getattr(table, key) is not None]
    if table.sandbox:
        if stray := [key for key in _REACHING if getattr(table, key) is not None]:
            raise ConfigError(
                f"{where} says sandbox = true, so it is an embedded sandbox PBX, yet it also sets "
                f"{', '.join(stray)}; remove those, or sandbox = true."
            )
        return NamedPbx(name, None, table.read_only)
    if len(given) > 1:
        raise ConfigError(f"{where} gives the API key {len(given)} ways ({', '.join(given)}); keep only one.")
    secret = table.client_secret
    if secret is not None:
        _refuse_readable_by_others(path, where)
    elif table.client_secret_env is not None:
        secret = _from_environment(table.client_secret_env, where)
    folder = path.parent
    access = PbxAccess(
        url=table.url,
        client_id=table.client_id,
        client_secret=secret,
        client_secret_file=_beside(folder, table.client_secret_file),
        verify_tls=table.verify_tls,
        ca_bundle=_beside(folder, table.ca_bundle),
        names=names,
    )
    return NamedPbx(name, access, table.read_only)


def _beside(folder: Path, value: str | None) -> Path | None:
    """A path as the file gives it: `~` is the home folder, and a relative path starts at the file's folder."""
    return None if value is None else folder / Path(value).expanduser()


def _from_environment(variable: str, where: str) -> SecretStr:
    if not _ENV_NAME.match(variable):
        raise ConfigError(
            f"client_secret_env of {where} must be the name of an environment variable (letters, digits and _), "
            "not the API key itself: put the key in that variable."
        )
    value = os.environ.get(variable, "").strip()
    if not value:
        raise ConfigError(
            f"client_secret_env of {where} names the environment variable {variable}, which is not set; set it "
            "to the API key (in a client configuration, in its env block)."
        )
    return SecretStr(value)


def _refuse_readable_by_others(path: Path, where: str) -> None:
    """A key written in the file itself is allowed only while no one but its owner can read the file."""
    if sys.platform == "win32":  # permissions are ACLs there: this check cannot tell who may read it
        raise ConfigError(
            f"{where} holds the API key itself (client_secret), which is not allowed on Windows, where this "
            "server cannot check who may read the file: use client_secret_file or client_secret_env instead."
        )
    mode = path.stat().st_mode
    if mode & 0o077:
        raise ConfigError(
            f"{where} holds the API key itself (client_secret), but other users may read the file (mode "
            f"{stat.S_IMODE(mode):04o}): run chmod 600 {path}, or keep the key in client_secret_file or "
            "client_secret_env instead."
        )
