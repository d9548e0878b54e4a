"""`imrs-bot sandbox`: the emulator, the real bot against it, and a terminal chat.

The bot runs through ``bot.runtime.run_bot`` exactly as in production; only the Bot API
server (the local emulator), the database and the keyring (both under ``var/sandbox/``)
differ. The person at the keyboard plays an admin, a therapist and a client.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sys
from pathlib import Path

from pydantic import SecretStr

from bot.config import DEFAULT_DATABASE_URL, Settings
from bot.runtime import open_services, start_bot_task
from bot.sandbox.emulator import BotApiEmulator
from bot.sandbox.terminal import run_terminal_chat

SANDBOX_DIR = Path("var/sandbox")
SANDBOX_DATABASE_URL = f"sqlite:///{SANDBOX_DIR}/sandbox.sqlite3"

# The simulated people: Telegram user ids, names and languages.
ADMIN_ID, THERAPIST_ID, CLIENT_ID = 100001, 100002, 100003


def sandbox_settings(settings: Settings, emulator: BotApiEmulator) -> Settings:
    """The operator's settings, pointed at the emulator and the sandbox's own files."""
    database_url = settings.database_url
    if database_url == DEFAULT_DATABASE_URL:
        database_url = SANDBOX_DATABASE_URL  # never mix sandbox people into the real database
    return settings.model_copy(
        update={
            "telegram_bot_token": SecretStr(emulator.token),
            "telegram_api_base_url": emulator.base_url,
            "telegram_api_file_url": emulator.base_file_url,
            "database_url": database_url,
            "admin_telegram_ids": frozenset({*settings.admin_telegram_ids, ADMIN_ID}),
            "webhook_url": None,
        }
    )


async def run_sandbox(settings: Settings, *, fresh: bool = False, input_stream=None, output=None) -> None:
    if fresh and SANDBOX_DIR.exists():
        shutil.rmtree(SANDBOX_DIR)
    SANDBOX_DIR.mkdir(parents=True, exist_ok=True)
    async with BotApiEmulator() as emulator:
        local = sandbox_settings(settings, emulator)
        services = await open_services(local, embedded_keys_file=SANDBOX_DIR / "keys.json")
        people = {
            "admin": emulator.user(ADMIN_ID, first_name="Ada", language_code="en"),
            "therapist": emulator.user(THERAPIST_ID, first_name="Theo", language_code="en"),
            "client": emulator.user(CLIENT_ID, first_name="Sam", language_code="en"),
        }
        stop = asyncio.Event()
        bot: asyncio.Task[None] | None = None
        try:
            bot, _ = await start_bot_task(local, stop=stop, services=services, poll_timeout=10)
            await run_terminal_chat(
                emulator,
                people,
                initial="client",
                input_stream=input_stream or sys.stdin,
                output=output or sys.stdout,
            )
        finally:
            stop.set()
            if bot is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await bot
            await services.close()
