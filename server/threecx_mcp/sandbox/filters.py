"""A small OData `$filter` interpreter: the subset XAPI clients use on BlackListNumbers.

Grammar: `or`/`and`/`not`, parentheses, `eq`/`ne` comparisons, `contains`/`startswith`/
`endswith`, `tolower`/`toupper`, string literals and `null`. Anything else is a 400,
as on a real PBX.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

Record = Mapping[str, Any]
Predicate = Callable[[Record], bool]
Value = Callable[[Record], Any]

_TOKEN = re.compile(r"\s*(?:(?P<str>'(?:[^']|'')*')|(?P<word>[A-Za-z_][A-Za-z0-9_]*)|(?P<punct>[(),]))")
_BOOLEAN_FUNCTIONS: dict[str, Callable[[str, str], bool]] = {
    "contains": lambda a, b: b in a,
    "startswith": lambda a, b: a.startswith(b),
    "endswith": lambda a, b: a.endswith(b),
}
_STRING_FUNCTIONS: dict[str, Callable[[str], str]] = {"tolower": str.lower, "toupper": str.upper}


class FilterError(ValueError):
    """The filter is not valid for this entity; the message is what the PBX would say."""


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
    def __init__(self, text: str, properties: frozenset[str]) -> None:
        self.tokens = _tokenize(text)
        self.pos = 0
        self.properties = properties
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

    def parse(self) -> Predicate:
        predicate = self.disjunction()
        if self.peek() is not None:
            raise FilterError(f"Syntax error at '{self.peek()[1]}' in '{self.text}'.")  # type: ignore[index]
        return predicate

    def disjunction(self) -> Predicate:
        return self._chain("or", self.conjunction, any)

    def conjunction(self) -> Predicate:
        return self._chain("and", self.negation, all)

    def _chain(self, word: str, operand: Callable[[], Predicate], combine: Callable[[Iterable[bool]], bool]) -> Predicate:
        parts = [operand()]
        while self.peek() == ("word", word):
            self.take()
            parts.append(operand())
        if len(parts) == 1:
            return parts[0]
        return lambda r: combine(p(r) for p in parts)

    def negation(self) -> Predicate:
        if self.peek() == ("word", "not"):
            self.take()
            inner = self.negation()
            return lambda r: not inner(r)
        return self.comparison()

    def comparison(self) -> Predicate:
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
            return lambda r: (lambda a, b: a is not None and b is not None and fn(a, b))(haystack(r), needle(r))
        left = self.value()
        operator = self.take()[1]
        if operator not in ("eq", "ne"):
            raise FilterError(f"Unsupported operator '{operator}' in '{self.text}'.")
        right = self.value()
        if operator == "eq":
            return lambda r: left(r) == right(r)
        return lambda r: left(r) != right(r)

    def _next_is_call(self) -> bool:
        return self.pos + 1 < len(self.tokens) and self.tokens[self.pos + 1] == ("punct", "(")

    def value(self) -> Value:
        kind, text = self.take()
        if kind == "str":
            literal = text[1:-1].replace("''", "'")
            return lambda r: literal
        if kind == "word" and text == "null":
            return lambda r: None
        if kind == "word" and text in _STRING_FUNCTIONS and self.peek() == ("punct", "("):
            self.take("(")
            inner = self.value()
            self.take(")")
            fn = _STRING_FUNCTIONS[text]
            return lambda r: None if inner(r) is None else fn(inner(r))
        if kind == "word" and text in self.properties:
            return lambda r: r.get(text)
        if kind == "word":
            raise FilterError(f"Could not find a property named '{text}' on type 'Pbx.BlackListNumber'.")
        raise FilterError(f"Syntax error at '{text}' in '{self.text}'.")


def compile_filter(text: str, properties: frozenset[str]) -> Predicate:
    return _Parser(text, properties).parse()
