"""The inbox consumer processes several chats' updates at once (INBOX_CONCURRENCY, default 16),
each chat's one at a time and in order, through the real bot and the emulator, on SQLite and
PostgreSQL: different chats' updates overlap, no two of one chat do, and one chat whose update
hangs or fails holds up that chat only."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from bot.inbox import InboxConsumer, Stored
from bot.sandbox.emulator import BotApiEmulator
from tests.fixtures_bot import RunningBot
from tests.test_inbox import COMMANDS, answer_keys
from tests.test_inbox_crash import wait_until
from tests.join_support import services

#: Updates of different chats that must be in progress at the same moment.
AT_ONCE = 8


class Watch:
    """Wraps the consumer's step for one update (for this test only): counts the updates in
    progress, overall and per chat, and lets a test hold or fail a chat's updates."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.in_progress: Counter[int | None] = Counter()
        self.most_at_once = 0
        self.most_of_one_chat = 0
        self.started: list[tuple[int | None, int]] = []  # (chat, update_id) as they start
        self.reached = asyncio.Event()  # AT_ONCE in progress together
        self.hold: dict[int, asyncio.Event] = {}  # chat -> processing waits for this
        self.fail_once: set[int] = set()  # chats whose next update fails (nothing done)
        original = InboxConsumer._process

        async def process(consumer: InboxConsumer, stored: Stored) -> None:
            chat = stored.chat_id
            self.in_progress[chat] += 1
            self.started.append((chat, stored.update_id))
            self.most_of_one_chat = max(self.most_of_one_chat, self.in_progress[chat])
            self.most_at_once = max(self.most_at_once, sum(self.in_progress.values()))
            try:
                if self.most_at_once >= AT_ONCE:
                    self.reached.set()
                if chat in self.hold:
                    await self.hold[chat].wait()
                else:
                    # Hold every update a little until AT_ONCE are in progress together: one
                    # at a time, that never happens (the test fails on the timeout below).
                    await asyncio.wait([asyncio.ensure_future(self.reached.wait())], timeout=10)
                if chat in self.fail_once:
                    self.fail_once.discard(chat)
                    raise ConnectionError("the database went away")
                await original(consumer, stored)
            finally:
                self.in_progress[chat] -= 1

        monkeypatch.setattr(InboxConsumer, "_process", process)


async def test_many_chats_at_once_each_in_order(
    bot: RunningBot, emulator: BotApiEmulator, monkeypatch: pytest.MonkeyPatch
):
    assert bot.settings.inbox_concurrency == 16  # the default
    watch = Watch(monkeypatch)
    users = [emulator.user(first_name=f"C{i}") for i in range(2 * AT_ONCE)]
    sent: dict[int, list[str]] = {u.id: [] for u in users}
    for step in range(4):  # interleaved, as Telegram delivers them
        for i, user in enumerate(users):
            command = list(COMMANDS)[(i + step) % len(COMMANDS)]
            await user.send(command)
            sent[user.id].append(COMMANDS[command])
    await emulator.updates_processed()
    assert watch.reached.is_set() and watch.most_at_once >= AT_ONCE, watch.most_at_once
    assert watch.most_at_once <= 16
    assert watch.most_of_one_chat == 1
    for user in users:
        assert answer_keys(user.messages) == sent[user.id]  # once each, in order
        started = [update_id for chat, update_id in watch.started if chat == user.id]
        assert started == sorted(started)


async def test_a_chat_whose_update_hangs_or_fails_holds_up_only_itself(
    bot: RunningBot, emulator: BotApiEmulator, monkeypatch: pytest.MonkeyPatch
):
    watch = Watch(monkeypatch)
    watch.reached.set()  # no holding back: this is about one chat
    stuck, *others = [emulator.user(first_name=f"S{i}") for i in range(6)]
    watch.hold[stuck.id] = asyncio.Event()
    watch.fail_once.add(stuck.id)
    for command in ("/help", "/about", "/nosuch"):
        await stuck.send(command)
        for user in others:
            await user.send(command)

    async def others_answered() -> bool:
        return all(len(u.messages) == 3 for u in others)

    await wait_until(others_answered, 30, "the other chats answered while one hangs")
    for user in others:
        assert answer_keys(user.messages) == ["help.everyone", "about.text", "fallback.unknown_command"]
    assert stuck.messages == []
    assert [chat for chat, _ in watch.started].count(stuck.id) == 1  # its later ones wait

    # Its first update fails (nothing done, the row stays unprocessed): it is processed again,
    # and then the chat's later ones, in order, each once.
    watch.hold[stuck.id].set()
    await emulator.updates_processed()
    assert answer_keys(stuck.messages) == ["help.everyone", "about.text", "fallback.unknown_command"]
    assert watch.most_of_one_chat == 1
    assert await services(bot).inbox.backlog() == 0


async def test_stopping_waits_for_the_updates_in_progress(
    bot: RunningBot, emulator: BotApiEmulator, monkeypatch: pytest.MonkeyPatch
):
    """A stop (a redeploy, a lost leader lock) lets the updates in progress complete (their
    answers sent, their rows marked processed); after the restart none is answered again."""
    watch = Watch(monkeypatch)
    watch.reached.set()
    users = [emulator.user(first_name=f"R{i}") for i in range(3)]
    release = asyncio.Event()
    for user in users:
        watch.hold[user.id] = release
        await user.send("/help")

    async def all_in_progress() -> bool:
        return sum(watch.in_progress.values()) == len(users)

    await wait_until(all_in_progress, 20, "three chats' updates in progress at once")
    stop_called = asyncio.Event()
    original_stop = InboxConsumer.stop

    async def stop(consumer: InboxConsumer, timeout: float = 10.0) -> None:
        stop_called.set()
        await original_stop(consumer, timeout)

    monkeypatch.setattr(InboxConsumer, "stop", stop)
    stopping = asyncio.create_task(bot.stop())
    await asyncio.wait_for(stop_called.wait(), 20)
    assert not stopping.done() and sum(watch.in_progress.values()) == len(users)
    release.set()
    await asyncio.wait_for(stopping, 30)
    for user in users:  # answered before the bot stopped
        assert answer_keys(user.messages) == ["help.everyone"]

    await bot.start()
    for user in users:
        await user.send("/about")
    await emulator.updates_processed()
    for user in users:
        assert answer_keys(user.messages) == ["help.everyone", "about.text"]  # none repeated
    assert await services(bot).inbox.backlog() == 0
