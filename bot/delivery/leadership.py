"""Several instances: all of them deliver the outbox, exactly one consumes updates.

Telegram hands updates to one consumer (one getUpdates long poll, or one webhook URL), and
conversations must see one person's updates in order. So with PostgreSQL, where any number
of ``imrs-bot run`` processes may share the database:

* **The leader lock** is a PostgreSQL session-level advisory lock
  (``pg_try_advisory_lock``) held on a dedicated connection. Whoever holds it polls and
  consumes the inbox (bot.inbox; with webhooks every instance's server stores updates there);
  the others stand by and try again every LEADER_RETRY_SECONDS. When
  the leader dies, even by ``kill -9``, the kernel closes its connection, PostgreSQL ends
  the session and the lock is free at once: a standby takes over within the retry
  interval. The leader checks its lock connection on the same interval and stops
  consuming if it is lost (the database restarted, the network failed).
* **Takeover.** Every instance runs the whole Application (initialize, start: handlers,
  JobQueue, the outbox dispatcher); a standby just does not fetch updates. Conversation
  states are written to the database after every update (bot.persistence), but
  python-telegram-bot reads them only at ``initialize()``; a standby's copy is therefore
  stale, and it reloads every persistent conversation from the database
  (:func:`reload_conversations`) right before it starts consuming. That keeps the
  dispatcher running through a takeover and needs no second Application.
* **The rate** (OUTBOX_RATE_PER_SECOND) is the bot's total: each instance heartbeats in
  ``delivery_instances`` and paces itself at rate / live instances (:class:`InstanceRegistry`).

SQLite serves a single instance (one process owns the file): it needs no lock, and
``imrs-bot run`` always consumes updates.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any, Protocol

import psycopg
from sqlalchemy import delete, func, select
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from telegram.ext import Application, ConversationHandler

from bot.db.delivery_models import DeliveryInstance
from bot.db.engine import is_sqlite, normalize_url

_log = logging.getLogger(__name__)

#: The advisory lock key of "consumes updates" ("imrsup"); the key store's migration lock
#: is another key (bot.crypto.keystore.MIGRATION_LOCK_KEY).
LEADER_LOCK_KEY = 0x696D72737570
#: An instance that has not heartbeaten for this long no longer counts.
INSTANCE_TTL = timedelta(seconds=15)
#: Registry rows of instances gone for this long are deleted.
INSTANCE_FORGET = timedelta(hours=1)


class LeaderLock(Protocol):
    async def acquire(self) -> bool:
        """Try to become the consumer of updates (no waiting)."""

    async def holding(self) -> bool:
        """Whether the lock is (still) ours."""

    async def release(self) -> None: ...


class SingleInstanceLock:
    """SQLite: one process owns the database, so it always consumes updates."""

    async def acquire(self) -> bool:
        return True

    async def holding(self) -> bool:
        return True

    async def release(self) -> None:
        return None


class PostgresAdvisoryLock:
    """``pg_try_advisory_lock`` on a dedicated autocommit connection (not from the pool: the
    lock lives exactly as long as this connection)."""

    def __init__(self, database_url: str, *, key: int = LEADER_LOCK_KEY, timeout: float = 5.0) -> None:
        url = make_url(normalize_url(database_url)).set(drivername="postgresql")
        self._conninfo = url.render_as_string(hide_password=False)
        self._key = key
        self._timeout = timeout
        self._connection: psycopg.AsyncConnection[Any] | None = None
        self._held = False

    async def acquire(self) -> bool:
        if self._held and await self.holding():
            return True
        try:
            if self._connection is None or self._connection.closed:
                self._connection = await psycopg.AsyncConnection.connect(
                    self._conninfo,
                    autocommit=True,
                    connect_timeout=max(1, int(self._timeout)),
                    application_name="imrs-bot leader lock",
                )
            cursor = await asyncio.wait_for(
                self._connection.execute("SELECT pg_try_advisory_lock(%s)", (self._key,)),
                self._timeout,
            )
            row = await cursor.fetchone()
            self._held = bool(row and row[0])
        except (psycopg.Error, OSError, TimeoutError) as exc:
            _log.warning("Leader lock: database unavailable (%s)", type(exc).__name__)
            await self._drop()
        return self._held

    async def holding(self) -> bool:
        if not self._held or self._connection is None or self._connection.closed:
            return False
        try:
            await asyncio.wait_for(self._connection.execute("SELECT 1"), self._timeout)
        except (psycopg.Error, OSError, TimeoutError) as exc:
            _log.warning("Leader lock: its connection failed (%s)", type(exc).__name__)
            await self._drop()
            return False
        return True

    async def release(self) -> None:
        if self._held and self._connection is not None and not self._connection.closed:
            with contextlib.suppress(psycopg.Error, OSError, TimeoutError, asyncio.TimeoutError):
                await asyncio.wait_for(
                    self._connection.execute("SELECT pg_advisory_unlock(%s)", (self._key,)),
                    self._timeout,
                )
        await self._drop()

    async def _drop(self) -> None:
        self._held = False
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(psycopg.Error, OSError):
                await connection.close()


def leader_lock_for(database_url: str) -> LeaderLock:
    return SingleInstanceLock() if is_sqlite(database_url) else PostgresAdvisoryLock(database_url)


class InstanceRegistry:
    """Heartbeats in ``delivery_instances``: how many instances share the outbox rate."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], instance_id: str | None = None) -> None:
        self._sessions = sessions
        self.instance_id = instance_id or str(uuid.uuid4())
        self._beats = itertools.count()

    async def heartbeat(self, now: datetime, *, consuming_updates: bool) -> int:
        """Record that this instance is alive; the number of live instances (>= 1)."""
        table = DeliveryInstance.__table__
        async with self._sessions.begin() as session:
            statement = postgresql.insert(table).values(
                id=self.instance_id, started_at=now, heartbeat_at=now,
                consuming_updates=consuming_updates,
            )
            await session.execute(
                statement.on_conflict_do_update(
                    index_elements=["id"],
                    set_={"heartbeat_at": now, "consuming_updates": consuming_updates},
                )
            )
            live = await session.scalar(
                select(func.count()).select_from(table).where(table.c.heartbeat_at > now - INSTANCE_TTL)
            )
            if next(self._beats) % 60 == 0:
                await session.execute(delete(table).where(table.c.heartbeat_at < now - INSTANCE_FORGET))
        return max(1, int(live or 0))

    async def leave(self) -> None:
        table = DeliveryInstance.__table__
        async with self._sessions.begin() as session:
            await session.execute(delete(table).where(table.c.id == self.instance_id))


async def reload_conversations(application: Application) -> int:
    """Replace the in-memory states of every persistent ConversationHandler by the database's.

    python-telegram-bot loads conversation states from persistence only in
    ``Application.initialize()``. A standby that takes over consumes updates long after its
    initialize, so its copy is stale: this does what initialize does for conversations,
    starting from empty dicts so that conversations ended meanwhile are gone too. It uses
    PTB's (protected) ``_initialize_persistence`` hooks, as the Application itself does;
    tests/test_instances.py pins the behaviour. Returns the number of states loaded.
    """
    if application.persistence is None:
        return 0
    loaded = 0
    for handler in itertools.chain.from_iterable(application.handlers.values()):
        if isinstance(handler, ConversationHandler) and handler.persistent and handler.name:
            _forget_states(handler)
            tracked = await handler._initialize_persistence(application)  # noqa: SLF001
            application._conversation_handler_conversations.update(tracked)  # noqa: SLF001
            loaded += sum(len(states) for states in tracked.values())
    return loaded


def _forget_states(handler: ConversationHandler) -> None:
    # A plain empty dict: _initialize_persistence copies it into a fresh TrackingDict, so no
    # deletion is tracked (tracked deletions would be written to the database).
    handler._conversations = {}  # noqa: SLF001
    for child in handler._child_conversations:  # noqa: SLF001
        _forget_states(child)


class UpdateConsumer:
    """Consume updates while holding the leader lock; stand by (and keep trying) otherwise."""

    def __init__(
        self,
        application: Application,
        lock: LeaderLock,
        *,
        start: Callable[[], Awaitable[None]],
        stop: Callable[[], Awaitable[None]],
        retry_seconds: float,
        on_change: Callable[[bool], Awaitable[None]] | None = None,
    ) -> None:
        self._application = application
        self._lock = lock
        self._start = start
        self._stop = stop
        self._retry = retry_seconds
        self._on_change = on_change
        self.consuming = False

    async def run(self, stop: asyncio.Event, on_consuming: Callable[[], None] | None = None) -> None:
        """Until ``stop`` is set. ``on_consuming`` is called each time consuming starts."""
        standing_by_logged = False
        try:
            while not stop.is_set():
                if not await self._lock.acquire():
                    if not standing_by_logged:
                        _log.info("Another instance consumes updates; this one stands by "
                                  "(delivering outbox messages) and will take over if it stops")
                        standing_by_logged = True
                    await _wait(stop, self._retry)
                    continue
                standing_by_logged = False
                states = await reload_conversations(self._application)
                await self._start()
                await self._set_consuming(True)
                _log.info("Consuming updates (%d conversation state(s) loaded)", states)
                if on_consuming is not None:
                    on_consuming()
                while not stop.is_set():
                    await _wait(stop, self._retry)
                    if not stop.is_set() and not await self._lock.holding():
                        _log.warning("Lost the leader lock: no longer consuming updates")
                        break
                await self._stop_consuming()
        finally:
            await self._stop_consuming()
            await self._lock.release()

    async def _stop_consuming(self) -> None:
        if self.consuming:
            await self._set_consuming(False)
            await self._stop()

    async def _set_consuming(self, consuming: bool) -> None:
        self.consuming = consuming
        if self._on_change is not None:
            await self._on_change(consuming)


async def _wait(event: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError, asyncio.TimeoutError):
        await asyncio.wait_for(event.wait(), seconds)
