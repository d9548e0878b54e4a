"""The key store: its own schema (second Alembic environment), where it lives, wrapped data
keys, concurrency, SQLite's secure delete, following a keyring file, and ``open_services``."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection

from bot.config import Settings
from bot.crypto.errors import DecryptionError, MissingKek
from bot.crypto.fields import FieldCrypto, new_row_id
from bot.crypto.keyring import Keyring, generate_keyring, write_keyring
from bot.crypto.keystore import (
    TABLES,
    VERSION_TABLE,
    KeyStore,
    create_keystore_engine,
    data_keys,
    metadata,
    replace_keyring_file,
    resolve_keystore_url,
)
from bot.crypto.rotation import with_new_key
from bot.db.engine import create_engine
from bot.db.errors import DatabaseUnavailable, SchemaNotMigrated
from bot.db.migrate import (
    alembic_config,
    ensure_keystore_schema,
    keystore_current_revision,
    keystore_head_revision,
    upgrade,
    upgrade_keystore,
)
from bot.db.models import Person
from bot.runtime import open_services
from tests.fixtures_crypto import *  # noqa: F403
from tests.fixtures_crypto import Sessions, make_person


async def _tables(url: str) -> set[str]:
    engine = create_keystore_engine(url)
    try:
        async with engine.connect() as connection:
            return set(await connection.run_sync(lambda c: sa.inspect(c).get_table_names()))
    finally:
        await engine.dispose()


# -- schema ----------------------------------------------------------------------------------


async def test_the_keystore_migrates_itself_and_matches_its_metadata(keystore_url: str, keyring: Keyring) -> None:
    assert await keystore_current_revision(keystore_url) is None
    store = await KeyStore.open(keystore_url, keyring)
    await store.close()
    assert await keystore_current_revision(keystore_url) == keystore_head_revision() == "ks0001"
    assert await _tables(keystore_url) == TABLES == {"data_keys", VERSION_TABLE}

    def diff(connection: Connection) -> list[object]:
        context = MigrationContext.configure(
            connection,
            opts={"compare_type": True, "version_table": VERSION_TABLE,
                  "include_name": lambda name, type_, _p: type_ != "table" or name in TABLES},
        )
        return list(compare_metadata(context, metadata))

    engine = create_keystore_engine(keystore_url)
    try:
        async with engine.connect() as connection:
            assert await connection.run_sync(diff) == []
    finally:
        await engine.dispose()
    await ensure_keystore_schema(keystore_url)  # idempotent
    store = await KeyStore.open(keystore_url, keyring)  # and so is opening again
    await store.close()


async def test_a_keystore_at_head_is_opened_without_alembic(
    keystore_url: str, keyring: Keyring, monkeypatch: pytest.MonkeyPatch
) -> None:
    await upgrade_keystore(keystore_url)
    from bot.db import migrate

    def not_needed(*_args: object, **_kwargs: object) -> object:
        raise AssertionError("Alembic consulted for a key store at head")

    monkeypatch.setattr(migrate, "keystore_head_revision", not_needed)
    monkeypatch.setattr(migrate, "keystore_current_revision", not_needed)
    store = await KeyStore.open(keystore_url, keyring)
    await store.close()


async def test_a_keystore_from_newer_code_is_never_touched(keystore_url: str, keyring: Keyring) -> None:
    await upgrade_keystore(keystore_url)
    engine = create_keystore_engine(keystore_url)
    try:
        async with engine.begin() as connection:
            await connection.execute(sa.text(f"UPDATE {VERSION_TABLE} SET version_num = 'ks9999'"))
    finally:
        await engine.dispose()
    with pytest.raises(SchemaNotMigrated, match="ks9999"):
        await KeyStore.open(keystore_url, keyring)


async def test_keystore_and_clinical_schema_can_share_a_database(migrated_url: str) -> None:
    """PostgreSQL without IMRS_KEYSTORE_URL: both schemas, each with its own version table,
    and ``alembic check`` of the clinical schema does not see (or drop) the key store."""
    await upgrade(migrated_url, keystore_url=migrated_url)
    engine = create_engine(migrated_url)
    try:
        async with engine.connect() as connection:
            names = set(await connection.run_sync(lambda c: sa.inspect(c).get_table_names()))
            assert {"people", "alembic_version", "data_keys", VERSION_TABLE} <= names

            def check(sync_connection: Connection) -> None:
                config = alembic_config(migrated_url)
                config.attributes["connection"] = sync_connection
                command.check(config)  # raises if the models and the schema differ

            await connection.run_sync(check)
    finally:
        await engine.dispose()
    assert await keystore_current_revision(migrated_url) == "ks0001"


def test_where_the_keystore_is(tmp_path: Path) -> None:
    default = resolve_keystore_url("sqlite:///var/imrs.sqlite3", None)
    assert default.url == "sqlite:///var/keystore.sqlite3" and not default.shared_with_clinical
    absolute = resolve_keystore_url(f"sqlite:///{tmp_path}/db/imrs.sqlite3", "")
    assert absolute.url == f"sqlite:///{tmp_path}/db/keystore.sqlite3"
    configured = resolve_keystore_url("postgresql://u@db/imrs", "postgresql://u@keys/imrs_keys")
    assert configured.url == "postgresql://u@keys/imrs_keys" and not configured.shared_with_clinical
    shared = resolve_keystore_url("postgres://u@db/imrs", None)
    assert shared.url == "postgres://u@db/imrs" and shared.shared_with_clinical
    assert resolve_keystore_url("postgresql://u@db/imrs", "postgres://u@db/imrs").shared_with_clinical


async def test_an_unreachable_keystore_is_one_password_free_line(keyring: Keyring) -> None:
    with pytest.raises(DatabaseUnavailable) as raised:
        await KeyStore.open("postgresql://imrs:s3cret@127.0.0.1:1/keys?connect_timeout=3", keyring)
    assert "Key store" in str(raised.value) and "s3cret" not in str(raised.value)


# -- wrapped data keys -----------------------------------------------------------------------


async def test_data_keys_are_wrapped_under_the_active_kek_and_bound_to_their_row(
    keystore: KeyStore, keyring: Keyring
) -> None:
    person, other = new_row_id(), new_row_id()
    version, key = await keystore.create(person)
    await keystore.create(other)
    assert version == 1 and len(key) == 32
    async with keystore.engine.connect() as connection:
        row = (await connection.execute(sa.select(data_keys).where(data_keys.c.person_id == person))).one()
    assert row.kek_id == keyring.active and len(row.wrapped) == 60 and key not in bytes(row.wrapped)
    assert row.created_at.tzinfo is not None and row.rewrapped_at is None
    assert await keystore.fetch([person, new_row_id()]) == {person: {1: key}}

    async def tamper(**values: object) -> None:
        async with keystore.engine.begin() as connection:
            await connection.execute(data_keys.update().where(data_keys.c.person_id == person).values(**values))

    # A wrapped key moved to another person does not unwrap.
    async with keystore.engine.begin() as connection:
        await connection.execute(data_keys.delete().where(data_keys.c.person_id == other))
    await tamper(person_id=other)
    with pytest.raises(DecryptionError):
        await keystore.fetch([other])
    async with keystore.engine.begin() as connection:
        await connection.execute(
            data_keys.update().where(data_keys.c.person_id == other).values(person_id=person)
        )
    assert await keystore.fetch([person]) == {person: {1: key}}
    await tamper(key_version=2)
    with pytest.raises(DecryptionError):
        await keystore.fetch([person])
    await tamper(key_version=1, kek_id="k-unknown")
    with pytest.raises(MissingKek, match="k-unknown"):
        await keystore.fetch([person])


async def test_concurrent_creation_yields_one_key(keystore_url: str, keyring: Keyring) -> None:
    first = await KeyStore.open(keystore_url, keyring)
    second = await KeyStore.open(keystore_url, keyring)
    try:
        person = new_row_id()
        results = await asyncio.gather(*(s.create(person) for s in (first, second) * 3))
        assert len(set(results)) == 1
        assert await first.counts_by_kek() == {keyring.active: 1}
    finally:
        await first.close()
        await second.close()


async def test_a_person_can_get_a_new_data_key_and_old_values_still_read(
    sessions: Sessions, crypto: FieldCrypto, keystore: KeyStore
) -> None:
    async with sessions.begin() as session:
        person = make_person(1, "first")
        session.add(person)
    version, _ = await keystore.create(person.id, new_version=True)
    assert version == 2
    crypto.clear_cache()
    async with sessions.begin() as session:
        stored = await session.get(Person, person.id)
        assert stored is not None and stored.alias == "first"  # under version 1
        stored.alias = "second"  # written under version 2
    async with keystore.engine.connect() as connection:
        assert await connection.scalar(sa.select(sa.func.count()).select_from(data_keys)) == 2
    engine = sessions.kw["bind"]
    async with engine.connect() as connection:
        raw = bytes(await connection.scalar(sa.text("SELECT alias FROM people")))
    assert raw[1:5] == (2).to_bytes(4, "big")
    crypto.clear_cache()
    async with sessions() as session:
        again = await session.get(Person, person.id)
        assert again is not None and again.alias == "second"


# -- SQLite: nothing of a destroyed key left in the file --------------------------------------


async def test_sqlite_keystore_overwrites_destroyed_keys(tmp_path: Path, keyring: Keyring) -> None:
    url = f"sqlite:///{tmp_path}/keystore.sqlite3"
    store = await KeyStore.open(url, keyring)
    try:
        async with store.engine.connect() as connection:
            pragmas = {
                name: (await connection.exec_driver_sql(f"PRAGMA {name}")).scalar()
                for name in ("secure_delete", "journal_mode", "synchronous")
            }
        assert pragmas == {"secure_delete": 1, "journal_mode": "delete", "synchronous": 2}
        people = [new_row_id() for _ in range(20)]
        for person in people:
            await store.create(person)
        async with store.engine.connect() as connection:
            wrapped = bytes(
                await connection.scalar(sa.select(data_keys.c.wrapped).where(data_keys.c.person_id == people[7]))
            )
        file = tmp_path / "keystore.sqlite3"
        assert wrapped in file.read_bytes()
        assert await store.destroy(people[7]) == 1
        assert await store.destroy(people[7]) == 0
    finally:
        await store.close()
    assert wrapped not in file.read_bytes()
    assert not list(tmp_path.glob("keystore.sqlite3-*"))  # no journal or WAL left behind


# -- a running process follows the keyring file --------------------------------------------


async def test_a_running_keystore_follows_a_changed_keyring_file(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/keystore.sqlite3"
    path = tmp_path / "keys.json"
    old = generate_keyring()
    write_keyring(path, old)
    bot = await KeyStore.open(url, old, keyring_file=path)
    stale = await KeyStore.open(url, old, keyring_file=path)
    fixed = await KeyStore.open(url, old)  # IMRS_KEYS: no file to follow
    try:
        before = new_row_id()
        await bot.create(before)
        new, new_id = with_new_key(old)
        replace_keyring_file(path, new)  # what `imrs-bot keys add` does
        after = new_row_id()
        await bot.create(after)  # wrapped under the new active key, without a restart
        assert await bot.counts_by_kek() == {old.active: 1, new_id: 1}
        assert after in await stale.fetch([after])  # an unknown KEK id: re-read the file
        with pytest.raises(MissingKek):
            await fixed.fetch([after])
    finally:
        for store in (bot, stale, fixed):
            await store.close()


# -- open_services ---------------------------------------------------------------------------


async def test_open_services_opens_the_keystore(
    migrated_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture, keyring: Keyring
) -> None:
    """SQLite: a key store file next to the database. PostgreSQL without IMRS_KEYSTORE_URL:
    the same database, and exactly one warning that erasure misses its backups."""
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, database_url=migrated_url, imrs_keys=keyring.to_json()
    )
    caplog.set_level(logging.WARNING)
    services = await open_services(settings, embedded_keys_file=tmp_path / "unused.json")
    try:
        async with services.sessions.begin() as session:
            person = make_person(1, "Sparrow")
            session.add(person)
        services.crypto.clear_cache()
        async with services.sessions() as session:
            stored = await session.get(Person, person.id)
            assert stored is not None and stored.alias == "Sparrow"
        assert await services.crypto.keystore.counts_by_kek() == {keyring.active: 1}
    finally:
        await services.close()
    warnings = [r for r in caplog.records if "IMRS_KEYSTORE_URL" in r.getMessage()]
    if migrated_url.startswith("sqlite"):
        assert warnings == []
        assert (Path(migrated_url.removeprefix("sqlite:///")).parent / "keystore.sqlite3").is_file()
    else:
        assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING
        assert "backups" in warnings[0].getMessage()
