"""What every `threecx-mcp` command's arguments share: a parser whose errors are sentences (argparse's
own show Python reprs: "invalid choice: 'xml' (choose from 'csv', 'json')"), and the --host and
--port rules of the HTTP transport."""

from __future__ import annotations

import argparse
import ipaddress
import re
from typing import NoReturn

from .display import quoted

# argparse's own messages that show reprs (Python 3.11 quotes with repr; later versions may not):
# "invalid choice: 'xml' (choose from 'csv', 'json')" and "invalid int value: 'x'".
_CHOICE = re.compile(r"invalid choice: '?(?P<value>.*?)'? \(choose from (?P<choices>.*)\)$")
_VALUE = re.compile(r"invalid \w+ value: '(?P<value>.*)'$")


class Parser(argparse.ArgumentParser):
    """argparse, with its usage errors worded for people: values in double quotes, no Python reprs."""

    def error(self, message: str) -> NoReturn:
        if (choice := _CHOICE.search(message)) is not None:
            *others, last = (c.strip().strip("'") for c in choice["choices"].split(","))
            allowed = f"{', '.join(others)} or {last}" if others else last
            message = message[: choice.start()] + f"{quoted(choice['value'], 40)} is not one of {allowed}"
        elif (value := _VALUE.search(message)) is not None:
            message = message[: value.start()] + f"{quoted(value['value'], 40)} is not valid here"
        super().error(message)


def port_number(text: str) -> int:
    """--port: a TCP port a client can be told in advance (0, "any free port", could not be)."""
    try:
        port = int(text)
    except ValueError:
        port = 0
    if not 1 <= port <= 65_535:
        raise argparse.ArgumentTypeError(
            f"the port must be a whole number from 1 to 65535, such as 8000, not {quoted(text, 40)}"
        )
    return port


_HOST_NAME = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*\.?")


def host_address(text: str) -> str:
    """--host: an IP address (IPv6 with or without brackets) or a host name, nothing more (no scheme,
    no port, no path)."""
    bare = text.strip()
    bare = bare[1:-1] if bare.startswith("[") and bare.endswith("]") else bare
    try:
        return str(ipaddress.ip_address(bare))
    except ValueError:
        if len(bare) <= 253 and _HOST_NAME.fullmatch(bare):
            return bare
    raise argparse.ArgumentTypeError(
        f"give an IP address or a host name, such as 127.0.0.1, 0.0.0.0, ::1 or localhost, without a "
        f"scheme or port (use --port), not {quoted(text, 80)}"
    )


MAX_SANDBOXES = 20


def sandbox_count(text: str) -> int:
    """--sandboxes: how many embedded sandbox PBXs to make (sandbox-1 … sandbox-N)."""
    try:
        count = int(text)
    except ValueError:
        count = 0
    if not 1 <= count <= MAX_SANDBOXES:
        raise argparse.ArgumentTypeError(
            f"give a whole number of sandbox PBXs from 1 to {MAX_SANDBOXES}, such as 2, not {quoted(text, 40)}"
        )
    return count


SANDBOXES_HELP = (
    "N embedded sandbox PBXs, named sandbox-1 to sandbox-N, each with its own entries, instead of "
    "real ones (as THREECX_SANDBOXES=N does): try a setup of several PBXs without one"
)
PBX_HELP = "the PBX of the config file (or of --sandboxes) to {what}, by its name"


def add_sandbox_options(parser: argparse.ArgumentParser, sandbox_help: str) -> None:
    """--sandbox (the embedded sandbox in place of the PBX, or of every PBX of the config file) and
    --sandboxes N (N sandbox PBXs of their own); one or the other."""
    either = parser.add_mutually_exclusive_group()
    either.add_argument("--sandbox", action="store_true", help=sandbox_help)
    either.add_argument("--sandboxes", type=sandbox_count, metavar="N", help=SANDBOXES_HELP)


def add_pbx(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--pbx", metavar="NAME", help=PBX_HELP.format(what=what))


def sandbox_overrides(sandbox: bool, sandboxes: int | None) -> dict[str, object]:
    """The settings --sandbox and --sandboxes N give on the command line (they beat the environment's)."""
    return {
        **({"sandbox": True} if sandbox else {}),
        **({"sandboxes": sandboxes} if sandboxes is not None else {}),
    }
