"""A small OData `$filter` interpreter: the subset XAPI clients use on BlackListNumbers.

Grammar: `or`/`and`/`not`, parentheses, comparisons (`eq ne gt ge lt le`, strings compared
ordinally, as `$orderby` sorts them), `in` with a parenthesised list of literals,
`contains`/`startswith`/`endswith`, `tolower`/`toupper`, string literals and `null`.
Anything else is a 400, as on a real PBX.

Each filter is also measured the way ASP.NET Core OData (which 3CX XAPI is built on) measures
it before running it: FilterQueryValidator visits the parsed tree and counts one per node, and
a filter above MaxNodeCount is refused. A property counts 2 (its access and its range
variable), a literal 1, an operator, function call or `not` 1 plus its operands, and an `in`
node 1 with its operands not visited. Parentheses are not nodes.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

Record = Mapping[str, Any]
Predicate = Callable[[Record], bool]

_TOKEN = re.compile(r"\s*(?:(?P<str>'(?:[^']|'')*')|(?P<word>[A-Za-z_][A-Za-z0-9_]*)|(?P<punct>[(),]))")
_BOOLEAN_FUNCTIONS: dict[str, Callable[[str, str], bool]] = {
    "contains": lambda a, b: b in a,
    "startswith": lambda a, b: a.startswith(b),
    "endswith": lambda a, b: a.endswith(b),
}
_STRING_FUNCTIONS: dict[str, Callable[[str], str]] = {"tolower": str.lower, "toupper": str.upper}
_ORDERINGS: dict[str, Callable[[Any, Any], bool]] = {
    "gt": operator.gt,
    "ge": operator.ge,
    "lt": operator.lt,
    "le": operator.le,
}


class FilterError(ValueError):
    """The filter is not valid for this entity; the message is what the PBX would say."""


@dataclass(frozen=True)
class CompiledFilter:
    """A parsed filter: what it matches and how many nodes ASP.NET would count in it.

    `pinned` is (property, values) when the filter can only match records whose property holds
    one of these values (`P eq 'a'`, `P in (...)`, or `or`s of them on one property); such a
    filter is tested by set membership, which keeps 100,000-entry sandboxes quick.
    """

    matches: Predicate
    nodes: int
    pinned: tuple[str, frozenset[Any]] | None = None


@dataclass(frozen=True)
class _Value:
    get: Callable[[Record], Any]
    nodes: int
    prop: str | None = None  # set for a bare property
    constant: bool = False


def _pinned(prop: str, values: frozenset[Any], nodes: int) -> CompiledFilter:
    return CompiledFilter(lambda r: r.get(prop) in values, nodes, (prop, values))


def _tokenize(text: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    pos = len(text) - len(text.lstrip())
    end = len(text.rstrip())
    while pos < end:
        match = _TOKEN.match(text, pos)
        if match is None:
            raise FilterError(f"Syntax error at position {pos} in '{text}'.")
        kind = match.lastgroup or ""
        tokens.append((kind, match.group(kind)))
        pos = match.end()
    return tokens


class _Parser:
    def __init__(self, text: str, properties: frozenset[str], allow_in: bool) -> None:
        self.tokens = _tokenize(text)
        self.pos = 0
        self.properties = properties
        self.allow_in = allow_in
        self.text = text

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self, expected: str | None = None) -> tuple[str, str]:
        token = self.peek()
        if token is None or (expected is not None and token[1] != expected):
            want = f"'{expected}'" if expected else "more input"
            raise FilterError(f"Syntax error: expected {want} in '{self.text}'.")
        self.pos += 1
        return token

    def parse(self) -> CompiledFilter:
        result = self.disjunction()
        token = self.peek()
        if token is not None:
            raise FilterError(f"Syntax error at '{token[1]}' in '{self.text}'.")
        return result

    def disjunction(self) -> CompiledFilter:
        parts = self._chain("or", self.conjunction)
        if len(parts) == 1:
            return parts[0]
        nodes = sum(p.nodes for p in parts) + len(parts) - 1
        pins = [p.pinned for p in parts if p.pinned is not None]
        if len(pins) == len(parts) and len({prop for prop, _ in pins}) == 1:
            return _pinned(pins[0][0], frozenset().union(*(values for _, values in pins)), nodes)
        return CompiledFilter(_combine(any, parts), nodes)

    def conjunction(self) -> CompiledFilter:
        parts = self._chain("and", self.negation)
        if len(parts) == 1:
            return parts[0]
        return CompiledFilter(_combine(all, parts), sum(p.nodes for p in parts) + len(parts) - 1)

    def _chain(self, word: str, operand: Callable[[], CompiledFilter]) -> list[CompiledFilter]:
        parts = [operand()]
        while self.peek() == ("word", word):
            self.take()
            parts.append(operand())
        return parts

    def negation(self) -> CompiledFilter:
        if self.peek() == ("word", "not"):
            self.take()
            inner = self.negation()
            return CompiledFilter(lambda r: not inner.matches(r), 1 + inner.nodes)
        return self.comparison()

    def comparison(self) -> CompiledFilter:
        token = self.peek()
        if token == ("punct", "("):
            self.take()
            inner = self.disjunction()
            self.take(")")
            return inner
        if token is not None and token[1] in _BOOLEAN_FUNCTIONS and self._next_is_call():
            name = self.take()[1]
            self.take("(")
            haystack = self.value()
            self.take(",")
            needle = self.value()
            self.take(")")
            fn = _BOOLEAN_FUNCTIONS[name]

            def call(r: Record) -> bool:
                a, b = haystack.get(r), needle.get(r)
                return a is not None and b is not None and fn(a, b)

            return CompiledFilter(call, 1 + haystack.nodes + needle.nodes)
        left = self.value()
        word = self.take()[1]
        if word == "in" and self.allow_in:
            return self._in(left)
        if word not in ("eq", "ne") and word not in _ORDERINGS:
            raise FilterError(f"Unsupported operator '{word}' in '{self.text}'.")
        right = self.value()
        nodes = 1 + left.nodes + right.nodes
        if word in ("eq", "ne"):
            for prop, constant in ((left, right), (right, left)):
                if word == "eq" and prop.prop is not None and constant.constant:
                    return _pinned(prop.prop, frozenset({constant.get({})}), nodes)
            if word == "eq":
                return CompiledFilter(lambda r: bool(left.get(r) == right.get(r)), nodes)
            return CompiledFilter(lambda r: bool(left.get(r) != right.get(r)), nodes)
        order = _ORDERINGS[word]

        def compare(r: Record) -> bool:
            a, b = left.get(r), right.get(r)
            return a is not None and b is not None and order(a, b)

        return CompiledFilter(compare, nodes)

    def _in(self, left: _Value) -> CompiledFilter:
        self.take("(")
        values = [self._literal()]
        while self.peek() == ("punct", ","):
            self.take()
            values.append(self._literal())
        self.take(")")
        if left.prop is not None:
            return _pinned(left.prop, frozenset(values), 1)
        chosen = frozenset(values)
        return CompiledFilter(lambda r: left.get(r) in chosen, 1)

    def _literal(self) -> str | None:
        value = self.value()
        if not value.constant:
            raise FilterError(f"Syntax error: the list after 'in' must hold only literals in '{self.text}'.")
        result: str | None = value.get({})
        return result

    def _next_is_call(self) -> bool:
        return self.pos + 1 < len(self.tokens) and self.tokens[self.pos + 1] == ("punct", "(")

    def value(self) -> _Value:
        kind, text = self.take()
        if kind == "str":
            literal = text[1:-1].replace("''", "'")
            return _Value(lambda r: literal, 1, constant=True)
        if kind == "word" and text == "null":
            return _Value(lambda r: None, 1, constant=True)
        if kind == "word" and text in _STRING_FUNCTIONS and self.peek() == ("punct", "("):
            self.take("(")
            inner = self.value()
            self.take(")")
            fn = _STRING_FUNCTIONS[text]

            def apply(r: Record) -> Any:
                value = inner.get(r)
                return None if value is None else fn(value)

            return _Value(apply, 1 + inner.nodes)
        if kind == "word" and text in self.properties:
            return _Value(lambda r: r.get(text), 2, prop=text)
        if kind == "word":
            raise FilterError(f"Could not find a property named '{text}' on type 'Pbx.BlackListNumber'.")
        raise FilterError(f"Syntax error at '{text}' in '{self.text}'.")


def _combine(combine: Callable[[Iterable[bool]], bool], parts: list[CompiledFilter]) -> Predicate:
    tests = [p.matches for p in parts]
    return lambda r: combine(t(r) for t in tests)


def compile_filter(text: str, properties: frozenset[str], *, allow_in: bool = True) -> CompiledFilter:
    """Parse `text`; `allow_in=False` plays a server that does not know the `in` operator."""
    return _Parser(text, properties, allow_in).parse()
