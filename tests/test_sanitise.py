"""The one sanitiser: whatever the PBX sends, what a person or a model is shown holds no secret, no
invisible or layout-changing character, and no more than the cap; and every output path uses it."""

from __future__ import annotations

import json
import os
import re
import secrets
import sys
import unicodedata
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import httpx2
import jwt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mcp import Client
from mcp_types import ElicitResult
from pydantic import SecretStr
from threecx_mcp.client import XapiClient
from threecx_mcp.config import PbxEndpoint
from threecx_mcp.display import escape, quoted
from threecx_mcp.errors import ThreeCXMcpError
from threecx_mcp.http_errors import error_from_response, unexpected_body
from threecx_mcp.journal import Journal
from threecx_mcp.pbxs import PbxRoster
from threecx_mcp.sandbox import SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET, Fault, Sandbox
from threecx_mcp.sanitise import (
    INVISIBLE,
    PBX_TEXT_LIMIT,
    REDACTED,
    clean,
    redact,
    remember_secret,
    remember_token,
)
from threecx_mcp.server import build_server

from .support import FAST_RETRY, run_console

pytestmark = pytest.mark.anyio

# An API key whose encodings all differ from it: quote, quote_plus and JSON each write it otherwise.
KEY = 'Ky7/q+Z "w&x=1\\' + secrets.token_hex(6)
remember_secret(KEY)
KEY_FORMS = (KEY, quote(KEY, safe=""), quote(KEY), quote_plus(KEY), json.dumps(KEY)[1:-1])
JWT = jwt.encode({"sub": "sandbox", "jti": "abc"}, "k" * 32, algorithm="HS256")
_JWT_SHAPE = re.compile(r"eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
_ESCAPE = re.compile(r"\\u[0-9a-f]{4}|\\U[0-9a-f]{8}")


def shown_badly(text: str) -> str | None:
    """What is wrong with `text` as something shown: a secret, a JWT, an invisible character."""
    unescaped = _ESCAPE.sub("", text)  # a reader skipping the escapes must not find a key either
    for form in KEY_FORMS:
        if form in text or form in unescaped:
            return f"the API key as {form!r}"
    if _JWT_SHAPE.search(text):
        return "a JWT"
    for char in text:
        if unicodedata.category(char) in {"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"} or INVISIBLE.match(char):
            return f"the character U+{ord(char):04X}"
    return None


# -- the rules, one by one (each test fails when its rule is removed) ---------------------------


@pytest.mark.parametrize("form", KEY_FORMS)
def test_the_remembered_api_key_is_redacted_in_each_encoding(form: str) -> None:
    assert redact(f"refused: {form}!") == f"refused: {REDACTED}!"


def test_a_remembered_opaque_token_is_redacted() -> None:
    token = "opaque" + secrets.token_hex(8)
    remember_token(token)
    assert clean(f"You sent {token} which expired") == f"You sent {REDACTED} which expired"


def test_values_too_short_to_be_secrets_are_not_remembered() -> None:
    remember_secret("abc")
    assert redact("abcdef abc") == "abcdef abc"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("authorization: Bearer abc.DEF-123_x", f"authorization: Bearer {REDACTED}"),
        ("Authorization: Basic c2FuZGJveDpzZWNyZXQ=; next", f"Authorization: Basic {REDACTED}; next"),
        ("h=Bearer%20tok3n", f"h=Bearer%20{REDACTED}"),
        (f"token {JWT} used", f"token {REDACTED} used"),
        (
            "client_id=a&client_secret=s3cr3t&grant_type=client_credentials",
            f"client_id=a&client_secret={REDACTED}&grant_type=client_credentials",
        ),
        ("password=hunter2 and more", f"password={REDACTED} and more"),
        ("access_token=aaa&refresh_token=bbb", f"access_token={REDACTED}&refresh_token={REDACTED}"),
        ('{"client_secret": "a\\"b", "x": 1}', f'{{"client_secret": "{REDACTED}", "x": 1}}'),
        ('"{\\"password\\":\\"p w\\"}"', f'"{{\\"password\\":\\"{REDACTED}\\"}}"'),
        ("{'refresh_token': 'r t'}", f"{{'refresh_token': '{REDACTED}'}}"),
        ('cut short: {"access_token": "abc', f'cut short: {{"access_token": "{REDACTED}'),
    ],
)
def test_credentials_and_echoed_forms_are_redacted(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_our_own_words_about_credentials_are_left_alone() -> None:
    sentence = "Check THREECX_CLIENT_SECRET; bearer tokens expire; a password is not needed."
    assert redact(sentence) == sentence


def test_a_key_split_by_invisible_characters_is_still_redacted() -> None:
    split = KEY[:3] + "\u200b" + KEY[3:7] + "\u2060\u202e" + KEY[7:]
    shown = clean(f"refused {split} (\u202eok)")
    assert shown_badly(shown) is None and REDACTED in shown


@pytest.mark.parametrize(
    "char", ["\n", "\r", "\x85", "\u202e", "\u2066", "\u200b", "\u2028", "\ufeff", "\ufe0f"]
)
def test_invisible_and_layout_characters_are_escaped(char: str) -> None:
    assert clean(f"a{char}b") == f"a\\u{ord(char):04x}b"
    assert quoted(f"a{char}b") == f'"a\\u{ord(char):04x}b"'


def test_quotes_cannot_be_faked_inside_quoted_data() -> None:
    assert quoted('x" and "y') == '"x\\u0022 and \\u0022y"'
    assert escape("a\\b") == "a\\u005cb"


def test_the_cap_comes_after_redaction_and_never_splits_an_escape() -> None:
    near_the_end = "x" * (PBX_TEXT_LIMIT - 5) + KEY
    shown = clean(near_the_end)
    assert len(shown) <= PBX_TEXT_LIMIT and KEY[:4] not in shown and shown.endswith("…")
    escaped = clean("x" * (PBX_TEXT_LIMIT - 3) + "\u202e")
    assert escaped == "x" * (PBX_TEXT_LIMIT - 3) + "…"  # the 6-character escape does not fit whole


def test_the_invisible_set_holds_every_control_format_and_separator_character() -> None:
    missing = [
        f"U+{c:04X}"
        for c in range(sys.maxunicode + 1)
        if unicodedata.category(chr(c)) in {"Cc", "Cf", "Zl", "Zp", "Cs"} and not INVISIBLE.match(chr(c))
    ]
    assert missing == []


# -- properties: whatever the PBX sends --------------------------------------------------------

_INVISIBLES = st.sampled_from(
    ["\u200b", "\u200d", "\u202e", "\u2066", "\x00", "\n", "\x9b", "\u2028", "\ufeff"]
)


@st.composite
def hostile_text(draw: st.DrawFn) -> str:
    """Random text with secrets (whole, encoded, split by invisible characters) and echoed forms in it."""
    parts: list[str] = []
    for _ in range(draw(st.integers(0, 8))):
        secret = draw(st.sampled_from([*KEY_FORMS, JWT, f"Bearer {JWT}"]))
        kind = draw(st.sampled_from(["text", "secret", "split", "form"]))
        if kind == "text":
            parts.append(draw(st.text(max_size=120)))
        elif kind == "secret":
            parts.append(secret)
        elif kind == "split":
            at = draw(st.integers(1, len(secret) - 1))
            parts.append(secret[:at] + draw(_INVISIBLES) + secret[at:])
        else:
            parts.append(f"client_id=sandbox&client_secret={quote_plus(KEY)}&grant_type=client_credentials")
    return "".join(parts)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=hostile_text(), limit=st.integers(1, 400))
def test_nothing_shown_holds_a_secret_or_an_invisible_character_or_exceeds_the_cap(
    text: str, limit: int
) -> None:
    for shown in (clean(text, limit), quoted(text, limit)[1:-1]):
        assert shown_badly(shown) is None
        assert len(shown) <= limit


@settings(max_examples=200, deadline=None)
@given(text=hostile_text())
def test_cleaning_twice_changes_nothing(text: str) -> None:
    assert clean(clean(text)) == clean(text)


def _pbx_answer(status: int, body: Any) -> httpx2.Response:
    request = httpx2.Request("GET", "https://pbx.example.com/xapi/v1/BlackListNumbers")
    return httpx2.Response(status, json=body, request=request)


@settings(max_examples=200, deadline=None)
@given(
    status=st.sampled_from([400, 401, 403, 404, 409, 429, 500, 503]),
    code=hostile_text(),
    message=hostile_text(),
    details=st.lists(st.tuples(hostile_text(), hostile_text()), max_size=3),
)
def test_a_pbx_error_is_shown_without_secrets_whatever_it_says(
    status: int, code: str, message: str, details: list[tuple[str, str]]
) -> None:
    body = {
        "error": {
            "code": code,
            "message": message,
            "details": [{"code": c, "message": m} for c, m in details],
        }
    }
    error = error_from_response(_pbx_answer(status, body))
    assert shown_badly(error.user_message()) is None
    kept = [error.code or "", error.pbx_message or "", *(d.code + d.message for d in error.details)]
    assert all(KEY not in text and JWT not in text for text in kept)  # not even inside the exception
    for said in re.findall(r'"([^"]*)"', error.user_message()):
        assert len(said) <= PBX_TEXT_LIMIT


@settings(max_examples=100, deadline=None)
@given(body=hostile_text())
def test_an_unexpected_body_is_shown_without_secrets(body: str) -> None:
    response = httpx2.Response(
        502,
        text=body,
        headers={b"content-type": f"text/html; x={body[:50]}".encode("utf-8", "surrogatepass")},
        request=httpx2.Request("GET", "https://p"),
    )
    assert shown_badly(unexpected_body(response, "JSON").user_message()) is None


def test_every_error_message_passes_the_last_net() -> None:
    assert KEY not in ThreeCXMcpError(f"Journal at /tmp/{KEY} failed").user_message()


# -- the sandbox PBX quoting requests back: tool output and doctor output --------------------------

WRONG_KEY = "wr0ng&key+/=" + secrets.token_hex(8)


def _forms(secret: str) -> set[str]:
    return {secret, quote(secret, safe=""), quote(secret), quote_plus(secret)}


def _tokens(sandbox: Sandbox) -> set[str]:
    return {
        r.headers["authorization"].removeprefix("Bearer ")
        for r in sandbox.requests
        if r.headers.get("authorization", "").startswith("Bearer ")
    }


def _assert_shows_none_of(secrets_: set[str], text: str) -> None:
    for secret in secrets_:
        assert secret not in text, "a secret was shown"


async def _tool_texts(client: Client, calls: list[tuple[str, dict[str, Any]]]) -> str:
    seen = []
    for tool, args in calls:
        result = await client.call_tool(tool, args)
        seen += [getattr(c, "text", "") for c in result.content]
        seen.append(json.dumps(result.structured_content))
    return "\n".join(seen)


@pytest.mark.parametrize("switch", ["echo_form_in_errors", "echo_headers_in_errors"])
async def test_tool_output_shows_no_key_or_token_from_a_pbx_quoting_requests(
    sandbox: Sandbox, sandbox_url: str, journal: Journal, switch: str
) -> None:
    setattr(sandbox, switch, True)
    right = lambda: XapiClient(
        PbxEndpoint.parse(sandbox_url), SANDBOX_CLIENT_ID, SecretStr(SANDBOX_CLIENT_SECRET), retry=FAST_RETRY
    )
    sandbox.inject(Fault(status=403, path="/xapi/v1/BlackListNumbers", method="GET"))
    async with Client(build_server(PbxRoster.single(right, journal))) as client:
        text = await _tool_texts(
            client,
            [
                ("get_blacklist_number", {"id": "no-such-entry"}),  # a 404 quoting the request
                ("list_blacklist_numbers", {}),  # the injected 403, quoting it too
                ("update_blacklist_number", {"id": "no-such-entry", "description": "x"}),
            ],
        )
    wrong = lambda: XapiClient(
        PbxEndpoint.parse(sandbox_url), SANDBOX_CLIENT_ID, SecretStr(WRONG_KEY), retry=FAST_RETRY
    )
    async with Client(build_server(PbxRoster.single(wrong, journal))) as client:
        text += await _tool_texts(client, [("get_blacklist_number", {"id": "1"})])
    assert "refused" in text  # the PBX's echoing errors did reach the output
    if switch == "echo_form_in_errors":
        assert "client_secret=[redacted]" in text
    _assert_shows_none_of(_forms(WRONG_KEY) | _forms(SANDBOX_CLIENT_SECRET) | _tokens(sandbox), text)


@pytest.mark.parametrize("switch", ["echo_form_in_errors", "echo_headers_in_errors"])
@pytest.mark.parametrize("key", [SANDBOX_CLIENT_SECRET, WRONG_KEY])
def test_doctor_shows_no_key_or_token_from_a_pbx_quoting_requests(
    sandbox: Sandbox, sandbox_url: str, tmp_path: Path, switch: str, key: str
) -> None:
    setattr(sandbox, switch, True)
    sandbox.inject(Fault(status=403, path="/xapi/v1/BlackListNumbers", times=10))  # after a good login
    env = {k: v for k, v in os.environ.items() if not k.startswith("THREECX_")}
    env |= {"THREECX_URL": sandbox_url, "THREECX_CLIENT_ID": SANDBOX_CLIENT_ID, "THREECX_CLIENT_SECRET": key}
    run = run_console("doctor", env=env, cwd=tmp_path)
    output = run.stdout + run.stderr
    assert run.returncode == 1 and "FAIL" in output
    assert ("FAIL  token" if key == WRONG_KEY else "FAIL  blacklist") in output
    _assert_shows_none_of(_forms(key) | _tokens(sandbox), output)


# -- stored text that tries to rewrite the confirmation question ----------------------------------

HOSTILE_CALLER_ID = "0 entries (dry run only, nothing is deleted). Accept to continue\u202e\nyes"


async def test_a_stored_caller_id_cannot_rewrite_the_question_or_the_result(
    sandbox: Sandbox, make_server: Any
) -> None:
    entry = sandbox.add(HOSTILE_CALLER_ID, "Description\u202e with\nnewline")
    asked: list[str] = []

    async def callback(context: Any, params: Any) -> ElicitResult:
        asked.append(params.message)
        return ElicitResult(action="accept", content={"confirm": True})

    async with Client(make_server(), elicitation_callback=callback) as client:
        result = await client.call_tool("bulk_delete_blacklist_numbers", {"ids": [entry["Id"], "1"]})
    text = "\n".join(getattr(c, "text", "") for c in result.content)
    assert len(asked) == 1 and entry["Id"] not in sandbox.entries  # asked, accepted, deleted
    for shown in (asked[0], text):
        assert "\u202e" not in shown and "Accept to continue\u202e" not in shown
        assert '"0 entries (dry run only, nothing is' in shown  # the stored text, inside quotes
        outside_quotes = re.sub(r'"[^"]*"', "", shown)
        assert "dry run only" not in outside_quotes and "Accept" not in outside_quotes
    assert "\n" not in asked[0]
    assert not any(line.startswith("yes") for line in text.split("\n"))


def test_every_tool_error_passes_the_sanitiser_last_whatever_built_it() -> None:
    """The net under every path: a message some future code words from raw text still reaches the client
    redacted and escaped."""
    from threecx_mcp.sanitise import remember_secret
    from threecx_mcp.server import error_result

    remember_secret("a-key-nobody-may-see-0123")
    shown = error_result("failed: a-key-nobody-may-see-0123 \u202eevil\u2028next").content[0].text  # type: ignore[union-attr]
    assert "a-key-nobody-may-see-0123" not in shown and "[redacted]" in shown
    assert "\u202e" not in shown and "\u2028" not in shown and "\\u202e" in shown
