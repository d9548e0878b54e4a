"""Fault injection through the real stack (issue #16): the Bot API down, slow, or answering
5xx / 429; the database's connections killed mid-transaction or the server restarting;
SQLite full or locked. Through all of them the bot keeps answering what it can, recovers
by itself, loses nothing and sends nothing twice beyond what README.md ("Faults and
recovery") documents, and logs nothing a person wrote.

"For minutes" is compressed: the outbox backs off in hundredths of a second here (the
``quick_retries`` fixture), so an outage of a second or two outlasts every retry the
dispatcher would make in production within several minutes. The tests wait on events
(messages, dispatcher counters, the emulator's processed updates), never on fixed sleeps.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator

import pytest
from sqlalchemy import select

from bot.db.delivery_models import OutboxKind, OutboxMessage, OutboxState
from bot.delivery import dispatcher_of
from bot.delivery.dispatcher import DispatcherConfig
from bot.logs import PrivacyFilter, SeenTexts
from bot.sandbox.emulator import BotApiEmulator, SimUser
from tests.fixtures_bot import RunningBot
from tests.fixtures_delivery import add_people
from tests.join_support import services

REMINDER = "outbox.practice_reminder"
REMINDER_START = "A gentle reminder"
#: Written by people during the faults; must never reach a log line.
PRIVATE = "MARKER-c41f my private words about last night"
MAX_ATTEMPTS = 3


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """The running bot's outbox backs off in hundredths of a second instead of seconds, and
    gives a message up after three tries: a fault of a second outlasts every retry."""
    original = DispatcherConfig.from_settings.__func__  # type: ignore[attr-defined]

    def quick(cls: type[DispatcherConfig], settings: object) -> DispatcherConfig:
        return dataclasses.replace(
            original(cls, settings), backoff_base=0.05, backoff_cap=0.2, max_attempts=MAX_ATTEMPTS
        )

    monkeypatch.setattr(DispatcherConfig, "from_settings", classmethod(quick))


@pytest.fixture
def logged() -> Iterator[io.StringIO]:
    """Every log line at DEBUG, through the project's privacy filter but without its last
    safety net (redacting texts seen in updates): what the code itself writes."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(PrivacyFilter(seen=SeenTexts()))
    root = logging.getLogger()
    root.addHandler(handler)
    old_level, root.level = root.level, logging.DEBUG
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.level = old_level


def assert_nothing_private(logged: io.StringIO) -> None:
    text = logged.getvalue()
    assert "MARKER-c41f" not in text
    assert "private words" not in text


async def until(condition: Callable[[], bool | Awaitable[bool]], timeout: float = 20.0, what: str = "") -> None:
    """Wait until ``condition()`` holds (it may be async), polling every 20 ms."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = condition()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            raise AssertionError(f"still not {what or 'true'} after {timeout}s")
        await asyncio.sleep(0.02)


async def outbox_states(bot: RunningBot) -> Counter[OutboxState]:
    async with services(bot).sessions() as session:
        return Counter((await session.scalars(select(OutboxMessage.state))).all())


async def queue_reminders(bot: RunningBot, people: list[tuple[int, SimUser]], tag: str) -> None:
    for person_id, _ in people:
        await services(bot).outbox.enqueue(
            person_id, kind=OutboxKind.REMINDER, idempotency_key=f"{tag}:{person_id}", content_key=REMINDER
        )


def reminders_received(user: SimUser) -> int:
    return sum(1 for m in user.messages if m.content.startswith(REMINDER_START))


def help_replies(user: SimUser) -> int:
    return sum(1 for m in user.messages if not m.content.startswith(REMINDER_START))


# -- the Bot API down, slow, 5xx, 429 -------------------------------------------------------------


class Outage:
    """One kind of Bot API fault, switched on and off."""

    def __init__(self, kind: str, emulator: BotApiEmulator) -> None:
        self.kind = kind
        self.emulator = emulator

    async def begin(self) -> None:
        if self.kind in ("refused", "dropped"):
            await self.emulator.go_down("refuse" if self.kind == "refused" else "close")
        elif self.kind == "5xx":
            self.emulator.inject(None, status=502, count=None)
        elif self.kind == "429":
            self.emulator.inject(None, status=429, retry_after=1, count=None)
        elif self.kind == "slow":
            self.emulator.inject(None, delay=0.3, count=None)

    async def end(self) -> None:
        self.emulator.clear_faults()
        if self.emulator.down:
            await self.emulator.come_back()

    def outlasted_retries(self, bot: RunningBot, rows: int) -> bool:
        """Whether the fault has lasted long enough to matter: every row failed more often
        than MAX_ATTEMPTS (a 429 is not an attempt: two flood waits), or, merely slow, all
        were sent meanwhile."""
        stats = dispatcher_of(bot.application).stats  # type: ignore[union-attr]
        if self.kind == "429":
            return stats.flood_waits >= 2
        if self.kind == "slow":
            return stats.sent >= rows
        return stats.dead > 0 or stats.retried >= rows * (MAX_ATTEMPTS + 1)


@pytest.mark.parametrize("kind", ["refused", "dropped", "5xx", "429", "slow"])
async def test_bot_api_faults_lose_nothing_and_duplicate_nothing(
    kind: str, bot: RunningBot, emulator: BotApiEmulator, logged: io.StringIO
) -> None:
    """During the fault people write and reminders fall due; afterwards every update is
    answered once and every reminder arrives once, by itself."""
    people = await add_people(services(bot).sessions, emulator, 3)
    outage = Outage(kind, emulator)
    await outage.begin()
    try:
        await queue_reminders(bot, people, "during")
        for _, user in people:
            await user.send("/help")
            await user.send(PRIVATE)
        await until(lambda: outage.outlasted_retries(bot, len(people)), what="past the retries")
    finally:
        await outage.end()
    for _, user in people:
        await until(lambda user=user: reminders_received(user) == 1 and help_replies(user) >= 2,
                    what="answered after the fault")
    await emulator.updates_processed()
    await bot.outbox_settled()
    for _, user in people:
        assert reminders_received(user) == 1, "each reminder exactly once"
        assert help_replies(user) == 2, "each update answered once: /help and the stray text"
    assert await outbox_states(bot) == Counter({OutboxState.SENT: len(people)})
    assert bot._task is not None and not bot._task.done(), "the bot is still running"
    assert_nothing_private(logged)
