"""SQLite statements on the event loop's thread (bot.db.sqlite_inline): no hand-over to
aiosqlite's thread per statement, and waiting for another writer's lock without freezing the
event loop, giving up after the busy time, and never waiting where waiting cannot help."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiosqlite.core
import pytest
import sqlalchemy as sa
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from bot.db import sqlite_inline
from bot.db.engine import create_engine


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(f"sqlite:///{tmp_path / 'inline.sqlite3'}")
    async with engine.begin() as connection:
        await connection.exec_driver_sql("CREATE TABLE t (k INTEGER PRIMARY KEY, v INTEGER)")
    yield engine
    await engine.dispose()


def other_process(engine: AsyncEngine) -> sqlite3.Connection:
    """A connection of another process (the CLI, say) to the same file."""
    return sqlite3.connect(engine.url.database or "", isolation_level=None, check_same_thread=False)


class Ticker:
    """Counts event-loop turns while it runs: a frozen loop does not count."""

    def __init__(self) -> None:
        self.ticks = 0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(0.01)
            self.ticks += 1

    def __enter__(self) -> Ticker:
        self._task = asyncio.create_task(self._run())
        return self

    def __exit__(self, *_exc: object) -> None:
        assert self._task is not None
        self._task.cancel()


async def test_statements_and_commits_need_no_hand_over_to_aiosqlites_thread(
    engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    handed_over: list[Any] = []
    original = aiosqlite.core.Connection._execute

    async def counted(self: Any, fn: Any, *args: Any, **kwargs: Any) -> Any:
        handed_over.append(fn)
        return await original(self, fn, *args, **kwargs)

    monkeypatch.setattr(aiosqlite.core.Connection, "_execute", counted)
    sessions = async_sessionmaker(engine)
    for k in range(20):
        async with sessions.begin() as session:
            await session.execute(sa.text("INSERT INTO t VALUES (:k, :k)"), {"k": k})
            assert await session.scalar(sa.text("SELECT v FROM t WHERE k = :k"), {"k": k}) == k
    async with sessions() as session:
        await session.execute(sa.text("INSERT INTO t VALUES (:k, 0)"), [{"k": k} for k in range(100, 110)])
        await session.commit()
        assert await session.scalar(sa.text("SELECT count(*) FROM t")) == 30
        rows = (await session.execute(sa.text("SELECT k FROM t WHERE k >= 100 ORDER BY k"))).all()
    assert [k for (k,) in rows] == list(range(100, 110))
    assert handed_over == []


async def test_a_write_waits_for_another_process_without_freezing_the_loop(engine: AsyncEngine) -> None:
    other = other_process(engine)
    other.execute("BEGIN IMMEDIATE")
    asyncio.get_running_loop().call_later(0.5, other.execute, "COMMIT")
    sessions = async_sessionmaker(engine)
    with Ticker() as ticker:
        began = time.monotonic()
        async with sessions.begin() as session:
            await session.execute(sa.text("INSERT INTO t VALUES (1, 1)"))
        waited = time.monotonic() - began
    other.close()
    assert waited >= 0.4, "it waited for the lock"
    assert ticker.ticks >= 10, "the event loop went on meanwhile"
    async with sessions() as session:
        assert await session.scalar(sa.text("SELECT count(*) FROM t")) == 1


async def test_two_of_the_bots_own_transactions_take_turns(engine: AsyncEngine) -> None:
    """The one that holds the lock is waiting for something on the same event loop: with a
    busy timeout slept inside SQLite the other would freeze the loop and neither could go on."""
    sessions = async_sessionmaker(engine)
    holding, release = asyncio.Event(), asyncio.Event()

    async def first() -> None:
        async with sessions.begin() as session:
            await session.execute(sa.text("INSERT INTO t VALUES (1, 1)"))
            holding.set()
            await release.wait()

    async def second() -> None:
        await holding.wait()
        async with sessions.begin() as session:
            await session.execute(sa.text("INSERT INTO t VALUES (2, 2)"))

    tasks = [asyncio.create_task(first()), asyncio.create_task(second())]
    await holding.wait()
    began = time.monotonic()
    await asyncio.sleep(0.2)
    assert time.monotonic() - began < 1.5, "the event loop was not frozen meanwhile"
    assert not tasks[1].done(), "the second waits for the first's lock"
    release.set()
    await asyncio.wait_for(asyncio.gather(*tasks), 10)
    async with sessions() as session:
        assert await session.scalar(sa.text("SELECT count(*) FROM t")) == 2


async def test_waiting_gives_up_after_the_busy_time(engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sqlite_inline, "BUSY_SECONDS", 0.3)
    other = other_process(engine)
    other.execute("BEGIN IMMEDIATE")
    sessions = async_sessionmaker(engine)
    try:
        began = time.monotonic()
        with pytest.raises(OperationalError, match="database is locked"):
            async with sessions.begin() as session:
                await session.execute(sa.text("INSERT INTO t VALUES (1, 1)"))
        assert 0.3 <= time.monotonic() - began < 3
    finally:
        other.execute("ROLLBACK")
        other.close()
    async with sessions.begin() as session:  # the connection is usable again
        await session.execute(sa.text("INSERT INTO t VALUES (1, 1)"))


async def test_a_stale_snapshot_is_refused_at_once_not_after_waiting(engine: AsyncEngine) -> None:
    """A transaction that read, then wants to write after another connection wrote, can never
    get the lock (SQLITE_BUSY_SNAPSHOT): it fails at once, as with SQLite's own busy handler."""
    sessions = async_sessionmaker(engine)
    other = other_process(engine)
    try:
        with pytest.raises(OperationalError, match="database is locked"):
            async with sessions.begin() as session:
                await session.execute(sa.text("BEGIN"))
                await session.scalar(sa.text("SELECT count(*) FROM t"))
                other.execute("INSERT INTO t VALUES (9, 9)")
                began = time.monotonic()
                try:
                    await session.execute(sa.text("INSERT INTO t VALUES (1, 1)"))
                finally:
                    refused_after = time.monotonic() - began
        assert refused_after < sqlite_inline.BUSY_SECONDS / 2
    finally:
        other.close()
