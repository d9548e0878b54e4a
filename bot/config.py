"""Configuration: environment variables plus an optional ``.env`` file (pydantic-settings).

Every variable is documented in README.md ("Configuration"). A wrong or missing value ends
the program with one line saying what to do (``ConfigError``), never with a traceback.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal, Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from bot.errors import ConfigError

# Telegram bot tokens are "<bot id>:<secret>"; the secret is 35 URL-safe characters today.
TOKEN_PATTERN = re.compile(r"^\d{1,20}:[A-Za-z0-9_-]{30,100}$")
DEFAULT_DATABASE_URL = "sqlite:///var/imrs.sqlite3"


class Settings(BaseSettings):
    """What a deployment can configure. Field names map to upper-case environment variables."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False
    )

    telegram_bot_token: SecretStr | None = None
    telegram_api_base_url: str = "https://api.telegram.org/bot"
    telegram_api_file_url: str = "https://api.telegram.org/file/bot"

    database_url: str = DEFAULT_DATABASE_URL

    imrs_keys_file: Path | None = None
    imrs_keys: SecretStr | None = None
    # The key store (clients' data keys), a database apart from DATABASE_URL so that erasing a
    # client reaches backups of the clinical database; default: keystore.sqlite3 next to a
    # SQLite database, the clinical database itself on PostgreSQL (with a warning at start).
    imrs_keystore_url: str | None = None

    admin_telegram_ids: Annotated[frozenset[int], NoDecode] = frozenset()

    webhook_url: str | None = None
    webhook_secret: SecretStr | None = None
    port: int = Field(default=8080, ge=1, le=65535)

    default_timezone: str = "UTC"
    default_language: str = "en"

    log_level: str = "INFO"

    # Outbound delivery (bot.delivery): the outbox dispatcher's pacing, retries and lease.
    # The rate is the bot's total for messages it sends on its own initiative; several
    # instances share it. Telegram allows about 30 messages/s overall, 1/s per chat.
    outbox_rate_per_second: float = Field(default=25.0, gt=0, le=1000)
    outbox_per_chat_interval: float = Field(default=1.0, ge=0, le=60)  # seconds
    outbox_lease_seconds: float = Field(default=60.0, ge=5, le=3600)
    outbox_max_attempts: int = Field(default=6, ge=1, le=100)
    outbox_tick_seconds: float = Field(default=1.0, gt=0, le=60)
    # A reminder not sent within this many minutes of its time is dropped, not sent late.
    reminder_grace_minutes: int = Field(default=60, ge=1, le=24 * 60)
    # PostgreSQL: how often a standby instance tries to take over consuming updates.
    leader_retry_seconds: float = Field(default=2.0, gt=0, le=60)
    # The inbox (bot.inbox): processed updates are deleted after this many seconds; the
    # consumer looks for updates other instances stored this often (its own wake it at once).
    inbox_retention_seconds: float = Field(default=3600.0, ge=0, le=7 * 24 * 3600)
    inbox_poll_seconds: float = Field(default=0.5, gt=0, le=60)
    # How many updates of different chats the consumer processes at once (each chat's in
    # order, one at a time); 1 processes every update after the previous one.
    inbox_concurrency: int = Field(default=16, ge=1, le=256)
    # A factor on every timing of the paced exercises (breathing, muscle relaxation): 1.0 in
    # production; smaller for demonstrations and tests.
    practice_time_scale: float = Field(default=1.0, gt=0, le=10)
    # A client who answers yes to the crisis question: alert their therapist at once
    # ("immediate") or only flag it for the next summary ("summary").
    risk_alert: Literal["immediate", "summary"] = "immediate"
    # A clinic's own crisis lines (the shape of content/crisis_lines.yaml): each country in it
    # replaces the built-in entry. Checked at start; a malformed entry stops the bot.
    crisis_lines_file: Path | None = None
    # Appointments (bot.services.appointments): reminders to the client this many hours before
    # the start ("48,2"; "" for none), and the pre-appointment check-in prompt before an ImRS
    # appointment with its one reminder after it.
    appointment_reminder_hours: Annotated[tuple[int, ...], NoDecode] = (48, 2)
    checkin_prompt_hours: int = Field(default=24, ge=1, le=24 * 14)
    checkin_reminder_after_hours: int = Field(default=12, ge=1, le=24 * 14)

    # -- validation ---------------------------------------------------------------------------

    @field_validator("telegram_bot_token", mode="before")
    @classmethod
    def _token_shape(cls, value: object) -> object:
        if value in (None, ""):
            return None
        text = str(value.get_secret_value() if isinstance(value, SecretStr) else value).strip()
        if not TOKEN_PATTERN.match(text):
            # Never echo the value: it is a secret even when malformed.
            raise ValueError(
                "does not look like a bot token (expected '<digits>:<secret>' as given by @BotFather)"
            )
        return text

    @field_validator("admin_telegram_ids", mode="before")
    @classmethod
    def _comma_separated_ids(cls, value: object) -> object:
        if value is None or value == "":
            return frozenset()
        if isinstance(value, str):
            parts = [p.strip() for p in re.split(r"[,\s]+", value) if p.strip()]
            bad = [p for p in parts if not p.lstrip("-").isdigit()]
            if bad:
                raise ValueError(f"expected comma-separated numeric Telegram user ids, got {bad[0]!r}")
            return frozenset(int(p) for p in parts)
        return value

    @field_validator("appointment_reminder_hours", mode="before")
    @classmethod
    def _hours_list(cls, value: object) -> object:
        if value is None:
            return ()
        if isinstance(value, str):
            parts = [p.strip() for p in re.split(r"[,\s]+", value) if p.strip()]
            if not all(p.isdigit() and 1 <= int(p) <= 24 * 30 for p in parts):
                raise ValueError(f"expected comma-separated whole hours between 1 and 720, e.g. '48,2', got {value!r}")
            value = [int(p) for p in parts]
        return tuple(sorted(set(value), reverse=True))  # type: ignore[call-overload]

    @field_validator("default_timezone")
    @classmethod
    def _iana_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{value!r} is not an IANA time zone name (e.g. Europe/Amsterdam)") from None
        return value

    @field_validator("default_language")
    @classmethod
    def _language_code(cls, value: str) -> str:
        value = value.strip().lower()
        if not re.fullmatch(r"[a-z]{2,3}", value):
            raise ValueError(f"{value!r} is not a language code such as 'en' or 'nl'")
        return value

    @field_validator("webhook_url")
    @classmethod
    def _https_url(cls, value: str | None) -> str | None:
        if value and not re.match(r"^https?://", value):
            raise ValueError("must be a full URL such as https://bot.example.org/telegram")
        return value or None

    # -- derived ------------------------------------------------------------------------------

    @property
    def token(self) -> str | None:
        return self.telegram_bot_token.get_secret_value() if self.telegram_bot_token else None

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def embedded(self) -> bool:
        """The embedded default: a SQLite file. It migrates itself and may create its keyring."""
        return self.is_sqlite

    def require_token(self) -> str:
        if not self.token:
            raise ConfigError(
                "TELEGRAM_BOT_TOKEN is not set: put the token from @BotFather in the environment "
                "or in .env (or try the bot without one: `imrs-bot sandbox`)."
            )
        return self.token


def load_settings(**overrides: object) -> Settings:
    """Load settings, turning validation errors into one readable ``ConfigError`` line."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]).upper() or "configuration"
        message = str(first["msg"]).removeprefix("Value error, ")
        more = f" (and {exc.error_count() - 1} more problem(s))" if exc.error_count() > 1 else ""
        raise ConfigError(f"{field} {message}{more}. See README.md, 'Configuration'.") from None
