"""The sandbox PBX answers like XAPI: raw HTTP requests against it on 127.0.0.1."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx2
import pytest
from threecx_mcp import odata
from threecx_mcp.sandbox import SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET, SEED_ENTRIES, Sandbox
from threecx_mcp.sandbox.filters import compile_filter
from threecx_mcp.sandbox.pbx import PROPERTIES, RecordedRequest

pytestmark = pytest.mark.anyio


@pytest.fixture
async def http(sandbox_url: str) -> AsyncIterator[httpx2.AsyncClient]:
    async with httpx2.AsyncClient(base_url=sandbox_url) as client:
        token = await client.post(
            "/connect/token",
            data={
                "client_id": SANDBOX_CLIENT_ID,
                "client_secret": SANDBOX_CLIENT_SECRET,
                "grant_type": "client_credentials",
            },
        )
        assert token.status_code == 200 and token.json()["token_type"] == "Bearer"
        client.headers["Authorization"] = f"Bearer {token.json()['access_token']}"
        yield client


async def test_token_endpoint_rejects_bad_credentials(sandbox_url: str, sandbox: Sandbox) -> None:
    async with httpx2.AsyncClient(base_url=sandbox_url) as client:
        bad = await client.post(
            "/connect/token",
            data={"client_id": "sandbox", "client_secret": "x", "grant_type": "client_credentials"},
        )
        assert bad.status_code == 400 and bad.json() == {"error": "invalid_client"}
        assert (await client.get("/xapi/v1/BlackListNumbers")).status_code == 401


async def test_only_the_newest_token_is_alive(sandbox_url: str, http: httpx2.AsyncClient) -> None:
    first = http.headers["Authorization"]
    assert (await http.get("/xapi/v1/BlackListNumbers")).status_code == 200
    async with httpx2.AsyncClient(base_url=sandbox_url) as other:
        await other.post(
            "/connect/token",
            data={
                "client_id": SANDBOX_CLIENT_ID,
                "client_secret": SANDBOX_CLIENT_SECRET,
                "grant_type": "client_credentials",
            },
        )
    assert (await http.get("/xapi/v1/BlackListNumbers", headers={"Authorization": first})).status_code == 401


@pytest.mark.parametrize(
    ("query", "caller_ids"),
    [
        ("CallerId eq 'Anonymous'", ["Anonymous"]),
        ("CallerId eq 'John O''Brien'", ["John O'Brien"]),
        ("startswith(CallerId,'+44') and not contains(Description,'ticket')", ["+442071838750"]),
        ("contains(tolower(Description),'spam') or endswith(CallerId,'eremy')", ["*eremy", "+390612345678"]),
        ("Description eq null", ["+61291234567"]),
        ("(CallerId ne 'Anonymous') and startswith(CallerId,'A')", []),
        ("Id in ('1','4','no-such-id') and CallerId ne '*eremy'", ["+442071838750"]),
        ("Id in ('12') or Id eq '2'", ["+15550100199", "John O'Brien"]),
        ("CallerId ge 'A' and CallerId lt 'K'", ["Anonymous", "John O'Brien"]),
        ("CallerId le '+2' and CallerId gt '+15550100199'", ["+18005550123"]),
        ("Description gt 'a'", []),  # null is never greater or smaller than anything
    ],
)
async def test_filter(http: httpx2.AsyncClient, query: str, caller_ids: list[str]) -> None:
    response = await http.get("/xapi/v1/BlackListNumbers", params={"$filter": query})
    assert response.status_code == 200, response.text
    assert sorted(r["CallerId"] for r in response.json()["value"]) == caller_ids


async def test_paging_count_order_select_search(http: httpx2.AsyncClient) -> None:
    response = await http.get(
        "/xapi/v1/BlackListNumbers",
        params={
            "$top": "2",
            "$skip": "1",
            "$count": "true",
            "$orderby": "CallerId desc",
            "$select": "CallerId",
        },
    )
    body = response.json()
    ordered = sorted((c for c, _ in SEED_ENTRIES), reverse=True)
    assert body["@odata.count"] == len(SEED_ENTRIES)
    assert body["value"] == [{"CallerId": ordered[1]}, {"CallerId": ordered[2]}]
    found = (await http.get("/xapi/v1/BlackListNumbers", params={"$search": "SCAM"})).json()["value"]
    assert [r["CallerId"] for r in found] == ["+18005550123"]


@pytest.mark.parametrize(
    ("params", "words"),
    [
        ({"$filter": "CallerId has 'a'"}, "Unsupported operator"),
        ({"$filter": "Id in ('1',CallerId)"}, "only literals"),
        ({"$filter": "Number eq '1'"}, "Could not find a property named 'Number'"),
        ({"$filter": "contains(CallerId,'x'"}, "expected ')'"),
        ({"$top": "-1"}, "non-negative integer"),
        ({"$orderby": "Nope"}, "Invalid $orderby"),
        ({"$select": "Secret"}, "Could not find a property"),
        ({"$count": "maybe"}, "$count"),
        ({"$apply": "x"}, "not supported"),
    ],
)
async def test_bad_query_options_are_400_odata_errors(
    http: httpx2.AsyncClient, params: dict[str, str], words: str
) -> None:
    response = await http.get("/xapi/v1/BlackListNumbers", params=params)
    assert response.status_code == 400
    assert words in response.json()["error"]["message"]


async def test_entity_by_quoted_key_and_204s(http: httpx2.AsyncClient, sandbox: Sandbox) -> None:
    assert (await http.get("/xapi/v1/BlackListNumbers('1')")).json()["CallerId"] == SEED_ENTRIES[0][0]
    patched = await http.patch("/xapi/v1/BlackListNumbers('1')", json={"Description": "x"})
    assert patched.status_code == 204 and patched.content == b""
    bulk = await http.post("/xapi/v1/BlackListNumbers/Pbx.BulkNumbersDelete", json={"ids": ["1", "2"]})
    assert bulk.status_code == 204 and bulk.content == b""
    deleted = await http.delete("/xapi/v1/BlackListNumbers('3')")
    assert deleted.status_code == 204
    assert set(sandbox.entries).isdisjoint({"1", "2", "3"})
    created = await http.post("/xapi/v1/BlackListNumbers", json={"CallerId": "+15550000003"})
    assert created.status_code == 201 and created.json()["CallerId"] == "+15550000003"


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "words"),
    [
        ("GET", "/xapi/v1/BlackListNumbers(1)", None, 400, "must be quoted"),
        ("GET", "/xapi/v1/BlackListNumbers('a'b')", None, 400, "not a valid Edm.String"),
        ("GET", "/xapi/v1/BlackListNumbers('999')", None, 404, "was not found"),
        ("PATCH", "/xapi/v1/BlackListNumbers('1')", {"Callerid": "x"}, 400, "does not exist"),
        ("PATCH", "/xapi/v1/BlackListNumbers('1')", {"CallerId": 5}, 400, "Edm.String"),
        ("PATCH", "/xapi/v1/BlackListNumbers('1')", {"CallerId": "Anonymous"}, 400, "already blacklisted"),
        ("POST", "/xapi/v1/BlackListNumbers", {"Description": "x"}, 400, "required"),
        ("POST", "/xapi/v1/BlackListNumbers/Pbx.BulkNumbersDelete", {"Ids": ["1"]}, 400, "ids"),
        ("POST", "/xapi/v1/BlackListNumbers/Pbx.BulkNumbersDelete", {"ids": [1]}, 400, "Edm.String"),
        ("GET", "/xapi/v1/Users", None, 404, "No resource"),
    ],
)
async def test_invalid_requests_get_odata_errors(
    http: httpx2.AsyncClient, sandbox: Sandbox, method: str, path: str, body: object, status: int, words: str
) -> None:
    before = {k: dict(v) for k, v in sandbox.entries.items()}
    response = await http.request(method, path, json=body)
    assert response.status_code == status
    error = response.json()["error"]
    assert words in error["message"]
    assert sandbox.entries == before


async def test_each_api_client_has_its_own_live_token(sandbox_url: str, sandbox: Sandbox) -> None:
    sandbox.api_clients["second"] = "second-key"
    async with httpx2.AsyncClient(base_url=sandbox_url) as client:
        tokens = {}
        for client_id, secret in (("sandbox", SANDBOX_CLIENT_SECRET), ("second", "second-key")):
            form = {"client_id": client_id, "client_secret": secret, "grant_type": "client_credentials"}
            tokens[client_id] = (await client.post("/connect/token", data=form)).json()["access_token"]
        for token in tokens.values():
            response = await client.get(
                "/xapi/v1/BlackListNumbers", headers={"Authorization": f"Bearer {token}"}
            )
            assert response.status_code == 200
    del sandbox.api_clients["second"]


ALL = frozenset(PROPERTIES)


@pytest.mark.parametrize(
    ("text", "nodes"),
    [
        ("Id eq 'x'", 4),  # binary operator, property access, its range variable, constant
        ("contains(tolower(CallerId),'a')", 5),
        ("not (Id eq 'a')", 5),
        ("Id in ('a','b','c')", 1),  # ASP.NET does not visit an `in` node's operands
        ("(Id eq 'a') or (Id eq 'b') and (CallerId gt 'c')", 14),
        ("Description eq null", 4),
    ],
)
def test_filters_are_measured_as_aspnet_counts_nodes(text: str, nodes: int) -> None:
    assert compile_filter(text, ALL).nodes == nodes


def test_node_counts_agree_with_the_clients_own_arithmetic() -> None:
    for clauses in (1, 20, 21):
        built = odata.any_of([odata.eq("Id", str(i)) for i in range(clauses)])
        assert compile_filter(built.text, ALL).nodes == built.nodes == 5 * clauses - 1


async def test_the_node_limit_refuses_21_or_clauses_as_aspnet_does(
    http: httpx2.AsyncClient, sandbox: Sandbox
) -> None:
    def ask(clauses: int) -> dict[str, str]:
        return {"$filter": " or ".join(f"(Id eq '{i}')" for i in range(1, clauses + 1))}

    ok = await http.get("/xapi/v1/BlackListNumbers", params=ask(20))  # 99 nodes
    assert ok.status_code == 200 and len(ok.json()["value"]) == 12
    refused = await http.get("/xapi/v1/BlackListNumbers", params=ask(21))  # 104 nodes
    assert refused.status_code == 400
    assert "The node count limit of '100' has been exceeded" in refused.json()["error"]["message"]
    assert "MaxNodeCount" in refused.json()["error"]["message"]
    sandbox.filter_node_limit = None
    assert (await http.get("/xapi/v1/BlackListNumbers", params=ask(21))).status_code == 200


async def test_without_in_support_in_is_an_unknown_operator(
    http: httpx2.AsyncClient, sandbox: Sandbox
) -> None:
    sandbox.supports_in = False
    response = await http.get("/xapi/v1/BlackListNumbers", params={"$filter": "Id in ('1')"})
    assert response.status_code == 400 and "Unsupported operator 'in'" in response.json()["error"]["message"]


async def test_comparisons_follow_the_order_of_orderby(http: httpx2.AsyncClient, sandbox: Sandbox) -> None:
    """Keyset paging relies on `Id gt x` returning exactly what `$orderby=Id` puts after x."""
    for key in ("10", "9", "a", "B", "Zoë", "é", "100", "1 "):
        sandbox.add("+1555", None, entry_id=key)
    ordered = [
        r["Id"]
        for r in (await http.get("/xapi/v1/BlackListNumbers", params={"$orderby": "Id"})).json()["value"]
    ]
    assert ordered == sorted(sandbox.entries)
    for position, key in enumerate(ordered):
        params = {"$filter": f"Id gt {odata.string_literal(key)}", "$orderby": "Id"}
        after = [
            r["Id"] for r in (await http.get("/xapi/v1/BlackListNumbers", params=params)).json()["value"]
        ]
        assert after == ordered[position + 1 :]


async def test_unordered_answers_come_in_insertion_order(http: httpx2.AsyncClient, sandbox: Sandbox) -> None:
    sandbox.entries.clear()
    for key in ("9", "10", "1"):
        sandbox.add("+1555" + key, None, entry_id=key)
    body = (await http.get("/xapi/v1/BlackListNumbers")).json()
    assert [r["Id"] for r in body["value"]] == ["9", "10", "1"]


async def test_a_page_cap_answers_with_a_next_link_that_leads_through_everything(
    http: httpx2.AsyncClient, sandbox: Sandbox, sandbox_url: str
) -> None:
    sandbox.page_cap = 5
    url: str | None = "/xapi/v1/BlackListNumbers?$orderby=Id&$top=11&$count=true"
    pages = []
    while url is not None:
        body = (await http.get(url)).json()
        assert body["@odata.count"] == 12
        pages.append([r["Id"] for r in body["value"]])
        url = body.get("@odata.nextLink")
        if url is not None:
            assert url.startswith(f"{sandbox_url}/xapi/v1/BlackListNumbers?") and " " not in url
    assert [len(p) for p in pages] == [5, 5, 1]  # $top=11 is honoured across pages
    assert [key for page in pages for key in page] == sorted(sandbox.entries)[:11]
    last = sandbox.requests[-1]
    assert "$skip=10" in last.query and "$top=1" in last.query and "$orderby=Id" in last.query


async def test_a_page_cap_without_next_link_truncates_silently(
    http: httpx2.AsyncClient, sandbox: Sandbox
) -> None:
    sandbox.page_cap, sandbox.next_link = 5, False
    body = (await http.get("/xapi/v1/BlackListNumbers", params={"$count": "true"})).json()
    assert len(body["value"]) == 5 and body["@odata.count"] == 12 and "@odata.nextLink" not in body
    small = (await http.get("/xapi/v1/BlackListNumbers", params={"$top": "5"})).json()
    assert "@odata.nextLink" not in small  # $top, not the cap, ended this one


@pytest.mark.parametrize(
    ("switch", "params", "expect"),
    [
        ("ignore_skip", {"$skip": "10", "$orderby": "Id", "$top": "2"}, lambda s: sorted(s.entries)[:2]),
        ("ignore_filter", {"$filter": "Id eq '1'"}, lambda s: list(s.entries)),
    ],
)
async def test_lying_server_switches(
    http: httpx2.AsyncClient, sandbox: Sandbox, switch: str, params: dict[str, str], expect: object
) -> None:
    setattr(sandbox, switch, True)
    body = (await http.get("/xapi/v1/BlackListNumbers", params=params)).json()
    assert [r["Id"] for r in body["value"]] == expect(sandbox)  # type: ignore[operator]


async def test_without_count_support_no_count_is_given(http: httpx2.AsyncClient, sandbox: Sandbox) -> None:
    sandbox.supports_count = False
    body = (await http.get("/xapi/v1/BlackListNumbers", params={"$count": "true"})).json()
    assert "@odata.count" not in body and len(body["value"]) == 12


async def test_hooks_run_before_each_answer_and_reset_clears_them(
    http: httpx2.AsyncClient, sandbox: Sandbox
) -> None:
    seen: list[str] = []

    def delete_one(request: RecordedRequest) -> None:
        seen.append(request.method)
        sandbox.entries.pop("1", None)

    sandbox.hooks.append(delete_one)
    body = (await http.get("/xapi/v1/BlackListNumbers")).json()
    assert seen == ["GET"] and "1" not in [r["Id"] for r in body["value"]]  # applied before answering
    sandbox.reset()
    assert sandbox.hooks == [] and "1" in sandbox.entries


def test_reset_restores_the_variant_the_sandbox_was_built_as() -> None:
    sandbox = Sandbox(page_cap=7, next_link=False, filter_node_limit=None, supports_in=False, seed=False)
    sandbox.page_cap, sandbox.next_link, sandbox.filter_node_limit, sandbox.supports_in = None, True, 5, True
    sandbox.ignore_skip = sandbox.ignore_filter = True
    sandbox.supports_count = False
    sandbox.reset()
    restored = (sandbox.page_cap, sandbox.next_link, sandbox.filter_node_limit, sandbox.supports_in)
    assert restored == (7, False, None, False)
    assert (sandbox.ignore_skip, sandbox.ignore_filter, sandbox.supports_count) == (False, False, True)
