"""`threecx-mcp doctor --probe` against the sandbox over real HTTP, with each way a real PBX may differ.

Each test asserts what the probe reports, that its marker entry is gone afterwards (also when a step
fails midway or the probe is cancelled), and that its writes are in the journal.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from urllib.parse import unquote

import anyio
import pytest
from threecx_mcp.client import XapiClient
from threecx_mcp.journal import Journal, OperationKind
from threecx_mcp.probe import MARKER_PREFIX, Finding, run_probe
from threecx_mcp.sandbox import SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET, Fault, Sandbox
from threecx_mcp.sandbox.pbx import RecordedRequest

from .support import run_console
from .test_transports import console_script

pytestmark = pytest.mark.anyio
STEPS = ["create", "read", "search", "in", "filter size", "paging", "count", "patch", "clear", "bulk delete"]


async def probe(xapi: XapiClient, journal: Journal) -> dict[str, Finding]:
    findings = await run_probe(xapi, journal)
    named = {f.name: f for f in findings}
    assert len(named) == len(findings), "one finding per step"
    return named


def markers(sandbox: Sandbox) -> list[str]:
    return [e["Id"] for e in sandbox.entries.values() if e["CallerId"].startswith(MARKER_PREFIX)]


async def kinds(journal: Journal) -> list[OperationKind]:
    return sorted(op.kind for op in await journal.recent())


async def test_an_aspnet_default_pbx_passes_every_step_and_the_marker_is_gone(
    sandbox: Sandbox, xapi: XapiClient, journal: Journal
) -> None:
    seeded = dict(sandbox.entries)
    found = await probe(xapi, journal)
    assert list(found) == [*STEPS, "cleanup"]
    assert {name: f.verdict for name, f in found.items()} == dict.fromkeys(found, "PASS")
    assert "stored as an empty string" in found["clear"].detail
    assert "no page cap below 13" in found["paging"].detail
    assert sandbox.entries == seeded and not markers(sandbox)
    assert await kinds(journal) == [OperationKind.DELETE, OperationKind.UPDATE, OperationKind.UPDATE]
    # The probe's search found the marker only through tolower, and sent the unknown id to the PBX alone.
    searched = [unquote(r.query) for r in sandbox.requests if "contains" in unquote(r.query)]
    assert "contains(tolower(Description),'case" in searched[0]
    bulk = [r.body for r in sandbox.requests if r.path.endswith("Pbx.BulkNumbersDelete")]
    assert len(bulk) == 2 and b'"2000000000"' in bulk[0] and b"13" not in bulk[0]


@pytest.mark.parametrize(
    ("switches", "step", "verdict", "said"),
    [
        ({"page_cap": 5}, "paging", "NOTE", "caps pages at 5 and announces the rest by @odata.nextLink"),
        ({"page_cap": 5, "next_link": False}, "paging", "NOTE", "caps pages at 5 and says nothing"),
        (
            {"page_cap": 5, "next_link": False, "supports_count": False},
            "paging",
            "NOTE",
            "returned 5 of 13 entries: the PBX caps pages at 5",
        ),
        ({"supports_in": False}, "in", "NOTE", "refuses `in`"),
        ({"filter_node_limit": 50}, "filter size", "NOTE", "10 `or`ed comparisons (49 nodes) passed"),
        ({"supports_count": False}, "count", "NOTE", "no @odata.count"),
        ({"supports_count": False}, "paging", "PASS", "returned 13 of 13"),
    ],
)
async def test_each_pbx_variant_is_reported_and_handled(
    sandbox: Sandbox,
    xapi: XapiClient,
    journal: Journal,
    switches: dict[str, object],
    step: str,
    verdict: str,
    said: str,
) -> None:
    for name, value in switches.items():
        setattr(sandbox, name, value)
    found = await probe(xapi, journal)
    assert (found[step].verdict, said in found[step].detail) == (verdict, True), found[step].line()
    assert [f.verdict for f in found.values()].count("FAIL") == 0, [f.line() for f in found.values()]
    assert not markers(sandbox) and len(await kinds(journal)) == 3


async def test_a_pbx_refusing_contains_and_tolower_fails_the_search_step(
    sandbox: Sandbox, xapi: XapiClient, journal: Journal
) -> None:
    """No sandbox switch refuses the functions: a hook answers the searching request with a 400."""

    def refuse_functions(request: RecordedRequest) -> None:
        if "contains(" in unquote(request.query):
            sandbox.inject(Fault(status=400, times=1, method="GET"))

    sandbox.hooks.append(refuse_functions)
    found = await probe(xapi, journal)
    assert found["search"].verdict == "FAIL" and "refuses contains/tolower" in found["search"].detail
    assert all(f.verdict == "PASS" for name, f in found.items() if name != "search")
    assert not markers(sandbox)


async def test_a_pbx_ignoring_an_empty_description_fails_the_clear_step(
    sandbox: Sandbox, xapi: XapiClient, journal: Journal
) -> None:
    """No sandbox switch for it: a hook answers the PATCH that clears the note with a bare 204."""

    def ignore_clearing(request: RecordedRequest) -> None:
        if request.method == "PATCH" and json.loads(request.body) == {"Description": ""}:
            sandbox.inject(Fault(status=204, body="empty", method="PATCH", times=1))

    sandbox.hooks.append(ignore_clearing)
    found = await probe(xapi, journal)
    assert found["clear"].verdict == "FAIL" and "patched" in found["clear"].detail
    assert 'placeholder such as "-"' in found["clear"].detail
    assert found["bulk delete"].verdict == "PASS" and not markers(sandbox)


async def test_a_pbx_that_ignores_filters_fails_before_anything_is_created(
    sandbox: Sandbox, xapi: XapiClient, journal: Journal
) -> None:
    sandbox.ignore_filter = True
    found = await probe(xapi, journal)
    assert list(found) == ["create", "cleanup"]
    assert found["create"].verdict == "FAIL" and "ignored the filter" in found["create"].detail
    assert (
        found["cleanup"].verdict == "FAIL" and MARKER_PREFIX in found["cleanup"].detail
    )  # says what to delete
    assert not markers(sandbox) and await kinds(journal) == []


async def test_a_pbx_refusing_unknown_ids_in_a_bulk_delete_is_noted(
    sandbox: Sandbox, xapi: XapiClient, journal: Journal
) -> None:
    sandbox.inject(Fault(status=404, times=1, path="/xapi/v1/BlackListNumbers/Pbx.BulkNumbersDelete"))
    found = await probe(xapi, journal)
    assert found["bulk delete"].verdict == "NOTE"
    assert "naming only an unknown id is refused" in found["bulk delete"].detail
    assert not markers(sandbox)


async def test_an_existing_entry_is_never_used_as_the_unknown_id(
    sandbox: Sandbox, xapi: XapiClient, journal: Journal
) -> None:
    bystander = sandbox.add("+15550000001", "someone else's", entry_id="2000000000")
    found = await probe(xapi, journal)
    assert found["bulk delete"].verdict == "NOTE" and "exists on this PBX" in found["bulk delete"].detail
    assert found["cleanup"].verdict == "PASS" and not markers(sandbox)
    assert sandbox.entries["2000000000"] == bystander


async def test_a_failed_patch_is_reported_and_the_marker_still_removed(
    sandbox: Sandbox, xapi: XapiClient, journal: Journal
) -> None:
    sandbox.inject(Fault(status=400, method="PATCH", times=1))
    found = await probe(xapi, journal)
    assert found["patch"].verdict == "FAIL" and found["clear"].verdict == "PASS"
    assert found["cleanup"].verdict == "PASS" and not markers(sandbox)


async def test_a_failed_delete_step_leaves_the_removal_to_the_cleanup(
    sandbox: Sandbox, xapi: XapiClient, journal: Journal
) -> None:
    sandbox.inject(Fault(status=500, times=1, path="/xapi/v1/BlackListNumbers/Pbx.BulkNumbersDelete"))
    found = await probe(xapi, journal)
    assert found["bulk delete"].verdict == "FAIL"
    assert found["cleanup"].verdict == "PASS" and "an earlier step left" in found["cleanup"].detail
    assert not markers(sandbox)
    assert await kinds(journal) == [OperationKind.DELETE, OperationKind.UPDATE, OperationKind.UPDATE]


async def test_a_marker_that_cannot_be_removed_is_named_with_what_to_do(
    sandbox: Sandbox, xapi: XapiClient, journal: Journal
) -> None:
    sandbox.inject(Fault(status=400, times=100, path="/xapi/v1/BlackListNumbers/Pbx.BulkNumbersDelete"))
    found = await probe(xapi, journal)
    (left,) = markers(sandbox)
    cleanup = found["cleanup"]
    assert cleanup.verdict == "FAIL" and f'"{left}"' in cleanup.detail
    assert sandbox.entries[left]["CallerId"] in cleanup.detail and "3CX console" in cleanup.detail


async def test_a_create_applied_without_an_answer_is_found_by_caller_id_and_removed(
    sandbox: Sandbox, xapi: XapiClient, journal: Journal
) -> None:
    """The PBX stores the marker, then the answer is lost (a 502 from a proxy): the id was never seen."""

    def store_then_fail(request: RecordedRequest) -> None:
        if request.method == "POST" and request.path == "/xapi/v1/BlackListNumbers":
            sandbox.add(MARKER_PREFIX + "0123456789ab")
            sandbox.inject(Fault(status=502, times=1, method="POST"))

    sandbox.hooks.append(store_then_fail)
    found = await run_probe(xapi, journal, token="0123456789ab")
    assert [(f.name, f.verdict) for f in found] == [("create", "FAIL"), ("cleanup", "PASS")]
    assert "an earlier step left" in found[-1].detail and not markers(sandbox)


async def test_a_cancelled_probe_still_removes_its_marker(
    sandbox: Sandbox, xapi: XapiClient, journal: Journal
) -> None:
    sandbox.inject(Fault(status=503, method="PATCH", delay=2.0, times=1))  # never applied
    async with anyio.create_task_group() as group:
        group.start_soon(run_probe, xapi, journal)
        while not any(r.method == "PATCH" for r in sandbox.requests):
            await anyio.sleep(0.01)
        group.cancel_scope.cancel()
    assert not markers(sandbox)
    assert OperationKind.DELETE in await kinds(journal)


def probe_env(sandbox_url: str, tmp_path: Path) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("THREECX_")} | {
        "THREECX_URL": sandbox_url,
        "THREECX_CLIENT_ID": SANDBOX_CLIENT_ID,
        "THREECX_CLIENT_SECRET": SANDBOX_CLIENT_SECRET,
        "THREECX_JOURNAL": str(tmp_path / "journal.sqlite3"),
    }


def test_doctor_probe_from_the_command_line_and_the_journal_shows_it(
    sandbox: Sandbox, sandbox_url: str, tmp_path: Path
) -> None:
    env = probe_env(sandbox_url, tmp_path)
    done = run_console("doctor", "--probe", env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    probed = done.stdout.split("Probing the PBX", 1)[1].splitlines()[1:]
    assert [line.split(":")[0] for line in probed[:-1]] == [f"PASS  {s}" for s in [*STEPS, "cleanup"]]
    assert not markers(sandbox)
    listed = run_console("journal", "list", env=env, cwd=tmp_path)
    assert (
        listed.returncode == 0
        and listed.stdout.count(" update ") == 2
        and listed.stdout.count(" delete ") == 1
    )

    sandbox.inject(Fault(status=400, method="PATCH", times=1))
    failed = run_console("doctor", "--probe", env=env, cwd=tmp_path)
    assert failed.returncode == 1 and "FAIL  patch:" in failed.stdout
    assert "the probe found 1 problem(s)" in failed.stderr and "Traceback" not in failed.stderr
    assert not markers(sandbox) and SANDBOX_CLIENT_SECRET not in failed.stdout + failed.stderr


def test_ctrl_c_during_the_probe_removes_the_marker_and_says_so(
    sandbox: Sandbox, sandbox_url: str, tmp_path: Path
) -> None:
    import signal
    import time

    sandbox.inject(Fault(status=503, method="PATCH", delay=5.0, times=1))  # holds the probe mid-step
    prober = subprocess.Popen(
        [console_script(), "doctor", "--probe"],
        env=probe_env(sandbox_url, tmp_path),
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not any(r.method == "PATCH" for r in sandbox.requests):
            assert prober.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
        prober.send_signal(signal.SIGINT)
        _, stderr = prober.communicate(timeout=60)
    finally:
        if prober.poll() is None:
            prober.kill()
            prober.wait()
    assert prober.returncode == 130 and "interrupted" in stderr and "Traceback" not in stderr
    assert not markers(sandbox)


def test_probe_needs_the_doctor_command(tmp_path: Path) -> None:
    done = run_console("--probe", "--sandbox", env=dict(os.environ), cwd=tmp_path)
    assert done.returncode == 2 and "--probe goes with the doctor command" in done.stderr


def test_doctor_probe_on_the_sandbox(tmp_path: Path) -> None:
    env = dict(os.environ) | {"THREECX_JOURNAL": str(tmp_path / "journal.sqlite3")}
    done = run_console("doctor", "--sandbox", "--probe", env=env, cwd=tmp_path)
    assert done.returncode == 0 and "The probe found nothing this server cannot handle." in done.stdout
    assert not (tmp_path / "tokens").exists()  # a sandbox that lives for one command shares no token
