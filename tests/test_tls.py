"""TLS: each failure is told by its cause (name, issuer, expiry, the other protocol) with its own fix,
is never retried, and THREECX_CA_BUNDLE works."""

from __future__ import annotations

import ipaddress
import os
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import pytest
from cryptography import x509
from pydantic import SecretStr
from threecx_mcp.client import RetryPolicy, XapiClient
from threecx_mcp.config import Settings
from threecx_mcp.doctor import run_checks
from threecx_mcp.errors import (
    CertificateExpired,
    CertificateNameMismatch,
    CertificateUntrusted,
    HttpsOnlyPort,
    PlainHttpPort,
    TlsError,
)
from threecx_mcp.sandbox import SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET, LoopbackServer, Sandbox
from threecx_mcp.token_store import StoredToken, TokenFile

from .support import write_certificate
from .test_transports import console_script

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    if shutil.which("openssl") is None:
        pytest.skip("TLS NOT CHECKED: the openssl command is not installed")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "pbx.pem", folder / "pbx.key"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return str(cert), str(key)


@pytest.fixture
def tls_pbx(certificate: tuple[str, str]) -> Iterator[str]:
    with LoopbackServer(Sandbox().app, tls=certificate) as server:
        yield server.url


def settings_for(url: str, **extra: object) -> Settings:
    return Settings.load(
        url=url, client_id=SANDBOX_CLIENT_ID, client_secret=SecretStr(SANDBOX_CLIENT_SECRET), **extra
    )


async def test_an_untrusted_certificate_says_how_to_trust_it(tls_pbx: str) -> None:
    async with XapiClient.from_connection(
        settings_for(tls_pbx).connection(), retry=RetryPolicy(attempts=1)
    ) as client:
        with pytest.raises(TlsError) as caught:
            await client.count()
    assert "THREECX_CA_BUNDLE" in caught.value.user_message()


async def test_a_ca_bundle_makes_it_work(tls_pbx: str, certificate: tuple[str, str]) -> None:
    async with XapiClient.from_connection(
        settings_for(tls_pbx, ca_bundle=Path(certificate[0])).connection()
    ) as client:
        assert await client.count() == 12


def test_doctor_checks_tls(tls_pbx: str, certificate: tuple[str, str], tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("THREECX_")}
    env |= {
        "THREECX_URL": tls_pbx,
        "THREECX_CLIENT_ID": SANDBOX_CLIENT_ID,
        "THREECX_CLIENT_SECRET": SANDBOX_CLIENT_SECRET,
    }
    run = lambda extra: subprocess.run(
        [console_script(), "doctor"],
        env=env | extra,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    untrusted = run({})
    assert (
        untrusted.returncode == 1
        and "FAIL  tls" in untrusted.stdout
        and "THREECX_CA_BUNDLE" in untrusted.stdout
    )
    trusted = run({"THREECX_CA_BUNDLE": certificate[0]})
    assert trusted.returncode == 0, trusted.stdout
    assert "PASS  tls: certificate verified" in trusted.stdout


# -- each cause with its own fix, and one connection attempt ---------------------------------------


@dataclass(frozen=True)
class Pki:
    ca: str  # the PEM of the CA that signed every server certificate below
    other_ca: str  # a CA that signed none of them
    wrong_name: tuple[str, str]  # valid, but for pbx.example.test, served on 127.0.0.1
    expired: tuple[str, str]
    good: tuple[str, str]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    ca_pem, _, ca_key, ca_name = write_certificate(folder, "ca", [], None)
    other_pem = write_certificate(folder, "other-ca", [], None)[0]
    loopback: list[x509.GeneralName] = [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]

    def leaf(name: str, san: list[x509.GeneralName], valid: tuple[int, int] = (-1, 2)) -> tuple[str, str]:
        return write_certificate(folder, name, san, (ca_key, ca_name), valid)[:2]

    return Pki(
        ca=ca_pem,
        other_ca=other_pem,
        wrong_name=leaf("wrong-name", [x509.DNSName("pbx.example.test")]),
        expired=leaf("expired", loopback, valid=(-10, -1)),
        good=leaf("good", loopback),
    )


class CountingServer:
    """A TCP server on 127.0.0.1 that counts connections: with a certificate it speaks TLS (and answers
    a plain-HTTP request as nginx, in front of every 3CX, does); without one it speaks plain HTTP."""

    def __init__(self, certificate: tuple[str, str] | None) -> None:
        self.connections = 0
        self._context: ssl.SSLContext | None = None
        if certificate is not None:
            self._context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self._context.load_cert_chain(*certificate)
        self._socket = socket.create_server(("127.0.0.1", 0))
        self.port = self._socket.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._socket.close()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self._socket.accept()
            except OSError:
                return
            self.connections += 1
            with connection:
                connection.settimeout(5)
                try:
                    self._answer(connection)
                except OSError:
                    pass  # the client gave up on the handshake, as it should

    def _answer(self, connection: socket.socket) -> None:
        first = connection.recv(1, socket.MSG_PEEK)
        if self._context is not None and first == b"\x16":  # a TLS ClientHello
            with self._context.wrap_socket(connection, server_side=True) as tls:
                tls.recv(65536)
            return
        connection.recv(65536)
        body = (
            b"<html><center>The plain HTTP request was sent to HTTPS port</center></html>"
            if self._context is not None
            else b"plain http"
        )
        connection.sendall(
            b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/html\r\nConnection: close\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )


@dataclass(frozen=True)
class Case:
    certificate: str | None  # which Pki certificate the server shows; None: a plain-HTTP server
    scheme: str
    bundle: str | None  # which Pki CA THREECX_CA_BUNDLE names
    error: type[TlsError]
    fix: str  # what the message must say
    doctor_fix: str  # what doctor's line must say (it knows whether THREECX_CA_BUNDLE is set)


CASES = {
    "ip-instead-of-name": Case(
        "wrong_name",
        "https",
        "ca",
        CertificateNameMismatch,
        "name on the certificate",
        "name on the certificate",
    ),
    "expired": Case(
        "expired", "https", "ca", CertificateExpired, "Renew the certificate", "Renew the certificate"
    ),
    "untrusted": Case(
        "good", "https", None, CertificateUntrusted, "set THREECX_CA_BUNDLE", "set THREECX_CA_BUNDLE"
    ),
    "bundle-of-another-ca": Case(
        "good",
        "https",
        "other_ca",
        CertificateUntrusted,
        "does not sign",
        "is set, but the file it names does not sign",
    ),
    "plain-http-port-over-https": Case(None, "https", None, PlainHttpPort, "HTTPS port", "HTTPS port"),
    "https-port-over-http": Case("good", "http", None, HttpsOnlyPort, "https://", "speaks HTTPS"),
}


def _settings(case: Case, pki: Pki, port: int) -> Settings:
    bundle = Path(getattr(pki, case.bundle)) if case.bundle else None
    return settings_for(f"{case.scheme}://127.0.0.1:{port}", ca_bundle=bundle)


def _certificate_of(case: Case, pki: Pki) -> tuple[str, str] | None:
    return getattr(pki, case.certificate) if case.certificate else None


FAST = RetryPolicy(attempts=4, base_delay=0.01, max_delay=0.05)


@pytest.mark.parametrize("token", ["minted", "stored"])
@pytest.mark.parametrize("name", sorted(CASES))
async def test_each_tls_failure_has_its_own_fix_and_is_tried_once(
    pki: Pki, tmp_path: Path, name: str, token: str
) -> None:
    """`minted`: the failure meets the token request; `stored`: a token is at hand (from another
    process), so it meets the API request itself. Either way: one connection, no retry."""
    case = CASES[name]
    shared = TokenFile(tmp_path / "token.json")
    if token == "stored":
        shared.write(StoredToken("stored-token-123", time.time() + 3600))
    with CountingServer(_certificate_of(case, pki)) as server:
        connection = _settings(case, pki, server.port).connection()
        async with XapiClient.from_connection(connection, retry=FAST, token_file=shared) as client:
            with pytest.raises(TlsError) as caught:
                await client.count()
    message = caught.value.user_message()
    assert type(caught.value) is case.error, message
    assert case.fix in message
    if case.error is not CertificateUntrusted:
        assert "THREECX_CA_BUNDLE" not in message  # never the fix for another problem
    assert server.connections == 1


@pytest.mark.parametrize("name", sorted(CASES))
async def test_doctor_names_each_tls_failure_and_its_fix(pki: Pki, name: str) -> None:
    case = CASES[name]
    with CountingServer(_certificate_of(case, pki)) as server:
        checks = await run_checks(_settings(case, pki, server.port))
    failed = [c for c in checks if not c.ok]
    assert len(failed) == 1 and failed[0].name in ("tls", "scheme"), [c.line() for c in checks]
    line = failed[0].line()
    assert case.doctor_fix in line
    if case.error is not CertificateUntrusted:
        assert "THREECX_CA_BUNDLE" not in line


async def test_doctor_passes_a_plain_http_port_named_with_http(pki: Pki) -> None:
    with CountingServer(None) as server:
        checks = await run_checks(settings_for(f"http://127.0.0.1:{server.port}"))
    scheme = next(c for c in checks if c.name == "scheme")
    assert scheme.ok and "does not speak HTTPS" in scheme.detail
