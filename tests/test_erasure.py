"""Erasure is crypto-shredding: once a person is erased, a copy of the clinical database
taken before cannot be decrypted for them (with the same keyring and the current key
store), while everyone else in that copy still decrypts."""

from __future__ import annotations

import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from psycopg import sql
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.crypto.erasure import erase_person
from bot.crypto.errors import DataKeyMissing
from bot.crypto.fields import FieldCrypto
from bot.crypto.keyring import Keyring
from bot.crypto.keystore import KeyStore, data_keys
from bot.db.engine import create_engine, is_sqlite, session_factory
from bot.db.models import AuditEvent, ConsentChoice, ConsentRecord, Person, Role, TherapistClientLink
from bot.db.repositories import AuditRepository
from tests.fixtures_crypto import *  # noqa: F403
from tests.fixtures_crypto import Note, Sessions, make_person

@pytest.fixture
def copies(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[object]:
    """``await copy(url, engine)``: a byte-for-byte copy of a database as it is now (a backup).
    SQLite: the file; PostgreSQL: ``CREATE DATABASE ... TEMPLATE``."""
    made: list[str] = []

    async def copy(url: str, engine: AsyncEngine) -> str:
        await engine.dispose()  # SQLite: checkpoint the WAL; PostgreSQL: TEMPLATE needs it idle
        if is_sqlite(url):
            source = Path(make_url(url).database or "")
            target = tmp_path / "backups" / f"{secrets.token_hex(4)}-{source.name}"
            target.parent.mkdir(exist_ok=True)
            shutil.copyfile(source, target)
            assert not Path(f"{source}-wal").exists() or Path(f"{source}-wal").stat().st_size == 0
            return f"sqlite:///{target}"
        server = request.getfixturevalue("postgres_server_url")
        name = f"imrs_copy_{secrets.token_hex(6)}"
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                    sql.Identifier(name), sql.Identifier(make_url(url).database or "")
                )
            )
        made.append(name)
        return make_url(server).set(database=name).render_as_string(hide_password=False)

    yield copy
    if made:
        server = request.getfixturevalue("postgres_server_url")
        with psycopg.connect(server, autocommit=True) as conn:
            for name in made:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


async def _enrol(sessions: Sessions) -> tuple[Person, Person, Person]:
    async with sessions.begin() as session:
        therapist = make_person(1, "Dr T", Role.THERAPIST)
        alice, bob = make_person(2, "Alice-pseudonym"), make_person(3, "Bob-pseudonym")
        session.add_all([therapist, alice, bob])
        await session.flush()
        session.add_all(
            [
                Note(person_id=alice.id, body="Alice wrote this", blob=b"alice-bytes"),
                Note(person_id=bob.id, body="Bob wrote this", blob=b"bob-bytes"),
                TherapistClientLink(therapist_id=therapist.id, client_id=alice.id),
                ConsentRecord(person_id=alice.id, consent_version="v1", choice=ConsentChoice.GRANTED),
            ]
        )
        await AuditRepository(session).record(1, Role.THERAPIST, "client.linked", alice.id)
    return therapist, alice, bob


async def test_erasure_makes_an_earlier_copy_unreadable_for_that_person_only(
    migrated_url: str, engine: AsyncEngine, sessions: Sessions, crypto: FieldCrypto,
    keystore: KeyStore, keystore_url: str, keyring: Keyring, notes: type[Note], copies: object,
) -> None:
    therapist, alice, bob = await _enrol(sessions)
    # Warm the cache, as a running bot would have it.
    async with sessions() as session:
        assert {p.alias for p in (await session.scalars(sa.select(Person))).all()} == {
            "Dr T", "Alice-pseudonym", "Bob-pseudonym"
        }
    clinical_backup = await copies(migrated_url, engine)  # type: ignore[operator]
    keystore_backup = await copies(keystore_url, keystore.engine)  # type: ignore[operator]

    erasure = await erase_person(sessions, crypto, alice.id, actor_telegram_id=1, actor_role=Role.ADMIN)
    assert (erasure.person_id, erasure.data_keys_destroyed, erasure.person_deleted) == (alice.id, 1, True)

    # The live databases: Alice's keys and rows are gone, the links and consents cascaded,
    # the audit trail remains without her, and says what happened without clinical content.
    async with keystore.engine.connect() as connection:
        owners = set((await connection.execute(sa.select(data_keys.c.person_id))).scalars())
    assert owners == {therapist.id, bob.id}
    async with sessions() as session:
        assert await session.get(Person, alice.id) is None
        assert (await session.scalars(sa.select(TherapistClientLink))).all() == []
        assert (await session.scalars(sa.select(ConsentRecord))).all() == []
        events = {e.action: e for e in (await session.scalars(sa.select(AuditEvent))).all()}
        assert events["client.linked"].subject_person_id is None
        erased = events["person.erased"]
        assert erased.subject_person_id is None and erased.actor_role == "admin"
        assert erased.detail == {"person_id": alice.id, "data_keys_destroyed": 1, "person_deleted": True}
        bob_again = await session.get(Person, bob.id)
        assert bob_again is not None and bob_again.alias == "Bob-pseudonym"
    # The notes are a test table without a foreign key: Alice's stayed, and are unreadable.
    async with sessions() as session:
        with pytest.raises(DataKeyMissing):
            (await session.scalars(sa.select(Note).where(Note.person_id == alice.id))).all()

    # The backup of the clinical database, with the same keyring and the current key store
    # (and the same, previously warm, process cache): Alice is gone for good, Bob is not.
    backup_engine = create_engine(clinical_backup)
    try:
        backup = crypto.attach(session_factory(backup_engine))
        async with backup() as session:
            with pytest.raises(DataKeyMissing):
                await session.get(Person, alice.id)
        async with backup() as session:
            with pytest.raises(DataKeyMissing):
                (await session.scalars(sa.select(Note).where(Note.person_id == alice.id))).all()
        async with backup() as session:
            kept = await session.get(Person, bob.id)
            assert kept is not None and kept.alias == "Bob-pseudonym"
            [note] = (await session.scalars(sa.select(Note).where(Note.person_id == bob.id))).all()
            assert (note.body, note.blob) == ("Bob wrote this", b"bob-bytes")
        async with backup_engine.connect() as connection:
            raw = await connection.scalar(sa.text(f"SELECT alias FROM people WHERE id = {alice.id}"))
        assert raw is not None and b"Alice" not in bytes(raw)  # the ciphertext is there, useless

        # Control: what made the difference is the key store. With a key store backup from
        # before the erasure, Alice would still be readable from the clinical backup.
        old_keys = await KeyStore.open(keystore_backup, keyring)
        try:
            with_old_keys = FieldCrypto(old_keys).attach(session_factory(backup_engine))
            async with with_old_keys() as session:
                resurrected = await session.get(Person, alice.id)
                assert resurrected is not None and resurrected.alias == "Alice-pseudonym"
        finally:
            await old_keys.close()
    finally:
        await backup_engine.dispose()


async def test_keys_are_destroyed_first_and_an_interrupted_erasure_completes_on_retry(
    sessions: Sessions, crypto: FieldCrypto, keystore: KeyStore, notes: type[Note],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, alice, bob = await _enrol(sessions)

    async def crash(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("the database went away")

    monkeypatch.setattr(AuditRepository, "record", crash)
    with pytest.raises(RuntimeError):
        await erase_person(sessions, crypto, alice.id)
    monkeypatch.undo()

    # The keys went first (committed); the clinical transaction rolled back, and what it
    # left is already unreadable.
    assert alice.id not in await keystore.fetch([alice.id, bob.id])
    async with sessions() as session:
        with pytest.raises(DataKeyMissing):
            await session.get(Person, alice.id)

    again = await erase_person(sessions, crypto, alice.id)
    assert (again.data_keys_destroyed, again.person_deleted) == (0, True)
    async with sessions() as session:
        assert await session.get(Person, alice.id) is None
        actions = (await session.scalars(sa.select(AuditEvent.action))).all()
    assert actions.count("person.erased") == 1

    nothing = await erase_person(sessions, crypto, alice.id)  # already erased: a no-op
    assert (nothing.data_keys_destroyed, nothing.person_deleted) == (0, False)
    async with sessions() as session:
        actions = (await session.scalars(sa.select(AuditEvent.action))).all()
    assert actions.count("person.erased") == 1
