"""Alembic environment of the key store (bot.crypto.keystore): its own schema, its own
version table (``alembic_version_keystore``), so it can live in a database of its own or,
when IMRS_KEYSTORE_URL is not set on PostgreSQL, next to the clinical schema.

Programmatic only: ``bot.db.migrate.upgrade_keystore`` / ``ensure_keystore_schema`` open the
connection (SQLite: one ``BEGIN IMMEDIATE`` transaction) and hand its sync facade over in
``config.attributes["connection"]``. On PostgreSQL the run takes a transaction-scoped
advisory lock first, so bots starting at the same time migrate one after the other.

New revisions: write them by hand in ``versions/`` (ids ``ks0002``, ...; plain SQLAlchemy
types only); ``tests/test_keystore.py`` checks that they agree with
``bot.crypto.keystore.metadata``. Revisions must stay additive: the key store migrates
itself at start, so an older instance may still be running against the new schema.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import context
from sqlalchemy.engine import Connection

from bot.crypto.keystore import MIGRATION_LOCK_KEY, TABLES, VERSION_TABLE, metadata

config = context.config


def _ours(name: str | None, type_: str, parent_names: Any) -> bool:
    # In a shared PostgreSQL database, never look at (or propose dropping) clinical tables.
    if type_ == "table":
        return name in TABLES
    return True


def do_run_migrations(connection: Connection) -> None:
    is_sqlite = connection.dialect.name == "sqlite"
    context.configure(
        connection=connection,
        target_metadata=metadata,
        version_table=VERSION_TABLE,
        include_name=_ours,
        compare_type=True,
        render_as_batch=is_sqlite,
        transactional_ddl=True if is_sqlite else None,
    )
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
        context.run_migrations()


connection: Connection | None = config.attributes.get("connection")
if connection is None or context.is_offline_mode():
    raise RuntimeError(
        "The key store is migrated from Python: bot.db.migrate.upgrade_keystore(url) "
        "(the bot does it at start)."
    )
do_run_migrations(connection)
