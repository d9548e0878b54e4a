"""Readiness summaries, end to end (the real bot, the emulator, a real database): the listener
a completed check-in calls makes a summary encrypted to the therapist's key, the outbox sends
it as a .age document, it opens with the therapist's identity (pyrage) and with Debian's
`age` binary, and holds the answers, the alias, the colour, the reasons and the saved
questions; no answer is in the database in clear; no summary for a therapist no longer
linked; a therapist without a key is told to register one, and /setkey sends what waited;
/summaries re-sends; /clients shows the colour and dates only.

The check-in conversation is built elsewhere: these tests make the completed ``CheckIn`` row
themselves and call the listener as CheckInService.complete() does, inside its transaction.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select
from sqlalchemy.engine import make_url

from bot.checkins import Answers
from bot.crypto import age
from bot.db.delivery_models import OutboxKind, OutboxMessage
from bot.db.models import (
    Appointment,
    AppointmentKind,
    CheckIn,
    CheckInState,
    ConsentChoice,
    ConsentRecord,
    ExerciseRun,
    Person,
    Role,
    SafetyFlag,
    SafetyFlagKind,
    Summary,
    SummaryState,
    TherapistQuestion,
)
from bot.db.repositories import LinkRepository, PeopleRepository
from bot.db.types import utcnow
from bot.sandbox.emulator import BotApiEmulator
from bot.services.people import Identity
from tests.fixtures_bot import ADMIN_ID, RunningBot
from tests.join_support import add_person, open_chat, says, services

NOTE = "Quokka-7731 <b>bold</b> & <script>alert(1)</script>"
FULL = {
    "distress": 8,
    "stressors": ["relationships", "work"],
    "sleep": "very_poorly",
    "practice_days": 1,
    "practice_help": "a_little",
    "support": "partly",
    "detached": "sometimes",
    "substances": "no",
    "unsafe": "no",
    "self_harm": "no",
    "ready": 4,
    "note": NOTE,
}


def answers_of(values: dict) -> Answers:
    answers = Answers.empty()
    for question, value in values.items():
        answers = answers.with_answer(question, value)
    return answers


async def linked_client(bot: RunningBot, therapist: Identity, telegram_id: int, alias: str | None = "K7") -> int:
    """A client with consent, linked to ``therapist`` (stored directly; joining is tested elsewhere)."""
    async with services(bot).sessions.begin() as session:
        client = await PeopleRepository(session).add(
            Person(telegram_id=telegram_id, role=Role.CLIENT, language="en", timezone="Europe/Amsterdam", alias=alias)
        )
        await LinkRepository(session).add(therapist.person_id, client.id, utcnow())
        session.add(
            ConsentRecord(
                person_id=client.id,
                consent_version=services(bot).content.text("consent.version"),
                choice=ConsentChoice.GRANTED,
            )
        )
    return client.id


async def complete_check_in(
    bot: RunningBot,
    client_id: int,
    therapist_id: int | None,
    values: dict | None = None,
    *,
    completed_at: datetime | None = None,
    appointment_id: int | None = None,
    listen: bool = True,
) -> int:
    """A completed check-in, and the summary listener run in its transaction (as CheckInService.complete does)."""
    async with services(bot).sessions.begin() as session:
        row = CheckIn(
            client_id=client_id,
            therapist_id=therapist_id,
            appointment_id=appointment_id,
            state=CheckInState.COMPLETED,
            answers=answers_of(values or FULL).to_json(),
            completed_at=completed_at or utcnow(),
        )
        session.add(row)
        await session.flush()
        if listen:
            await services(bot).summaries.on_check_in_completed(session, row)
    return row.id


async def summaries_of(bot: RunningBot) -> list[Summary]:
    async with services(bot).sessions() as session:
        return list((await session.scalars(select(Summary).order_by(Summary.created_at))).all())


async def therapist_with_key(bot: RunningBot, emulator: BotApiEmulator, telegram_id: int = 8201):
    identity = await add_person(bot, telegram_id, Role.THERAPIST, display_name="Dr. Jansen")
    chat = await open_chat(emulator.user(telegram_id, first_name="Jan"))
    pair = age.generate()
    await services(bot).therapist_keys.submit(identity, pair.recipient.text)
    return identity, chat, pair


def _age_binary() -> str:
    found = shutil.which("age")
    if not found:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("the age binary is missing: CI installs it (.ci/run)")
        pytest.skip("the age binary is not installed (apt-get install age)")
    return found


def opened_with_age_binary(data: bytes, pair: age.KeyPair, tmp_path: Path) -> str:
    (tmp_path / "key.txt").write_text(pair.identity_file)
    (tmp_path / "summary.html.age").write_bytes(data)
    result = subprocess.run(
        [_age_binary(), "-d", "-i", str(tmp_path / "key.txt"), str(tmp_path / "summary.html.age")],
        capture_output=True, check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.decode("utf-8")


async def test_a_completed_check_in_reaches_the_therapist_as_an_encrypted_document(
    bot: RunningBot, emulator: BotApiEmulator, database_url: str, tmp_path: Path
):
    therapist, chat, pair = await therapist_with_key(bot, emulator)
    client_id = await linked_client(bot, therapist, 8301, alias="K7")
    # What else the summary shows: an earlier check-in, practice, a /learn question, a flag.
    now = utcnow()
    await complete_check_in(
        bot, client_id, therapist.person_id, {**FULL, "distress": 3, "ready": 8, "note": ""},
        completed_at=now - timedelta(days=7), listen=False,
    )
    async with services(bot).sessions.begin() as session:
        session.add(ExerciseRun(client_id=client_id, exercise="breathing", started_at=now - timedelta(days=2),
                                ended_at=now - timedelta(days=2), distress_before="7", distress_after="4"))
        session.add(ExerciseRun(client_id=client_id, exercise="grounding", started_at=now - timedelta(days=1),
                                ended_at=now - timedelta(days=1), distress_before="6", distress_after="5"))
        session.add(TherapistQuestion(client_id=client_id, module_id="safety", page=2))
        session.add(SafetyFlag(client_id=client_id, kind=SafetyFlagKind.MEMORY_WORK.value, note="Walrus <i>note</i>"))
        appointment = Appointment(
            therapist_id=therapist.person_id, client_id=client_id, kind=AppointmentKind.IMRS,
            starts_at=datetime(2031, 3, 28, 13, 30, tzinfo=UTC), ends_at=datetime(2031, 3, 28, 14, 30, tzinfo=UTC),
            timezone="Europe/Amsterdam",
        )
        session.add(appointment)
        await session.flush()
        appointment_id = appointment.id

    check_in_id = await complete_check_in(bot, client_id, therapist.person_id, appointment_id=appointment_id)

    document = await chat.wait_for(lambda m: m.document is not None)
    today = utcnow().astimezone(ZoneInfo("Europe/Amsterdam")).strftime("%Y-%m-%d")
    assert document.document.file_name == f"K7-{today}.html.age"
    assert pair.fingerprint in document.caption and "K7" in document.caption
    assert not document.protect_content  # the therapist must be able to save it to open it
    for clinical in ("Quokka", "8 of 10", "red", "relationships"):
        assert clinical not in document.caption
    data = document.document.data
    assert data.startswith(age.AGE_HEADER)

    page = age.decrypt(data, pair.identity_file).decode("utf-8")
    assert opened_with_age_binary(data, pair, tmp_path) == page
    assert "Readiness summary: K7" in page
    assert "🔴 red" in page
    for reason in ("Distress is 7 or higher", "Relationships or conflict among this week", "Sometimes feels detached",
                   "Practised on 1 day or fewer"):
        assert reason in page, reason
    for answer in ("8 of 10", "work, relationships or conflict", "very poorly", "1 of 7", "a little", "partly"):
        assert answer in page, answer
    assert "Quokka-7731 &lt;b&gt;bold&lt;/b&gt; &amp; &lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<script" not in page and "Walrus &lt;i&gt;note&lt;/i&gt;" in page
    assert "ImRS, 2031-03-28 14:30 (Europe/Amsterdam)" in page  # in the therapist's zone
    assert "Would like to talk about" in page  # the /learn question
    assert "Practised on 2 of the last 14 days (2 exercises)" in page
    assert "Average distress drop during an exercise: 2 points" in page
    assert "<svg" in page and "<polyline" in page  # the trend: the earlier check-in and this one
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "") and "https://" not in page
    assert "src=" not in page and "<link" not in page

    async with services(bot).sessions() as session:
        (summary,) = (await session.scalars(select(Summary))).all()
        assert summary.check_in_id == check_in_id and summary.state is SummaryState.QUEUED
        assert summary.recipient_fingerprint == pair.fingerprint and summary.therapist_id == therapist.person_id
        rows = (await session.scalars(select(OutboxMessage).where(OutboxMessage.kind == OutboxKind.SUMMARY))).all()
        assert [(r.idempotency_key, r.params, r.subject_id) for r in rows] == [
            (f"summary:{summary.id}", {"summary": summary.id}, client_id)
        ]
        check_in = await session.get(CheckIn, check_in_id)
        assert '"colour":"red"' in check_in.readiness
        question = (await session.scalars(select(TherapistQuestion))).one()
        flag = (await session.scalars(select(SafetyFlag))).one()
        assert question.included_in_summary_at is not None and flag.included_in_summary_at is not None

    # Nothing the client answered is in the database in clear (SQLite: the file itself).
    if make_url(database_url).get_backend_name() == "sqlite":
        await bot.stop()
        path = Path(make_url(database_url).database)
        raw = b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))
        assert b"Quokka" not in raw and b"relationships" not in raw and b"high_distress" not in raw
        assert b"Walrus" not in raw


async def test_no_summary_for_a_therapist_no_longer_linked_or_none(bot: RunningBot, emulator: BotApiEmulator):
    therapist, chat, _ = await therapist_with_key(bot, emulator)
    client_id = await linked_client(bot, therapist, 8302)
    async with services(bot).sessions.begin() as session:
        link = await LinkRepository(session).active(therapist.person_id, client_id)
        link.ended_at = utcnow()
    ended = await complete_check_in(bot, client_id, therapist.person_id)
    nobody = await complete_check_in(bot, client_id, None)
    assert await summaries_of(bot) == []
    async with services(bot).sessions() as session:
        for check_in_id in (ended, nobody):  # the readiness is stored all the same
            assert '"colour":"red"' in (await session.get(CheckIn, check_in_id)).readiness
        assert (await session.scalars(select(OutboxMessage).where(OutboxMessage.kind == OutboxKind.SUMMARY))).all() == []


async def test_a_therapist_without_a_key_is_asked_for_one_and_then_receives_it(
    bot: RunningBot, emulator: BotApiEmulator, tmp_path: Path
):
    therapist = await add_person(bot, 8203, Role.THERAPIST, display_name="Dr. Smit")
    chat = await open_chat(emulator.user(8203, first_name="Sam"))
    client_id = await linked_client(bot, therapist, 8303, alias="R2")
    await complete_check_in(bot, client_id, therapist.person_id, {**FULL, "distress": 2, "stressors": [], "detached": "no",
                                                                   "practice_days": 5, "ready": 9})
    (waiting,) = await summaries_of(bot)
    assert waiting.state is SummaryState.WAITING_FOR_KEY and waiting.ciphertext is None

    notice = await chat.next_message()
    assert says(notice, "summary.waiting_notice", alias="R2") and "/setkey" in notice.text
    assert "Quokka" not in notice.text and "green" not in notice.text

    pair = age.generate()
    await chat.send(f"/setkey {pair.recipient.text}")
    assert says(await chat.next_message(), "setkey.set", fingerprint=pair.fingerprint)
    assert says(await chat.next_message(), "setkey.released", count=1)
    document = await chat.wait_for(lambda m: m.document is not None)
    page = age.decrypt(document.document.data, pair.identity_file).decode()
    assert "Readiness summary: R2" in page and "🟢 green" in page and "No rule applied." in page
    assert "No appointment ahead" in page  # completed without one: still sent, marked as such
    assert opened_with_age_binary(document.document.data, pair, tmp_path) == page
    (sent,) = await summaries_of(bot)
    assert sent.state is SummaryState.QUEUED and sent.recipient_fingerprint == pair.fingerprint

    # A new key re-encrypts nothing: /summaries sends the same file, still for the first key.
    newer = age.generate()
    await chat.send(f"/setkey {newer.recipient.text}")
    confirm = await chat.next_message()
    assert says(confirm, "setkey.confirm", old=pair.fingerprint, new=newer.fingerprint)
    await chat.press(0, confirm)
    replaced = await chat.next_message()
    assert says(replaced, "setkey.replaced", fingerprint=newer.fingerprint) and "Nothing made before" in replaced.text
    await chat.send("/summaries")
    assert says(await chat.next_message(), "summary.resent", count=1)
    again = await chat.wait_for(lambda m: m.document is not None and m.message_id != document.message_id)
    assert again.document.data == document.document.data and pair.fingerprint in again.caption


async def test_summaries_resends_waiting_counts_and_is_refused_to_others(bot: RunningBot, emulator: BotApiEmulator):
    therapist = await add_person(bot, 8204, Role.THERAPIST, display_name="Dr. Bos")
    chat = await open_chat(emulator.user(8204, first_name="Bo"))
    await chat.send("/summaries")
    assert says(await chat.next_message(), "summary.none")
    client_id = await linked_client(bot, therapist, 8304)
    await complete_check_in(bot, client_id, therapist.person_id)
    assert says(await chat.next_message(), "summary.waiting_notice", alias="K7")
    await chat.send("/summaries")
    assert says(await chat.next_message(), "summary.none")
    assert says(await chat.next_message(), "summary.waiting", count=1)

    await add_person(bot, 8404, Role.STAFF, display_name="Staff")
    for telegram_id in (8404, 8304, ADMIN_ID):
        other = await open_chat(emulator.user(telegram_id, first_name="Other"))
        await other.send("/summaries")
        assert (await other.next_message()).text.startswith("Sorry, that is not available to you.")


async def test_clients_shows_the_colour_and_dates_and_no_answers(bot: RunningBot, emulator: BotApiEmulator):
    therapist, chat, _ = await therapist_with_key(bot, emulator, 8205)
    client_id = await linked_client(bot, therapist, 8305, alias="M3")
    await linked_client(bot, therapist, 8306, alias="N4")
    completed = datetime(2026, 11, 20, 23, 30, tzinfo=UTC)  # 21 November in Amsterdam
    await complete_check_in(bot, client_id, therapist.person_id, completed_at=completed)
    await chat.wait_for(lambda m: m.document is not None)
    async with services(bot).sessions.begin() as session:
        session.add(Appointment(
            therapist_id=therapist.person_id, client_id=client_id, kind=AppointmentKind.IMRS,
            starts_at=datetime(2031, 3, 28, 13, 30, tzinfo=UTC), ends_at=datetime(2031, 3, 28, 14, 30, tzinfo=UTC),
            timezone="Europe/Amsterdam",
        ))
    await chat.send("/clients")
    listing = await chat.next_message()
    m3 = next(line for line in listing.text.splitlines() if "M3" in line)
    n4 = next(line for line in listing.text.splitlines() if "N4" in line)
    assert "readiness 🔴 red" in m3 and "last check-in 2026-11-21" in m3 and "next appointment 2031-03-28 14:30" in m3
    assert "readiness" not in n4 and "check-in" not in n4
    await chat.press("M3", listing)
    page = await chat.wait_for_edit(listing)
    assert "Last readiness: 🔴 red" in page.text and "Last check-in: 2026-11-21" in page.text
    for text in (listing.text, page.text):
        for clinical in ("Quokka", "8 of 10", "Distress", "relationships", "high_distress"):
            assert clinical not in text
