"""Settings, where they come from (environment, the working directory's .env, the user's .env), and
PBX URL normalisation."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from pydantic import SecretStr
from threecx_mcp.config import COMMAND_LINE, ENVIRONMENT, PbxEndpoint, Settings, SettingsIncomplete
from threecx_mcp.errors import ConfigError
from threecx_mcp.sanitise import redact


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
    for name in list(os.environ):
        if name.upper().startswith("THREECX_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("THREECX_CONFIG_DIR", str(tmp_path / "config"))  # not the user's own .env
    monkeypatch.chdir(tmp_path)  # no stray .env
    return monkeypatch


@pytest.fixture
def user_env(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """The user config directory's .env (not yet written); the working directory is another folder,
    as a desktop client's is."""
    (tmp_path / "config").mkdir()
    (tmp_path / "elsewhere").mkdir()
    clean_env.chdir(tmp_path / "elsewhere")
    return tmp_path / "config" / ".env"


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


def test_a_desktop_client_finds_the_users_dotenv_whatever_its_working_directory(user_env: Path) -> None:
    user_env.write_text(
        "THREECX_URL=pbx.example.com:5001\nTHREECX_CLIENT_ID=desk\nTHREECX_CLIENT_SECRET=k3y\n"
    )
    settings = Settings.load()
    connection = settings.connection()
    assert (connection.endpoint.origin, connection.client_id) == ("https://pbx.example.com:5001", "desk")
    assert connection.client_secret.get_secret_value() == "k3y"
    assert settings.sources.origin == dict.fromkeys(
        ["THREECX_URL", "THREECX_CLIENT_ID", "THREECX_CLIENT_SECRET"], str(user_env)
    )


def test_environment_beats_the_working_directory_which_beats_the_users_dotenv(
    user_env: Path, clean_env: pytest.MonkeyPatch
) -> None:
    user_env.write_text("THREECX_URL=user.example.com\nTHREECX_CLIENT_ID=user\nTHREECX_TIMEOUT=7\n")
    local = Path.cwd() / ".env"
    local.write_text("THREECX_URL=local.example.com\nTHREECX_CLIENT_ID=local\n")
    clean_env.setenv("THREECX_CLIENT_ID", "from-env")
    settings = Settings.load(read_only=True)
    assert settings.endpoint().origin == "https://local.example.com"
    assert (settings.client_id, settings.timeout, settings.read_only) == ("from-env", 7.0, True)
    assert settings.sources.origin == {
        "THREECX_URL": str(local),
        "THREECX_CLIENT_ID": ENVIRONMENT,
        "THREECX_TIMEOUT": str(user_env),
        "THREECX_READ_ONLY": COMMAND_LINE,
    }


def test_without_an_override_the_per_user_config_directory_is_read(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    if not sys.platform.startswith("linux"):
        pytest.skip("XDG_CONFIG_HOME places the user config directory on Linux only")
    clean_env.delenv("THREECX_CONFIG_DIR")
    clean_env.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    (tmp_path / "xdg" / "threecx-mcp").mkdir(parents=True)
    (tmp_path / "xdg" / "threecx-mcp" / ".env").write_text("THREECX_CLIENT_ID=xdg\n")
    assert Settings.load().client_id == "xdg"


def test_unknown_names_are_reported_and_values_never_kept(
    user_env: Path, clean_env: pytest.MonkeyPatch
) -> None:
    user_env.write_text("THREECX_CLIENT_SECERT=typo-k3y\nTHREECX_CLIENT_SECRET=real-k3y\nPATH_LIKE=x\n")
    clean_env.setenv("THREECX_URLL", "pbx.example.com")
    sources = Settings.load().sources
    assert sources.unknown == {"THREECX_CLIENT_SECERT": str(user_env), "THREECX_URLL": ENVIRONMENT}
    assert "k3y" not in repr(sources)


def test_an_empty_value_counts_as_unset(clean_env: pytest.MonkeyPatch) -> None:
    """A client's form (an MCP bundle's optional field) sends an empty string for a field left blank."""
    for name in ("THREECX_URL", "THREECX_CA_BUNDLE", "THREECX_CLIENT_SECRET_FILE", "THREECX_SANDBOX"):
        clean_env.setenv(name, "")
    clean_env.setenv("THREECX_CLIENT_SECRET", "k3y")
    settings = Settings.load()
    assert settings.url is None and settings.ca_bundle is None and settings.sandbox is False
    assert settings.tls_verify() is True and settings.api_key().get_secret_value() == "k3y"
    assert settings.sources.origin == {"THREECX_CLIENT_SECRET": ENVIRONMENT}


def test_every_missing_setting_is_named_at_once(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clean_env.setenv("THREECX_CA_BUNDLE", str(tmp_path / "missing.pem"))
    with pytest.raises(SettingsIncomplete) as caught:
        Settings.load().connection()
    named = ["THREECX_URL is not set", "THREECX_CLIENT_ID is not set", "THREECX_CLIENT_SECRET is not set"]
    assert [
        next(n for n in [*named, "THREECX_CA_BUNDLE"] if n in p.message) for p in caught.value.problems
    ] == [
        *named,
        "THREECX_CA_BUNDLE",
    ]
    assert all(words in caught.value.user_message() for words in named)


def test_a_malformed_value_names_the_file_it_came_from(user_env: Path) -> None:
    user_env.write_text("THREECX_TIMEOUT=soon\n")
    with pytest.raises(ConfigError) as caught:
        Settings.load()
    assert f"THREECX_TIMEOUT (from {user_env})" in caught.value.user_message()


def test_the_sandbox_says_that_it_ignores_a_configured_pbx(
    user_env: Path, clean_env: pytest.MonkeyPatch
) -> None:
    user_env.write_text("THREECX_URL=pbx.example.com\nTHREECX_SANDBOX=true\n")
    notice = Settings.load().sandbox_notice()
    assert notice is not None
    assert f"THREECX_SANDBOX=true from {user_env}" in notice and "THREECX_URL is set but ignored" in notice
    assert "Remove THREECX_SANDBOX" in notice and "pbx.example.com" not in notice
    user_env.write_text("THREECX_URL=pbx.example.com\n")
    flagged = Settings.load(sandbox=True).sandbox_notice()
    assert flagged is not None and "(--sandbox)" in flagged and "Run without --sandbox" in flagged
    user_env.write_text("")
    assert Settings.load(sandbox=True).sandbox_notice() is None  # nothing to mistake it for
    assert Settings.load(url="pbx.example.com", client_secret=SecretStr("k")).sandbox_notice() is None


# -- .env files read once, in any encoding a desktop user saves ----------------------------------


def test_a_utf16_env_file_is_named_with_the_fix(user_env: Path, clean_env: pytest.MonkeyPatch) -> None:
    user_env.write_bytes("THREECX_URL=pbx.example.com\r\nTHREECX_CLIENT_ID=desk\r\n".encode("utf-16"))
    with pytest.raises(SettingsIncomplete) as caught:
        Settings.load()
    (problem,) = caught.value.problems
    assert str(user_env) in problem.message and "UTF-16" in problem.message and "as UTF-8" in problem.message
    clean_env.setenv("THREECX_CLIENT_ID", "from-env")
    collected = Settings.load(collect_problems=True)  # doctor: the rest is read all the same
    assert collected.client_id == "from-env"
    with pytest.raises(SettingsIncomplete) as listed:
        collected.connection()
    assert [str(user_env) in p.message for p in listed.value.problems][:2] == [True, False]


def test_a_utf8_env_file_with_a_byte_order_mark_is_read(user_env: Path) -> None:
    user_env.write_bytes("THREECX_CLIENT_ID=desk\n".encode("utf-8-sig"))  # Notepad's "UTF-8 with BOM"
    settings = Settings.load()
    assert settings.client_id == "desk" and not settings.sources.unknown


def test_a_line_that_is_not_a_setting_is_reported_once_by_file_and_line_never_its_text(
    user_env: Path, caplog: pytest.LogCaptureFixture
) -> None:
    user_env.write_text('THREECX_URL=pbx.example.com\nmy k3y, pasted\nTHREECX_CLIENT_ID="open\n')
    with caplog.at_level("WARNING"):
        settings = Settings.load()
    said = [record.getMessage() for record in caplog.records]
    assert said == [
        f"{user_env}, line 2, is not a KEY=value setting, so it is ignored; correct or remove it.",
        (
            f"{user_env}, line 3, is not a KEY=value setting, so it is ignored; correct or remove it "
            "(is a quote left open?)."
        ),
    ]
    assert settings.url == "pbx.example.com" and settings.client_id is None
    assert "k3y" not in caplog.text


def test_an_invalid_value_is_listed_beside_every_missing_setting(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("THREECX_TIMEOUT", "abc")
    clean_env.setenv("THREECX_VERIFY_TLS", "perhaps")
    with pytest.raises(SettingsIncomplete) as stopped:
        Settings.load()
    assert [p.message.split(" (from")[0] for p in stopped.value.problems] == [
        "THREECX_VERIFY_TLS",
        "THREECX_TIMEOUT",
    ]
    assert "abc" not in stopped.value.user_message() and "Input" not in stopped.value.user_message()
    settings = Settings.load(collect_problems=True)
    assert settings.timeout == 30.0  # set aside, so that the other checks can run
    with pytest.raises(SettingsIncomplete) as listed:
        settings.connection()
    assert [p.message.split(" (from")[0].split(" is not set")[0] for p in listed.value.problems] == [
        "THREECX_VERIFY_TLS",
        "THREECX_TIMEOUT",
        "THREECX_URL",
        "THREECX_CLIENT_ID",
        "THREECX_CLIENT_SECRET",
    ]
    assert "THREECX_TIMEOUT (from the environment) is not valid: it should be a valid number" in (
        listed.value.user_message()
    )


# -- precedence per setting: the API key, or a file holding it -----------------------------------


def test_the_key_from_a_higher_source_beats_a_key_file_from_a_lower_one(
    user_env: Path, clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    key_file = tmp_path / "api-key"
    key_file.write_text("from-the-file\n")
    user_env.write_text(f"THREECX_CLIENT_SECRET_FILE={key_file}\n")
    clean_env.setenv("THREECX_CLIENT_SECRET", "from-the-env")
    settings = Settings.load()
    assert settings.api_key().get_secret_value() == "from-the-env" and settings.client_secret_file is None
    assert settings.sources.overridden == {
        "THREECX_CLIENT_SECRET_FILE": (str(user_env), "THREECX_CLIENT_SECRET")
    }
    assert "THREECX_CLIENT_SECRET_FILE" not in settings.sources.origin
    clean_env.delenv("THREECX_CLIENT_SECRET")
    user_env.write_text("THREECX_CLIENT_SECRET=from-the-user-env\n")
    (Path.cwd() / ".env").write_text(f"THREECX_CLIENT_SECRET_FILE={key_file}\n")  # the working folder's wins
    settings = Settings.load()
    assert settings.api_key().get_secret_value() == "from-the-file"
    assert settings.sources.overridden == {
        "THREECX_CLIENT_SECRET": (str(user_env), "THREECX_CLIENT_SECRET_FILE")
    }


def test_the_key_and_a_key_file_in_one_source_contradict(user_env: Path, tmp_path: Path) -> None:
    user_env.write_text(f"THREECX_CLIENT_SECRET=k3y\nTHREECX_CLIENT_SECRET_FILE={tmp_path / 'key'}\n")
    with pytest.raises(ConfigError) as caught:
        Settings.load().api_key()
    assert caught.value.message == (
        f"Both THREECX_CLIENT_SECRET and THREECX_CLIENT_SECRET_FILE are set in {user_env}; keep only one."
    )


# -- a key pasted where a path belongs is never shown ---------------------------------------------


@pytest.mark.parametrize(
    ("variable", "read"),
    [
        ("THREECX_CLIENT_SECRET_FILE", Settings.api_key),
        ("THREECX_CA_BUNDLE", Settings.tls_verify),
    ],
)
def test_a_value_naming_no_file_is_not_echoed_and_stays_secret(
    clean_env: pytest.MonkeyPatch, variable: str, read: object
) -> None:
    pasted = f"Zq8{variable[-4:]}pasted7Key4Xv"  # its own value per case: the redaction registry is global
    clean_env.setenv(variable, pasted)
    settings = Settings.load()
    with pytest.raises(ConfigError) as caught:
        read(settings)  # type: ignore[operator]
    said = caught.value.user_message()
    assert pasted not in said and f"a value of {len(pasted)} characters, not shown" in said
    assert redact(f"the PBX said {pasted}") == "the PBX said [redacted]"  # nor in any later message


def test_a_key_file_that_is_not_text_is_refused_with_the_fix(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    binary = tmp_path / "key.bin"
    binary.write_bytes(b"\xff\xfek\x00")
    clean_env.setenv("THREECX_CLIENT_SECRET_FILE", str(binary))
    with pytest.raises(ConfigError, match="is not a text file in UTF-8; save the API key in it as plain"):
        Settings.load().api_key()
