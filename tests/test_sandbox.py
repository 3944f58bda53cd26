"""The sandbox PBX answers like XAPI: raw HTTP requests against it on 127.0.0.1."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx2
import pytest
from threecx_mcp.sandbox import SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET, SEED_ENTRIES, Sandbox

pytestmark = pytest.mark.anyio


@pytest.fixture
async def http(sandbox_url: str) -> AsyncIterator[httpx2.AsyncClient]:
    async with httpx2.AsyncClient(base_url=sandbox_url) as client:
        token = await client.post(
            "/connect/token",
            data={"client_id": SANDBOX_CLIENT_ID, "client_secret": SANDBOX_CLIENT_SECRET, "grant_type": "client_credentials"},
        )
        assert token.status_code == 200 and token.json()["token_type"] == "Bearer"
        client.headers["Authorization"] = f"Bearer {token.json()['access_token']}"
        yield client


async def test_token_endpoint_rejects_bad_credentials(sandbox_url: str, sandbox: Sandbox) -> None:
    async with httpx2.AsyncClient(base_url=sandbox_url) as client:
        bad = await client.post("/connect/token", data={"client_id": "sandbox", "client_secret": "x", "grant_type": "client_credentials"})
        assert bad.status_code == 400 and bad.json() == {"error": "invalid_client"}
        assert (await client.get("/xapi/v1/BlackListNumbers")).status_code == 401


async def test_only_the_newest_token_is_alive(sandbox_url: str, http: httpx2.AsyncClient) -> None:
    first = http.headers["Authorization"]
    assert (await http.get("/xapi/v1/BlackListNumbers")).status_code == 200
    async with httpx2.AsyncClient(base_url=sandbox_url) as other:
        await other.post("/connect/token", data={"client_id": SANDBOX_CLIENT_ID, "client_secret": SANDBOX_CLIENT_SECRET, "grant_type": "client_credentials"})
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
    ],
)
async def test_filter(http: httpx2.AsyncClient, query: str, caller_ids: list[str]) -> None:
    response = await http.get("/xapi/v1/BlackListNumbers", params={"$filter": query})
    assert response.status_code == 200, response.text
    assert sorted(r["CallerId"] for r in response.json()["value"]) == caller_ids


async def test_paging_count_order_select_search(http: httpx2.AsyncClient) -> None:
    response = await http.get(
        "/xapi/v1/BlackListNumbers",
        params={"$top": "2", "$skip": "1", "$count": "true", "$orderby": "CallerId desc", "$select": "CallerId"},
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
        ({"$filter": "CallerId gt 'a'"}, "Unsupported operator"),
        ({"$filter": "Number eq '1'"}, "Could not find a property named 'Number'"),
        ({"$filter": "contains(CallerId,'x'"}, "expected ')'"),
        ({"$top": "-1"}, "non-negative integer"),
        ({"$orderby": "Nope"}, "Invalid $orderby"),
        ({"$select": "Secret"}, "Could not find a property"),
        ({"$count": "maybe"}, "$count"),
        ({"$apply": "x"}, "not supported"),
    ],
)
async def test_bad_query_options_are_400_odata_errors(http: httpx2.AsyncClient, params: dict[str, str], words: str) -> None:
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
            response = await client.get("/xapi/v1/BlackListNumbers", headers={"Authorization": f"Bearer {token}"})
            assert response.status_code == 200
    del sandbox.api_clients["second"]
