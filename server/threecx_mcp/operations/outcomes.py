"""Which PBX failures mean a write was certainly not applied, and which stop a bulk operation."""

from __future__ import annotations

from ..errors import (
    AuthenticationFailed,
    Conflict,
    InvalidRequest,
    PbxError,
    PbxUnreachable,
    PermissionDenied,
    RateLimited,
)

# Refusals mean the PBX did not apply the change; anything else (5xx, timeouts) might have.
REFUSED = (InvalidRequest, Conflict, AuthenticationFailed, PermissionDenied)
# After these, later requests of the same operation would fail the same way: stop sending them.
FATAL = (AuthenticationFailed, PermissionDenied, PbxUnreachable)
# The longest Retry-After a bulk operation waits out (every worker pausing); a PBX asking for longer has
# said that the operation cannot go on now, and waiting would outlast every client's timeout.
LONGEST_WAIT_SECONDS = 120.0


def stops_the_operation(error: PbxError) -> bool:
    """Whether the rest of an operation's requests must not be sent after this failure: they would fail
    the same way, or the PBX asked for a wait longer than an operation can wait."""
    if isinstance(error, RateLimited):
        return error.retry_after is not None and error.retry_after > LONGEST_WAIT_SECONDS
    return isinstance(error, FATAL)


# Journal statuses that say an operation certainly left the entry as it was: undoing them changes nothing,
# whatever happened to the entry since (another operation may have deleted or re-created it on purpose).
UNCHANGED = frozenset(
    {
        "not_found",
        "failed",
        "already_present",
        "already_restored",
        "already_absent",
        "changed_since",
        "nothing_to_undo",
        "skipped",  # not as the user saw it, so left alone
        "invalid",  # a bulk add's rows that were never sent
        "duplicate",
    }
)
