"""Fault injection through the real stack (issue #16): the Bot API down, slow, or answering
5xx / 429; the database's connections killed mid-transaction or the server restarting;
SQLite full or locked. Through all of them the bot keeps answering what it can, recovers
by itself, loses nothing and sends nothing twice beyond what README.md ("Faults and
recovery") documents, and logs nothing a person wrote.

"For minutes" is compressed: the outbox backs off in hundredths of a second here (the
``quick_retries`` fixture), so an outage of a second or two outlasts every retry the
dispatcher would make in production within several minutes. The tests wait on events
(messages, dispatcher counters, the emulator's processed updates), never on fixed sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import logging
import sqlite3
from datetime import timedelta
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import psycopg
from sqlalchemy import event, select
from sqlalchemy.engine import make_url

from bot.db import sqlite_inline
from bot.db.delivery_models import OutboxKind, OutboxMessage, OutboxState
from bot.db.models import AuditEvent, ConsentRecord, Invite, Person, Role, TherapistClientLink
from bot.db.repositories import ConversationStateRepository
from bot.db.types import utcnow
from bot.delivery import dispatcher_of
from bot.delivery.dispatcher import DispatcherConfig
from bot.logs import PrivacyFilter, SeenTexts
from bot.sandbox.emulator import BotApiEmulator, BotMessage, SimUser
from tests.fixtures_bot import RunningBot, count_finished_jobs, make_settings, prepare_database
from tests.fixtures_db import copied_from_template
from tests.fixtures_delivery import add_people, reachable_user
from tests.join_support import add_person, client_token, services

REMINDER = "outbox.practice_reminder"
REMINDER_START = "A gentle reminder"
#: Written by people during the faults; must never reach a log line.
PRIVATE = "MARKER-c41f my private words about last night"
MAX_ATTEMPTS = 2


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """The running bot's outbox backs off in hundredths of a second instead of seconds, and
    gives a message up after two tries: a fault of half a second outlasts every retry."""
    original = DispatcherConfig.from_settings.__func__  # type: ignore[attr-defined]

    def quick(cls: type[DispatcherConfig], settings: object) -> DispatcherConfig:
        return dataclasses.replace(
            original(cls, settings), backoff_base=0.05, backoff_cap=0.1, max_attempts=MAX_ATTEMPTS
        )

    monkeypatch.setattr(DispatcherConfig, "from_settings", classmethod(quick))


@pytest.fixture
def logged() -> Iterator[io.StringIO]:
    """Every log line at DEBUG, through the project's privacy filter but without its last
    safety net (redacting texts seen in updates): what the code itself writes."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(PrivacyFilter(seen=SeenTexts()))
    root = logging.getLogger()
    root.addHandler(handler)
    old_level, root.level = root.level, logging.DEBUG
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.level = old_level


def assert_nothing_private(logged: io.StringIO) -> None:
    text = logged.getvalue()
    assert "MARKER-c41f" not in text
    assert "private words" not in text


async def until(condition: Callable[[], bool | Awaitable[bool]], timeout: float = 20.0, what: str = "") -> None:
    """Wait until ``condition()`` holds (it may be async), polling every 20 ms."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = condition()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            raise AssertionError(f"still not {what or 'true'} after {timeout}s")
        await asyncio.sleep(0.02)


async def outbox_states(bot: RunningBot) -> Counter[OutboxState]:
    async with services(bot).sessions() as session:
        return Counter((await session.scalars(select(OutboxMessage.state))).all())


async def queue_reminders(bot: RunningBot, people: list[tuple[int, SimUser]], tag: str) -> None:
    for person_id, _ in people:
        await services(bot).outbox.enqueue(
            person_id, kind=OutboxKind.REMINDER, idempotency_key=f"{tag}:{person_id}", content_key=REMINDER
        )


@asynccontextmanager
async def running_bot(
    emulator: BotApiEmulator, database_url: str, monkeypatch: pytest.MonkeyPatch, **settings: Any
) -> AsyncIterator[RunningBot]:
    """The bot as the ``bot`` fixture starts it, with some settings of the test's own."""
    if not copied_from_template(database_url):
        await prepare_database(database_url)
    running = RunningBot(make_settings(emulator, database_url, **settings))
    count_finished_jobs(running, monkeypatch)
    await running.start()
    try:
        yield running
    finally:
        await running.stop()


def reminders_received(user: SimUser) -> int:
    return sum(1 for m in user.messages if m.content.startswith(REMINDER_START))


def help_replies(user: SimUser) -> int:
    return sum(1 for m in user.messages if not m.content.startswith(REMINDER_START))


# -- the Bot API down, slow, 5xx, 429 -------------------------------------------------------------


class Outage:
    """One kind of Bot API fault, switched on and off."""

    def __init__(self, kind: str, emulator: BotApiEmulator, bot: RunningBot) -> None:
        self.kind = kind
        self.emulator = emulator
        self.stats = dispatcher_of(bot.application).stats  # type: ignore[union-attr]
        self.before = dataclasses.replace(self.stats)

    async def begin(self) -> None:
        if self.kind in ("refused", "dropped"):
            await self.emulator.go_down("refuse" if self.kind == "refused" else "close")
        elif self.kind == "5xx":
            self.emulator.inject(None, status=502, count=None)
        elif self.kind == "429":
            self.emulator.inject(None, status=429, retry_after=1, count=None)
        elif self.kind == "slow":
            self.emulator.inject(None, delay=0.3, count=None)

    async def end(self) -> None:
        self.emulator.clear_faults()
        if self.emulator.down:
            await self.emulator.come_back()

    def outlasted_retries(self, rows: int) -> bool:
        """Whether the fault has lasted long enough to matter: every row failed more often
        than MAX_ATTEMPTS (a 429 is not an attempt: two flood waits), or, merely slow, all
        were sent meanwhile."""
        now, before = self.stats, self.before
        if self.kind == "429":
            return now.flood_waits - before.flood_waits >= 2
        if self.kind == "slow":
            return now.sent - before.sent >= rows
        return now.dead > before.dead or now.retried - before.retried >= rows * (MAX_ATTEMPTS + 1)


#: Every kind of fault on SQLite; on PostgreSQL, where only the outcome writes differ, two.
BOT_API_FAULTS = [
    pytest.param("sqlite", ["refused", "dropped", "5xx", "429", "slow"], id="sqlite"),
    pytest.param("postgresql", ["dropped", "429"], id="postgresql"),
]


@pytest.mark.slow
@pytest.mark.parametrize(("database_url", "kinds"), BOT_API_FAULTS, indirect=["database_url"])
async def test_bot_api_faults_lose_nothing_and_duplicate_nothing(
    kinds: list[str], bot: RunningBot, emulator: BotApiEmulator, logged: io.StringIO
) -> None:
    """One fault after the other (connections refused, connections dropped unanswered, 502s,
    429s, slow answers). During each, people write and reminders fall due; afterwards every
    update is answered once and every reminder arrives once, by itself."""
    sent = 0
    for kind in kinds:
        people = await add_people(services(bot).sessions, emulator, 2)
        outage = Outage(kind, emulator, bot)
        await outage.begin()
        try:
            await queue_reminders(bot, people, kind)
            for _, user in people:
                await user.send("/help")
                await user.send(PRIVATE)
            await until(lambda: outage.outlasted_retries(len(people)), what=f"past the retries ({kind})")
        finally:
            await outage.end()
        for _, user in people:
            await until(lambda user=user: reminders_received(user) == 1 and help_replies(user) >= 2,
                        what=f"answered after the fault ({kind})")
        await emulator.updates_processed()
        await bot.outbox_settled()
        for _, user in people:
            assert reminders_received(user) == 1, f"each reminder exactly once ({kind})"
            assert help_replies(user) == 2, f"each update answered once: /help and the stray text ({kind})"
        sent += len(people)
        assert await outbox_states(bot) == Counter({OutboxState.SENT: sent}), kind
    assert bot._task is not None and not bot._task.done(), "the bot is still running"
    assert_nothing_private(logged)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # the database plays no part
async def test_a_send_whose_answer_is_lost_is_sent_again(
    bot: RunningBot, emulator: BotApiEmulator
) -> None:
    """The one duplicate the outbox allows (README, "Faults and recovery"): Telegram took the
    message but its answer did not come back in time (here: later than the send timeout, 2 s
    with the 4 s lease of this test; OUTBOX_LEASE_SECONDS / 2 in production). The bot cannot
    tell that from a message that never arrived, so it sends it again: the person gets it
    twice, and the row is recorded as sent once."""
    dispatcher = dispatcher_of(bot.application)
    assert dispatcher is not None
    dispatcher.config = dataclasses.replace(dispatcher.config, lease=timedelta(seconds=4))
    [(person_id, user)] = await add_people(services(bot).sessions, emulator, 1)
    emulator.inject("sendMessage", delay=3.0, count=1)  # answered after the send timeout
    await queue_reminders(bot, [(person_id, user)], "lost-answer")
    await until(lambda: reminders_received(user) == 2, what="sent twice")
    await bot.outbox_settled()
    async with services(bot).sessions() as session:
        [row] = (await session.scalars(select(OutboxMessage))).all()
    assert (row.state, row.last_error, row.attempts) == (OutboxState.SENT, None, 2)
    assert reminders_received(user) == 2


# -- PostgreSQL: connections killed mid-transaction, the server restarting -----------------------

ONLY_POSTGRES = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)


def kill_before(engine: Any, server_url: str, statement_start: str) -> list[int]:
    """Terminate the bot's own database session (pg_terminate_backend, waiting until it is
    gone) right before it runs the next statement beginning with ``statement_start``: the
    transaction it is in dies half-way. Returns the list of pids killed (filled in later)."""
    killed: list[int] = []

    @event.listens_for(engine.sync_engine, "before_cursor_execute")
    def terminate(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if killed or not statement.lstrip().upper().startswith(statement_start.upper()):
            return
        pid = conn.connection.driver_connection.info.backend_pid
        with psycopg.connect(server_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s, 5000)", (pid,))
        killed.append(pid)

    return killed


async def enrolment_rows(bot: RunningBot, client: SimUser) -> dict[str, int]:
    """What agreeing to the consent writes, counted."""
    async with services(bot).sessions() as session:
        async def count(statement: Any) -> int:
            return len((await session.scalars(statement)).all())

        return {
            "people": await count(select(Person.id).where(Person.telegram_id == client.id)),
            "links": await count(select(TherapistClientLink.id)),
            "consents": await count(select(ConsentRecord.id)),
            "notices": await count(select(OutboxMessage.id)),
            "audits": await count(
                select(AuditEvent.id).where(AuditEvent.action.in_(["consent.granted", "client.joined"]))
            ),
            "used invites": await count(select(Invite.id).where(Invite.used_at.is_not(None))),
        }


NOTHING_ENROLLED = dict.fromkeys(["people", "links", "consents", "notices", "audits", "used invites"], 0)
ENROLLED_ONCE = {"people": 1, "links": 1, "consents": 1, "notices": 1, "audits": 2, "used invites": 1}


async def up_to_the_consent(bot: RunningBot, emulator: BotApiEmulator) -> tuple[SimUser, SimUser, str, BotMessage]:
    """A therapist (reachable), their client invite, and a client who opened it and read the
    consent: (client, therapist's chat, invite token, the consent message with [I agree])."""
    therapist = await add_person(bot, 5550001, Role.THERAPIST, display_name="Dr. Vos")
    therapist_chat = reachable_user(emulator, user_id=5550001)
    token = await client_token(bot, therapist)
    client = emulator.user()
    await client.send(PRIVATE)  # a stray text first: it must not reach a log either
    await client.next_message()
    await client.send(f"/start {token}")
    await client.press(0, await client.next_message())  # Continue
    await client.press(0, await client.next_message())  # Read the consent
    return client, therapist_chat, token, await client.next_message()


async def agree_again(client: SimUser, token: str) -> None:
    """After a failure (the buttons were settled before it): the link again, and agree."""
    await client.send(f"/start {token}")
    await client.press(0, await client.next_message())  # Continue
    await client.press(0, await client.next_message())  # Read the consent
    await client.press(0, await client.next_message())  # I agree
    assert (await client.next_message()).content.startswith("Thank you")  # consent recorded


@ONLY_POSTGRES
async def test_a_session_killed_mid_transaction_leaves_nothing_half_written(
    bot: RunningBot, emulator: BotApiEmulator, postgres_server_url: str, logged: io.StringIO
) -> None:
    """A client agrees to the consent: one transaction creates them, claims the invite, links
    them, records the consent, queues the therapist's notice and audits. Its database session
    is terminated right before the audit rows: none of it stays, the client is told something
    went wrong, and opening the link again and agreeing enrols them, with exactly one notice
    to the therapist."""
    client, therapist_chat, token, consent = await up_to_the_consent(bot, emulator)
    killed = kill_before(services(bot).engine, postgres_server_url, "INSERT INTO audit_events")
    await client.press(0, consent)  # I agree
    apology = await client.next_message()
    assert killed, "the transaction was cut short"
    assert apology.content.startswith("Sorry, something went wrong")

    assert await enrolment_rows(bot, client) == NOTHING_ENROLLED
    await agree_again(client, token)  # the pool replaced the dead connection
    assert await enrolment_rows(bot, client) == ENROLLED_ONCE
    await until(lambda: len(therapist_chat.messages) == 1, what="the therapist told")
    await bot.outbox_settled()
    assert len(therapist_chat.messages) == 1
    assert_nothing_private(logged)


class TcpProxy:
    """Between the bot and PostgreSQL: ``restart()`` does to the bot what a restart of the
    server does (every connection dropped, new ones refused) until ``come_back()``, without
    touching the server other people's tests use."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._links: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        link = (writer, up_writer)
        self._links.add(link)
        pumps = [asyncio.create_task(self._pump(reader, up_writer)), asyncio.create_task(self._pump(up_reader, writer))]
        self._tasks.update(pumps)
        await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        for task in pumps:
            task.cancel()
            self._tasks.discard(task)
        self._links.discard(link)
        writer.transport.abort()
        up_writer.transport.abort()

    @staticmethod
    async def _pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()

    async def restart(self) -> None:
        """Refuse new connections and drop every open one."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for client, upstream in list(self._links):
            client.transport.abort()
            upstream.transport.abort()

    async def come_back(self) -> None:
        await self.start()

    async def close(self) -> None:
        await self.restart()
        for task in list(self._tasks):
            task.cancel()


@pytest.fixture
async def proxied_url(migrated_url: str) -> AsyncIterator[tuple[str, TcpProxy]]:
    """The test's PostgreSQL database, reached through a :class:`TcpProxy`."""
    url = make_url(migrated_url)
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
    await proxy.start()
    try:
        yield url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False), proxy
    finally:
        await proxy.close()


@ONLY_POSTGRES
async def test_the_database_server_restarting(
    emulator: BotApiEmulator, proxied_url: tuple[str, TcpProxy], monkeypatch: pytest.MonkeyPatch,
    logged: io.StringIO,
) -> None:
    """The server goes away with reminders in flight and people writing. The consumer of
    updates notices (its leader lock's connection is gone) and stops fetching updates, so
    what people write waits at Telegram; the outcomes of the sends in flight wait in the
    dispatcher. When the server is back, every update is answered once and every reminder
    was sent once and is recorded as sent."""
    url, proxy = proxied_url
    async with running_bot(emulator, url, monkeypatch, leader_retry_seconds=0.2) as bot:
        people = await add_people(services(bot).sessions, emulator, 2)
        emulator.inject("sendMessage", delay=1.0, count=len(people))  # in flight across the restart
        await queue_reminders(bot, people, "restart")
        await until(lambda: len(emulator.calls_to("sendMessage")) == len(people), what="reminders in flight")
        await proxy.restart()
        updater = bot.application.updater
        await until(lambda: updater is not None and not updater.running, what="stopped consuming updates")
        for _, user in people:
            await user.send("/help")
            await user.send(PRIVATE)
        await until(lambda: all(reminders_received(user) == 1 for _, user in people), what="reminders arrived")
        dispatcher = dispatcher_of(bot.application)
        assert dispatcher is not None
        await until(lambda: dispatcher._unwritten == len(people) and not dispatcher._in_flight,
                    what="outcomes waiting for the database")
        assert help_replies(people[0][1]) == 0, "nothing answered while the database is away"
        await proxy.come_back()
        for _, user in people:
            await until(lambda user=user: help_replies(user) == 2, what="answered after the restart")
        await emulator.updates_processed()
        await bot.outbox_settled()
        assert all(reminders_received(user) == 1 and help_replies(user) == 2 for _, user in people)
        assert await outbox_states(bot) == Counter({OutboxState.SENT: len(people)})
    assert_nothing_private(logged)


# -- SQLite: locked, full ---------------------------------------------------------------------------

ONLY_SQLITE = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
#: The bot's SQLite busy timeout in these tests (production: 5 s), so that "locked for
#: longer than the busy timeout" takes a fraction of a second.
BUSY_MS = 200


@pytest.fixture
def short_busy_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    """How long the bot's statements wait for a write lock (bot.db.sqlite_inline), shortened."""
    monkeypatch.setattr(sqlite_inline, "BUSY_SECONDS", BUSY_MS / 1000)


def sqlite_file(database_url: str) -> str:
    return make_url(database_url).database or ""


@contextlib.asynccontextmanager
async def locked(database_url: str) -> AsyncIterator[None]:
    """Another process's write transaction (BEGIN IMMEDIATE) held on the file: every write of
    the bot waits its busy timeout and fails with "database is locked"; reads go on (WAL).
    Taken in a thread: a write of the bot's under way must be able to finish meanwhile."""
    connection = sqlite3.connect(sqlite_file(database_url), isolation_level=None, timeout=30,
                                 check_same_thread=False)
    try:
        await asyncio.to_thread(connection.execute, "BEGIN IMMEDIATE")
        yield
        connection.execute("ROLLBACK")
    finally:
        connection.close()


async def conversation_state(bot: RunningBot, name: str, user: SimUser) -> object | None:
    async with services(bot).sessions() as session:
        return await ConversationStateRepository(session).get(name, (user.id, user.id))


STORING_FAILED = "Inbox: storing updates failed"


async def store_failed(logged: io.StringIO, before: int) -> None:
    """Wait until the bot has fetched updates and failed to store them in its inbox (so it
    has not confirmed them: they wait at Telegram), after the log's first ``before`` chars."""
    await until(lambda: STORING_FAILED in logged.getvalue()[before:], what="a failed inbox write")


@ONLY_SQLITE
async def test_a_locked_database(
    short_busy_timeout: None, bot: RunningBot, emulator: BotApiEmulator, database_url: str, logged: io.StringIO
) -> None:
    """Locked for longer than the busy timeout: what people write cannot be stored in the
    inbox, so it is not confirmed and waits at Telegram (no half-answer, no apology); once the
    lock is gone each update is answered once, in order, and the conversation begun then is
    durable (it goes on after a restart)."""
    [(person_id, user)] = await add_people(services(bot).sessions, emulator, 1)
    async with locked(database_url):
        mark = len(logged.getvalue())
        await user.send("/help")
        await user.send("/timezone")
        await store_failed(logged, mark)
        assert user.messages == [], "nothing is answered before it is stored"
    assert not (await user.next_message()).content.startswith("Sorry")  # /help
    question = await user.next_message()
    await user.send(PRIVATE)  # in the conversation: not a zone, asked again
    await user.next_message()
    await emulator.updates_processed()
    await until(lambda: conversation_state(bot, "timezone", user), what="the conversation state saved")
    await bot.restart()
    await user.press(0, question)  # a zone button, after the restart: the conversation goes on
    answer = await user.next_message()
    assert answer.content.startswith("Done: your time zone is now Europe/London")
    async with services(bot).sessions() as session:
        person = await session.get(Person, person_id)
    assert person is not None and person.timezone == "Europe/London"
    await emulator.updates_processed()  # the state is written after the answer
    assert await conversation_state(bot, "timezone", user) is None  # ended
    assert_nothing_private(logged)


@contextlib.asynccontextmanager
async def disk_full(bot: RunningBot, database_url: str) -> AsyncIterator[None]:
    """The database cannot grow (``PRAGMA max_page_count`` at its size, on every connection of
    the bot) and what room it had is taken: the audit table is filled with rows until SQLite
    answers "database or disk is full", so the next audit record needs a page there is no room
    for. Other small writes may still fit in free space inside pages, as on a real full disk.
    Leaving deletes the filler and opens the bot's pooled connections again without the limit:
    room again, as when a disk is made larger."""
    engine = services(bot).engine
    admin = sqlite3.connect(sqlite_file(database_url), isolation_level=None, timeout=30, check_same_thread=False)
    limit = admin.execute("PRAGMA page_count").fetchone()[0]
    admin.execute(f"PRAGMA max_page_count={limit}")

    def cannot_grow(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA max_page_count={limit}")
        cursor.close()

    event.listen(engine.sync_engine, "connect", cannot_grow)
    await engine.dispose()  # pooled connections open again, with the limit
    filler = "INSERT INTO audit_events (occurred_at, action) VALUES ('2000-01-01 00:00:00', 'filler')"

    def fill() -> None:  # in a thread: a write of the bot's under way must be able to finish
        while True:
            try:
                admin.execute(filler)
            except sqlite3.OperationalError as exc:
                if "full" in str(exc):
                    return
                raise

    try:
        await asyncio.to_thread(fill)
        yield
    finally:
        event.remove(engine.sync_engine, "connect", cannot_grow)
        await asyncio.to_thread(admin.execute, "DELETE FROM audit_events WHERE action = 'filler'")
        admin.close()
        await engine.dispose()  # pooled connections open again, without the limit (a disk made larger)


@ONLY_SQLITE
async def test_a_full_disk(bot: RunningBot, emulator: BotApiEmulator, database_url: str, logged: io.StringIO) -> None:
    """With the disk full, what the client writes and presses cannot be stored in the inbox:
    nothing is confirmed, nothing is half-written, nothing is answered with an apology; once
    there is room again both are answered once, in order: the client is enrolled once and the
    therapist told once."""
    client, therapist_chat, _token, consent = await up_to_the_consent(bot, emulator)
    answered = len(client.messages)
    async with disk_full(bot, database_url):
        mark = len(logged.getvalue())
        await client.send("/help")
        await client.press(0, consent)  # I agree
        await store_failed(logged, mark)
        assert len(client.messages) == answered, "nothing is answered before it is stored"
        assert await enrolment_rows(bot, client) == NOTHING_ENROLLED
    assert not (await client.next_message()).content.startswith("Sorry")  # /help
    assert (await client.next_message()).content.startswith("Thank you")  # consent recorded
    await emulator.updates_processed()
    assert await enrolment_rows(bot, client) == ENROLLED_ONCE
    await until(lambda: len(therapist_chat.messages) == 1, what="the therapist told")
    await bot.outbox_settled()
    assert len(therapist_chat.messages) == 1
    assert not any(m.content.startswith("Sorry") for m in client.messages)
    assert bot._task is not None and not bot._task.done(), "the bot is still running"
    assert_nothing_private(logged)


@ONLY_SQLITE
async def test_an_outcome_waits_for_the_database_and_its_message_is_not_sent_again(
    short_busy_timeout: None, bot: RunningBot, emulator: BotApiEmulator, database_url: str
) -> None:
    """A reminder is sent while the database is locked, for longer than the row's lease: its
    outcome waits in the dispatcher, and when the database is back it is recorded before any
    lease is released, so the reminder is not sent a second time."""
    dispatcher = dispatcher_of(bot.application)
    assert dispatcher is not None
    dispatcher.config = dataclasses.replace(
        dispatcher.config, lease=timedelta(seconds=4), lease_sweep_seconds=0.05  # sends time out after 2 s
    )
    [(person_id, user)] = await add_people(services(bot).sessions, emulator, 1)
    emulator.inject("sendMessage", delay=1.0, count=1)  # in flight until the lock is taken
    await queue_reminders(bot, [(person_id, user)], "locked")
    await until(lambda: len(emulator.calls_to("sendMessage")) == 1, what="the reminder in flight")
    async with locked(database_url):
        await until(lambda: reminders_received(user) == 1, what="the reminder arrived")
        async with services(bot).sessions() as session:
            [row] = (await session.scalars(select(OutboxMessage))).all()
        assert row.state is OutboxState.SENDING and row.lease_until is not None
        await until(lambda: utcnow() > row.lease_until + timedelta(seconds=0.2), what="the lease over")
        assert dispatcher._unwritten == 1  # noqa: SLF001 - the outcome waits
    await bot.outbox_settled()
    async with services(bot).sessions() as session:
        [row] = (await session.scalars(select(OutboxMessage))).all()
    assert (row.state, row.attempts) == (OutboxState.SENT, 1)
    assert reminders_received(user) == 1
