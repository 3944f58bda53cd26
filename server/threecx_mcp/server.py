"""Build the MCP server: tools, the shared XAPI client's lifetime, and one place that words failures."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import CallToolResult, InputRequiredResult, TextContent
from pydantic import ValidationError

from . import __version__
from .app_state import AppState
from .confirmation import PlanBook
from .display import escape, quoted
from .errors import ThreeCXMcpError
from .models import MAX_ARGUMENT_DEPTH, nesting_depth
from .pbxs import PbxRoster
from .sanitise import clean
from .tools import PBX_ARGUMENTS, register

log = logging.getLogger(__name__)

_NAME_LIMIT = 40  # an argument name echoed from the request
_LISTED_PROBLEMS = 10
_MESSAGE_LIMIT = 1_800  # with the tool's name and the closing words, under 2,000 characters

INSTRUCTIONS = """\
Manages the caller blacklist of a 3CX phone system. list_recent_callers shows who has been calling
and whether they are blocked; check_caller_id says which entry or * pattern blocks a number (check
before adding). Find entries with list_blacklist_numbers (search by number, name or note); its ids
are what get, update and bulk delete take; add_blacklist_numbers blocks a whole list (or CSV) at once. Deleting
unblocks callers and the user confirms it: when a call returns a plan_id instead of deleting, show
the user the plan (counts and caller IDs) and apply it with plan_id only if they agree. Every update,
delete and restore is journaled first; restore_blacklist_numbers undoes one by its operation_id, and
list_operations finds them."""

SEVERAL_PBXS = """
This server manages several PBXs: every tool takes pbx, the PBX to act on (list_pbxs names them,
with their URLs and whether each is read-only); copy_blacklist_numbers copies entries from one to
another. Say which PBX a result is from when you report it."""


def error_result(message: str) -> CallToolResult:
    """The one way a failure reaches the client: through the sanitiser once more, whatever built it."""
    return CallToolResult(content=[TextContent(type="text", text=clean(message, None))], is_error=True)


def _name(text: str) -> str:
    """An argument name from the request, escaped and cut: it is the caller's text, not ours."""
    shown = escape(text)
    return shown if len(shown) <= _NAME_LIMIT else shown[: _NAME_LIMIT - 1] + "…"


def _invalid(tool: str, problems: list[str]) -> str:
    text = f"Invalid arguments for {tool}: " + "; ".join(problems)
    if len(text) > _MESSAGE_LIMIT:
        text = text[: _MESSAGE_LIMIT - 1] + "…"
    return text + ". Nothing was changed."


def describe_invalid_arguments(tool: str, error: ValidationError, pbxs: PbxRoster | None = None) -> str:
    problems = []
    for item in error.errors(include_url=False, include_input=False)[:_LISTED_PROBLEMS]:
        where = ".".join(_name(str(part)) for part in item["loc"]) or "arguments"
        said = item["msg"].removeprefix("Value error, ")
        if pbxs is not None and len(item["loc"]) == 1 and item["loc"][0] in PBX_ARGUMENTS:
            missing = item["type"] == "missing"
            said = (
                f"{'say which PBX' if missing else 'no PBX has that name'}: it is one of {pbxs.listed()} "
                f"({'no default PBX is configured; ' if missing else ''}list_pbxs lists them)"
            )
        problems.append(f"{where}: {said}")
    return _invalid(tool, problems)


def _too_deep(tool: str, argument: str) -> str:
    problem = (
        f"{argument} is nested too deeply (more than {MAX_ARGUMENT_DEPTH} levels of lists or objects); "
        'no argument takes more than a flat list such as ["12", "15"]'
    )
    return _invalid(tool, [problem])


class BlacklistServer(MCPServer[AppState]):
    """MCPServer whose tool failures reach the user as one readable, actionable sentence."""

    pbxs: PbxRoster | None = None  # the PBXs its tools offer, for wording a wrong or missing name

    async def call_tool(
        self, name: str, arguments: dict[str, Any], context: Context[AppState, Any] | None = None
    ) -> CallToolResult | InputRequiredResult:
        tool = self._tool_manager.get_tool(name)
        if tool is None:
            return error_result(f"There is no tool {quoted(name, 60)}; tools/list names this server's tools.")
        properties = tool.parameters.get("properties", {})
        unknown = sorted(set(arguments) - set(properties))
        if unknown:
            shown = ", ".join(_name(argument) for argument in unknown[:_LISTED_PROBLEMS])
            more = f" and {len(unknown) - _LISTED_PROBLEMS} more" if len(unknown) > _LISTED_PROBLEMS else ""
            return error_result(
                f"Unknown argument(s) for {name}: {shown}{more}. It takes: {', '.join(properties)}."
            )
        for argument, value in arguments.items():
            # Measured without recursion before json or pydantic walk it (and run out of stack).
            if nesting_depth(value) > MAX_ARGUMENT_DEPTH:
                return error_result(_too_deep(name, argument))
        try:
            return await super().call_tool(name, arguments, context)
        except ToolError as exc:
            cause = exc.__cause__
            if isinstance(cause, RecursionError):  # a JSON string nested deeper than any check foresaw
                return error_result(_too_deep(name, "an argument"))
            if isinstance(cause, ValidationError):
                return error_result(describe_invalid_arguments(name, cause, self.pbxs))
            if isinstance(cause, ThreeCXMcpError):
                log.info("%s failed: %s", name, type(cause).__name__)
                return error_result(cause.user_message())
            raise


def build_server(
    pbxs: PbxRoster,
    *,
    read_only: bool = False,
    plans: PlanBook | None = None,
) -> BlacklistServer:
    """The server for these PBXs; `read_only` registers no write tool (nor does a roster whose every PBX is
    read-only); `plans` is where confirmations wait (in memory unless given a file, see `confirmation`)."""
    plan_book = plans or PlanBook()

    @asynccontextmanager
    async def lifespan(_: MCPServer[AppState]) -> AsyncIterator[AppState]:
        # Everything made while starting (the SDK, pydantic's schemas) lives as long as the server: freezing
        # it keeps CPython's full collections, which walk every object, from pausing large operations.
        gc.freeze()
        state = AppState(pbxs=pbxs, plans=plan_book)
        try:
            yield state
        finally:
            await state.close()

    server = BlacklistServer(
        "threecx-mcp",
        title="3CX blacklist",
        instructions=INSTRUCTIONS + (SEVERAL_PBXS if pbxs.several else ""),
        version=__version__,
        lifespan=lifespan,
        log_level="WARNING",
    )
    server.pbxs = pbxs
    register(server, pbxs, read_only=read_only or pbxs.all_read_only)
    return server
