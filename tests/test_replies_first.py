"""Replies go first (bot.delivery.ratelimit): the outbox takes what replies leave of Telegram's
overall rate, never more than its own configured rate, and replies do not queue behind it.

The shared bucket and the pacer on a fake clock; then the real stack: python-telegram-bot's
HTTP client and the project's limiter against the Bot API emulator at Telegram's limits, the
dispatcher sending a broadcast from a real database while replies go out."""

from __future__ import annotations

import asyncio
import random

from telegram.ext import ExtBot

from bot.db.delivery_models import OutboxKind, OutboxState
from bot.db.types import utcnow
from bot.delivery.outbox import OutboxService, PlainMessage
from bot.delivery.pacing import Pacer
from bot.delivery.ratelimit import OUTBOX_SEND, BotRateLimiter, SharedRate, bot_rate_limiter
from bot.sandbox.emulator import BotApiEmulator, FloodLimits
from tests.fixtures_delivery import add_people, make_dispatcher, outbox_rows, reachable_user
from tests.fixtures_emulator import eventually

REMINDER = "outbox.practice_reminder"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def simulate(replies_per_second: float, seconds: float, *, outbox_rate: float = 25.0,
             clock: Clock | None = None, pacer: Pacer | None = None) -> int:
    """Replies spend at their rate, the outbox sends whenever its pacer lets it: how many
    outbox sends in ``seconds`` (1 ms steps)."""
    clock = clock or Clock()
    if pacer is None:
        pacer = Pacer(outbox_rate, 0.0, monotonic=clock, shared=SharedRate(30, monotonic=clock))
    shared = pacer.shared
    assert isinstance(shared, SharedRate)
    sent, owed = 0, 0.0
    for _ in range(int(seconds * 1000)):
        clock.now += 0.001
        owed += replies_per_second / 1000
        while owed >= 1:
            shared.spend(reply=True)  # a reply never waits
            owed -= 1
        if pacer.overall_wait() <= 0:
            pacer.take(sent)
            sent += 1
    return sent


def test_the_outbox_keeps_its_rate_while_replies_fit_in_the_rest():
    assert 24.5 * 10 <= simulate(4, 10) <= 25 * 10 + 10  # its own burst: 10


def test_the_outbox_takes_what_replies_leave():
    sent = simulate(12, 10)  # 30 - 12 = 18 a second
    assert 17.5 * 10 <= sent <= 18 * 10 + 10  # the shared bucket's burst: 10


def test_bursty_replies_under_what_is_left_cost_the_outbox_nothing():
    """Two messages at once (a reply and an edit), at random moments, 4.8 a second on average:
    the outbox keeps 0.95 of its rate and more."""
    clock = Clock()
    shared = SharedRate(30, monotonic=clock)
    pacer = Pacer(25, 0.0, monotonic=clock, shared=shared)
    rng = random.Random(15)
    sent = 0
    for _ in range(100_000):  # 100 s
        clock.now += 0.001
        if rng.random() < 2.4 / 1000:
            shared.spend(reply=True)
            shared.spend(reply=True)
        if pacer.overall_wait() <= 0:
            pacer.take(sent)
            sent += 1
    assert 230 <= shared.replies <= 250 * 2
    assert sent / 100 / 25 >= 0.95


def test_replies_above_the_overall_rate_stop_the_outbox_and_it_resumes_within_a_second():
    clock = Clock()
    shared = SharedRate(30, monotonic=clock)
    pacer = Pacer(25, 0.0, monotonic=clock, shared=shared)
    assert simulate(45, 5, clock=clock, pacer=pacer) <= 10  # the bucket's first tokens only
    assert shared.replies == 225
    # The debt is at most one second's worth: the outbox sends again within a second.
    assert simulate(0, 1.2, clock=clock, pacer=pacer) >= 1
    assert simulate(0, 10, clock=clock, pacer=pacer) >= 24 * 10


def test_other_instances_outbox_shares_are_left_to_them():
    clock = Clock()
    shared = SharedRate(30, monotonic=clock)
    shared.set_others(12.5)  # two instances at 25/s: the other may send 12.5 a second
    pacer = Pacer(12.5, 0.0, monotonic=clock, shared=shared)
    # This one's outbox and its replies share 30 - 12.5 = 17.5 a second.
    assert 12 * 10 <= simulate(2, 10, clock=clock, pacer=pacer) <= 12.5 * 10 + 2
    assert 9.5 * 10 <= simulate(7.5, 10, clock=clock, pacer=pacer) <= 10 * 10 + 10


async def test_replies_spend_the_shared_rate_and_outbox_sends_do_not(emulator):
    limiter = bot_rate_limiter(25, max_retries=3)
    assert isinstance(limiter, BotRateLimiter)
    bot = ExtBot(emulator.token, base_url=emulator.base_url, rate_limiter=limiter)
    await bot.initialize()
    try:
        user = reachable_user(emulator)
        message = await bot.send_message(user.id, "a reply")
        await bot.edit_message_text("edited", chat_id=user.id, message_id=message.message_id)
        await bot.send_message(user.id, "an outbox message", rate_limit_args=OUTBOX_SEND)
        await bot.get_me()  # not to a chat: Telegram does not count it, nor do we
    finally:
        await bot.shutdown()
    assert limiter.shared.replies == 2


async def test_with_the_outbox_saturated_replies_go_out_at_once(session_factory, monkeypatch):
    """A broadcast fills the outbox's 25/s; then replies come, 20 at once every second for 4 s
    (more than the 5/s left). Each reply reaches the emulator within a second of its call
    (sharing the limiter's queue, the last ones waited about 2 s); the outbox never exceeds
    25 in a second, slows down to what the replies leave, and not a single 429."""
    emulator = BotApiEmulator(flood=FloodLimits(overall_per_second=30, overall_burst=30))
    async with emulator:
        loop = asyncio.get_running_loop()
        arrived: dict[int, list[float]] = {}  # chat -> when each bot message reached Telegram
        record_message = emulator.state.add_bot_message

        def timed(chat, message):  # noqa: ANN001, ANN202
            arrived.setdefault(chat.id, []).append(loop.time())
            return record_message(chat, message)

        monkeypatch.setattr(emulator.state, "add_bot_message", timed)
        bot = ExtBot(emulator.token, base_url=emulator.base_url, rate_limiter=bot_rate_limiter(25, max_retries=3))
        await bot.initialize()
        recipients = await add_people(session_factory, emulator, 250)
        talkers = [reachable_user(emulator) for _ in range(20)]
        outbox = OutboxService(session_factory)
        await outbox.enqueue_many(
            PlainMessage(p, OutboxKind.BROADCAST, f"b:{p}", utcnow(), REMINDER) for p, _ in recipients
        )
        dispatcher = make_dispatcher(bot, session_factory, rate_per_second=25, per_chat_interval=1.0,
                                     tick_seconds=0.2)
        dispatcher.start()

        async def tick() -> None:
            while True:
                await dispatcher.tick()
                await asyncio.sleep(dispatcher.config.tick_seconds)

        ticking = asyncio.create_task(tick())
        latencies: list[float] = []

        async def reply(user_id: int) -> None:
            began = loop.time()
            count = len(arrived.get(user_id, []))
            await bot.send_message(user_id, "a reply")
            latencies.append(arrived[user_id][count] - began)

        try:
            outbox_chats = {user.id for _, user in recipients}

            def outbox_sent() -> int:
                return sum(len(arrived.get(chat, [])) for chat in outbox_chats)

            await eventually(lambda: outbox_sent() >= 50, timeout=60)  # saturated: about 2 s at 25/s
            replies_began = loop.time()
            sent_before = outbox_sent()
            for second in range(4):
                await asyncio.gather(*(reply(user.id) for user in talkers))
                await asyncio.sleep(max(0.0, replies_began + second + 1 - loop.time()))
            replies_took = loop.time() - replies_began
            outbox_during = outbox_sent() - sent_before
            await eventually(lambda: outbox_sent() == len(recipients), timeout=120)
        finally:
            ticking.cancel()
            await asyncio.gather(ticking, return_exceptions=True)
            await dispatcher.stop()
            await bot.shutdown()

    assert [f.status for f in emulator.failures] == []  # no 429s
    assert len(latencies) == 80 and max(latencies) < 1.0, sorted(latencies)[-5:]
    # While replies asked for 20 of the 30 a second, the outbox kept to what they left
    # (the shared bucket's 10-message burst, and a few for timer jitter).
    assert outbox_during + len(latencies) <= 30 * replies_took + 10 + 3, (outbox_during, replies_took)
    # Its own rate was never exceeded: at most 25 (and its 10-message burst) in any second.
    times = sorted(t for chat in outbox_chats for t in arrived[chat])
    busiest = max(sum(1 for t in times[i:i + 40] if t - start < 1.0) for i, start in enumerate(times))
    assert busiest <= 25 + 10, busiest
    assert {row.state for row in await outbox_rows(session_factory)} == {OutboxState.SENT}
