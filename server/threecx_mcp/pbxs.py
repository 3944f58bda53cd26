"""The PBXs one server manages, by name, and how a tool call picks one.

A reseller's server manages several PBXs, each named in the config file; the environment-variable
setup is one unnamed PBX. Each PBX has its own view of the shared journal (operations are recorded
under the PBX's key: its origin, or `sandbox/NAME`), its own client factory (token, retry state and
write limiter are per client, so per PBX), and its own read-only flag. Clients are made when a tool
first needs that PBX (`AppState.client`), so a PBX that is down costs nothing until it is used.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .client import XapiClient
from .display import quoted
from .errors import InvalidArgument
from .journal import Journal


def listed(names: Sequence[str], conjunction: str = "or") -> str:
    """PBX names as a message gives them, quoted: "a", "b" or "c" (or `conjunction` "and")."""
    shown = [quoted(name, 40) for name in names]
    return shown[0] if len(shown) == 1 else ", ".join(shown[:-1]) + f" {conjunction} " + shown[-1]


@dataclass(frozen=True)
class Pbx:
    """One PBX the server manages: its name (None for the one unnamed PBX), where it is (its origin, or
    "sandbox"), its journal, how to make its client, and whether writes to it are refused."""

    name: str | None
    location: str
    journal: Journal
    make_client: Callable[[], XapiClient]
    read_only: bool = False

    @property
    def key(self) -> str:
        """How the journal names it (see the module docstring)."""
        return self.journal.pbx or ""

    @property
    def label(self) -> str:
        """How a message names it: "PBX 'branch'", or "the PBX" when there is only one."""
        return "the PBX" if self.name is None else f"PBX {quoted(self.name, 40)}"

    def writable(self) -> Pbx:
        """This PBX, unless it is configured read-only: then a write (a tool's, or import's and the probe's on
        the command line) is refused before anything is sent."""
        if self.read_only:
            raise InvalidArgument(
                f"{self.label[:1].upper()}{self.label[1:]} is configured read-only (read_only = true in the "
                "config file, or THREECX_READ_ONLY), so this server makes no change there. Nothing was changed."
            )
        return self


class PbxRoster:
    """The configured PBXs in the config file's order, and the default a tool call without `pbx` gets."""

    def __init__(self, pbxs: Sequence[Pbx], default: str | None = None) -> None:
        if not pbxs:
            raise ValueError("a roster needs at least one PBX")
        self.pbxs = tuple(pbxs)
        self._by_name = {pbx.name: pbx for pbx in self.pbxs}
        if default is not None and default not in self._by_name:
            raise ValueError(f"the default PBX {default} is not in the roster")
        self.default = default

    @classmethod
    def single(
        cls, make_client: Callable[[], XapiClient], journal: Journal, *, read_only: bool = False
    ) -> PbxRoster:
        """The environment-variable setup: one unnamed PBX."""
        return cls([Pbx(None, journal.pbx or "", journal, make_client, read_only)])

    @property
    def names(self) -> list[str]:
        return [pbx.name for pbx in self.pbxs if pbx.name is not None]

    @property
    def several(self) -> bool:
        """Whether tools take a `pbx` argument (more than one PBX is configured)."""
        return len(self.pbxs) > 1

    @property
    def all_read_only(self) -> bool:
        return all(pbx.read_only for pbx in self.pbxs)

    def listed(self) -> str:
        """The names as a message offers them: "a", "b" or "c"."""
        return listed(self.names)

    def pick(self, name: str | None, *, argument: str = "pbx") -> Pbx:
        """The PBX a call names, or the default; a missing or unknown name is refused, listing the names."""
        if name is None:
            if not self.several:
                return self.pbxs[0]
            if self.default is not None:
                return self._by_name[self.default]
            raise InvalidArgument(
                f"Say which PBX: {argument} is one of {self.listed()} (no default PBX is configured). "
                "Nothing was changed."
            )
        pbx = self._by_name.get(name)
        if pbx is None and not self.names:  # the THREECX_* variables' one PBX: no name to list
            raise InvalidArgument(
                f"This server manages one PBX, named by the THREECX_* variables, and it has no name: leave "
                f"{argument} out. Nothing was changed."
            )
        if pbx is None:
            raise InvalidArgument(
                f"There is no PBX named {quoted(name, 40)}; {argument} is one of {self.listed()} "
                "(list_pbxs shows them). Nothing was changed."
            )
        return pbx

    def writable(self, pbx: Pbx) -> Pbx:
        """`pbx`, unless it is configured read-only: then the write is refused before anything is sent."""
        return pbx.writable()

    async def owner_of(self, operation_id: str, named: str | None = None) -> Pbx:
        """The PBX a journaled operation was made on, which restore must write to (the PBX's journal holds
        it). Where two names reach that PBX: the one `named`, else the default, else a writable one. An
        operation no configured PBX's journal holds, or held by another PBX than `named`, is refused."""
        owners = [pbx for pbx in self.pbxs if await pbx.journal.operation(operation_id) is not None]
        chosen = None if named is None else self.pick(named)
        if not owners:
            where = chosen.label if chosen is not None else "any configured PBX"
            raise InvalidArgument(
                f"No operation {quoted(operation_id, 64)} is in the safety journal of {where}; "
                "list_operations shows the operations of each PBX. Nothing was changed."
            )
        if chosen is not None and chosen not in owners:
            raise InvalidArgument(
                f"Operation {quoted(operation_id, 64)} was made on {owners[0].label}, not on {chosen.label}: "
                f"an operation is undone on the PBX it was made on. Call again with pbx={owners[0].name} "
                "or without pbx. Nothing was changed."
            )
        default = self._by_name.get(self.default) if self.default is not None else None
        return next(
            (pbx for pbx in (chosen, default) if pbx in owners),
            next((pbx for pbx in owners if not pbx.read_only), owners[0]),
        )

    def close(self) -> None:
        """Close every journal (they reopen when used again)."""
        for pbx in self.pbxs:
            pbx.journal.close()
