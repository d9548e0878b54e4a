"""The safety layer end to end through the emulator (handlers/safety.py): each route from
outside any flow, from inside a paced exercise (its timer stops; ↩ Back resumes it) and from
inside a multi-step flow; the crisis question carries the crisis lines in the same message,
and "No, I'm OK" never takes them away; "Yes" alerts the therapist with nothing clinical;
a flag for the therapist keeps no narrative; a client's words are stored nowhere."""

from __future__ import annotations

from sqlalchemy import select, text

from bot.db.delivery_models import OutboxMessage
from bot.db.models import AuditEvent, ExerciseRun, Role, SafetyFlag
from bot.sandbox.emulator import BotApiEmulator
from bot.sandbox.emulator.people import SimUser
from handlers.exercises.shared import job_name
from tests.fixtures_bot import RunningBot
from tests.fixtures_emulator import eventually
from tests.join_support import add_person, client_token, content, join, labels, open_chat, plain, says, services
from tests.test_flows import REMINDER, _reminder_time, active_flows

RISK = "I want to kill myself tonight"
BOUNDARY = "Can you guide me through rescripting the memory of what my uncle did?"
NARRATIVE_NOTE = "When I was seven my uncle came into my room and he hit me"


async def client_and_therapist(bot: RunningBot, emulator: BotApiEmulator) -> tuple[SimUser, SimUser]:
    therapist = await add_person(bot, 8001, Role.THERAPIST, display_name="Dr. Jansen")
    therapist_chat = await open_chat(emulator.user(8001, first_name="Jan"))
    client = emulator.user(8101, first_name="Sam", language_code="en")
    assert says(await join(client, await client_token(bot, therapist, alias="K7")), "client_join.done", zone="Europe/Amsterdam")
    await therapist_chat.next_message()  # the joined notice
    return client, therapist_chat


def crisis_lines_first_line() -> str:
    return plain(content.text("crisis.short", "en")).splitlines()[0][:40]


async def flags(bot: RunningBot) -> list[SafetyFlag]:
    async with services(bot).sessions() as session:
        return list(await session.scalars(select(SafetyFlag)))


async def database_text(bot: RunningBot) -> str:
    """Every text-like value in the database, to show that a client's words are nowhere."""
    from bot.db.models import Base

    found = []
    async with services(bot).engine.connect() as connection:
        for table in Base.metadata.sorted_tables:
            for row in (await connection.execute(text(f"SELECT * FROM {table.name}"))).all():
                found.extend(str(value) for value in row)
    return "\n".join(found)


async def test_risk_outside_any_flow_asks_directly_with_the_lines_and_no_keeps_them(
    bot: RunningBot, emulator: BotApiEmulator
):
    client, therapist = await client_and_therapist(bot, emulator)
    await client.send(RISK)
    question = await client.next_message()
    assert says(question, "safety.crisis.question")
    assert "are you thinking about ending your life" in question.content
    assert crisis_lines_first_line() in question.content, "the lines come with the question, not after it"
    assert labels(question) == ["Yes", "No, I'm OK"]
    await client.press("No, I'm OK", question)
    assert says(await client.next_message(), "safety.crisis.denied")
    assert crisis_lines_first_line() in question.content and labels(question) == [], "the lines stay"
    assert await flags(bot) == []
    await therapist.expect_silence(0.3)
    assert RISK not in await database_text(bot)


async def test_yes_shows_the_lines_again_and_alerts_the_therapist_without_clinical_content(
    bot: RunningBot, emulator: BotApiEmulator
):
    client, therapist = await client_and_therapist(bot, emulator)
    await client.send(RISK)
    await client.press("Yes", await client.next_message())
    confirmed = await client.next_message()
    assert says(confirmed, "safety.crisis.confirmed") and crisis_lines_first_line() in confirmed.content
    assert says(await client.next_message(), "safety.crisis.instructions")
    assert says(await client.next_message(), "safety.crisis.therapist_alerted")
    offer = await client.next_message()  # no safety plan yet: offered, one button away
    assert says(offer, "safetyplan.none") and labels(offer) == ["Make my safety plan"]

    alert = await therapist.wait_for(lambda m: "may need contact" in m.content, timeout=10)
    assert alert.content.startswith("K7 may need contact.")
    assert "kill" not in alert.content.lower() and "tonight" not in alert.content
    (flag,) = await flags(bot)
    assert flag.kind == "risk" and flag.alerted_at is not None and flag.note is None
    async with services(bot).sessions() as session:
        queued = list(await session.scalars(select(OutboxMessage).where(OutboxMessage.idempotency_key == f"safety-alert:{flag.id}")))
        actions = set(await session.scalars(select(AuditEvent.action)))
    assert len(queued) == 1 and "safety.flag.risk" in actions
    assert RISK not in await database_text(bot)


async def test_boundary_outside_any_flow_flags_for_the_therapist_with_a_note_but_no_narrative(
    bot: RunningBot, emulator: BotApiEmulator
):
    client, therapist = await client_and_therapist(bot, emulator)
    await client.send(BOUNDARY)
    explain = await client.next_message()
    assert says(explain, "safety.boundary.explain")
    assert labels(explain) == ["A calming minute now", "Let my therapist know", "No, thank you"]
    await client.press("A calming minute now", explain)
    assert says(await client.next_message(), "exercises.stop.grounding")
    assert says(await client.next_message(), "safety.boundary.grounded")

    await client.press("Let my therapist know", explain)
    flagged = await client.next_message()
    assert says(flagged, "safety.boundary.flagged")
    await client.press("Let my therapist know", explain)  # twice: still one open flag
    await client.next_message()
    assert len(await flags(bot)) == 1

    await client.press("Add a short note", flagged)
    assert says(await client.next_message(), "safety.boundary.ask_note")
    await client.send(NARRATIVE_NOTE)  # the note is checked too: a narrative is not kept
    explain = await client.next_message()
    assert says(explain, "safety.boundary.explain")
    await client.press("Let my therapist know", explain)
    await client.press("Add a short note", await client.next_message())
    assert says(await client.next_message(), "safety.boundary.ask_note")
    await client.send("It comes up most evenings before I sleep")
    assert says(await client.next_message(), "safety.boundary.note_saved")
    (flag,) = await flags(bot)
    assert flag.kind == "memory_work" and flag.note == "It comes up most evenings before I sleep"

    everything = await database_text(bot)
    assert "uncle" not in everything and "before I sleep" not in everything, "words only encrypted, or nowhere"
    await therapist.expect_silence(0.3)  # a memory-work flag waits for the summary: no alert


async def test_risk_inside_a_paced_exercise_stops_its_timer_and_back_resumes_it(bot: RunningBot, emulator: BotApiEmulator):
    client, _ = await client_and_therapist(bot, emulator)
    services(bot).settings.practice_time_scale = 0.1
    await client.send("/practice")
    await client.press("Slow breathing", await client.next_message())
    await client.press("7", await client.next_message())
    await client.next_message()  # intro
    await client.next_message()  # caution
    breath = await client.next_message()
    while "Round 2 of 6" not in breath.content:
        await client.wait_for_edit(breath, timeout=10)
    await client.send(RISK)
    question = await client.wait_for(lambda m: says(m, "safety.crisis.question"))
    assert not bot.application.job_queue.get_jobs_by_name(job_name(client.chat_id)), "the timer stopped"
    reached = breath.content
    await client.press("No, I'm OK", question)
    denied = await client.next_message()
    assert says(denied, "safety.crisis.denied") and "You paused your exercise." in denied.content
    await client.press("↩ Back to where I was", denied)
    again = await client.next_message()
    assert again.content == reached
    after = await client.wait_for(lambda m: "And now" in m.content, timeout=20)
    await client.press("4", after)
    assert (await client.next_message()).content.startswith("From 7 to 4")
    async with services(bot).sessions() as session:
        (run,) = list(await session.scalars(select(ExerciseRun)))
    assert run.distress_after == "4" and not run.stopped_early


async def test_boundary_inside_a_multi_step_flow_pauses_it_and_back_continues(bot: RunningBot, emulator: BotApiEmulator):
    client, _ = await client_and_therapist(bot, emulator)
    await _reminder_time(client)
    await client.send(BOUNDARY)
    explain = await client.next_message()
    assert says(explain, "safety.boundary.explain")
    assert labels(explain) == ["A calming minute now", "Let my therapist know", "↩ Back to where I was", "End it"]
    await eventually(lambda: active_flows(bot, client) == [])
    await client.press("↩ Back to where I was", explain)
    assert says(await client.next_message(), "flows.resumed")
    await client.send("19:30")
    assert REMINDER.answered(await client.next_message())


async def test_someone_not_enrolled_gets_the_lines_and_no_flag(bot: RunningBot, emulator: BotApiEmulator):
    stranger = emulator.user(9001, first_name="Alex", language_code="en")
    await stranger.send("ik wil niet meer leven")
    question = await stranger.next_message()
    assert "ending your life" in question.content or "einde aan je leven" in question.content
    await stranger.press(0, question)  # Yes / Ja
    confirmed = await stranger.next_message()
    assert crisis_lines_first_line() in confirmed.content or "113" in confirmed.content
    assert await flags(bot) == []


async def test_therapists_messages_are_not_screened(bot: RunningBot, emulator: BotApiEmulator):
    await add_person(bot, 8001, Role.THERAPIST, display_name="Dr. Jansen")
    therapist = emulator.user(8001, first_name="Jan")
    await therapist.send("/invite")
    await therapist.next_message()
    await therapist.send("Kill Bill fan")  # an alias that sounds violent: taken as an alias
    assert (await therapist.next_message()).content.startswith("Invite link for Kill Bill fan")
