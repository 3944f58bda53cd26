"""Untrusted text shown as data: escaped, quoted and capped, so it cannot change what is said around it.

Caller IDs, descriptions and ids come from the PBX or from whoever set them up; printed raw, a
line separator, a bidi override or a control character could fake a new line or reorder the
sentence a person reads. Every such character becomes a visible `\\uXXXX` escape.
"""

from __future__ import annotations

import unicodedata

# Controls, format characters (bidi overrides, zero-width), line/paragraph separators,
# surrogates, private use and unassigned code points.
_ESCAPED_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"})


def escape(text: str) -> str:
    """The text with every invisible or layout-changing character written as an escape."""
    return "".join(_escape_char(c) for c in text)


def _escape_char(char: str) -> str:
    if char in '\\"' or unicodedata.category(char) in _ESCAPED_CATEGORIES:
        return f"\\u{ord(char):04x}" if ord(char) <= 0xFFFF else f"\\U{ord(char):08x}"
    return char


def quoted(text: str | None, limit: int = 80) -> str:
    """`"+4420…"`: escaped, in double quotes, cut to about `limit` characters with an ellipsis."""
    if text is None:
        return "(none)"
    shown = escape(text)
    if len(shown) > limit:
        shown = shown[: limit - 1] + "…"
    return f'"{shown}"'
