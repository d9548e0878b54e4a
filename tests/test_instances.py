"""Several instances on one PostgreSQL database: all deliver the outbox, exactly one consumes
updates (the leader lock), a standby takes over after ``kill -9`` and conversations go on.
SQLite is single-instance."""

from __future__ import annotations

import asyncio
import itertools
import signal
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, text
from telegram.ext import ConversationHandler

from bot.db.delivery_models import DeliveryInstance, OutboxKind, OutboxMessage, OutboxState
from bot.db.engine import create_engine, session_factory
from bot.db.models import ConversationState, Person, Role
from bot.db.repositories import ConversationStateRepository
from bot.db.types import utcnow
from bot.delivery import dispatcher_of
from bot.delivery.leadership import (
    INSTANCE_TTL,
    InstanceRegistry,
    PostgresAdvisoryLock,
    SingleInstanceLock,
    leader_lock_for,
    reload_conversations,
)
from bot.delivery.outbox import OutboxService, PlainMessage
from bot.sandbox.emulator import BotApiEmulator, FloodLimits
from tests.fixtures_bot import prepare_database
from tests.fixtures_delivery import grant_consent, reachable_user
from tests.test_cli import BotProcess, bot_env

REMINDER = "outbox.practice_reminder"


def test_sqlite_is_single_instance():
    assert isinstance(leader_lock_for("sqlite:///var/x.sqlite3"), SingleInstanceLock)
    assert isinstance(leader_lock_for("postgresql://u@h/db"), PostgresAdvisoryLock)


# -- in-process ---------------------------------------------------------------------------------------


async def test_takeover_reloads_conversation_states_from_the_database(bot, db_sessions):
    """A standby's in-memory conversation states are stale; reload_conversations replaces
    them by the database's (python-telegram-bot itself reads them only at initialize)."""
    application = bot.application
    handler = next(
        h for h in itertools.chain.from_iterable(application.handlers.values())
        if isinstance(h, ConversationHandler) and h.persistent and h.name == "welcome"
    )
    # Meanwhile, the leader moved one person into the tour and another one's conversation ended.
    handler._conversations.update_no_track({(11, 11): "offer", (12, 12): "tour"})  # noqa: SLF001
    async with db_sessions.begin() as session:
        await ConversationStateRepository(session).save("welcome", (11, 11), "tour")
    assert await reload_conversations(application) >= 1
    assert dict(handler._conversations) == {(11, 11): "tour"}  # noqa: SLF001
    # Nothing was marked as changed: the next persistence run writes nothing back.
    await application.update_persistence()
    async with db_sessions() as session:
        rows = (await session.scalars(select(ConversationState))).all()
    assert [(r.name, r.key, r.state) for r in rows] == [("welcome", "[11,11]", "tour")]


async def test_the_running_bot_dispatches_the_outbox(bot, emulator, db_sessions):
    """run_bot starts the dispatcher from the JobQueue; queued messages arrive."""
    services = bot.application.bot_data["services"]
    user = reachable_user(emulator)
    async with db_sessions.begin() as session:
        person = Person(telegram_id=user.id, role=Role.CLIENT, language="en", timezone="UTC")
        session.add(person)
        await session.flush()
        await grant_consent(session, [person.id])
    await services.outbox.enqueue(person.id, kind=OutboxKind.REMINDER, idempotency_key="r1",
                                  content_key=REMINDER)
    message = await user.next_message(timeout=10)
    assert message.text.startswith("A gentle reminder")
    assert dispatcher_of(bot.application) is not None
    await bot.stop()
    assert dispatcher_of(bot.application) is None  # stopped with the bot


# -- PostgreSQL: the leader lock and the registry ---------------------------------------------------


@pytest.mark.postgres
async def test_the_leader_lock_is_held_by_one_and_freed_when_its_session_dies(fresh_postgres_url):
    first, second = PostgresAdvisoryLock(fresh_postgres_url), PostgresAdvisoryLock(fresh_postgres_url)
    try:
        assert await first.acquire()
        assert await first.acquire()  # still ours
        assert not await second.acquire()
        await first.release()
        assert await second.acquire()
        assert not await first.acquire()
        # The holder's connection dies (as with kill -9): the lock is free at once.
        engine = create_engine(fresh_postgres_url)
        async with engine.begin() as connection:
            await connection.execute(text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = 'imrs-bot leader lock' AND datname = current_database() "
                "AND pid IN (SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted)"
            ))
        await engine.dispose()
        assert not await second.holding()
        assert await first.acquire()
    finally:
        await first.release()
        await second.release()


@pytest.mark.postgres
async def test_instances_share_the_rate(fresh_postgres_url):
    await prepare_database(fresh_postgres_url)
    engine = create_engine(fresh_postgres_url)
    try:
        sessions = session_factory(engine)
        one, two = InstanceRegistry(sessions), InstanceRegistry(sessions)
        now = utcnow()
        assert await one.heartbeat(now, consuming_updates=True) == 1
        assert await two.heartbeat(now, consuming_updates=False) == 2
        await two.leave()
        assert await one.heartbeat(now, consuming_updates=True) == 1
        await two.heartbeat(now, consuming_updates=False)
        # An instance that stops heartbeating (kill -9) no longer counts after INSTANCE_TTL.
        assert await one.heartbeat(now + INSTANCE_TTL + timedelta(seconds=1), consuming_updates=True) == 1
    finally:
        await engine.dispose()


# -- PostgreSQL: two real processes, kill -9 ---------------------------------------------------------


async def _wait_until(condition, timeout: float, what: str, interval: float = 0.1) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await condition():
        if loop.time() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s")
        await asyncio.sleep(interval)


@pytest.mark.slow
@pytest.mark.postgres
async def test_two_instances_1000_messages_kill_9_the_leader(tmp_path: Path, fresh_postgres_url: str):
    url = fresh_postgres_url
    await prepare_database(url)
    emulator = BotApiEmulator(flood=FloodLimits(overall_per_second=None))
    async with emulator:
        env = bot_env(
            emulator, url,
            OUTBOX_RATE_PER_SECOND="150", OUTBOX_LEASE_SECONDS="5", OUTBOX_TICK_SECONDS="0.25",
            LEADER_RETRY_SECONDS="1", LOG_LEVEL="INFO",
        )
        engine = create_engine(url)
        sessions = session_factory(engine)
        recipients = [reachable_user(emulator) for _ in range(1000)]
        async with sessions.begin() as session:
            people = [Person(telegram_id=u.id, role=Role.CLIENT, language="en", timezone="UTC") for u in recipients]
            session.add_all(people)
            await session.flush()
            await grant_consent(session, [p.id for p in people])
        probe = emulator.user(first_name="Kim")

        leader = BotProcess(tmp_path, env)
        standby = BotProcess(tmp_path, env)
        try:
            await leader.start()
            await probe.send("/start")
            assert (await probe.next_message(timeout=30)).text.startswith("Hello Kim, welcome.")

            await standby.start()

            async def both_registered() -> bool:
                async with sessions() as session:
                    return await session.scalar(select(func.count()).select_from(DeliveryInstance)) == 2

            await _wait_until(both_registered, 30, "both instances heartbeat")
            # The tour starts after the standby loaded its conversation states: its copy is stale.
            await probe.press("Take the tour")
            page = await probe.next_message(timeout=10)
            assert "1 of 4" in page.text

            async def tour_is_durable() -> bool:
                async with sessions() as session:
                    states = (await session.scalars(select(ConversationState))).all()
                    return [s.state for s in states] == ["tour"]

            await _wait_until(tour_is_durable, 10, "the tour state in the database")

            outbox = OutboxService(sessions)
            queued = await outbox.enqueue_many(
                PlainMessage(p.id, OutboxKind.BROADCAST, f"b:{p.id}", utcnow(), REMINDER) for p in people
            )
            assert queued == 1000

            def delivered() -> int:
                return sum(1 for u in recipients if u.messages)

            async def a_third_delivered() -> bool:
                return delivered() >= 300

            await _wait_until(a_third_delivered, 30, "300 messages delivered", interval=0.02)
            await leader.terminate(signal.SIGKILL)
            killed_at = asyncio.get_running_loop().time()
            async with sessions() as session:
                in_flight = await session.scalar(
                    select(func.count()).select_from(OutboxMessage).where(OutboxMessage.state == OutboxState.SENDING)
                )
            assert delivered() < 1000, "killed too late to test anything"

            # The standby takes over consuming updates, with the conversation state.
            await probe.press("Next ›", page)
            page = await probe.wait_for_edit(page, timeout=15)
            took_over = asyncio.get_running_loop().time() - killed_at
            assert "2 of 4" in page.text
            assert took_over < 10, f"took {took_over:.1f}s"

            async def all_final() -> bool:
                counts = await outbox.counts()
                return counts[OutboxState.PENDING] == counts[OutboxState.SENDING] == 0

            await _wait_until(all_final, 40, "every outbox row final")
        finally:
            output = await standby.terminate()
            await leader.terminate(signal.SIGKILL)
            await engine.dispose()

        counts = await outbox.counts()
        assert counts[OutboxState.SENT] == 1000, counts
        received = [len(u.messages) for u in recipients]
        assert min(received) >= 1  # every recipient got at least one
        duplicates = sum(received) - 1000
        assert duplicates <= in_flight, (duplicates, in_flight)
        assert "Traceback" not in output, output
        assert "Consuming updates" in output  # the standby became the consumer
        print(f"\nkill -9 mid-way: {in_flight} in flight, {duplicates} duplicate(s), takeover in {took_over:.1f}s")
