"""Untrusted text shown as data: redacted, escaped, quoted and capped, so it cannot change what is said
around it.

Caller IDs, descriptions and ids come from the PBX or from whoever set them up; printed raw, a
line separator, a bidi override or a control character could fake a new line or reorder the
sentence a person reads. Every such character becomes a visible `\\uXXXX` escape, and so do `"`
and `\\`, so the quotes around a value are always the ones written here. Secrets are redacted
first (see `sanitise`).
"""

from __future__ import annotations

from typing import Any

from .sanitise import capped, escaped_pieces, redact

_QUOTING = '\\"'
_KINDS = {bool: "true/false", int: "a number", float: "a number", list: "a list", dict: "an object"}


def kind_of(value: Any) -> str:
    """What a JSON value is, in words, for errors that must not echo the value itself."""
    return (
        "null" if value is None else _KINDS.get(type(value), "text" if isinstance(value, str) else "a value")
    )


def escape(text: str) -> str:
    """The text, redacted, with every invisible or layout-changing character (and `"`, `\\`) escaped."""
    return "".join(escaped_pieces(redact(text), _QUOTING))


def quoted(text: str | None, limit: int = 80) -> str:
    """`"+4420…"`: escaped, in double quotes, cut to at most `limit` characters with an ellipsis."""
    if text is None:
        return "(none)"
    return f'"{capped(escaped_pieces(redact(text), _QUOTING), limit)}"'
