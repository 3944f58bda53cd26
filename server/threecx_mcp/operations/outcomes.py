"""Which PBX failures mean a write was certainly not applied, and which stop a bulk operation."""

from __future__ import annotations

from ..errors import AuthenticationFailed, Conflict, InvalidRequest, PbxUnreachable, PermissionDenied

# Refusals mean the PBX did not apply the change; anything else (5xx, timeouts) might have.
REFUSED = (InvalidRequest, Conflict, AuthenticationFailed, PermissionDenied)
# After these, later requests of the same operation would fail the same way: stop sending them.
FATAL = (AuthenticationFailed, PermissionDenied, PbxUnreachable)
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
    }
)
