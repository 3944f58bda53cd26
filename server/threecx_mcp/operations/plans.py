"""Plans: the confirmation a model cannot skip when the client cannot ask the user itself.

A destructive bulk write first returns a plan (what it would do, and a `plan_id`); only a call
that brings that `plan_id` back, for exactly the same request, within its lifetime, and only
once, applies it. The model is told to show the plan to the user in between; the user's own
client then shows the applying call, `plan_id` included, for approval. A plan lives in the
server's memory only: a restart forgets every plan, which errs on the side of asking again.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from dataclasses import dataclass

from ..errors import InvalidArgument

PLAN_LIFETIME_SECONDS = 600.0
_MAX_PLANS = 1_000  # a flood of dry runs cannot grow memory without bound


@dataclass(frozen=True)
class _Plan:
    digest: str
    expires_at: float


class PlanBook:
    """The plans this server has handed out and not yet applied."""

    def __init__(self, lifetime: float = PLAN_LIFETIME_SECONDS) -> None:
        self._lifetime = lifetime
        self._plans: dict[str, _Plan] = {}

    def __repr__(self) -> str:
        return f"PlanBook({len(self._plans)} open)"

    def issue(self, action: str, request: object) -> str:
        """A new plan_id for exactly this action and request (any JSON-serialisable description)."""
        now = time.monotonic()
        self._plans = {k: p for k, p in self._plans.items() if p.expires_at > now}
        while len(self._plans) >= _MAX_PLANS:
            self._plans.pop(next(iter(self._plans)))  # the oldest goes first
        plan_id = secrets.token_hex(8)
        self._plans[plan_id] = _Plan(_digest(action, request), now + self._lifetime)
        return plan_id

    def redeem(self, plan_id: str, action: str, request: object) -> None:
        """Use up the plan, or raise InvalidArgument saying why it cannot be applied."""
        plan = self._plans.get(plan_id)
        again = f"Call {action} without plan_id to get a new plan, show it to the user, then apply it."
        if plan is None:
            raise InvalidArgument(f"plan_id {plan_id[:40]!r} is unknown or was already applied. {again}")
        if plan.expires_at <= time.monotonic():
            del self._plans[plan_id]
            minutes = self._lifetime / 60
            raise InvalidArgument(f"plan_id {plan_id!r} expired (plans last {minutes:g} minutes). {again}")
        if plan.digest != _digest(action, request):
            raise InvalidArgument(
                f"plan_id {plan_id!r} was made for a different request; a plan applies only to exactly "
                f"what it showed. {again}"
            )
        del self._plans[plan_id]


def _digest(action: str, request: object) -> str:
    canonical = json.dumps([action, request], sort_keys=True, ensure_ascii=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()
