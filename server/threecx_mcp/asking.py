"""How a write gets the user's agreement before it runs (the rules are in `confirmation`).

A client that can ask (elicitation) is asked, and what the question showed is kept for the call, so
the write touches only that. A client that cannot ask gets a plan first: a bulk write answers with
its dry run and a plan_id; a single write that needs the user (a broad pattern, a restore removing
entries) answers with an error naming its plan_id. Only a call bringing that plan_id back writes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from mcp.server.mcpserver import Context, Elicit, ElicitationResult

from .app_state import state_of
from .confirmation import Confirmation, PlanBook, Unasked, accepted, can_ask
from .errors import ConfirmationNeeded
from .models import BulkWriteHead
from .operations.bulk_delete import ProgressFn, no_progress

MAX_PENDING_QUESTIONS = 100  # questions kept for calls that never came back: the oldest go first
_R = TypeVar("_R", bound=BulkWriteHead)


def confirm_one_write(
    ctx: Context,
    asked: ElicitationResult[Confirmation],
    action: str,
    request: object,
    plan_id: str | None,
    why: str,
) -> None:
    """Go on only when the user agreed: by elicitation, or by the plan they were shown (else raise,
    handing out that plan: `why` says what the user must agree to and what to show them)."""
    unasked = getattr(asked, "data", None)
    if unasked is Unasked.CANNOT_ASK:
        plans = state_of(ctx).plans
        if plan_id is not None:
            plans.redeem(plan_id, action, request)
            return
        raise ConfirmationNeeded(
            f"Nothing was changed yet: {why} Only if they agree, call {action} again with the same "
            f"arguments and plan_id={plans.issue(action, request)} (valid {plans.lifetime_minutes} minutes, once)."
        )
    if not isinstance(unasked, Unasked) and not accepted(asked):
        raise ConfirmationNeeded("The user declined; nothing was changed.")


async def ask_before_bulk_write(
    dry_run: bool, ctx: Context, question: Callable[[], Awaitable[tuple[str | None, object]]]
) -> Elicit[Confirmation] | Unasked:
    """Ask the user when the client can ask; otherwise the plan_id route applies (see `confirmation`).

    `question` reads what the write would change and words it (None: nothing would change, so
    nothing to ask), with what it shows. What it shows is kept for this request, so the write does only that (see
    `BulkWrite.run`). It may run again on each round of a 2026-07-28 call, so it only reads: the
    plan is used up in the tool, and the last round's question is the one answered.
    """
    if dry_run:
        return Unasked.NOT_NEEDED
    if not can_ask(ctx.client_capabilities):
        return Unasked.CANNOT_ASK
    text, shows = await question()
    shown = state_of(ctx).shown
    while len(shown) >= MAX_PENDING_QUESTIONS:  # questions whose call never came back
        shown.pop(next(iter(shown)))
    shown[_question_key(ctx)] = shows
    return Unasked.NOT_NEEDED if text is None else Elicit(text, Confirmation)


def _question_key(ctx: Context) -> tuple[int, str]:
    """Which call a question belongs to: request ids are chosen by each client, so two sessions may use
    the same one at once; the session they came on tells them apart."""
    return id(ctx.session), ctx.request_id


@dataclass(frozen=True)
class BulkWrite(Generic[_R]):
    """A write of many entries that the user confirms, as `_confirmed_bulk_write` needs to know it."""

    action: str  # the tool, which its plans are bound to
    request: object  # exactly what a plan covers
    argument: str  # what the applying call must repeat unchanged
    verb: str  # "delete", "add"
    done: str  # "deleted", "added"
    # (dry_run, progress, what the user saw or None) -> (result, what a dry run shows)
    run: Callable[[bool, ProgressFn, Any], Awaitable[tuple[_R, Any]]]
    pending: Callable[[_R], int]  # how many entries a result says would change
    leftover: Callable[[_R], str]  # what a plan leaves alone, in words
    declined: Callable[[], _R]
    where: str = ""  # with several PBXs, which one a plan changes: ' on PBX "branch"'


async def confirmed_bulk_write(
    ctx: Context,
    asked: ElicitationResult[Confirmation],
    write: BulkWrite[_R],
    *,
    dry_run: bool,
    plan_id: str | None,
) -> _R:
    """Run the write only as the user agreed: by elicitation, or by applying the plan they were shown."""
    state = state_of(ctx)
    plans, seen = state.plans, state.shown.pop(_question_key(ctx), None)
    unasked = getattr(asked, "data", None)
    if unasked is Unasked.CANNOT_ASK:  # never for a dry run: that needs no confirmation
        if plan_id is not None:
            seen = plans.redeem(plan_id, write.action, write.request)
        else:
            preview, seen = await write.run(True, no_progress, None)
            if write.pending(preview):
                return as_plan(write, preview, seen, plans, asked_dry_run=False)
            # Nothing would change: nothing to confirm, and the write below (bound to what the
            # preview saw) reports why.
    elif not isinstance(unasked, Unasked) and not accepted(asked):
        return write.declined()
    result, shows = await write.run(dry_run, ctx.report_progress, seen)
    if dry_run and write.pending(result) and not can_ask(ctx.client_capabilities):
        result = as_plan(write, result, shows, plans, asked_dry_run=True)
    return result


def as_plan(write: BulkWrite[_R], preview: _R, shows: object, plans: PlanBook, *, asked_dry_run: bool) -> _R:
    """The dry run's result carrying a plan: the only way a client that cannot ask the user gets to write."""
    count, plan_id = write.pending(preview), plans.issue(write.action, write.request, shows)
    return preview.model_copy(
        update={
            "outcome": "dry_run" if asked_dry_run else "awaiting_confirmation",
            "plan_id": plan_id,
            "summary": (
                f"Nothing was {write.done}. Plan: {write.verb} {count} entr{'y' if count == 1 else 'ies'}"
                f"{write.where} ({write.leftover(preview)}). Show the user this plan and the caller IDs below; only if they "
                f"agree, call {write.action} again with the same {write.argument}, without dry_run, and "
                f"plan_id={plan_id} (valid {plans.lifetime_minutes} minutes, once)."
            ),
        }
    )
