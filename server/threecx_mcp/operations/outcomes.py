"""Which PBX failures mean a write was certainly not applied, and which stop a bulk operation."""

from __future__ import annotations

from ..errors import AuthenticationFailed, Conflict, InvalidRequest, PbxUnreachable, PermissionDenied

# Refusals mean the PBX did not apply the change; anything else (5xx, timeouts) might have.
REFUSED = (InvalidRequest, Conflict, AuthenticationFailed, PermissionDenied)
# After these, later requests of the same operation would fail the same way: stop sending them.
FATAL = (AuthenticationFailed, PermissionDenied, PbxUnreachable)
