"""``kill -9`` of the consuming process with 500 updates from 50 chats in flight (polling and
webhook; SQLite and PostgreSQL): after a restart every update is answered, once, except
those being processed at the kill (bot.inbox: "what once means": at most one per chat, and at
most INBOX_CONCURRENCY, 16, in all), and each chat's answers come in the order of its updates. The bot runs as a real process (`imrs-bot run`);
replies are counted at the emulator.

Each case takes 40-80 s on a busy 2-core machine (two process starts, 500 updates through the
whole bot, about 10 updates/s there): marked slow."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest
from sqlalchemy import func, select

from bot.db.delivery_models import InboxUpdate
from bot.db.engine import create_engine, session_factory
from bot.sandbox.emulator import BotApiEmulator, FloodLimits
from tests.fixtures_bot import prepare_database
from tests.test_cli import BotProcess, bot_env, free_port
from tests.test_inbox import COMMANDS, SECRET, answer_keys

CHATS, PER_CHAT = 50, 10


async def wait_until(condition, timeout: float, what: str, interval: float = 0.05) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await condition():
        if loop.time() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s")
        await asyncio.sleep(interval)


def once_in_order(got: list[str], expected: list[str]) -> int:
    """How many of one chat's answers were repeated (0, or 1 for its update processed at the
    kill, whose repeat follows it at once); fails unless the answers are otherwise exactly
    ``expected``."""
    if got == expected:
        return 0
    assert len(got) == len(expected) + 1, (got, expected)
    repeats = [i for i in range(len(got) - 1) if got[i] == got[i + 1] and got[:i] + got[i + 1 :] == expected]
    assert repeats, (got, expected)
    return 1


@pytest.mark.slow
@pytest.mark.timeout(360)  # a hang guard: two real processes, 500 updates, a kill -9 and a restart; ~100 s at load 14
@pytest.mark.parametrize("mode", ["polling", "webhook"])
async def test_kill_9_with_500_updates_in_flight_answers_each_once_in_order(
    tmp_path: Path, database_url: str, mode: str
):
    await prepare_database(database_url)
    emulator = BotApiEmulator(flood=FloodLimits(overall_per_second=None))
    async with emulator:
        extra = {"OUTBOX_RATE_PER_SECOND": "300", "LOG_LEVEL": "INFO"}
        args: tuple[str, ...] = ()
        if mode == "webhook":
            port = free_port()
            extra |= {"PORT": str(port), "WEBHOOK_URL": f"http://127.0.0.1:{port}/telegram", "WEBHOOK_SECRET": SECRET}
            args = ("--webhook",)
        env = bot_env(emulator, database_url, **extra)
        commands = list(COMMANDS)
        users = [emulator.user(first_name=f"P{i}") for i in range(CHATS)]
        expected: dict[int, list[str]] = {u.id: [] for u in users}
        for step in range(PER_CHAT):  # interleaved, as Telegram would deliver them
            for i, user in enumerate(users):
                command = commands[(i + step) % len(commands)]
                await user.send(command)
                expected[user.id].append(COMMANDS[command])

        def answered() -> int:
            return sum(len(u.messages) for u in users)

        engine = create_engine(database_url)
        sessions = session_factory(engine)
        first = BotProcess(tmp_path, env, *args)
        second = BotProcess(tmp_path, env, *args)
        try:
            await first.start()
            await first.running()

            async def some_answered() -> bool:
                return answered() >= 150

            await wait_until(some_answered, 120, "150 answers", interval=0.01)
            await first.terminate(signal.SIGKILL)
            at_kill = answered()
            assert at_kill < CHATS * PER_CHAT, "killed too late to test anything"
            async with sessions() as session:
                stored = await session.scalar(select(func.count()).select_from(InboxUpdate))

            loop = asyncio.get_running_loop()
            restarted_at = loop.time()  # the figure includes the new process's start
            await second.start()
            await second.running()

            async def all_answered() -> bool:
                return all(len(u.messages) >= PER_CHAT for u in users)

            await wait_until(all_answered, 180, "every update answered")
            took = loop.time() - restarted_at

            async def settled() -> bool:
                async with sessions() as session:
                    backlog = await session.scalar(
                        select(func.count()).select_from(InboxUpdate).where(InboxUpdate.processed_at.is_(None))
                    )
                return backlog == 0 and not emulator.pending_updates

            await wait_until(settled, 30, "the inbox empty and every update confirmed")
        finally:
            output = await second.terminate()
            await first.terminate(signal.SIGKILL)
            await engine.dispose()

    repeated = sum(once_in_order(answer_keys(u.messages), expected[u.id]) for u in users)
    assert repeated <= 16  # INBOX_CONCURRENCY: one per chat in progress at the kill
    assert "Traceback" not in output, output
    print(f"\n{mode}: killed after {at_kill} answers ({stored} updates stored); restarted, the rest "
          f"answered in {took:.1f}s; {repeated} answer(s) repeated")
