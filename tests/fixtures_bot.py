"""Fixtures that run the real bot (``bot.runtime.run_bot``, the production code path) against
the local Bot API emulator, through python-telegram-bot's own HTTP client."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from telegram.ext import Application

from bot.config import Settings
from bot.content import Content
from bot.crypto.keyring import generate_keyring
from bot.db.engine import create_engine, is_sqlite, session_factory
from bot.db.migrate import upgrade
from bot.runtime import start_bot_task
from bot.sandbox.emulator import BotApiEmulator
from tests.fixtures_db import copied_from_template

ADMIN_ID = 424242


@pytest.fixture
async def emulator() -> AsyncIterator[BotApiEmulator]:
    async with BotApiEmulator() as emu:
        yield emu


@pytest.fixture
def content() -> Content:
    return Content()


def make_settings(emulator: BotApiEmulator, database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "telegram_bot_token": emulator.token,
        "telegram_api_base_url": emulator.base_url,
        "telegram_api_file_url": emulator.base_file_url,
        "database_url": database_url,
        "imrs_keys": generate_keyring().to_json(),
        "admin_telegram_ids": str(ADMIN_ID),
        "default_timezone": "Europe/Amsterdam",
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@dataclass
class RunningBot:
    """The bot running in this event loop; ``restart`` stops it cleanly and starts a new
    application on the same database, as a redeploy would."""

    settings: Settings
    webhook: bool = False
    application: Application | None = None
    _task: asyncio.Task | None = None
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self) -> None:
        self._stop = asyncio.Event()
        self._task, self.application = await start_bot_task(
            self.settings, stop=self._stop, timeout=15, webhook=self.webhook, poll_timeout=1
        )

    async def stop(self) -> None:
        if self._task is None:
            return
        self._stop.set()
        await asyncio.wait_for(self._task, timeout=15)
        self._task = None

    async def restart(self) -> None:
        await self.stop()
        await self.start()


async def prepare_database(database_url: str) -> None:
    """SQLite migrates itself at start (the embedded default); a server database is migrated
    beforehand, as the Procfile's release step does."""
    if not is_sqlite(database_url):
        await upgrade(database_url)


@pytest.fixture
async def db_sessions(database_url: str) -> AsyncIterator[Any]:
    """A session factory on the test database, for looking at what the bot stored."""
    engine = create_engine(database_url)
    try:
        yield session_factory(engine)
    finally:
        await engine.dispose()


@pytest.fixture
async def bot(emulator: BotApiEmulator, database_url: str) -> AsyncIterator[RunningBot]:
    if not copied_from_template(database_url):  # a copy of the migrated template already
        await prepare_database(database_url)
    running = RunningBot(make_settings(emulator, database_url))
    await running.start()
    try:
        yield running
    finally:
        with contextlib.suppress(Exception):
            await running.stop()
