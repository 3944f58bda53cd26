"""The sandbox's call log: `ReportCallLogData/Pbx.GetCallLogData(...)` as a 3CX V20 Update 6 PBX answers it.

The function takes its eleven parameters in the path, each exactly once: date-times as bare
OData literals, integers, string literals (or `null`) and a boolean; anything else is a 400, as
ASP.NET OData refuses it. The rows are call segments shaped as the published `Pbx.CallLogData`
schema says; the rows of one call share its `MainCallHistoryId`. The log is seeded with a few
callers (one matches the seeded `*eremy` entry by name) and `add_call` adds more.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import unquote

from starlette.responses import JSONResponse, Response

FUNCTION_PATH = "ReportCallLogData/Pbx.GetCallLogData"
_PARAMETERS = {
    "periodFrom": "date-time",
    "periodTo": "date-time",
    "sourceType": "int",
    "sourceFilter": "string",
    "destinationType": "int",
    "destinationFilter": "string",
    "callsType": "int",
    "callTimeFilterType": "int",
    "callTimeFilterFrom": "string",
    "callTimeFilterTo": "string",
    "hidePcalls": "bool",
}
# The pattern the published description gives for these path parameters.
_DATE_TIME = re.compile(
    r"^[0-9]{4,}-(0[1-9]|1[012])-(0[1-9]|[12][0-9]|3[01])T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]"
    r"([.][0-9]{1,12})?(Z|[+-][0-9][0-9]:[0-9][0-9])$"
)
_INT32 = re.compile(r"^-?[0-9]{1,10}$")
_ARGUMENT = re.compile(r"(?P<name>[A-Za-z]+)=(?P<value>'(?:[^']|'')*'|[^,']*)(?:,|$)")
_ORDERS = {"StartTime": "StartTime", "StartTime asc": "StartTime", "StartTime desc": "StartTime"}
_CONTENT_TYPE = "application/json; odata.metadata=minimal; odata.streaming=true; charset=utf-8"

# (caller ID, display name, minutes ago, answered); all inbound from the trunk to extension 100.
SEED_CALLS: tuple[tuple[str, str | None, int, bool], ...] = (
    ("+15550100199", None, 30, False),  # blacklisted exactly: still calling
    ("+15550100199", None, 95, False),
    ("+15550100199", None, 400, False),
    ("+447700900123", "Acme Surveys", 12, False),
    ("+447700900123", "Acme Surveys", 70, True),
    ("+447700900123", "Acme Surveys", 180, False),
    ("+447700900123", "Acme Surveys", 600, False),
    ("+441632960001", "Jeremy", 45, False),  # blocked by the seeded pattern *eremy, on the name
    ("+441632960001", "Jeremy", 300, True),
    ("+12025550173", "Dana Client", 20, True),
    ("+4930901820", None, 30 * 60, False),  # 30 hours ago: outside the default 24-hour window
)


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def _refused(error: _Refused) -> Response:
    detail = {"code": "WARNINGS.XAPI.INVALID", "message": error.message}
    body = {"error": {"code": "", "message": error.message, "details": [detail]}}
    return JSONResponse(body, status_code=error.status, media_type="application/json")


@dataclass
class CallLog:
    """The simulated call log: its rows, newest last, and the time they were seeded relative to."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    # With the sandbox's call_log_supported=False: True answers as some ASP.NET servers do for an unknown
    # function, a 400 saying the segment was not found, instead of a 404.
    unknown_as_400: bool = False
    _next: int = 1

    def reset(self, *, seed: bool) -> None:
        """Empty, or the seeded calls placed relative to now (so that they fall in "the last 24 hours")."""
        self.rows.clear()
        self._next = 1
        self.unknown_as_400 = False
        if seed:
            now = datetime.now(UTC)
            for caller_id, name, minutes, answered in SEED_CALLS:
                self.add_call(caller_id, name=name, at=now - timedelta(minutes=minutes), answered=answered)
            # An outbound call and an internal one: neither is an inbound caller.
            self.add_call("100", name="Reception", at=now - timedelta(minutes=15), direction="Outbound")
            self.add_call("101", name="Sales", at=now - timedelta(minutes=16), direction="Internal")

    def add_call(
        self,
        caller_id: str | None,
        *,
        name: str | None = None,
        at: datetime | None = None,
        answered: bool = False,
        direction: str = "Inbound",
        transferred_to: str | None = None,
    ) -> str:
        """Log one call and return its call history id; `transferred_to` adds a second, answered segment
        (a call put through to that extension), as 3CX logs a transfer."""
        started = (at or datetime.now(UTC)).astimezone(UTC)
        history_id = f"{self._next:08x}-0000-4000-8000-{self._next:012x}"
        segments = [("100", answered and transferred_to is None, 1)]
        if transferred_to is not None:
            segments.append((transferred_to, True, 2))
        for offset, (destination, segment_answered, indent) in enumerate(segments):
            self.rows.append(
                _row(
                    self._next,
                    history_id,
                    started + timedelta(seconds=20 * offset),
                    caller_id,
                    name,
                    destination,
                    segment_answered,
                    direction,
                    indent,
                )
            )
            self._next += 1
        return history_id

    def answer(
        self, segment: str, options: dict[str, str], page_cap: int | None, supported: bool
    ) -> Response:
        """The function's answer for one request (`segment` as it arrived, percent-encoded); a PBX before
        V20 Update 6 (`supported` false) does not know the function."""
        try:
            if not supported:
                status = 400 if self.unknown_as_400 else 404
                raise _Refused(status, "Resource not found for the segment 'Pbx.GetCallLogData'.")
            arguments = _arguments(segment)
            rows = self._select(arguments, options)
        except _Refused as error:
            return _refused(error)
        total = len(rows)
        skip = int(options.get("$skip") or 0)
        top = int(options["$top"]) if "$top" in options else None
        size = top if page_cap is None or (top is not None and top < page_cap) else page_cap
        rows = rows[skip:] if size is None else rows[skip : skip + size]
        body: dict[str, Any] = {"@odata.context": "/xapi/v1/$metadata#Collection(Pbx.CallLogData)"}
        if options.get("$count", "false").lower() == "true":
            body["@odata.count"] = total
        body["value"] = rows
        return Response(
            json.dumps(body, ensure_ascii=False).encode(), 200, {"OData-Version": "4.0"}, _CONTENT_TYPE
        )

    def _select(self, arguments: dict[str, str], options: dict[str, str]) -> list[dict[str, Any]]:
        for name in ("$filter", "$search", "$select", "$expand"):
            if name in options:
                raise _Refused(400, f"The sandbox's call log does not support {name}.")
        for name in ("$top", "$skip"):
            if name in options and not options[name].isdigit():
                raise _Refused(
                    400, f"Invalid value '{options[name]}' for {name}; it must be a non-negative integer."
                )
        order = options.get("$orderby", "StartTime")
        if order not in _ORDERS:
            raise _Refused(
                400, f"Invalid $orderby '{order}' (the sandbox orders the call log by StartTime only)."
            )
        start = datetime.fromisoformat(arguments["periodFrom"])
        end = datetime.fromisoformat(arguments["periodTo"])
        rows = [r for r in self.rows if start <= _started(r) < end]
        rows.sort(key=lambda r: (_started(r), r["SegmentId"]), reverse=order.endswith("desc"))
        return rows


def _started(row: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(row["StartTime"])


def _arguments(segment: str) -> dict[str, str]:
    """The function's parameters, validated as the PBX would; date-times as given."""
    try:
        text = unquote(segment, errors="strict")
    except UnicodeDecodeError:
        raise _Refused(400, "The function parameters are not valid UTF-8 once percent-decoded.") from None
    if not text.startswith(f"{FUNCTION_PATH}(") or not text.endswith(")"):
        raise _Refused(404, f"No resource at /xapi/v1/{text[:200]}.")
    inner = text[len(FUNCTION_PATH) + 1 : -1]
    arguments: dict[str, str] = {}
    position = 0
    while position < len(inner):
        match = _ARGUMENT.match(inner, position)
        if match is None:
            raise _Refused(
                400, f"The function parameters are malformed at position {position}: '{inner[:200]}'."
            )
        name, value = match["name"], match["value"]
        if name not in _PARAMETERS or name in arguments:
            raise _Refused(400, f"The parameter '{name}' is unknown or given twice for GetCallLogData.")
        arguments[name] = _checked(name, value)
        position = match.end()
    missing = [p for p in _PARAMETERS if p not in arguments]
    if missing:
        raise _Refused(
            404, f"No function GetCallLogData takes these parameters (missing {', '.join(missing)})."
        )
    return arguments


def _checked(name: str, value: str) -> str:
    kind = _PARAMETERS[name]
    valid = {
        "date-time": _DATE_TIME.match(value) is not None,
        "int": _INT32.match(value) is not None and -(2**31) <= int(value) < 2**31,
        "string": value == "null" or (len(value) >= 2 and value[0] == value[-1] == "'"),
        "bool": value in ("true", "false"),
    }[kind]
    if not valid:
        raise _Refused(
            400, f"The value '{value[:100]}' is not a valid {kind} literal for the parameter '{name}'."
        )
    return value


def _row(
    number: int,
    history_id: str,
    started: datetime,
    caller_id: str | None,
    name: str | None,
    destination: str,
    answered: bool,
    direction: str,
    indent: int,
) -> dict[str, Any]:
    """One segment, with the properties and types of the published `Pbx.CallLogData`."""
    talking = "PT1M5S" if answered else "PT0S"
    return {
        "MainCallHistoryId": history_id,
        "CallHistoryId": history_id,
        "CdrId": f"cdr-{number:08d}",
        "CallId": number,
        "Indent": indent,
        "SegmentId": number,
        "StartTime": started.isoformat().replace("+00:00", "Z"),
        "SourceType": 1 if direction == "Inbound" else 0,
        "SourceDn": "10000" if direction == "Inbound" else caller_id,
        "SourceCallerId": caller_id,
        "SourceDisplayName": name,
        "DestinationType": 0,
        "DestinationDn": destination,
        "DestinationCallerId": destination,
        "DestinationDisplayName": f"Extension {destination}",
        "ActionType": 1,
        "RingingDuration": "PT8S",
        "TalkingDuration": talking,
        "Answered": answered,
        "Direction": direction,
        "CallType": "Phone",
        "Status": "Answered" if answered else "Unanswered",
        "Reason": None,
        "Recordings": [],
    }
