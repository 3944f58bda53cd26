"""What the tools share for the server's lifetime: the PBXs and their clients, the plans, the open questions."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import cast

import anyio
from mcp.server.mcpserver import Context

from .client import XapiClient
from .confirmation import PlanBook
from .operations.concurrency import share_limit
from .pbxs import Pbx, PbxRoster


@dataclass
class AppState:
    """What the tools share for the server's lifetime."""

    pbxs: PbxRoster
    plans: PlanBook
    # Each PBX's client, by name, made when a call first needs it and closed when the server stops.
    clients: dict[str | None, XapiClient] = field(default_factory=dict)
    # What each pending question showed the user, by request id: a delete then touches only that.
    shown: dict[object, object] = field(default_factory=dict)

    def client(self, pbx: Pbx) -> XapiClient:
        """`pbx`'s client: one per PBX for the server's lifetime, so one token, retry state and write limit.
        Made synchronously, so two calls arriving together cannot make two."""
        client = self.clients.get(pbx.name)
        if client is None:
            client = self.clients[pbx.name] = pbx.make_client()
            client.pbx_name = pbx.name  # its errors name it (None: the one PBX of the THREECX_* variables)
            for other in self.pbxs.pbxs:  # two names for one PBX: one write limit for both
                made = self.clients.get(other.name)
                if other.key == pbx.key and made is not None and made is not client:
                    share_limit(client, made)
                    break
        return client

    async def close(self) -> None:
        """Close every client made, and every journal (they reopen if the server is started again)."""
        try:
            for client in self.clients.values():
                with anyio.CancelScope(shield=True):  # a cancelled shutdown still closes every connection
                    await client.aclose()
        finally:
            self.clients.clear()
            self.pbxs.close()


def state_of(ctx: Context) -> AppState:
    """The state a tool call runs with (the server's lifespan context)."""
    return cast(AppState, ctx.request_context.lifespan_context)
