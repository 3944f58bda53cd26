"""Confirmation a model cannot skip: the user is asked, or shown a plan that only they can apply.

A client that supports elicitation asks the user itself, and nothing the model sends replaces that
answer. A client that cannot ask (Claude Desktop, most agent frameworks) gets a plan instead: the
first call writes nothing and returns what it would do with a `plan_id`; only a call that brings
that `plan_id` back, for exactly the same request, within ten minutes, and only once, applies it.
The model is told to show the plan to the user in between, and the user's own client then shows
the applying call for approval.
"""

from __future__ import annotations

import enum
import hashlib
import json
import secrets
import sqlite3
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from .display import quoted
from .errors import InvalidArgument

PLAN_LIFETIME_SECONDS = 600.0
_MAX_OPEN_PLANS = 1_000  # a flood of dry runs cannot grow memory without bound
_PLAN_ID_BYTES = 12


class Unasked(enum.Enum):
    """Why a resolver did not ask the user (its plain return value; the tool body branches on it)."""

    NOT_NEEDED = "not_needed"  # a dry run, or nothing would change
    CANNOT_ASK = "cannot_ask"  # the client has no elicitation: the plan_id route applies


class Confirmation(BaseModel):
    """What the user is asked before a destructive write."""

    confirm: bool = Field(title="Go ahead", description="Tick to go ahead; leave unticked to cancel.")


def can_ask(capabilities: object) -> bool:
    """Whether the connected client declared elicitation (a ClientCapabilities, or None before init)."""
    return getattr(capabilities, "elicitation", None) is not None


def accepted(confirmation: object) -> bool:
    """True only for an accepted question whose box the user ticked."""
    data = getattr(confirmation, "data", None)
    return isinstance(data, Confirmation) and data.confirm


def caller_id_list(caller_ids: list[str], total: int, shown: int = 10) -> str:
    """`"+4420…", "*spam" and 7 more`: each quoted and escaped, so no stored text reads as part of the question."""
    listed = [quoted(c, 40) for c in caller_ids[:shown]]
    more = total - len(listed)
    return ", ".join(listed) + (f" and {more} more" if more > 0 else "")


class PlanBook:
    """The plans handed out and not yet applied, in a small SQLite file beside the journal.

    On disk rather than in memory because some clients start a new server for every call (the
    Inspector's CLI over stdio): the call applying a plan must find it in another process. Each
    redemption is one DELETE, so two processes racing for one plan cannot both apply it. Without a
    path (tests, embedding) the book lives in memory and ends with the process.
    """

    def __init__(self, path: Path | None = None, lifetime: float = PLAN_LIFETIME_SECONDS) -> None:
        self._lifetime = lifetime
        self._path = path
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch(mode=0o600, exist_ok=True)
        # Autocommit: each statement is its own transaction, and a redemption is a single DELETE.
        self._db = sqlite3.connect(
            str(path) if path else ":memory:", isolation_level=None, check_same_thread=False, timeout=10
        )
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS plans "
            "(plan_id TEXT PRIMARY KEY, digest TEXT NOT NULL, expires_at REAL NOT NULL, shown TEXT NOT NULL)"
        )

    def __repr__(self) -> str:
        return f"PlanBook(path={str(self._path) if self._path else 'memory'!r})"

    @property
    def lifetime_minutes(self) -> int:
        return round(self._lifetime / 60)

    def close(self) -> None:
        self._db.close()

    def issue(self, action: str, request: object, shown: object = None) -> str:
        """A new plan_id for exactly this action and request (any JSON-serialisable description);
        `shown` is what the user was shown, handed back when the plan is applied."""
        now = time.time()
        plan_id = secrets.token_hex(_PLAN_ID_BYTES)
        self._db.execute(
            "BEGIN IMMEDIATE"
        )  # one transaction: pruning and the insert, against other processes
        with self._db:
            self._db.execute("DELETE FROM plans WHERE expires_at <= ?", (now,))
            self._db.execute(  # a flood of dry runs cannot grow the book without bound: the oldest go first
                "DELETE FROM plans WHERE plan_id IN (SELECT plan_id FROM plans ORDER BY expires_at DESC "
                "LIMIT -1 OFFSET ?)",
                (_MAX_OPEN_PLANS - 1,),
            )
            self._db.execute(
                "INSERT INTO plans VALUES (?, ?, ?, ?)",
                (plan_id, _digest(action, request), now + self._lifetime, json.dumps(shown)),
            )
        return plan_id

    def redeem(self, plan_id: str, action: str, request: object) -> Any:
        """Use the plan up and return what it showed, or raise InvalidArgument saying why it cannot be applied."""
        again = f"Call {action} without plan_id for a new plan, show it to the user, then apply it."
        row = self._db.execute(
            "SELECT digest, expires_at, shown FROM plans WHERE plan_id = ?", (plan_id,)
        ).fetchone()
        if row is not None and row[1] <= time.time():
            self._db.execute("DELETE FROM plans WHERE plan_id = ?", (plan_id,))
            raise InvalidArgument(
                f"plan_id {quoted(plan_id, 40)} expired (plans last {self.lifetime_minutes} minutes). {again}"
            )
        if row is not None and row[0] != _digest(action, request):
            raise InvalidArgument(
                f"plan_id {quoted(plan_id, 40)} was made for a different request; a plan applies only to "
                f"exactly what it showed. {again}"
            )
        used = self._db.execute("DELETE FROM plans WHERE plan_id = ?", (plan_id,)).rowcount
        if row is None or used != 1:  # unknown, or another process applied it a moment ago
            raise InvalidArgument(f"plan_id {quoted(plan_id, 40)} is unknown or was already used. {again}")
        return json.loads(row[2])


def _digest(action: str, request: object) -> str:
    canonical = json.dumps([action, request], sort_keys=True, ensure_ascii=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()
