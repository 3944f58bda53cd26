"""Pydantic models: the single source of the tools' input rules and output schemas."""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from .client import BlacklistRecord
from .errors import shorten

MAX_CALLER_ID_LENGTH = 100
MAX_DESCRIPTION_LENGTH = 255
MAX_ID_LENGTH = 1000
MAX_BULK_IDS = 10_000
MAX_SEARCH_LENGTH = 200
MAX_LISTED_RESULTS = 100

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_PHONE_LIKE = re.compile(r"^\+?[\d\s().\-/]+$")


def _clean_text(value: Any, what: str, max_length: int, *, allow_blank: bool = False) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError(f"{what} must be text, not {type(value).__name__}")
    text = str(value).strip()
    if not text and not allow_blank:
        raise ValueError(f"{what} must not be blank")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{what} is not valid Unicode text (it holds an unpaired surrogate)") from None
    if _CONTROL.search(text):
        raise ValueError(f"{what} must not contain control characters (newlines, tabs, NUL)")
    if len(text) > max_length:
        raise ValueError(f"{what} is {len(text)} characters long; the limit is {max_length}")
    return text


def _entry_id(value: Any) -> str:
    return _clean_text(value, "id", MAX_ID_LENGTH)


def _caller_id(value: Any) -> str:
    return _clean_text(value, "caller_id", MAX_CALLER_ID_LENGTH)


def _description(value: Any) -> str:
    return _clean_text(value, "description", MAX_DESCRIPTION_LENGTH, allow_blank=True)


def _search(value: Any) -> str:
    return _clean_text(value, "search", MAX_SEARCH_LENGTH, allow_blank=True)


def _id_list(value: Any) -> list[str]:
    """A list of ids, or a JSON string holding one (as the n8n 3CX node sends it); duplicates folded."""
    received = shorten(value if isinstance(value, str) else json.dumps(value, default=str), 120)
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise ValueError(
                f'ids is not valid JSON; send a list such as ["12", "15"] (received {received})'
            ) from None
    if not isinstance(value, list):
        raise ValueError(f'ids must be a list such as ["12", "15"] (received {received})')
    if not value:
        raise ValueError("ids is empty; give at least one id (list_blacklist_numbers shows them)")
    if len(value) > MAX_BULK_IDS:
        raise ValueError(f"ids has {len(value)} items; send at most {MAX_BULK_IDS} per call")
    ids: dict[str, None] = {}
    for position, item in enumerate(value):
        if isinstance(item, bool) or not isinstance(item, str | int):
            raise ValueError(
                f"ids[{position}] must be a string or a number, not {json.dumps(item, default=str)[:60]}"
            )
        try:
            ids[_entry_id(item)] = None
        except ValueError as exc:
            raise ValueError(f"ids[{position}]: {exc} (received {received})") from None
    return list(ids)


EntryId = Annotated[
    str | int,
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
IdList = Annotated[
    list[str | int] | str,
    BeforeValidator(_id_list),
    Field(
        description=(
            'Ids of the entries to delete: a list such as ["12", "15"] (numbers are accepted), or a '
            f"JSON string holding such a list. At most {MAX_BULK_IDS}."
        ),
    ),
]


def normalize_caller_id(caller_id: str) -> tuple[str, str | None]:
    """Strip phone-number formatting so the entry matches the digits the PBX sees; names stay as typed."""
    if "*" in caller_id or not _PHONE_LIKE.match(caller_id):
        return caller_id, None
    digits = re.sub(r"\D", "", caller_id)
    normalized = ("+" if caller_id.startswith("+") else "") + digits
    if len(digits) < 2 or normalized == caller_id:
        return caller_id, None
    return (
        normalized,
        f"caller_id {caller_id!r} was normalised to {normalized!r} (3CX compares caller IDs exactly).",
    )


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


DeleteStatus = Literal["deleted", "not_found", "failed", "would_delete", "unknown"]


class DeleteOutcome(BaseModel):
    id: str
    status: DeleteStatus
    caller_id: str | None = Field(
        default=None, description="The entry's caller ID before deletion (to restore it)."
    )
    description: str | None = None
    reason: str | None = Field(default=None, description="Why the id failed or is unknown.")


class BulkDeleteResult(BaseModel):
    operation_id: str | None = Field(
        default=None,
        description="Journal id of this delete; restore_blacklist_numbers can re-create the entries.",
    )
    outcome: Literal["completed", "partial", "interrupted", "dry_run", "declined"]
    summary: str
    requested: int = Field(description="Distinct ids asked for.")
    deleted: int
    not_found: int
    failed: int
    unknown: int = Field(description="Ids whose request got no answer: the PBX may still have deleted them.")
    would_delete: int = Field(default=0, description="Dry run only: ids that exist and would be deleted.")
    results: list[DeleteOutcome] = Field(
        description=f"Per-id results in request order, at most {MAX_LISTED_RESULTS}: every id that was not "
        "deleted comes first in priority; the rest are counted in `omitted`."
    )
    omitted: int = Field(
        default=0, description="Per-id results left out of `results`; `details` has them all."
    )
    details: str | None = Field(default=None, description="MCP resource URI with every id's result.")
    warnings: list[str] = Field(default_factory=list)


class DeleteConfirmation(BaseModel):
    """What the user is asked before a bulk delete."""

    confirm: bool = Field(
        title="Delete these entries", description="Tick to delete; they can only be re-added by hand."
    )


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
