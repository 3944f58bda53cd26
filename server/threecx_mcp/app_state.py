"""What the tools share for the server's lifetime: the PBX client, the journal, the plans, the open questions."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import cast

from mcp.server.mcpserver import Context

from .client import XapiClient
from .confirmation import PlanBook
from .journal import Journal


@dataclass
class AppState:
    """What the tools share for the server's lifetime."""

    client: XapiClient
    journal: Journal
    plans: PlanBook
    # What each pending question showed the user, by request id: a delete then touches only that.
    shown: dict[object, object] = field(default_factory=dict)


def state_of(ctx: Context) -> AppState:
    """The state a tool call runs with (the server's lifespan context)."""
    return cast(AppState, ctx.request_context.lifespan_context)
