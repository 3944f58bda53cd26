"""OData v4 literals, `$filter` expressions and query strings, built so no value can change their shape.

Filters carry their size as ASP.NET Core OData measures it, because 3CX XAPI runs on it and
refuses (400) a `$filter` of more than `MaxNodeCount` nodes (default 100): the client sizes
its batched lookups from these numbers instead of discovering the limit by failing.
"""

from __future__ import annotations

import string
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import quote

# ASP.NET's FilterQueryValidator counts one per visited node: a property access also visits its
# range variable (2), a literal is 1, and an operator or function call is 1 plus its operands.
_PROPERTY_NODES = 2
_LITERAL_NODES = 1
_OPERATOR_NODES = 1
# Kept literal in query values: OData's own punctuation, which servers and logs read more easily
# unencoded. Everything else that is not unreserved, notably space, `+`, `&`, `=`, `#` and `%`,
# is percent-encoded, so a value can never end an option or start a new one.
_QUERY_SAFE = "$'(),"
# Deletes what quote() leaves alone (letters, digits, "_.-~" and _QUERY_SAFE): what remains is encoded.
_KEPT_AS_IS = str.maketrans(dict.fromkeys(string.ascii_letters + string.digits + "_.-~" + _QUERY_SAFE))


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


def query(options: Mapping[str, str]) -> str:
    """`$filter=Id%20eq%20'a'&$top=1`: spaces as %20, not the `+` of HTML forms.

    OData's URL grammar has no `+`-for-space (SAP CAP and Olingo refuse it), and ASP.NET reads a
    literal `+` as a space, so a caller ID such as `+4420...` must travel as `%2B`.
    """
    return "&".join(
        f"{quote(name, safe='$')}={quote(value, safe=_QUERY_SAFE)}" for name, value in options.items()
    )


def encoded_length(value: str) -> int:
    """How long `value` is once `query()` has encoded it; cheap for plain keys, which are most of them
    (sizing 10,000 lookups must not hold up the event loop)."""
    if value.isascii():  # every character stays as it is or becomes one %XX
        return len(value) + 2 * len(value.translate(_KEPT_AS_IS))
    return len(quote(value, safe=_QUERY_SAFE))


@dataclass(frozen=True)
class Filter:
    """A `$filter` expression and its node count as ASP.NET Core OData's validator counts it."""

    text: str
    nodes: int


def _compare(prop: str, operator: str, value: str) -> Filter:
    return Filter(
        f"{prop} {operator} {string_literal(value)}", _OPERATOR_NODES + _PROPERTY_NODES + _LITERAL_NODES
    )


def eq(prop: str, value: str) -> Filter:
    return _compare(prop, "eq", value)


def gt(prop: str, value: str) -> Filter:
    """Ordinal string comparison on the server, the same order its `$orderby` uses: the keyset step."""
    return _compare(prop, "gt", value)


def one_of(prop: str, values: Collection[str]) -> Filter:
    """`Id in ('a','b')`: ASP.NET counts the `in` node once and does not visit its list."""
    literals = ",".join(string_literal(v) for v in values)
    return Filter(f"{prop} in ({literals})", _OPERATOR_NODES)


def contains_ignoring_case(prop: str, value: str) -> Filter:
    """`contains(tolower(P),'value')`: the value lowercased here, the property lowercased by the PBX."""
    nodes = _OPERATOR_NODES + (_OPERATOR_NODES + _PROPERTY_NODES) + _LITERAL_NODES
    return Filter(f"contains(tolower({prop}),{string_literal(value.lower())})", nodes)


def _join(operator: str, filters: Sequence[Filter]) -> Filter:
    if not filters:
        raise ValueError(f"`{operator}` needs at least one operand")
    if len(filters) == 1:
        return filters[0]
    text = f" {operator} ".join(f"({f.text})" for f in filters)
    return Filter(text, sum(f.nodes for f in filters) + _OPERATOR_NODES * (len(filters) - 1))


def any_of(filters: Sequence[Filter]) -> Filter:
    return _join("or", filters)


def all_of(filters: Sequence[Filter]) -> Filter:
    return _join("and", filters)


def max_or_chain(clause: Filter, node_limit: int) -> int:
    """How many clauses of this size an `or` chain can hold within the node limit (n*size + n-1 <= limit)."""
    return max(1, (node_limit + _OPERATOR_NODES) // (clause.nodes + _OPERATOR_NODES))
