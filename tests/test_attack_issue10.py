"""Attacks on issue 10's promises (logins, secrets, injection, look-alikes, confirmation, parsing).

Each `test_defect_*` fails on the code it was written against (20f9bbf) and passes once the defect is
fixed; the other tests pin a guarantee that held under attack and that no other test states.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from typing import Any

import anyio
import pytest
from mcp import Client, MCPError
from mcp_types import ElicitResult
from threecx_mcp.client import XapiClient
from threecx_mcp.config import Settings
from threecx_mcp.doctor import run_checks
from threecx_mcp.errors import RateLimited, ThreeCXMcpError
from threecx_mcp.sandbox import SANDBOX_CLIENT_SECRET, Fault, Sandbox
from threecx_mcp.server import BlacklistServer

pytestmark = pytest.mark.anyio

DELETE = "bulk_delete_blacklist_numbers"
# What the sanitiser promises never reaches a person or a model raw: bidi overrides, C1 controls,
# line/paragraph separators, zero-width characters.
INVISIBLE_SAMPLES = ("\u202e", "\u0085", "\u2028", "\u200b", "\u2066")


def text_of(result: Any) -> str:
    return "\n".join(getattr(c, "text", "") for c in result.content)


def longest_run(text: str, char: str) -> int:
    return max((len(m) for m in re.findall(f"{re.escape(char)}+", text)), default=0)


# -- PBX text reaching the model raw ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("tool", "arguments"),
    [
        ("get_blacklist_number", {"id": "13"}),
        ("list_blacklist_numbers", {"search": "evil"}),
        ("update_blacklist_number", {"id": "13", "description": "checked"}),
    ],
)
async def test_defect_get_list_and_update_show_bidi_c1_and_zero_width_text_raw(
    mcp: Client, sandbox: Sandbox, tool: str, arguments: dict[str, Any]
) -> None:
    """Promise 3: C0/C1 controls, bidi overrides and zero-width characters from the PBX are escaped in
    everything shown. The text block of get/list/update is the SDK's own JSON of the model, which
    leaves U+202E, U+0085, U+2028, U+200B and U+2066 in place: the model (and a client showing the
    text) gets a caller ID that reorders or breaks the line around it."""
    entry = sandbox.add("+4420\u202eevil\u0085x\u2028y", "note\u200b\u2066hidden")
    assert entry["Id"] == "13"
    result = await mcp.call_tool(tool, arguments)
    assert not result.is_error, text_of(result)
    shown = text_of(result)
    assert "evil" in shown  # the entry is there ...
    assert not [c for c in INVISIBLE_SAMPLES if c in shown], "... with its invisible characters escaped"


async def test_defect_get_shows_the_api_key_a_pbx_stored_in_a_description(
    mcp: Client, sandbox: Sandbox
) -> None:
    """Promise 3: the API key becomes [redacted] in everything from the PBX shown to a model. An entry
    whose description holds it (pasted there by mistake, or a hostile PBX) is shown raw by get/list."""
    await mcp.call_tool("list_operations", {})  # any call: the server has logged in, so it knows the key
    entry = sandbox.add("+15550001111", f"api key {SANDBOX_CLIENT_SECRET}")
    for tool, arguments in (("get_blacklist_number", {"id": entry["Id"]}), ("list_blacklist_numbers", {})):
        result = await mcp.call_tool(tool, arguments)
        assert SANDBOX_CLIENT_SECRET not in text_of(result), tool


# -- unbounded echo and Python reprs ---------------------------------------------------------------


async def test_defect_the_operation_resource_echoes_a_huge_operation_id_whole(mcp: Client) -> None:
    """Promise 6: nothing from the input echoed beyond 200 characters. The resource template takes an
    operation_id of any length and its error repeats it whole, as a Python repr."""
    with pytest.raises(MCPError) as raised:
        await mcp.read_resource("threecx://operations/" + "Z" * 5_000)
    message = str(raised.value)
    assert "No journaled operation" in message
    assert longest_run(message, "Z") <= 200
    assert "'ZZZ" not in message  # quoted as data, not as a Python repr


@pytest.mark.parametrize("start", ["9" * 5_000, "next", "1e5"])
async def test_defect_a_bad_start_on_the_operation_resource_gets_no_reason_and_an_echo(
    mcp: Client, start: str
) -> None:
    """Promise 6: bounded parsing with a readable error. `?start=` that is not a small integer fails in
    pydantic inside the SDK: the reader gets "Error creating resource from template <the whole URI>"
    (5,000 digits echoed), no reason, and the server logs a traceback."""
    with pytest.raises(MCPError) as raised:
        await mcp.read_resource(f"threecx://operations/abc?start={start}")
    message = str(raised.value)
    assert "Error creating resource from template" not in message
    assert "start" in message  # names what was wrong
    assert longest_run(message, "9") <= 200


async def test_defect_an_id_from_a_lying_pbx_is_echoed_whole_in_an_error(
    mcp: Client, sandbox: Sandbox
) -> None:
    """Promise 3: text from the PBX is capped (300 characters) before a person or a model sees it.
    A PBX that ignores $filter and holds an entry with a 3,000-character id gets that id repeated
    whole, as a Python repr, in "The PBX answered a search with entry '…'"."""
    sandbox.add("!!! sorts first", None, entry_id="X" * 3_000)
    sandbox.ignore_filter = True
    result = await mcp.call_tool("list_blacklist_numbers", {"search": "zzz"})
    assert result.is_error and "ignored the filter" in text_of(result)
    assert longest_run(text_of(result), "X") <= 300
    assert "'XXX" not in text_of(result)


# -- logins ----------------------------------------------------------------------------------------


async def test_defect_later_calls_ignore_the_token_endpoints_retry_after(
    xapi: XapiClient, sandbox: Sandbox
) -> None:
    """Promises 1-2: a 429 from the token endpoint is retried by one caller, and a Retry-After beyond the
    budget fails at once with the PBX's wait. It does fail at once, but each later call logs in again
    at once although the PBX asked for an hour: 10 calls in a row, 10 token requests to a throttled
    endpoint (the same storm that gets an IP blocked). Calls within the PBX's wait should fail fast,
    saying how long is left, without a token request."""
    sandbox.inject(Fault(status=429, path="/connect/token", retry_after="3600", times=1_000))
    messages = []
    for _ in range(10):
        with pytest.raises(RateLimited) as raised:
            await xapi.count()
        messages.append(raised.value.user_message())
    assert "60 minutes" in messages[0]
    assert sandbox.token_requests == 1


async def test_defect_a_retry_after_of_1e999_ends_the_call_in_error_executing_tool(
    mcp: Client, sandbox: Sandbox
) -> None:
    """Promise 2 (the message gives the PBX's wait) and the house rule (a readable sentence, never a
    Python failure): `Retry-After: 1e999` parses to infinity, and wording it (`math.ceil(inf)`) raises
    OverflowError inside `RateLimited`, so the user gets only "Error executing tool …"."""
    sandbox.inject(Fault(status=429, retry_after="1e999", times=10))
    result = await mcp.call_tool("get_blacklist_number", {"id": "1"})
    assert result.is_error
    assert "Error executing tool" not in text_of(result)
    assert "rate limiting" in text_of(result)


async def test_defect_an_unwordable_retry_after_at_the_token_endpoint_costs_a_login_per_waiter(
    xapi: XapiClient, sandbox: Sandbox
) -> None:
    """Promise 1: one mint outcome for all waiters, success or failure. The outcome is shared only when
    it is a PbxError: the OverflowError from `Retry-After: 1e999` leaves no recorded failure, so each of
    20 waiting calls starts its own login (20 token requests) and each ends in a bare OverflowError."""
    sandbox.inject(Fault(status=429, path="/connect/token", retry_after="1e999", times=1_000))
    failures: list[BaseException] = []

    async def call() -> None:
        try:
            await xapi.count()
        except Exception as exc:  # noqa: BLE001 - what each call ends in is the point
            failures.append(exc)

    async with anyio.create_task_group() as group:
        for _ in range(20):
            group.start_soon(call)
    assert sandbox.token_requests == 1
    assert len(failures) == 20 and all(isinstance(f, RateLimited) for f in failures)


async def test_defect_doctor_crashes_on_a_token_endpoint_asking_for_an_unwordable_wait(
    sandbox: Sandbox, pbx_settings: Settings
) -> None:
    """Promise 8/10 spirit (doctor: one line per check with its fix, exit 1): the same
    `Retry-After: 1e999` on the token endpoint escapes `run_checks` as OverflowError, so
    `threecx-mcp doctor` ends in a traceback instead of "FAIL  token: …"."""
    sandbox.inject(Fault(status=429, path="/connect/token", retry_after="1e999", times=10))
    findings = await run_checks(pbx_settings)
    assert findings[-1].name == "token" and findings[-1].verdict == "FAIL"
    assert "rate limiting" in findings[-1].line()


# -- confirmation: what the user saw is what is deleted --------------------------------------------


async def delete_while_someone_adds(
    make_server: Callable[..., BlacklistServer], sandbox: Sandbox, mode: str
) -> list[str]:
    """Delete ids 1 and 13 (13 does not exist yet) and accept; a colleague adds entry 13 while the user
    reads the first question. Returns every question asked."""
    asked: list[str] = []

    async def accept_while_someone_adds(context: Any, params: Any) -> ElicitResult:
        asked.append(params.message)
        if "13" not in sandbox.entries:
            assert sandbox.add("+15559990013", "added by a colleague meanwhile")["Id"] == "13"
        return ElicitResult(action="accept", content={"confirm": True})

    async with Client(make_server(), mode=mode, elicitation_callback=accept_while_someone_adds) as client:
        result = await client.call_tool(DELETE, {"ids": ["1", "13"]})
    assert not result.is_error, text_of(result)
    assert asked[0].startswith("Delete 1 blacklist entry") and "1" not in sandbox.entries
    return asked


async def test_defect_an_entry_created_while_the_user_reads_the_question_is_deleted_unseen(
    make_server: Callable[..., BlacklistServer], sandbox: Sandbox
) -> None:
    """Promise 4: the user confirms what is deleted. Over 2025-11-25 (legacy mode: Claude Code, Cursor,
    VS Code today) the question counts and lists the ids that exist when it is asked; the delete then
    goes by the ids the model sent. An id that did not exist then (ids are sequential: a model can name
    the next ones) and was created while the user read the question is deleted, although the user was
    asked "Delete 1 blacklist entry" and never saw it."""
    asked = await delete_while_someone_adds(make_server, sandbox, "legacy")
    shown = any("+15559990013" in question for question in asked)
    assert shown or "13" in sandbox.entries, "an entry the user was never shown was deleted"


async def test_over_2026_07_28_a_question_that_changed_is_asked_again(
    make_server: Callable[..., BlacklistServer], sandbox: Sandbox
) -> None:
    """Held (2026-07-28 only): the SDK re-runs the resolver with the answer and discards an answer to a
    question that has changed since, so the user is asked again, now about both entries."""
    asked = await delete_while_someone_adds(make_server, sandbox, "auto")
    assert (
        len(asked) == 2 and asked[1].startswith("Delete 2 blacklist entries") and "+15559990013" in asked[1]
    )


async def test_defect_a_plan_deletes_an_id_that_did_not_exist_when_the_user_saw_it(
    mcp: Client, sandbox: Sandbox
) -> None:
    """Promise 4: a plan is bound to what it showed. It is bound to the ids the model sent, so an id the
    plan reported "not found" and that someone creates within the plan's 10 minutes is deleted by
    applying it: "delete 1 entry (1 of the ids were not found)" deletes 2."""
    plan = (await mcp.call_tool(DELETE, {"ids": ["1", "13"]})).structured_content
    assert plan is not None and plan["would_delete"] == 1 and plan["not_found"] == 1
    assert sandbox.add("+15559990013", "added by a colleague meanwhile")["Id"] == "13"
    applied = await mcp.call_tool(DELETE, {"ids": ["1", "13"], "plan_id": plan["plan_id"]})
    assert "1" not in sandbox.entries
    assert "13" in sandbox.entries or applied.is_error, "an entry the plan never showed was deleted"


async def test_defect_undoing_a_restore_deletes_many_entries_without_the_user_confirming(
    mcp: Client, sandbox: Sandbox
) -> None:
    """Promise 4: "a bulk delete (and every later bulk write) needs a plan first" when the client cannot
    ask. A restore is a bulk write that deletes: after the user undid a delete (the entries are back),
    the model alone can call restore_blacklist_numbers on that restore and the entries are deleted again
    in one call, with no plan and no question: the user's last decision (keep them) is overturned."""
    ids = ["1", "2", "3", "4", "5"]
    plan = (await mcp.call_tool(DELETE, {"ids": ids})).structured_content
    deleted = (await mcp.call_tool(DELETE, {"ids": ids, "plan_id": plan["plan_id"]})).structured_content
    assert deleted is not None and deleted["deleted"] == 5
    undone = await mcp.call_tool("restore_blacklist_numbers", {"operation_id": deleted["operation_id"]})
    assert undone.structured_content is not None and undone.structured_content["counts"].get("recreated") == 5
    back = len(sandbox.entries)

    redo = await mcp.call_tool(
        "restore_blacklist_numbers", {"operation_id": undone.structured_content["operation_id"]}
    )
    outcome = redo.structured_content or {}
    assert len(sandbox.entries) == back, (
        f"{back - len(sandbox.entries)} entries deleted by one unconfirmed call ({outcome.get('counts')})"
    )


# -- look-alike caller IDs -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "typed",
    [
        "+1 555\u2013010\u20130198",  # en dashes, as word processors and web pages write numbers
        "+1 555\u2212010\u22120198",  # minus signs
        "+1 555\u2011010\u20110198",  # non-breaking hyphens (NFKC makes them U+2010, still not ASCII)
        "+1 555 010 0198\u0301",  # a combining mark on the last digit
        "+1555010019\u3007",  # IDEOGRAPHIC NUMBER ZERO (category Nl: NFKC and the digit fold keep it)
    ],
)
async def test_defect_a_pasted_number_with_look_alike_punctuation_or_marks_is_stored_unmatchable(
    mcp: Client, sandbox: Sandbox, typed: str
) -> None:
    """Promise 5: what is stored is what a caller can match; look-alikes are folded, refused or noted.
    These numbers are stored as typed, as names, without a note: an entry that can never block the
    caller it was meant for, and the admin is told nothing."""
    result = await mcp.call_tool("add_blacklist_number", {"caller_id": typed})
    if result.is_error:
        return  # refused, with a reason: acceptable
    stored = result.structured_content["entry"]["caller_id"]
    assert re.fullmatch(r"\+?[0-9]+", stored), f"stored {stored!r}, which no caller's number can match"


@pytest.mark.parametrize(
    ("typed", "odd"),
    [
        ("+4420718\u04178750", "\u0417"),  # CYRILLIC CAPITAL LETTER ZE for the digit 3
        ("+44207183875\u041e", "\u041e"),  # CYRILLIC CAPITAL LETTER O for the digit 0
        ("\ua4eenonymous", "\ua4ee"),  # LISU LETTER A for the Latin A of "Anonymous"
    ],
)
async def test_defect_look_alike_letters_outside_the_listed_scripts_pass_unnoted(
    mcp: Client, sandbox: Sandbox, typed: str, odd: str
) -> None:
    """Promise 5: mixed-script look-alikes are pointed out. Only letters of two *listed* alphabets count:
    a Cyrillic letter among digits (one script of letters) or a Lisu letter in a Latin name (Lisu is not
    listed) is stored without a word."""
    result = await mcp.call_tool("add_blacklist_number", {"caller_id": typed})
    if result.is_error:
        return
    notes = " ".join(result.structured_content["notes"])
    assert f"U+{ord(odd):04X}" in notes, f"no note about {unicodedata.name(odd)}"


async def test_defect_a_uk_number_written_with_its_trunk_zero_is_stored_as_another_number(
    mcp: Client,
) -> None:
    """Unlucky admin, promise 5 (what is stored is what a caller can match): "+44 (0)20 7183 8751" is
    how UK and German numbers are usually printed; removing the formatting keeps the bracketed trunk 0
    and stores +4402071838751, a number no caller ever has (it arrives as +442071838751)."""
    result = await mcp.call_tool("add_blacklist_number", {"caller_id": "+44 (0)20 7183 8751"})
    if result.is_error:
        return
    assert result.structured_content["entry"]["caller_id"] == "+442071838751"


# -- guarantees that held (pinned here because no other test states them) --------------------------


@pytest.mark.parametrize("typed", ["\uff0a", "\ufe61", "*\u3000*", "\uff0b\uff0a", " * "])
async def test_patterns_that_become_broad_only_after_normalisation_are_refused(
    mcp: Client, sandbox: Sandbox, typed: str
) -> None:
    """Held: a fullwidth or small asterisk, an ideographic space between stars, a fullwidth +* all fold
    to a broad pattern before the check, so they are refused without allow_broad_pattern."""
    before = dict(sandbox.entries)
    result = await mcp.call_tool("add_blacklist_number", {"caller_id": typed})
    assert result.is_error and "allow_broad_pattern=true" in text_of(result)
    assert sandbox.entries == before


async def test_a_delete_plan_cannot_be_applied_by_a_dry_run_or_to_a_subset(
    mcp: Client, sandbox: Sandbox
) -> None:
    """Held: a plan for ids 1 and 2 applies neither to id 1 alone nor through dry_run (which deletes
    nothing and leaves the plan unused), and then still applies once to exactly 1 and 2."""
    plan = (await mcp.call_tool(DELETE, {"ids": ["1", "2"]})).structured_content
    assert plan is not None
    subset = await mcp.call_tool(DELETE, {"ids": ["1"], "plan_id": plan["plan_id"]})
    assert subset.is_error and "different request" in text_of(subset)
    dry = await mcp.call_tool(DELETE, {"ids": ["1", "2"], "dry_run": True, "plan_id": plan["plan_id"]})
    assert not dry.is_error and {"1", "2"} <= set(sandbox.entries)
    applied = await mcp.call_tool(DELETE, {"ids": ["2", "1"], "plan_id": plan["plan_id"]})
    assert not applied.is_error and not {"1", "2"} & set(sandbox.entries)


async def test_a_wrong_key_answer_echoing_the_form_never_reaches_the_message(
    xapi: XapiClient, sandbox: Sandbox
) -> None:
    """Held: a token endpoint that refuses the credentials and echoes the submitted form (URL-encoded,
    the API key in it) shows neither the key nor the form field's value in the error, also on the
    cooled-down calls that follow."""
    sandbox.echo_form_in_errors = True
    sandbox.api_clients["sandbox"] = "another-key-entirely"
    for _ in range(3):
        with pytest.raises(ThreeCXMcpError) as raised:
            await xapi.count()
        assert SANDBOX_CLIENT_SECRET not in raised.value.user_message()
        assert "client_secret=[redacted]" in raised.value.user_message()
    assert sandbox.token_requests == 1
