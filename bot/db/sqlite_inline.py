"""SQLite statements run on the event loop's own thread (issue 16: the bot's CPU per update).

SQLAlchemy's aiosqlite dialect hands every driver call to the connection's thread and waits
for the answer: a cursor, the statement, its rows, the cursor's close, the commit: about 3.5
hand-overs per statement. On this project's machines one hand-over costs about 0.2 ms of CPU
(waking the thread, the GIL changing hands, waking the event loop through its self-pipe),
several times what a small indexed statement costs SQLite itself, and an update's five or so
statements paid 4 to 5 ms for it (``bench/round_trips.py`` counts them). Here the
:class:`InlineConnection` runs them directly, as the synchronous ``sqlite3`` driver does,
with SQLAlchemy's async engine, sessions and dialect unchanged.

What this gives up, and how it is kept safe:

* **Waiting for a lock.** SQLite's own busy timeout sleeps inside the call. On the event
  loop's thread that would freeze the bot, and when the lock is held by another of its own
  connections (another update's transaction, waiting for its turn on the same loop) nothing
  could release it until the timeout ran out. So these connections have ``busy_timeout=0``,
  and a statement (or COMMIT) that finds the database locked yields to the event loop and is
  tried again, for up to :data:`BUSY_SECONDS` (the busy timeout the connections had),
  first after 1 ms, then up to every 50 ms. A statement refused for being busy had no effect,
  so trying it again is what SQLite's busy handler does too. ``SQLITE_BUSY_SNAPSHOT`` (a
  transaction that read, then wanted to write after another connection wrote) can never
  succeed by waiting: it is raised at once, as before (bot.db.engine takes the write lock first
  where that matters).
* **Long statements block the loop.** A statement holds the event loop for as long as SQLite
  takes: tens of microseconds for the bot's indexed reads and writes; more for a large export
  or the hourly purge, and a WAL checkpoint's fsync now and then. A practice that outgrows
  that is a practice for PostgreSQL (README "Scaling").

aiosqlite still opens and closes each connection (its thread stays idle in between), and
SQLAlchemy's dialect is used as it is: this only replaces the object the dialect calls.
Migrations keep plain aiosqlite (``create_engine(..., for_migrations=True)``).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

__all__ = ["BUSY_SECONDS", "InlineConnection", "InlineCursor", "inline"]

#: How long a statement may wait for another connection's write lock before it fails with
#: "database is locked" (the busy timeout bot.db.engine gave SQLite before).
BUSY_SECONDS = 5.0
_FIRST_WAIT, _LONGEST_WAIT = 0.001, 0.05

_T = TypeVar("_T")


_SQLITE_BUSY_SNAPSHOT = 517  # SQLITE_BUSY | (2 << 8)


def _retryable(exc: sqlite3.OperationalError) -> bool:
    """SQLITE_BUSY and its extended codes, except BUSY_SNAPSHOT (waiting cannot help it)."""
    code = exc.sqlite_errorcode
    return code & 0xFF == sqlite3.SQLITE_BUSY and code != _SQLITE_BUSY_SNAPSHOT


async def _when_free(call: Callable[[], _T]) -> _T:
    """``call()``; while SQLite answers that the database is locked, yield to the event loop
    and call again (up to :data:`BUSY_SECONDS`)."""
    try:
        return call()
    except sqlite3.OperationalError as exc:
        if not _retryable(exc):
            raise
    loop = asyncio.get_running_loop()
    deadline, wait = loop.time() + BUSY_SECONDS, _FIRST_WAIT
    while True:
        await asyncio.sleep(wait)
        try:
            return call()
        except sqlite3.OperationalError as exc:
            if not _retryable(exc) or loop.time() >= deadline:
                raise
        wait = min(wait * 2, _LONGEST_WAIT)


class InlineCursor:
    """What SQLAlchemy's aiosqlite adapter uses of an aiosqlite cursor, run in place: the
    statement, its rows (all fetched at once, as the adapter does anyway), ``rowcount``,
    ``lastrowid`` and ``description``, with a ``sqlite3`` cursor that is closed at once."""

    arraysize = 1

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection
        self.description: Any = None
        self.rowcount = -1
        self.lastrowid: int | None = None
        self._rows: list[Any] = []

    async def __aenter__(self) -> InlineCursor:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    def _run(self, operation: str, parameters: Any, many: bool) -> None:
        cursor = self._connection.cursor()
        try:
            if many:
                cursor.executemany(operation, parameters)
            elif parameters is None:
                cursor.execute(operation)
            else:
                cursor.execute(operation, parameters)
            self.description = cursor.description
            self._rows = cursor.fetchall() if cursor.description else []
            self.rowcount, self.lastrowid = cursor.rowcount, cursor.lastrowid
        finally:
            cursor.close()

    async def execute(self, operation: str, parameters: Any = None) -> InlineCursor:
        await _when_free(lambda: self._run(operation, parameters, False))
        return self

    async def executemany(self, operation: str, seq_of_parameters: Iterable[Any]) -> InlineCursor:
        rows = list(seq_of_parameters)  # (retrying must not find an iterator used up)
        await _when_free(lambda: self._run(operation, rows, True))
        return self

    async def fetchone(self) -> Any:
        return self._rows.pop(0) if self._rows else None

    async def fetchmany(self, size: int | None = None) -> Sequence[Any]:
        count = self.arraysize if size is None else size
        taken, self._rows = self._rows[:count], self._rows[count:]
        return taken

    async def fetchall(self) -> Sequence[Any]:
        rows, self._rows = self._rows, []
        return rows

    async def close(self) -> None:
        self._rows = []


class InlineConnection:
    """An aiosqlite connection whose statements, commits and rollbacks run in place (see the
    module's docstring); everything else (closing, stopping, its ``sqlite3`` connection, the
    isolation level) is aiosqlite's own."""

    def __init__(self, connection: Any) -> None:
        self._aiosqlite = connection
        self._sqlite: sqlite3.Connection = connection._conn

    def __getattr__(self, name: str) -> Any:
        return getattr(self._aiosqlite, name)

    def cursor(self) -> InlineCursor:
        return InlineCursor(self._sqlite)

    async def commit(self) -> None:
        await _when_free(self._sqlite.commit)

    async def rollback(self) -> None:
        self._sqlite.rollback()  # (never busy: it gives locks up)

    @property
    def in_transaction(self) -> bool:
        return self._sqlite.in_transaction


def inline(dbapi_connection: Any) -> None:
    """From a SQLAlchemy ``connect`` event of the aiosqlite dialect: make the adapted
    connection run its statements in place. Sets ``busy_timeout=0`` (waiting is
    :func:`_when_free`'s). Idempotent."""
    driver = dbapi_connection._connection
    if isinstance(driver, InlineConnection):
        return
    wrapped = InlineConnection(driver)
    wrapped._sqlite.execute("PRAGMA busy_timeout=0").close()
    dbapi_connection._connection = wrapped
