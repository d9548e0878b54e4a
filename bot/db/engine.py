"""Database URLs, the async engine and sessions.

Two backends are supported: an embedded SQLite file (the default, through
aiosqlite) and PostgreSQL (through psycopg 3's async API). Callers may pass the
URLs people usually write (``sqlite:///var/imrs.sqlite3``,
``postgres://user@host/db``); :func:`normalize_url` picks the async driver.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
import time
from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import InvalidatePoolError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.ext.asyncio import create_async_engine as _create_async_engine

from bot.db.errors import DatabaseUnavailable
from bot.db.sqlite_inline import inline

# scheme (lower-cased, without driver) -> the async SQLAlchemy dialect+driver we use
_ASYNC_DRIVERS: dict[str, str] = {
    "sqlite": "sqlite+aiosqlite",
    "postgres": "postgresql+psycopg",  # Heroku-style alias
    "postgresql": "postgresql+psycopg",
}

# Applied to every new SQLite connection. WAL lets readers run alongside the
# writer; NORMAL synchronous is durable enough in WAL mode and much faster than FULL.
# A second writer waits instead of failing at once: for up to 5 s in SQLite's busy
# handler on migration connections (aiosqlite's thread), and in bot.db.sqlite_inline,
# yielding to the event loop, on the others.
_SQLITE_PRAGMAS: tuple[str, ...] = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
)
_MIGRATION_BUSY_TIMEOUT = "PRAGMA busy_timeout=5000"


def normalize_url(url: str) -> str:
    """Return ``url`` with the async driver this project uses.

    ``sqlite://...`` becomes ``sqlite+aiosqlite://...``, ``postgres://`` and
    ``postgresql://`` become ``postgresql+psycopg://``. A URL that already
    names a driver (``postgresql+asyncpg://``) is returned unchanged.
    """
    scheme, sep, rest = url.strip().partition("://")
    if not sep:
        raise ValueError("not a database URL (expected scheme://...)")
    if "+" in scheme:
        return url.strip()
    driver = _ASYNC_DRIVERS.get(scheme.lower())
    if driver is None:
        raise ValueError(f"unsupported database scheme {scheme!r}: use sqlite:// or postgresql://")
    return f"{driver}://{rest}"


def safe_url(url: str | URL) -> str:
    """The URL as text with the password masked: safe for logs and error messages."""
    try:
        parsed = make_url(url) if isinstance(url, str) else url
    except Exception:  # an unparsable URL could contain anything
        return "<unparsable database URL>"
    return parsed.render_as_string(hide_password=True)


def is_sqlite(url: str) -> bool:
    """True when ``url`` points to a SQLite database."""
    return make_url(normalize_url(url)).get_backend_name() == "sqlite"


def _sqlite_file(url: URL) -> Path | None:
    """The database file of a SQLite URL, or None for an in-memory database."""
    database = url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    if url.query.get("mode") == "memory":
        return None
    return Path(database)


def create_engine(url: str, *, for_migrations: bool = False, **kwargs: Any) -> AsyncEngine:
    """Create the async engine for ``url`` (normalized with :func:`normalize_url`).

    SQLite: the parent folder of the database file is created (failing that
    raises :class:`DatabaseUnavailable`), and every new connection gets WAL
    mode, ``foreign_keys=ON`` and ``synchronous=NORMAL``, and runs its statements on
    the event loop's thread (:mod:`bot.db.sqlite_inline`: waiting up to 5 s for another
    writer without blocking the loop).

    ``for_migrations=True`` (SQLite only; used by bot.db.migrate and env.py) changes two
    things for the migration run: foreign keys are left OFF, because Alembic's
    batch mode rebuilds tables with "copy, drop, rename" and a DROP TABLE with
    foreign keys ON would cascade deletes into child tables (env.py runs
    ``PRAGMA foreign_key_check`` afterwards instead); and real ``BEGIN``
    statements are emitted so that a migration run is atomic (the sqlite3
    driver's legacy mode would otherwise autocommit every DDL statement).

    PostgreSQL: a connection idle for more than :data:`PING_IDLE_SECONDS` is pinged when it
    is taken from the pool (:func:`ping_when_idle`), so that connections dropped by the
    server or a proxy are replaced transparently.

    Extra ``kwargs`` go to SQLAlchemy's ``create_async_engine`` (e.g. ``poolclass``).
    """
    sa_url = make_url(normalize_url(url))
    backend = sa_url.get_backend_name()
    # Statement parameters (ciphertext, ids) never appear in SQL logs or error messages.
    kwargs.setdefault("hide_parameters", True)

    if backend == "sqlite":
        path = _sqlite_file(sa_url)
        if path is not None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise DatabaseUnavailable(
                    f"Cannot create the folder {path.parent} for the SQLite database: "
                    f"{exc.strerror or exc}"
                ) from exc
        engine = _create_async_engine(sa_url, **kwargs)
        _install_sqlite_hooks(engine, for_migrations=for_migrations)
        return engine

    if backend == "postgresql":
        engine = _create_async_engine(sa_url, **kwargs)
        if not kwargs.get("pool_pre_ping"):
            ping_when_idle(engine)
        return engine

    raise ValueError(f"unsupported database backend {backend!r}: use SQLite or PostgreSQL")


#: A pooled PostgreSQL connection is pinged before use when it has been idle this long.
PING_IDLE_SECONDS = 1.0


def ping_when_idle(engine: AsyncEngine, idle_seconds: float | None = None) -> None:
    """SQLAlchemy's ``pool_pre_ping``, but only for connections idle for more than
    ``idle_seconds`` (default :data:`PING_IDLE_SECONDS`).

    ``pool_pre_ping`` pings at every checkout: on psycopg a ``SELECT 1`` round trip (and the
    autocommit switches around it) before every session's own statements, a large part of
    the round trips of an update (issue 16). A connection given back to the pool less than a
    second ago was working then; one idle for longer (dropped by a proxy's idle timeout, a
    server restarted meanwhile) is pinged as before. A failed ping, or a disconnect found by a
    statement on a connection used just before the server went away, invalidates the whole
    pool (SQLAlchemy's handling of both), so the other pooled connections are replaced too."""
    limit = PING_IDLE_SECONDS if idle_seconds is None else idle_seconds
    sync_engine = engine.sync_engine
    dialect = sync_engine.dialect

    @event.listens_for(sync_engine, "checkin")
    def _idle_from(_dbapi_connection: Any, record: Any) -> None:
        if record is not None:
            record.info["idle_since"] = time.monotonic()

    @event.listens_for(sync_engine, "checkout")
    def _ping_if_idle(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get("idle_since")
        if since is None or time.monotonic() - since <= limit:
            return  # new (just connected), or given back moments ago
        try:
            dialect.do_ping(dbapi_connection)
        except dialect.loaded_dbapi.Error as err:
            if dialect.is_disconnect(err, dbapi_connection, None):
                raise InvalidatePoolError() from err  # a new connection, and the others replaced
            raise


def _install_sqlite_hooks(engine: AsyncEngine, *, for_migrations: bool) -> None:
    sync_engine = engine.sync_engine

    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _connection_record: Any) -> None:
        if for_migrations:
            # Let SQLAlchemy (the "begin" hook below) decide when transactions start.
            dbapi_connection.isolation_level = None
        else:
            inline(dbapi_connection)  # (busy_timeout=0: it waits for locks itself)
        cursor = dbapi_connection.cursor()
        try:
            for pragma in _SQLITE_PRAGMAS + ((_MIGRATION_BUSY_TIMEOUT,) if for_migrations else ()):
                cursor.execute(pragma)
            cursor.execute(f"PRAGMA foreign_keys={'OFF' if for_migrations else 'ON'}")
        finally:
            cursor.close()

    if for_migrations:

        @event.listens_for(sync_engine, "begin")
        def _on_begin(connection: Any) -> None:
            connection.exec_driver_sql("BEGIN")
    else:
        _skip_empty_transaction_ends(sync_engine.dialect)

        @event.listens_for(sync_engine, "savepoint")
        def _on_savepoint(connection: Any, _name: str) -> None:
            # A SAVEPOINT outside a transaction starts a deferred one: if it then reads before
            # it writes, and another connection is writing, SQLite refuses the write at once
            # ("database is locked"; waiting could not help, the read's snapshot is stale) and
            # the busy timeout is never used. Take the write lock first, waiting for it; this
            # also keeps what follows the savepoint in the same transaction (releasing the
            # savepoint that began a transaction would commit it).
            if not _in_transaction(connection.connection.dbapi_connection):
                connection.exec_driver_sql("BEGIN IMMEDIATE")


def _skip_empty_transaction_ends(dialect: Any) -> None:
    """COMMIT and ROLLBACK only when SQLite has a transaction open.

    The sqlite3 driver opens a transaction at the first write (its legacy mode), so a session
    that only read (most of them: who is writing, which page they are on) has nothing to end.
    SQLAlchemy ends it anyway, and with aiosqlite each call is a round trip to the
    connection's thread: about a third of the database calls of an update, each costing a
    thread switch. ``in_transaction`` is the connection's own flag (read while no statement
    runs on it: SQLAlchemy ends a transaction only between statements)."""
    commit, rollback = dialect.do_commit, dialect.do_rollback

    def do_commit(dbapi_connection: Any) -> None:
        if _in_transaction(dbapi_connection):
            commit(dbapi_connection)

    def do_rollback(dbapi_connection: Any) -> None:
        if _in_transaction(dbapi_connection):
            rollback(dbapi_connection)

    dialect.do_commit, dialect.do_rollback = do_commit, do_rollback


def _in_transaction(dbapi_connection: Any) -> bool:
    """Whether SQLite has a transaction open on this connection (the sqlite3 connection's own
    flag; True when it cannot be read)."""
    driver = getattr(dbapi_connection, "driver_connection", dbapi_connection)
    return bool(getattr(driver, "in_transaction", True))


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions for ``engine``; objects stay usable after commit (no implicit reloads in async)."""
    return async_sessionmaker(engine, expire_on_commit=False)


async def single_read(session: AsyncSession) -> None:
    """Call first in a session that runs a single SELECT and writes nothing (it is not
    committed): on PostgreSQL its connection is in autocommit, so the SELECT goes without the
    BEGIN before it and the ROLLBACK after it (two round trips of three, issue 16). What it
    reads is the same: under READ COMMITTED every statement sees what was committed when it
    began, in a transaction or not. SQLite begins no transaction for a SELECT anyway (and
    switching its mode would cost two hand-overs to aiosqlite's thread): nothing changes."""
    if session.get_bind().dialect.name == "postgresql":
        await session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})


@asynccontextmanager
async def connect(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """Like ``async with engine.connect()``, but failing to connect raises
    :class:`DatabaseUnavailable` (errors after connecting propagate unchanged)."""
    connection = engine.connect()
    try:
        await connection.start()
    except (SQLAlchemyError, OSError) as exc:
        raise DatabaseUnavailable(_unavailable_message(engine.url, exc)) from exc
    try:
        yield connection
    finally:
        await connection.close()


async def check_database(engine: AsyncEngine) -> None:
    """Run ``SELECT 1``; raise :class:`DatabaseUnavailable` (password-free message) on failure."""
    async with connect(engine) as connection:
        try:
            await connection.execute(text("SELECT 1"))
        except (SQLAlchemyError, OSError) as exc:
            raise DatabaseUnavailable(_unavailable_message(engine.url, exc)) from exc


def _unavailable_message(url: URL, exc: BaseException) -> str:
    cause: BaseException = getattr(exc, "orig", None) or exc
    reason = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
    # libpq never echoes passwords, but a malformed conninfo may be quoted back: mask it anyway.
    if url.password:
        reason = reason.replace(str(url.password), "***")
    return f"Cannot reach the database at {safe_url(url)}: {reason}"
