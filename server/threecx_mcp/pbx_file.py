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
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, StringConstraints, ValidationError

from .config import PbxAccess, SettingNames, SettingsIncomplete
from .display import quoted
from .errors import ConfigError

MAX_CONFIG_BYTES = 1_000_000
MAX_PBXS = 200
MAX_PROBLEMS = 25  # problems listed at once; a file with more is named with how many more there are
# A PBX's name: what the tools' pbx arguments take.
PBX_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,39}$"
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# How an environment variable is conventionally named (HQ_KEY, THREECX_BRANCH_SECRET, KEY): only such a
# name is shown in a message. Anything else in client_secret_env may be the API key pasted in its place.
_SHOWN_ENV_NAME = re.compile(r"^[A-Z][A-Z0-9]*(_[A-Z0-9]+)*$")
_SECRET_WAYS = ("client_secret", "client_secret_file", "client_secret_env")
_REACHING = ("url", "client_id", *_SECRET_WAYS, "ca_bundle")  # what a sandbox table has no use for
# Only for checking a table's connection settings when the file is refused anyway (see `read_pbx_file`).
_CHECK_TIMEOUT, _CHECK_IN_FLIGHT = 30.0, 8

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
    """The file's top level; each table is checked on its own (`_table`), so that a mistake in one does
    not hide the mistakes in the others."""

    model_config = ConfigDict(extra="forbid", strict=True)

    default: _Text | None = None
    pbx: dict[str, Any] = Field(min_length=1, max_length=MAX_PBXS)


@dataclass(frozen=True)
class NamedPbx:
    """One PBX of the file, checked: `access` is None for a sandbox, and for a table that cannot be used,
    whose `problems` say why. Such a table stops a server (which serves every PBX) but not a command on
    another PBX: a shell often lacks the variable a client's env block gives one PBX its key."""

    name: str
    access: PbxAccess | None
    read_only: bool
    problems: tuple[ConfigError, ...] = ()


@dataclass(frozen=True)
class PbxFile:
    """The PBXs of the config file, in its order, and its default (None: every call names its PBX)."""

    path: Path
    pbxs: tuple[NamedPbx, ...]
    default: str | None


def read_pbx_file(path: Path) -> PbxFile:
    """Read and check the file. A problem of the file as a whole (not TOML, an unknown top-level key, a
    default naming no table) raises a `SettingsIncomplete` naming every problem in it at once, those of
    each table and their connection settings (url, client_id, the key's file) included. Otherwise each
    table's own problems stay with its PBX (`NamedPbx.problems`): a server refuses to start on any of
    them, naming them all, while a command on another PBX goes ahead.
    """
    shown = quoted(str(path), 200)
    try:
        raw, mode = _read_bytes(path)
        data = tomllib.loads(raw.decode("utf-8-sig"))
    except OSError as exc:
        raise ConfigError(
            f"The config file {shown} cannot be read ({exc.strerror or 'an operating-system error'})."
        ) from None
    except UnicodeDecodeError:
        raise ConfigError(f"The config file {shown} is not UTF-8 text; save it as UTF-8.") from None
    except tomllib.TOMLDecodeError as exc:  # its message gives a position, never the text there
        raise ConfigError(f"The config file {shown} is not valid TOML: {exc}.") from None
    except RecursionError:  # tomllib recurses into nested arrays and inline tables
        raise ConfigError(
            f"The config file {shown} nests arrays or tables too deeply to be read; it is not a config file "
            "of this server (see README.md for what one holds)."
        ) from None
    problems: list[ConfigError] = []
    try:
        content = _FileContent.model_validate(data)
    except ValidationError as exc:
        problems += [_file_problem(shown, error) for error in exc.errors(include_input=False)]
        content = None
    tables = data.get("pbx")
    if not isinstance(tables, dict):
        tables = {}  # the problem is reported above
    checked: list[tuple[str, NamedPbx | None, list[ConfigError]]] = []
    for name, table in tables.items():
        named, found = _table(path, mode, name, table)
        checked.append((name, named, found))
    default = content.default if content is not None else _given_default(data)
    if tables and default is not None and default not in tables:
        names = ", ".join(quoted(name, 40) for name in tables)
        problems.append(
            ConfigError(
                f"default = {quoted(default, 40)} in {shown} names no [pbx.NAME] table; the PBXs are {names}."
            )
        )
    for _, named, found in checked:  # everything wrong with a table at once, its connection included
        if (problems or found) and named is not None and named.access is not None:
            found += _connection_problems(named.access)
    if problems:  # the file as a whole cannot be used: say everything wrong in it at once
        problems = [problem for _, _, found in checked for problem in found] + problems
        raise SettingsIncomplete(_capped(problems, shown))
    pbxs = tuple(
        NamedPbx(name, None, False, tuple(capped))
        if named is None
        else replace(named, problems=tuple(capped))
        for name, named, found in checked
        for capped in [_capped(found, shown)]
    )
    return PbxFile(path, pbxs, default)


def _given_default(data: dict[str, Any]) -> str | None:
    """`default` as written, for naming a missing table while the file's top level has other problems."""
    default = data.get("default")
    return default.strip() or None if isinstance(default, str) else None


def _read_bytes(path: Path) -> tuple[bytes, int]:
    """The file's bytes and mode, refusing a special file (a FIFO would block) or one too large to be a
    config. The mode is the opened file's, so it is the mode of the very bytes read."""
    nonblocking = getattr(os, "O_NONBLOCK", 0)  # Windows has no O_NONBLOCK, and no FIFOs at a file's path
    with open(path, "rb", opener=lambda p, flags: os.open(p, flags | nonblocking)) as file:
        mode = os.fstat(file.fileno()).st_mode
        if not stat.S_ISREG(mode):
            raise OSError(0, "it is not a regular file")
        raw = file.read(MAX_CONFIG_BYTES + 1)
    if len(raw) > MAX_CONFIG_BYTES:
        raise OSError(0, f"it is larger than {MAX_CONFIG_BYTES:,} bytes")
    return raw, mode


def _capped(problems: list[ConfigError], shown: str) -> list[ConfigError]:
    """At most `MAX_PROBLEMS`, and how many more: a message that a person can read to the end."""
    if len(problems) <= MAX_PROBLEMS:
        return problems
    more = len(problems) - MAX_PROBLEMS
    return [*problems[:MAX_PROBLEMS], ConfigError(f"{shown} has {more:,} more problems; fix these first.")]


def _label(name: str) -> str:
    """How a message names a table: as written when its name is usable, quoted (escaped, cut) if not."""
    return f"[pbx.{name}]" if re.match(PBX_NAME_PATTERN, name) else f"[pbx.{quoted(name, 40)}]"


def _said(error: Any) -> str:
    said = str(error["msg"])
    return said[:1].lower() + said[1:]


def _file_problem(shown: str, error: Any) -> ConfigError:
    """A pydantic complaint about the file's top level, as a sentence naming the key."""
    location = [str(part) for part in error["loc"]]
    kind = error["type"]
    if kind == "extra_forbidden":
        return ConfigError(
            f"{shown} has the top-level key {quoted(location[0], 40)}; only default and [pbx.NAME] tables belong there."
        )
    if location == ["pbx"] and kind == "missing":
        return ConfigError(f"{shown} names no PBX: add a [pbx.NAME] table for each (see README.md).")
    if location == ["pbx"] and kind == "too_long":
        return ConfigError(
            f"{shown} names more than {MAX_PBXS} PBXs, more than one server manages: split them between config "
            "files (THREECX_CONFIG names one) and run a server for each."
        )
    if location == ["pbx"] and kind == "dict_type":
        return ConfigError(f"pbx in {shown} must be tables, one [pbx.NAME] for each PBX (see README.md).")
    return ConfigError(f"{'.'.join(location)} in {shown} is not valid: {_said(error)}.")


def _table_problem(where: str, error: Any) -> ConfigError:
    """A pydantic complaint about one table, as a sentence naming the table and key."""
    location = [str(part) for part in error["loc"]]
    if not location or error["type"] == "model_type":
        return ConfigError(f"{where} must be a table of settings (url = ..., client_id = ...).")
    key = location[0]
    if error["type"] == "extra_forbidden":
        keys = ", ".join(PbxTable.model_fields)
        return ConfigError(
            f"{where} has the key {quoted(key, 40)}, which means nothing here; the keys are {keys}."
        )
    return ConfigError(f"{key} of {where} is not valid: {_said(error)}.")


def _table(path: Path, mode: int, name: str, raw: object) -> tuple[NamedPbx | None, list[ConfigError]]:
    """One table as a PBX and every problem found in it. The PBX is None where the table cannot be read as
    one; it comes with problems where only its name is wrong (its connection settings are still checked)."""
    where = f"{_label(name)} in {quoted(str(path), 200)}"
    problems: list[ConfigError] = []
    if not re.match(PBX_NAME_PATTERN, name):
        problems.append(
            ConfigError(
                f"The PBX name {quoted(name, 60)} in {quoted(str(path), 200)} is not usable: a name is 1 to 40 "
                "letters, digits, '-', '_' or '.', starting with a letter or digit (tools take it as pbx)."
            )
        )
    try:
        table = PbxTable.model_validate(raw)
    except ValidationError as exc:
        return None, problems + [_table_problem(where, error) for error in exc.errors(include_input=False)]
    if table.sandbox:
        if stray := [key for key in _REACHING if getattr(table, key) is not None]:
            problems.append(
                ConfigError(
                    f"{where} says sandbox = true, so it is an embedded sandbox PBX, yet it also sets "
                    f"{', '.join(stray)}; remove those, or sandbox = true."
                )
            )
        return (None if stray else NamedPbx(name, None, table.read_only)), problems
    given = [key for key in _SECRET_WAYS if getattr(table, key) is not None]
    secret = None
    try:
        if len(given) > 1:
            raise ConfigError(
                f"{where} gives the API key {len(given)} ways ({', '.join(given)}); keep only one."
            )
        if table.client_secret is not None:
            _refuse_readable_by_others(path, mode, where)
            secret = table.client_secret
        elif table.client_secret_env is not None:
            secret = _from_environment(table.client_secret_env, where)
    except ConfigError as problem:
        return None, [*problems, problem]
    folder = path.parent
    access = PbxAccess(
        url=table.url,
        client_id=table.client_id,
        client_secret=secret,
        client_secret_file=_beside(folder, table.client_secret_file),
        verify_tls=table.verify_tls,
        ca_bundle=_beside(folder, table.ca_bundle),
        names=SettingNames.table(_label(name)[len("[pbx.") : -1], path),  # a bad name quoted, as above
    )
    return NamedPbx(name, access, table.read_only), problems


def _connection_problems(access: PbxAccess) -> list[ConfigError]:
    """What the server would refuse in a table's connection settings, once the file's problems are fixed."""
    try:
        access.connection(_CHECK_TIMEOUT, _CHECK_IN_FLIGHT)
    except SettingsIncomplete as exc:
        return list(exc.problems)
    except ConfigError as exc:
        return [exc]
    return []


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
        named = (
            f"the environment variable {variable}"
            if _SHOWN_ENV_NAME.match(variable) and len(variable) <= 64
            else f"an environment variable ({len(variable)} characters, not shown in case it is the API key itself)"
        )
        raise ConfigError(
            f"client_secret_env of {where} names {named}, which is not set; set it to the API key (in a "
            "client configuration, in its env block), and name that variable in client_secret_env."
        )
    return SecretStr(value)


def _refuse_readable_by_others(path: Path, mode: int, where: str) -> None:
    """A key written in the file itself is allowed only while no one but its owner can read the file."""
    if sys.platform == "win32":  # permissions are ACLs there: this check cannot tell who may read it
        raise ConfigError(
            f"{where} holds the API key itself (client_secret), which is not allowed on Windows, where this "
            "server cannot check who may read the file: use client_secret_file or client_secret_env instead."
        )
    if mode & 0o077:
        raise ConfigError(
            f"{where} holds the API key itself (client_secret), but other users may read the file (mode "
            f"{stat.S_IMODE(mode):04o}): run chmod 600 {quoted(str(path), 200)}, or keep the key in "
            "client_secret_file or client_secret_env instead."
        )
