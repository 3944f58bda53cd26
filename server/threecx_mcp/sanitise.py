"""The one sanitiser for text from the PBX (or anyone else) shown to a person or a model.

A PBX, or a proxy in front of it, may quote the request back in its error texts: the token
endpoint's form holds the API key, the request headers hold the bearer token. And stored
caller IDs and descriptions are written by whoever set them up. So text on its way out is:

1. redacted: the API key (as sent, URL-encoded or JSON-escaped), the access tokens this process
   holds, any `Bearer`/`Basic` credential, any JWT, and the values of form and JSON fields such
   as `client_secret` become `[redacted]`. Secrets are matched on the text and again with every
   invisible character removed, so a zero-width space inside a key cannot hide it;
2. escaped: control, format (bidi, zero-width), separator and other invisible characters become
   a visible `\\uXXXX`, so no text can start a new line or reorder the sentence around it;
3. capped, after both: a cut can then split neither a secret nor an escape.

The secrets themselves are known only at run time, so `auth` tells this module about them with
`remember_secret` and `remember_token` (a process-wide registry: every output path shares it).
"""

from __future__ import annotations

import json
import re
import threading
import unicodedata
from collections import deque
from collections.abc import Iterator
from urllib.parse import quote, quote_plus
from weakref import WeakKeyDictionary

REDACTED = "[redacted]"
PBX_TEXT_LIMIT = 300  # characters of one PBX message a person is shown
_ELLIPSIS = "…"
_MIN_SECRET_LENGTH = 6  # shorter values would redact ordinary words; real API keys and tokens are far longer
_KEPT_TOKENS = 8  # the latest access tokens: the live one and those it just replaced

# Controls, format characters (bidi overrides and isolates, zero-width), line/paragraph separators,
# surrogates, private use and unassigned code points: shown escaped.
_ESCAPED_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"})
# Everything that renders as nothing: the categories above that can hide inside a word, plus the
# other Default_Ignorable_Code_Points of Unicode (variation selectors, Hangul fillers, the combining
# grapheme joiner), which are letters or marks by category. Removed before secrets are matched,
# and escaped when shown.
_INVISIBLE_RANGES = (
    "\x00-\x1f\x7f-\x9f\xad\u034f\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u115f\u1160"
    "\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u2028-\u202e\u2060-\u206f\u3164\ufe00-\ufe0f\ufeff"
    "\uffa0\ufff0-\ufffb\ud800-\udfff\U000110bd\U000110cd\U00013430-\U0001343f\U0001bca0-\U0001bca3"
    "\U0001d173-\U0001d17a\U000e0000-\U000e0fff"
)
INVISIBLE = re.compile(f"[{_INVISIBLE_RANGES}]")
_MARKER = re.compile(f"({re.escape(REDACTED)})")

_FIELDS = r"(?<![A-Za-z0-9_])(?:client_secret|password|passwd|access_token|refresh_token|id_token|api_?key)"
_IS = r"\s*(?:[:=]|%3[dD])\s*"
# Each pattern keeps its group 1 and replaces the rest of the match; every one ends at a delimiter
# or at the end of the text, so an unterminated value is redacted to the end instead of left out.
_PATTERNS = (
    # "client_secret": "…" as JSON, with escaped quotes inside the value
    re.compile(rf'({_FIELDS}"?{_IS}")(?:[^"\\]|\\.?)*', re.IGNORECASE | re.DOTALL),
    # the same JSON quoted once more inside a JSON string: \"client_secret\": \"…\"
    re.compile(rf'({_FIELDS}(?:\\+")?{_IS}\\+")(?:(?!\\").)*', re.IGNORECASE | re.DOTALL),
    # 'client_secret': '…' (a Python or JavaScript literal)
    re.compile(rf"({_FIELDS}'?{_IS}')[^']*", re.IGNORECASE),
    # client_secret=… in a form, a query string, a log line: up to &, whitespace or a separator
    re.compile(rf"({_FIELDS}[\"']?{_IS})(?![\"'\\\s…]|\[redacted\])[^&\s,;}}\])]+", re.IGNORECASE),
    # Authorization: Bearer …, Basic … (also URL-encoded: Bearer%20…): a credential has a digit or an
    # inner punctuation mark, or is long; "bearer tokens" in a sentence is left alone
    re.compile(
        r"((?<![A-Za-z0-9_])(?:bearer|basic)(?:\s+|%20|\+))"
        r"(?=[A-Za-z._~+/-]*[0-9]|[A-Za-z]*[._~+/-][A-Za-z0-9]|[A-Za-z]{20})[A-Za-z0-9._~+/-]+=*",
        re.IGNORECASE,
    ),
    # any JWT or JWE (dot-separated base64url parts; the header always starts with {" = eyJ), with
    # whatever base64url and dots follow it, so two tokens run together go as one
    re.compile(r"()eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_.-]*"),
)

_lock = threading.Lock()
_keys: dict[str, None] = {}  # API keys, for the life of the process (a handful)
_tokens: deque[str] = deque(maxlen=_KEPT_TOKENS)
_held: WeakKeyDictionary[object, str] = WeakKeyDictionary()  # each login's live token, while it lives
_known: re.Pattern[str] | None = None  # every remembered value in every encoding, rebuilt on change


def remember_secret(value: str) -> None:
    """Redact `value` (an API key) from all text shown from now on, in every encoding it may be echoed in."""
    global _known
    if len(value) >= _MIN_SECRET_LENGTH and value not in _keys:
        with _lock:
            _keys[value] = None
            _known = None


def remember_token(value: str, holder: object | None = None) -> None:
    """Redact a minted access token from all text shown from now on: an opaque token is not JWT-shaped,
    and a PBX echoing headers back would show it. The latest few are kept, and whatever `holder` (each
    PBX's login) holds now, however many PBXs a server manages."""
    global _known
    if len(value) < _MIN_SECRET_LENGTH or (
        value in _tokens and (holder is None or _held.get(holder) == value)
    ):
        return
    with _lock:
        if value not in _tokens:
            _tokens.append(value)
        if holder is not None:
            _held[holder] = value
        _known = None


def _known_secrets() -> re.Pattern[str] | None:
    global _known
    with _lock:
        if _known is None and (_keys or _tokens or _held):
            variants = {
                form
                for value in (*_keys, *_tokens, *_held.values())
                for form in (
                    value,
                    quote(value, safe=""),
                    quote(value),
                    quote_plus(value),
                    json.dumps(value)[1:-1],
                )
            }
            # Longest first, so a URL-encoded form is not cut short by a raw prefix of it.
            _known = re.compile(
                "|".join(re.escape(v) for v in sorted(variants, key=len, reverse=True)), re.IGNORECASE
            )
        return _known


def _redact_once(text: str) -> str:
    known = _known_secrets()
    if known is not None:
        text = known.sub(REDACTED, text)
    for pattern in _PATTERNS:
        text = pattern.sub(lambda m: m.group(1) + REDACTED, text)
    return text


def redact(text: str) -> str:
    """`text` with every secret it holds replaced by `[redacted]`.

    When removing invisible characters reveals more secrets, the text without them is returned:
    a key split by a zero-width space is still the key to whoever reads it.
    """
    redacted = _redact_once(text)
    visible = INVISIBLE.sub("", redacted)
    if visible != redacted:
        again = _redact_once(visible)
        if again != visible:
            return again
    return redacted


def _is_escaped(char: str) -> bool:
    return unicodedata.category(char) in _ESCAPED_CATEGORIES or INVISIBLE.match(char) is not None


def escaped_pieces(text: str, also: str = "", *, escape: bool = True) -> Iterator[str]:
    """Each character of `text`, or (with `escape`) its `\\uXXXX` escape when it is invisible or in
    `also`; each `[redacted]` whole, so a cut never leaves half a marker for a later pass to misread."""
    for part in _MARKER.split(text):
        if part == REDACTED:
            yield part
            continue
        for char in part:
            if escape and (char in also or _is_escaped(char)):
                yield f"\\u{ord(char):04x}" if ord(char) <= 0xFFFF else f"\\U{ord(char):08x}"
            else:
                yield char


def capped(pieces: Iterator[str], limit: int | None) -> str:
    """The pieces joined, cut to at most `limit` characters with "…" (never inside a piece)."""
    if limit is None:
        return "".join(pieces)
    shown: list[str] = []
    length = 0
    for piece in pieces:
        if length + len(piece) > limit:
            while shown and length + len(_ELLIPSIS) > limit:
                length -= len(shown.pop())
            return "".join(shown) + _ELLIPSIS
        shown.append(piece)
        length += len(piece)
    return "".join(shown)


def clean(text: str, limit: int | None = PBX_TEXT_LIMIT) -> str:
    """Text shown as part of a sentence (a PBX message, a reason, a doctor line): redacted, its
    invisible characters escaped, cut to `limit` characters. Applying it twice changes nothing."""
    return capped(escaped_pieces(redact(text)), limit)


def bounded(text: str, limit: int = PBX_TEXT_LIMIT) -> str:
    """PBX text to keep in an error until it is shown: redacted and cut, not yet escaped (whoever
    shows it escapes it once, in the form its place needs: see `display.quoted`)."""
    return capped(escaped_pieces(redact(text), escape=False), limit)
