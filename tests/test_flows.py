"""One active flow per person, and pausing a flow (bot.flows), end to end through the emulator.

The case that started it: a client who leaves /reminders at "what time?" and opens /practice →
Safe place had their answer read as a time. Now the flow begun last owns the person's text:
every pair of flows that can be left half-way is tried in both orders. /help in the middle of
a flow pauses it (a timed exercise stops its timer) and offers ↩ Back to where I was or
End it; a pause survives a restart."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import pytest
from sqlalchemy import select

from bot.db.models import ConversationState, ExerciseRun, Role
from bot.flows import PAUSED_NAME, Flows
from bot.sandbox.emulator import BotApiEmulator
from bot.sandbox.emulator.people import SimUser
from bot.sandbox.emulator.records import BotMessage
from handlers.common import FLOW_BACK
from handlers.exercises.shared import job_name as _job_name
from tests.fixtures_bot import RunningBot
from tests.fixtures_emulator import eventually
from tests.join_support import add_person, client_token, content, join, labels, plain, says, services
from tests.test_clinic import add_clients, new_therapist


@dataclass(frozen=True)
class Step:
    """A flow left half-way at a step that expects typed text."""

    name: str
    enter: Callable[[SimUser], Awaitable[None]]  # from nothing to the text step
    answer: str
    answered: Callable[[BotMessage], bool]  # the step's reply to ``answer``


async def _reminder_time(user: SimUser) -> None:
    await user.send("/reminders")
    await user.press("+ Add a reminder", await user.next_message())
    await user.press("Slow breathing", await user.next_message())
    days = await user.next_message()
    await user.press("Mon", days)
    await user.wait_for_edit(days)
    await user.press("Next ›", days)
    assert says(await user.next_message(), "reminders.ask_time", zone="Europe/Amsterdam")


async def _timezone_question(user: SimUser) -> None:
    await user.send("/timezone")
    assert says(await user.next_message(), "account.timezone.question")


async def _safe_place_question(user: SimUser) -> None:
    await user.send("/practice")
    await user.press("Safe place", await user.next_message())
    await user.press("5", await user.next_message())
    await user.wait_for(lambda m: says(m, "exercises.safe_place.caution"))
    assert (await user.next_message()).content.startswith(safe_prompt(0))


async def _safety_plan_step(user: SimUser) -> None:
    await user.send("/safetyplan")
    assert says(await user.next_message(), "safetyplan.intro")
    assert (await user.next_message()).content.startswith("Step 1 of 6")


async def _invite_alias(user: SimUser) -> None:
    await user.send("/invite")
    assert says(await user.next_message(), "invite.ask_alias")


async def _rename_client(user: SimUser) -> None:
    await user.send("/clients")
    listing = await user.next_message()
    await user.press("Robin", listing)
    page = await user.wait_for_edit(listing)
    await user.press("Rename", page)
    assert says(await user.next_message(), "clients.ask_alias", alias="Robin")


def safe_prompt(index: int) -> str:
    return plain(content.raw("exercises.safe_place.questions", "en")[index]["prompt"]).split("\n")[0]


SECOND_SAFE_PROMPT = safe_prompt(1)

REMINDER = Step("reminders", _reminder_time, "19:30", lambda m: says(m, "reminders.added", days="Mon", time="19:30", exercise="Slow breathing"))
TIMEZONE = Step("timezone", _timezone_question, "Europe/Lisbon", lambda m: says(m, "account.timezone.changed", zone="Europe/Lisbon"))
SAFE_PLACE = Step("practice", _safe_place_question, "a quiet beach", lambda m: m.content.startswith(SECOND_SAFE_PROMPT))
INVITE = Step("client_invite", _invite_alias, "Tuesday", lambda m: m.content.startswith("Invite link for Tuesday"))
RENAME = Step("clients", _rename_client, "Robin (Tue)", lambda m: m.content.startswith("Done: this client is now called Robin (Tue)."))

SAFETY_PLAN = Step("safetyplan", _safety_plan_step, "I sleep badly", lambda m: m.content.startswith("Step 2 of 6"))

CLIENT_STEPS = [REMINDER, TIMEZONE, SAFE_PLACE, SAFETY_PLAN]
THERAPIST_STEPS = [INVITE, RENAME, TIMEZONE]


def pairs(steps: list[Step]) -> list[tuple[Step, Step]]:
    return [(a, b) for a in steps for b in steps if a is not b]


async def enrolled_client(bot: RunningBot, emulator: BotApiEmulator, telegram_id: int = 8101) -> SimUser:
    therapist = await add_person(bot, 8001, Role.THERAPIST, display_name="Dr. Jansen")
    client = emulator.user(telegram_id, first_name="Sam", language_code="en")
    assert says(await join(client, await client_token(bot, therapist)), "client_join.done", zone="Europe/Amsterdam")
    return client


def active_flows(bot: RunningBot, user: SimUser) -> list[str]:
    return [flow.name for flow, _ in Flows.of(bot.application).active((user.chat_id, user.id))]


@pytest.mark.parametrize(("left", "then"), pairs(CLIENT_STEPS), ids=lambda s: s.name)
async def test_a_client_s_text_reaches_the_flow_begun_last(bot: RunningBot, emulator: BotApiEmulator, left: Step, then: Step):
    client = await enrolled_client(bot, emulator)
    await left.enter(client)
    await then.enter(client)
    await eventually(lambda: active_flows(bot, client) == [then.name])
    await client.send(then.answer)
    reply = await client.next_message()
    assert then.answered(reply), reply.content


@pytest.mark.parametrize(("left", "then"), pairs(THERAPIST_STEPS), ids=lambda s: s.name)
async def test_a_therapist_s_text_reaches_the_flow_begun_last(bot: RunningBot, emulator: BotApiEmulator, left: Step, then: Step):
    anna = await new_therapist(emulator, "Anna")
    await add_clients(bot, emulator, anna, ["Robin"], 7000)
    await left.enter(anna)
    await then.enter(anna)
    await eventually(lambda: active_flows(bot, anna) == [then.name])
    await anna.send(then.answer)
    reply = await anna.next_message()
    assert then.answered(reply), reply.content


async def test_a_command_outside_any_flow_ends_the_flow_and_its_buttons_go_stale(bot: RunningBot, emulator: BotApiEmulator):
    client = await enrolled_client(bot, emulator)
    await client.send("/reminders")
    await client.press("+ Add a reminder", await client.next_message())
    which = await client.next_message()
    await client.send("/learn")
    await client.next_message()
    await eventually(lambda: active_flows(bot, client) == [])
    query = await client.press("Slow breathing", which)  # a button of the ended flow
    assert (await client.wait_for_callback_answer(query)).text == content.text("fallback.stale_button", "en")
    await client.send("19:30")
    assert says(await client.next_message(), "fallback.text"), "no flow owns the text any more"


async def test_a_stale_button_tapped_twice_is_answered_twice_without_an_error(bot: RunningBot, emulator: BotApiEmulator):
    """Found by tests/test_fuzz.py: the second tap's query still names the message the first one
    took the buttons off, so removing them again is "message is not modified" (400) on Telegram;
    that reached the error handler and the person was told something went wrong."""
    client = await enrolled_client(bot, emulator)
    await client.send("/reminders")
    await client.press("+ Add a reminder", await client.next_message())
    which = await client.next_message()
    data = next(d for row in which.buttons for label, d in row if label == "Slow breathing")
    await client.send("/learn")
    await client.next_message()
    await eventually(lambda: active_flows(bot, client) == [])
    for _ in range(2):
        query = await client.press_data(data, which)
        assert (await client.wait_for_callback_answer(query)).text == content.text("fallback.stale_button", "en")
    await client.expect_silence(0.1)  # no "Sorry, something went wrong"


async def test_every_flow_that_can_be_paused_has_a_name_in_every_language(bot: RunningBot):
    """Found by tests/test_fuzz.py: /help in the middle of /setkey paused it and named it with
    ``flows.names.setkey``, which did not exist: the error handler, instead of the help."""
    flows = Flows.of(bot.application).flows
    assert "setkey" in flows
    for name, flow in flows.items():
        if flow.hooks.interlude:  # a pause ends it instead (bot.flows)
            continue
        for lang in ("en", "nl"):
            assert content.text(f"flows.names.{name}", lang), (name, lang)


async def test_joining_can_be_paused_with_help_and_resumed(bot: RunningBot, emulator: BotApiEmulator):
    therapist = await add_person(bot, 8001, Role.THERAPIST, display_name="Dr. Jansen")
    client = emulator.user(8101, first_name="Sam", language_code="en")
    await client.send(f"/start {await client_token(bot, therapist)}")
    await client.press(0, await client.next_message())  # Continue
    await client.press(0, await client.next_message())  # Read the consent
    await client.press(0, await client.next_message())  # I agree
    await client.next_message()  # consent recorded
    question = await client.next_message()
    await client.press("✓ English", question)
    assert says(await client.next_message(), "client_join.timezone_question")

    await client.send("/help")
    help_text = await client.next_message()
    assert "You paused joining." in help_text.content
    assert labels(help_text) == ["↩ Back to where I was", "End it"]
    await eventually(lambda: active_flows(bot, client) == [])
    await client.send("amsterdam")  # while paused, text belongs to no flow: said so, with the way back
    stray = await client.next_message()
    assert says(stray, "fallback.text") and "You paused joining." in stray.content

    await client.press("↩ Back to where I was", help_text)
    assert says(await client.next_message(), "flows.resumed")
    assert labels(help_text) == []
    await client.send("amsterdam")
    assert says(await client.next_message(), "client_join.done", zone="Europe/Amsterdam")


async def test_a_pause_survives_a_restart_and_resumes_the_step(bot: RunningBot, emulator: BotApiEmulator, db_sessions):
    client = await enrolled_client(bot, emulator)
    await _reminder_time(client)
    await client.send("/help")
    help_text = await client.next_message()
    assert "You paused setting up a reminder." in help_text.content
    async with db_sessions() as session:
        stored = await session.scalar(select(ConversationState.state).where(ConversationState.name == PAUSED_NAME))
    assert stored["flow"] == "reminders" and stored["state"] in Flows.of(bot.application).flows["reminders"].states

    await bot.restart()
    await client.press("↩ Back to where I was", help_text)
    assert says(await client.next_message(), "flows.resumed")
    await client.send("19:30")
    assert REMINDER.answered(await client.next_message())
    async with db_sessions() as session:
        assert await session.scalar(select(ConversationState.state).where(ConversationState.name == PAUSED_NAME)) is None
    query = await client.press_data(FLOW_BACK, help_text)  # an old Back: nothing is paused now
    assert (await client.wait_for_callback_answer(query)).text == content.text("fallback.stale_button", "en")


async def test_end_it_and_cancel_end_a_paused_flow(bot: RunningBot, emulator: BotApiEmulator):
    client = await enrolled_client(bot, emulator)
    await _timezone_question(client)
    await client.send("/help")
    help_text = await client.next_message()
    await client.press("End it", help_text)
    assert says(await client.next_message(), "flows.ended")
    await client.send("Europe/Lisbon")
    assert says(await client.next_message(), "fallback.text")

    await _timezone_question(client)
    await client.send("/help")
    await client.next_message()
    await client.send("stop")
    assert says(await client.next_message(), "cancel.done")
    await client.send("stop")
    assert says(await client.next_message(), "cancel.nothing")


async def test_a_paused_breathing_exercise_stops_its_timer_and_resumes_at_its_step(
    bot: RunningBot, emulator: BotApiEmulator
):
    client = await enrolled_client(bot, emulator)
    services(bot).settings.practice_time_scale = 0.1  # in 0.4 s, out 0.6 s
    await client.send("/practice")
    await client.press("Slow breathing", await client.next_message())
    await client.press("6", await client.next_message())
    await client.next_message()  # intro
    await client.next_message()  # caution
    breath = await client.next_message()
    while "Round 2 of 6" not in breath.content:
        await client.wait_for_edit(breath, timeout=10)
    await client.send("/help")
    help_text = await client.wait_for(lambda m: m.content.startswith("What I can do"))
    reached = breath.content
    assert not bot.application.job_queue.get_jobs_by_name(_job_name(client.chat_id)), "the timer stopped"
    edits = len(breath.edits)
    await bot.restart()  # a paused exercise is not resumed by a restart
    services(bot).settings.practice_time_scale = 0.1
    assert len(breath.edits) == edits
    async with services(bot).sessions() as session:
        (row,) = list(await session.scalars(select(ExerciseRun)))
    assert row.ended_at is None and row.run_message_id is None and row.run_step is not None
    assert await services(bot).exercise_log.runs_since(row.started_at) == [], "nothing for a restart to resume"

    await client.press("↩ Back to where I was", help_text)
    again = await client.next_message()
    assert again.content == reached, "the step it had reached, in a new message"
    assert labels(again) == ["✋ Stop"]
    after = await client.wait_for(lambda m: "And now" in m.content, timeout=20)
    await client.press("3", after)
    assert (await client.next_message()).content.startswith("From 6 to 3")


async def test_another_flow_ends_an_exercise_under_way_as_stopped_early(bot: RunningBot, emulator: BotApiEmulator):
    client = await enrolled_client(bot, emulator)
    services(bot).settings.practice_time_scale = 1.0
    await client.send("/practice")
    await client.press("Slow breathing", await client.next_message())
    await client.press("4", await client.next_message())
    await client.wait_for(lambda m: "Round 1 of 6" in m.content)
    await _timezone_question(client)
    await eventually(lambda: not bot.application.job_queue.get_jobs_by_name(_job_name(client.chat_id)))
    for _ in range(500):  # the flow rule runs after the reply: wait for its write
        async with services(bot).sessions() as session:
            (row,) = list(await session.scalars(select(ExerciseRun)))
        if row.ended_at is not None:
            break
        await asyncio.sleep(0.01)
    assert row.ended_at is not None and row.stopped_early


# -- joining as one of the pair -----------------------------------------------------------------


async def _join_to_zone_question(bot: RunningBot, client: SimUser) -> None:
    """A new client, half-way through joining: consent given, the time zone question open."""
    therapist = await add_person(bot, 8001, Role.THERAPIST, display_name="Dr. Jansen")
    await client.send(f"/start {await client_token(bot, therapist)}")
    await client.press(0, await client.next_message())  # Continue
    await client.press(0, await client.next_message())  # Read the consent
    await client.press(0, await client.next_message())  # I agree
    await client.next_message()  # consent recorded
    question = await client.next_message()
    await client.press("✓ English", question)
    assert says(await client.next_message(), "client_join.timezone_question")


@pytest.mark.parametrize("then", CLIENT_STEPS, ids=lambda s: s.name)
async def test_a_flow_begun_while_joining_gets_the_text(bot: RunningBot, emulator: BotApiEmulator, then: Step):
    client = emulator.user(8101, first_name="Sam", language_code="en")
    await _join_to_zone_question(bot, client)
    await then.enter(client)
    await eventually(lambda: active_flows(bot, client) == [then.name])
    await client.send(then.answer)
    reply = await client.next_message()
    assert then.answered(reply), reply.content


@pytest.mark.parametrize("left", CLIENT_STEPS, ids=lambda s: s.name)
async def test_a_new_therapist_s_link_ends_a_flow_left_half_way(bot: RunningBot, emulator: BotApiEmulator, left: Step):
    """Opening another therapist's link (a client's switch: a question with buttons, no typed
    step) is a command outside the flow: the flow left half-way ends, its typed answer reaches
    no flow, and the switch still works."""
    client = await enrolled_client(bot, emulator)
    await left.enter(client)
    other = await add_person(bot, 8002, Role.THERAPIST, display_name="Dr. de Vries")
    await client.send(f"/start {await client_token(bot, other)}")
    offer = await client.next_message()
    assert says(offer, "client_join.switch.confirm", therapist="Dr. de Vries", current="Dr. Jansen")
    await eventually(lambda: active_flows(bot, client) == [])
    await client.send(left.answer)
    assert says(await client.next_message(), "fallback.text"), "the flow left half-way has ended"
    await client.press(0, offer)  # Switch
    assert says(await client.next_message(), "client_join.switch.switched", therapist="Dr. de Vries")
