"""Issue 13's whole journey through the emulator, every step typed or pressed in the chat: the
therapist registers an age key with /setkey and sets an ImRS appointment with /appointments;
the client is told, gets the check-in prompt (the appointment is less than 24 hours ahead, so
at once), presses "Start my check-in", answers every question and sends it; the therapist
receives the summary as a .age document. The test opens it with the therapist's identity
(pyrage) and with Debian's age binary and finds the answers in it; neither the database (its
raw files on SQLite, every text and binary column on PostgreSQL) nor the logs hold an answer
or the note in clear."""

from __future__ import annotations

import io
import logging
from datetime import timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlalchemy import select

from bot.crypto import age
from bot.db.models import CheckIn, CheckInState, Role, Summary, SummaryState
from bot.db.types import utcnow
from bot.logs import PrivacyFilter
from bot.sandbox.emulator import BotApiEmulator
from tests.fixtures_bot import RunningBot
from tests.join_support import add_person, client_token, join, labels, open_chat, says, services
from tests.test_checkin import answer_up_to_note, question
from tests.test_privacy_journey import raw_database_text
from tests.test_summaries import opened_with_age_binary

AMSTERDAM = ZoneInfo("Europe/Amsterdam")
NOTE = "Qzx Journeynote: the evenings are the hardest part"


async def test_key_appointment_prompt_check_in_and_the_encrypted_summary(
    bot: RunningBot, emulator: BotApiEmulator, database_url: str, tmp_path: Path
):
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(PrivacyFilter(token=emulator.token))
    root = logging.getLogger()
    root.addHandler(handler)
    old_level = root.level
    root.setLevel(logging.DEBUG)
    try:
        page = await journey(bot, emulator, tmp_path)
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)

    # The therapist's copy holds the answers ...
    assert "Readiness summary: K7" in page
    for answer in ("4 of 10", "work, money", "poorly", "sometimes", "6 of 10", NOTE):
        assert answer in page, answer
    assert "ImRS" in page, "the appointment it was for"
    # ... and nothing else does.
    async with services(bot).sessions() as session:
        [done] = (await session.scalars(select(CheckIn))).all()
        [summary] = (await session.scalars(select(Summary))).all()
    assert done.state == CheckInState.COMPLETED and done.appointment_id is not None
    assert summary.state is SummaryState.QUEUED and summary.check_in_id == done.id
    stored = await raw_database_text(database_url, bot)
    for clear in (b"Journeynote", b"evenings are the hardest", b'"stressors"', b'"distress"'):
        assert clear not in stored, clear
    logged = stream.getvalue()
    assert logged and "Journeynote" not in logged and "evenings are the hardest" not in logged


async def journey(bot: RunningBot, emulator: BotApiEmulator, tmp_path: Path) -> str:
    identity = await add_person(bot, 8401, Role.THERAPIST, display_name="Dr. Jansen")
    therapist = await open_chat(emulator.user(8401, first_name="Jan"))

    # /setkey: the public half of a key pair made on the therapist's own computer.
    pair = age.generate()
    await therapist.send(f"/setkey {pair.recipient.text}")
    registered = await therapist.wait_for(lambda m: m.content.startswith("Done: this is your encryption key"))
    assert pair.fingerprint in registered.content

    client = emulator.user(8501, first_name="Sam", language_code="en")
    joined = await join(client, await client_token(bot, identity, alias="K7"))
    assert says(joined, "client_join.done", zone="Europe/Amsterdam")
    await therapist.wait_for(lambda m: "K7" in m.content)  # the joined notice

    # /appointments: an ImRS session 20 hours from now, typed in the therapist's zone.
    start = (utcnow() + timedelta(hours=20)).astimezone(AMSTERDAM).replace(second=0, microsecond=0)
    await therapist.send("/appointments")
    listing = await therapist.wait_for(lambda m: "+ New appointment" in labels(m))
    await therapist.press("+ New appointment", listing)
    await therapist.press("K7", await therapist.wait_for(lambda m: says(m, "appointments.choose_client")))
    await therapist.press("ImRS session", await therapist.wait_for(lambda m: "ImRS session" in labels(m)))
    await therapist.wait_for(lambda m: m.content.startswith("New ImRS session"))
    await therapist.send(start.strftime("%Y-%m-%d %H:%M"))
    made = await therapist.wait_for(lambda m: m.content.startswith("Done: ImRS session"))
    assert start.strftime("%H:%M") in made.content

    # The client is told, and the check-in prompt arrives at once (less than 24 hours ahead).
    # Both are due now; the outbox sends them in either order.
    arrived: dict[str, object] = {}
    while len(arrived) < 2:
        message = await client.next_message(timeout=15)
        if message.content.startswith("Your therapist has planned an appointment with you"):
            arrived["notice"] = message
        elif "Start my check-in" in labels(message):
            arrived["prompt"] = message
        else:
            raise AssertionError(f"unexpected: {message.content[:80]}")
    prompt = arrived["prompt"]
    assert start.strftime("%H:%M") in prompt.content, "the day and time in the client's zone"
    await client.press("Start my check-in", prompt)
    assert says(await client.next_message(), "checkin.intro")
    await question(client, "distress")
    await answer_up_to_note(client)
    await client.send(NOTE)
    review = await client.next_message()
    assert says(review, "checkin.review") and NOTE in review.content
    await client.press("Send to my therapist", review)
    assert says(await client.next_message(), "checkin.sent")

    # The summary: a document only the therapist's identity opens, and no clinical caption.
    document = await therapist.wait_for(lambda m: m.document is not None, timeout=20)
    assert document.document.file_name.startswith("K7-") and document.document.file_name.endswith(".html.age")
    assert "Journeynote" not in (document.caption or "") and "Money" not in (document.caption or "")
    data = document.document.data
    assert data.startswith(age.AGE_HEADER)
    assert b"Journeynote" not in data
    page = age.decrypt(data, pair.identity_file).decode("utf-8")
    assert opened_with_age_binary(data, pair, tmp_path) == page
    other = age.generate()
    try:
        age.decrypt(data, other.identity_file)
    except age.AgeDecryptError:
        pass
    else:
        raise AssertionError("another identity opened the summary")
    return page
