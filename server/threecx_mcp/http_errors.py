"""Turning failed HTTP exchanges with the PBX into the error hierarchy of `errors`.

It lives beside the client, not in `errors`, because only the code that speaks HTTP needs
it: the hierarchy itself stays importable without an HTTP library. The PBX's own words are
kept as data (code, message, details) and never become the sentence a user reads first.
"""

from __future__ import annotations

import ipaddress
import math
import ssl
from collections.abc import Iterator
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

import httpx2

from .display import quoted
from .errors import (
    AuthenticationFailed,
    CertificateExpired,
    CertificateNameMismatch,
    CertificateUntrusted,
    Conflict,
    HttpsOnlyPort,
    InvalidRequest,
    NotFound,
    ODataDetail,
    PbxError,
    PbxServerError,
    PbxTimeout,
    PbxUnreachable,
    PermissionDenied,
    PlainHttpPort,
    RateLimited,
    TlsError,
    UnexpectedResponse,
)
from .sanitise import bounded, clean

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


# A longer wait than this is not worth waiting for either, and is worded as this (1e999 parses as infinity).
MAX_RETRY_AFTER_SECONDS = 7 * 24 * 3600.0


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait, from either form HTTP allows (delta-seconds or an HTTP-date), at most a week."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return None if math.isnan(seconds) else min(max(0.0, seconds), MAX_RETRY_AFTER_SECONDS)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None  # unreadable: fall back to our own backoff
    if when.tzinfo is None:
        return None
    return min(max(0.0, (when - datetime.now(UTC)).total_seconds()), MAX_RETRY_AFTER_SECONDS)


def _odata_error(response: httpx2.Response) -> tuple[str | None, str | None, tuple[ODataDetail, ...]]:
    """The OData error's code, message and details, as the PBX's raw words (sanitised by the caller)."""
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


# nginx (in front of every 3CX PBX) answers a plain-HTTP request on its HTTPS port with this page.
_PLAIN_HTTP_ON_HTTPS_PORT = b"plain HTTP request was sent to HTTPS port"


def error_from_response(response: httpx2.Response) -> PbxError:
    """Map a failed XAPI answer onto the hierarchy, keeping the PBX's own words as data.

    Those words are redacted and cut here, where they enter an error: a PBX quoting the request
    back must not carry the bearer token into a message, a log line or an exception's repr.
    """
    status = response.status_code
    if status == 400 and _PLAIN_HTTP_ON_HTTPS_PORT in response.content[:4096]:
        return HttpsOnlyPort(f"The PBX at {_origin(response)} expects HTTPS on this port, not plain HTTP.")
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
    code = bounded(code, 80) if code is not None else None
    message = bounded(message) if message is not None else None
    details = tuple(ODataDetail(bounded(d.code, 80), bounded(d.message)) for d in details[:10])
    if cls is RateLimited:
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        return RateLimited(
            text, retry_after=retry_after, status=status, code=code, pbx_message=message, details=details
        )
    return cls(text, status=status, code=code, pbx_message=message, details=details)


def _origin(response: httpx2.Response) -> str:
    try:
        url = response.request.url
    except RuntimeError:  # a response built without a request (never from the client itself)
        return "this address"
    return f"{url.scheme}://{url.netloc.decode('ascii', 'replace')}"


_TIMED_OUT = {
    httpx2.ConnectTimeout: "while connecting",
    httpx2.WriteTimeout: "while sending the request",
    httpx2.ReadTimeout: "while waiting for its answer",
    httpx2.PoolTimeout: "waiting for a free connection",
}


def error_from_transport(exc: httpx2.TransportError, url: str) -> PbxUnreachable:
    """Name the kind of network failure (for TLS, its cause and fix) without leaking request headers."""
    if isinstance(exc, httpx2.TimeoutException):
        return PbxTimeout(
            f"The PBX at {url} did not answer in time ({_TIMED_OUT.get(type(exc), 'in time')})."
        )
    tls = tls_error(exc, url)
    if tls is not None:
        return tls
    reason = clean(str(exc) or type(exc).__name__)
    return PbxUnreachable(f"Cannot reach the PBX at {url}: {reason}.")


# OpenSSL's reasons when the other side does not speak TLS at all (a plain-HTTP port); 3.2 and
# later say "record layer failure" where 3.0 says "wrong version number".
_NOT_TLS_REASONS = frozenset(
    {"WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "UNKNOWN_PROTOCOL", "HTTP_REQUEST"}
)
_NAME_MISMATCH = frozenset({62, 63, 64})  # X509_V_ERR_HOSTNAME/EMAIL/IP_ADDRESS_MISMATCH
_UNTRUSTED = frozenset(
    {2, 18, 19, 20, 21}
)  # no issuer certificate, self-signed (leaf or chain), no local issuer
_EXPIRED, _NOT_YET_VALID = 10, 9


def tls_error(exc: BaseException, url: str, *, ca_bundle: bool | None = None) -> TlsError | None:
    """The TLS failure behind `exc`, named with its own fix; None when TLS is not what failed.

    The cause is read from the exception chain (httpx2 wraps httpcore2's error, which wraps
    `ssl`'s), not from the message, so that an IP address instead of the certificate's name or
    a plain-HTTP port is not mistaken for an untrusted certificate. `ca_bundle` says whether
    THREECX_CA_BUNDLE is set (None: not known here; the message then covers both).
    """
    for cause in _causes(exc):
        if isinstance(cause, ssl.SSLCertVerificationError):
            return _certificate_error(cause, url, ca_bundle)
        if isinstance(cause, ssl.SSLError):
            if (cause.reason or "").upper() in _NOT_TLS_REASONS or "record layer failure" in str(cause):
                return PlainHttpPort(f"The PBX at {url} answered without TLS: this port speaks plain HTTP.")
            return TlsError(f"TLS with the PBX at {url} failed: {clean(cause.reason or str(cause), 120)}.")
    reason = str(exc).upper()
    if "CERTIFICATE" in reason or "SSL" in reason:  # an ssl error whose cause chain was cut on the way
        return TlsError(f"TLS with the PBX at {url} failed: {clean(str(exc), 120)}.")
    return None


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """`exc` and everything behind it: causes, contexts, wrapped exceptions (in `args`) and groups."""
    pending: list[BaseException] = [exc]
    seen: set[int] = set()
    while pending and len(seen) < 64:
        current = pending.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        pending += [c for c in (current.__cause__, current.__context__) if c is not None]
        pending += [a for a in current.args if isinstance(a, BaseException)]
        if isinstance(current, BaseExceptionGroup):
            pending += current.exceptions


def _certificate_error(cause: ssl.SSLCertVerificationError, url: str, ca_bundle: bool | None) -> TlsError:
    code = cause.verify_code
    said = clean(cause.verify_message or cause.reason or "certificate verify failed", 160)
    if code in _NAME_MISMATCH:
        host = urlsplit(url).hostname or url
        what = "the IP address" if _is_ip(host) else "the name"
        return CertificateNameMismatch(
            f"The PBX's TLS certificate is not for {host}, {what} in THREECX_URL ({said})."
        )
    if code == _EXPIRED:
        return CertificateExpired(f"The PBX's TLS certificate has expired ({said}).")
    if code == _NOT_YET_VALID:
        return CertificateExpired(
            f"The PBX's TLS certificate is not valid yet ({said}).",
            hint="Check this machine's clock (and the PBX's): by this clock the certificate starts in the future.",
        )
    if code in _UNTRUSTED:
        message = f"The PBX's TLS certificate is not signed by a CA this machine trusts ({said})."
        if ca_bundle:
            return CertificateUntrusted(
                message,
                hint="THREECX_CA_BUNDLE is set, but the file it names does not sign this certificate: point it "
                "at the PEM file of the CA that issued the PBX's certificate (for a self-signed one, the "
                "certificate itself).",
            )
        if ca_bundle is None:
            return CertificateUntrusted(
                message,
                hint=f"{CertificateUntrusted.hint} If THREECX_CA_BUNDLE is already set, the file it names "
                "does not sign this certificate.",
            )
        return CertificateUntrusted(message)
    return TlsError(f"The PBX's TLS certificate could not be verified ({said}).")


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def unexpected_body(response: httpx2.Response, expected: str) -> UnexpectedResponse:
    header = response.headers.get("content-type")
    content_type = quoted(header, 80) if header else "no content type"
    snippet = f"starts: {quoted(response.text, 80)}" if response.content else "an empty body"
    return UnexpectedResponse(
        f"The PBX answered HTTP {response.status_code} with {content_type} where {expected} was expected "
        f"({snippet})."
    )
