"""`list_pbxs`: each configured PBX, and whether it answers now, all asked at once."""

from __future__ import annotations

from collections.abc import Callable

import anyio

from ..client import XapiClient
from ..errors import ThreeCXMcpError, in_words
from ..models import PbxListResult, PbxStatus
from ..pbxs import Pbx, PbxRoster

# A PBX that has not answered by then is reported as not answering; the others are not held up by it.
ANSWER_SECONDS = 10.0


async def pbx_statuses(pbxs: PbxRoster, client_of: Callable[[Pbx], XapiClient]) -> PbxListResult:
    """Every PBX with a login and a count, concurrently, each bounded by `ANSWER_SECONDS`."""
    statuses: dict[str | None, PbxStatus] = {}

    async def ask(pbx: Pbx) -> None:
        statuses[pbx.name] = await _status(pbx, client_of(pbx), pbx.name == pbxs.default)

    async with anyio.create_task_group() as group:
        for pbx in pbxs.pbxs:
            group.start_soon(ask, pbx)
    listed = [statuses[pbx.name] for pbx in pbxs.pbxs]
    answering = sum(status.answers for status in listed)
    summary = f"{len(listed)} PBXs configured, {answering} answering."
    if pbxs.default is None:
        summary += " No default is set: every tool call names its pbx."
    return PbxListResult(pbxs=listed, summary=summary)


async def _status(pbx: Pbx, client: XapiClient, default: bool) -> PbxStatus:
    status = PbxStatus(
        name=pbx.name or "", url=pbx.location, read_only=pbx.read_only, default=default, answers=False
    )
    try:
        with anyio.fail_after(ANSWER_SECONDS):
            entries = await client.count()
    except TimeoutError:
        problem = f"no answer within {in_words(ANSWER_SECONDS)}; check that it is running and reachable"
        return status.model_copy(update={"problem": problem})
    except ThreeCXMcpError as exc:
        return status.model_copy(update={"problem": exc.user_message()})
    return status.model_copy(update={"answers": True, "entries": entries})
