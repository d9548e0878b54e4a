"""Running the Alembic migrations from Python (``imrs-bot migrate`` and the bot's startup).

Alembic's command API is synchronous, our engines are async. Each command runs
inside ``AsyncConnection.run_sync``: Alembic gets the sync facade of an async
connection (through ``config.attributes["connection"]``, see migrations/env.py)
and no new event loop is started, so these coroutines can be awaited from a
running loop (the bot's startup, pytest-asyncio tests).

``alembic.ini`` and ``migrations/`` are found relative to the repository root,
the parent folder of the ``bot`` package.

Alembic (with Mako and Pygments, about a fifth of the bot's start-up) is imported only
when a command runs or a schema is not plainly at its head: at every start
:func:`ensure_schema` and :func:`ensure_keystore_schema` first compare the version row
with the head declared in the revision files (:func:`declared_head`, read as text), and
only a mismatch, or anything irregular in either, takes the full Alembic path.

The key store (bot.crypto.keystore) is a second Alembic environment,
``migrations/keystore``, with its own version table: ``upgrade_keystore``,
``keystore_current_revision`` and ``ensure_keystore_schema`` below.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, column, select, table
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import NullPool

from bot.db.engine import connect, create_engine
from bot.db.errors import SchemaNotMigrated

if TYPE_CHECKING:
    from alembic.config import Config

log = logging.getLogger(__name__)

REPO_ROOT: Path = Path(__file__).resolve().parents[2]
ALEMBIC_INI: Path = REPO_ROOT / "alembic.ini"
MIGRATIONS_DIR: Path = REPO_ROOT / "migrations"
KEYSTORE_MIGRATIONS_DIR: Path = REPO_ROOT / "migrations" / "keystore"

# A revision file's own lines ``revision: str = "0016"`` and ``down_revision: ... = "0015"``
# (or ``= None``), as script.py.mako writes them.
_REVISION_LINE = re.compile(r"""^revision(?:\s*:[^=\n]*)?\s*=\s*["']([\w-]+)["']\s*$""", re.M)
_DOWN_REVISION_LINE = re.compile(
    r"""^down_revision(?:\s*:[^=\n]*)?\s*=\s*(?:["']([\w-]+)["']|None)\s*$""", re.M
)


def declared_head(migrations: Path) -> str | None:
    """The head revision of the revision files under ``migrations`` (its ``versions``
    folder, or the folder itself), read as text without importing them or Alembic; None
    unless they plainly form one line (each file one revision and one down revision, one
    head), in which case Alembic must say."""
    folder = migrations / "versions" if (migrations / "versions").is_dir() else migrations
    revisions: set[str] = set()
    parents: set[str] = set()
    try:
        files = sorted(folder.glob("*.py"))
        for path in files:
            if path.name.startswith("__"):
                continue
            source = path.read_text(encoding="utf-8")
            revision = _REVISION_LINE.findall(source)
            down = _DOWN_REVISION_LINE.findall(source)
            if len(revision) != 1 or len(down) != 1 or revision[0] in revisions:
                return None
            revisions.add(revision[0])
            if down[0]:
                parents.add(down[0])
    except OSError:
        return None
    heads = revisions - parents
    if len(heads) != 1 or not parents <= revisions:
        return None
    return heads.pop()


async def _plainly_at_head(
    url: str, migrations: Path, version_table: str, engine_factory: Callable[..., AsyncEngine]
) -> bool:
    """True when the database's one version row is the declared head: one cheap query,
    and no Alembic. False whenever anything is different or uncertain (no version table,
    several rows, another revision, revision files Alembic must read): the caller then
    takes the full path, which decides and reports as before."""
    head = declared_head(migrations)
    if head is None:
        return False
    engine = engine_factory(url, poolclass=NullPool)
    try:
        async with connect(engine) as connection:
            try:
                versions: list[object] = list(
                    (await connection.execute(select(column("version_num")).select_from(table(version_table)))).scalars()
                )
            except SQLAlchemyError:  # no version table yet: the full path says what to do
                return False
    finally:
        await engine.dispose()
    return versions == [head]


def alembic_config(url: str | None = None) -> Config:
    """An Alembic ``Config`` for this repository; ``url`` is handed to env.py, not to the ini."""
    from alembic.config import Config

    config = Config(str(ALEMBIC_INI)) if ALEMBIC_INI.is_file() else Config()
    # ConfigParser interpolation: a literal "%" must be doubled.
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    config.attributes["configure_logger"] = False  # keep the application's logging
    if url is not None:
        config.attributes["url"] = url
    return config


def head_revision() -> str:
    """The revision the code needs (the single head of migrations/versions)."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise RuntimeError(f"no migrations found in {MIGRATIONS_DIR}")
    return head


async def _run_command(
    url: str,
    run: Callable[[Config], None],
    *,
    config_factory: Callable[[str | None], Config] = alembic_config,
    engine_factory: Callable[..., AsyncEngine] = create_engine,
) -> None:
    """Run an Alembic command on ``url`` in a single transaction."""
    engine = engine_factory(url, for_migrations=True, poolclass=NullPool)
    try:
        async with connect(engine) as connection, connection.begin():

            def _in_sync_context(sync_connection: Connection) -> None:
                config = config_factory(url)
                config.attributes["connection"] = sync_connection
                run(config)

            await connection.run_sync(_in_sync_context)
    finally:
        await engine.dispose()


async def upgrade(url: str, revision: str = "head", *, keystore_url: str | None = None) -> None:
    """Migrate the database at ``url`` up to ``revision`` (default: the head); with
    ``keystore_url``, bring the key store to its head as well."""
    from alembic import command

    await _run_command(url, lambda config: command.upgrade(config, revision))
    if keystore_url is not None:
        await upgrade_keystore(keystore_url)


async def downgrade(url: str, revision: str = "base") -> None:
    """Migrate the database at ``url`` down to ``revision`` (default: empty schema)."""
    from alembic import command

    await _run_command(url, lambda config: command.downgrade(config, revision))


async def current_revision(url: str) -> str | None:
    """The revision the database is at, or None when it was never migrated."""
    from alembic.runtime.migration import MigrationContext

    engine = create_engine(url, poolclass=NullPool)
    try:
        async with connect(engine) as connection:
            return await connection.run_sync(
                lambda sync_connection: MigrationContext.configure(
                    sync_connection
                ).get_current_revision()
            )
    finally:
        await engine.dispose()


def _is_known_revision(revision: str) -> bool:
    from alembic.script import ScriptDirectory
    from alembic.script.revision import RevisionError
    from alembic.util.exc import CommandError

    try:
        return ScriptDirectory.from_config(alembic_config()).get_revision(revision) is not None
    except (RevisionError, CommandError):
        return False


async def ensure_schema(url: str, *, auto_migrate: bool) -> None:
    """Make sure the database at ``url`` is at the head revision.

    If it is behind: migrate when ``auto_migrate`` (the embedded SQLite default,
    where nobody else could run the migration), otherwise raise
    :class:`SchemaNotMigrated` (a shared PostgreSQL database is migrated
    deliberately, with ``imrs-bot migrate``). A database at a revision this code
    does not know (made by newer code) is never touched.

    Raises :class:`DatabaseUnavailable` when the database cannot be reached.
    """
    if await _plainly_at_head(url, MIGRATIONS_DIR, "alembic_version", create_engine):
        return
    head = head_revision()
    current = await current_revision(url)
    if current == head:
        return
    if current is not None and not _is_known_revision(current):
        raise SchemaNotMigrated(
            f"The database is at revision {current}, which this version of the code does not "
            f"know (it needs {head}): was it migrated by a newer version?",
            current=current,
            head=head,
        )
    if auto_migrate:
        log.info("Migrating the database from revision %s to %s", current or "(empty)", head)
        await upgrade(url)
        return
    raise SchemaNotMigrated(
        f"The database is not migrated (at revision {current or 'none'}, the code needs "
        f"{head}): run `imrs-bot migrate` first.",
        current=current,
        head=head,
    )


# -- the key store ---------------------------------------------------------------------


def keystore_alembic_config(url: str | None = None) -> Config:
    """An Alembic ``Config`` for the key store environment (``migrations/keystore``)."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(KEYSTORE_MIGRATIONS_DIR).replace("%", "%%"))
    config.attributes["configure_logger"] = False
    if url is not None:
        config.attributes["url"] = url
    return config


def keystore_head_revision() -> str:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(keystore_alembic_config()).get_current_head()
    if head is None:
        raise RuntimeError(f"no migrations found in {KEYSTORE_MIGRATIONS_DIR}")
    return head


def _keystore_engine(url: str, **kwargs: Any) -> AsyncEngine:
    from bot.crypto.keystore import create_keystore_engine

    return create_keystore_engine(url, **kwargs)


async def upgrade_keystore(url: str, revision: str = "head") -> None:
    """Migrate the key store at ``url`` up to ``revision`` (one transaction)."""
    from alembic import command

    await _run_command(
        url,
        lambda config: command.upgrade(config, revision),
        config_factory=keystore_alembic_config,
        engine_factory=_keystore_engine,
    )


async def downgrade_keystore(url: str, revision: str = "base") -> None:
    from alembic import command

    await _run_command(
        url,
        lambda config: command.downgrade(config, revision),
        config_factory=keystore_alembic_config,
        engine_factory=_keystore_engine,
    )


async def keystore_current_revision(url: str) -> str | None:
    from alembic.runtime.migration import MigrationContext

    from bot.crypto.keystore import VERSION_TABLE

    engine = _keystore_engine(url, poolclass=NullPool)
    try:
        async with connect(engine) as connection:
            return await connection.run_sync(
                lambda sync_connection: MigrationContext.configure(
                    sync_connection, opts={"version_table": VERSION_TABLE}
                ).get_current_revision()
            )
    finally:
        await engine.dispose()


async def ensure_keystore_schema(url: str) -> None:
    """Bring the key store at ``url`` to its head revision, on every backend.

    Unlike the clinical schema (migrated deliberately with ``imrs-bot migrate`` on a
    server database), the key store migrates itself at start: the bot is its only user,
    its schema is one table that only ever changes additively, the run is serialized
    (SQLite ``BEGIN IMMEDIATE``, a PostgreSQL advisory lock), and ``imrs-bot migrate``
    only knows ``DATABASE_URL``. A key store at a revision this code does not know is
    never touched (:class:`SchemaNotMigrated`).
    """
    from bot.crypto.keystore import VERSION_TABLE

    if await _plainly_at_head(url, KEYSTORE_MIGRATIONS_DIR, VERSION_TABLE, _keystore_engine):
        return
    from alembic.script import ScriptDirectory
    from alembic.script.revision import RevisionError
    from alembic.util.exc import CommandError

    head = keystore_head_revision()
    current = await keystore_current_revision(url)
    if current == head:
        return
    if current is not None:
        try:
            known = (
                ScriptDirectory.from_config(keystore_alembic_config()).get_revision(current)
                is not None
            )
        except (RevisionError, CommandError):
            known = False
        if not known:
            raise SchemaNotMigrated(
                f"The key store is at revision {current}, which this version of the code does "
                f"not know (it needs {head}): was it migrated by a newer version?",
                current=current,
                head=head,
            )
    log.info("Migrating the key store from revision %s to %s", current or "(empty)", head)
    await upgrade_keystore(url)
