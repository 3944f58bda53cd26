"""OData v4 literal quoting, so that no user value can change the shape of a URL or a filter."""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import quote


def string_literal(value: str) -> str:
    """`O'Brien` -> `'O''Brien'`: the OData string literal for any text."""
    return "'" + value.replace("'", "''") + "'"


def parse_string_literal(text: str) -> str:
    """The inverse of `string_literal`; raises ValueError for anything that is not exactly one literal."""
    if len(text) < 2 or text[0] != "'" or text[-1] != "'":
        raise ValueError(f"not a quoted OData string literal: {text!r}")
    body = text[1:-1]
    if body.replace("''", "").count("'"):
        raise ValueError(f"unescaped quote in OData string literal: {text!r}")
    return body.replace("''", "'")


def entity_path(entity_set: str, key: str) -> str:
    """`BlackListNumbers('a''b%2Fc')`: a key segment that stays one path segment whatever the key holds."""
    return f"{entity_set}({quote(string_literal(key), safe=chr(39))})"


def eq(prop: str, value: str) -> str:
    return f"{prop} eq {string_literal(value)}"


def contains(prop: str, value: str, *, ignore_case: bool = False) -> str:
    if ignore_case:
        return f"contains(tolower({prop}),{string_literal(value.lower())})"
    return f"contains({prop},{string_literal(value)})"


def any_of(clauses: Iterable[str]) -> str:
    return " or ".join(f"({c})" for c in clauses)
