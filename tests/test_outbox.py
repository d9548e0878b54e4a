"""The outbox and its dispatcher, on SQLite and PostgreSQL, against the Bot API emulator:
idempotent enqueueing, encrypted payloads, delivery within Telegram's limits, 429 / 5xx /
403 / 400 in bursts, crash semantics (leases), a clean stop."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta

import pytest
from sqlalchemy import select, text, update

from bot.crypto.fields import Sealed
from bot.db.delivery_models import OutboxKind, OutboxMessage, OutboxState
from bot.db.models import Person
from bot.db.types import utcnow
from bot.delivery.dispatcher import Dispatcher
from bot.delivery.outbox import PlainMessage
from bot.delivery.store import Outcome, OutboxStore
from bot.sandbox.emulator import BotApiEmulator, FloodLimits
from tests.fixtures_delivery import *  # noqa: F403
from tests.fixtures_emulator import eventually

REMINDER = "outbox.practice_reminder"


async def drive(dispatcher: Dispatcher, done: Callable[[], Awaitable[bool]], timeout: float = 20) -> None:
    """Tick (as the JobQueue would, but faster) until ``done``."""
    dispatcher.start()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await done():
        if loop.time() > deadline:
            raise AssertionError(f"not done within {timeout}s: {dispatcher.stats}")
        await dispatcher.tick()
        await asyncio.sleep(dispatcher.config.tick_seconds)
    await dispatcher.idle()


def until_final(outbox: OutboxService) -> Callable[[], Awaitable[bool]]:
    async def done() -> bool:
        counts = await outbox.counts()
        return counts[OutboxState.PENDING] == counts[OutboxState.SENDING] == 0

    return done


def sends(emulator: BotApiEmulator) -> int:
    return len(emulator.calls_to("sendMessage"))


# -- enqueueing -----------------------------------------------------------------------------------


async def test_enqueue_is_idempotent_and_skips_inactive_people(session_factory, emulator):
    (alex, _), (bo, _) = await add_people(session_factory, emulator, 2)
    outbox = OutboxService(session_factory)
    first = await outbox.enqueue(alex, kind=OutboxKind.REMINDER, idempotency_key="k1", content_key=REMINDER)
    assert first is not None
    assert await outbox.enqueue(alex, kind=OutboxKind.REMINDER, idempotency_key="k1", content_key=REMINDER) is None
    summary = await outbox.enqueue(alex, kind=OutboxKind.SUMMARY, idempotency_key="s1", text="<b>ok</b>")
    assert summary is not None
    assert await outbox.enqueue(alex, kind=OutboxKind.SUMMARY, idempotency_key="s1", text="other") is None

    async with session_factory.begin() as session:
        await session.execute(update(Person).where(Person.id == bo).values(active=False))
    assert await outbox.enqueue(bo, kind=OutboxKind.REMINDER, idempotency_key="k2", content_key=REMINDER) is None
    queued = await outbox.enqueue_many(
        [PlainMessage(p, OutboxKind.BROADCAST, f"b:{p}", utcnow(), REMINDER) for p in (alex, bo)]
        + [PlainMessage(alex, OutboxKind.BROADCAST, f"b:{alex}", utcnow(), REMINDER)]
    )
    assert queued == 1  # bo is inactive, the third is a duplicate
    assert (await outbox.counts())[OutboxState.PENDING] == 3

    with pytest.raises(ValueError):
        await outbox.enqueue(alex, kind=OutboxKind.REMINDER, idempotency_key="x", content_key=REMINDER, text="y")


async def test_clinical_payloads_are_stored_encrypted(session_factory, emulator):
    [(therapist, _)] = await add_people(session_factory, emulator, 1)
    outbox = OutboxService(session_factory)
    await outbox.enqueue(
        therapist, kind=OutboxKind.SUMMARY, idempotency_key="summary:1", text="Stress 7 of 10, ready"
    )
    async with session_factory() as session:
        raw = (await session.execute(select(OutboxMessage.__table__.c.body))).scalar_one()
        assert isinstance(raw, Sealed)
        stored = (await session.execute(text("SELECT body FROM outbox"))).scalar_one()
    assert b"Stress" not in bytes(stored)
    row = await outbox.get("summary:1")
    assert row is not None and row.body == "Stress 7 of 10, ready" and row.content_key is None


# -- delivering -----------------------------------------------------------------------------------


async def test_delivers_plain_and_encrypted_messages_in_the_recipients_language(
    session_factory, emulator, delivery_bot
):
    [(en, en_user)] = await add_people(session_factory, emulator, 1)
    [(nl, nl_user)] = await add_people(session_factory, emulator, 1, language="nl")
    outbox = OutboxService(session_factory)
    await outbox.enqueue(en, kind=OutboxKind.CHECK_IN_PROMPT, idempotency_key="p:en",
                         content_key="outbox.check_in_prompt", params={"day": "Tuesday <3>"})
    await outbox.enqueue(nl, kind=OutboxKind.REMINDER, idempotency_key="r:nl", content_key=REMINDER)
    await outbox.enqueue(en, kind=OutboxKind.SUMMARY, idempotency_key="s:en",
                         text="<b>Summary</b> for you", due_at=utcnow() + timedelta(seconds=1.2))
    dispatcher = make_dispatcher(delivery_bot, session_factory)
    try:
        await drive(dispatcher, until_final(outbox))
    finally:
        await dispatcher.stop()

    prompt, summary = en_user.messages
    assert prompt.text.startswith("Your next session is on Tuesday <3>.")  # escaped, then parsed
    assert prompt.protect_content
    assert summary.text == "Summary for you"
    assert nl_user.messages[0].text.startswith("Tijd voor jezelf?")  # Dutch: never "herinnering"
    rows = {row.idempotency_key: row for row in await outbox_rows(session_factory)}
    assert {row.state for row in rows.values()} == {OutboxState.SENT}
    assert rows["s:en"].telegram_message_id == summary.message_id
    assert all(row.attempts == 1 and row.lease_until is None for row in rows.values())


async def test_not_before_due_time(session_factory, emulator, delivery_bot):
    [(alex, user)] = await add_people(session_factory, emulator, 1)
    outbox = OutboxService(session_factory)
    await outbox.enqueue(alex, kind=OutboxKind.REMINDER, idempotency_key="later",
                         content_key=REMINDER, due_at=utcnow() + timedelta(hours=1))
    dispatcher = make_dispatcher(delivery_bot, session_factory)
    dispatcher.start()
    try:
        assert await dispatcher.tick() == 0
        await dispatcher.idle()
    finally:
        await dispatcher.stop()
    assert user.messages == []
    assert (await outbox.counts())[OutboxState.PENDING] == 1


async def test_within_the_overall_and_per_chat_limits(session_factory, database_url, delivery_bot):
    """The emulator enforces Telegram's limits (10/s overall, 1/s per chat): paced right,
    not a single 429. The dispatcher keeps a margin below them (6/s, 1.5 s), as a deployment
    would: on a busy machine a request can reach the server late and the next one on time,
    and with a 10 % margin two such requests arrived too close (a 429 in a loaded run). Without
    pacing (the tests' 200/s), the same messages draw many 429s."""
    emulator = BotApiEmulator(flood=FloodLimits(overall_per_second=10, overall_burst=2,
                                                per_chat_per_second=1, per_chat_burst=1))
    async with emulator:
        bot = type(delivery_bot)(
            emulator.token, base_url=emulator.base_url, defaults=delivery_bot.defaults,
            rate_limiter=delivery_bot.rate_limiter,
        )
        await bot.initialize()
        people = await add_people(session_factory, emulator, 12)
        outbox = OutboxService(session_factory)
        (one, busy_user), *others = people
        for i in range(3):  # three for one chat, queued at once
            await outbox.enqueue(one, kind=OutboxKind.REMINDER, idempotency_key=f"one:{i}", content_key=REMINDER)
        for person, _ in others:
            await outbox.enqueue(person, kind=OutboxKind.REMINDER, idempotency_key=f"o:{person}", content_key=REMINDER)
        dispatcher = make_dispatcher(bot, session_factory, rate_per_second=6, per_chat_interval=1.5)
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            await drive(dispatcher, until_final(outbox))
        finally:
            await dispatcher.stop()
            await bot.shutdown()
        elapsed = loop.time() - started
        assert [f.status for f in emulator.failures] == []
        assert sends(emulator) == 14
        assert len(busy_user.messages) == 3
        assert elapsed >= 3.0  # 3 messages to one chat: two intervals of 1.5 s at least


async def test_flood_waits_pause_every_send_and_lose_nothing(session_factory, emulator, delivery_bot):
    people = await add_people(session_factory, emulator, 10)
    outbox = OutboxService(session_factory)
    await outbox.enqueue_many(
        PlainMessage(p, OutboxKind.BROADCAST, f"b:{p}", utcnow(), REMINDER) for p, _ in people
    )
    emulator.inject("sendMessage", status=429, retry_after=1, count=3)
    dispatcher = make_dispatcher(delivery_bot, session_factory)
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        await drive(dispatcher, until_final(outbox))
    finally:
        await dispatcher.stop()
    assert loop.time() - started >= 1.0  # the flood wait was honoured
    assert all(len(user.messages) == 1 for _, user in people)
    # No busy loop: each 429 cost one call, nothing was retried before the wait was over.
    assert sends(emulator) == 10 + 3
    assert dispatcher.stats.flood_waits >= 1
    rows = await outbox_rows(session_factory)
    assert {r.state for r in rows} == {OutboxState.SENT}
    assert all(r.attempts == 1 for r in rows)  # flood waits do not count as attempts


async def test_server_errors_are_retried_with_backoff_then_given_up(session_factory, emulator, delivery_bot):
    people = await add_people(session_factory, emulator, 6)
    (doomed, doomed_user), *fine = people
    outbox = OutboxService(session_factory)
    for person, _ in people:
        await outbox.enqueue(person, kind=OutboxKind.REMINDER, idempotency_key=f"r:{person}", content_key=REMINDER)
    emulator.inject("sendMessage", status=502, count=2)
    emulator.inject("sendMessage", status=500, count=2)
    emulator.inject("sendMessage", status=503, count=None, chat_id=doomed_user.id)  # never recovers
    dispatcher = make_dispatcher(delivery_bot, session_factory, max_attempts=4)
    try:
        await drive(dispatcher, until_final(outbox))
    finally:
        await dispatcher.stop()
    rows = {r.recipient_id: r for r in await outbox_rows(session_factory)}
    assert rows[doomed].state is OutboxState.DEAD
    assert rows[doomed].last_error == "retries_exhausted"
    assert rows[doomed].attempts == 4
    assert all(rows[p].state is OutboxState.SENT for p, _ in fine)
    assert all(len(user.messages) == 1 for _, user in fine)
    calls_for_doomed = [c for c in emulator.calls_to("sendMessage") if c["chat_id"] == doomed_user.id]
    assert len(calls_for_doomed) == 4  # max attempts, then nothing more
    assert sends(emulator) <= 5 + 4 + 4  # the five fine ones, four faults among them, the doomed four


async def test_403_marks_the_person_inactive_and_nothing_more_is_queued(
    session_factory, emulator, delivery_bot
):
    (blocked, blocked_user), (fine, fine_user) = await add_people(session_factory, emulator, 2)
    blocked_user.block()
    outbox = OutboxService(session_factory)
    await outbox.enqueue(blocked, kind=OutboxKind.REMINDER, idempotency_key="now", content_key=REMINDER)
    await outbox.enqueue(blocked, kind=OutboxKind.REMINDER, idempotency_key="tomorrow",
                         content_key=REMINDER, due_at=utcnow() + timedelta(days=1))
    await outbox.enqueue(fine, kind=OutboxKind.REMINDER, idempotency_key="fine", content_key=REMINDER)
    dispatcher = make_dispatcher(delivery_bot, session_factory)
    try:
        await drive(dispatcher, until_final(outbox))
    finally:
        await dispatcher.stop()
    rows = {r.idempotency_key: r for r in await outbox_rows(session_factory)}
    assert (rows["now"].state, rows["now"].last_error) == (OutboxState.FAILED, "forbidden")
    assert (rows["tomorrow"].state, rows["tomorrow"].last_error) == (OutboxState.FAILED, "recipient_inactive")
    assert rows["fine"].state is OutboxState.SENT and len(fine_user.messages) == 1
    async with session_factory() as session:
        assert (await session.get(Person, blocked)).active is False
        assert (await session.get(Person, fine)).active is True
    assert await outbox.enqueue(blocked, kind=OutboxKind.REMINDER, idempotency_key="again", content_key=REMINDER) is None
    assert len([c for c in emulator.calls_to("sendMessage") if c["chat_id"] == blocked_user.id]) == 1


async def test_a_bad_request_fails_for_good(session_factory, emulator, delivery_bot):
    [(alex, user)] = await add_people(session_factory, emulator, 1)
    outbox = OutboxService(session_factory)
    await outbox.enqueue(alex, kind=OutboxKind.SUMMARY, idempotency_key="bad", text="<b>unclosed")
    dispatcher = make_dispatcher(delivery_bot, session_factory)
    try:
        await drive(dispatcher, until_final(outbox))
    finally:
        await dispatcher.stop()
    [row] = await outbox_rows(session_factory)
    assert (row.state, row.last_error, row.attempts) == (OutboxState.FAILED, "bad_request", 1)
    assert sends(emulator) == 1 and user.messages == []


async def test_bursts_of_every_error_at_once(session_factory, emulator, delivery_bot):
    """429s, 5xx and 403s mixed: every row ends sent or correctly marked, no busy loop."""
    people = await add_people(session_factory, emulator, 30)
    blocked = {p for p, _ in people[:3]}
    for _, user in people[:3]:
        user.block()
    outbox = OutboxService(session_factory)
    await outbox.enqueue_many(
        PlainMessage(p, OutboxKind.BROADCAST, f"b:{p}", utcnow(), REMINDER) for p, _ in people
    )
    emulator.inject("sendMessage", status=429, retry_after=1, count=2)
    emulator.inject("sendMessage", status=502, count=5)
    dispatcher = make_dispatcher(delivery_bot, session_factory)
    try:
        await drive(dispatcher, until_final(outbox))
    finally:
        await dispatcher.stop()
    rows = await outbox_rows(session_factory)
    for row in rows:
        expected = OutboxState.FAILED if row.recipient_id in blocked else OutboxState.SENT
        assert row.state is expected, row
    assert all(len(user.messages) == 1 for p, user in people if p not in blocked)
    assert sends(emulator) <= 30 + 2 + 5


# -- crash semantics --------------------------------------------------------------------------------


async def test_sending_is_committed_before_the_call_and_sent_after(session_factory, emulator, delivery_bot):
    [(alex, _)] = await add_people(session_factory, emulator, 1)
    outbox = OutboxService(session_factory)
    await outbox.enqueue(alex, kind=OutboxKind.REMINDER, idempotency_key="slow", content_key=REMINDER)
    emulator.inject("sendMessage", delay=1.0)
    dispatcher = make_dispatcher(delivery_bot, session_factory)
    dispatcher.start()
    try:
        await dispatcher.tick()
        await asyncio.sleep(0.5)  # the call is in flight
        [row] = await outbox_rows(session_factory)
        assert row.state is OutboxState.SENDING and row.attempts == 1 and row.lease_until is not None
        await dispatcher.idle()
        [row] = await outbox_rows(session_factory)
        assert row.state is OutboxState.SENT
    finally:
        await dispatcher.stop()


async def test_rows_left_in_flight_by_a_crash_are_retried_after_their_lease(
    session_factory, emulator, delivery_bot
):
    people = await add_people(session_factory, emulator, 5)
    outbox = OutboxService(session_factory)
    await outbox.enqueue_many(
        PlainMessage(p, OutboxKind.BROADCAST, f"b:{p}", utcnow(), REMINDER) for p, _ in people
    )
    store = OutboxStore(session_factory, crypto_of(session_factory))
    now = utcnow()
    # A dispatcher claims them, sends two, and dies before recording anything.
    claimed = await store.claim(now, 10, timedelta(seconds=60))
    assert len(claimed) == 5
    assert await store.claim(now, 10, timedelta(seconds=60)) == []  # nobody else gets them
    for row in claimed[:2]:
        await delivery_bot.send_message(row.chat_id, "sent before the crash")

    assert await store.release_expired_leases(now + timedelta(seconds=30)) == 0  # lease holds
    clock = FakeClock(now + timedelta(seconds=61))
    dispatcher = make_dispatcher(delivery_bot, session_factory, clock=clock)
    try:
        await drive(dispatcher, until_final(outbox))
    finally:
        await dispatcher.stop()
    rows = await outbox_rows(session_factory)
    assert {r.state for r in rows} == {OutboxState.SENT}
    assert all(r.attempts == 2 for r in rows)
    received = [len(user.messages) for _, user in people]
    assert sorted(received) == [1, 1, 1, 2, 2]  # duplicates: exactly the two in flight

    # The dead dispatcher's late write cannot overwrite the new outcome.
    await store.record([Outcome(claimed[0].id, claimed[0].token, OutboxState.FAILED, "late")], utcnow())
    row = next(r for r in await outbox_rows(session_factory) if r.id == claimed[0].id)
    assert row.state is OutboxState.SENT


async def test_rows_that_keep_crashing_the_sender_end_dead(session_factory, emulator, delivery_bot):
    [(alex, user)] = await add_people(session_factory, emulator, 1)
    outbox = OutboxService(session_factory)
    await outbox.enqueue(alex, kind=OutboxKind.REMINDER, idempotency_key="poison", content_key=REMINDER)
    store = OutboxStore(session_factory, crypto_of(session_factory))
    now = utcnow()
    for crash in range(4):  # claimed and lost four times
        now += timedelta(minutes=2)
        await store.release_expired_leases(now)
        assert len(await store.claim(now, 1, timedelta(seconds=60))) == 1, crash
    now += timedelta(minutes=2)
    dispatcher = make_dispatcher(delivery_bot, session_factory, clock=FakeClock(now), max_attempts=4)
    try:
        await drive(dispatcher, until_final(outbox))
    finally:
        await dispatcher.stop()
    [row] = await outbox_rows(session_factory)
    assert (row.state, row.last_error) == (OutboxState.DEAD, "retries_exhausted")
    assert user.messages == []


async def test_a_clean_stop_puts_claimed_rows_back(session_factory, emulator, delivery_bot):
    people = await add_people(session_factory, emulator, 20)
    outbox = OutboxService(session_factory)
    await outbox.enqueue_many(
        PlainMessage(p, OutboxKind.BROADCAST, f"b:{p}", utcnow(), REMINDER) for p, _ in people
    )
    dispatcher = make_dispatcher(delivery_bot, session_factory, rate_per_second=4)
    dispatcher.start()
    await dispatcher.tick()  # claims 8 (two ticks' worth at 4/s), sends about one
    # Stop once the first is sent (not after a fixed time: a busy machine may send none by then).
    await eventually(lambda: any(user.messages for _, user in people))
    await dispatcher.stop()
    counts = await outbox.counts()
    assert counts[OutboxState.SENDING] == 0
    sent = counts[OutboxState.SENT]
    assert 1 <= sent < 20 and counts[OutboxState.PENDING] == 20 - sent
    assert sum(len(user.messages) for _, user in people) == sent
    assert all(r.attempts == (1 if r.state is OutboxState.SENT else 0) for r in await outbox_rows(session_factory))


async def test_erasing_the_subject_drops_what_is_queued_about_them(session_factory, emulator):
    (therapist, _), (client, _) = await add_people(session_factory, emulator, 2)
    outbox = OutboxService(session_factory)
    await outbox.enqueue(therapist, kind=OutboxKind.SUMMARY, idempotency_key="sum",
                         text="about the client", subject_id=client)
    async with session_factory.begin() as session:
        await session.delete(await session.get(Person, client))
    assert await outbox_rows(session_factory) == []


# -- the bot-wide rate limiter ---------------------------------------------------------------------


async def test_outbox_sends_see_retry_after_while_replies_wait_it_out(emulator, delivery_bot, caplog):
    from telegram.error import RetryAfter

    from bot.delivery.ratelimit import NO_RETRIES

    user = reachable_user(emulator)
    emulator.inject("sendMessage", status=429, retry_after=1, count=1)
    with caplog.at_level("INFO"), pytest.raises(RetryAfter):
        await delivery_bot.send_message(user.id, "outbox", rate_limit_args=NO_RETRIES)
    assert not [r for r in caplog.records if r.levelname == "ERROR"]  # no traceback logged
    emulator.inject("sendMessage", status=429, retry_after=1, count=1)
    await delivery_bot.send_message(user.id, "a reply")  # retried inside AIORateLimiter
    assert [m.text for m in user.messages] == ["a reply"]
    assert sends(emulator) == 3

