"""Opening and closing an operation's journal record, with what each failure means for the user.

The begin record is written before the PBX is touched, so when it fails nothing has changed and
the error can say so. The end record is written after: when it fails the PBX has already
changed, so the operation's result must still reach the user, with a warning instead of an error.
"""

from __future__ import annotations

from collections.abc import Sequence

import anyio

from ..errors import JournalError
from ..journal import ItemRecord, Journal, OperationKind

# How long closing the record may take after a cancellation: it is worth waiting for.
_SETTLE_SECONDS = 15.0


async def begin(
    journal: Journal, kind: OperationKind, items: Sequence[ItemRecord], *, undoes: str | None = None
) -> str:
    try:
        return await journal.begin(kind, items, undoes=undoes)
    except JournalError as exc:
        raise JournalError(f"{exc.message} Nothing was changed on the PBX.") from None


async def end(journal: Journal, operation_id: str, outcome: str, items: Sequence[ItemRecord]) -> list[str]:
    """Close the record; returns the warnings the result must carry (none when it was written)."""
    try:
        with anyio.CancelScope(shield=True), anyio.move_on_after(_SETTLE_SECONDS):
            await journal.end(operation_id, outcome, items)
            return []
        reason = f"it did not finish within {_SETTLE_SECONDS:.0f} s"
    except JournalError as exc:
        reason = exc.message
    return [
        (
            f"The safety journal could not record how operation {operation_id} ended ({reason}). Its before-images "
            "were journaled first, so restore_blacklist_numbers still undoes it; this result is the only record of "
            "which entries changed."
        )
    ]
