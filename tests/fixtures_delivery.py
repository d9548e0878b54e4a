"""Helpers for the outbound delivery tests (test_outbox.py, test_schedules.py,
test_instances.py): people the bot may write to, a Bot on the emulator, a dispatcher.

Import what a module uses: ``from tests.fixtures_delivery import *``. Everything builds on
``session_factory`` (tests/fixtures_db.py), so the tests run on ``[sqlite]`` and
``[postgresql]``.
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from telegram.constants import ParseMode
from telegram.ext import Defaults, ExtBot

from bot.content import Content
from bot.crypto.fields import SESSION_INFO_KEY, FieldCrypto
from bot.db.delivery_models import OutboxMessage
from bot.db.models import ConsentChoice, ConsentRecord, Person, Role
from bot.db.types import utcnow
from bot.delivery.dispatcher import Dispatcher, DispatcherConfig
from bot.delivery.outbox import OutboxService
from bot.delivery.ratelimit import bot_rate_limiter
from bot.delivery.schedules import ScheduleService
from bot.delivery.store import OutboxStore
from bot.sandbox.emulator import BotApiEmulator, SimUser

Sessions = async_sessionmaker[AsyncSession]

__all__ = [
    "FakeClock",
    "Sessions",
    "add_people",
    "crypto_of",
    "delivery_bot",
    "make_dispatcher",
    "outbox_rows",
    "reachable_user",
    "FAST",
]

#: Dispatcher settings for tests: quick backoff, a high rate unless a test says otherwise.
FAST = DispatcherConfig(
    rate_per_second=200.0,
    per_chat_interval=1.0,
    backoff_base=0.05,
    backoff_cap=0.2,
    tick_seconds=0.05,
    max_attempts=4,
)


class FakeClock:
    """A wall clock the test moves: ``clock()`` is now, ``clock.now = ...`` sets it."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def crypto_of(sessions: Sessions) -> FieldCrypto:
    return sessions.kw["info"][SESSION_INFO_KEY]


def reachable_user(emulator: BotApiEmulator, **kwargs: Any) -> SimUser:
    """A person who has pressed Start (so the bot may write first), without sending an
    update the bot would have to consume."""
    user = emulator.user(**kwargs)
    emulator.state.chats[user.id].reachable = True
    return user


async def add_people(
    sessions: Sessions,
    emulator: BotApiEmulator,
    count: int,
    *,
    language: str = "en",
    timezone: str = "Europe/Amsterdam",
) -> list[tuple[int, SimUser]]:
    """``count`` clients, each with a reachable emulator chat: [(person id, user)]."""
    users = [reachable_user(emulator) for _ in range(count)]
    async with sessions.begin() as session:
        people = [
            Person(telegram_id=user.id, role=Role.CLIENT, language=language, timezone=timezone)
            for user in users
        ]
        session.add_all(people)
        await session.flush()
        ids = [person.id for person in people]
        await grant_consent(session, ids)
    return list(zip(ids, users, strict=True))


async def grant_consent(session: AsyncSession, person_ids: list[int]) -> None:
    """Clients who consented (to the current text: an earlier version would get them a
    notice): the running bot's outbox sends nothing to the others."""
    version = Content().text("consent.version")
    session.add_all(
        ConsentRecord(person_id=person_id, consent_version=version, choice=ConsentChoice.GRANTED, recorded_at=utcnow())
        for person_id in person_ids
    )


@pytest.fixture
async def delivery_bot(emulator: BotApiEmulator) -> AsyncIterator[ExtBot]:
    """The bot as bot.app builds it: HTML, protected content, the project's rate limiter."""
    bot: ExtBot = ExtBot(
        emulator.token,
        base_url=emulator.base_url,
        base_file_url=emulator.base_file_url,
        defaults=Defaults(parse_mode=ParseMode.HTML, protect_content=True),
        rate_limiter=bot_rate_limiter(200, max_retries=3),
    )
    await bot.initialize()
    try:
        yield bot
    finally:
        await bot.shutdown()


def make_dispatcher(
    bot: ExtBot,
    sessions: Sessions,
    *,
    config: DispatcherConfig = FAST,
    clock: Callable[[], datetime] | None = None,
    planner: ScheduleService | None = None,
    **overrides: Any,
) -> Dispatcher:
    if overrides:
        config = dataclasses.replace(config, **overrides)
    options: dict[str, Any] = {"config": config, "planner": planner}
    if clock is not None:
        options["clock"] = clock
    return Dispatcher(bot, OutboxStore(sessions, crypto_of(sessions)), Content(), **options)


async def outbox_rows(sessions: Sessions) -> list[OutboxMessage]:
    async with sessions() as session:
        return list((await session.scalars(select(OutboxMessage).order_by(OutboxMessage.due_at))).all())


def key(prefix: str = "test") -> str:
    return f"{prefix}:{secrets.token_hex(4)}"


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


__all__ += ["key", "utc", "OutboxService"]
