"""Alembic environment for imrs-companion (async engines: aiosqlite / psycopg 3).

Two ways in:

* Programmatically (``bot.db.migrate``, used by ``imrs-bot migrate`` and the bot's
  startup): the caller opens an async connection, and inside
  ``AsyncConnection.run_sync`` runs the Alembic command with the sync facade of
  that connection in ``config.attributes["connection"]``. Nothing here starts an
  event loop, so this works from inside a running one.
* The ``alembic`` command line: the URL comes from ``-x url=...``,
  ``config.attributes["url"]``, the ``sqlalchemy.url`` option or ``$DATABASE_URL``
  (first one set wins), and we run our own event loop with ``asyncio.run``.

New migrations: ``alembic revision --autogenerate --rev-id 0002 -m "add reminders"``
(sequential ids, readable file names), then read and fix the generated script.
Never edit a migration that has been released; add a new one.
"""

from __future__ import annotations

import asyncio
import os
from logging.config import fileConfig
from typing import Any, Literal

from alembic import context
from alembic.autogenerate.api import AutogenContext
from sqlalchemy import pool
from sqlalchemy.engine import Connection

from bot.crypto.fields import Encrypted
from bot.crypto.keystore import TABLES as KEYSTORE_TABLES
from bot.db.engine import create_engine, normalize_url
from bot.db.models import Base
from bot.db.types import UTCDateTime

config = context.config

# Programmatic callers set configure_logger=False so that running a migration
# does not replace the application's logging configuration.
if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = Base.metadata


def _database_url() -> str:
    url = (
        context.get_x_argument(as_dictionary=True).get("url")
        or config.attributes.get("url")
        or config.get_main_option("sqlalchemy.url")
        or os.environ.get("DATABASE_URL")
    )
    if not url:
        raise RuntimeError(
            "No database URL: set DATABASE_URL, or run `alembic -x url=... upgrade head`"
        )
    return normalize_url(url)


def _render_item(type_: str, obj: Any, autogen_context: AutogenContext) -> str | Literal[False]:
    # Autogenerate: write UTCDateTime and Encrypted as the plain types they store, so
    # migrations never import application code.
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    if type_ == "type" and isinstance(obj, Encrypted):
        return "sa.LargeBinary()"
    return False


def _include_name(name: str | None, type_: str, parent_names: Any) -> bool:
    # The key store has its own Alembic environment (migrations/keystore); when it shares
    # a PostgreSQL database with us, autogenerate must not propose dropping its tables.
    return not (type_ == "table" and name in KEYSTORE_TABLES)


def _check_sqlite_foreign_keys(connection: Connection) -> None:
    # Migrations run on SQLite with foreign keys OFF (see create_engine(for_migrations=True)),
    # so verify afterwards that they did not leave dangling references.
    violations = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
    if violations:
        summary = ", ".join(f"{row[0]}->{row[2]}" for row in violations[:10])
        raise RuntimeError(
            f"The migration left {len(violations)} foreign key violation(s): {summary}"
        )


def do_run_migrations(connection: Connection) -> None:
    is_sqlite = connection.dialect.name == "sqlite"
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        compare_type=True,
        render_item=_render_item,
        include_name=_include_name,
        # SQLite cannot ALTER most things: batch mode rebuilds the table instead.
        render_as_batch=is_sqlite,
        # Our migration engine emits real BEGINs on SQLite, so a run is atomic there too.
        transactional_ddl=True if is_sqlite else None,
    )
    with context.begin_transaction():
        context.run_migrations()
        if is_sqlite:
            _check_sqlite_foreign_keys(connection)


async def run_async_migrations() -> None:
    engine = create_engine(_database_url(), for_migrations=True, poolclass=pool.NullPool)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(do_run_migrations)
    finally:
        await engine.dispose()


def run_migrations_online() -> None:
    connection: Connection | None = config.attributes.get("connection")
    if connection is not None:
        do_run_migrations(connection)
    else:
        asyncio.run(run_async_migrations())


def run_migrations_offline() -> None:
    """``alembic upgrade head --sql``: print the SQL instead of running it."""
    url = _database_url()
    context.configure(
        url=url,
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        render_as_batch=url.startswith("sqlite"),
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
