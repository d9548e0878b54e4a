"""A person's own settings and data rights, end to end through the emulator (SQLite and, with
TEST_DATABASE_URL, PostgreSQL): /language, /timezone, /consent (withdraw, give again),
/mydata (the export) and /delete (the erasure).

The export and erasure checks derive the tables from the models here, independently of the
service: a new table with a foreign key to people is covered without touching these tests.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from datetime import time as dt_time
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, Table, or_, select, update

from bot.crypto.keystore import data_keys
from bot.db.delivery_models import OutboxKind, OutboxMessage, OutboxState
from bot.db.models import AppointmentKind, AuditEvent, Base, ConsentChoice, ConsentRecord, ConversationState, Role
from bot.sandbox.emulator import BotApiEmulator
from bot.sandbox.emulator.people import SimUser
from bot.services.people import Identity
from handlers.account import ERASE_NOW
from tests.fixtures_bot import RunningBot
from tests.join_support import (
    add_person,
    client_token,
    content,
    first_line,
    join,
    labels,
    open_chat,
    person_by_telegram_id,
    says,
    services,
)


def _values(tree: Any) -> list[Any]:
    """Every scalar in a JSON document (keys included)."""
    if isinstance(tree, dict):
        return [*tree.keys(), *(v for value in tree.values() for v in _values(value))]
    if isinstance(tree, list):
        return [v for value in tree for v in _values(value)]
    return [tree]


def person_tables() -> dict[Table, list[str]]:
    """Every table with a foreign key to people.id, with those columns (from the models)."""
    found: dict[Table, list[str]] = {}
    for table in Base.metadata.tables.values():
        columns = [
            c.name
            for c in table.columns
            if any(fk.column.table.name == "people" and fk.column.name == "id" for fk in c.foreign_keys)
        ]
        if columns and table.name != "people":
            found[table] = columns
    return found


async def enrolled_client(bot: RunningBot, emulator: BotApiEmulator, *, alias: str = "Robin") -> tuple[SimUser, SimUser]:
    """(client, therapist chat): a client who joined Dr. Jansen through the whole flow."""
    therapist = await add_person(bot, 8001, Role.THERAPIST, display_name="Dr. Jansen")
    therapist_chat = await open_chat(emulator.user(8001, first_name="Jan"))
    client = emulator.user(first_name="Sam")
    assert says(await join(client, await client_token(bot, therapist, alias=alias)), "client_join.done", zone="Europe/Amsterdam")
    await therapist_chat.next_message()  # joined notice
    return client, therapist_chat


# -- /language and /timezone ---------------------------------------------------------------------


async def test_language_can_be_changed_and_a_bad_choice_asks_again(bot: RunningBot, emulator: BotApiEmulator):
    client, _ = await enrolled_client(bot, emulator)
    await client.send("/language")
    question = await client.next_message()
    assert says(question, "account.language.question", language="English")
    assert labels(question) == ["✓ English", "Nederlands"]

    await client.press_data("lang:fr", question)  # not a language we have: asked again
    question = await client.next_message()
    assert says(question, "account.language.question", language="English")

    await client.press("Nederlands", question)
    assert (await client.next_message()).text == first_line("account.language.changed", "nl")
    assert (await person_by_telegram_id(bot, client.id)).language == "nl"
    await client.send("/help")
    assert says(await client.next_message(), "help.client", "nl")


async def test_time_zone_by_button_by_city_and_with_bad_input(bot: RunningBot, emulator: BotApiEmulator):
    client, _ = await enrolled_client(bot, emulator)
    await client.send("/timezone")
    question = await client.next_message()
    assert says(question, "account.timezone.question", zone="Europe/Amsterdam")
    assert "London" in labels(question)

    await client.send("Narnia")
    assert says(await client.next_message(), "account.timezone.unknown")
    await client.press_data("tz:Not/AZone", question)
    assert says(await client.next_message(), "account.timezone.unknown")
    await client.send("port")
    choices = await client.next_message()
    assert says(choices, "account.timezone.choices")
    await client.press("America/Port of Spain", choices)
    changed = await client.next_message()
    assert says(changed, "account.timezone.changed", zone="America/Port_of_Spain")
    assert (await person_by_telegram_id(bot, client.id)).timezone == "America/Port_of_Spain"

    # Typed IANA names in any case; and a therapist may change theirs too.
    await client.send("/timezone")
    await client.next_message()
    await client.send("EUROPE/london")
    assert says(await client.next_message(), "account.timezone.changed", zone="Europe/London")
    therapist = emulator.user(8001)
    await therapist.send("/timezone")
    await therapist.press("Sydney", await therapist.next_message())
    assert says(await therapist.next_message(), "account.timezone.changed", zone="Australia/Sydney")
    # Text after the conversation ended is not taken as a zone.
    await client.send("amsterdam")
    assert says(await client.next_message(), "fallback.text")
    assert (await person_by_telegram_id(bot, client.id)).timezone == "Europe/London"


# -- /consent ------------------------------------------------------------------------------------


async def test_an_edited_message_answers_no_step(bot: RunningBot, emulator: BotApiEmulator):
    """Found by tests/test_fuzz.py: an edit of an earlier message in a step that waits for
    text reached the step, which read ``update.message`` (an edit has none): the error
    handler. An edit answers no step; the step still waits for a new message."""
    client, _ = await enrolled_client(bot, emulator)
    earlier = await client.send("hello")
    await client.next_message()
    await client.send("/timezone")
    question = await client.next_message()
    assert says(question, "account.timezone.question", zone="Europe/Amsterdam")
    await client.edit(earlier, "London")
    assert says(await client.next_message(), "fallback.text")
    await client.send("London")
    assert says(await client.next_message(), "account.timezone.changed", zone="Europe/London")


async def test_withdrawing_consent_is_recorded_and_the_therapist_is_told(bot: RunningBot, emulator: BotApiEmulator):
    client, therapist_chat = await enrolled_client(bot, emulator)
    person = await person_by_telegram_id(bot, client.id)
    consent = services(bot).consent

    await client.send("/consent")
    status = await client.next_message()
    assert says(status, "account.consent.granted") and "version 2026-12-3" in status.text
    assert labels(status) == ["Read the consent", "Withdraw my consent"]
    await client.press("Read the consent", status)
    assert "(version 2026-12-3)" in (await client.next_message()).text

    await client.press("Withdraw my consent", status)
    confirm = await client.next_message()
    await client.press("Keep my consent", confirm)
    assert says(await client.next_message(), "account.consent.kept")
    assert await consent.has_active_consent(person.id)

    await client.send("/consent")
    await client.press("Withdraw my consent", await client.next_message())
    await client.press("Withdraw", await client.next_message())
    assert says(await client.next_message(), "account.consent.now_withdrawn")
    assert not await consent.has_active_consent(person.id), "stops at once"
    assert await consent.with_active_consent([person.id]) == set()
    notice = await therapist_chat.next_message()
    assert notice.text == first_line("account.consent.withdrawn_notice", alias="Robin")

    await client.send("/consent")
    status = await client.next_message()
    assert says(status, "account.consent.withdrawn")
    await client.press("Give consent again", status)
    await client.press("I agree", await client.next_message())
    assert says(await client.next_message(), "account.consent.regranted", version="2026-12-3")
    assert await consent.has_active_consent(person.id)
    assert (await therapist_chat.next_message()).text == first_line("account.consent.regranted_notice", alias="Robin")

    async with services(bot).sessions() as session:
        records = (await session.scalars(select(ConsentRecord).order_by(ConsentRecord.recorded_at))).all()
        actions = [e.action for e in (await session.scalars(select(AuditEvent))).all()]
    assert [r.choice for r in records] == [ConsentChoice.GRANTED, ConsentChoice.WITHDRAWN, ConsentChoice.GRANTED]
    assert all(r.person_id == person.id and r.recorded_at.tzinfo is not None for r in records)
    assert actions.count("consent.withdrawn") == 1 and actions.count("consent.granted") == 2


async def test_after_a_withdrawal_no_appointment_message_reaches_the_client(bot: RunningBot, emulator: BotApiEmulator):
    """Issue 13: a client who withdrew consent gets no appointment notice, reminder or
    check-in prompt (the appointment itself stands: it is the practice's)."""
    client, _ = await enrolled_client(bot, emulator)
    person = await person_by_telegram_id(bot, client.id)
    await client.send("/consent")
    await client.press("Withdraw my consent", await client.next_message())
    await client.press("Withdraw", await client.next_message())
    await client.next_message()

    therapist = await services(bot).people.identify(8001, "Jan", "en")
    start = datetime.now(UTC) + timedelta(hours=3)  # the prompt and the 2 h reminder are due at once or soon
    made = await services(bot).appointments.create(
        therapist, person.id, start.astimezone(ZoneInfo("Europe/Amsterdam")).strftime("%Y-%m-%d %H:%M"),
        AppointmentKind.IMRS,
    )
    await bot.outbox_settled()
    await client.expect_silence(0.1)
    async with services(bot).sessions() as session:
        rows = list(await session.scalars(select(OutboxMessage).where(OutboxMessage.recipient_id == person.id)))
    due = [r for r in rows if r.due_at <= datetime.now(UTC) and str(made.id) in r.idempotency_key]
    assert {r.content_key for r in due} >= {"outbox.appointment_created", "outbox.check_in_prompt"}
    assert all(r.state is OutboxState.FAILED and r.last_error == "no_consent" for r in due)


async def test_after_a_withdrawal_the_outbox_sends_the_client_nothing(bot: RunningBot, emulator: BotApiEmulator):
    """Checked at send time: a reminder queued before the withdrawal is not delivered."""
    client, _ = await enrolled_client(bot, emulator)
    person = await person_by_telegram_id(bot, client.id)
    outbox = services(bot).outbox
    await client.send("/consent")
    await client.press("Withdraw my consent", await client.next_message())
    await client.press("Withdraw", await client.next_message())
    await client.next_message()

    queued = await outbox.enqueue(
        person.id, kind=OutboxKind.REMINDER, idempotency_key="r1", content_key="outbox.practice_reminder"
    )
    assert queued is not None
    await bot.outbox_settled()  # two whole dispatcher ticks, and what they claimed is settled
    await client.expect_silence(0.1)
    async with services(bot).sessions() as session:
        row = await session.get(OutboxMessage, queued)
    assert row.state is OutboxState.FAILED and row.last_error == "no_consent"

    await client.send("/consent")
    await client.press("Give consent again", await client.next_message())
    await client.press("I agree", await client.next_message())
    await client.next_message()
    await outbox.enqueue(
        person.id, kind=OutboxKind.REMINDER, idempotency_key="r2", content_key="outbox.practice_reminder"
    )
    reminder = await client.next_message(timeout=10)
    assert says(reminder, "outbox.practice_reminder")


# -- /mydata -------------------------------------------------------------------------------------


async def test_the_export_holds_every_table_with_the_clients_data_and_nobody_elses(
    bot: RunningBot, emulator: BotApiEmulator
):
    client, therapist_chat = await enrolled_client(bot, emulator)
    # Another client of the same therapist, whose data must not appear.
    therapist = await person_by_telegram_id(bot, 8001)
    other = emulator.user(first_name="Other")
    await join(other, await client_token(bot, await _identity(bot, 8001), alias="Someone-else"))
    person = await person_by_telegram_id(bot, client.id)
    await client.send("/consent")
    await client.press("Withdraw my consent", await client.next_message())
    await client.press("Withdraw", await client.next_message())
    await client.next_message()

    derived = person_tables()
    expected: dict[str, list[int]] = {}
    async with services(bot).sessions() as session:
        for table, columns in derived.items():
            query = select(table.c[_pk(table)]).where(_theirs(table, columns, person.id, client.id))
            expected[table.name] = sorted((await session.execute(query)).scalars().all())

    await client.send("/mydata")
    message = await client.next_message()
    assert message.document is not None and message.document.file_name.endswith(".json")
    assert message.protect_content is False, "the client may save it"
    assert says(message, "account.mydata.caption")
    raw = message.document.data.decode("utf-8")
    export = json.loads(raw)

    assert export["person"]["alias"] == "Robin" and export["person"]["telegram_id"] == client.id
    assert set(export["tables"]) == set(expected)
    for table in derived:
        exported = sorted(row[_pk(table)] for row in export["tables"][table.name])
        assert exported == expected[table.name], table.name
    assert export["tables"]["consent_records"] and export["tables"]["therapist_client_links"]
    link = export["tables"]["therapist_client_links"][0]
    assert link["client_id"] == person.id
    assert link["therapist_id"] == {"role": "therapist", "display_name": "Dr. Jansen"}
    invite = export["tables"]["invites"][0]
    assert invite["used_by_id"] == person.id and "Robin" not in json.dumps(invite)
    # Nothing of anyone else: not the other client, not the therapist's ids.
    assert "Someone-else" not in raw
    # As whole values: ids are random 63-bit numbers, one may well contain the digits "8001".
    assert not {therapist.id, 8001, str(therapist.id), "8001"} & set(_values(export))
    async with services(bot).sessions() as session:
        exported_events = (
            await session.scalars(select(AuditEvent).where(AuditEvent.action == "data.exported"))
        ).all()
    assert [e.subject_person_id for e in exported_events] == [person.id]


# -- /delete -------------------------------------------------------------------------------------


async def test_the_export_holds_practice_reminders_and_their_local_time(bot: RunningBot, emulator: BotApiEmulator):
    """Found by tests/test_fuzz.py: a reminder's local time (a ``datetime.time``) could not be
    written to JSON, so /mydata of a client with a practice reminder reached the error handler."""
    client, _ = await enrolled_client(bot, emulator)
    person = await person_by_telegram_id(bot, client.id)
    await services(bot).reminders.add(person.id, {0, 2}, dt_time(19, 30), "breathing")
    await client.send("/mydata")
    message = await client.next_message()
    assert message.document is not None, message.content
    export = json.loads(message.document.data.decode("utf-8"))
    assert [row["local_time"] for row in export["tables"]["reminder_schedules"]] == ["19:30:00"]


async def test_delete_leaves_nothing_but_the_record_of_the_erasure(bot: RunningBot, emulator: BotApiEmulator):
    client, _ = await enrolled_client(bot, emulator)
    person = await person_by_telegram_id(bot, client.id)
    await client.send("/mydata")
    await client.next_message()
    await client.send("/timezone")  # a conversation left open: its state is stored
    await client.next_message()
    for _ in range(100):  # written after the update (handlers' AFTER group)
        async with services(bot).sessions() as session:
            keys = (await session.scalars(select(ConversationState.key))).all()
        if any(str(client.id) in key for key in keys):
            break
        await asyncio.sleep(0.02)
    else:
        raise AssertionError("the /timezone conversation state was not stored")

    await client.send("/delete")
    confirm = await client.next_message()
    await client.press("No, keep my data", confirm)
    assert says(await client.next_message(), "account.delete.kept")
    assert await person_by_telegram_id(bot, client.id) is not None

    await client.send("/delete")
    await client.press("Yes, delete everything", await client.next_message())
    final = await client.next_message()
    assert says(final, "account.delete.confirm_again")
    await client.press("Delete for good", final)
    assert says(await client.next_message(), "account.delete.done")

    # Every table of the models: no row refers to the client, except the erasure's record.
    mentions: list[tuple[str, dict[str, Any]]] = []
    async with services(bot).sessions() as session:
        for table in Base.metadata.sorted_tables:
            for row in (await session.execute(select(table))).mappings():
                values = dict(row)
                flat = json.dumps(values, default=str)
                if str(person.id) in flat or str(client.id) in flat:
                    mentions.append((table.name, values))
    assert len(mentions) == 1, mentions
    table, erased = mentions[0]
    assert table == "audit_events" and erased["action"] == "person.erased"
    assert erased["subject_person_id"] is None and erased["detail"]["person_id"] == person.id
    async with services(bot).crypto.keystore.engine.connect() as connection:
        owners = set((await connection.execute(select(data_keys.c.person_id))).scalars())
    assert person.id not in owners and owners, "the client's data key is destroyed, others' are not"

    # The buttons of the old message do nothing any more, and the therapist is unaffected.
    await client.press_data(ERASE_NOW)
    await client.expect_silence(0.3)
    assert client.callback_answers[-1]["text"].startswith("Sorry, that is not available")
    assert (await person_by_telegram_id(bot, 8001)).display_name == "Dr. Jansen"
    async with services(bot).sessions() as session:
        erasures = (await session.scalars(select(AuditEvent).where(AuditEvent.action == "person.erased"))).all()
    assert len(erasures) == 1
    await client.send("/help")
    assert says(await client.next_message(), "help.everyone"), "a stranger again"


# -- helpers -------------------------------------------------------------------------------------


def _pk(table: Table) -> str:
    (column,) = table.primary_key.columns
    return column.name


def _theirs(table: Table, columns: list[str], person_id: int, telegram_id: int) -> ColumnElement[bool]:
    """Rows naming the person by id (foreign keys) or by Telegram id (e.g. as the actor)."""
    by_telegram = [c == telegram_id for c in table.columns if c.name.endswith("telegram_id")]
    return or_(*(table.c[name] == person_id for name in columns), *by_telegram)


async def _identity(bot: RunningBot, telegram_id: int):
    return await services(bot).people.identify(telegram_id, "x", None)


# -- a new version of the consent text -----------------------------------------------------------


async def test_a_new_consent_version_is_told_once_and_asked_in_consent(
    bot: RunningBot, emulator: BotApiEmulator, db_sessions
):
    """A grant of an earlier version stays in force; the client is told once (per version,
    however often the bot starts) and /consent asks; agreeing records the new version and
    tells the therapist nothing. A client who withdrew is not told."""
    current = content.text("consent.version", "en")
    client, therapist_chat = await enrolled_client(bot, emulator)
    other = emulator.user(first_name="Kim")
    therapist = await person_by_telegram_id(bot, 8001)
    therapist_identity = Identity(8001, "Jan", Role.THERAPIST, therapist.id, "en", "Europe/Amsterdam")
    await join(other, await client_token(bot, therapist_identity, alias="Kim"))
    await therapist_chat.next_message()
    await other.send("/consent")
    await other.press("Withdraw my consent", await other.next_message())
    await other.press("Withdraw", await other.next_message())
    await other.next_message()
    await therapist_chat.next_message()  # withdrawn notice

    await bot.stop()
    async with db_sessions.begin() as session:  # as if both had agreed to an earlier text
        await session.execute(update(ConsentRecord).values(consent_version="2025-01-1"))
    await bot.start()

    notice = await client.next_message(timeout=10)
    assert says(notice, "outbox.consent_new_version", version=current)
    await bot.restart()  # another start-up (or instance): no second notice
    await bot.job_ran("consent:new-version")
    await bot.outbox_settled()
    await client.expect_silence(0.1)
    await other.expect_silence(0.1)
    person = await person_by_telegram_id(bot, client.id)
    assert await services(bot).consent.has_active_consent(person.id), "the earlier grant is in force"

    await client.send("/consent")
    status = await client.next_message()
    assert "You agreed to version 2025-01-1 of the consent on" in status.content
    assert f"Since then the text has a new version, {current}." in status.content
    assert labels(status) == ["Read the new version and decide", "Withdraw my consent"]
    await client.press("Read the new version and decide", status)
    text_message = await client.next_message()
    assert f"(version {current})" in text_message.content
    await client.press("I agree", text_message)
    assert says(await client.next_message(), "account.consent.updated", version=current)
    assert (await services(bot).consent.current(person.id)).version == current
    await bot.outbox_settled()  # a notice would have been queued with the change
    await therapist_chat.expect_silence(0.1)  # nothing changed for the therapist

    await client.send("/consent")
    status = await client.next_message()
    assert f"You agreed to version {current} of the consent on" in status.content
    assert "new version" not in status.content and labels(status) == ["Read the consent", "Withdraw my consent"]


async def test_new_version_notices_are_spread_and_queued_once(bot: RunningBot, emulator: BotApiEmulator, db_sessions):
    """Many clients: the notices are due ``per_second`` apart (reminders keep the rate), and
    a second run queues nothing for anyone already told."""
    therapist = await add_person(bot, 8001, Role.THERAPIST, display_name="Dr. Jansen")
    clients = [emulator.user(first_name=f"C{n}") for n in range(5)]
    for client in clients:
        await join(client, await client_token(bot, therapist, alias=client.first_name))
    async with db_sessions.begin() as session:
        await session.execute(update(ConsentRecord).values(consent_version="2025-01-1"))
    # Called here rather than at start-up, so that the rows it queues can be read back.
    consent, outbox = services(bot).consent, services(bot).outbox
    assert await consent.notify_new_version(outbox, per_second=2.0, chunk=2) == 5
    assert await consent.notify_new_version(outbox, per_second=2.0, chunk=2) == 0
    async with db_sessions() as session:
        rows = (
            await session.execute(
                select(OutboxMessage.recipient_id, OutboxMessage.due_at)
                .where(OutboxMessage.content_key == "outbox.consent_new_version")
                .order_by(OutboxMessage.due_at)
            )
        ).all()
    assert len(rows) == 5 and len({r.recipient_id for r in rows}) == 5
    gaps = [(b.due_at - a.due_at).total_seconds() for a, b in zip(rows, rows[1:])]
    assert all(abs(gap - 0.5) < 0.05 for gap in gaps), gaps
