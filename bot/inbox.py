"""The durable inbox: no update is lost between Telegram and the conversation it belongs to.

python-telegram-bot confirms updates to Telegram when it has fetched them (polling) or
queued them (webhook), so updates still in memory vanish with the process. Here every
update is first written to the ``inbox`` table (bot.db.delivery_models.InboxUpdate) and only
then confirmed:

* **Polling**: the leader's ``Updater`` puts fetched updates into an :class:`InboxQueue`
  instead of an ``asyncio.Queue``. PTB confirms a batch only with the ``offset`` of its next
  getUpdates; the Updater's bot (:class:`PollingBot`) commits the batch, in one transaction,
  right before that call, so the offset never passes an update that is not stored.
* **Webhook**: every instance serves the webhook (bot.webhook) and answers 200 only after the
  row is committed; an error is answered 503, and Telegram sends the update again.
* A repeated ``update_id`` (Telegram retrying, two instances, a replay) is stored once
  (``ON CONFLICT DO NOTHING``), so it is processed once.

**Consuming.** One instance (the leader, bot.delivery.leadership) runs the
:class:`InboxConsumer`: unprocessed rows in ``update_id`` order, each through
``Application.process_update``, up to INBOX_CONCURRENCY (16) at once, but never two of one chat
or of one person: an update starts only after the previous one of its chat and of its user is
completed (its row marked processed), so one chat's updates are processed in order. (Updates
of neither, such as a poll's, are one such "chat" of their own.) The conversation states an
update changed are collected (bot.persistence.SqlPersistence.collecting, by the conversation
keys of its chat and user: no other update in progress has them) and written **in the same
transaction** that marks its row processed. With ``concurrency=1`` the rows are processed one
after the other, as before.

**What "once" means, exactly.**

* An update whose row is marked processed is never processed again, and its conversation
  states are exactly those it produced (same transaction).
* An update that was being processed when the consumer died (``kill -9``, a lost leader lock,
  a failing database) is processed again by the next consumer, from the conversation states
  before it. What its handlers had already done outside that transaction may happen twice:
  a reply already sent is sent again (Telegram messages cannot be taken back), and a
  service write the handler had committed is made again from the same state: one that sets
  a value in place (an answer saved, a preference) ends the same; one that adds a row (an
  audit event, a practice run) may add a second; the outbox's idempotency keys keep a
  queued message single (the handlers have not been reviewed one by one for this). An exercise already under way (its step timers run as JobQueue
  jobs after the update) is resumed by ``exercises.on_consuming`` as after any restart.
  So: at most the updates in progress at a consumer crash can be answered twice, one per
  chat, at most INBOX_CONCURRENCY in all; none is lost, none other is repeated. (A lost
  leader lock: the consumer completes the updates in progress and stops; the next leader
  may have started them again meanwhile.)
* Updates are ordered by ``update_id`` among those stored. With webhooks, Telegram may post
  updates of different chats concurrently; an update stored later than a newer one of the
  same chat (which Telegram does not do: it posts one chat's updates in order) would be
  processed after it.

**Retention and privacy.** The payload (the update's JSON: what a person typed) is encrypted
like any other text, but under the key of the hour it arrived in (``key_owner`` = a negative
number, never a person's id; strangers have no key of their own). Processed rows are deleted
after INBOX_RETENTION_SECONDS (default one hour) and each hour's key is destroyed once its
rows are gone and the retention time (at least :data:`KEY_MARGIN`) has passed: a copy of the
database does not keep the texts readable for longer. ``/delete`` deletes the person's
rows at once (bot.services.data_rights), up to the update being processed.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from telegram import Update
from telegram.ext import Application

from bot.crypto.errors import CryptoError
from bot.crypto.fields import FieldCrypto, Sealed, new_row_id
from bot.db.delivery_models import InboxUpdate
from bot.db.types import utcnow

if TYPE_CHECKING:
    from bot.persistence import SqlPersistence

_log = logging.getLogger(__name__)

TABLE = InboxUpdate.__tablename__
#: The inbox's keys: one per hour.
KEY_PERIOD_SECONDS = 3600
#: An hour's key is kept at least this long after the hour ended (clocks of instances differ).
KEY_MARGIN = timedelta(minutes=10)
#: How often the consumer deletes old rows and keys.
PURGE_EVERY_SECONDS = 60.0
#: Rows read per query by the consumer.
BATCH = 100

#: The update_id the consumer is processing (for erasure: the rows up to it are the person's past).
CURRENT_UPDATE_ID: contextvars.ContextVar[int | None] = contextvars.ContextVar("inbox_update_id", default=None)


def key_owner_at(moment: datetime) -> int:
    """The key owner of the hour ``moment`` is in: negative, never a person's id."""
    return -(int(moment.timestamp()) // KEY_PERIOD_SECONDS + 1)


def _hour_ended(owner: int) -> datetime:
    from datetime import UTC

    return datetime.fromtimestamp(-owner * KEY_PERIOD_SECONDS, UTC)


@dataclass(frozen=True)
class Stored:
    """An unprocessed row: its id, Telegram's update id, and the update (None when it cannot
    be read any more: its key was destroyed, or it is not an update)."""

    row_id: int
    update_id: int
    data: dict[str, Any] | None
    chat_id: int | None = None
    user_id: int | None = None

    @property
    def lanes(self) -> frozenset[int | None]:
        """What its order is kept within: its chat and its user (an update of neither, such
        as a poll's, goes with the others of neither: None)."""
        return frozenset(i for i in (self.chat_id, self.user_id) if i is not None) or frozenset({None})


class Inbox:
    """The table: receive (deduplicated), read in order, complete, purge, forget a person."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        crypto: FieldCrypto,
        *,
        retention_seconds: float = 3600.0,
    ) -> None:
        self._sessions = sessions
        self._crypto = crypto
        self.retention = timedelta(seconds=retention_seconds)
        self.arrived = asyncio.Event()  # set when this process stored an update

    async def receive(self, update: Update) -> bool:
        """Store ``update`` (committed when this returns). False if its update_id was stored
        before (it is not stored again)."""
        return await self.receive_many([update]) == 1

    async def receive_many(self, updates: list[Update]) -> int:
        """Store ``updates`` in one transaction (committed when this returns); how many were
        new (an update_id stored before is not stored again)."""
        if not updates:
            return 0
        now = utcnow()
        owner = key_owner_at(now)
        await self._crypto.ensure_writable([owner])
        rows = []
        for incoming in updates:  # (not "update": sqlalchemy's update() is imported)
            row_id = new_row_id()
            payload = json.dumps(incoming.to_dict(), ensure_ascii=False, separators=(",", ":")).encode()
            sealed = self._crypto.seal(payload, table=TABLE, column="payload", row_id=row_id, owner_id=owner)
            chat, user = incoming.effective_chat, incoming.effective_user
            rows.append(dict(
                id=row_id, update_id=incoming.update_id, chat_id=chat.id if chat else None,
                user_id=user.id if user else None, key_owner=owner, payload=Sealed(sealed), received_at=now,
            ))
        table = InboxUpdate.__table__
        async with self._sessions.begin() as session:
            dialect = session.get_bind().dialect.name
            insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
            result = await session.execute(
                insert(table).values(rows).on_conflict_do_nothing(index_elements=["update_id"])
            )
        self.arrived.set()
        return int(result.rowcount or 0)  # type: ignore[attr-defined]

    async def unprocessed(self, limit: int = BATCH, *, besides: frozenset[int] = frozenset()) -> list[Stored]:
        """The oldest unprocessed rows (but those whose id is in ``besides``: in progress), in
        update_id order, decrypted."""
        table = InboxUpdate.__table__
        query = (
            select(table.c.id, table.c.update_id, table.c.key_owner, table.c.payload, table.c.chat_id,
                   table.c.user_id)
            .where(table.c.processed_at.is_(None))
            .order_by(table.c.update_id)
            .limit(limit)
        )
        if besides:
            query = query.where(table.c.id.not_in(besides))
        async with self._sessions() as session:
            rows = (await session.execute(query)).all()
        await self._crypto.prepare({r.key_owner for r in rows})
        found: list[Stored] = []
        for row_id, update_id, owner, sealed, chat_id, user_id in rows:
            data: dict[str, Any] | None = None
            try:
                plain = self._crypto.open(sealed.data, table=TABLE, column="payload", row_id=row_id, owner_id=owner)
                data = json.loads(plain)
            except (CryptoError, ValueError) as exc:
                _log.warning("Inbox: update %s cannot be read (%s); skipped", update_id, type(exc).__name__)
            found.append(Stored(row_id, update_id, data if isinstance(data, dict) else None, chat_id, user_id))
        return found

    @staticmethod
    async def mark_processed(session: AsyncSession, row_id: int) -> None:
        """In the caller's transaction (the one writing the update's conversation states)."""
        table = InboxUpdate.__table__
        await session.execute(update(table).where(table.c.id == row_id).values(processed_at=utcnow()))

    async def backlog(self) -> int:
        """Rows not processed yet."""
        async with self._sessions() as session:
            count = await session.scalar(
                select(func.count()).select_from(InboxUpdate).where(InboxUpdate.processed_at.is_(None))
            )
        return int(count or 0)

    async def purge(self, now: datetime | None = None) -> tuple[int, int]:
        """Delete rows processed more than the retention time ago, then destroy the hourly
        keys no row uses any more whose hour ended long enough ago. (rows, keys) deleted."""
        now = now or utcnow()
        async with self._sessions.begin() as session:
            result = await session.execute(
                delete(InboxUpdate).where(InboxUpdate.processed_at < now - self.retention)
            )
            in_use = set((await session.scalars(select(InboxUpdate.key_owner).distinct())).all())
        rows = int(result.rowcount or 0)  # type: ignore[attr-defined]
        keys = 0
        expired_before = now - max(self.retention, KEY_MARGIN)
        for owner in await self._crypto.keystore.owners_below(0):
            if owner not in in_use and _hour_ended(owner) <= expired_before:
                keys += await self._crypto.keystore.destroy(owner)
                self._crypto.forget(owner)
        return rows, keys

    @staticmethod
    async def forget_user(session: AsyncSession, telegram_id: int) -> int:
        """Erasure, in the caller's transaction: delete the person's rows (theirs or their
        private chat's) up to the update being processed (later ones are still to be answered;
        all of them outside the consumer)."""
        condition = or_(InboxUpdate.user_id == telegram_id, InboxUpdate.chat_id == telegram_id)
        current = CURRENT_UPDATE_ID.get()
        if current is not None:
            condition = condition & (InboxUpdate.update_id <= current)
        result = await session.execute(delete(InboxUpdate).where(condition))
        return int(result.rowcount or 0)  # type: ignore[attr-defined]


RETRY_SECONDS = (0.1, 0.5, 1.0, 2.0, 5.0)


class InboxQueue(asyncio.Queue):
    """What the polling ``Updater`` puts fetched updates into. ``put`` collects the batch of
    one getUpdates; :meth:`flush` stores it in one transaction (retrying while the database
    fails). :class:`PollingBot` flushes before each getUpdates, whose ``offset`` is what
    confirms the previous batch to Telegram: nothing is confirmed before it is committed.
    Nothing is ever taken out of this queue."""

    def __init__(self, inbox: Inbox) -> None:
        super().__init__()
        self._inbox = inbox
        self._batch: list[Update] = []

    async def put(self, item: object) -> None:
        if isinstance(item, Update):
            self._batch.append(item)

    def put_nowait(self, item: object) -> None:
        raise RuntimeError("the inbox stores updates with `await put()`")

    async def flush(self) -> None:
        """Store the batch, trying for about 10 s while the database fails; then raise, so
        that the getUpdates waiting for this is not sent (PTB's polling loop logs the error
        and calls again; its last call when stopping gives up), and nothing is confirmed."""
        for attempt in range(len(RETRY_SECONDS) + 1):
            if not self._batch:
                return
            try:
                await self._inbox.receive_many(self._batch)
                self._batch = []
            except Exception as exc:  # noqa: BLE001 - the database: try again, never confirm
                if attempt == len(RETRY_SECONDS):
                    raise
                _log.warning("Inbox: storing updates failed (%s); retrying", type(exc).__name__)
                await asyncio.sleep(RETRY_SECONDS[attempt])


class PollingBot:
    """The bot as the polling ``Updater`` sees it: the application's bot, except that
    ``get_updates`` first commits the previous batch to the inbox (:meth:`InboxQueue.flush`).
    PTB's Updater confirms a batch only through the offset of its next getUpdates (also the
    one it sends when it stops), so this is the moment between "stored" and "confirmed"."""

    def __init__(self, bot: Any, queue: InboxQueue) -> None:
        self._bot = bot
        self._queue = queue

    def __getattr__(self, name: str) -> Any:
        return getattr(self._bot, name)

    async def get_updates(self, *args: Any, **kwargs: Any) -> Any:
        await self._queue.flush()
        return await self._bot.get_updates(*args, **kwargs)


class InboxConsumer:
    """The leader's loop: process stored updates, each chat's in order, up to ``concurrency``
    chats' at once, each completed atomically with the conversation states it produced (see
    the module docstring). ``concurrency=1``: one update after the other, in update_id order."""

    def __init__(
        self, application: Application, inbox: Inbox, *, poll_seconds: float = 0.5, concurrency: int = 1
    ) -> None:
        self._application = application
        self._inbox = inbox
        self._poll = poll_seconds
        self.concurrency = max(1, concurrency)
        #: How many rows may be read ahead (scheduled, waiting for their chat or a slot).
        self._window = max(BATCH, 4 * self.concurrency)
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self.processed = 0
        # Concurrent mode: the rows scheduled (row id -> its task: True once completed), the
        # last task scheduled of each chat and user, and an event set when one ends.
        self._scheduled: dict[int, asyncio.Task[bool]] = {}
        self._last_of: dict[int | None, asyncio.Task[bool]] = {}
        self._slots = asyncio.Semaphore(self.concurrency)
        self._ended = asyncio.Event()
        self._failed = False

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        if self.running:
            return
        self._stopping = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name="inbox-consumer")

    async def stop(self, timeout: float = 10.0) -> None:
        """Let the updates in progress finish (up to ``timeout``), then stop. Those scheduled
        but not started stay unprocessed: the next consumer has them."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping.set()
        self._inbox.arrived.set()
        self._ended.set()
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        except Exception as exc:  # noqa: BLE001 - the row stays unprocessed: the next consumer has it
            _log.warning("Inbox: the consumer stopped on %s", type(exc).__name__)

    async def _run(self) -> None:
        if self.concurrency > 1:
            await self._run_concurrently()
            return
        loop = asyncio.get_running_loop()
        next_purge = loop.time()
        while not self._stopping.is_set():
            if loop.time() >= next_purge:
                next_purge = loop.time() + PURGE_EVERY_SECONDS
                await self._purge()
            self._inbox.arrived.clear()
            try:
                batch = await self._inbox.unprocessed()
            except Exception as exc:  # noqa: BLE001 - the database: try again shortly
                _log.warning("Inbox: reading updates failed (%s)", type(exc).__name__)
                batch = []
            for stored in batch:
                if self._stopping.is_set():
                    return
                await self._process(stored)
            if not batch:
                with contextlib.suppress(TimeoutError, asyncio.TimeoutError):
                    await asyncio.wait_for(self._inbox.arrived.wait(), self._poll)

    # -- several chats at once ------------------------------------------------------------------

    async def _run_concurrently(self) -> None:
        """Read unprocessed rows (not those scheduled already) and schedule each after the
        previous one of its chat and of its user; up to ``concurrency`` run at once. Stopping
        waits for those in progress."""
        loop = asyncio.get_running_loop()
        next_purge = loop.time()
        quiet = True  # nothing happened for a poll interval (other instances' rows: look)
        more = False  # the last read was full
        try:
            while not self._stopping.is_set():
                if loop.time() >= next_purge:
                    next_purge = loop.time() + PURGE_EVERY_SECONDS
                    await self._purge()
                room = self._window - len(self._scheduled)
                self._ended.clear()
                # Read when few are left to do (a read per update that ends would cost a query
                # each under load) or after a quiet poll interval (other instances' rows).
                low = len(self._scheduled) <= self.concurrency
                if room > 0 and (quiet or (low and (more or self._inbox.arrived.is_set()))):
                    self._inbox.arrived.clear()
                    if self._failed:  # an update failed: its row is read again, not at once
                        self._failed = False
                        await self._pause()
                    # Those ended before the read are not waited for again (a failed one's row
                    # is in this read, before its chat's later ones); those scheduled are not read.
                    live = set(self._scheduled.values())
                    self._last_of = {lane: t for lane, t in self._last_of.items() if t in live}
                    besides = frozenset(self._scheduled)
                    try:
                        batch = await self._inbox.unprocessed(room, besides=besides)
                    except Exception as exc:  # noqa: BLE001 - the database: try again shortly
                        _log.warning("Inbox: reading updates failed (%s)", type(exc).__name__)
                        batch = []
                    more = len(batch) >= room  # (the table may hold more than read)
                    for stored in batch:
                        if self._stopping.is_set():
                            break
                        if stored.row_id not in self._scheduled:
                            self._schedule(stored)
                quiet = await self._wait_for_news(arrivals=len(self._scheduled) <= self.concurrency)
        except asyncio.CancelledError:  # stop() gave up waiting: cancel those in progress
            await self._cancel_scheduled()
            raise
        await self._drain()

    async def _pause(self) -> None:
        with contextlib.suppress(TimeoutError, asyncio.TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), self._poll)

    async def _wait_for_news(self, *, arrivals: bool) -> bool:
        """Until one scheduled ends or (``arrivals``) an update arrives; True if the poll
        interval passed first."""
        waits = [asyncio.ensure_future(self._ended.wait())]
        if arrivals:
            waits.append(asyncio.ensure_future(self._inbox.arrived.wait()))
        try:
            done, _ = await asyncio.wait(waits, timeout=self._poll, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()
        return not done

    def _schedule(self, stored: Stored) -> None:
        before = {self._last_of[lane] for lane in stored.lanes if lane in self._last_of}
        task = asyncio.create_task(self._after(before, stored), name=f"inbox-update-{stored.update_id}")
        for lane in stored.lanes:
            self._last_of[lane] = task
        self._scheduled[stored.row_id] = task
        task.add_done_callback(lambda done: self._done(stored, done))

    async def _after(self, before: set[asyncio.Task[bool]], stored: Stored) -> bool:
        """Process ``stored`` once the previous update of its chat and of its user completed;
        False (nothing done, the row stays unprocessed) if one of them did not."""
        if before:
            await asyncio.wait(before)  # (not gather: cancelling this must not cancel them)
            if not all(not t.cancelled() and t.exception() is None and t.result() is True for t in before):
                return False
        async with self._slots:
            if self._stopping.is_set():
                return False
            await self._process(stored)
        return True

    def _done(self, stored: Stored, task: asyncio.Task[bool]) -> None:
        self._scheduled.pop(stored.row_id, None)
        self._ended.set()
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self._failed = True
            if not self._stopping.is_set():
                _log.warning("Inbox: update %s failed (%s); it stays unprocessed",
                             stored.update_id, type(exc).__name__)
        elif task.result() is False and not self._stopping.is_set():
            self._failed = True

    async def _drain(self) -> None:
        """Wait for the updates in progress (those not started return at once); if this is
        cancelled (stop's timeout), cancel them."""
        try:
            await asyncio.gather(*self._scheduled.values(), return_exceptions=True)
        except asyncio.CancelledError:
            await self._cancel_scheduled()
            raise
        self._last_of.clear()

    async def _cancel_scheduled(self) -> None:
        tasks = list(self._scheduled.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._last_of.clear()

    async def _process(self, stored: Stored) -> None:
        persistence: SqlPersistence = self._application.persistence  # type: ignore[assignment]
        token = CURRENT_UPDATE_ID.set(stored.update_id)
        try:
            with persistence.collecting(stored.chat_id, stored.user_id) as states:
                try:
                    update = Update.de_json(stored.data, self._application.bot) if stored.data else None
                except Exception as exc:  # noqa: BLE001 - not an update: nothing to process
                    _log.warning("Inbox: update %s is not readable (%s); skipped",
                                 stored.update_id, type(exc).__name__)
                    update = None
                if update is not None:
                    # Handler errors go to the error handler inside process_update.
                    await self._application.process_update(update)
                    await self._application.update_persistence()
            await self._complete(stored, states)
        finally:
            CURRENT_UPDATE_ID.reset(token)
        self.processed += 1

    async def _complete(self, stored: Stored, states: dict[Any, Any]) -> None:
        persistence: SqlPersistence = self._application.persistence  # type: ignore[assignment]
        for attempt in range(1_000_000):
            try:
                await persistence.write_states(
                    states, also=lambda session: Inbox.mark_processed(session, stored.row_id)
                )
                return
            except Exception as exc:  # noqa: BLE001 - the database: keep the row, try again
                if self._stopping.is_set():
                    raise
                _log.warning("Inbox: completing update %s failed (%s); retrying",
                             stored.update_id, type(exc).__name__)
                await asyncio.sleep(RETRY_SECONDS[min(attempt, len(RETRY_SECONDS) - 1)])

    async def _purge(self) -> None:
        try:
            rows, keys = await self._inbox.purge()
        except Exception as exc:  # noqa: BLE001 - next time
            _log.warning("Inbox: deleting old updates failed (%s)", type(exc).__name__)
            return
        if rows or keys:
            _log.info("Inbox: %d processed update(s) and %d hourly key(s) deleted", rows, keys)
