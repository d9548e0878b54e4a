"""The key store: every person's data keys, wrapped under a key-encryption key (KEK).

Why a database of its own
    Crypto-shredding only works if destroying a data key destroys every copy of it. If
    the wrapped data keys lived in the clinical database, a backup of that database
    taken before an erasure would still hold them, and the (unchanged) keyring would
    unwrap them: the "erased" client would be readable from the backup. So the data
    keys live in a separate database, ``IMRS_KEYSTORE_URL``:

    * embedded SQLite default: ``keystore.sqlite3`` next to the clinical database file
      (``var/imrs.sqlite3`` -> ``var/keystore.sqlite3``);
    * PostgreSQL: a second database (recommended, and backed up on a short retention);
      when unset, the clinical database itself is used and ``open_services`` logs one
      warning that erasure then does not reach that database's backups.

    Person ids are random 63-bit integers (bot.crypto.fields.new_row_id), so even two
    clinical databases sharing a key store would not share data keys.

Table ``data_keys``
    ``(person_id, key_version)`` primary key (``person_id`` is NOT a foreign key: other
    database), ``kek_id``, ``wrapped`` (see bot.crypto.formats), ``created_at``,
    ``rewrapped_at``. A person normally has one data key (version 1); the versions leave
    room for giving someone a fresh data key later. Reading uses the KEK the row names,
    so rows under the old and the new KEK coexist during a rotation.

SQLite specifics
    Every connection sets ``secure_delete=ON`` (a deleted key's bytes are overwritten in
    the database file, not left in free pages), ``journal_mode=DELETE`` (no WAL file
    that would keep old page images around until a checkpoint), ``synchronous=FULL``
    (losing a key loses data) and ``busy_timeout``. What the file system does with freed
    blocks, and copies in backups of the key store itself, are outside SQLite's reach:
    keep key store backups on a short retention.

Schema
    A second Alembic environment, ``migrations/keystore`` (version table
    ``alembic_version_keystore``, so it can share a PostgreSQL database with the clinical
    schema), run by ``bot.db.migrate.upgrade_keystore`` / ``ensure_keystore_schema``.
    :meth:`KeyStore.open` brings it to head on every start, on every backend (under a
    PostgreSQL advisory lock), see ``ensure_keystore_schema`` for why.

Keyring changes while running
    ``imrs-bot keys add`` / ``rotate`` rewrite the keyring file. A key store opened with
    ``keyring_file`` re-reads that file when it changes (checked with one ``stat`` before
    wrapping a new data key) and when a row names a KEK it does not know, so a running
    bot follows a rotation without a restart. A keyring from ``IMRS_KEYS`` cannot change
    under a running process: restart it with the new keyring before re-wrapping.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.ext.asyncio import create_async_engine as _create_async_engine

from bot.crypto.errors import MissingKek
from bot.crypto.formats import new_data_key, unwrap_data_key, wrap_data_key
from bot.crypto.keyring import Keyring, read_keyring
from bot.db.engine import check_database, is_sqlite, normalize_url, ping_when_idle, safe_url
from bot.db.errors import DatabaseUnavailable
from bot.db.types import UTCDateTime, utcnow
from bot.errors import KeyringError

_log = logging.getLogger(__name__)

KEYSTORE_FILE_NAME = "keystore.sqlite3"
VERSION_TABLE = "alembic_version_keystore"
TABLES = frozenset({"data_keys", VERSION_TABLE})
#: pg_advisory_xact_lock key serializing key-store migrations of concurrent starts.
MIGRATION_LOCK_KEY = 0x696D72736B73  # "imrsks"

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "pk": "pk_%(table_name)s",
    }
)

data_keys = sa.Table(
    "data_keys",
    metadata,
    sa.Column("person_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("key_version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("kek_id", sa.String(64), nullable=False, index=True),
    sa.Column("wrapped", sa.LargeBinary, nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("rewrapped_at", UTCDateTime(), nullable=True),
    sa.CheckConstraint("key_version >= 1", name="key_version_positive"),
)

_SQLITE_PRAGMAS = (
    "PRAGMA busy_timeout=5000",
    "PRAGMA secure_delete=ON",
    "PRAGMA journal_mode=DELETE",
    "PRAGMA synchronous=FULL",
)


# -- where the key store is ----------------------------------------------------------------


@dataclass(frozen=True)
class KeystoreLocation:
    url: str
    #: True when the data keys share the clinical database (PostgreSQL without
    #: IMRS_KEYSTORE_URL): erasure then does not reach that database's backups.
    shared_with_clinical: bool


def resolve_keystore_url(database_url: str, configured: str | None) -> KeystoreLocation:
    """The key store for ``database_url``: ``configured`` (IMRS_KEYSTORE_URL) if set, else
    ``keystore.sqlite3`` next to a SQLite clinical database, else the clinical database."""
    if configured and configured.strip():
        url = configured.strip()
        same = normalize_url(url) == normalize_url(database_url)
        return KeystoreLocation(url, shared_with_clinical=same)
    if is_sqlite(database_url):
        parsed = make_url(database_url)
        database = parsed.database
        if not database or database == ":memory:" or database.startswith("file:"):
            return KeystoreLocation(database_url, shared_with_clinical=False)  # in memory
        path = Path(database).parent / KEYSTORE_FILE_NAME
        url = parsed.set(database=str(path)).render_as_string(hide_password=False)
        return KeystoreLocation(url, shared_with_clinical=False)
    return KeystoreLocation(database_url, shared_with_clinical=True)


SHARED_KEYSTORE_WARNING = (
    "IMRS_KEYSTORE_URL is not set, so the data keys are kept in the clinical database: "
    "erasing a client then does not reach backups of that database. Set IMRS_KEYSTORE_URL "
    "to a second database (see README, 'Configuration')."
)


# -- the engine ----------------------------------------------------------------------------


def create_keystore_engine(url: str, *, for_migrations: bool = False, **kwargs: Any) -> AsyncEngine:
    """An async engine for the key store. SQLite: the pragmas above on every connection;
    ``for_migrations`` makes a migration run one ``BEGIN IMMEDIATE`` transaction (so two
    processes migrating at once serialize instead of failing half-way)."""
    sa_url = make_url(normalize_url(url))
    # Wrapped keys must not appear in SQL logs (echo) or in exception messages.
    kwargs.setdefault("hide_parameters", True)
    if sa_url.get_backend_name() == "postgresql":
        engine = _create_async_engine(sa_url, **kwargs)
        if not kwargs.get("pool_pre_ping"):
            ping_when_idle(engine)  # pool_pre_ping only for connections idle a while
        return engine
    if sa_url.get_backend_name() != "sqlite":
        raise ValueError("the key store must be a SQLite or PostgreSQL database")
    database = sa_url.database
    if database and database != ":memory:" and not database.startswith("file:"):
        try:
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DatabaseUnavailable(
                f"Cannot create the folder for the key store {safe_url(sa_url)}: "
                f"{exc.strerror or exc}"
            ) from exc
    engine = _create_async_engine(sa_url, **kwargs)

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        if for_migrations:
            dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            for pragma in _SQLITE_PRAGMAS:
                cursor.execute(pragma)
        finally:
            cursor.close()

    if for_migrations:

        @event.listens_for(engine.sync_engine, "begin")
        def _on_begin(connection: Any) -> None:
            connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


# -- the key store -------------------------------------------------------------------------


@dataclass(frozen=True)
class WrappedKey:
    person_id: int
    key_version: int
    kek_id: str
    wrapped: bytes


class KeyStore:
    """Data keys by person: create, fetch (unwrapped), destroy. No caching here (see
    bot.crypto.fields.FieldCrypto); every method is one short transaction."""

    def __init__(
        self,
        engine: AsyncEngine,
        keyring: Keyring,
        *,
        keyring_file: Path | None = None,
        url: str | None = None,
    ) -> None:
        self.engine = engine
        self.url = url or engine.url.render_as_string(hide_password=False)
        self._keyring = keyring
        self._keyring_file = keyring_file
        self._keyring_stamp = self._stamp()

    @classmethod
    async def open(
        cls,
        url: str,
        keyring: Keyring,
        *,
        keyring_file: Path | None = None,
        migrate: bool = True,
    ) -> KeyStore:
        """Connect (raising :class:`DatabaseUnavailable` with a password-free message) and,
        with ``migrate``, bring the key store schema to head."""
        from bot.db.migrate import ensure_keystore_schema

        engine = create_keystore_engine(url)
        try:
            try:
                await check_database(engine)
            except DatabaseUnavailable as exc:
                raise DatabaseUnavailable(f"Key store: {exc}") from exc
            if migrate:
                await ensure_keystore_schema(url)
        except BaseException:
            await engine.dispose()
            raise
        return cls(engine, keyring, keyring_file=keyring_file, url=url)

    async def close(self) -> None:
        await self.engine.dispose()

    # -- the keyring ------------------------------------------------------------------------

    @property
    def keyring(self) -> Keyring:
        return self._keyring

    def _stamp(self) -> tuple[int, int, int] | None:
        if self._keyring_file is None:
            return None
        try:
            st = self._keyring_file.stat()
        except OSError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def refresh_keyring(self, *, force: bool = False) -> Keyring:
        """Re-read the keyring file if it changed (or ``force``); keep the current keyring
        if the file cannot be read (a warning is logged, without the keys)."""
        if self._keyring_file is None:
            return self._keyring
        stamp = self._stamp()
        if stamp is None or (stamp == self._keyring_stamp and not force):
            return self._keyring
        try:
            keyring = read_keyring(self._keyring_file)
        except KeyringError as exc:
            _log.warning("Could not re-read the keyring, keeping the loaded one: %s", exc)
            return self._keyring
        if keyring.active != self._keyring.active:
            _log.info("The keyring changed: new data keys are now wrapped under %s", keyring.active)
        self._keyring = keyring
        self._keyring_stamp = stamp
        return keyring

    def replace_keyring(self, keyring: Keyring) -> None:
        """Use ``keyring`` from now on (``imrs-bot keys`` after rewriting the file)."""
        self._keyring = keyring
        self._keyring_stamp = self._stamp()

    def _kek(self, kek_id: str) -> bytes:
        key = self._keyring.keys.get(kek_id)
        if key is None:
            key = self.refresh_keyring(force=True).keys.get(kek_id)
        if key is None:
            raise MissingKek(
                f"A data key is wrapped under key-encryption key {kek_id!r}, which is not in the "
                "keyring: put that key back into the keyring (from its backup)."
            )
        return key

    def unwrap(self, row: WrappedKey) -> bytes:
        return unwrap_data_key(
            self._kek(row.kek_id), row.kek_id, row.person_id, row.key_version, row.wrapped
        )

    # -- reading ----------------------------------------------------------------------------

    async def fetch_wrapped(self, person_ids: Iterable[int]) -> list[WrappedKey]:
        ids = sorted(set(person_ids))
        if not ids:
            return []
        rows: list[WrappedKey] = []
        async with self.engine.connect() as connection:
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                result = await connection.execute(
                    sa.select(
                        data_keys.c.person_id,
                        data_keys.c.key_version,
                        data_keys.c.kek_id,
                        data_keys.c.wrapped,
                    ).where(data_keys.c.person_id.in_(chunk))
                )
                rows.extend(WrappedKey(r[0], r[1], r[2], bytes(r[3])) for r in result)
        return rows

    async def fetch(self, person_ids: Iterable[int]) -> dict[int, dict[int, bytes]]:
        """All data keys of ``person_ids``, unwrapped: ``{person: {version: key}}``.
        People without data keys are absent."""
        found: dict[int, dict[int, bytes]] = {}
        for row in await self.fetch_wrapped(person_ids):
            found.setdefault(row.person_id, {})[row.key_version] = self.unwrap(row)
        return found

    async def current_or_create(self, person_ids: Iterable[int]) -> dict[int, tuple[int, bytes]]:
        """The newest data key of each person, creating version 1 for those without one."""
        ids = set(person_ids)
        keys = await self.fetch(ids)
        current = {pid: max(versions.items()) for pid, versions in keys.items()}
        for person_id in sorted(ids - current.keys()):
            current[person_id] = await self.create(person_id)
        return current

    # -- writing ----------------------------------------------------------------------------

    async def create(self, person_id: int, *, new_version: bool = False) -> tuple[int, bytes]:
        """Create a data key for ``person_id`` (version 1, or the next version with
        ``new_version``) and commit it. If another process created one concurrently, that
        one is returned instead (the primary key decides)."""
        for _attempt in range(5):
            async with self.engine.connect() as connection:
                latest = await connection.scalar(
                    sa.select(sa.func.max(data_keys.c.key_version)).where(
                        data_keys.c.person_id == person_id
                    )
                )
            if latest is not None and not new_version:
                keys = await self.fetch([person_id])
                if person_id in keys:
                    return max(keys[person_id].items())
                continue  # destroyed meanwhile: try again
            version = (latest or 0) + 1
            keyring = self.refresh_keyring()
            data_key = new_data_key()
            wrapped = wrap_data_key(keyring.active_key, keyring.active, person_id, version, data_key)
            try:
                async with self.engine.begin() as connection:
                    await connection.execute(
                        data_keys.insert().values(
                            person_id=person_id,
                            key_version=version,
                            kek_id=keyring.active,
                            wrapped=wrapped,
                            created_at=utcnow(),
                        )
                    )
            except IntegrityError:
                new_version = False  # someone else created this version: use theirs
                continue
            return version, data_key
        raise RuntimeError(f"could not create a data key for person {person_id}")

    async def destroy(self, person_id: int) -> int:
        """Delete every data key of ``person_id`` and commit: crypto-shredding. Returns how
        many keys were destroyed."""
        async with self.engine.begin() as connection:
            result = await connection.execute(
                data_keys.delete().where(data_keys.c.person_id == person_id)
            )
        return int(result.rowcount or 0)

    async def owners_below(self, bound: int) -> list[int]:
        """The owners with an id below ``bound`` that have data keys (bot.inbox keeps its
        hourly keys under negative ids, which are never a person's)."""
        async with self.engine.connect() as connection:
            result = await connection.execute(
                sa.select(data_keys.c.person_id).where(data_keys.c.person_id < bound).distinct()
            )
            return sorted(int(r[0]) for r in result)

    # -- statistics (for rotation and retiring) ---------------------------------------------

    async def counts_by_kek(self) -> dict[str, int]:
        async with self.engine.connect() as connection:
            result = await connection.execute(
                sa.select(data_keys.c.kek_id, sa.func.count()).group_by(data_keys.c.kek_id)
            )
            return {kek_id: int(n) for kek_id, n in result}

    async def count_not_under(self, kek_id: str) -> int:
        async with self.engine.connect() as connection:
            n = await connection.scalar(
                sa.select(sa.func.count()).select_from(data_keys).where(data_keys.c.kek_id != kek_id)
            )
        return int(n or 0)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def replace_keyring_file(path: Path, keyring: Keyring) -> None:
    """Atomically replace the keyring file (mode 0600): write a temporary file next to it,
    fsync, rename over the old one. A crash leaves either the old or the new keyring."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(keyring.to_json() + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
