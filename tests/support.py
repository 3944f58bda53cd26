"""Constants and helpers the tests share."""

from __future__ import annotations

import datetime
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from mcp import Client
from mcp.server.mcpserver import MCPServer
from pydantic import SecretStr
from threecx_mcp.client import RetryPolicy, XapiClient
from threecx_mcp.config import PbxEndpoint
from threecx_mcp.sandbox import SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET

REPO = Path(__file__).resolve().parent.parent
SHARED_XAPI = REPO.parent / "shared" / "3cx-xapi"
FAST_RETRY = RetryPolicy(attempts=4, base_delay=0.01, max_delay=0.05, max_total=5.0)
AUTH_TOKEN = "test-bearer-token-0123456789-abcdefghijklmnop"
# Servers the tests spawn journal here, never into the user's state directory.
SUBPROCESS_JOURNAL = Path(tempfile.gettempdir()) / f"threecx-mcp-tests-{os.getpid()}" / "journal.sqlite3"


def client_for(sandbox_url: str, max_in_flight: int) -> Callable[[], XapiClient]:
    """XAPI clients of the loopback sandbox whose bulk writes keep at most `max_in_flight` in flight."""
    return lambda: XapiClient(
        PbxEndpoint.parse(sandbox_url),
        SANDBOX_CLIENT_ID,
        SecretStr(SANDBOX_CLIENT_SECRET),
        retry=FAST_RETRY,
        max_in_flight=max_in_flight,
    )


class ResettingProxy:
    """A TCP proxy on 127.0.0.1 in front of the sandbox that can reset a connection (RST)
    when a request carrying `marker` comes through: the real thing, not a simulated error."""

    def __init__(self, upstream_port: int, marker: bytes, times: int = 1) -> None:
        self.upstream_port, self.marker, self.times = upstream_port, marker, times
        self.resets = 0
        self.port = 0

    async def serve(self, *, task_status) -> None:  # type: ignore[no-untyped-def]
        import anyio

        listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
        self.port = listener.extra(anyio.abc.SocketAttribute.local_port)
        task_status.started()
        await listener.serve(self._handle)

    async def _handle(self, client) -> None:  # type: ignore[no-untyped-def]
        import socket
        import struct

        import anyio

        async with client, await anyio.connect_tcp("127.0.0.1", self.upstream_port) as upstream:

            async def pump(source, sink, inspect: bool) -> None:  # type: ignore[no-untyped-def]
                try:
                    async for data in source:
                        if inspect and self.times > 0 and self.marker in data:
                            self.times -= 1
                            self.resets += 1
                            raw = client.extra(anyio.abc.SocketAttribute.raw_socket)
                            raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                            await client.aclose()
                            await upstream.aclose()
                            return
                        await sink.send(data)
                except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                    return

            async with anyio.create_task_group() as tg:
                tg.start_soon(pump, upstream, client, False)
                await pump(client, upstream, True)
                tg.cancel_scope.cancel()


async def assert_journal_matches_the_pbx(journal, sandbox) -> None:  # type: ignore[no-untyped-def]
    """Every operation is closed; nothing journaled deleted still exists; nothing deleted is unreported."""
    for operation in await journal.recent(10_000):
        assert operation.outcome is not None, "every operation has its end record"
        for item in await journal.items(operation.operation_id):
            if operation.kind == "delete":
                assert item.status != "pending"
                if item.status == "deleted":
                    assert item.entry_id not in sandbox.entries
                if item.entry_id not in sandbox.entries:
                    assert item.status in ("deleted", "unknown"), (item.entry_id, item.status)


def statuses(items) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {item.entry_id: item.status for item in items}


async def call_confirmed(client, tool: str, arguments: dict):  # type: ignore[no-untyped-def,type-arg]
    """Call a tool as a client without elicitation does once the user has agreed to its plan.

    A destructive bulk write first answers with a plan (nothing written) and a plan_id, a single write
    that needs the user (a broad pattern, a restore removing entries) an error naming its plan_id; this
    sends the same request again with that plan_id. Any other answer is returned as is.
    """
    result = await client.call_tool(tool, arguments)
    plan_id = (result.structured_content or {}).get("plan_id")
    if result.is_error:  # a single write that waits for the user names its plan in the error
        words = re.search(r"plan_id=([0-9a-f]+)", result.content[0].text if result.content else "")
        plan_id = words.group(1) if words and "Nothing was changed yet" in result.content[0].text else None
    if plan_id is None or arguments.get("dry_run"):
        return result
    return await client.call_tool(tool, {**arguments, "plan_id": plan_id})


def answering(action: str, confirm: bool = True):  # type: ignore[no-untyped-def]
    """An elicitation callback that answers every question the same way, and the questions it saw."""
    from mcp_types import ElicitResult

    asked: list[str] = []

    async def callback(context, params) -> ElicitResult:  # type: ignore[no-untyped-def]
        asked.append(params.message)
        return ElicitResult(action=action, content={"confirm": confirm} if action == "accept" else None)

    return callback, asked


def console_script() -> str:
    found = shutil.which("threecx-mcp", path=str(Path(sys.executable).parent))
    assert found, "the threecx-mcp console script is not installed beside this Python"
    return found


def run_console(
    *words: str,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 120,
    **popen: object,
) -> subprocess.CompletedProcess[str]:
    """The console script as a user runs it (no stdin unless given), its output decoded as UTF-8 with
    line ends as written (an exported CSV's are CRLF)."""
    done = subprocess.run(
        [console_script(), *words],
        env=dict(os.environ if env is None else env),
        cwd=cwd,
        capture_output=True,
        timeout=timeout,
        **({"stdin": subprocess.DEVNULL} | popen),  # type: ignore[arg-type]
    )
    return subprocess.CompletedProcess(done.args, done.returncode, done.stdout.decode(), done.stderr.decode())


@asynccontextmanager
async def connected(server: MCPServer[Any], mode: str, elicitation: Any = None) -> AsyncIterator[Client]:
    """An MCP client on `server` in one protocol version ("auto": 2026-07-28, "legacy": 2025-11-25)."""
    async with Client(server, mode=mode, elicitation_callback=elicitation) as client:
        yield client


def text_of(result: Any) -> str:
    return str(result.content[0].text)


async def ok(client: Client, tool: str, **arguments: Any) -> dict[str, Any]:
    """A call as a client without elicitation makes it once the user agreed to its plan, if it has one."""
    result = await call_confirmed(client, tool, arguments)
    assert not result.is_error, text_of(result)
    content: dict[str, Any] | None = result.structured_content
    assert content is not None
    return content


def assert_no_token_logged(logged: str, sandboxes: Any) -> None:
    """No bearer token any of these sandboxes received appears in `logged`."""
    for sandbox in sandboxes:
        for request in sandbox.requests:
            token = request.headers.get("authorization", "").removeprefix("Bearer ")
            assert not token or token not in logged, "a PBX token reached the logs"


def write_certificate(
    folder: Path,
    name: str,
    san: list[x509.GeneralName],
    issuer: tuple[ec.EllipticCurvePrivateKey, x509.Name] | None,
    valid: tuple[int, int] = (-1, 2),
) -> tuple[str, str, ec.EllipticCurvePrivateKey, x509.Name]:
    """A certificate and its key as PEM files in `folder` (named `name`): a CA (no `issuer`: self-signed, for
    a CA bundle) or, signed by `issuer`, a server's with these subject alternative names."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    signer, issuer_name = issuer or (key, subject)
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now + datetime.timedelta(days=valid[0]))
        .not_valid_after(now + datetime.timedelta(days=valid[1]))
    )
    if issuer is None:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    else:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    cert, key_file = folder / f"{name}.pem", folder / f"{name}.key"
    cert.write_bytes(builder.sign(signer, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return str(cert), str(key_file), key, subject
