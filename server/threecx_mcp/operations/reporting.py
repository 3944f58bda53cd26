"""Results that fit an assistant: a bounded list per operation, the rest behind a resource URI.

A 10,000-id result listed in full is megabytes: past what assistants accept and past the
SDK's event size on streamable HTTP, where the answer of an applied delete would be lost. So a
result lists the entries that need attention first, up to a count and a size, counts the rest,
and names the MCP resource that holds every entry's detail.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar

from ..models import MAX_LISTED_RESULTS

# Characters of listed results at most (ids, caller IDs, descriptions and reasons can each be long).
_LISTED_CHARACTERS = 150_000
OPERATION_URI_PREFIX = "threecx://operations/"


class _Listed(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def caller_id(self) -> str | None: ...
    @property
    def description(self) -> str | None: ...
    @property
    def reason(self) -> str | None: ...


Listed = TypeVar("Listed", bound=_Listed)


def operation_uri(operation_id: str) -> str:
    return f"{OPERATION_URI_PREFIX}{operation_id}"


def bounded_results(
    outcomes: Sequence[Listed], important: Callable[[Listed], bool]
) -> tuple[list[Listed], int]:
    """The outcomes to list (in their order) and how many were left out: important ones have priority."""
    chosen: set[int] = set()
    budget = _LISTED_CHARACTERS
    for wanted in (True, False):
        for position, outcome in enumerate(outcomes):
            if len(chosen) == MAX_LISTED_RESULTS:
                break
            if important(outcome) is not wanted:
                continue
            size = 60 + sum(
                len(text or "")
                for text in (outcome.id, outcome.caller_id, outcome.description, outcome.reason)
            )
            if size > budget:
                continue
            budget -= size
            chosen.add(position)
    listed = [outcome for position, outcome in enumerate(outcomes) if position in chosen]
    return listed, len(outcomes) - len(listed)
