"""The error hierarchy and its user-facing wording.

Every failure the tools can meet is one of these classes; each carries what an
administrator needs to fix it (a hint) and never a secret. Turning HTTP answers into
these classes is `http_errors`' job, so that this module needs no HTTP library.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from .display import quoted
from .sanitise import PBX_TEXT_LIMIT, redact

_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]+")


def shorten(text: str, limit: int = PBX_TEXT_LIMIT) -> str:
    """Untrusted text, squeezed onto one line and cut to a length a person reads."""
    flat = _CONTROL_CHARS.sub(" ", text).strip()
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def in_words(seconds: float) -> str:
    """A wait as a person says it ("45 seconds", "60 minutes", "3 hours"), rounded up."""
    if not math.isfinite(seconds):
        return "a very long time" if seconds > 0 else "0 seconds"
    whole = max(math.ceil(seconds), 0)
    for unit, size in (("hour", 3600), ("minute", 60)):
        if whole >= 2 * size or (unit == "minute" and whole >= 90):
            count = math.ceil(whole / size)
            return f"{count} {unit}s"
    return "1 second" if whole == 1 else f"{whole} seconds"


@dataclass(frozen=True)
class ODataDetail:
    code: str
    message: str


class ThreeCXMcpError(Exception):
    """Base of every error this package raises on purpose."""

    hint: str = ""  # each class's own; an instance may carry a more specific one

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if hint is not None:
            self.hint = hint

    def user_message(self) -> str:
        """What a person or a model is shown; redacted once more as a last net under every path."""
        return redact(f"{self.message} {self.hint}".strip())


class ConfigError(ThreeCXMcpError):
    """Settings are missing, malformed or contradict each other."""


class InvalidArgument(ThreeCXMcpError):
    """A tool argument cannot be used as given; nothing was sent to the PBX."""


class ConfirmationNeeded(ThreeCXMcpError):
    """The write waits for the user: they declined, or must see a plan before it can be applied."""


class JournalError(ThreeCXMcpError):
    """The safety journal cannot be read or written; the message names the file and the reason."""

    hint = "Set THREECX_JOURNAL to a file this user can write, e.g. in your home directory."


class UncertainOutcome(ThreeCXMcpError):
    """A change was sent but its answer was lost: the message says how to check and how to undo it."""


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
        # The config file's name of the PBX that failed, when a server manages several (see `named`).
        self.pbx_name: str | None = None

    def user_message(self) -> str:
        parts = (
            [self.message] if self.pbx_name is None else [f"PBX {quoted(self.pbx_name, 40)}: {self.message}"]
        )
        said = (
            [": ".join(filter(None, (self.code, self.pbx_message)))] if self.code or self.pbx_message else []
        )
        said += [f"{d.code}: {d.message}" for d in self.details]
        if said:  # the PBX's words as quoted data: escaped, so they cannot pass for this sentence
            parts.append("The PBX said: " + "; ".join(quoted(s, PBX_TEXT_LIMIT) for s in said) + ".")
        if self.hint:
            parts.append(self.hint if self.pbx_name is None else _for_table(self.hint, self.pbx_name))
        return redact(" ".join(parts))


# The variables a hint names, and where a PBX of the config file has the same setting instead.
_TABLE_KEYS = {
    "THREECX_CLIENT_SECRET_FILE": "client_secret_file",
    "THREECX_CLIENT_SECRET": "the API key",
    "THREECX_CLIENT_ID": "client_id",
    "THREECX_CA_BUNDLE": "ca_bundle",
    "THREECX_VERIFY_TLS": "verify_tls",
    "THREECX_URL": "url",
}
_VARIABLES = re.compile("|".join(_TABLE_KEYS))


def _for_table(hint: str, name: str) -> str:
    """A hint naming THREECX_* variables, reworded for a PBX of the config file: "url of [pbx.NAME]"."""
    return _VARIABLES.sub(lambda m: f"{_TABLE_KEYS[m.group()]} of [pbx.{name}]", hint)


class PbxUnreachable(PbxError):
    hint = "Check THREECX_URL, DNS, the firewall, and that the PBX is running."


class PbxTimeout(PbxUnreachable):
    hint = "The PBX is slow or overloaded; try again, or raise THREECX_TIMEOUT."


class TlsError(PbxUnreachable):
    """TLS with the PBX failed. Nothing about it changes by asking again, so it is never retried; each
    subclass names one cause and its own fix (only an untrusted issuer is fixed by THREECX_CA_BUNDLE)."""

    hint = (
        "Check that THREECX_URL names the PBX's HTTPS address and port as its admin console shows them, "
        "and that nothing in between (a proxy, a firewall inspecting TLS) answers instead of the PBX."
    )


class CertificateNameMismatch(TlsError):
    """The certificate is valid but names another host: usually the PBX's IP address or an alias was used."""

    hint = (
        "Connect with the name on the certificate, e.g. THREECX_URL=https://pbx.example.com (the PBX's FQDN "
        "from its admin console), not its IP address or another alias."
    )


class CertificateUntrusted(TlsError):
    """The certificate is signed by a CA this machine does not trust (a private CA, or self-signed)."""

    hint = (
        "If the PBX uses a private CA or a self-signed certificate, set THREECX_CA_BUNDLE to that CA's PEM "
        "file (THREECX_VERIFY_TLS=false only for testing)."
    )


class CertificateExpired(TlsError):
    """The certificate is outside its validity period (expired, or not valid yet)."""

    hint = (
        "Renew the certificate on the PBX (3CX renews its own certificate; see its admin console), and check "
        "that this machine's clock is right."
    )


class PlainHttpPort(TlsError):
    """THREECX_URL says https (or has no scheme, which means https) but the port speaks plain HTTP."""

    hint = (
        "Use the PBX's HTTPS port in THREECX_URL (3CX usually serves HTTPS on 5001 or 443); a THREECX_URL "
        "without a scheme means https://. Write http:// only for a PBX reached over a trusted network."
    )


class HttpsOnlyPort(TlsError):
    """THREECX_URL says http but the port speaks HTTPS."""

    hint = "Write https:// at the start of THREECX_URL: this port expects HTTPS."


class AuthenticationFailed(PbxError):
    hint = (
        "Check THREECX_CLIENT_ID and the API key (THREECX_CLIENT_SECRET), and that the API client has "
        '"3CX Configuration API" access ticked in the 3CX admin console (Integrations > API). '
        "Repeated failed logins can get this machine's IP blocked by the PBX."
    )


class LoginPaused(AuthenticationFailed):
    """A login was refused moments ago: this call fails without asking again, because every failed
    login counts towards the PBX blocking this machine's IP."""

    def __init__(self, refused: AuthenticationFailed, seconds_left: float) -> None:
        super().__init__(
            f"{refused.message} No new login is tried for {in_words(seconds_left)}, so that repeated "
            "failed logins do not get this machine's IP blocked.",
            status=refused.status,
            code=refused.code,
            pbx_message=refused.pbx_message,
            details=refused.details,
            hint=refused.hint,
        )


class TokenContention(AuthenticationFailed):
    """A token minted a moment ago was refused although this API client's tokens have worked before:
    the signature of another program logging in with the same API client (3CX keeps one live token
    per API client, so each login ends the other's session)."""

    hint = (
        "Another program is probably using the same API client (THREECX_CLIENT_ID), and each login ends "
        "the other's session. Give each program its own API client in the 3CX admin console "
        '(Integrations > API). If nothing else uses it, check that the API client still has "3CX '
        'Configuration API" access.'
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
        if retry_after is not None and "hint" not in kwargs:
            # The PBX said how long; "a minute" would be wrong for a 60-minute wait.
            self.hint = (
                f"The PBX is throttling requests and asks to wait {in_words(retry_after)}; try again then."
            )


class PbxServerError(PbxError):
    hint = "The PBX had an internal problem; try again later, and check the PBX's logs if it persists."


class UnexpectedResponse(PbxError):
    hint = (
        "Something between this server and the PBX (a reverse proxy, a captive portal, a wrong port) "
        "may be answering instead of the 3CX XAPI; check THREECX_URL."
    )
