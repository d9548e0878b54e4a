"""/practice (issue 6) through the emulator: slow breathing timed by the JobQueue (with a
speed factor, never a sleep in a handler), grounding 5-4-3-2-1, the 0-10 ratings before and
after (stored encrypted), stopping at every step, and forged rating buttons."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import select, text

from bot.db.models import AuditEvent, ExerciseRun, Role
from bot.sandbox.emulator import BotApiEmulator
from bot.sandbox.emulator.people import SimUser
from bot.sandbox.emulator.records import BotMessage
from handlers.exercises.shared import job_name as _job_name
from tests.fixtures_bot import RunningBot
from tests.join_support import add_person, client_token, join, labels, says, services

CYCLES = 6
PHASES = 2


async def enrolled_client(bot: RunningBot, emulator: BotApiEmulator, telegram_id: int = 8101) -> SimUser:
    therapist = await add_person(bot, 8001, Role.THERAPIST, display_name="Dr. Jansen")
    token = await client_token(bot, therapist)
    client = emulator.user(telegram_id, first_name="Sam", language_code="en")
    await join(client, token)
    return client


async def sessions_of(bot: RunningBot) -> list[ExerciseRun]:
    async with services(bot).sessions() as session:
        return list(await session.scalars(select(ExerciseRun)))


async def choose(client: SimUser, exercise: str) -> BotMessage:
    """/practice, pick ``exercise``; returns the rating-before question."""
    await client.send("/practice")
    menu = await client.next_message()
    assert "Calming exercises" in menu.content
    assert labels(menu) == ["Slow breathing", "Muscle relaxation", "Safe place", "Grounding 5-4-3-2-1", "✋ Stop"]
    await client.press(exercise, menu)
    question = await client.next_message()
    assert says(question, "exercises.rating.before")
    assert labels(question) == [str(n) for n in range(11)] + ["✋ Stop"]
    return question


async def start_breathing(bot: RunningBot, client: SimUser, before: int, speed: float) -> BotMessage:
    services(bot).settings.practice_time_scale = speed
    question = await choose(client, "Slow breathing")
    await client.press(str(before), question)
    assert says(await client.next_message(), "exercises.breathing.intro")
    assert says(await client.next_message(), "exercises.breathing.caution")
    breath = await client.next_message()
    assert "Round 1 of 6" in breath.content and "Breathe in" in breath.content
    assert labels(breath) == ["✋ Stop"]
    return breath


def job_names(bot: RunningBot, client: SimUser) -> list:
    return bot.application.job_queue.get_jobs_by_name(_job_name(client.chat_id))


async def test_a_full_breathing_run_edits_one_message_per_phase_and_logs_the_change(
    bot: RunningBot, emulator: BotApiEmulator, database_url: str
):
    client = await enrolled_client(bot, emulator)
    breath = await start_breathing(bot, client, 7, speed=0.01)

    after = await client.wait_for(lambda m: "And now" in m.content, timeout=15)
    shown = [v.text for v in breath.edits] + [breath.text]
    assert len(shown) == CYCLES * PHASES + 1, "one edit per phase, then the closing words"
    assert "Round 6 of 6" in shown[-2] and "Breathe out" in shown[-2]
    assert [("in" if "Breathe in" in t else "out") for t in shown[:-1]] == ["in", "out"] * CYCLES
    assert says(breath, "exercises.breathing.finished") and labels(breath) == []

    assert labels(after)[:11] == [str(n) for n in range(11)]
    await client.press("3", after)
    change = await client.next_message()
    assert change.content.startswith("From 7 to 3: a little calmer")
    assert "Saved in your practice log." in change.content

    (row,) = await sessions_of(bot)
    assert (row.exercise, row.distress_before, row.distress_after, row.stopped_early) == ("breathing", "7", "3", False)
    assert row.ended_at is not None
    # Ciphertext in the database: not the digits.
    async with services(bot).engine.connect() as connection:
        raw = (await connection.execute(text("SELECT distress_before, distress_after FROM practice_sessions"))).one()
    assert all(isinstance(v, (bytes, memoryview)) and len(bytes(v)) > 16 for v in raw)
    assert bytes(raw[0]) not in (b"7", b"\x07") and bytes(raw[1]) not in (b"3", b"\x03")
    assert not job_names(bot, client)


async def test_muscle_relaxation_tenses_and_releases_each_group_and_skips_one(
    bot: RunningBot, emulator: BotApiEmulator
):
    client = await enrolled_client(bot, emulator)
    services(bot).settings.practice_time_scale = 0.2  # tense 1 s, release 2 s
    question = await choose(client, "Muscle relaxation")
    await client.press("6", question)
    assert says(await client.next_message(), "exercises.pmr.intro", tense=5, release=10)
    assert says(await client.next_message(), "exercises.pmr.caution")
    step = await client.next_message()
    assert step.content.startswith("1 of 7") and "Hands · tense for 5 seconds" in step.content
    assert labels(step) == ["Skip this one", "✋ Stop"]
    await client.press("Skip this one", step)  # Hands skipped: straight to the arms
    await client.wait_for_edit(step)
    assert step.content.startswith("2 of 7") and "Arms · tense" in step.content
    services(bot).settings.practice_time_scale = 0.002
    after = await client.wait_for(lambda m: "And now" in m.content, timeout=15)
    shown = [v.text for v in step.edits] + [step.text]
    assert [t.split("\n")[2].split(" · ")[0] for t in shown[1:-1]] == [
        name for name in ("Arms", "Shoulders", "Face", "Stomach", "Legs", "Feet") for _ in range(2)
    ]
    assert "let go for 10 seconds" in shown[2]
    assert says(step, "exercises.pmr.finished")
    await client.press("8", after)
    assert "more tense than before" in (await client.next_message()).content
    (row,) = await sessions_of(bot)
    assert (row.exercise, row.distress_before, row.distress_after) == ("pmr", "6", "8")


async def test_safe_place_is_built_in_three_answers_stored_encrypted_and_visited_later(
    bot: RunningBot, emulator: BotApiEmulator, database_url: str
):
    client = await enrolled_client(bot, emulator)
    await client.press("5", await choose(client, "Safe place"))
    assert says(await client.next_message(), "exercises.safe_place.intro")
    assert says(await client.next_message(), "exercises.safe_place.caution")
    see = await client.next_message()
    assert "What do you see there?" in see.content and labels(see) == ["✋ Stop"]
    await client.send("x" * 61)
    assert says(await client.next_message(), "exercises.safe_place.too_long", max=60)
    await client.send("soft light, the sea")
    assert "What do you hear there?" in (await client.next_message()).content
    await client.send("stop")  # stopped halfway: the first answer is kept
    await stopped(client)
    assert (await services(bot).exercise_log.safe_place(await identity(bot, client)))["see"] == "soft light, the sea"

    await client.press("4", await choose(client, "Safe place"))  # incomplete: asked again
    await client.next_message(), await client.next_message()
    await client.next_message()  # see
    await client.send("a <small> cabin")
    await client.next_message()
    await client.send("waves & birdsong")
    await client.next_message()
    await client.send("warm sun")
    assert says(await client.next_message(), "exercises.safe_place.saved")
    cue = await client.next_message()
    assert "You see: a <small> cabin\nYou hear: waves & birdsong\nYou feel: warm sun" in cue.content
    assert says(await client.next_message(), "exercises.safe_place.finished")
    await client.press("2", await client.next_message())
    assert (await client.next_message()).content.startswith("From 4 to 2")

    async with services(bot).engine.connect() as connection:
        raw = (await connection.execute(text("SELECT see, hear, feel FROM safe_places"))).one()
    assert all(b"cabin" not in bytes(v) and b"waves" not in bytes(v) and b"warm" not in bytes(v) for v in raw)

    # Later: visit it (the cue replayed), then delete it.
    await client.press("3", await choose(client, "Safe place"))
    offer = await client.next_message()
    assert says(offer, "exercises.safe_place.replay_intro")
    assert labels(offer) == ["Visit my safe place", "Change it", "Delete it", "✋ Stop"]
    await client.press("Visit my safe place", offer)
    assert "You see: a <small> cabin" in (await client.next_message()).content
    await client.next_message()
    await client.press("3", await client.next_message())
    await client.next_message()
    await client.press("3", await choose(client, "Safe place"))
    await client.press("Delete it", await client.next_message())
    assert says(await client.next_message(), "exercises.safe_place.deleted")
    assert await services(bot).exercise_log.safe_place(await identity(bot, client)) is None


async def identity(bot: RunningBot, client: SimUser):
    return await services(bot).people.identify(client.id, "Sam", "en")


async def test_grounding_run_with_next_buttons(bot: RunningBot, emulator: BotApiEmulator):
    client = await enrolled_client(bot, emulator)
    question = await choose(client, "Grounding 5-4-3-2-1")
    await client.press("4", question)
    step = await client.next_message()
    assert says(step, "exercises.grounding.intro")
    assert labels(step) == ["Next ›", "✋ Stop"]
    for expected in ("5 things you can see", "4 things you can feel", "3 things you can hear",
                     "2 things you can smell", "1 thing you can taste"):
        await client.press("Next ›", step)
        await client.wait_for_edit(step)
        assert expected in step.content
    await client.press("Next ›", step)
    assert says(await client.next_message(), "exercises.grounding.finished")
    after = await client.next_message()
    assert says(after, "exercises.rating.after")
    await client.press("4", after)
    assert (await client.next_message()).content.startswith("From 4 to 4.")
    (row,) = await sessions_of(bot)
    assert (row.exercise, row.distress_before, row.distress_after) == ("grounding", "4", "4")


async def expect_no_edits(message: BotMessage, seconds: float) -> None:
    version = message.version
    await asyncio.sleep(seconds)
    assert message.version == version, "the breathing message was edited after the stop"


async def stopped(client: SimUser) -> BotMessage:
    reply = await client.next_message()
    assert reply.content.startswith("Stopped. That's completely fine")
    assert labels(reply) == ["Yes, a grounding step", "No, thank you"]
    return reply


@pytest.mark.parametrize("how", ["stop", "✋", "/stop", "/cancel", "button"])
async def test_stopping_breathing_ends_it_at_once_and_cancels_the_job(
    bot: RunningBot, emulator: BotApiEmulator, how: str
):
    client = await enrolled_client(bot, emulator)
    breath = await start_breathing(bot, client, 8, speed=0.05)
    await client.wait_for_edit(breath, timeout=5)
    if how == "button":
        await client.press("✋ Stop", breath)
    else:
        await client.send(how)
    offer = await stopped(client)
    assert not job_names(bot, client)
    await expect_no_edits(breath, 1.0)
    await client.expect_silence(0.3)

    (row,) = await sessions_of(bot)
    assert row.stopped_early and row.ended_at is not None
    assert row.distress_before == "8" and row.distress_after is None, "the rating given is kept"

    await client.press("Yes, a grounding step", offer)
    assert says(await client.next_message(), "exercises.stop.grounding")
    assert says(await client.next_message(), "exercises.stop.grounding_done")


@pytest.mark.parametrize("where", ["menu", "before", "grounding", "after"])
async def test_stop_works_on_every_other_step(bot: RunningBot, emulator: BotApiEmulator, where: str):
    client = await enrolled_client(bot, emulator)
    if where == "menu":
        await client.send("/practice")
        message = await client.next_message()
    else:
        message = await choose(client, "Grounding 5-4-3-2-1")
        if where != "before":
            await client.press("2", message)
            message = await client.next_message()
            if where == "after":
                for _ in range(6):
                    await client.press("Next ›", message)
                    if _ < 5:
                        await client.wait_for_edit(message)
                await client.next_message()  # finished
                message = await client.next_message()
                assert says(message, "exercises.rating.after")
    await client.press("✋ Stop", message)
    offer = await stopped(client)
    await client.press("No, thank you", offer)
    assert says(await client.next_message(), "exercises.stop.grounding_done")
    rows = await sessions_of(bot)
    if where in ("grounding", "after"):
        assert [(r.distress_before, r.stopped_early) for r in rows] == [("2", True)]
    else:
        assert rows == []
    await client.send("hello")  # the conversation is over: stray text is no longer an answer
    assert not says(await client.next_message(), "fallback.use_buttons")


async def test_forged_and_other_clients_rating_buttons_are_refused(bot: RunningBot, emulator: BotApiEmulator):
    client = await enrolled_client(bot, emulator)
    question = await choose(client, "Grounding 5-4-3-2-1")
    await client.press("5", question)
    step = await client.next_message()
    for _ in range(6):
        await client.press("Next ›", step)
        if _ < 5:
            await client.wait_for_edit(step)
    await client.next_message()
    after = await client.next_message()
    (row,) = await sessions_of(bot)
    codec = services(bot).callbacks

    # Altered: the rating changed without a new signature.
    genuine = after.buttons[0][1].value
    forged = genuine.replace(f"|{row.id}|1|", f"|{row.id}|9|")
    assert forged != genuine
    answer = await client.wait_for_callback_answer(await client.press_data(forged, after))
    assert answer.text.startswith("Sorry, that is not available to you.")
    # Signed for someone else.
    answer = await client.wait_for_callback_answer(
        await client.press_data(codec.pack(999, "px.after", row.id, 1), after)
    )
    assert answer.text.startswith("Sorry")
    # Signed for this client, naming another client's session.
    other = await add_person(bot, 8202, Role.CLIENT)
    other_id = await services(bot).exercise_log.begin(other, "breathing", 6)
    answer = await client.wait_for_callback_answer(
        await client.press_data(codec.pack(client.id, "px.after", other_id, 0), after)
    )
    assert answer.text.startswith("Sorry")

    async with services(bot).sessions() as session:
        rows = {r.id: r for r in await session.scalars(select(ExerciseRun))}
        denied = (await session.scalars(select(AuditEvent).where(AuditEvent.action == "access.denied"))).all()
    assert rows[row.id].distress_after is None and rows[other_id].distress_after is None
    assert [e.detail["reason"] for e in denied] == ["payload", "payload", "ownership"]

    await client.press("1", after)  # the genuine button still works
    assert (await client.next_message()).content.startswith("From 5 to 1")


async def test_only_clients_may_practise(bot: RunningBot, emulator: BotApiEmulator):
    await add_person(bot, 8301, Role.THERAPIST, display_name="Dr. X")
    therapist = emulator.user(8301, first_name="T")
    await therapist.send("/practice")
    assert (await therapist.next_message()).content.startswith("Sorry, that is not available to you.")


# -- a restart during a timed exercise -------------------------------------------------------------
# PTB keeps JobQueue jobs in memory only: the exercise's place is stored with it, and the bot
# resumes it when it starts consuming updates again (handlers/exercises, on_consuming).


async def test_a_restart_in_the_middle_of_breathing_resumes_the_same_message(
    bot: RunningBot, emulator: BotApiEmulator
):
    client = await enrolled_client(bot, emulator)
    breath = await start_breathing(bot, client, 6, speed=0.1)  # 1 s per breath cycle
    await client.wait_for_edit(breath)
    await client.wait_for_edit(breath)
    (row,) = await sessions_of(bot)
    assert row.run_message_id == breath.message_id and row.run_step == 0 and row.run_step_since is not None

    bot.settings = bot.settings.model_copy(update={"practice_time_scale": 0.1})
    await bot.stop()
    edits_while_down = len(breath.edits)
    await asyncio.sleep(1.0)  # two or three steps' time passes with no bot
    assert len(breath.edits) == edits_while_down, "nothing edits the message while the bot is down"
    await bot.start()

    after = await client.wait_for(lambda m: "And now" in m.content, timeout=15)
    assert len(breath.edits) > edits_while_down, "the same message went on after the restart"
    assert says(breath, "exercises.breathing.finished")
    shown = [v.text for v in breath.edits]
    assert any("Round 6 of 6" in t for t in shown), "it ran to the last round"
    assert len(shown) < CYCLES * PHASES, "the steps whose time passed during the restart are not replayed"
    await client.press("2", after)
    assert (await client.next_message()).content.startswith("From 6 to 2")
    (row,) = await sessions_of(bot)
    assert (row.distress_before, row.distress_after, row.stopped_early) == ("6", "2", False)


async def test_an_exercise_that_ended_during_a_restart_asks_the_rating_after(
    bot: RunningBot, emulator: BotApiEmulator
):
    client = await enrolled_client(bot, emulator)
    breath = await start_breathing(bot, client, 5, speed=0.01)  # 0.6 s in all
    bot.settings = bot.settings.model_copy(update={"practice_time_scale": 0.01})
    await bot.stop()
    await asyncio.sleep(1.0)
    await bot.start()
    after = await client.wait_for(lambda m: "And now" in m.content, timeout=15)
    assert says(breath, "exercises.breathing.finished")
    await client.press("5", after)
    assert (await client.next_message()).content.startswith("From 5 to 5")


async def test_an_old_exercise_is_not_resumed_and_stop_still_works(
    bot: RunningBot, emulator: BotApiEmulator, db_sessions
):
    from datetime import timedelta

    from sqlalchemy import update

    from bot.db.types import utcnow

    client = await enrolled_client(bot, emulator)
    breath = await start_breathing(bot, client, 7, speed=1.0)  # 4 s per breath in
    await bot.stop()
    async with db_sessions.begin() as session:  # as if the bot had been down for an hour
        await session.execute(update(ExerciseRun).values(run_step_since=utcnow() - timedelta(hours=1)))
    await bot.start()
    await asyncio.sleep(0.5)
    assert breath.edits == [] and not job_names(bot, client)
    await client.press("✋ Stop", breath)  # the conversation survived the restart: stopping works
    await stopped(client)
    (row,) = await sessions_of(bot)
    assert (row.distress_before, row.stopped_early) == ("7", True)


async def test_buttons_of_old_messages_change_nothing(bot: RunningBot, emulator: BotApiEmulator):
    from handlers.exercises.shared import AFTER
    from tests.join_support import content

    stale = content.text("fallback.stale_button", "en")
    client = await enrolled_client(bot, emulator)
    old_menu_question = await choose(client, "Grounding 5-4-3-2-1")
    await client.press("4", old_menu_question)
    old_intro = await client.next_message()  # the first exercise's intro, left there with its buttons
    (first,) = await sessions_of(bot)

    second = await choose(client, "Grounding 5-4-3-2-1")  # the first ends as stopped early
    await client.press("6", second)
    step = await client.next_message()
    for _ in range(5):  # the five senses, edited into the same message
        await client.press("Next ›", step)
        await client.wait_for_edit(step)
    await client.press("Next ›", step)
    assert says(await client.next_message(), "exercises.grounding.finished")
    after = await client.next_message()
    assert says(after, "exercises.rating.after")

    # The first exercise's rating after (as if from an older message): refused as stale.
    old = services(bot).callbacks.pack(client.id, AFTER, first.id, 1)
    query = await client.press_data(old, old_intro)
    assert (await client.wait_for_callback_answer(query)).text == stale
    await client.wait_for_edit(old_intro)
    assert labels(old_intro) == [], "the old message's buttons are taken off"
    rows = {row.id: row for row in await sessions_of(bot)}
    assert rows[first.id].distress_after is None and rows[first.id].stopped_early

    await client.press("2", after)  # the exercise under way takes its rating
    assert (await client.next_message()).content.startswith("From 6 to 2")
    query = await client.press_data(services(bot).callbacks.pack(client.id, AFTER, first.id, 9), old_menu_question)
    assert (await client.wait_for_callback_answer(query)).text == stale  # the conversation has ended

    # A menu button from before: stale too, nothing starts.
    menus = [m for m in client.messages if "Calming exercises" in m.content]
    query = await client.press_data("px:pick:breathing", menus[0])
    assert (await client.wait_for_callback_answer(query)).text == stale
    rows = await sessions_of(bot)
    assert len(rows) == 2 and {r.distress_after for r in rows} == {None, "2"}


async def test_an_instance_that_stops_consuming_drops_its_timers_and_the_next_resumes(
    bot: RunningBot, emulator: BotApiEmulator
):
    """With PostgreSQL, a standby that takes over resumes the exercise; the instance that
    lost the lead must stop editing it (on_consuming False), or two would edit one message."""
    from handlers.exercises import on_consuming

    client = await enrolled_client(bot, emulator)
    breath = await start_breathing(bot, client, 6, speed=0.1)
    await client.wait_for_edit(breath)
    await on_consuming(bot.application, False)  # this instance is no longer the consumer
    assert not job_names(bot, client)
    edits = len(breath.edits)
    await asyncio.sleep(0.8)
    assert len(breath.edits) == edits, "nothing edits the message any more"

    await on_consuming(bot.application, True)  # consuming again: the exercise goes on
    after = await client.wait_for(lambda m: "And now" in m.content, timeout=15)
    assert len(breath.edits) > edits and says(breath, "exercises.breathing.finished")
    await client.press("3", after)
    assert (await client.next_message()).content.startswith("From 6 to 3")
