"""Every request the client sends and every answer the sandbox gives fit 3CX's published OpenAPI file."""

from __future__ import annotations

import pytest
from threecx_mcp.client import XapiClient
from threecx_mcp.errors import PbxError
from threecx_mcp.sandbox import Fault, Sandbox

from .support import SHARED_XAPI

pytestmark = pytest.mark.anyio
SPEC = SHARED_XAPI / "blacklist-openapi.yaml"


def _contract(path):  # type: ignore[no-untyped-def]
    if not path.is_file():
        pytest.skip(f"CONTRACT NOT CHECKED: {path} is missing (it lives in ../shared beside the repo)")
    from openapi_core import OpenAPI

    return OpenAPI.from_file_path(str(path))


@pytest.fixture(scope="module")
def openapi():  # type: ignore[no-untyped-def]
    return _contract(SPEC)


# Server variants the client must also speak the contract with: a capped server's answers carry
# `@odata.nextLink`, which the published schema does not list but does not forbid either (no
# additionalProperties: false), as OData's JSON format allows any such annotation.
VARIANTS = {
    "default": {},
    "capped with nextLink, no `in`": {"page_cap": 5, "supports_in": False},
    "capped silently": {"page_cap": 5, "next_link": False},
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
async def test_client_and_sandbox_speak_the_published_contract(  # type: ignore[no-untyped-def]
    openapi, xapi: XapiClient, sandbox: Sandbox, variant: str
) -> None:
    from urllib.parse import parse_qsl

    from openapi_core.testing import MockRequest, MockResponse

    for name, value in VARIANTS[variant].items():
        setattr(sandbox, name, value)
    sandbox.record_exchanges = True
    first = await xapi.page(terms=["+44", "Spam"], after=None, limit=2)
    await xapi.page(terms=["+44"], after=(first.records[-1].caller_id, first.records[-1].id), limit=2)
    await xapi.scan()
    await xapi.count()
    await xapi.find_by_ids(["1", "2", "no-such-id"])
    await xapi.find_by_caller_ids(["Anonymous", "+1 555 & 'x'"])
    created = await xapi.create_blacklist_number("a'b/c #d?e%f", "contract")
    await xapi.get_blacklist_number(created.id)
    await xapi.update_blacklist_number(created.id, {"CallerId": "+15550000009", "Description": None})
    await xapi.delete_blacklist_number(created.id)
    await xapi.bulk_delete_blacklist_numbers(["1", "2", "no-such-id"])
    for failing in (xapi.get_blacklist_number("no-such-id"), xapi.create_blacklist_number("Anonymous", None)):
        with pytest.raises(PbxError):
            await failing
    sandbox.revoke_tokens()
    sandbox.inject(Fault(status=503, times=1))
    await xapi.count()

    checked = 0
    for request, response in sandbox.exchanges:
        if request.path == "/connect/token" or response.status >= 500:
            continue  # the token endpoint is outside the XAPI description; 503 was our injected fault
        mock_request = MockRequest(
            "http://127.0.0.1",
            request.method.lower(),
            request.path,
            args=dict(parse_qsl(request.query)),
            headers=request.headers,
            data=request.body or None,
            content_type=request.headers.get("content-type", "application/json"),
        )
        openapi.validate_request(mock_request)
        if response.status == 401:
            continue  # a real PBX answers 401 without an OData body
        openapi.validate_response(
            mock_request,
            MockResponse(
                response.body, response.status, response.headers, response.headers.get("content-type", "")
            ),
        )
        checked += 1
    methods = {(r.method, r.path.split("(")[0]) for r, _ in sandbox.exchanges}
    assert methods >= {
        ("GET", "/xapi/v1/BlackListNumbers"),
        ("POST", "/xapi/v1/BlackListNumbers"),
        ("PATCH", "/xapi/v1/BlackListNumbers"),
        ("DELETE", "/xapi/v1/BlackListNumbers"),
        ("POST", "/xapi/v1/BlackListNumbers/Pbx.BulkNumbersDelete"),
    }
    assert checked >= 10
    next_links = [b"@odata.nextLink" in response.body for _, response in sandbox.exchanges]
    assert any(next_links) == (sandbox.page_cap is not None and sandbox.next_link)


async def test_contract_check_catches_a_wrong_body(openapi) -> None:  # type: ignore[no-untyped-def]
    """The validator is not a rubber stamp: an integer id in the bulk body breaks the contract."""
    from openapi_core.testing import MockRequest

    bad = MockRequest(
        "http://127.0.0.1", "post", "/xapi/v1/BlackListNumbers/Pbx.BulkNumbersDelete", data=b'{"ids": [42]}'
    )
    with pytest.raises(Exception, match="InvalidRequestBody|ValidationError"):
        openapi.validate_request(bad)


# -- the call log function, against the whole published description ------------------------------

FULL_SPEC = SHARED_XAPI / "xapi-swagger-20.0.10.yaml"


@pytest.fixture(scope="module")
def full_openapi():  # type: ignore[no-untyped-def]
    return _contract(FULL_SPEC)


def _validate_exchanges(openapi, sandbox: Sandbox, prefix: str) -> int:  # type: ignore[no-untyped-def]
    from urllib.parse import parse_qsl

    from openapi_core.testing import MockRequest, MockResponse

    checked = 0
    for request, response in sandbox.exchanges:
        if not request.path.startswith(prefix):
            continue
        mock_request = MockRequest(
            "http://127.0.0.1",
            request.method.lower(),
            request.path,
            args=dict(parse_qsl(request.query)),
            headers=request.headers,
        )
        openapi.validate_request(mock_request)
        openapi.validate_response(
            mock_request,
            MockResponse(
                response.body, response.status, response.headers, response.headers.get("content-type", "")
            ),
        )
        checked += 1
    return checked


@pytest.mark.parametrize("page_cap", [None, 4])
async def test_the_call_log_request_and_answers_fit_the_published_function(  # type: ignore[no-untyped-def]
    full_openapi, xapi: XapiClient, sandbox: Sandbox, page_cap: int | None
) -> None:
    from datetime import UTC, datetime, timedelta

    from threecx_mcp.operations.callers import read_call_log

    sandbox.page_cap = page_cap
    sandbox.call_log.add_call(
        "O'Brien & \u202eCo", name='Caller, "quoted"', at=datetime.now(UTC) - timedelta(hours=1)
    )
    sandbox.record_exchanges = True
    now = datetime.now(UTC)
    rows, truncated = await read_call_log(xapi, now - timedelta(hours=48), now)
    assert len(rows) == 14 and not truncated
    sandbox.inject(Fault(status=403, path="/xapi/v1/ReportCallLogData"))
    with pytest.raises(PbxError):
        await xapi.call_log(now - timedelta(hours=1), now, top=10, skip=0)
    sandbox.call_log_supported = False
    with pytest.raises(PbxError):
        await xapi.call_log(now - timedelta(hours=1), now, top=10, skip=0)
    checked = _validate_exchanges(full_openapi, sandbox, "/xapi/v1/ReportCallLogData/")
    assert checked == (1 if page_cap is None else 4) + 2  # the pages, the 403 and the 404


async def test_the_call_log_contract_check_catches_a_wrong_literal(full_openapi) -> None:  # type: ignore[no-untyped-def]
    """The validator is not a rubber stamp: a quoted date-time breaks the function's path parameter."""
    from openapi_core.testing import MockRequest

    path = (
        "/xapi/v1/ReportCallLogData/Pbx.GetCallLogData(periodFrom='2026-01-01T00:00:00Z',"
        "periodTo=2026-01-02T00:00:00Z,sourceType=0,sourceFilter='',destinationType=0,destinationFilter='',"
        "callsType=0,callTimeFilterType=0,callTimeFilterFrom='0:00:0',callTimeFilterTo='0:00:0',hidePcalls=false)"
    )
    with pytest.raises(Exception, match="periodFrom"):
        full_openapi.validate_request(MockRequest("http://127.0.0.1", "get", path))
