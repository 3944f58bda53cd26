"""The sandbox PBX: a faithful XAPI simulator for BlackListNumbers, as an ASGI app.

It behaves as the published XAPI contract says (string keys as quoted literals, 204s
without bodies, OData error bodies, `{"ids": [...]}` bulk deletes, one live token per API
client) and adds switches that tests use to inject faults. It keeps everything in memory.

Some behaviour of a real PBX is unknown (page caps, nextLinks, `$filter` limits, operator
support), so each variant a real ASP.NET OData server can show is a switch, and the client
is tested against all of them.
"""

from __future__ import annotations

import json
import math
import re
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qsl, unquote

import anyio
import jwt
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from ..odata import parse_string_literal, query
from .calllog import FUNCTION_PATH, CallLog
from .filters import CompiledFilter, FilterError, compile_filter

SANDBOX_CLIENT_ID = "sandbox"
SANDBOX_CLIENT_SECRET = "sandbox-api-key"  # not a secret: it opens only this simulator

PROPERTIES = ("Id", "CallerId", "Description")
_VARIANTS = (
    "token_lifetime",
    "clock_offset",
    "latency",
    "page_cap",
    "next_link",
    "filter_node_limit",
    "supports_in",
    "ignore_skip",
    "supports_count",
    "ignore_filter",
    "echo_form_in_errors",
    "echo_headers_in_errors",
    "call_log_supported",
)
_PROPERTY_SET = frozenset(PROPERTIES)
_API_PREFIX = "/xapi/v1/"
_ENTITY_SEGMENT = re.compile(r"^BlackListNumbers\((?P<key>.*)\)$", re.DOTALL)
_ODATA_CONTENT_TYPE = "application/json; odata.metadata=minimal; odata.streaming=true; charset=utf-8"
_QUERY_OPTIONS = frozenset(
    {"$filter", "$top", "$skip", "$count", "$orderby", "$select", "$search", "$expand"}
)

SEED_ENTRIES: tuple[tuple[str, str | None], ...] = (
    ("+442071838750", "Robocaller: energy switching offers"),
    ("+15550100199", "Repeated silent calls to reception"),
    ("+4930123456789", "Debt collector, wrong number"),
    ("*eremy", "Blocks every caller ID ending in 'eremy'"),
    ("Anonymous", "Withheld numbers to the sales queue"),
    ("+61291234567", None),
    ("0800123456", "Fax machine dialling the main line"),
    ("+33142685300", "Survey calls"),
    ("+390612345678", "Spam: 'you have won a prize'"),
    ("+18005550123", "Extended warranty scam"),
    ("+442079460000", "Harassing caller, ticket #4411"),
    ("John O'Brien", "Name-based entry (caller ID name)"),
)

BodyKind = Literal["odata", "html", "truncated", "empty", "text"]


class _Entries(dict[str, dict[str, Any]]):
    """The entries by Id, with an index by CallerId kept up to date by every way the dict changes.

    Refusing a duplicate caller ID on create must not scan the blacklist: at 10,000 entries that
    scan dominated a bulk add. An entry's CallerId changed in place must go through `recaller`.
    """

    def __init__(self) -> None:
        super().__init__()
        self.by_caller_id: dict[str, set[str]] = {}

    def __setitem__(self, key: str, entry: dict[str, Any]) -> None:
        if key in self:
            self._unindex(key)
        super().__setitem__(key, entry)
        self.by_caller_id.setdefault(entry["CallerId"], set()).add(key)

    def __delitem__(self, key: str) -> None:
        self._unindex(key)
        super().__delitem__(key)

    def pop(self, key: str, *default: Any) -> Any:
        if key in self:
            self._unindex(key)
        return super().pop(key, *default)

    def clear(self) -> None:
        super().clear()
        self.by_caller_id.clear()

    def recaller(self, key: str, caller_id: str) -> None:
        """Change an entry's CallerId, index included."""
        self._unindex(key)
        self[key]["CallerId"] = caller_id
        self.by_caller_id.setdefault(caller_id, set()).add(key)

    def _unindex(self, key: str) -> None:
        ids = self.by_caller_id.get(self[key]["CallerId"])
        if ids is not None:
            ids.discard(key)
            if not ids:
                del self.by_caller_id[self[key]["CallerId"]]


@dataclass
class Fault:
    """Answer the next `times` matching requests with this instead of the real thing.

    `status=200` with a `body` of html/truncated/empty gives a garbage success answer.
    `passthrough=True` only waits `delay` and then answers normally: a slow PBX that still
    applies the change after the client has given up.
    """

    status: int = 503
    body: BodyKind = "odata"
    times: int = 1
    path: str = "/xapi/"
    method: str | None = None
    retry_after: str | None = None
    delay: float = 0.0
    passthrough: bool = False

    def matches(self, method: str, path: str) -> bool:
        return self.times > 0 and path.startswith(self.path) and self.method in (None, method)


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    origin: str = ""  # scheme://host:port as the client addressed it, for absolute nextLinks


@dataclass(frozen=True)
class RecordedResponse:
    status: int
    headers: dict[str, str]
    body: bytes


class ODataError(Exception):
    def __init__(self, status: int, code: str, message: str, details: Iterable[dict[str, str]] = ()) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, list(details)

    def response(self, echo: str = "") -> Response:
        error: dict[str, Any] = {"code": self.code, "message": self.message + echo}
        if self.details:
            error["details"] = self.details
        return JSONResponse({"error": error}, status_code=self.status, media_type="application/json")


def _bad_request(message: str, token: str = "WARNINGS.XAPI.INVALID", target: str | None = None) -> ODataError:
    detail = {"code": token, "message": message}
    if target is not None:
        detail["target"] = target
    return ODataError(400, "", message, [detail])


def _not_found(key: str) -> ODataError:
    return ODataError(404, "WARNINGS.XAPI.NOT_FOUND", f"BlackListNumber with key '{key}' was not found.")


@dataclass
class Sandbox:
    """State and switches of one simulated PBX; `app` is its ASGI entry point."""

    api_clients: dict[str, str] = field(default_factory=lambda: {SANDBOX_CLIENT_ID: SANDBOX_CLIENT_SECRET})
    token_lifetime: float = 3600.0
    # Seconds the PBX's clock is ahead of (negative: behind) this machine's: its JWTs' iat/exp follow it.
    clock_offset: float = 0.0
    latency: float = 0.0
    max_entries: int = 50_000
    seed: bool = True
    # Server variants; reset() restores what the sandbox was built with.
    page_cap: int | None = None  # at most this many records per answer, whatever $top says
    next_link: bool = True  # with page_cap: announce the rest by @odata.nextLink (False: truncate silently)
    filter_node_limit: int | None = 100  # ASP.NET Core OData's default MaxNodeCount; None = no limit
    supports_in: bool = True  # False: the `in` operator is a 400, as on servers before OData 4.01
    ignore_skip: bool = False  # answer from the first record whatever $skip says
    supports_count: bool = True  # False: answers carry no @odata.count, whatever $count says
    ignore_filter: bool = False  # validate $filter but answer as if there were none (a lying server)
    # A careless PBX (or proxy) quoting the request back in its error texts: the submitted body (the
    # token endpoint's form holds the API key) and the request headers (the bearer token).
    echo_form_in_errors: bool = False
    echo_headers_in_errors: bool = False
    call_log_supported: bool = True  # False: a PBX before V20 Update 6, without GetCallLogData (404)
    call_log: CallLog = field(default_factory=CallLog)
    entries: _Entries = field(default_factory=_Entries)
    faults: list[Fault] = field(default_factory=list)
    requests: list[RecordedRequest] = field(default_factory=list)
    exchanges: list[tuple[RecordedRequest, RecordedResponse]] = field(default_factory=list)
    record_exchanges: bool = False
    # Requests being answered right now, and the most at once since the last reset: tests assert that a
    # bulk operation never has more than THREECX_MAX_IN_FLIGHT outstanding (counted around the latency).
    in_flight: int = 0
    in_flight_peak: int = 0
    # Called with each request before it is answered: tests play concurrent editors with them.
    hooks: list[Callable[[RecordedRequest], None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._signing_key = secrets.token_bytes(32)
        self._configured = {name: getattr(self, name) for name in _VARIANTS}
        self._configured_api_clients = dict(self.api_clients)
        self.reset()

    # -- switches for tests -----------------------------------------------------------------

    def reset(self) -> None:
        """Back to the state it was built with: seeded entries, no faults or hooks, no tokens, empty logs."""
        self.entries.clear()
        self.faults.clear()
        self.requests.clear()
        self.exchanges.clear()
        self.hooks.clear()
        self.in_flight_peak = self.in_flight
        for name, value in self._configured.items():
            setattr(self, name, value)
        self.api_clients = dict(self._configured_api_clients)  # a test may have changed a key
        self._live_token_ids: dict[str, str] = {}
        self._next_id = 1
        if self.seed:
            for caller_id, description in SEED_ENTRIES:
                self.add(caller_id, description)
        self.call_log.reset(seed=self.seed)

    def add(
        self, caller_id: str, description: str | None = None, entry_id: str | None = None
    ) -> dict[str, Any]:
        if entry_id is None:
            entry_id = str(self._next_id)
            self._next_id += 1
        entry = {"Id": entry_id, "CallerId": caller_id, "Description": description}
        self.entries[entry_id] = entry
        return entry

    def inject(self, *faults: Fault) -> None:
        self.faults.extend(faults)

    def revoke_tokens(self) -> None:
        """As if another process minted a token for each API client: the ones in use stop working."""
        self._live_token_ids = {client_id: secrets.token_hex(8) for client_id in self.api_clients}

    def count(self, method: str, path_prefix: str = "") -> int:
        return sum(1 for r in self.requests if r.method == method and r.path.startswith(path_prefix))

    @property
    def token_requests(self) -> int:
        return self.count("POST", "/connect/token")

    # -- ASGI -------------------------------------------------------------------------------

    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        request = Request(scope, receive)
        raw_path = scope.get("raw_path", scope["path"].encode()).decode("latin-1")
        recorded = RecordedRequest(
            method=request.method,
            path=raw_path,
            query=scope.get("query_string", b"").decode("latin-1"),
            headers={k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]},
            body=await request.body(),
            origin=str(request.base_url).rstrip("/"),
        )
        self.requests.append(recorded)
        for hook in list(self.hooks):
            hook(recorded)
        response = await self._answer(recorded)
        if self.record_exchanges:
            self.exchanges.append(
                (
                    recorded,
                    RecordedResponse(response.status_code, dict(response.headers), bytes(response.body)),
                )
            )
        await response(scope, receive, send)

    async def _answer(self, req: RecordedRequest) -> Response:
        self.in_flight += 1
        self.in_flight_peak = max(self.in_flight_peak, self.in_flight)
        try:
            return await self._answer_now(req)
        finally:
            self.in_flight -= 1

    async def _answer_now(self, req: RecordedRequest) -> Response:
        if self.latency:
            await anyio.sleep(self.latency)
        fault = next((f for f in self.faults if f.matches(req.method, req.path)), None)
        if fault is not None:
            fault.times -= 1
            if fault.delay:
                await anyio.sleep(fault.delay)
            if not fault.passthrough:
                return _fault_response(fault, self._echo(req))
        try:
            if req.path == "/connect/token" and req.method == "POST":
                return self._token(req)
            if not req.path.startswith(_API_PREFIX):
                raise ODataError(404, "", f"No resource at {req.path}.")
            self._authorize(req)
            return self._route(req)
        except ODataError as error:
            return error.response(self._echo(req))

    # -- token endpoint ---------------------------------------------------------------------

    def _token(self, req: RecordedRequest) -> Response:
        form = dict(parse_qsl(req.body.decode("utf-8", "replace")))
        if form.get("grant_type") != "client_credentials":
            return self._oauth_error("unsupported_grant_type", req)
        client_id = form.get("client_id", "")
        expected = self.api_clients.get(client_id)
        if expected is None or not secrets.compare_digest(
            form.get("client_secret", "").encode(), expected.encode()
        ):
            return self._oauth_error("invalid_client", req)
        now = time.time() + self.clock_offset
        token_id = self._live_token_ids[client_id] = secrets.token_hex(8)  # the previous one dies
        token = jwt.encode(
            {"sub": client_id, "iat": int(now), "exp": math.ceil(now + self.token_lifetime), "jti": token_id},
            self._signing_key,
            algorithm="HS256",
        )
        return JSONResponse(
            {"access_token": token, "token_type": "Bearer", "expires_in": int(self.token_lifetime)}
        )

    def _oauth_error(self, error: str, req: RecordedRequest) -> Response:
        echo = self._echo(req)
        body = (
            {"error": error, "error_description": f"The request was refused.{echo}"}
            if echo
            else {"error": error}
        )
        return JSONResponse(body, status_code=400)

    def _echo(self, req: RecordedRequest) -> str:
        """What the echo switches add to an error text: the request's body and headers, verbatim."""
        parts = [f"Request body: {req.body.decode('utf-8', 'replace')}"] if self.echo_form_in_errors else []
        if self.echo_headers_in_errors:
            parts.append("Request headers: " + "; ".join(f"{k}: {v}" for k, v in req.headers.items()))
        return "".join(f" {part}" for part in parts)

    def _authorize(self, req: RecordedRequest) -> None:
        scheme, _, token = req.headers.get("authorization", "").partition(" ")
        try:
            if scheme.lower() != "bearer":
                raise jwt.InvalidTokenError("no bearer token")
            # Expiry is judged by the PBX's own (possibly wrong) clock, as a real PBX does.
            claims = jwt.decode(
                token,
                self._signing_key,
                algorithms=["HS256"],
                options={"verify_exp": False, "verify_iat": False},
            )
            if claims.get("jti") != self._live_token_ids.get(claims.get("sub", "")):
                raise jwt.InvalidTokenError("superseded")
            if not time.time() + self.clock_offset < float(claims.get("exp", 0)):
                raise jwt.ExpiredSignatureError("expired")
        except jwt.PyJWTError:
            raise ODataError(401, "", "Unauthorized") from None

    # -- XAPI -------------------------------------------------------------------------------

    def _route(self, req: RecordedRequest) -> Response:
        segment = req.path[len(_API_PREFIX) :]
        if segment == "BlackListNumbers":
            if req.method == "GET":
                return self._list(req)
            if req.method == "POST":
                return self._create(req)
        elif segment == "BlackListNumbers/Pbx.BulkNumbersDelete" and req.method == "POST":
            return self._bulk_delete(req)
        elif segment.startswith(FUNCTION_PATH) and req.method == "GET":
            return self.call_log.answer(
                segment, _query(req, _QUERY_OPTIONS), self.page_cap, self.call_log_supported
            )
        elif (match := _ENTITY_SEGMENT.match(segment)) and "/" not in match["key"]:
            key = self._key(match["key"])
            if req.method == "GET":
                return self._entity_response(self._entry(key), _query(req, {"$select", "$expand"}))
            if req.method == "PATCH":
                return self._patch(key, req)
            if req.method == "DELETE":
                self._entry(key)
                del self.entries[key]
                return Response(status_code=204)
        else:
            raise ODataError(404, "", f"No resource at {req.path}.")
        raise ODataError(405, "", f"{req.method} is not allowed on {segment}.")

    @staticmethod
    def _key(raw: str) -> str:
        try:
            return parse_string_literal(unquote(raw, errors="strict"))
        except (ValueError, UnicodeDecodeError):
            raise _bad_request(
                f"The key value ({unquote(raw, errors='replace')[:100]}) is not a valid Edm.String literal; "
                "string keys must be quoted, e.g. ('42')."
            ) from None

    def _entry(self, key: str) -> dict[str, Any]:
        entry = self.entries.get(key)
        if entry is None:
            raise _not_found(key)
        return entry

    def _list(self, req: RecordedRequest) -> Response:
        options = _query(req, _QUERY_OPTIONS)
        rows = list(self.entries.values())
        if "$filter" in options:
            compiled = self._compile(options["$filter"])
            if not self.ignore_filter:
                rows = [r for r in rows if compiled.matches(r)]
        if "$search" in options:
            needle = options["$search"].strip('"').lower()
            rows = [
                r
                for r in rows
                if needle in r["CallerId"].lower() or needle in (r["Description"] or "").lower()
            ]
        for prop, descending in reversed(_orderby(options.get("$orderby", ""))):
            rows.sort(key=_order_key(prop), reverse=descending)
        total = len(rows)
        skip = _non_negative(options, "$skip") or 0
        top = _non_negative(options, "$top")
        size = top if self.page_cap is None or (top is not None and top < self.page_cap) else self.page_cap
        start = 0 if self.ignore_skip else skip
        rows = rows[start:] if size is None else rows[start : start + size]
        body: dict[str, Any] = {"@odata.context": "/xapi/v1/$metadata#BlackListNumbers"}
        count = options.get("$count", "false").lower()
        if count not in ("true", "false"):
            raise _bad_request(f"'{options['$count']}' is not a valid value for $count; use true or false.")
        if count == "true" and self.supports_count:
            body["@odata.count"] = total
        select = _select(options)
        body["value"] = [{p: r[p] for p in select} for r in rows]
        cut_by_cap = size is not None and size != top and len(rows) == size and skip + size < total
        if cut_by_cap and self.next_link:
            # As ASP.NET does with a PageSize: the same query moved on by $skip, $top reduced to what is left.
            rest = dict(options, **{"$skip": str(skip + len(rows))})
            if top is not None:
                rest["$top"] = str(top - len(rows))
            body["@odata.nextLink"] = f"{req.origin}{req.path}?{query(rest)}"
        return _odata_json(body)

    def _compile(self, text: str) -> CompiledFilter:
        try:
            compiled = compile_filter(text, _PROPERTY_SET, allow_in=self.supports_in)
        except FilterError as exc:
            raise _bad_request(str(exc)) from None
        limit = self.filter_node_limit
        if limit is not None and compiled.nodes > limit:
            raise _bad_request(
                f"The node count limit of '{limit}' has been exceeded. To increase the limit, set the "
                "'MaxNodeCount' property on EnableQueryAttribute or ODataValidationSettings."
            )
        return compiled

    def _entity_response(self, entry: dict[str, Any], options: dict[str, str], status: int = 200) -> Response:
        body = {"@odata.context": "/xapi/v1/$metadata#BlackListNumbers/$entity"}
        body.update({p: entry[p] for p in _select(options)})
        return _odata_json(body, status)

    def _create(self, req: RecordedRequest) -> Response:
        body = _entity_body(req, required=("CallerId",))
        key = body.get("Id")
        if key is not None and key in self.entries:
            raise _bad_request(f"An entry with Id '{key}' already exists.", "WARNINGS.XAPI.DUPLICATE", "Id")
        self._check_caller_id(body["CallerId"], except_key=None)
        if len(self.entries) >= self.max_entries:
            raise _bad_request("The blacklist is full.", "WARNINGS.BLACKLIST_NUMBER_LIMIT_EXCEEDED")
        entry = self.add(body["CallerId"], body.get("Description"), key)
        response = self._entity_response(entry, {}, status=201)
        response.headers["Location"] = f"/xapi/v1/BlackListNumbers('{entry['Id']}')"
        return response

    def _patch(self, key: str, req: RecordedRequest) -> Response:
        entry = self._entry(key)
        body = _entity_body(req, required=())
        if "Id" in body and body["Id"] != key:
            raise _bad_request("The key property Id cannot be changed.", target="Id")
        if "CallerId" in body:
            self._check_caller_id(body["CallerId"], except_key=key)
            self.entries.recaller(key, body["CallerId"])
        entry.update({k: v for k, v in body.items() if k not in ("Id", "CallerId")})
        return Response(status_code=204)

    def _check_caller_id(self, caller_id: str, except_key: str | None) -> None:
        if not caller_id.strip():
            raise _bad_request("CallerId is required.", "WARNINGS.XAPI.REQUIRED", "CallerId")
        if self.entries.by_caller_id.get(caller_id, set()) - {except_key}:
            raise _bad_request(
                f"Caller ID '{caller_id}' is already blacklisted.", "WARNINGS.XAPI.DUPLICATE", "CallerId"
            )

    def _bulk_delete(self, req: RecordedRequest) -> Response:
        body = _json_object(req)
        if set(body) != {"ids"} or not isinstance(body["ids"], list):
            raise _bad_request('The request body must be {"ids": [...]}.', target="ids")
        if not all(isinstance(i, str) for i in body["ids"]):
            raise _bad_request("Every id must be an Edm.String.", target="ids")
        for key in body["ids"]:
            self.entries.pop(key, None)
        return Response(status_code=204)


# -- request parsing helpers ------------------------------------------------------------------


def _query(req: RecordedRequest, allowed: frozenset[str] | set[str]) -> dict[str, str]:
    try:
        pairs = parse_qsl(req.query, keep_blank_values=True, strict_parsing=bool(req.query), errors="strict")
    except (ValueError, UnicodeDecodeError):
        raise _bad_request("The query string is malformed.") from None
    options: dict[str, str] = {}
    for name, value in pairs:
        if name.startswith("$") and name not in allowed:
            raise _bad_request(f"The query option '{name}' is not supported here.")
        if name in options:
            raise _bad_request(f"Query option '{name}' was specified more than once.")
        options[name] = value
    return options


def _non_negative(options: dict[str, str], name: str) -> int | None:
    if name not in options:
        return None
    value = options[name]
    if not value.isdigit():
        raise _bad_request(
            f"Invalid value '{value}' for {name} query option; it must be a non-negative integer."
        )
    return int(value)


def _orderby(text: str) -> list[tuple[str, bool]]:
    keys: list[tuple[str, bool]] = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        prop, _, direction = item.partition(" ")
        direction = direction.strip().lower() or "asc"
        if prop not in _PROPERTY_SET or direction not in ("asc", "desc"):
            raise _bad_request(f"Invalid $orderby item '{item}'.")
        keys.append((prop, direction == "desc"))
    return keys


def _order_key(prop: str) -> Callable[[dict[str, Any]], tuple[bool, str]]:
    """Nulls first, then ordinal string order: the order `gt`/`lt` in filters agree with."""
    return lambda r: (r[prop] is not None, r[prop] or "")


def _select(options: dict[str, str]) -> tuple[str, ...]:
    if not options.get("$select"):
        return PROPERTIES
    chosen = tuple(p.strip() for p in options["$select"].split(","))
    unknown = [p for p in chosen if p not in _PROPERTY_SET]
    if unknown:
        raise _bad_request(f"Could not find a property named '{unknown[0]}' on type 'Pbx.BlackListNumber'.")
    return chosen


def _json_object(req: RecordedRequest) -> dict[str, Any]:
    if "json" not in req.headers.get("content-type", ""):
        raise ODataError(415, "", "The request body must be application/json.")
    try:
        body = json.loads(req.body)
    except ValueError:
        raise _bad_request("The request body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise _bad_request("The request body must be a JSON object.")
    return body


def _entity_body(req: RecordedRequest, required: tuple[str, ...]) -> dict[str, Any]:
    body = {k: v for k, v in _json_object(req).items() if not k.startswith("@odata.")}
    for name, value in body.items():
        if name not in _PROPERTY_SET:
            raise _bad_request(
                f"The property '{name}' does not exist on type 'Pbx.BlackListNumber'.", target=name
            )
        if not (isinstance(value, str) or (value is None and name == "Description")):
            raise _bad_request(f"The value for property '{name}' must be an Edm.String.", target=name)
    for name in required:
        if name not in body:
            raise _bad_request(f"{name} is required.", "WARNINGS.XAPI.REQUIRED", name)
    return body


def _odata_json(body: dict[str, Any], status: int = 200) -> Response:
    return Response(
        json.dumps(body, ensure_ascii=False).encode("utf-8"),
        status_code=status,
        headers={"OData-Version": "4.0"},
        media_type=_ODATA_CONTENT_TYPE,
    )


def _fault_response(fault: Fault, echo: str = "") -> Response:
    headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
    if fault.body == "odata":
        message = {401: "Unauthorized", 403: "Forbidden", 429: "Too many requests"}.get(
            fault.status, "Fault injected"
        )
        error = {"error": {"code": str(fault.status), "message": message + echo}}
        return JSONResponse(error, status_code=fault.status, headers=headers)
    if fault.body == "html":
        html = (
            "<html><head><title>502 Bad Gateway</title></head><body><h1>Bad Gateway</h1>nginx</body></html>"
        )
        return Response(html, status_code=fault.status, headers=headers, media_type="text/html")
    if fault.body == "truncated":
        return Response('{"value": [{"Id": "1", "CallerId": "+4', fault.status, headers, "application/json")
    if fault.body == "text":
        return Response("Service temporarily unavailable", fault.status, headers, "text/plain")
    return Response(b"", fault.status, headers)
