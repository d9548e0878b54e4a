"""python-telegram-bot persistence on our SQL database: conversation states only.

Why only conversation states: everything a person tells the bot goes into proper
tables through the services (encrypted where it is sensitive), never into PTB's
free-form ``user_data`` / ``chat_data`` / ``bot_data`` dicts. Persisting those
dicts would create an unencrypted blob that could quietly collect clinical text,
so this persistence does not store them at all (``store_data`` is all False, so
the Application never even calls the corresponding methods; they are no-ops).

What is stored: for every persistent, named ``ConversationHandler``, the state of
each ongoing conversation (an int or a string), keyed by the conversation key
(e.g. ``(chat_id, user_id)``). That is what lets a conversation continue where it
was after the bot restarts.

Writes go to the database immediately in :meth:`update_conversation` (the
Application calls it from ``update_persistence`` after every update, every
``update_interval`` seconds and on shutdown). python-telegram-bot hands each change
over once: a write that fails (the database locked, full or restarting) would be
lost, and after the next restart the person would be back at an earlier step. So a
change that could not be written is kept here and written with the next one, by a
retry in the background until the database takes it, and at the latest by
:meth:`flush` at shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from telegram.ext import BasePersistence, PersistenceInput

from bot.db.repositories import ConversationKey, ConversationStateRepository

_log = logging.getLogger(__name__)
_NOTHING = PersistenceInput(bot_data=False, chat_data=False, user_data=False, callback_data=False)

Data = dict[Any, Any]
#: How long one read of all conversation states may serve the names of a loading round.
_SNAPSHOT_SECONDS = 5.0

# python-telegram-bot's (private) CDCData alias: the callback-data cache contents.
CallbackData = tuple[list[tuple[str, float, dict[str, Any]]], dict[str, str]]


class SqlPersistence(BasePersistence[Data, Data, Data]):
    """A :class:`telegram.ext.BasePersistence` keeping conversation states in SQL.

    ``SqlPersistence(session_factory, update_interval=1.0)``: a short interval,
    because a state change only reaches the database on the Application's next
    ``update_persistence`` run (the writes themselves are cheap upserts of
    changed conversations only).
    """

    __slots__ = (
        "_collecting", "_retry", "_served", "_session_factory", "_snapshot", "_snapshot_at", "_unwritten",
        "_write_lock",
    )

    #: Seconds between retries of changes that could not be written (doubling up to the cap).
    RETRY_FIRST, RETRY_CAP = 0.25, 5.0

    def __init__(
        self,
        session_factory: async_sessionmaker[AsyncSession],
        *,
        update_interval: float = 1.0,
    ) -> None:
        super().__init__(store_data=_NOTHING, update_interval=update_interval)
        self._session_factory = session_factory
        # The Application gathers all update_conversation() calls concurrently.
        # Serializing them keeps SQLite to one writer (no lock contention) and
        # bounds the connections used on PostgreSQL; each write is one short
        # transaction.
        self._write_lock = asyncio.Lock()
        # One read of every conversation's states, served name by name (get_conversations).
        self._snapshot: dict[str, dict[ConversationKey, object]] | None = None
        self._snapshot_at = 0.0
        self._served: set[str] = set()
        #: Changes not in the database yet: (name, key) -> state (None: ended).
        self._unwritten: dict[tuple[str, ConversationKey], object | None] = {}
        self._retry: asyncio.Task[None] | None = None
        # While the inbox consumer processes updates (bot.inbox, several chats' at once): the
        # states each changes, by the conversation keys its chat and user make, written with
        # its row's completion instead of one by one.
        self._collecting: dict[ConversationKey, dict[tuple[str, ConversationKey], object | None]] = {}

    # -- conversations: the only thing stored ------------------------------------

    async def get_conversations(self, name: str) -> dict[ConversationKey, object]:
        """The states of conversation ``name``.

        The Application asks once per persistent ConversationHandler, one after another, when
        it initialises (and bot.delivery.leadership asks again when a standby takes over): a
        few dozen names. The first ask of such a round reads every name's states in one query
        and the others are served from that read, instead of a query each (a large part of
        starting the bot). A name asked for again starts a new round, as does anything
        written here or a read older than ``_SNAPSHOT_SECONDS``: a round never returns states
        older than its first read."""
        now = time.monotonic()
        if self._snapshot is None or name in self._served or now - self._snapshot_at > _SNAPSHOT_SECONDS:
            async with self._session_factory() as session:
                self._snapshot = await ConversationStateRepository(session).load_all()
            self._snapshot_at, self._served = now, set()
        self._served.add(name)
        states = self._snapshot.pop(name, {})
        # Changes not written yet are newer than the database's (a takeover reloads these).
        for (pending_name, key), state in self._unwritten.items():
            if pending_name != name:
                continue
            if state is None:
                states.pop(key, None)
            else:
                states[key] = state
        return states

    async def update_conversation(
        self, name: str, key: ConversationKey, new_state: object | None
    ) -> None:
        """Write the change (and any earlier one that could not be written). A failure is
        raised (python-telegram-bot hands it to the error handler) and retried later."""
        self._snapshot = None
        collected = self._collecting.get(key)
        if collected is not None:
            collected[(name, key)] = new_state
            return
        self._unwritten[(name, key)] = new_state
        try:
            await self._write_unwritten()
        except (SQLAlchemyError, OSError):
            self._retry_later()
            raise

    async def _write_unwritten(self) -> None:
        async with self._write_lock:
            if not self._unwritten:
                return
            batch = dict(self._unwritten)
            async with self._session_factory() as session, session.begin():
                repository = ConversationStateRepository(session)
                for (name, key), state in batch.items():
                    await repository.save(name, key, state)
            self._snapshot = None
            for item, state in batch.items():
                if item in self._unwritten and self._unwritten[item] == state:  # not changed meanwhile
                    del self._unwritten[item]

    def _retry_later(self) -> None:
        if self._retry is None or self._retry.done():
            self._retry = asyncio.create_task(self._retry_until_written(), name="persistence-retry")

    async def _retry_until_written(self) -> None:
        delay = self.RETRY_FIRST
        _log.warning("%d conversation state(s) could not be saved; retrying", len(self._unwritten))
        while self._unwritten:
            await asyncio.sleep(delay)
            try:
                await self._write_unwritten()
            except (SQLAlchemyError, OSError) as exc:
                delay = min(self.RETRY_CAP, delay * 2)
                _log.debug("Saving conversation states failed again (%s)", type(exc).__name__)
        _log.info("Conversation states saved after an earlier failure")

    # -- the inbox: an update's states and its completion in one transaction ------------------

    @contextlib.contextmanager
    def collecting(
        self, chat_id: int | None, user_id: int | None
    ) -> Iterator[dict[tuple[str, ConversationKey], object | None]]:
        """While inside, writes of the conversations of ``chat_id`` and ``user_id`` (the keys
        python-telegram-bot makes of them: ``(chat, user)``, ``(chat,)``, ``(user,)``) are kept
        (the latest per conversation) instead of written: they belong to the update the inbox
        consumer is processing for that chat and user (or are a timer's, which may as well go
        with it).

        The consumer processes several updates at once, never two of one chat or one user
        (bot.inbox), so a key names one update in progress, whichever task hands the change
        over (python-telegram-bot's ``update_persistence`` writes every conversation changed
        since its last run, also other updates'). A change of no update in progress (a
        timer's) is written at once, as outside the inbox."""
        collected: dict[tuple[str, ConversationKey], object | None] = {}
        keys: list[ConversationKey] = []
        if chat_id is not None and user_id is not None:
            keys.append((chat_id, user_id))
        keys += [(ident,) for ident in dict.fromkeys((chat_id, user_id)) if ident is not None]
        keys = [key for key in keys if key not in self._collecting]  # (not expected: see above)
        for key in keys:
            self._collecting[key] = collected
        try:
            yield collected
        finally:
            for key in keys:
                del self._collecting[key]

    async def write_states(
        self,
        states: dict[tuple[str, ConversationKey], object | None],
        *,
        also: Callable[[AsyncSession], Awaitable[None]],
    ) -> None:
        """Write collected states and run ``also`` in one transaction (with any earlier change
        that could not be written, which must not later overwrite these)."""
        self._snapshot = None
        async with self._write_lock:
            batch = {**self._unwritten, **states}
            async with self._session_factory() as session, session.begin():
                repository = ConversationStateRepository(session)
                for (name, key), state in batch.items():
                    await repository.save(name, key, state)
                await also(session)
            for item in batch:
                self._unwritten.pop(item, None)

    async def flush(self) -> None:
        """At shutdown: a last try for changes that could not be written yet."""
        if self._retry is not None:
            self._retry.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._retry
            self._retry = None
        try:
            await self._write_unwritten()
        except (SQLAlchemyError, OSError) as exc:
            _log.warning(
                "%d conversation state(s) could not be saved at shutdown (%s)",
                len(self._unwritten), type(exc).__name__,
            )

    # -- user / chat / bot / callback data: deliberately not stored --------------

    async def get_user_data(self) -> dict[int, Data]:
        return {}

    async def get_chat_data(self) -> dict[int, Data]:
        return {}

    async def get_bot_data(self) -> Data:
        return {}

    async def get_callback_data(self) -> CallbackData | None:
        return None

    async def update_user_data(self, user_id: int, data: Data) -> None:
        pass

    async def update_chat_data(self, chat_id: int, data: Data) -> None:
        pass

    async def update_bot_data(self, data: Data) -> None:
        pass

    async def update_callback_data(self, data: CallbackData) -> None:
        pass

    async def drop_user_data(self, user_id: int) -> None:
        pass

    async def drop_chat_data(self, chat_id: int) -> None:
        pass

    async def refresh_user_data(self, user_id: int, user_data: Data) -> None:
        pass

    async def refresh_chat_data(self, chat_id: int, chat_data: Data) -> None:
        pass

    async def refresh_bot_data(self, bot_data: Data) -> None:
        pass
