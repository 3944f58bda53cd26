"""Pydantic models: the single source of the tools' input rules and output schemas."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema

from .caller_ids import MAX_CALLER_ID_LENGTH, character_name
from .client import BlacklistRecord
from .display import kind_of, quoted

MAX_DESCRIPTION_LENGTH = 255
MAX_ID_LENGTH = 1000
MAX_BULK_IDS = 10_000
MAX_IDS_JSON_LENGTH = 1_000_000  # ids sent as one JSON string: 10,000 ids of up to ~100 characters
MAX_SEARCH_LENGTH = 200
MAX_LISTED_RESULTS = 100
MAX_ARGUMENT_DEPTH = 32  # no tool takes more than a list of scalars; deeper input is an attack or a bug
_MAX_NUMBER_BITS = 3_300  # about MAX_ID_LENGTH decimal digits; str() of a far longer int raises


def nesting_depth(value: Any, limit: int = MAX_ARGUMENT_DEPTH) -> int:
    """How deeply lists and objects nest in `value`, counted without recursion and up to `limit` + 1.

    JSON nested thousands deep exhausts Python's recursion limit in json, pydantic and any recursive
    walk; measuring it iteratively first lets the server refuse it in a sentence.
    """
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if not isinstance(item, list | dict):
            continue
        depth += 1
        if depth > limit:
            return depth
        deepest = max(deepest, depth)
        stack.extend((child, depth) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def _bounded_text(value: Any, what: str, max_length: int, *, allow_blank: bool = False) -> str:
    """Text of bounded length, checked before any other work so that a megabyte costs nothing."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError(f"{what} must be text, not {kind_of(value)}")
    if isinstance(value, int) and value.bit_length() > _MAX_NUMBER_BITS:
        raise ValueError(f"{what} is a number far longer than {max_length} digits")
    if len(text := str(value)) > max_length:
        raise ValueError(f"{what} is {len(text)} characters long; the limit is {max_length}")
    text = text.strip()
    if not text and not allow_blank:
        raise ValueError(f"{what} must not be blank")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{what} is not valid Unicode text (it holds an unpaired surrogate)") from None
    return text


def _clean_text(value: Any, what: str, max_length: int, *, allow_blank: bool = False) -> str:
    text = _bounded_text(value, what, max_length, allow_blank=allow_blank)
    for position, char in enumerate(text, start=1):
        if char < " " or char == "\x7f":
            raise ValueError(
                f"{what} holds {character_name(char)} at position {position}; control characters "
                "(newlines, tabs, NUL) are not allowed"
            )
    return text


def _entry_id(value: Any) -> str:
    return _clean_text(value, "id", MAX_ID_LENGTH)


def _caller_id(value: Any) -> str:
    """Only bounded here: caller_ids.check_caller_id, run by the operation, refuses or normalises it."""
    return _bounded_text(value, "caller_id", MAX_CALLER_ID_LENGTH)


def _description(value: Any) -> str:
    return _clean_text(value, "description", MAX_DESCRIPTION_LENGTH, allow_blank=True)


def _search(value: Any) -> str:
    return _clean_text(value, "search", MAX_SEARCH_LENGTH, allow_blank=True)


def _id_list(value: Any) -> list[str]:
    """A list of ids, or a JSON string holding one (as the n8n 3CX node sends it); duplicates folded."""
    example = 'send a list such as ["12", "15"]'
    if isinstance(value, str):
        if len(value) > MAX_IDS_JSON_LENGTH:
            raise ValueError(f"ids is {len(value)} characters of text; the limit is {MAX_IDS_JSON_LENGTH}")
        try:
            value = json.loads(value)
        except RecursionError:
            raise ValueError(f"ids holds JSON nested too deeply; {example}") from None
        except ValueError:
            raise ValueError(f"ids is not valid JSON; {example} (received {quoted(value, 60)})") from None
    if not isinstance(value, list):
        raise ValueError(f"ids must be a list, not {kind_of(value)}; {example}")
    if not value:
        raise ValueError("ids is empty; give at least one id (list_blacklist_numbers shows them)")
    if len(value) > MAX_BULK_IDS:
        raise ValueError(f"ids has {len(value)} items; send at most {MAX_BULK_IDS} per call")
    ids: dict[str, None] = {}
    for position, item in enumerate(value):
        if isinstance(item, bool) or not isinstance(item, str | int):
            raise ValueError(f"ids[{position}] must be a string or a number, not {kind_of(item)}")
        try:
            ids[_entry_id(item)] = None
        except ValueError as exc:
            raise ValueError(f"ids[{position}]: {exc}") from None
    return list(ids)


_IdText = Annotated[str, Field(max_length=MAX_ID_LENGTH)]

EntryId = Annotated[
    _IdText | int,
    BeforeValidator(_entry_id),
    Field(description='The entry\'s id (its XAPI key) as list_blacklist_numbers shows it, e.g. "42".'),
]
CallerIdInput = Annotated[
    str,
    BeforeValidator(_caller_id),
    Field(
        description=(
            "Caller ID to block: a phone number (formatting such as '+1 (555) 010-0199' is removed), "
            "a caller ID name, or a pattern with * as wildcard (e.g. '*eremy'). It must match the "
            "incoming caller ID exactly, case included."
        ),
        max_length=MAX_CALLER_ID_LENGTH,
    ),
]
DescriptionInput = Annotated[
    str,
    BeforeValidator(_description),
    Field(description="Free-text note shown in the 3CX console.", max_length=MAX_DESCRIPTION_LENGTH),
]
SearchInput = Annotated[
    str,
    BeforeValidator(_search),
    Field(
        description="Text to look for in caller IDs and descriptions (case-insensitive). Omit to list all.",
        max_length=MAX_SEARCH_LENGTH,
    ),
]
PlanId = Annotated[
    str,
    Field(
        description="plan_id from the plan the user agreed to (only for clients that cannot ask the user).",
        max_length=64,
    ),
]
IdList = Annotated[
    Annotated[list[_IdText | int], Field(max_length=MAX_BULK_IDS)]
    | Annotated[str, Field(max_length=MAX_IDS_JSON_LENGTH)],
    BeforeValidator(_id_list),
    Field(
        description=(
            'Ids of the entries to delete: a list such as ["12", "15"] (numbers are accepted), or a '
            f"JSON string holding such a list. At most {MAX_BULK_IDS}."
        ),
    ),
]


# -- outputs ----------------------------------------------------------------------------------


class BlacklistEntry(BaseModel):
    """One blacklist entry."""

    model_config = ConfigDict(frozen=True)

    id: str = Field(description="The entry's key; pass it to get/update/delete.")
    caller_id: str = Field(description="The blocked caller ID (number, name, or * pattern).")
    description: str | None = Field(description="The note on the entry, if any.")

    @classmethod
    def of(cls, record: BlacklistRecord) -> BlacklistEntry:
        return cls(id=record.id, caller_id=record.caller_id, description=record.description or None)


class BlacklistPageResult(BaseModel):
    entries: list[BlacklistEntry]
    total: int | None = Field(description="How many entries match in all (not just this page).")
    next_cursor: str | None = Field(description="Pass as cursor to get the next page; null on the last page.")


class AddResult(BaseModel):
    entry: BlacklistEntry
    notes: list[str] = Field(
        default_factory=list, description="What was adjusted, e.g. caller ID normalisation."
    )


Field_ = Literal["caller_id", "description"]


class UpdateResult(BaseModel):
    operation_id: str | None = Field(
        description="Journal id of this change; restore_blacklist_numbers can undo it."
    )
    entry: BlacklistEntry = Field(
        description="The entry as the PBX stores it now (read back after the change), or as sent if read_back is false."
    )
    previous: BlacklistEntry = Field(description="The entry before the change, to undo it if needed.")
    changed_fields: list[Field_] = Field(description="Fields that actually changed; empty if nothing did.")
    read_back: bool = Field(
        default=True, description="False when the change was applied but could not be read back."
    )
    notes: list[str] = Field(default_factory=list)
    warnings: list[str] = Field(
        default_factory=list, description="What went wrong after the change was applied."
    )


DeleteStatus = Literal["deleted", "not_found", "failed", "would_delete", "unknown", "skipped"]


class DeleteOutcome(BaseModel):
    id: str
    status: DeleteStatus
    caller_id: str | None = Field(
        default=None, description="The entry's caller ID before deletion (to restore it)."
    )
    description: str | None = None
    reason: str | None = Field(default=None, description="Why the id failed or is unknown.")


class BulkWriteHead(BaseModel):
    """What every confirmed bulk write answers first: what became of it, and how to undo or apply it."""

    operation_id: str | None = Field(
        default=None, description="Journal id of this write; restore_blacklist_numbers undoes it."
    )
    outcome: Literal["completed", "partial", "interrupted", "dry_run", "awaiting_confirmation", "declined"]
    summary: str
    plan_id: str | None = Field(
        default=None,
        description="Set when nothing was written yet: show the summary to the user and, if they agree, "
        "call again with the same arguments and this plan_id (valid 10 minutes, once).",
    )


class BulkDeleteResult(BulkWriteHead):
    requested: int = Field(description="Distinct ids asked for.")
    deleted: int
    not_found: int
    failed: int
    unknown: int = Field(description="Ids whose request got no answer: the PBX may still have deleted them.")
    would_delete: int = Field(default=0, description="Dry run only: ids that exist and would be deleted.")
    skipped: int = Field(
        default=0,
        description="Ids left alone because they were not as the user saw them when confirming (new, or changed).",
    )
    results: list[DeleteOutcome] = Field(
        description=f"Per-id results in request order, at most {MAX_LISTED_RESULTS}: every id that was not "
        "deleted comes first in priority; the rest are counted in `omitted`."
    )
    omitted: int = Field(
        default=0, description="Per-id results left out of `results`; `details` has them all."
    )
    details: str | None = Field(default=None, description="MCP resource URI with every id's result.")
    warnings: list[str] = Field(default_factory=list)


RestoreStatus = Literal[
    "recreated",
    "rolled_back",
    "removed",
    "already_present",
    "already_restored",
    "already_absent",
    "changed_since",
    "nothing_to_undo",
    "failed",
    "unknown",
]


class RestoreOutcome(BaseModel):
    id: str = Field(description="The entry's id when it was journaled.")
    status: RestoreStatus
    caller_id: str
    description: str | None
    current_id: str | None = Field(
        default=None, description="The entry's id now (re-created entries get a new one)."
    )
    reason: str | None = None


class RestoreResult(BaseModel):
    operation_id: str | None = Field(
        description="Journal id of this restore itself; restoring it undoes the restore."
    )
    undoes: str | None = Field(
        default=None, description="The operation this restore undid, if one was named."
    )
    outcome: Literal["completed", "partial", "interrupted", "nothing_to_do"]
    summary: str
    counts: dict[str, int] = Field(description="How many entries ended in each status.")
    results: list[RestoreOutcome] = Field(
        description=f"Per-entry results, at most {MAX_LISTED_RESULTS}, those needing attention first in priority."
    )
    omitted: int = Field(
        default=0, description="Per-entry results left out of `results`; `details` has them all."
    )
    details: str | None = Field(default=None, description="MCP resource URI with every entry's result.")
    warnings: list[str] = Field(default_factory=list)


OperationKindName = Literal["add", "update", "delete", "restore"]


class OperationSummary(BaseModel):
    operation_id: str
    time: str = Field(description="When it started (UTC, ISO 8601).")
    kind: OperationKindName
    outcome: str = Field(
        description="completed, partial, interrupted, ... or not_closed if the server died midway."
    )
    counts: dict[str, int] = Field(description="How many entries ended in each status.")
    restorable: bool = Field(
        description="Whether restore_blacklist_numbers(operation_id=...) has anything to undo."
    )
    undoes: str | None = Field(default=None, description="For a restore: the operation it undid.")
    details: str = Field(description="MCP resource URI with every entry of the operation.")


class OperationsPage(BaseModel):
    operations: list[OperationSummary] = Field(description="Newest first.")
    next_cursor: str | None = Field(
        description="Pass as cursor for older operations; null when there are none."
    )


# -- callers: check_caller_id and list_recent_callers -------------------------------------------

MAX_RECENT_HOURS = 720  # 30 days
MAX_RECENT_CALLERS = 500

CheckedCallerId = Annotated[
    str,
    BeforeValidator(_caller_id),
    Field(
        description=(
            "The incoming caller ID to check: a phone number (formatting such as '+1 (555) 010-0199' is "
            "removed, as when adding) or a caller ID name. Compared as 3CX does: exactly, case included."
        ),
        max_length=MAX_CALLER_ID_LENGTH,
    ),
]

MatchKind = Literal["exact", "pattern"]


class BlockingEntry(BaseModel):
    entry: BlacklistEntry
    match: MatchKind = Field(description="exact: the entry is this caller ID; pattern: its * matches it.")


class CallerCheckResult(BaseModel):
    caller_id: str = Field(description="The caller ID as checked, after the same normalisation as add.")
    blocked: bool
    blocked_by: list[BlockingEntry] = Field(
        description=f"The entries that block it, the exact one first, then patterns; at most {MAX_LISTED_RESULTS}."
    )
    omitted: int = Field(default=0, description="Blocking entries left out of `blocked_by`.")
    summary: str
    notes: list[str] = Field(default_factory=list, description="How the caller ID was normalised, if it was.")


class RecentCaller(BaseModel):
    caller_id: str = Field(description='The caller ID the PBX logged ("" when it logged none).')
    name: str | None = Field(description="The caller's display name in the latest call, if any.")
    calls: int
    answered: int
    unanswered: int
    first_call: str | None = Field(description="Start of the earliest call in the period (UTC, ISO 8601).")
    last_call: str | None = Field(description="Start of the latest call in the period (UTC, ISO 8601).")
    blocked_by: BlacklistEntry | None = Field(description="An entry that blocks this caller now, if any.")
    blocked_on: Literal["caller_id", "name"] | None = Field(
        description="Whether that entry matches the caller ID or the display name."
    )


class RecentCallersResult(BaseModel):
    period_from: str = Field(description="Start of the period read (UTC, ISO 8601).")
    period_to: str = Field(description="End of the period read (UTC, ISO 8601).")
    records_read: int = Field(description="Call log records read (a call may have several).")
    inbound_calls: int = Field(description="Inbound calls among them.")
    callers_total: int = Field(description="Callers with at least min_calls inbound calls.")
    callers: list[RecentCaller] = Field(description="The most frequent callers first, at most `limit`.")
    truncated: bool = Field(description="True when the call log held more records than were read.")
    summary: str


# -- add_blacklist_numbers: many entries at once ------------------------------------------------

MAX_BULK_ENTRIES = 10_000


def checked_description(value: str | None) -> str | None:
    """A description as the single add takes it (bounded, no control characters; blank is none), or
    ValueError saying what is wrong: the bulk add applies the same rule to each entry."""
    return None if value is None else (_description(value) or None)


# Any: `operations.entry_lists.parse_entries` reads it (the schema below is what clients see), so a string
# the SDK decoded as JSON, an object, or a number gets that reader's sentence rather than pydantic's.
EntryList = Annotated[
    Any,
    WithJsonSchema(
        {
            "anyOf": [
                {
                    "type": "array",
                    "maxItems": MAX_BULK_ENTRIES,
                    "items": {
                        "type": "object",
                        "properties": {
                            "caller_id": {"type": "string", "maxLength": MAX_CALLER_ID_LENGTH},
                            "description": {
                                "anyOf": [
                                    {"type": "string", "maxLength": MAX_DESCRIPTION_LENGTH},
                                    {"type": "null"},
                                ]
                            },
                        },
                        "required": ["caller_id"],
                        "additionalProperties": False,
                    },
                },
                {"type": "string", "maxLength": 2_000_000},
            ],
            "description": (
                f"Up to {MAX_BULK_ENTRIES} entries: a list of {{caller_id, description}} objects, CSV text whose "
                "first line is the header caller_id,description (quote fields holding commas), or a JSON string "
                "holding the list. Each caller ID is normalised and checked as for add_blacklist_number."
            ),
        }
    ),
]

BulkAddStatus = Literal[
    "added", "already_present", "invalid", "duplicate", "skipped", "failed", "unknown", "would_add"
]


class AddOutcome(BaseModel):
    row: int = Field(description="The entry's position in the input (1-based; a CSV's header not counted).")
    status: BulkAddStatus
    caller_id: str = Field(description="The caller ID as stored (normalised), or as given when invalid.")
    description: str | None = None
    id: str | None = Field(
        default=None, description="The entry's id: the new one, or the existing entry's for already_present."
    )
    reason: str | None = Field(
        default=None,
        description="Why it is invalid, failed, unknown or a duplicate; for the others, how its caller ID was "
        "normalised or what to check about it.",
    )


class BulkAddResult(BulkWriteHead):
    requested: int = Field(description="Entries given.")
    added: int
    already_present: int = Field(description="Caller IDs the blacklist already held (left alone).")
    invalid: int = Field(description="Entries refused before sending (see each reason).")
    duplicate: int = Field(description="Entries folded into an earlier entry with the same caller ID.")
    skipped: int = Field(
        default=0,
        description="Entries not added because the user did not agree to add them: the plan or question they "
        "answered showed them as already blocked.",
    )
    failed: int
    unknown: int = Field(description="Entries whose request got no answer: the PBX may still add them.")
    would_add: int = Field(default=0, description="Dry run or plan only: entries that would be added.")
    results: list[AddOutcome] = Field(
        description=f"Per-entry results in input order, at most {MAX_LISTED_RESULTS}: entries that were not "
        "added come first in priority; the rest are counted in `omitted`."
    )
    omitted: int = Field(
        default=0, description="Per-entry results left out of `results`; `details` has them all."
    )
    details: str | None = Field(
        default=None, description="MCP resource URI with every row's result, those not sent included."
    )
    warnings: list[str] = Field(default_factory=list)


# -- several PBXs: list_pbxs ----------------------------------------------------------------------


class PbxStatus(BaseModel):
    name: str
    url: str = Field(description="The PBX's address, or 'sandbox' for an embedded sandbox PBX.")
    read_only: bool = Field(description="True: this server makes no change on it.")
    default: bool = Field(description="True: the PBX a tool acts on when pbx is omitted.")
    answers: bool = Field(description="Whether it answered just now (login and a count of the blacklist).")
    entries: int | None = Field(default=None, description="Blacklist entries, when it answered with a count.")
    problem: str | None = Field(default=None, description="Why it did not answer, and what to do.")


class PbxListResult(BaseModel):
    pbxs: list[PbxStatus] = Field(description="In the config file's order.")
    summary: str
