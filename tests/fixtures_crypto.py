"""Fixtures for the crypto tests (tests/test_crypto.py, test_keystore.py, test_rotation.py,
test_erasure.py). Import the ones a module uses: ``from tests.fixtures_crypto import *``.

Every fixture builds on ``database_url`` (tests/fixtures_db.py), so the tests run on
``[sqlite]`` and ``[postgresql]``. The key store is a database apart from the clinical one,
as in production: a SQLite file next to it, or a second fresh PostgreSQL database.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from sqlalchemy import Integer
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from bot.crypto.fields import FieldCrypto, PersonId, encrypted, row_id_column
from bot.crypto.keyring import Keyring, generate_keyring
from bot.crypto.keystore import KeyStore
from bot.db.engine import is_sqlite, session_factory
from bot.db.models import Person, Role

Sessions = async_sessionmaker[AsyncSession]

__all__ = [
    "Note",
    "Sessions",
    "crypto",
    "keyring",
    "keystore",
    "keystore_url",
    "make_person",
    "notes",
    "sessions",
]


class NotesBase(DeclarativeBase):
    pass


class Note(NotesBase):
    """A test-only model: several encrypted columns of several kinds, owned by a person."""

    __tablename__ = "crypto_test_notes"

    id: Mapped[int] = row_id_column()
    person_id: Mapped[int] = mapped_column(PersonId)
    rank: Mapped[int] = mapped_column(Integer, default=0)
    body: Mapped[str | None] = encrypted(owner="person_id")
    other: Mapped[str | None] = encrypted(owner="person_id")
    blob: Mapped[bytes | None] = encrypted(owner="person_id", kind=bytes)


def make_person(telegram_id: int, alias: str | None = None, role: Role = Role.CLIENT) -> Person:
    return Person(
        telegram_id=telegram_id, role=role, language="en", timezone="Europe/Amsterdam", alias=alias
    )


@pytest.fixture
def keyring() -> Keyring:
    return generate_keyring()


@pytest.fixture
def keystore_url(database_url: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    """A key store database apart from the clinical one, on the same backend."""
    if is_sqlite(database_url):
        yield f"sqlite:///{tmp_path}/keys/keystore.sqlite3"
        return
    server = request.getfixturevalue("postgres_server_url")
    name = f"imrs_ks_{secrets.token_hex(6)}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield make_url(server).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
async def keystore(keystore_url: str, keyring: Keyring) -> AsyncIterator[KeyStore]:
    store = await KeyStore.open(keystore_url, keyring)
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
def crypto(keystore: KeyStore) -> FieldCrypto:
    return FieldCrypto(keystore)


@pytest.fixture
def sessions(engine: AsyncEngine, crypto: FieldCrypto) -> Sessions:
    """Sessions on the migrated clinical database with field crypto, as the bot has them."""
    return crypto.attach(session_factory(engine))


@pytest.fixture
async def notes(engine: AsyncEngine) -> type[Note]:
    """The test-only ``crypto_test_notes`` table in the clinical database."""
    async with engine.begin() as connection:
        await connection.run_sync(NotesBase.metadata.create_all)
    return Note
