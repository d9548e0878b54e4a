"""Settings: environment and .env, validated into one readable line per mistake."""

from __future__ import annotations

import pytest

from bot.config import DEFAULT_DATABASE_URL, load_settings
from bot.errors import ConfigError

TOKEN = "123456789:" + "A" * 35


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    for name in ("TELEGRAM_BOT_TOKEN", "DATABASE_URL", "ADMIN_TELEGRAM_IDS", "DEFAULT_TIMEZONE",
                 "DEFAULT_LANGUAGE", "IMRS_KEYS", "IMRS_KEYS_FILE", "WEBHOOK_URL", "PORT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


def test_defaults_are_the_embedded_setup():
    settings = load_settings()
    assert settings.token is None
    assert settings.database_url == DEFAULT_DATABASE_URL and settings.embedded
    assert settings.admin_telegram_ids == frozenset()
    assert settings.telegram_api_base_url == "https://api.telegram.org/bot"


def test_dotenv_and_environment(monkeypatch: pytest.MonkeyPatch, tmp_path):
    (tmp_path / ".env").write_text(
        f"TELEGRAM_BOT_TOKEN={TOKEN}\nADMIN_TELEGRAM_IDS=11, 22\nDEFAULT_TIMEZONE=Europe/Amsterdam\n"
    )
    monkeypatch.setenv("DATABASE_URL", "postgresql://postgres@db/imrs")
    settings = load_settings()
    assert settings.token == TOKEN
    assert settings.admin_telegram_ids == frozenset({11, 22})
    assert settings.default_timezone == "Europe/Amsterdam"
    assert not settings.embedded


@pytest.mark.parametrize(
    ("variable", "value", "needle"),
    [
        ("TELEGRAM_BOT_TOKEN", "12345", "does not look like a bot token"),
        ("TELEGRAM_BOT_TOKEN", "abc:" + "x" * 35, "does not look like a bot token"),
        ("ADMIN_TELEGRAM_IDS", "1,two", "numeric Telegram user ids"),
        ("DEFAULT_TIMEZONE", "Europe/Atlantis", "IANA"),
        ("DEFAULT_LANGUAGE", "english", "language code"),
        ("PORT", "99999", "PORT"),
        ("WEBHOOK_URL", "bot.example.org", "full URL"),
    ],
)
def test_mistakes_are_one_line_naming_the_variable(monkeypatch, variable, value, needle):
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    message = str(caught.value)
    assert "\n" not in message
    assert variable in message and needle in message
    if variable == "TELEGRAM_BOT_TOKEN":
        assert value not in message, "a token, even a malformed one, is never echoed"


def test_require_token_explains_the_sandbox():
    with pytest.raises(ConfigError, match="imrs-bot sandbox"):
        load_settings().require_token()
