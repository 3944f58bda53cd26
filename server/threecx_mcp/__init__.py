"""MCP server for the caller blacklist of a 3CX phone system (XAPI)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("threecx-mcp")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0"
