"""TLS: an untrusted certificate is a clear error that says how to trust it, and THREECX_CA_BUNDLE works."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr
from threecx_mcp.client import RetryPolicy, XapiClient
from threecx_mcp.config import Settings
from threecx_mcp.errors import TlsError
from threecx_mcp.sandbox import SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET, LoopbackServer, Sandbox

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
