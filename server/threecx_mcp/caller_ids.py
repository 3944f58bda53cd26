"""Caller IDs as typed, made into what 3CX can match, and refused when they never could.

3CX compares an incoming caller ID with each entry exactly (case included), `*` matching any run of
characters. So an entry holding a zero-width space, a fullwidth digit or a right-to-left override is
stored without complaint and then never matches a caller, while a bare `*` matches every caller. The
rules here run before anything is sent to the PBX: look-alike digits and dashes become ASCII, a
number's bracketed trunk prefix `(0)` is dropped, invisible characters, stray combining marks,
number signs that are not digits and IP addresses are refused, letters from another script are
pointed out, and patterns that would block (nearly) everyone are flagged so that the tool can ask the
user first.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from dataclasses import dataclass, field

from .display import quoted
from .errors import InvalidArgument

MAX_CALLER_ID_LENGTH = 100
# Folding can only shrink a caller ID so far (a letter and its combining mark become one): anything longer
# than this is refused before any character is looked at, so one huge value cannot stall the server.
_LONGEST_BEFORE_FOLDING = 4 * MAX_CALLER_ID_LENGTH
TOOL_BROAD_REMEDY = (
    "If the user really wants that, call again with allow_broad_pattern=true (the user is asked to confirm)."
)
MIN_PATTERN_LITERALS = 3  # a `*` pattern needs this many other characters to block a recognisable group

_PHONE_LIKE = re.compile(r"^\+?[\d\s().\-/]+$")
# "+44 (0)20 7183 8751", as UK and German numbers are printed: callers' numbers arrive without the 0.
_TRUNK_ZERO = re.compile(r"^\+\s*(\d{1,3})\s*\(0\)")
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
# Alphabets with letters drawn like each other's (Cyrillic а, Greek ο, Lisu ꓮ, Latin a/o/A): a whole word
# in one of them beside another is still pointed out. A whole word in any other script (Han, Arabic,
# Hangul...) beside Latin is an ordinary name; by the first word of a letter's Unicode name.
_LOOKALIKE_SCRIPTS = frozenset(
    {"LATIN", "CYRILLIC", "GREEK", "ARMENIAN", "CHEROKEE", "COPTIC", "LISU", "CANADIAN", "TIFINAGH", "OSAGE"}
)
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

    def refuse_if_broad(self, allow_broad_pattern: bool, remedy: str = TOOL_BROAD_REMEDY) -> None:
        """Refuse a broad pattern unless the caller allowed it (the tools then ask the user); `remedy`
        says how to allow it in the words of the front end (a tool's argument, a command's option)."""
        if self.broad_reason is not None and not allow_broad_pattern:
            raise InvalidArgument(f"{self.broad_reason} {remedy}", hint="Nothing was changed.")


def fold(text: str) -> str:
    """NFKC, then every Unicode decimal digit as its ASCII digit: `＋４４` and `٠١٢` become `+44`, `012`;
    in a phone number, every dash as `-`: `555–0100` becomes `555-0100`.

    NFKC alone maps fullwidth forms but leaves Arabic-Indic, Devanagari and other digits alone, and
    a caller's number reaches 3CX in ASCII digits. Word processors and web pages write numbers with
    en dashes, minus signs or non-breaking hyphens (NFKC keeps them all): folded, the number is
    recognised as one and its formatting removed. Dashes in a name stay as typed, since a caller's
    name is compared exactly too.
    """
    folded = "".join(
        str(unicodedata.decimal(c)) if not c.isascii() and unicodedata.category(c) == "Nd" else c
        for c in unicodedata.normalize("NFKC", text)
    )
    dashed = "".join("-" if unicodedata.category(c) == "Pd" or c == "\u2212" else c for c in folded)
    return dashed if _PHONE_LIKE.match(dashed.replace("*", "")) else folded


def search_terms(search: str) -> list[str]:
    """What a search looks for: the text as typed, folded, and as a phone number without formatting."""
    folded = fold(search)
    return sorted({search, folded, strip_phone_formatting(folded)})


def strip_phone_formatting(caller_id: str) -> str:
    """`+1 (555) 010-0199` as the digits the PBX sees, `+15550100199`; names and patterns stay as typed.

    A bracketed `(0)` right after the country code is the trunk prefix dialled inside the country
    (`+44 (0)20 …`): it goes with the formatting, since the caller's number arrives as `+4420…`.
    """
    if "*" in caller_id or not _PHONE_LIKE.match(caller_id):
        return caller_id
    digits = re.sub(r"\D", "", _TRUNK_ZERO.sub(r"\1", caller_id))
    return ("+" if caller_id.startswith("+") else "") + digits if len(digits) >= 2 else caller_id


def check_caller_id(text: str) -> CallerIdCheck:
    """The caller ID to store for `text`, with notes; raises InvalidArgument if it could never match."""
    text = text.strip()
    if len(text) > _LONGEST_BEFORE_FOLDING:  # the checks below look at every character: bound them first
        raise InvalidArgument(
            f"caller_id is {len(text):,} characters long; the limit is {MAX_CALLER_ID_LENGTH}.",
            hint="Nothing was changed.",
        )
    _refuse_unmatchable(text)
    folded = fold(text).strip()
    if not folded:
        raise InvalidArgument("caller_id must not be blank.", hint="Nothing was changed.")
    if len(folded) > MAX_CALLER_ID_LENGTH:
        raise InvalidArgument(
            f"caller_id is {len(folded)} characters long once normalised; the limit is "
            f"{MAX_CALLER_ID_LENGTH}.",
            hint="Nothing was changed.",
        )
    _refuse_ip_address(folded)
    value = strip_phone_formatting(folded)
    reasons = []
    if folded != text:
        reasons.append(
            "look-alike characters (fullwidth forms, non-ASCII digits, dashes) became their plain forms"
        )
    if value != folded:
        reasons.append("phone-number formatting was removed")
    if value != folded and _TRUNK_ZERO.match(folded):
        reasons.append(
            "the trunk prefix (0) after the country code was dropped, as callers' numbers arrive without it"
        )
    notes = []
    if reasons:
        notes.append(
            f"caller_id {quoted(text)} was normalised to {quoted(value)}: {'; '.join(reasons)} "
            "(3CX compares caller IDs exactly, and callers' numbers arrive in ASCII digits)."
        )
    notes += [note] if (note := _mixed_scripts(value)) else []
    return CallerIdCheck(value, notes, _broad_reason(value))


def _refuse_unmatchable(text: str) -> None:
    """Refuse, by name and position, the first character no caller ID can hold as typed.

    Invisible, bidi and control characters anywhere. A combining mark on anything but a letter (an
    accent on a digit, a keycap): NFKC keeps it apart, and guessing whether it was meant is worse than
    asking. In a phone number, a number sign that is not a decimal digit (U+3007 IDEOGRAPHIC NUMBER
    ZERO, Roman or Aegean numerals): it has a value but no digit form, and is not folded because a
    number written with one is not what a caller's phone sends. Circled and superscript digits need
    no refusal: NFKC makes them digits.
    """
    phone_like = bool(_PHONE_LIKE.match(fold("".join("0" if _is_odd_number(c) else c for c in text))))
    base = ""  # the last character that was not a combining mark
    for position, char in enumerate(text, start=1):
        code = ord(char)
        category = unicodedata.category(char)
        fix = "Remove it (retype the caller ID rather than pasting it)."
        if char in _BIDI_CONTROLS:
            kind = "a bidirectional control character: invisible, it reorders how the text is shown"
        elif category == "Cc":
            kind = "one of the control characters (newline, tab, NUL and the like)"
        elif category in _REFUSED_CATEGORIES or any(low <= code <= high for low, high in _INVISIBLE_RANGES):
            kind = "an invisible character"
        elif category.startswith("M") and not base.isalpha():
            kind = f"a combining mark drawn on {'the start' if not base else quoted(base)}"
        elif phone_like and _is_odd_number(char):
            kind = f"a number sign standing for {unicodedata.numeric(char):g} but not one of the digits 0-9"
            fix = "Type the digits as 0-9 (retype the number rather than pasting it)."
        else:
            base = base if category.startswith("M") else char
            continue
        raise InvalidArgument(
            f"caller_id holds {character_name(char)} at position {position}, {kind}; {_WHY_EXACT}. {fix}",
            hint="Nothing was changed.",
        )


def _is_odd_number(char: str) -> bool:
    """A number sign (Nl, No) that folding leaves without a digit form: `〇` and `½`, not `①` (`1`)."""
    return unicodedata.category(char) in ("Nl", "No") and not fold(char).isdigit()


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


def _script(char: str) -> str:
    """The script of a letter, from its Unicode name (`CYRILLIC SMALL LETTER A` → `CYRILLIC`)."""
    return unicodedata.name(char, "").split(" ", 1)[0]


_Letter = tuple[int, str, str]  # position (from 1), letter, script


def _words(value: str) -> list[list[_Letter]]:
    """The letters of `value`, word by word; combining marks stay inside a word, anything else ends it."""
    words: list[list[_Letter]] = [[]]
    for position, char in enumerate(value, start=1):
        if char.isalpha():
            words[-1].append((position, char, _script(char)))
        elif words[-1] and not unicodedata.category(char).startswith("M"):
            words.append([])
    return [word for word in words if word]


def _mixed_scripts(value: str) -> str | None:
    """A note listing the letters that are probably look-alikes, or None.

    In a phone number (more digits than letters) every non-Latin letter: among digits, `З` and `О` are
    a 3 and a 0 in disguise. In other text, when most letters are in a look-alike script (Latin,
    Cyrillic...), every letter of another script, except those making up a whole word of one
    script without look-alikes: `ꓮnonymous` (Lisu ꓮ) and `Ivan李` are pointed out, `Anonymous 李明`
    is a real name and is not. Text mostly in another script (Han with Kana, Arabic...) is not
    judged: its writers mix scripts as a matter of course.
    """
    words = _words(value)
    letters = [letter for word in words for letter in word]
    if sum(c.isdigit() for c in value) > len(letters):
        odd = [(p, c) for p, c, script in letters if script != "LATIN"]
        intro, what = "reads as a phone number, but", ("is a letter, not a digit", "are letters, not digits")
    else:
        scripts = [script for _, _, script in letters]
        main = max(scripts, key=lambda s: (scripts.count(s), s == "LATIN"), default="LATIN")
        if main not in _LOOKALIKE_SCRIPTS:
            return None
        odd = [(p, c) for word in words if not _plain_word(word) for p, c, script in word if script != main]
        intro, what = "mixes scripts:", (f"is not {main.title()}", f"are not {main.title()}")
    if not odd:
        return None
    listed = ", ".join(
        f"{quoted(c)} ({character_name(c)}) at position {p}" for p, c in odd[:_LISTED_LOOKALIKES]
    )
    more = f" and {len(odd) - _LISTED_LOOKALIKES} more" if len(odd) > _LISTED_LOOKALIKES else ""
    return (
        f"caller_id {quoted(value)} {intro} {listed}{more} {what[len(odd) > 1]}. Look-alike letters only "
        "match a caller ID spelt with the very same characters (3CX compares exactly, and callers' numbers "
        "arrive in ASCII digits); if that was not meant, update the entry with the caller ID retyped."
    )


def _plain_word(word: list[_Letter]) -> bool:
    """A whole word in one script that has no look-alikes of Latin: a name, not a disguise."""
    scripts = {script for _, _, script in word}
    return len(scripts) == 1 and not scripts & _LOOKALIKE_SCRIPTS


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
