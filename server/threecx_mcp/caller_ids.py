"""Caller IDs as typed, made into what 3CX can match, and refused when they never could.

3CX compares an incoming caller ID with each entry exactly (case included), `*` matching any run of
characters. So an entry holding a zero-width space, a fullwidth digit or a right-to-left override is
stored without complaint and then never matches a caller, while a bare `*` matches every caller. The
rules here run before anything is sent to the PBX: look-alike digits become ASCII digits, invisible
characters and IP addresses are refused, letters mixing scripts are pointed out, and patterns that
would block (nearly) everyone are flagged so that the tool can ask the user first.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from dataclasses import dataclass, field

from .display import quoted
from .errors import InvalidArgument

MAX_CALLER_ID_LENGTH = 100
MIN_PATTERN_LITERALS = 3  # a `*` pattern needs this many other characters to block a recognisable group

_PHONE_LIKE = re.compile(r"^\+?[\d\s().\-/]+$")
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c")
# Default-ignorable characters outside the categories above: variation selectors, the combining grapheme
# joiner, Mongolian free variation selectors and the Hangul fillers render as nothing.
_INVISIBLE_RANGES = (
    (0xFE00, 0xFE0F),
    (0xE0100, 0xE01EF),
    (0x180B, 0x180F),
    (0x034F, 0x034F),
    (0x115F, 0x1160),
    (0x17B4, 0x17B5),
    (0x3164, 0x3164),
    (0xFFA0, 0xFFA0),
)
_CONTROL_NAMES = {"\t": "TAB", "\n": "LINE FEED", "\r": "CARRIAGE RETURN", "\x00": "NULL", "\x7f": "DELETE"}
_LISTED_LOOKALIKES = 5
# Alphabets with letters that look like each other (Cyrillic а, Greek ο, Latin a/o); other mixes, such as
# Latin with Han or Han with Katakana, are ordinary names.
_LOOKALIKE_SCRIPTS = frozenset({"LATIN", "CYRILLIC", "GREEK", "ARMENIAN", "CHEROKEE", "COPTIC"})
_WHY_EXACT = "3CX compares caller IDs exactly, so an entry holding it can never match a caller"


def character_name(char: str) -> str:
    """`U+200B ZERO WIDTH SPACE`: a character a person cannot see, named so they can find it."""
    name = _CONTROL_NAMES.get(char) or unicodedata.name(char, "")
    if not name:
        name = "control character" if unicodedata.category(char) == "Cc" else "unnamed character"
    return f"U+{ord(char):04X} {name}"


@dataclass(frozen=True)
class CallerIdCheck:
    """A caller ID ready to store, what was done to it, and whether it blocks (nearly) every caller."""

    value: str
    notes: list[str] = field(default_factory=list)
    broad_reason: str | None = None  # why the pattern blocks (nearly) everyone; None when it does not

    def refuse_if_broad(self, allow_broad_pattern: bool) -> None:
        """Refuse a broad pattern unless the caller passed allow_broad_pattern=true (which asks the user)."""
        if self.broad_reason is not None and not allow_broad_pattern:
            raise InvalidArgument(
                f"{self.broad_reason} If the user really wants that, call again with allow_broad_pattern=true "
                "(the user is asked to confirm).",
                hint="Nothing was changed.",
            )


def fold(text: str) -> str:
    """NFKC, then every Unicode decimal digit as its ASCII digit: `＋４４` and `٠١٢` become `+44`, `012`.

    NFKC alone maps fullwidth forms but leaves Arabic-Indic, Devanagari and other digits alone, and
    a caller's number reaches 3CX in ASCII digits.
    """
    folded = unicodedata.normalize("NFKC", text)
    return "".join(
        str(unicodedata.decimal(c)) if not c.isascii() and unicodedata.category(c) == "Nd" else c
        for c in folded
    )


def search_terms(search: str) -> list[str]:
    """What a search looks for: the text as typed, folded, and as a phone number without formatting."""
    folded = fold(search)
    return sorted({search, folded, strip_phone_formatting(folded)})


def strip_phone_formatting(caller_id: str) -> str:
    """`+1 (555) 010-0199` as the digits the PBX sees, `+15550100199`; names and patterns stay as typed."""
    if "*" in caller_id or not _PHONE_LIKE.match(caller_id):
        return caller_id
    digits = re.sub(r"\D", "", caller_id)
    return ("+" if caller_id.startswith("+") else "") + digits if len(digits) >= 2 else caller_id


def check_caller_id(text: str) -> CallerIdCheck:
    """The caller ID to store for `text`, with notes; raises InvalidArgument if it could never match."""
    text = text.strip()
    _refuse_invisible(text)
    folded = fold(text).strip()
    if not folded:
        raise InvalidArgument("caller_id must not be blank.", hint="Nothing was changed.")
    if len(folded) > MAX_CALLER_ID_LENGTH:
        raise InvalidArgument(
            f"caller_id is {len(folded)} characters long once normalised; the limit is {MAX_CALLER_ID_LENGTH}.",
            hint="Nothing was changed.",
        )
    _refuse_ip_address(folded)
    value = strip_phone_formatting(folded)
    reasons = []
    if folded != text:
        reasons.append("look-alike characters (fullwidth forms, non-ASCII digits) became their plain forms")
    if value != folded:
        reasons.append("phone-number formatting was removed")
    notes = []
    if reasons:
        notes.append(
            f"caller_id {quoted(text)} was normalised to {quoted(value)}: {'; '.join(reasons)} "
            "(3CX compares caller IDs exactly, and callers' numbers arrive in ASCII digits)."
        )
    notes += [note] if (note := _mixed_scripts(value)) else []
    return CallerIdCheck(value, notes, _broad_reason(value))


def _refuse_invisible(text: str) -> None:
    for position, char in enumerate(text, start=1):
        code = ord(char)
        if char in _BIDI_CONTROLS:
            kind = "a bidirectional control character: invisible, it reorders how the text is shown"
        elif unicodedata.category(char) == "Cc":
            kind = "one of the control characters (newline, tab, NUL and the like)"
        elif unicodedata.category(char) in _REFUSED_CATEGORIES or any(
            low <= code <= high for low, high in _INVISIBLE_RANGES
        ):
            kind = "an invisible character"
        else:
            continue
        raise InvalidArgument(
            f"caller_id holds {character_name(char)} at position {position}, {kind}; {_WHY_EXACT}. "
            "Remove it (retype the caller ID rather than pasting it).",
            hint="Nothing was changed.",
        )


def _refuse_ip_address(value: str) -> None:
    candidate = value.strip("[]")
    if candidate.count(".") == 3 and ":" in candidate:
        candidate = candidate.rsplit(":", 1)[0]  # an IPv4 address with a port
    try:
        ipaddress.ip_network(candidate, strict=False)
    except ValueError:
        return
    raise InvalidArgument(
        f"caller_id {quoted(value)} is an IP address. This is the number blacklist, matched against "
        "callers' numbers and names; IP addresses belong in 3CX's IP blocklist (Admin console: "
        "Security > IP Blocklist).",
        hint="Nothing was changed.",
    )


def _script(char: str) -> str | None:
    """The look-alike alphabet of a letter, from its Unicode name (`CYRILLIC SMALL LETTER A` → `CYRILLIC`)."""
    script = unicodedata.name(char, "").split(" ", 1)[0] if char.isalpha() else ""
    return script if script in _LOOKALIKE_SCRIPTS else None


def _mixed_scripts(value: str) -> str | None:
    letters = [(p, c, s) for p, c in enumerate(value, start=1) if (s := _script(c)) is not None]
    counts: dict[str, int] = {}
    for _, _, script in letters:
        counts[script] = counts.get(script, 0) + 1
    if len(counts) < 2:
        return None
    main = max(counts, key=lambda s: (counts[s], s == "LATIN"))
    odd = [(p, c, s) for p, c, s in letters if s != main]
    listed = ", ".join(
        f"{quoted(c)} ({character_name(c)}) at position {p}" for p, c, _ in odd[:_LISTED_LOOKALIKES]
    )
    more = f" and {len(odd) - _LISTED_LOOKALIKES} more" if len(odd) > _LISTED_LOOKALIKES else ""
    return (
        f"caller_id {quoted(value)} mixes scripts: {listed}{more} "
        f"{'is' if len(odd) == 1 else 'are'} not {main.title()}. Look-alike letters only match a caller "
        "ID spelt with the very same characters (3CX compares exactly); if that was not meant, update the "
        "entry with the caller ID retyped."
    )


def _broad_reason(value: str) -> str | None:
    if "*" not in value:
        return None
    literals = len(value.replace("*", ""))
    if literals >= MIN_PATTERN_LITERALS:
        return None
    if literals == 0:
        return f"caller_id {quoted(value)} would block every caller: 3CX's * matches anything."
    return (
        f"caller_id {quoted(value)} would block nearly every caller: 3CX's * matches anything, and the "
        f"pattern fixes only {literals} other character{'' if literals == 1 else 's'} (at least "
        f"{MIN_PATTERN_LITERALS} are needed)."
    )
