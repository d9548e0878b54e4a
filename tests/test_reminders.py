"""/reminders end to end through the emulator (SQLite and, with TEST_DATABASE_URL, PostgreSQL):
create (for one exercise or any), list, change time, days and exercise, pause, resume,
delete; a due reminder delivered by the outbox with its three buttons; Start now opens
/practice on the reminder's exercise; snooze re-delivers; skip today; a time-zone change
re-plans; another client's reminder is refused."""

from __future__ import annotations

import asyncio
from datetime import time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import select, update

from bot.db.delivery_models import OutboxMessage, OutboxState, ReminderSchedule
from bot.db.models import AuditEvent, Person, ExerciseRun, Role
from bot.db.types import utcnow
from bot.sandbox.emulator import BotApiEmulator
from bot.sandbox.emulator.people import SimUser
from bot.services.people import Identity
from tests.fixtures_bot import RunningBot
from tests.join_support import (
    add_person,
    client_token,
    content,
    join,
    labels,
    open_chat,
    person_by_telegram_id,
    says,
    services,
)

AMSTERDAM = ZoneInfo("Europe/Amsterdam")


async def enrolled_client(bot: RunningBot, emulator: BotApiEmulator, name: str = "Sam") -> SimUser:
    therapist = await add_person(bot, 8001, Role.THERAPIST, display_name="Dr. Jansen")
    therapist_chat = await open_chat(emulator.user(8001, first_name="Jan"))
    client = emulator.user(first_name=name)
    assert says(await join(client, await client_token(bot, therapist)), "client_join.done", zone="Europe/Amsterdam")
    await therapist_chat.next_message()  # joined notice
    return client


async def schedules_of(bot: RunningBot, person_id: int) -> list[ReminderSchedule]:
    async with services(bot).sessions() as session:
        return list(
            await session.scalars(select(ReminderSchedule).where(ReminderSchedule.person_id == person_id))
        )


async def outbox_of(bot: RunningBot, person_id: int) -> list[OutboxMessage]:
    async with services(bot).sessions() as session:
        return list(
            await session.scalars(
                select(OutboxMessage).where(OutboxMessage.recipient_id == person_id).order_by(OutboxMessage.created_at)
            )
        )


async def make_due_now(bot: RunningBot, schedule_id: int) -> None:
    """As if the reminder's time had just come: the dispatcher's next tick plans and sends it."""
    now = utcnow()
    async with services(bot).sessions.begin() as session:
        await session.execute(
            update(ReminderSchedule)
            .where(ReminderSchedule.id == schedule_id)
            .values(next_due_at=now - timedelta(seconds=1), next_local_date=now.astimezone(AMSTERDAM).date())
        )


async def test_create_list_change_pause_resume_delete(bot: RunningBot, emulator: BotApiEmulator):
    client = await enrolled_client(bot, emulator)
    person = await person_by_telegram_id(bot, client.id)
    await client.send("/help")
    assert "/reminders" in (await client.next_message()).text

    await client.send("/reminders")
    listing = await client.next_message()
    assert says(listing, "reminders.empty")
    await client.press("+ Add a reminder", listing)
    which = await client.next_message()
    assert says(which, "reminders.ask_exercise")
    assert labels(which) == ["Slow breathing", "Muscle relaxation", "Safe place", "Grounding 5-4-3-2-1", "Any exercise"]
    await client.send("breathing please")  # typed where a button is expected: said so, same step
    assert says(await client.next_message(), "fallback.use_buttons")
    await client.press("Slow breathing", which)
    days = await client.next_message()
    assert says(days, "reminders.ask_days")
    assert labels(which) == []
    query = await client.press("Next ›", days)  # no day yet: an alert, still asking
    assert (await client.wait_for_callback_answer(query)).text == content.text("reminders.no_days", "en")
    await client.press("Mon", days)
    await client.wait_for_edit(days)
    await client.press("Wed", days)
    await client.wait_for_edit(days)
    assert "✓ Mon" in labels(days) and "✓ Wed" in labels(days)
    await client.press("Next ›", days)
    question = await client.next_message()
    assert says(question, "reminders.ask_time", zone="Europe/Amsterdam")
    await client.send("25:00")
    assert says(await client.next_message(), "reminders.bad_time")
    await client.send("soon")
    assert says(await client.next_message(), "reminders.bad_time")
    await client.send("19:30")
    assert says(await client.next_message(), "reminders.added", days="Mon, Wed", time="19:30", exercise="Slow breathing")

    [schedule] = await schedules_of(bot, person.id)
    assert schedule.weekdays == 0b101 and schedule.local_time == time(19, 30) and schedule.active
    assert (schedule.content_key, schedule.params) == ("outbox.practice_reminder_for.breathing", {"exercise": "breathing"})
    local = schedule.next_due_at.astimezone(AMSTERDAM)
    assert local.time() == time(19, 30) and local.weekday() in (0, 2)

    await client.send("/reminders")
    listing = await client.next_message()
    assert says(listing, "reminders.title", zone="Europe/Amsterdam")
    assert "• Mon, Wed at 19:30: Slow breathing" in listing.text
    await client.press("19:30 · Mon, Wed", listing)
    await client.wait_for_edit(listing)
    assert says(
        listing, "reminders.page", days="Mon, Wed", time="19:30", zone="Europe/Amsterdam", exercise="Slow breathing"
    )

    # Change the exercise, the time with a button, then the days.
    await client.press("Change exercise", listing)
    which = await client.next_message()
    await client.press("Any exercise", which)
    assert says(await client.next_message(), "reminders.changed", days="Mon, Wed", time="19:30", exercise="Any exercise")
    [schedule] = await schedules_of(bot, person.id)
    assert (schedule.content_key, schedule.params) == ("outbox.practice_reminder", None)
    await client.send("/reminders")
    listing = await client.next_message()
    await client.press("19:30 · Mon, Wed", listing)
    await client.wait_for_edit(listing)
    await client.press("Change time", listing)
    await client.press("08:00", await client.next_message())
    assert says(await client.next_message(), "reminders.changed", days="Mon, Wed", time="08:00", exercise="Any exercise")
    await client.send("/reminders")
    listing = await client.next_message()
    await client.press("08:00 · Mon, Wed", listing)
    await client.wait_for_edit(listing)
    await client.press("Change days", listing)
    days = await client.next_message()
    assert "✓ Mon" in labels(days)
    await client.press("Every day", days)
    await client.wait_for_edit(days)
    await client.press("Next ›", days)
    assert says(await client.next_message(), "reminders.changed", days="every day", time="08:00", exercise="Any exercise")
    [schedule] = await schedules_of(bot, person.id)
    assert schedule.weekdays == 127 and schedule.local_time == time(8, 0)

    # Pause and resume.
    await client.send("/reminders")
    listing = await client.next_message()
    await client.press("08:00 · every day", listing)
    await client.wait_for_edit(listing)
    await client.press("Pause", listing)
    await client.wait_for_edit(listing)
    assert says(
        listing, "reminders.page_paused", days="every day", time="08:00", zone="Europe/Amsterdam", exercise="Any exercise"
    )
    [schedule] = await schedules_of(bot, person.id)
    assert not schedule.active and schedule.next_due_at is None
    await client.send("/reminders")
    assert "(paused)" in (await client.next_message()).text
    await client.press("Resume", listing)
    await client.wait_for_edit(listing)
    assert says(listing, "reminders.page", days="every day", time="08:00", zone="Europe/Amsterdam", exercise="Any exercise")
    [schedule] = await schedules_of(bot, person.id)
    assert schedule.active and schedule.next_due_at is not None

    # Delete, after a confirmation.
    await client.press("Delete", listing)
    await client.wait_for_edit(listing)
    assert says(listing, "reminders.delete_confirm", days="every day", time="08:00")
    await client.press("Yes, delete", listing)
    await client.wait_for_edit(listing)
    assert says(listing, "reminders.deleted")
    assert await schedules_of(bot, person.id) == []


async def test_a_due_reminder_arrives_with_buttons_snooze_and_skip(bot: RunningBot, emulator: BotApiEmulator):
    client = await enrolled_client(bot, emulator)
    person = await person_by_telegram_id(bot, client.id)
    reminder_id = await services(bot).reminders.add(person.id, set(range(7)), time(9, 0))
    await make_due_now(bot, reminder_id)

    delivered = await client.next_message(timeout=10)
    assert says(delivered, "outbox.practice_reminder")
    assert labels(delivered) == ["Start now", "Snooze 15 min", "Skip today"]
    [row] = await outbox_of(bot, person.id)
    assert row.idempotency_key.startswith(f"schedule:{reminder_id}:")

    # Start now (a reminder for any exercise) opens the /practice menu, and takes the buttons off.
    await client.press("Start now", delivered)
    menu = await client.next_message()
    assert "Calming exercises" in menu.content and "Slow breathing" in labels(menu)
    assert labels(delivered) == []

    # Snooze: a one-off row 15 minutes later, with its own key; pressing again adds nothing.
    await client.press_data(services(bot).callbacks.pack(client.id, "rem.snooze", row.id), delivered)
    assert says(await client.next_message(), "reminders.snoozed")
    await client.press_data(services(bot).callbacks.pack(client.id, "rem.snooze", row.id), delivered)
    assert says(await client.next_message(), "reminders.snoozed")
    rows = await outbox_of(bot, person.id)
    [snoozed] = [r for r in rows if r.idempotency_key == f"snooze:{row.id}"]
    assert len(rows) == 2 and snoozed.state is OutboxState.PENDING
    assert timedelta(minutes=14) < snoozed.due_at - utcnow() <= timedelta(minutes=15)
    async with services(bot).sessions.begin() as session:  # let the 15 minutes pass
        await session.execute(update(OutboxMessage).where(OutboxMessage.id == snoozed.id).values(due_at=utcnow()))
    again = await client.next_message(timeout=10)
    assert says(again, "outbox.practice_reminder") and labels(again) == ["Start now", "Snooze 15 min", "Skip today"]

    # Skip today: the queued snoozes are cancelled.
    await services(bot).reminders.snooze(person.id, snoozed.id)
    assert any(r.idempotency_key == f"snooze:{snoozed.id}" for r in await outbox_of(bot, person.id))
    await client.press("Skip today", again)
    assert says(await client.next_message(), "reminders.skipped")
    assert not [r for r in await outbox_of(bot, person.id) if r.state is OutboxState.PENDING]
    assert labels(again) == []  # the buttons are gone


async def test_start_now_opens_the_reminders_own_exercise(bot: RunningBot, emulator: BotApiEmulator):
    client = await enrolled_client(bot, emulator)
    person = await person_by_telegram_id(bot, client.id)
    reminder_id = await services(bot).reminders.add(person.id, set(range(7)), time(9, 0), "grounding")
    await make_due_now(bot, reminder_id)

    delivered = await client.next_message(timeout=10)
    assert says(delivered, "outbox.practice_reminder_for.grounding")
    assert labels(delivered) == ["Start now", "Snooze 15 min", "Skip today"]
    await client.press("Start now", delivered)
    question = await client.next_message()
    assert says(question, "exercises.rating.before") and labels(question)[:11] == [str(n) for n in range(11)]
    await client.press("4", question)
    assert says(await client.next_message(), "exercises.grounding.intro")
    assert labels(delivered) == []

    # Pressed again (as from an older reminder): the exercise under way ends as stopped early
    # (its rating kept) and the same exercise begins anew.
    [row] = await outbox_of(bot, person.id)
    await client.press_data(services(bot).callbacks.pack(client.id, "rem.start", row.id), delivered)
    assert says(await client.next_message(), "exercises.rating.before")
    async with services(bot).sessions() as session:
        [first] = (await session.scalars(select(ExerciseRun))).all()
    assert (first.exercise, first.distress_before, first.stopped_early) == ("grounding", "4", True)


async def test_a_time_zone_change_plans_reminders_anew(bot: RunningBot, emulator: BotApiEmulator):
    client = await enrolled_client(bot, emulator)
    person = await person_by_telegram_id(bot, client.id)
    await services(bot).reminders.add(person.id, set(range(7)), time(9, 0))
    [before] = await schedules_of(bot, person.id)
    assert before.next_due_at.astimezone(AMSTERDAM).time() == time(9, 0)

    await client.send("/timezone")
    await client.next_message()
    await client.send("America/New_York")
    assert says(await client.next_message(), "account.timezone.changed", zone="America/New_York")
    [after] = await schedules_of(bot, person.id)
    assert after.next_due_at.astimezone(ZoneInfo("America/New_York")).time() == time(9, 0)
    assert after.next_due_at != before.next_due_at


async def test_another_clients_reminder_is_refused(bot: RunningBot, emulator: BotApiEmulator):
    owner = await enrolled_client(bot, emulator, "Sam")
    owner_person = await person_by_telegram_id(bot, owner.id)
    therapist = await person_by_telegram_id(bot, 8001)
    other = emulator.user(first_name="Kim")
    therapist_identity = Identity(8001, "x", Role.THERAPIST, therapist.id, "en", "Europe/Amsterdam")
    assert says(await join(other, await client_token(bot, therapist_identity, alias="Kim")), "client_join.done", zone="Europe/Amsterdam")
    reminder_id = await services(bot).reminders.add(owner_person.id, {0}, time(9, 0))
    await make_due_now(bot, reminder_id)
    await owner.next_message(timeout=10)
    [row] = await outbox_of(bot, owner_person.id)

    codec = services(bot).callbacks
    await other.send("/reminders")
    listing = await other.next_message()
    denied = content.text("access.denied", "en")
    for action, record in [
        ("rem.open", reminder_id), ("rem.del_ok", reminder_id), ("rem.pause", reminder_id),
        ("rem.snooze", row.id), ("rem.skip", row.id), ("rem.start", row.id),
    ]:
        query = await other.press_data(codec.pack(other.id, action, record), listing)
        assert (await other.wait_for_callback_answer(query)).text == denied, action
    # ... and the owner's own payload, pressed by someone else, fails its signature.
    query = await other.press_data(codec.pack(owner.id, "rem.open", reminder_id), listing)
    assert (await other.wait_for_callback_answer(query)).text == denied
    [schedule] = await schedules_of(bot, owner_person.id)
    assert schedule.active
    assert len(await outbox_of(bot, owner_person.id)) == 1  # no snooze queued
    async with services(bot).sessions() as session:
        refusals = (await session.scalars(select(AuditEvent))).all()
    assert len([e for e in refusals if "denied" in str(e.action)]) >= 6


def test_outbox_buttons_only_under_reminders_and_prompts_and_signed_for_the_recipient():
    from datetime import datetime

    from bot.callbacks import CallbackCodec
    from bot.crypto.keyring import generate_keyring
    from bot.delivery.buttons import OutboxButtons
    from bot.delivery.store import Claimed

    codec = CallbackCodec(generate_keyring())
    buttons = OutboxButtons(content, codec)

    def row(kind: str, body: str | None = None, language: str = "en") -> Claimed:
        return Claimed(
            id=123456789012345678, token="t", recipient_id=1, chat_id=777, language=language,
            timezone="UTC", recipient_active=True, kind=kind,
            content_key=None if body else "outbox.practice_reminder", params=None, body=body,
            undecryptable=False, due_at=datetime.now(), expires_at=None, attempts=1, quiet_hours=None,
        )

    markup = buttons(row("reminder", language="nl"))
    pressed = [b for line in markup.inline_keyboard for b in line]
    assert [b.text for b in pressed] == ["Nu beginnen", "Over 15 min", "Vandaag overslaan"]
    assert [codec.unpack(777, b.callback_data) for b in pressed] == [["123456789012345678"]] * 3
    prompt = [b for line in buttons(row("check_in_prompt")).inline_keyboard for b in line]
    assert [b.text for b in prompt] == ["Start my check-in"]  # issue 13, answered by handlers/checkin.py
    assert codec.unpack(777, prompt[0].callback_data, "ci.start") == ["123456789012345678"]
    assert buttons(row("notice")) is None
    assert buttons(row("reminder", body="<b>sealed</b>")) is None


async def test_a_client_who_blocked_and_unblocked_the_bot_gets_reminders_again(
    bot: RunningBot, emulator: BotApiEmulator
):
    client = await enrolled_client(bot, emulator)
    person = await person_by_telegram_id(bot, client.id)
    reminder_id = await services(bot).reminders.add(person.id, set(range(7)), time(9, 0))

    async def active() -> bool:
        return (await person_by_telegram_id(bot, client.id)).active

    client.block()  # Telegram tells the bot (my_chat_member): the client is not reachable
    await emulator.updates_processed()
    assert not await active()
    await make_due_now(bot, reminder_id)
    await bot.outbox_settled()  # whole ticks: nothing is queued for someone who blocked the bot
    assert await outbox_of(bot, person.id) == []

    client.unblock()
    await emulator.updates_processed()
    assert await active()
    await make_due_now(bot, reminder_id)
    delivered = await client.next_message(timeout=10)
    assert says(delivered, "outbox.practice_reminder")


async def test_a_deactivated_therapist_stays_inactive_after_unblocking(bot: RunningBot, emulator: BotApiEmulator):
    await enrolled_client(bot, emulator)
    therapist = emulator.user(8001)
    async with services(bot).sessions.begin() as session:
        await session.execute(
            update(Person).where(Person.telegram_id == 8001).values(active=False, deactivated_at=utcnow())
        )
    therapist.block()
    therapist.unblock()
    await emulator.updates_processed()
    assert not (await person_by_telegram_id(bot, 8001)).active


async def test_after_a_withdrawal_reminders_queue_nothing_and_come_back_with_consent(
    bot: RunningBot, emulator: BotApiEmulator
):
    client = await enrolled_client(bot, emulator)
    person = await person_by_telegram_id(bot, client.id)
    reminder_id = await services(bot).reminders.add(person.id, set(range(7)), time(9, 0))
    await client.send("/consent")
    await client.press("Withdraw my consent", await client.next_message())
    await client.press("Withdraw", await client.next_message())
    await client.next_message()

    await make_due_now(bot, reminder_id)
    await bot.outbox_settled()  # two whole dispatcher ticks, and what they claimed is sent
    await client.expect_silence(0.1)
    assert await outbox_of(bot, person.id) == [], "nothing is queued for a client without consent"
    [schedule] = await schedules_of(bot, person.id)
    assert schedule.active and schedule.next_due_at > utcnow(), "the schedule still advanced"

    await client.send("/consent")
    await client.press("Give consent again", await client.next_message())
    await client.press("I agree", await client.next_message())
    await client.next_message()
    await make_due_now(bot, reminder_id)
    assert says(await client.next_message(timeout=10), "outbox.practice_reminder")
