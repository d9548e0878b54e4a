"""The data layer: engine and sessions, models, repositories, migrations.

Typical use::

    from bot.db import create_engine, session_factory
    from bot.db.migrate import ensure_schema
    from bot.db.repositories import PeopleRepository

    await ensure_schema(url, auto_migrate=is_sqlite(url))
    engine = create_engine(url)
    sessions = session_factory(engine)
    async with sessions() as session, session.begin():
        person = await PeopleRepository(session).get_by_telegram_id(telegram_id)

``bot.db.migrate`` (Alembic) is imported explicitly where needed: the rest of
the bot does not need to load Alembic.
"""

from bot.db.engine import (
    check_database,
    connect,
    create_engine,
    is_sqlite,
    normalize_url,
    safe_url,
    session_factory,
)
from bot.db.errors import DatabaseUnavailable, DataLayerError, SchemaNotMigrated

__all__ = [
    "DataLayerError",
    "DatabaseUnavailable",
    "SchemaNotMigrated",
    "check_database",
    "connect",
    "create_engine",
    "is_sqlite",
    "normalize_url",
    "safe_url",
    "session_factory",
]
