"""The data layer on real databases: engine, types, constraints, repositories.

Each test that takes ``database_url``/``engine``/``session_factory`` runs on
``[sqlite]`` and ``[postgresql]`` (see tests/fixtures_db.py).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql.base import PGDialect
from sqlalchemy.dialects.sqlite.base import SQLiteDialect
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import IntegrityError, StatementError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot.db.engine import check_database, create_engine, normalize_url, safe_url
from bot.db.errors import DatabaseUnavailable
from bot.db.models import (
    AuditEvent,
    ConsentChoice,
    ConsentRecord,
    Person,
    Role,
    TherapistClientLink,
)
from bot.db.repositories import (
    AuditRepository,
    ConversationStateRepository,
    PeopleRepository,
    decode_conversation_key,
    encode_conversation_key,
)
from bot.db.types import UTCDateTime, utcnow

AMSTERDAM_SUMMER = timezone(timedelta(hours=2))

Sessions = async_sessionmaker[AsyncSession]


def person(telegram_id: int, role: Role = Role.CLIENT, **kwargs: object) -> Person:
    values: dict[str, object] = {"language": "en", "timezone": "Europe/Amsterdam"} | kwargs
    return Person(telegram_id=telegram_id, role=role, **values)


async def add_people(sessions: Sessions, *people: Person) -> list[int]:
    async with sessions.begin() as session:
        session.add_all(people)
        await session.flush()
        return [p.id for p in people]


# -- URLs and engine -------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("sqlite:///var/imrs.sqlite3", "sqlite+aiosqlite:///var/imrs.sqlite3"),
        ("sqlite:////abs/path/db.sqlite3", "sqlite+aiosqlite:////abs/path/db.sqlite3"),
        ("sqlite://", "sqlite+aiosqlite://"),
        ("postgres://u:p@db:5432/imrs", "postgresql+psycopg://u:p@db:5432/imrs"),
        (
            "postgresql://u@db/imrs?sslmode=require",
            "postgresql+psycopg://u@db/imrs?sslmode=require",
        ),
        ("postgresql+asyncpg://u@db/imrs", "postgresql+asyncpg://u@db/imrs"),
        ("sqlite+aiosqlite:///x.db", "sqlite+aiosqlite:///x.db"),
        ("postgresql+psycopg://u@db/imrs", "postgresql+psycopg://u@db/imrs"),
    ],
)
def test_normalize_url(given: str, expected: str) -> None:
    assert normalize_url(given) == expected


@pytest.mark.parametrize("bad", ["", "var/imrs.sqlite3", "mysql://u@db/imrs"])
def test_normalize_url_rejects_what_we_do_not_support(bad: str) -> None:
    with pytest.raises(ValueError):
        normalize_url(bad)


def test_safe_url_masks_the_password() -> None:
    shown = safe_url("postgresql://imrs:s3cret-pw@db.example:5432/imrs")
    assert "s3cret-pw" not in shown
    assert "db.example" in shown


async def test_sqlite_engine_creates_the_folder_and_sets_pragmas_on_every_connection(
    tmp_path: Path,
) -> None:
    db_file = tmp_path / "not" / "yet" / "there.sqlite3"
    engine = create_engine(f"sqlite:///{db_file}")
    try:
        assert db_file.parent.is_dir()
        # Two connections at once: the pragmas are per connection, both must have them.
        async with engine.connect() as first, engine.connect() as second:
            for connection in (first, second):
                pragmas = {
                    name: (await connection.exec_driver_sql(f"PRAGMA {name}")).scalar()
                    for name in ("journal_mode", "foreign_keys", "busy_timeout", "synchronous")
                }
                assert pragmas == {
                    "journal_mode": "wal",
                    "foreign_keys": 1,
                    "busy_timeout": 0,  # (bot.db.sqlite_inline waits for locks itself)
                    "synchronous": 1,  # NORMAL
                }
    finally:
        await engine.dispose()
    assert db_file.is_file()


async def test_sqlite_a_transaction_begun_by_a_savepoint_waits_for_another_writer(tmp_path: Path) -> None:
    """A savepoint outside a transaction (``begin_nested``, e.g. an insert that may meet a
    concurrent one) takes SQLite's write lock first: a read before its write no longer makes
    SQLite refuse the write at once ("database is locked") while another connection writes;
    it waits (busy_timeout). And what follows the savepoint stays in the same transaction."""
    engine = create_engine(f"sqlite:///{tmp_path / 'x.sqlite3'}")
    try:
        async with engine.begin() as connection:
            await connection.exec_driver_sql("CREATE TABLE t (k INTEGER PRIMARY KEY, v INTEGER)")
        sessions = async_sessionmaker(engine)
        writing, release = asyncio.Event(), asyncio.Event()

        async def other_writer() -> None:
            async with sessions.begin() as session:
                await session.execute(sa.text("INSERT INTO t VALUES (1, 1)"))
                writing.set()
                await release.wait()  # holds the write lock until released

        async def read_then_write() -> None:
            async with sessions.begin() as session:
                async with session.begin_nested():
                    await session.execute(sa.text("SELECT count(*) FROM t"))
                    await session.execute(sa.text("INSERT INTO t VALUES (2, 2)"))
                await session.execute(sa.text("UPDATE t SET v = 3 WHERE k = 2"))

        other = asyncio.create_task(other_writer())
        await writing.wait()
        waiting = asyncio.create_task(read_then_write())
        await asyncio.sleep(0.3)  # (it would have failed by now)
        assert not waiting.done()
        release.set()
        await asyncio.gather(other, waiting)
        async with sessions() as session:
            assert (await session.execute(sa.text("SELECT k, v FROM t ORDER BY k"))).all() == [(1, 1), (2, 3)]

        # Rolled back as a whole: the savepoint did not commit what it wrapped.
        with pytest.raises(RuntimeError):
            async with sessions.begin() as session:
                async with session.begin_nested():
                    await session.execute(sa.text("INSERT INTO t VALUES (4, 4)"))
                raise RuntimeError("the handler failed")
        async with sessions() as session:
            assert await session.scalar(sa.text("SELECT count(*) FROM t WHERE k = 4")) == 0
    finally:
        await engine.dispose()


async def test_check_database_passes_on_a_reachable_database(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        await check_database(engine)
    finally:
        await engine.dispose()


async def test_check_database_raises_a_password_free_error() -> None:
    # Port 1 on localhost: nothing listens there, the connection is refused at once.
    engine = create_engine("postgresql://imrs:s3cret-pw@127.0.0.1:1/imrs?connect_timeout=3")
    try:
        with pytest.raises(DatabaseUnavailable) as raised:
            await check_database(engine)
    finally:
        await engine.dispose()
    message = str(raised.value)
    assert "s3cret-pw" not in message
    assert "127.0.0.1" in message


# -- UTCDateTime -----------------------------------------------------------------


def test_utcnow_is_aware_utc() -> None:
    now = utcnow()
    assert now.tzinfo is UTC


@pytest.mark.parametrize(
    "dialect",
    [SQLiteDialect(), PGDialect()],  # type: ignore[no-untyped-call]
    ids=["sqlite", "postgresql"],
)
def test_utcdatetime_rejects_naive_values_before_any_sql(dialect: Dialect) -> None:
    with pytest.raises(ValueError, match="naive"):
        UTCDateTime().process_bind_param(datetime(2025, 1, 1, 12, 0), dialect)


async def test_utcdatetime_round_trip(session_factory: Sessions) -> None:
    created = datetime(2025, 6, 1, 14, 30, 15, 123456, tzinfo=AMSTERDAM_SUMMER)
    [person_id] = await add_people(session_factory, person(1, created_at=created))

    async with session_factory() as session:  # a new session: a real read from the database
        stored = await session.get(Person, person_id)
        assert stored is not None
        assert stored.created_at == created
        assert stored.created_at.tzinfo is UTC
        assert stored.created_at.hour == 12  # 14:30 at +02:00 is 12:30 UTC
        assert stored.updated_at.tzinfo is UTC
        assert stored.last_seen_at is None


async def test_utcdatetime_comparisons_in_sql_use_utc(session_factory: Sessions) -> None:
    """Filtering with an aware bound in another zone must compare instants, not wall clocks."""
    base = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
    async with session_factory.begin() as session:
        audit = AuditRepository(session)
        for minutes in (0, 30, 60):
            event = await audit.record(None, None, "test.tick")
            event.occurred_at = base + timedelta(minutes=minutes)

    bound = (base + timedelta(minutes=15)).astimezone(AMSTERDAM_SUMMER)  # 14:15 at +02:00
    async with session_factory() as session:
        later = (await session.scalars(select_events_after(bound))).all()
    assert [e.occurred_at for e in later] == [
        base + timedelta(minutes=30),
        base + timedelta(minutes=60),
    ]


def select_events_after(bound: datetime) -> sa.Select[AuditEvent]:
    return (
        sa.select(AuditEvent).where(AuditEvent.occurred_at > bound).order_by(AuditEvent.occurred_at)
    )


async def test_utcdatetime_refuses_naive_datetimes_on_write(session_factory: Sessions) -> None:
    with pytest.raises(StatementError) as raised:
        await add_people(session_factory, person(2, created_at=datetime(2025, 1, 1, 12, 0)))
    assert isinstance(raised.value.orig, ValueError)


# -- constraints -----------------------------------------------------------------


async def test_role_check_constraint_rejects_an_unknown_role(
    session_factory: Sessions, engine: AsyncEngine
) -> None:
    # The ORM's Enum already refuses unknown roles in Python ...
    with pytest.raises(StatementError):
        await add_people(session_factory, person(3, role="superuser"))  # type: ignore[arg-type]

    # ... and the database refuses them too, for anything that bypasses the ORM.
    people = sa.table(
        "people",
        sa.column("telegram_id", sa.BigInteger),
        sa.column("role", sa.String),
        sa.column("language", sa.String),
        sa.column("timezone", sa.String),
        sa.column("created_at", sa.DateTime(timezone=True)),
        sa.column("updated_at", sa.DateTime(timezone=True)),
    )
    row = {
        "telegram_id": 3,
        "language": "en",
        "timezone": "UTC",
        "created_at": utcnow(),
        "updated_at": utcnow(),
    }
    with pytest.raises(IntegrityError):
        async with engine.begin() as connection:
            await connection.execute(sa.insert(people).values(row | {"role": "superuser"}))
    async with engine.begin() as connection:  # the same row with a valid role is fine
        await connection.execute(sa.insert(people).values(row | {"role": "staff"}))
    async with session_factory() as session:
        stored = await PeopleRepository(session).get_by_telegram_id(3)
        assert stored is not None and stored.role is Role.STAFF


async def test_telegram_id_is_unique(session_factory: Sessions) -> None:
    await add_people(session_factory, person(4))
    with pytest.raises(IntegrityError):
        await add_people(session_factory, person(4, role=Role.STAFF))


async def test_only_one_active_link_per_client(session_factory: Sessions) -> None:
    therapist_a, therapist_b, client = await add_people(
        session_factory,
        person(10, Role.THERAPIST),
        person(11, Role.THERAPIST),
        person(12, Role.CLIENT),
    )
    async with session_factory.begin() as session:
        session.add(TherapistClientLink(therapist_id=therapist_a, client_id=client))

    # A second active link for the same client is refused ...
    with pytest.raises(IntegrityError):
        async with session_factory.begin() as session:
            session.add(TherapistClientLink(therapist_id=therapist_b, client_id=client))

    # ... but ending the first one allows the handover, and ended links may pile up.
    async with session_factory.begin() as session:
        link = await session.scalar(
            sa.select(TherapistClientLink).where(TherapistClientLink.client_id == client)
        )
        assert link is not None
        link.ended_at = utcnow()
        session.add(TherapistClientLink(therapist_id=therapist_b, client_id=client))
    async with session_factory.begin() as session:
        session.add(
            TherapistClientLink(therapist_id=therapist_a, client_id=client, ended_at=utcnow())
        )
    async with session_factory() as session:
        links = (await session.scalars(sa.select(TherapistClientLink))).all()
        assert len(links) == 3
        assert [link.therapist_id for link in links if link.ended_at is None] == [therapist_b]


async def test_foreign_keys_are_enforced(session_factory: Sessions) -> None:
    [therapist] = await add_people(session_factory, person(20, Role.THERAPIST))
    with pytest.raises(IntegrityError):
        async with session_factory.begin() as session:
            session.add(TherapistClientLink(therapist_id=therapist, client_id=999_999))


async def test_deleting_a_person_cascades_and_keeps_the_audit_trail(
    session_factory: Sessions,
) -> None:
    therapist, client = await add_people(
        session_factory, person(30, Role.THERAPIST), person(31, Role.CLIENT)
    )
    async with session_factory.begin() as session:
        session.add(TherapistClientLink(therapist_id=therapist, client_id=client))
        session.add(
            ConsentRecord(person_id=client, consent_version="2025-01", choice=ConsentChoice.GRANTED)
        )
        await AuditRepository(session).record(30, Role.THERAPIST, "client.linked", client)

    async with session_factory.begin() as session:
        # A Core DELETE: what happens next is the database's doing (ON DELETE rules).
        await session.execute(sa.delete(Person).where(Person.id == client))

    async with session_factory() as session:
        assert (await session.scalars(sa.select(TherapistClientLink))).all() == []
        assert (await session.scalars(sa.select(ConsentRecord))).all() == []
        [event] = (await session.scalars(sa.select(AuditEvent))).all()
        assert event.action == "client.linked"
        assert event.subject_person_id is None  # ON DELETE SET NULL


async def test_a_therapist_cannot_be_linked_to_themselves(session_factory: Sessions) -> None:
    [someone] = await add_people(session_factory, person(40, Role.THERAPIST))
    with pytest.raises(IntegrityError):
        async with session_factory.begin() as session:
            session.add(TherapistClientLink(therapist_id=someone, client_id=someone))


async def test_consent_choice_round_trips_as_enum(session_factory: Sessions) -> None:
    [client] = await add_people(session_factory, person(50))
    async with session_factory.begin() as session:
        session.add(
            ConsentRecord(person_id=client, consent_version="v1", choice=ConsentChoice.GRANTED)
        )
        session.add(
            ConsentRecord(person_id=client, consent_version="v1", choice=ConsentChoice.WITHDRAWN)
        )
    async with session_factory() as session:
        choices = (
            await session.scalars(sa.select(ConsentRecord.choice).order_by(ConsentRecord.id))
        ).all()
    assert choices == [ConsentChoice.GRANTED, ConsentChoice.WITHDRAWN]


# -- repositories ----------------------------------------------------------------


async def test_ensure_admin_creates_once_and_is_idempotent(session_factory: Sessions) -> None:
    async with session_factory.begin() as session:
        created = await PeopleRepository(session).ensure_admin(100, "nl", "Europe/Amsterdam")
        assert created.id is not None
    async with session_factory.begin() as session:
        again = await PeopleRepository(session).ensure_admin(100, "en", "UTC")
    assert again.id == created.id
    assert (again.role, again.language, again.timezone) == (Role.ADMIN, "nl", "Europe/Amsterdam")
    async with session_factory() as session:
        count = await session.scalar(sa.select(sa.func.count()).select_from(Person))
    assert count == 1


async def test_ensure_admin_promotes_and_reactivates(session_factory: Sessions) -> None:
    await add_people(session_factory, person(101, Role.STAFF, active=False, language="nl"))
    async with session_factory.begin() as session:
        promoted = await PeopleRepository(session).ensure_admin(101, "en", "UTC")
    assert promoted.role is Role.ADMIN
    assert promoted.active is True
    assert promoted.language == "nl"  # their own settings are kept
    async with session_factory() as session:
        stored = await PeopleRepository(session).get_by_telegram_id(101)
        assert stored is not None and stored.role is Role.ADMIN and stored.active


async def test_people_add_and_lookups(session_factory: Sessions) -> None:
    async with session_factory.begin() as session:
        people = PeopleRepository(session)
        added = await people.add(person(102, alias="Sparrow"))
        assert added.id is not None
        assert added.active is True
    async with session_factory() as session:
        people = PeopleRepository(session)
        found = await people.get_by_telegram_id(102)
        assert found is not None and found.alias == "Sparrow" and found.role is Role.CLIENT
        assert await people.get(found.id) is found
        assert await people.get_by_telegram_id(999) is None
        assert "Sparrow" not in repr(found)


async def test_telegram_ids_beyond_32_bits(session_factory: Sessions) -> None:
    big = 7_000_000_000  # Telegram user ids exceed 2**31
    await add_people(session_factory, person(big))
    async with session_factory() as session:
        assert await PeopleRepository(session).get_by_telegram_id(big) is not None


async def test_touch_last_seen_keeps_updated_at(session_factory: Sessions) -> None:
    await add_people(session_factory, person(103))
    async with session_factory() as session:
        before = await PeopleRepository(session).get_by_telegram_id(103)
        assert before is not None
    seen = datetime(2030, 1, 1, 9, 0, tzinfo=AMSTERDAM_SUMMER)
    async with session_factory.begin() as session:
        assert await PeopleRepository(session).touch_last_seen(103, seen) is True
        assert await PeopleRepository(session).touch_last_seen(404) is False
    async with session_factory() as session:
        after = await PeopleRepository(session).get_by_telegram_id(103)
        assert after is not None
    assert after.last_seen_at == seen
    assert after.updated_at == before.updated_at


async def test_updated_at_moves_on_a_profile_change(session_factory: Sessions) -> None:
    [person_id] = await add_people(session_factory, person(104))
    async with session_factory.begin() as session:
        stored = await session.get(Person, person_id)
        assert stored is not None
        first = stored.updated_at
        stored.language = "nl"
    assert stored.updated_at > first


async def test_audit_recent_filters_and_orders(session_factory: Sessions) -> None:
    [subject] = await add_people(session_factory, person(200))
    async with session_factory.begin() as session:
        audit = AuditRepository(session)
        await audit.record(1, Role.ADMIN, "person.created", subject, {"role": "client"})
        await audit.record(1, Role.ADMIN, "person.updated", subject)
        await audit.record(2, "staff", "person.created", None)
        await audit.record(None, None, "system.started")

    async with session_factory() as session:
        audit = AuditRepository(session)
        everything = await audit.recent()
        assert [e.action for e in everything] == [
            "system.started",
            "person.created",
            "person.updated",
            "person.created",
        ]  # newest first
        assert [e.action for e in await audit.recent(limit=2)] == [
            "system.started",
            "person.created",
        ]
        by_admin = await audit.recent(actor=1)
        assert [e.action for e in by_admin] == ["person.updated", "person.created"]
        assert {e.actor_role for e in by_admin} == {"admin"}
        created = await audit.recent(action="person.created")
        assert [e.actor_telegram_id for e in created] == [2, 1]
        [only] = await audit.recent(actor=1, action="person.created")
        assert only.detail == {"role": "client"}
        assert only.subject_person_id == subject
        system = await audit.recent(action="system.started")
        assert system[0].actor_telegram_id is None and system[0].detail is None


async def test_conversation_state_repository(session_factory: Sessions) -> None:
    async with session_factory.begin() as session:
        states = ConversationStateRepository(session)
        await states.save("checkin", (1, 2), 3)
        await states.save("checkin", (1, 2), "ASK_MOOD")  # upsert
        await states.save("checkin", (-100_123_456_789, 7_000_000_000), 0)
        await states.save("intake", (1, 2), 1)
        await states.save("intake", (5, 6), None)  # deleting what is not there is fine
    async with session_factory.begin() as session:
        states = ConversationStateRepository(session)
        assert await states.load("checkin") == {
            (1, 2): "ASK_MOOD",
            (-100_123_456_789, 7_000_000_000): 0,
        }
        await states.save("intake", (1, 2), None)
    async with session_factory() as session:
        states = ConversationStateRepository(session)
        assert await states.load("intake") == {}
        assert await states.load("unknown") == {}


def test_conversation_key_encoding_keeps_types() -> None:
    for key in [(1, 2), (-1001234567890,), ("inline", 5), ()]:
        assert decode_conversation_key(encode_conversation_key(key)) == key
    assert encode_conversation_key((1, "1")) != encode_conversation_key((1, 1))
    with pytest.raises(TypeError):
        encode_conversation_key((1.5,))  # type: ignore[arg-type]


def test_sqlite_folder_that_cannot_be_created(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(DatabaseUnavailable, match="Cannot create the folder"):
        create_engine(f"sqlite:///{blocker}/sub/imrs.sqlite3")


# -- PostgreSQL: pings only for idle connections (issue 16) -----------------------------------


async def test_postgres_pings_only_connections_idle_for_a_while(
    postgres_server_url: str, fresh_postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A connection given back moments ago is used without a ping; one idle for longer than
    PING_IDLE_SECONDS is pinged, and if the server dropped it, replaced before the statement
    (the statement never sees the dead connection)."""
    import psycopg
    from sqlalchemy.dialects.postgresql._psycopg_common import _PGDialect_common_psycopg

    from bot.db import engine as engine_module

    pings: list[int] = []
    original = _PGDialect_common_psycopg.do_ping

    def counted(self: Any, dbapi_connection: Any) -> bool:
        pings.append(1)
        return original(self, dbapi_connection)

    monkeypatch.setattr(_PGDialect_common_psycopg, "do_ping", counted)
    monkeypatch.setattr(engine_module, "PING_IDLE_SECONDS", 0.3)
    engine = create_engine(fresh_postgres_url, pool_size=1, max_overflow=0)
    try:
        async def backend_pid() -> int:
            async with engine.connect() as connection:
                return int((await connection.execute(sa.text("SELECT pg_backend_pid()"))).scalar_one())

        first = await backend_pid()
        assert await backend_pid() == first and pings == []  # reused at once: no ping
        with psycopg.connect(postgres_server_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s, 5000)", (first,))
        await asyncio.sleep(0.4)  # idle for longer than PING_IDLE_SECONDS
        second = await backend_pid()  # pinged, found dead, replaced: no error
        assert pings == [1] and second != first
    finally:
        await engine.dispose()


async def test_postgres_single_read_sends_no_begin(fresh_postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """identify's one SELECT (bot.db.engine.single_read) goes without BEGIN and ROLLBACK; a
    session that writes still gets its transaction."""
    from psycopg._connection_base import BaseConnection

    from bot.db.engine import session_factory, single_read

    commands: list[bytes] = []
    original = BaseConnection._exec_command

    def counted(self: Any, command: Any, *args: Any, **kwargs: Any) -> Any:
        commands.append(command.split()[0] if isinstance(command, bytes) else b"?")
        return original(self, command, *args, **kwargs)

    monkeypatch.setattr(BaseConnection, "_exec_command", counted)
    engine = create_engine(fresh_postgres_url)
    sessions = session_factory(engine)
    try:
        async with engine.connect():  # the dialect's first-connect queries
            pass
        commands.clear()
        async with sessions() as session:
            await single_read(session)
            assert (await session.execute(sa.text("SELECT 1"))).scalar_one() == 1
        assert commands == []
        async with sessions.begin() as session:  # the same pooled connection, in a transaction again
            await session.execute(sa.text("CREATE TEMPORARY TABLE t (a int)"))
        assert commands == [b"BEGIN", b"COMMIT"]
    finally:
        await engine.dispose()
