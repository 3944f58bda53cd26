"""The error hierarchy, and the one place where PBX answers become user-facing messages.

Every failure the tools can meet is one of these classes; each carries what an
administrator needs to fix it (a hint) and never a secret.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import ClassVar

import httpx2

_PBX_TEXT_LIMIT = 300
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]+")


def shorten(text: str, limit: int = _PBX_TEXT_LIMIT) -> str:
    """Untrusted text, squeezed onto one line and cut to a length a person reads."""
    flat = _CONTROL_CHARS.sub(" ", text).strip()
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


@dataclass(frozen=True)
class ODataDetail:
    code: str
    message: str


class ThreeCXMcpError(Exception):
    """Base of every error this package raises on purpose."""

    hint: ClassVar[str] = ""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if hint is not None:
            self.hint = hint

    def user_message(self) -> str:
        return f"{self.message} {self.hint}".strip()


class ConfigError(ThreeCXMcpError):
    """Settings are missing, malformed or contradict each other."""


class InvalidArgument(ThreeCXMcpError):
    """A tool argument cannot be used as given; nothing was sent to the PBX."""


class PbxError(ThreeCXMcpError):
    """The PBX could not be reached or refused a request."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        pbx_message: str | None = None,
        details: tuple[ODataDetail, ...] = (),
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.status = status
        self.code = code
        self.pbx_message = pbx_message
        self.details = details

    def user_message(self) -> str:
        parts = [self.message]
        said = [": ".join(filter(None, (self.code, self.pbx_message)))] if self.code or self.pbx_message else []
        said += [f"{d.code}: {d.message}" for d in self.details]
        if said:
            parts.append("The PBX said: " + "; ".join(f'"{shorten(s)}"' for s in said) + ".")
        if self.hint:
            parts.append(self.hint)
        return " ".join(parts)


class PbxUnreachable(PbxError):
    hint = "Check THREECX_URL, DNS, the firewall, and that the PBX is running."


class PbxTimeout(PbxUnreachable):
    hint = "The PBX is slow or overloaded; try again, or raise THREECX_TIMEOUT."


class TlsError(PbxUnreachable):
    hint = (
        "The PBX's TLS certificate could not be verified. If it is signed by a private CA, set "
        "THREECX_CA_BUNDLE to that CA's PEM file (THREECX_VERIFY_TLS=false only for testing)."
    )


class AuthenticationFailed(PbxError):
    hint = (
        "Check THREECX_CLIENT_ID and the API key (THREECX_CLIENT_SECRET), and that the API client has "
        '"3CX Configuration API" access ticked in the 3CX admin console (Integrations > API). '
        "Repeated failed logins can get this machine's IP blocked by the PBX."
    )


class PermissionDenied(PbxError):
    hint = (
        "The API client's role lacks rights for this: give it the System Owner role. "
        "The Configuration API also needs an Enterprise licence."
    )


class NotFound(PbxError):
    hint = "Use list_blacklist_numbers to find the entry's id."


class InvalidRequest(PbxError):
    hint = "Correct the values and try again."


class Conflict(PbxError):
    hint = "An entry with this caller ID may already exist, or the blacklist is full."


class RateLimited(PbxError):
    hint = "The PBX is throttling requests; wait a minute and try again."

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: object) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        self.retry_after = retry_after


class PbxServerError(PbxError):
    hint = "The PBX had an internal problem; try again later, and check the PBX's logs if it persists."


class UnexpectedResponse(PbxError):
    hint = (
        "Something between this server and the PBX (a reverse proxy, a captive portal, a wrong port) "
        "may be answering instead of the 3CX XAPI; check THREECX_URL."
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
        return RateLimited(text, retry_after=retry_after, status=status, code=code, pbx_message=message, details=details)
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
