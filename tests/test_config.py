"""Settings and PBX URL normalisation."""

from __future__ import annotations

from pathlib import Path

import pytest
from threecx_mcp.config import PbxEndpoint, Settings
from threecx_mcp.errors import ConfigError


@pytest.mark.parametrize(
    ("pasted", "origin"),
    [
        ("pbx.example.com", "https://pbx.example.com"),
        ("pbx.example.com:5001", "https://pbx.example.com:5001"),
        ("https://pbx.example.com/", "https://pbx.example.com"),
        ("https://pbx.example.com/xapi/v1/", "https://pbx.example.com"),
        ("https://pbx.example.com/#/office/dashboard", "https://pbx.example.com"),
        ("  https://pbx.example.com  \n", "https://pbx.example.com"),
        ("HTTPS://PBX.Example.COM", "https://pbx.example.com"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("https://pbx.example.com:443/webclient", "https://pbx.example.com"),
        ("http://pbx.example.com:80", "http://pbx.example.com"),
        ("https://[::1]:5001/xapi/v1", "https://[::1]:5001"),
        ("pbx.example.com/connect/token?x=1", "https://pbx.example.com"),
    ],
)
def test_pasted_urls_become_one_canonical_origin(pasted: str, origin: str) -> None:
    endpoint = PbxEndpoint.parse(pasted)
    assert endpoint.origin == origin
    assert endpoint.api_base == origin + "/xapi/v1"
    assert endpoint.token_url == origin + "/connect/token"


@pytest.mark.parametrize(
    ("garbage", "words"),
    [
        ("ftp://x", "must use https"),
        ("", "empty"),
        ("   ", "empty"),
        ("https://", "no host"),
        ("https://user:pw@pbx.example.com", "must not contain credentials"),
        ("https://pbx.example.com:99999", "not a valid URL"),
    ],
)
def test_garbage_urls_are_rejected_with_a_clear_message(garbage: str, words: str) -> None:
    with pytest.raises(ConfigError, match=words) as caught:
        PbxEndpoint.parse(garbage)
    assert "THREECX_URL" in str(caught.value)
    if garbage.strip():
        assert repr(garbage.strip()) not in str(caught.value)  # quoted as data, never as a Python repr


def test_a_url_with_controls_is_shown_escaped_and_capped() -> None:
    with pytest.raises(ConfigError) as caught:
        PbxEndpoint.parse("ftp://pbx\u202e" + "x" * 500)
    message = str(caught.value)
    assert "\u202e" not in message and "\\u202e" in message and len(message) < 400


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    for name in (
        "URL",
        "CLIENT_ID",
        "CLIENT_SECRET",
        "CLIENT_SECRET_FILE",
        "VERIFY_TLS",
        "CA_BUNDLE",
        "TIMEOUT",
    ):
        monkeypatch.delenv(f"THREECX_{name}", raising=False)
    monkeypatch.chdir(tmp_path)  # no stray .env
    return monkeypatch


def test_settings_come_from_the_environment(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("THREECX_URL", "pbx.example.com:5001")
    clean_env.setenv("THREECX_CLIENT_ID", "mcp")
    clean_env.setenv("THREECX_CLIENT_SECRET", "  k3y  ")
    clean_env.setenv("THREECX_TIMEOUT", "12.5")
    settings = Settings.load()
    assert settings.endpoint().origin == "https://pbx.example.com:5001"
    client_id, secret = settings.credentials()
    assert (client_id, secret.get_secret_value()) == ("mcp", "k3y")
    assert settings.timeout == 12.5
    assert "k3y" not in repr(settings) and "k3y" not in str(settings.model_dump())


def test_settings_read_a_dotenv_file(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("THREECX_URL=https://pbx.example.com\nTHREECX_CLIENT_ID=from-file\n")
    settings = Settings.load()
    assert settings.client_id == "from-file"
    assert settings.endpoint().origin == "https://pbx.example.com"


def test_secret_can_come_from_a_file(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    secret_file = tmp_path / "key"
    secret_file.write_text("file-k3y\n")
    clean_env.setenv("THREECX_CLIENT_ID", "mcp")
    clean_env.setenv("THREECX_CLIENT_SECRET_FILE", str(secret_file))
    assert Settings.load().credentials()[1].get_secret_value() == "file-k3y"


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({}, "THREECX_URL is not set"),
        ({"THREECX_URL": "pbx"}, "THREECX_CLIENT_ID is not set"),
        ({"THREECX_URL": "pbx", "THREECX_CLIENT_ID": "x"}, "THREECX_CLIENT_SECRET is not set"),
        (
            {
                "THREECX_URL": "pbx",
                "THREECX_CLIENT_ID": "x",
                "THREECX_CLIENT_SECRET": "s",
                "THREECX_CLIENT_SECRET_FILE": "f",
            },
            "keep only one",
        ),
        (
            {"THREECX_URL": "pbx", "THREECX_CLIENT_ID": "x", "THREECX_CLIENT_SECRET_FILE": "/nonexistent"},
            "cannot be read",
        ),
    ],
)
def test_missing_or_contradictory_settings_name_the_variable(
    clean_env: pytest.MonkeyPatch, env: dict[str, str], variable: str
) -> None:
    for name, value in env.items():
        clean_env.setenv(name, value)
    settings = Settings.load()
    with pytest.raises(ConfigError, match=variable):
        settings.endpoint()
        settings.credentials()


@pytest.mark.parametrize(
    ("env", "words"),
    [
        ({"THREECX_TIMEOUT": "-1"}, "THREECX_TIMEOUT"),
        ({"THREECX_TIMEOUT": "soon"}, "THREECX_TIMEOUT"),
        ({"THREECX_VERIFY_TLS": "perhaps"}, "THREECX_VERIFY_TLS"),
    ],
)
def test_malformed_values_fail_fast_naming_the_variable(
    clean_env: pytest.MonkeyPatch, env: dict[str, str], words: str
) -> None:
    for name, value in env.items():
        clean_env.setenv(name, value)
    with pytest.raises(ConfigError, match=words):
        Settings.load()


def test_tls_settings(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert Settings.load().tls_verify() is True
    clean_env.setenv("THREECX_VERIFY_TLS", "false")
    assert Settings.load().tls_verify() is False
    clean_env.setenv("THREECX_CA_BUNDLE", str(tmp_path / "missing.pem"))
    with pytest.raises(ConfigError, match="keep only one"):
        Settings.load().tls_verify()
    clean_env.delenv("THREECX_VERIFY_TLS")
    with pytest.raises(ConfigError, match="THREECX_CA_BUNDLE"):
        Settings.load().tls_verify()
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate")
    clean_env.setenv("THREECX_CA_BUNDLE", str(bad))
    with pytest.raises(ConfigError, match="no usable PEM"):
        Settings.load().tls_verify()
