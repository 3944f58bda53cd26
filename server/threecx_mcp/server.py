"""Build the MCP server: tools, the shared XAPI client's lifetime, and one place that words failures."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import CallToolResult, InputRequiredResult, TextContent
from pydantic import ValidationError

from . import __version__
from .client import XapiClient
from .errors import ThreeCXMcpError
from .journal import Journal
from .tools import AppState, register

log = logging.getLogger(__name__)

INSTRUCTIONS = """\
Manages the caller blacklist of a 3CX phone system. Find entries with list_blacklist_numbers
(search by number, name or note); its ids are what get, update and bulk delete take. Deleting
unblocks callers: preview with dry_run=true. Every update, delete and restore is journaled first;
restore_blacklist_numbers undoes one by its operation_id, and list_operations finds them."""


def error_result(message: str) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=message)], is_error=True)


def describe_invalid_arguments(tool: str, error: ValidationError) -> str:
    problems = []
    for item in error.errors(include_url=False, include_input=False):
        where = ".".join(str(part) for part in item["loc"]) or "arguments"
        problems.append(f"{where}: {item['msg'].removeprefix('Value error, ')}")
    return f"Invalid arguments for {tool}: " + "; ".join(problems) + ". Nothing was changed."


class BlacklistServer(MCPServer[AppState]):
    """MCPServer whose tool failures reach the user as one readable, actionable sentence."""

    async def call_tool(
        self, name: str, arguments: dict[str, Any], context: Context[AppState, Any] | None = None
    ) -> CallToolResult | InputRequiredResult:
        tool = self._tool_manager.get_tool(name)
        if tool is not None:
            unknown = sorted(set(arguments) - set(tool.parameters.get("properties", {})))
            if unknown:
                allowed = ", ".join(tool.parameters.get("properties", {}))
                return error_result(
                    f"Unknown argument(s) for {name}: {', '.join(unknown)}. It takes: {allowed}."
                )
        try:
            return await super().call_tool(name, arguments, context)
        except ToolError as exc:
            cause = exc.__cause__
            if isinstance(cause, ValidationError):
                return error_result(describe_invalid_arguments(name, cause))
            if isinstance(cause, ThreeCXMcpError):
                log.info("%s failed: %s", name, type(cause).__name__)
                return error_result(cause.user_message())
            raise


def build_server(
    client_factory: Callable[[], XapiClient], journal: Journal, *, read_only: bool = False
) -> BlacklistServer:
    @asynccontextmanager
    async def lifespan(_: MCPServer[AppState]) -> AsyncIterator[AppState]:
        # Everything made while starting (the SDK, pydantic's schemas) lives as long as the server: freezing
        # it keeps CPython's full collections, which walk every object, from pausing large operations.
        gc.freeze()
        try:
            async with client_factory() as client:
                yield AppState(client=client, journal=journal)
        finally:
            journal.close()  # it reopens if the server is started again

    server = BlacklistServer(
        "threecx-mcp",
        title="3CX blacklist",
        instructions=INSTRUCTIONS,
        version=__version__,
        lifespan=lifespan,
        log_level="WARNING",
    )
    register(server, read_only=read_only)
    return server
