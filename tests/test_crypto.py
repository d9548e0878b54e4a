"""Encrypted fields: the byte format, the binding to table/column/row/owner, and the ORM
mechanism (``encrypted(owner=...)``) on real databases, ``[sqlite]`` and ``[postgresql]``."""

from __future__ import annotations

import itertools
import logging
import os

import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.exc import IntegrityError, StatementError
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.crypto import formats
from bot.crypto.errors import (
    CryptoNotConfigured,
    DataKeyMissing,
    DecryptionError,
    KeyNotPrepared,
    PlaintextRefused,
)
from bot.crypto.fields import FieldCrypto, Sealed, new_row_id
from bot.crypto.keystore import KeyStore, data_keys
from bot.db.engine import session_factory
from bot.db.models import Person
from tests.fixtures_crypto import *  # noqa: F403
from tests.fixtures_crypto import Note, Sessions, make_person

DB_EXAMPLES = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
_telegram_ids = itertools.count(10_000)

# Raw access, as someone with the database (or a backup) would have it: no ORM, no type.
raw_people = sa.table("people", sa.column("id", sa.BigInteger), sa.column("alias", sa.LargeBinary))
raw_notes = sa.table(
    "crypto_test_notes",
    sa.column("id", sa.BigInteger),
    sa.column("person_id", sa.BigInteger),
    sa.column("body", sa.LargeBinary),
    sa.column("other", sa.LargeBinary),
)

KEY = AESGCM(bytes(range(32)))
CONTEXT = {"table": "check_ins", "column": "note", "row_id": 7, "owner_id": 42}


def flip(value: bytes, bit: int) -> bytes:
    changed = bytearray(value)
    changed[bit // 8] ^= 1 << (bit % 8)
    return bytes(changed)


# -- the field format (no database) ---------------------------------------------------------


@given(
    plaintext=st.binary(max_size=4096),
    table=st.text(min_size=1, max_size=40),
    column=st.text(min_size=1, max_size=40),
    row_id=st.integers(min_value=-(2**63), max_value=2**63 - 1),
    owner_id=st.integers(min_value=-(2**63), max_value=2**63 - 1),
    version=st.integers(min_value=1, max_value=2**32 - 1),
)
def test_field_format_round_trips_any_bytes(
    plaintext: bytes, table: str, column: str, row_id: int, owner_id: int, version: int
) -> None:
    context = {"table": table, "column": column, "row_id": row_id, "owner_id": owner_id}
    sealed = formats.seal(KEY, version, plaintext, **context)
    assert len(sealed) == len(plaintext) + formats.FIELD_OVERHEAD
    assert formats.key_version_of(sealed, table=table, column=column, row_id=row_id) == version
    assert formats.open_sealed(KEY, sealed, **context) == plaintext


@given(text=st.text(max_size=1000))
def test_field_format_round_trips_unicode_text(text: str) -> None:
    sealed = formats.seal(KEY, 1, text.encode("utf-8"), **CONTEXT)
    assert formats.open_sealed(KEY, sealed, **CONTEXT).decode("utf-8") == text


def test_field_layout_is_version_key_version_nonce_ciphertext() -> None:
    sealed = formats.seal(KEY, 0x01020304, b"hello", **CONTEXT)
    assert sealed[0] == formats.FIELD_VERSION == 1
    assert sealed[1:5] == bytes([1, 2, 3, 4])
    nonce = sealed[5:17]
    assert len(sealed) == 1 + 4 + 12 + len(b"hello") + 16
    again = formats.seal(KEY, 0x01020304, b"hello", **CONTEXT)
    assert again[5:17] != nonce and again != sealed  # a fresh random nonce every time
    assert b"hello" not in sealed


def test_every_single_bit_flip_is_detected() -> None:
    sealed = formats.seal(KEY, 3, "Sparrow, who wrote this".encode(), **CONTEXT)
    for bit in range(len(sealed) * 8):
        with pytest.raises(DecryptionError):
            formats.open_sealed(KEY, flip(sealed, bit), **CONTEXT)
    for cut in (0, 1, 16, 32, len(sealed) - 1):
        with pytest.raises(DecryptionError):
            formats.open_sealed(KEY, sealed[:cut], **CONTEXT)


@given(plaintext=st.binary(max_size=200), data=st.data())
def test_a_random_bit_flip_is_detected(plaintext: bytes, data: st.DataObject) -> None:
    sealed = formats.seal(KEY, 1, plaintext, **CONTEXT)
    bit = data.draw(st.integers(min_value=0, max_value=len(sealed) * 8 - 1))
    with pytest.raises(DecryptionError):
        formats.open_sealed(KEY, flip(sealed, bit), **CONTEXT)


@pytest.mark.parametrize(
    "change",
    [
        {"table": "check_inz"},
        {"column": "notes"},
        {"row_id": 8},
        {"owner_id": 43},
        {"table": "check_in", "column": "snote"},  # same concatenation, other split
    ],
)
def test_the_context_is_bound(change: dict[str, object]) -> None:
    sealed = formats.seal(KEY, 1, b"x", **CONTEXT)
    with pytest.raises(DecryptionError):
        formats.open_sealed(KEY, sealed, **(CONTEXT | change))  # type: ignore[arg-type]
    with pytest.raises(DecryptionError):
        formats.open_sealed(AESGCM(os.urandom(32)), sealed, **CONTEXT)


def test_aad_encoding_is_unambiguous() -> None:
    assert formats.field_aad("ab", "c", 1, 2, 3) != formats.field_aad("a", "bc", 1, 2, 3)
    assert formats.field_aad("a", "b", 1, 2, 3) != formats.field_aad("a", "b", 2, 1, 3)


def test_data_key_wrapping_binds_person_version_and_kek() -> None:
    kek, data_key = os.urandom(32), os.urandom(32)
    wrapped = formats.wrap_data_key(kek, "kA", 5, 1, data_key)
    assert len(wrapped) == formats.WRAPPED_KEY_BYTES == 60
    assert data_key not in wrapped
    assert formats.unwrap_data_key(kek, "kA", 5, 1, wrapped) == data_key
    for args in [("kA", 6, 1), ("kA", 5, 2), ("kB", 5, 1)]:
        with pytest.raises(DecryptionError):
            formats.unwrap_data_key(kek, *args, wrapped)  # type: ignore[arg-type]
    with pytest.raises(DecryptionError):
        formats.unwrap_data_key(os.urandom(32), "kA", 5, 1, wrapped)
    with pytest.raises(DecryptionError):
        formats.unwrap_data_key(kek, "kA", 5, 1, flip(wrapped, 100))


def test_sealed_values_never_show_their_bytes() -> None:
    sealed = Sealed(b"\x01secret-bytes")
    assert "secret" not in repr(sealed) and "secret" not in str(sealed)
    assert repr(sealed) == "<sealed 13 bytes>"


def test_row_ids_are_random_positive_63_bit() -> None:
    ids = {new_row_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(0 < i < 2**63 for i in ids)
    assert max(ids) > 2**40  # not a counter


# -- a real model row ------------------------------------------------------------------------


@DB_EXAMPLES
@given(alias=st.text(max_size=64))
async def test_alias_round_trips_through_a_real_row(
    alias: str, sessions: Sessions, crypto: FieldCrypto, engine: AsyncEngine
) -> None:
    async with sessions.begin() as session:
        person = make_person(next(_telegram_ids), alias)
        session.add(person)
    assert person.alias == alias
    crypto.clear_cache()  # read with a cold cache: the key is unwrapped from the key store
    async with sessions() as session:
        stored = await session.get(Person, person.id)
        assert stored is not None and stored.alias == alias
    async with engine.connect() as connection:
        raw = await connection.scalar(sa.select(raw_people.c.alias).where(raw_people.c.id == person.id))
    assert raw is not None and bytes(raw)[0] == 1
    assert len(raw) == len(alias.encode()) + formats.FIELD_OVERHEAD
    if len(alias) >= 4:
        assert alias.encode() not in bytes(raw)


@DB_EXAMPLES
@given(body=st.text(max_size=500), blob=st.binary(max_size=500))
async def test_text_and_bytes_round_trip_through_a_real_row(
    body: str, blob: bytes, sessions: Sessions, notes: type[Note], crypto: FieldCrypto
) -> None:
    async with sessions.begin() as session:
        owner = make_person(next(_telegram_ids))
        session.add(owner)
        await session.flush()
        note = Note(person_id=owner.id, body=body, blob=blob)
        session.add(note)
    crypto.clear_cache()
    async with sessions() as session:
        stored = await session.get(Note, note.id)
        assert stored is not None
        assert (stored.body, stored.blob, stored.other) == (body, blob, None)
        assert isinstance(stored.blob, bytes)


async def test_services_only_ever_see_plaintext(sessions: Sessions) -> None:
    async with sessions() as session:
        person = make_person(1, "Sparrow")
        session.add(person)
        await session.flush()
        assert person.alias == "Sparrow"  # after the flush wrote ciphertext
        assert not session.dirty  # and the plaintext is the committed value, not a change
        await session.commit()
        assert person.alias == "Sparrow"
        await session.refresh(person)  # the 'refresh' event decrypts too
        assert person.alias == "Sparrow"
        person.alias = "Robin"
        await session.commit()
    async with sessions() as session:
        [stored] = (await session.scalars(sa.select(Person))).all()
        assert stored.alias == "Robin"
        # Selecting the column on its own bypasses the ORM: opaque, never plaintext.
        column = await session.scalar(sa.select(Person.alias))
        assert isinstance(column, Sealed)


async def test_the_stored_value_is_ciphertext_bound_to_its_key_version(
    sessions: Sessions, engine: AsyncEngine
) -> None:
    async with sessions.begin() as session:
        person = make_person(2, "Sparrow")
        session.add(person)
    async with engine.connect() as connection:
        raw = bytes(await connection.scalar(sa.select(raw_people.c.alias)))
    assert b"Sparrow" not in raw
    assert raw[:5] == b"\x01\x00\x00\x00\x01"  # format 1, data-key version 1


# -- tampering -------------------------------------------------------------------------------


async def _raw_write(engine: AsyncEngine, table: sa.TableClause, row_id: int, **values: object) -> None:
    async with engine.begin() as connection:
        await connection.execute(table.update().where(table.c.id == row_id).values(**values))


async def test_flipping_any_bit_of_a_stored_value_raises(
    sessions: Sessions, engine: AsyncEngine
) -> None:
    async with sessions.begin() as session:
        person = make_person(3, "Sparrow")
        session.add(person)
    async with engine.connect() as connection:
        original = bytes(await connection.scalar(sa.select(raw_people.c.alias)))
    for bit in range(len(original) * 8):
        await _raw_write(engine, raw_people, person.id, alias=flip(original, bit))
        async with sessions() as session:
            with pytest.raises(DecryptionError):
                await session.get(Person, person.id)
    await _raw_write(engine, raw_people, person.id, alias=original)
    async with sessions() as session:
        stored = await session.get(Person, person.id)
        assert stored is not None and stored.alias == "Sparrow"


async def test_ciphertext_swapped_between_rows_raises(
    sessions: Sessions, engine: AsyncEngine, notes: type[Note]
) -> None:
    async with sessions.begin() as session:
        owner = make_person(4)
        session.add(owner)
        await session.flush()
        first, second = Note(person_id=owner.id, body="first"), Note(person_id=owner.id, body="second")
        session.add_all([first, second])
        alice, bob = make_person(5, "Alice"), make_person(6, "Bob")
        session.add_all([alice, bob])
    async with engine.connect() as connection:
        bodies = dict((await connection.execute(sa.select(raw_notes.c.id, raw_notes.c.body))).all())
        aliases = dict((await connection.execute(sa.select(raw_people.c.id, raw_people.c.alias))).all())
    # Same owner, same column, same data key: only the row id tells them apart.
    await _raw_write(engine, raw_notes, first.id, body=bodies[second.id])
    await _raw_write(engine, raw_notes, second.id, body=bodies[first.id])
    await _raw_write(engine, raw_people, alice.id, alias=aliases[bob.id])
    for model, row_id in [(Note, first.id), (Note, second.id), (Person, alice.id)]:
        async with sessions() as session:
            with pytest.raises(DecryptionError):
                await session.get(model, row_id)
    async with sessions() as session:  # the untouched row still reads
        stored = await session.get(Person, bob.id)
        assert stored is not None and stored.alias == "Bob"


async def test_ciphertext_copied_into_another_column_raises(
    sessions: Sessions, engine: AsyncEngine, notes: type[Note]
) -> None:
    async with sessions.begin() as session:
        owner = make_person(7)
        session.add(owner)
        await session.flush()
        note = Note(person_id=owner.id, body="what happened")
        session.add(note)
    async with engine.connect() as connection:
        body = await connection.scalar(sa.select(raw_notes.c.body))
    await _raw_write(engine, raw_notes, note.id, other=body)
    async with sessions() as session:
        with pytest.raises(DecryptionError, match="crypto_test_notes.other"):
            await session.get(Note, note.id)


async def test_a_wrong_owner_raises(
    sessions: Sessions, engine: AsyncEngine, notes: type[Note]
) -> None:
    async with sessions.begin() as session:
        owner, other = make_person(8, "Owner"), make_person(9, "Other")
        session.add_all([owner, other])
        await session.flush()
        note = Note(person_id=owner.id, body="mine")
        session.add(note)
    await _raw_write(engine, raw_notes, note.id, person_id=other.id)  # a key, but not theirs
    async with sessions() as session:
        with pytest.raises(DecryptionError):
            await session.get(Note, note.id)
    await _raw_write(engine, raw_notes, note.id, person_id=new_row_id())  # nobody's
    async with sessions() as session:
        with pytest.raises(DataKeyMissing):
            await session.get(Note, note.id)


async def test_moving_a_row_to_another_owner_through_the_orm_re_encrypts(
    sessions: Sessions, notes: type[Note]
) -> None:
    async with sessions.begin() as session:
        owner, heir = make_person(10), make_person(11)
        session.add_all([owner, heir])
        await session.flush()
        note = Note(person_id=owner.id, body="text", blob=b"\x00\x01")
        session.add(note)
    async with sessions.begin() as session:
        stored = await session.get(Note, note.id)
        assert stored is not None
        stored.person_id = heir.id
    async with sessions() as session:
        moved = await session.get(Note, note.id)
        assert moved is not None and (moved.body, moved.blob) == ("text", b"\x00\x01")


# -- plaintext never reaches the database ----------------------------------------------------


async def test_other_paths_cannot_store_plaintext(
    sessions: Sessions, engine: AsyncEngine, notes: type[Note]
) -> None:
    async with sessions.begin() as session:
        person = make_person(12, "Sparrow")
        session.add(person)
        await session.flush()
        note = Note(person_id=person.id, body="a")
        session.add(note)

    async def refused(statement: sa.Executable) -> None:
        with pytest.raises(StatementError) as raised:
            async with sessions.begin() as session:
                await session.execute(statement)
        assert isinstance(raised.value.orig, PlaintextRefused)

    await refused(sa.update(Person).where(Person.id == person.id).values(alias="plain"))
    await refused(sa.insert(Note).values(id=new_row_id(), person_id=person.id, body="plain"))
    await refused(sa.select(Person).where(Person.alias == "Sparrow"))

    # Ciphertext read from one attribute cannot be assigned to another.
    with pytest.raises(PlaintextRefused):
        async with sessions.begin() as session:
            sealed = await session.scalar(sa.select(Note.body))
            stored = await session.get(Note, note.id)
            assert stored is not None
            stored.other = sealed
            await session.flush()

    async with engine.connect() as connection:
        values = (await connection.execute(sa.select(raw_people.c.alias))).scalars().all()
    assert all(b"plain" not in bytes(v) for v in values if v is not None)


async def test_a_session_without_crypto_refuses_encrypted_values(
    sessions: Sessions, engine: AsyncEngine
) -> None:
    plain = session_factory(engine)
    async with plain.begin() as session:  # no encrypted value: fine
        nobody = make_person(13)
        session.add(nobody)
    assert nobody.id > 0
    with pytest.raises(CryptoNotConfigured):
        async with plain.begin() as session:
            session.add(make_person(14, "Sparrow"))
    async with sessions.begin() as session:
        person = make_person(15, "Sparrow")
        session.add(person)
    async with plain() as session:
        with pytest.raises(CryptoNotConfigured):
            await session.get(Person, person.id)


async def test_a_failed_flush_gives_the_plaintext_back(sessions: Sessions) -> None:
    async with sessions.begin() as session:
        session.add(make_person(16))
    duplicate = make_person(16, "Sparrow")  # same telegram id
    with pytest.raises(IntegrityError):
        async with sessions.begin() as session:
            session.add(duplicate)
    assert duplicate.alias == "Sparrow"


# -- where the key store IO happens ----------------------------------------------------------


def _count_keystore_selects(keystore: KeyStore) -> list[str]:
    seen: list[str] = []

    @sa.event.listens_for(keystore.engine.sync_engine, "before_cursor_execute")
    def _count(_conn, _cursor, statement, *_args):  # type: ignore[no-untyped-def]
        if statement.lstrip().upper().startswith("SELECT") and "data_keys" in statement:
            seen.append(statement)

    return seen


async def test_cold_reads_fetch_keys_inside_the_session_and_prepare_batches_them(
    sessions: Sessions, crypto: FieldCrypto, keystore: KeyStore
) -> None:
    async with sessions.begin() as session:
        people = [make_person(100 + i, f"alias {i}") for i in range(6)]
        session.add_all(people)
    selects = _count_keystore_selects(keystore)

    crypto.clear_cache()
    async with sessions() as session:  # a cold cache: one key-store query per owner
        loaded = (await session.scalars(sa.select(Person))).all()
    assert sorted(p.alias or "" for p in loaded) == [f"alias {i}" for i in range(6)]
    assert len(selects) == 6

    crypto.clear_cache()
    selects.clear()
    await crypto.prepare(p.id for p in people)  # one query for all of them ...
    async with sessions() as session:
        loaded = (await session.scalars(sa.select(Person))).all()
    assert len(selects) == 1  # ... and none while loading
    assert all(p.alias for p in loaded)

    crypto.clear_cache()
    with pytest.raises(KeyNotPrepared):  # outside an async session: no hidden IO
        crypto.seal(b"x", table="people", column="alias", row_id=1, owner_id=people[0].id)
    await crypto.prepare([people[0].id])
    assert crypto.seal(b"x", table="people", column="alias", row_id=1, owner_id=people[0].id)


async def test_nothing_secret_is_logged(
    sessions: Sessions, crypto: FieldCrypto, keyring: object, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with sessions.begin() as session:
        person = make_person(17, "Sparrow-in-the-logs")
        session.add(person)
    crypto.clear_cache()
    async with sessions() as session:
        await session.get(Person, person.id)
    async with crypto.keystore.engine.connect() as connection:
        wrapped = bytes(await connection.scalar(sa.select(data_keys.c.wrapped)))
    text = caplog.text
    assert "Sparrow-in-the-logs" not in text
    assert wrapped.hex() not in text and repr(wrapped)[2:20] not in text
    for key in crypto.keystore.keyring.keys.values():
        assert key.hex() not in text


async def test_the_alias_keeps_its_64_character_limit(sessions: Sessions) -> None:
    async with sessions.begin() as session:
        session.add(make_person(18, "x" * 64))
    with pytest.raises(ValueError, match="at most 64"):
        async with sessions.begin() as session:
            session.add(make_person(19, "x" * 65))
