"""Fixtures that run the real bot (``bot.runtime.run_bot``, the production code path) against
the local Bot API emulator, through python-telegram-bot's own HTTP client.

Waiting on events rather than on the clock:

* the ``emulator`` fixture has every bot of the test report each update it has finished
  processing (all handler groups ran, whether a handler stopped the others or failed, and the
  inbox row is completed) to the emulator, so ``SimUser.expect_silence`` lasts until the bot
  has read what it should not answer, however busy the machine is;
* the bot's outbox ticks every ``TEST_OUTBOX_TICK`` seconds instead of every second, and
  ``RunningBot.outbox_settled()`` waits for whole dispatcher rounds instead of a time window.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from telegram.ext import Application, Job

from bot.config import Settings
from bot.content import Content
from bot.crypto.keyring import generate_keyring
from bot.db.engine import create_engine, is_sqlite, session_factory
from bot.db.migrate import upgrade
from bot.delivery import Dispatcher, dispatcher_of
from bot.inbox import InboxConsumer, Stored
from bot.runtime import start_bot_task
from bot.sandbox.emulator import BotApiEmulator
from tests.fixtures_db import copied_from_template

ADMIN_ID = 424242
#: The outbox dispatcher's tick in tests (production: OUTBOX_TICK_SECONDS, 1 s): a notice
#: arrives within a tenth of a second instead of a second.
TEST_OUTBOX_TICK = 0.1
#: How long a SimUser wait (next_message, wait_for, ...) lasts by default before it fails. Waits
#: end as soon as the bot acts, so this costs nothing when it does; it only keeps a busy
#: machine (the suite beside other CPU-heavy jobs) from failing a test that would pass.
TEST_PATIENCE = 20.0


@pytest.fixture
async def emulator(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[BotApiEmulator]:
    async with BotApiEmulator() as emu:
        emu.state.patience = TEST_PATIENCE
        report_processed_updates(emu, monkeypatch)
        yield emu


def report_processed_updates(emulator: BotApiEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every bot talking to ``emulator`` tells it which updates it has processed.

    A wrapper of the inbox consumer's step (for this test only) rather than a handler in a
    late group: it reports once the update is completed (all handler groups ran, whether a
    handler stopped the others or failed, and its row and conversation states are committed,
    bot.inbox), and it is in place before the bot fetches anything, also across restarts.
    Production code knows nothing of it."""
    original = InboxConsumer._process

    async def process(self: InboxConsumer, stored: Stored) -> None:
        try:
            await original(self, stored)
        finally:
            if self._application.bot.base_url.startswith(emulator.base_url):
                emulator.state.update_processed(stored.update_id)

    monkeypatch.setattr(InboxConsumer, "_process", process)
    emulator.state.report_processing()


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
        "outbox_tick_seconds": TEST_OUTBOX_TICK,
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

    _rounds: int = 0  # outbox dispatcher rounds completed (see outbox_settled)
    _round_done: asyncio.Event = field(default_factory=asyncio.Event)
    #: JobQueue jobs run to their end, by name (counted by the ``bot`` fixture).
    jobs_run: Counter[str] = field(default_factory=Counter)
    _jobs_at_start: Counter[str] = field(default_factory=Counter)
    _job_done: asyncio.Event = field(default_factory=asyncio.Event)

    def job_finished(self, name: str | None) -> None:
        self.jobs_run[name or ""] += 1
        self._job_done.set()

    async def job_ran(self, name: str, timeout: float = 15.0) -> None:
        """Wait until a JobQueue job called ``name`` has run to its end since the last start
        (needs the ``bot`` fixture, which counts them)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.jobs_run[name] <= self._jobs_at_start[name]:
            self._job_done.clear()
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(f"job {name!r} did not run within {timeout}s of the last start")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._job_done.wait(), remaining)

    async def start(self) -> None:
        self._stop = asyncio.Event()
        self._jobs_at_start = Counter(self.jobs_run)
        self._task, self.application = await start_bot_task(
            self.settings, stop=self._stop, timeout=15, webhook=self.webhook, poll_timeout=1
        )
        self._count_rounds(dispatcher_of(self.application))

    def _count_rounds(self, dispatcher: Dispatcher | None) -> None:
        if dispatcher is None:
            return
        one_round = dispatcher._tick

        async def counted(now: Any) -> int:
            try:
                return await one_round(now)
            finally:
                self._rounds += 1
                self._round_done.set()

        dispatcher._tick = counted  # type: ignore[method-assign]

    async def outbox_settled(self, rounds: int = 2, timeout: float = 15.0) -> None:
        """Wait until the outbox dispatcher has run ``rounds`` whole ticks that began after this
        call (each plans due reminders and claims due rows) and has sent and recorded all it
        claimed: what the outbox would deliver by now has been delivered."""
        dispatcher = dispatcher_of(self.application) if self.application else None
        if dispatcher is None:
            raise AssertionError("the bot is not running (no outbox dispatcher)")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        # A round in progress began before this call: it does not count.
        target = self._rounds + rounds + (1 if dispatcher._tick_lock.locked() else 0)
        while self._rounds < target:
            self._round_done.clear()
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(f"the outbox dispatcher did not tick {rounds} times within {timeout}s")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._round_done.wait(), remaining)
        await dispatcher.idle(timeout=max(0.1, deadline - loop.time()))

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


def count_finished_jobs(running: RunningBot, monkeypatch: pytest.MonkeyPatch) -> None:
    """``running.jobs_run`` counts the JobQueue jobs that ran to their end (for this test
    only: a wrapper of ``Job.run``, through which the JobQueue runs every job)."""
    original = Job.run

    async def run(self: Job, application: Application) -> None:
        try:
            await original(self, application)
        finally:
            running.job_finished(self.name)

    monkeypatch.setattr(Job, "run", run)


@pytest.fixture
async def bot(
    emulator: BotApiEmulator, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[RunningBot]:
    if not copied_from_template(database_url):  # a copy of the migrated template already
        await prepare_database(database_url)
    running = RunningBot(make_settings(emulator, database_url))
    count_finished_jobs(running, monkeypatch)
    await running.start()
    try:
        yield running
    finally:
        with contextlib.suppress(Exception):
            await running.stop()
