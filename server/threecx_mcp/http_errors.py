"""Turning failed HTTP exchanges with the PBX into the error hierarchy of `errors`.

It lives beside the client, not in `errors`, because only the code that speaks HTTP needs
it: the hierarchy itself stays importable without an HTTP library. The PBX's own words are
kept as data (code, message, details) and never become the sentence a user reads first.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx2

from .errors import (
    AuthenticationFailed,
    Conflict,
    InvalidRequest,
    NotFound,
    ODataDetail,
    PbxError,
    PbxServerError,
    PbxTimeout,
    PbxUnreachable,
    PermissionDenied,
    RateLimited,
    TlsError,
    UnexpectedResponse,
    shorten,
)

_STATUS_CLASSES: dict[int, tuple[type[PbxError], str]] = {
    400: (InvalidRequest, "The PBX rejected the request as invalid."),
    401: (AuthenticationFailed, "The PBX refused the credentials."),
    403: (PermissionDenied, "The PBX denied permission."),
    404: (NotFound, "The PBX has no such item."),
    409: (Conflict, "The PBX reported a conflict."),
    413: (InvalidRequest, "The request was too large for the PBX."),
    429: (RateLimited, "The PBX is rate limiting this client."),
}

# Vendor tokens win over the HTTP status: real PBXs send them with a generic 400.
_CODE_CLASSES: tuple[tuple[str, type[PbxError], str], ...] = (
    ("NOT_FOUND", NotFound, "The PBX has no such item."),
    ("DUPLICATE", Conflict, "The PBX already has an entry like this."),
    ("LIMIT_EXCEEDED", Conflict, "The PBX's blacklist is full."),
)


# A gateway, or the PBX itself, briefly unable to answer: worth another try when repeating is safe.
TRANSIENT_STATUSES = frozenset({502, 503, 504})


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait, from either form HTTP allows (delta-seconds or an HTTP-date)."""
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None  # unreadable: fall back to our own backoff
    return max(0.0, (when - datetime.now(UTC)).total_seconds()) if when.tzinfo else None


def _odata_error(response: httpx2.Response) -> tuple[str | None, str | None, tuple[ODataDetail, ...]]:
    try:
        error = response.json()["error"]
        code, message = error.get("code"), error.get("message")
        details = tuple(
            ODataDetail(str(d.get("code", "")), str(d.get("message", "")))
            for d in error.get("details") or ()
            if isinstance(d, dict)
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        return None, None, ()
    return (str(code) if code else None), (str(message) if message else None), details


def error_from_response(response: httpx2.Response) -> PbxError:
    """Map a failed XAPI answer onto the hierarchy, keeping the PBX's own words as data."""
    status = response.status_code
    code, message, details = _odata_error(response)
    if status in _STATUS_CLASSES:
        cls, text = _STATUS_CLASSES[status]
    elif status >= 500:
        cls, text = PbxServerError, f"The PBX answered with HTTP {status}."
    else:
        cls, text = InvalidRequest, f"The PBX refused the request with HTTP {status}."
    tokens = " ".join(filter(None, [code, message, *(d.code for d in details)]))
    for token, token_cls, token_text in _CODE_CLASSES:
        if token in tokens:
            cls, text = token_cls, token_text
            break
    if code is None and message is None and "json" not in response.headers.get("content-type", ""):
        message = f"(a {response.headers.get('content-type') or 'untyped'} body instead of an OData error)"
    if cls is RateLimited:
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        return RateLimited(
            text, retry_after=retry_after, status=status, code=code, pbx_message=message, details=details
        )
    return cls(text, status=status, code=code, pbx_message=message, details=details)


def error_from_transport(exc: httpx2.TransportError, url: str) -> PbxUnreachable:
    """Name the kind of network failure without leaking request headers."""
    reason = shorten(str(exc) or type(exc).__name__)
    if isinstance(exc, httpx2.TimeoutException):
        return PbxTimeout(f"The PBX at {url} did not answer in time ({type(exc).__name__}).")
    if "CERTIFICATE" in reason.upper() or "SSL" in reason.upper():
        return TlsError(f"TLS with the PBX at {url} failed: {reason}.")
    return PbxUnreachable(f"Cannot reach the PBX at {url}: {reason}.")


def unexpected_body(response: httpx2.Response, expected: str) -> UnexpectedResponse:
    content_type = response.headers.get("content-type", "no content type")
    snippet = shorten(response.text, 80) if response.content else "an empty body"
    return UnexpectedResponse(
        f"The PBX answered HTTP {response.status_code} with {content_type} where {expected} was expected "
        f"(starts: {json.dumps(snippet)})."
    )
