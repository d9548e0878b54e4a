"""/checkin (issue 13) through the emulator on a real database: the whole check-in answered,
reviewed and sent (stored encrypted, the prompt and reminder withdrawn, the listeners run in
the same transaction); Back; bad input re-prompted; save and finish later, resumed hours
later; a restart in the middle; /cancel keeps nothing of a draft; self-harm yes goes at once
to the crisis path and back; unsafe yes alerts the therapist; a note with risk language takes
the crisis path and is not stored; the prompt's button; /mydata and /delete."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from bot.checkins import QUESTIONS, Answers
from bot.db.delivery_models import OutboxKind, OutboxMessage
from bot.db.models import AppointmentKind, CheckIn, CheckInState, ExerciseRun, Role, SafetyFlag
from bot.db.types import utcnow
from bot.delivery.buttons import CHECK_IN_START
from bot.sandbox.emulator import BotApiEmulator
from bot.sandbox.emulator.people import SimUser
from bot.sandbox.emulator.records import BotMessage
from bot.services.checkins import REVIEW, help_from_drop
from bot.services.invites import NotAllowed
from bot.services.people import Identity
from tests.fixtures_bot import RunningBot
from tests.join_support import add_person, client_token, content, join, labels, open_chat, plain, says, services
from tests.test_privacy_journey import raw_database_text

AMSTERDAM = ZoneInfo("Europe/Amsterdam")
NOTE = "Qzx7 I would like to talk about the evenings first"
RISK = "I want to kill myself tonight"


async def client_and_therapist(bot: RunningBot, emulator: BotApiEmulator) -> tuple[SimUser, SimUser, Identity]:
    therapist = await add_person(bot, 8001, Role.THERAPIST, display_name="Dr. Jansen")
    therapist_chat = await open_chat(emulator.user(8001, first_name="Jan"))
    client = emulator.user(8101, first_name="Sam", language_code="en")
    assert says(await join(client, await client_token(bot, therapist, alias="K7")), "client_join.done", zone="Europe/Amsterdam")
    await therapist_chat.next_message()  # the joined notice
    return client, therapist_chat, therapist


async def me(bot: RunningBot, client: SimUser) -> Identity:
    return await services(bot).people.identify(client.id, "Sam", "en")


async def appointment(bot: RunningBot, therapist: Identity, client: SimUser, *, days: int = 3,
                      kind: AppointmentKind = AppointmentKind.IMRS) -> int:
    when = (datetime.now(UTC) + timedelta(days=days)).astimezone(AMSTERDAM).replace(hour=10, minute=0)
    made = await services(bot).appointments.create(
        therapist, (await me(bot, client)).person_id, when.strftime("%Y-%m-%d %H:%M"), kind
    )
    notice = await client.next_message(timeout=10)  # the client is told, through the outbox
    assert notice.content.startswith("Your therapist has planned an appointment with you"), notice.content
    return made.id


async def check_ins(bot: RunningBot) -> list[CheckIn]:
    async with services(bot).sessions() as session:
        return list(await session.scalars(select(CheckIn)))


def is_question(message: BotMessage, question: str) -> bool:
    number = QUESTIONS.index(question) + 1
    return message.content.startswith(f"Question {number} of 12")


async def question(client: SimUser, name: str) -> BotMessage:
    message = await client.next_message()
    assert is_question(message, name), (name, message.content)
    return message


async def begin(client: SimUser) -> BotMessage:
    await client.send("/checkin")
    intro = await client.next_message()
    assert says(intro, "checkin.intro"), intro.content
    return intro


async def answer_up_to_note(client: SimUser) -> BotMessage:
    """From question 1 (already shown) to the note question; its message."""
    first = client.last_message
    assert first is not None and is_question(first, "distress")
    await client.press("4", first)
    stressors = await question(client, "stressors")
    await client.press("Work or study", stressors)
    await client.wait_for_edit(stressors)
    assert "✓ Work or study" in labels(stressors)
    await client.press("Money", stressors)
    await client.wait_for_edit(stressors)
    await client.press("Done", stressors)
    await client.press("Poorly", await question(client, "sleep"))
    days = await question(client, "practice_days")
    assert "Your practice log shows exercises on 0 of the last 7 days" in days.content
    await client.press("That's right", days)
    await client.press("That's right", await question(client, "practice_help"))
    await client.press("Yes", await question(client, "support"))
    await client.press("Sometimes", await question(client, "detached"))
    await client.press("No", await question(client, "substances"))
    await client.press("No", await question(client, "unsafe"))
    await client.press("No", await question(client, "self_harm"))
    await client.press("6", await question(client, "ready"))
    note = await question(client, "note")
    assert "do not describe the memory itself" in note.content
    return note


async def test_a_whole_check_in_is_reviewed_sent_and_stored_encrypted(
    bot: RunningBot, emulator: BotApiEmulator, database_url: str
):
    client, therapist_chat, therapist = await client_and_therapist(bot, emulator)
    appointment_id = await appointment(bot, therapist, client)
    person = await me(bot, client)
    # The prompt and its reminder, as the appointments service queues them (not due yet).
    for suffix in ("prompt", "reminder"):
        await services(bot).outbox.enqueue(
            person.person_id, kind=OutboxKind.CHECK_IN_PROMPT, idempotency_key=f"checkin:{appointment_id}:x:{suffix}",
            content_key="outbox.check_in_prompt", params={"day": "Monday"}, due_at=utcnow() + timedelta(days=2),
        )
    heard: list[tuple[int, str, bool]] = []

    async def listener(session, row: CheckIn) -> None:
        pending = await session.scalar(select(OutboxMessage.id).where(OutboxMessage.idempotency_key.like("checkin:%")))
        heard.append((row.id, row.state, pending is None))

    services(bot).checkins.listeners.append(listener)

    intro = await begin(client)
    assert "It is for your appointment on" in intro.content
    await question(client, "distress")
    note = await answer_up_to_note(client)
    await client.send(NOTE)
    review = await client.next_message()
    assert says(review, "checkin.review")
    for line in ("Distress now: 4", "Weighed on you this week: Work or study, Money", "Sleep: Poorly",
                 "Days practised: 0 of 7 days", "How much practising helped: I did not practise",
                 "Feeling unsafe: No", "Ready for the session: 6", f"Note for your therapist: {NOTE}"):
        assert line in review.content, line
    assert labels(review) == ["Send to my therapist", "Change an answer", "↩ Back", "💾 Save and finish later"]
    [draft] = await check_ins(bot)
    assert draft.state == CheckInState.DRAFT and draft.step == REVIEW and draft.appointment_id == appointment_id

    await client.press("Send to my therapist", review)
    sent = await client.next_message()
    assert says(sent, "checkin.sent") and "can't" not in sent.content and "cannot" not in sent.content
    [done] = await check_ins(bot)
    assert done.state == CheckInState.COMPLETED and done.completed_at is not None
    assert done.therapist_id == therapist.person_id
    answers = Answers.from_json(done.answers)
    assert answers.complete and answers.get("stressors") == ("work", "money") and answers.get("note") == NOTE
    assert heard == [(done.id, CheckInState.COMPLETED, True)], "the listener ran after the withdrawal, in the transaction"
    async with services(bot).sessions() as session:
        left = list(await session.scalars(select(OutboxMessage).where(OutboxMessage.idempotency_key.like("checkin:%"))))
    assert left == [], "the prompt and the reminder are withdrawn"

    stored = await raw_database_text(database_url, bot)
    assert b"Qzx7" not in stored and b'"distress"' not in stored and b"evenings first" not in stored


async def test_back_changes_the_previous_answer_and_typed_text_at_a_button_step_re_asks(
    bot: RunningBot, emulator: BotApiEmulator
):
    client, _, _ = await client_and_therapist(bot, emulator)
    await begin(client)
    first = await question(client, "distress")
    assert labels(first)[:11] == [str(n) for n in range(11)] and "↩ Back" not in labels(first)
    await client.send("about a seven")  # typed at a button step
    assert says(await client.next_message(), "checkin.use_buttons")
    again = await question(client, "distress")
    await client.press("8", again)
    stressors = await question(client, "stressors")
    await client.press("↩ Back", stressors)
    back = await question(client, "distress")
    assert "Your answer now: 8" in back.content
    await client.press("3", back)
    await client.press("Done", await question(client, "stressors"))  # none: allowed
    await question(client, "sleep")
    [row] = await check_ins(bot)
    answers = Answers.from_json(row.answers)
    assert answers.get("distress") == 3 and answers.get("stressors") == () and row.step == "sleep"


async def test_a_note_over_1000_characters_is_refused_and_nothing_kept(bot: RunningBot, emulator: BotApiEmulator):
    client, _, _ = await client_and_therapist(bot, emulator)
    await begin(client)
    await question(client, "distress")
    await answer_up_to_note(client)
    await client.send("Qzx8 " + "x" * 1000)
    refused = await client.next_message()
    assert says(refused, "checkin.note_too_long", length=1005, max=1000)
    assert labels(refused) == ["No note", "↩ Back", "💾 Save and finish later"]
    [row] = await check_ins(bot)
    assert "note" not in Answers.from_json(row.answers) and row.step == "note"
    await client.press("No note", refused)
    review = await client.next_message()
    assert "Note for your therapist: No note" in review.content


async def test_saved_for_later_resumes_hours_later_and_cancel_keeps_a_saved_one(
    bot: RunningBot, emulator: BotApiEmulator
):
    client, _, therapist = await client_and_therapist(bot, emulator)
    await appointment(bot, therapist, client, days=5)
    await begin(client)
    await client.press("5", await question(client, "distress"))
    stressors = await question(client, "stressors")
    await client.press("💾 Save and finish later", stressors)
    assert says(await client.next_message(), "checkin.saved")
    [row] = await check_ins(bot)
    assert row.state == CheckInState.SAVED

    checkins = services(bot).checkins
    checkins.clock = lambda: utcnow() + timedelta(hours=9)  # hours later, still before the appointment
    await client.send("/checkin")
    offer = await client.next_message()
    assert says(offer, "checkin.resume_saved", answered=1, total=12)
    assert labels(offer) == ["Continue where I left off", "Start again"]
    await client.press("Continue where I left off", offer)
    await question(client, "stressors")
    await client.send("/cancel")
    assert says(await client.next_message(), "checkin.cancelled_saved")
    [kept] = await check_ins(bot)
    assert kept.state == CheckInState.SAVED and Answers.from_json(kept.answers).get("distress") == 5

    # After the appointment has begun, what was saved for it is out of date: a new one begins.
    checkins.clock = lambda: utcnow() + timedelta(days=6)
    await begin(client)
    await question(client, "distress")
    [fresh] = await check_ins(bot)
    assert fresh.id != kept.id and fresh.appointment_id is None and Answers.from_json(fresh.answers).values == {}


async def test_start_again_and_cancel_keep_nothing_of_a_draft(bot: RunningBot, emulator: BotApiEmulator):
    client, _, _ = await client_and_therapist(bot, emulator)
    intro = await begin(client)
    assert says(intro, "checkin.intro") and "There is no appointment in the calendar" in intro.content
    await client.press("7", await question(client, "distress"))
    await question(client, "stressors")
    await client.send("/checkin")
    offer = await client.next_message()
    assert says(offer, "checkin.resume", answered=1, total=12)
    await client.press("Start again", offer)
    assert says(await client.next_message(), "checkin.intro")
    await question(client, "distress")
    [row] = await check_ins(bot)
    assert Answers.from_json(row.answers).values == {}
    await client.send("stop")
    assert says(await client.next_message(), "checkin.cancelled")
    assert await check_ins(bot) == []


async def test_a_restart_in_the_middle_resumes_at_the_same_question(bot: RunningBot, emulator: BotApiEmulator):
    client, _, _ = await client_and_therapist(bot, emulator)
    await begin(client)
    await client.press("2", await question(client, "distress"))
    await client.press("Done", await question(client, "stressors"))
    sleep = await question(client, "sleep")
    await bot.restart()
    await client.send("some words")  # the state survived: this step still expects buttons
    assert says(await client.next_message(), "checkin.use_buttons")
    await question(client, "sleep")
    await client.press("Well", sleep)
    await question(client, "practice_days")
    [row] = await check_ins(bot)
    assert Answers.from_json(row.answers).get("sleep") == "well"


async def test_self_harm_yes_goes_at_once_to_the_crisis_path_alerts_and_lets_the_client_come_back(
    bot: RunningBot, emulator: BotApiEmulator
):
    client, therapist_chat, _ = await client_and_therapist(bot, emulator)
    await begin(client)
    await question(client, "distress")
    note = await answer_up_to_note(client)
    await client.press("↩ Back", note)
    await client.press("↩ Back", await question(client, "ready"))
    self_harm = await question(client, "self_harm")
    await client.press("Yes", self_harm)
    confirmed = await client.next_message()
    assert says(confirmed, "safety.crisis.confirmed")
    assert says(await client.next_message(), "safety.crisis.instructions")
    assert says(await client.next_message(), "safety.crisis.therapist_alerted")
    assert says(await client.next_message(), "safetyplan.none")
    way_back = await client.next_message()
    assert says(way_back, "checkin.after_crisis") and labels(way_back) == ["↩ Back to where I was", "End it"]
    alert = await therapist_chat.wait_for(lambda m: "may need contact" in m.content, timeout=10)
    assert alert.content.startswith("K7 may need contact.")
    async with services(bot).sessions() as session:
        assert [f.kind for f in await session.scalars(select(SafetyFlag))] == ["risk"]

    await client.press("↩ Back to where I was", way_back)  # on at the first question not answered
    await question(client, "note")
    [row] = await check_ins(bot)
    assert Answers.from_json(row.answers).get("self_harm") == "yes"


async def test_unsafe_yes_alerts_the_therapist_without_clinical_content(bot: RunningBot, emulator: BotApiEmulator):
    client, therapist_chat, _ = await client_and_therapist(bot, emulator)
    await begin(client)
    await question(client, "distress")
    await answer_up_to_note(client)
    [row] = await check_ins(bot)
    await services(bot).checkins.back(await me(bot, client), "self_harm")  # as ↩ Back from self_harm would
    await client.send("/checkin")
    await client.press("Continue where I left off", await client.next_message())
    unsafe = await question(client, "unsafe")
    await client.press("Yes", unsafe)
    told = await client.next_message()
    assert says(told, "checkin.unsafe_alerted")
    await question(client, "note")  # on to the first question not answered yet
    alert = await therapist_chat.wait_for(lambda m: "safety concern" in m.content, timeout=10)
    assert alert.content.startswith("K7 flagged a safety concern in their check-in.")
    assert "home" not in alert.content and "unsafe" not in alert.content
    # Answered yes again (after Back): no second alert.
    assert await services(bot).safety_flags.unsafe_reported(await me(bot, client), row.id) is None
    async with services(bot).sessions() as session:
        flags = list(await session.scalars(select(SafetyFlag)))
    assert [(f.kind, f.alerted_at is not None) for f in flags] == [("unsafe", True)]


async def test_a_note_with_risk_language_takes_the_crisis_path_and_is_not_stored(
    bot: RunningBot, emulator: BotApiEmulator, database_url: str
):
    client, _, _ = await client_and_therapist(bot, emulator)
    await begin(client)
    await question(client, "distress")
    await answer_up_to_note(client)
    await client.send(RISK)
    asked = await client.next_message()
    assert says(asked, "safety.crisis.question")
    await client.press("No, I'm OK", asked)
    denied = await client.next_message()
    assert says(denied, "safety.crisis.denied") and "↩ Back to where I was" in labels(denied)
    [row] = await check_ins(bot)
    assert "note" not in Answers.from_json(row.answers)
    assert b"kill myself" not in await raw_database_text(database_url, bot)
    await client.press("↩ Back to where I was", denied)
    await question(client, "note")
    await client.send(NOTE)
    assert says(await client.next_message(), "checkin.review")


async def test_the_prompt_button_starts_the_check_in_and_is_refused_to_anyone_else(
    bot: RunningBot, emulator: BotApiEmulator
):
    client, therapist_chat, therapist = await client_and_therapist(bot, emulator)
    appointment_id = await appointment(bot, therapist, client)
    person = await me(bot, client)
    await services(bot).outbox.enqueue(
        person.person_id, kind=OutboxKind.CHECK_IN_PROMPT, idempotency_key=f"checkin:{appointment_id}:x:prompt",
        content_key="outbox.check_in_prompt", params={"day": "Monday"},
    )
    prompt = await client.next_message(timeout=10)
    assert says(prompt, "outbox.check_in_prompt", day="Monday") and labels(prompt) == ["Start my check-in"]
    row = await services(bot).outbox.get(f"checkin:{appointment_id}:x:prompt")

    denied = content.text("access.denied", "en")
    other = emulator.user(8102, first_name="Kim", language_code="en")
    assert says(await join(other, await client_token(bot, therapist, alias="K8")), "client_join.done", zone="Europe/Amsterdam")
    codec = services(bot).callbacks
    # Someone else's payload (signed for them, naming the client's prompt), and the client's own
    # payload pressed by someone else: both refused, nothing begun.
    for pressed_by, payload in [(other, codec.pack(other.id, CHECK_IN_START, row.id)),
                                (other, codec.pack(client.id, CHECK_IN_START, row.id)),
                                (therapist_chat, codec.pack(therapist_chat.id, CHECK_IN_START, row.id))]:
        query = await pressed_by.press_data(payload, prompt)
        assert (await pressed_by.wait_for_callback_answer(query)).text == denied
    assert await check_ins(bot) == []

    await client.press("Start my check-in", prompt)
    assert says(await client.next_message(), "checkin.intro")
    await question(client, "distress")
    assert labels(prompt) == []
    [started] = await check_ins(bot)
    assert started.appointment_id == appointment_id


async def test_practice_is_suggested_from_the_log_of_the_last_seven_days(bot: RunningBot, emulator: BotApiEmulator):
    client, _, _ = await client_and_therapist(bot, emulator)
    person = await me(bot, client)
    now = utcnow()
    async with services(bot).sessions.begin() as session:
        for days_ago, before, after in [(0, "7", "3"), (0, "6", "2"), (2, "5", "2"), (9, "9", "0")]:
            session.add(ExerciseRun(client_id=person.person_id, exercise="breathing", started_at=now - timedelta(days=days_ago),
                                    distress_before=before, distress_after=after, ended_at=now))
    suggested = await services(bot).checkins.suggestions(person)
    assert suggested.days == 2 and suggested.average_drop == pytest.approx(11 / 3) and suggested.help == "somewhat"
    await begin(client)
    await client.press("3", await question(client, "distress"))
    await client.press("Done", await question(client, "stressors"))
    await client.press("Well", await question(client, "sleep"))
    days = await question(client, "practice_days")
    assert "exercises on 2 of the last 7 days" in days.content
    await client.press("Change it", days)
    grid = await question(client, "practice_days")
    assert labels(grid)[:8] == [str(n) for n in range(8)]
    await client.press("3", grid)
    helped = await question(client, "practice_help")
    assert "I have filled in: Somewhat" in helped.content
    await client.press("That's right", helped)
    await question(client, "support")
    [row] = await check_ins(bot)
    assert Answers.from_json(row.answers).get("practice_days") == 3
    assert Answers.from_json(row.answers).get("practice_help") == "somewhat"


def test_help_is_suggested_from_the_average_drop():
    assert help_from_drop(0, None) == "did_not_practise"
    assert help_from_drop(3, None) == "not_at_all"
    assert help_from_drop(3, -1.0) == "not_at_all"
    assert help_from_drop(3, 1.5) == "a_little"
    assert help_from_drop(3, 2.0) == "somewhat"
    assert help_from_drop(3, 4.0) == "a_lot"


async def test_a_failing_listener_leaves_the_check_in_not_completed_and_only_the_client_acts(
    bot: RunningBot, emulator: BotApiEmulator
):
    client, _, therapist = await client_and_therapist(bot, emulator)
    appointment_id = await appointment(bot, therapist, client)
    person = await me(bot, client)
    await services(bot).outbox.enqueue(
        person.person_id, kind=OutboxKind.CHECK_IN_PROMPT, idempotency_key=f"checkin:{appointment_id}:x:reminder",
        content_key="outbox.check_in_reminder", params={"day": "Monday"}, due_at=utcnow() + timedelta(days=2),
    )
    service = services(bot).checkins
    view = await service.start(person)
    for question_name, value in [("distress", 2), ("stressors", ()), ("sleep", "well"), ("practice_days", 1),
                                 ("practice_help", "a_little"), ("support", "yes"), ("detached", "no"),
                                 ("substances", "no"), ("unsafe", "no"), ("self_harm", "no"), ("ready", 8), ("note", "")]:
        view = await service.answer(person, question_name, value)
    assert view.step == REVIEW

    async def failing(session, row) -> None:
        raise RuntimeError("the summary could not be made")

    service.listeners.append(failing)
    with pytest.raises(RuntimeError):
        await service.complete(person)
    [row] = await check_ins(bot)
    assert row.state == CheckInState.DRAFT and row.completed_at is None and row.therapist_id is None
    assert await services(bot).outbox.get(f"checkin:{appointment_id}:x:reminder") is not None, "rolled back too"

    for actor in (therapist, Identity(9999, "x", None, None, "en", "Europe/Amsterdam")):
        with pytest.raises(NotAllowed):
            await service.start(actor)
        with pytest.raises(NotAllowed):
            await service.complete(actor)
    service.listeners.remove(failing)
    assert (await service.complete(person)).state == CheckInState.COMPLETED


async def test_mydata_holds_the_check_in_decrypted_and_delete_erases_it(bot: RunningBot, emulator: BotApiEmulator):
    client, _, _ = await client_and_therapist(bot, emulator)
    await begin(client)
    await question(client, "distress")
    await answer_up_to_note(client)
    await client.send(NOTE)
    await client.press("Send to my therapist", await client.next_message())
    assert says(await client.next_message(), "checkin.sent_no_appointment")

    await client.send("/mydata")
    export = await client.wait_for(lambda m: m.document is not None)
    (row,) = json.loads(export.document.data)["tables"]["check_ins"]
    assert json.loads(row["answers"])["note"] == NOTE and row["state"] == "completed"

    await client.send("/delete")
    await client.press("Yes, delete everything", await client.next_message())
    await client.press("Delete for good", await client.next_message())
    assert says(await client.next_message(), "account.delete.done")
    assert await check_ins(bot) == []


def test_the_texts_never_say_the_session_cannot_go_ahead():
    for language in ("en", "nl"):
        for key in ("checkin.sent", "checkin.sent_no_appointment"):
            words = plain(content.text(key, language)).lower()
            assert "can't" not in words and "cannot" not in words and "niet door" not in words
