"""/settings (issue 15): clients turn practice announcements (staff broadcasts) off and on,
through the running bot and the emulator; forged and stale buttons; /mydata shows it."""

from __future__ import annotations

import json
from datetime import timedelta

from sqlalchemy import select

from bot.content import Content
from bot.db.delivery_models import OutboxKind, OutboxMessage, OutboxState
from bot.db.models import AuditEvent, Person, Role
from bot.db.types import utcnow
from bot.delivery.outbox import PlainMessage
from bot.sandbox.emulator import BotApiEmulator
from tests.fixtures_bot import RunningBot
from tests.join_support import add_person, labels, open_chat, person_by_telegram_id, says, services

CLIENT_TG = 9501


def t(key: str, **params) -> str:
    return Content().text(key, "en", **params)


async def audited(bot: RunningBot, action: str) -> list[AuditEvent]:
    async with services(bot).sessions() as session:
        return list((await session.scalars(select(AuditEvent).where(AuditEvent.action == action))).all())


async def test_a_client_turns_practice_announcements_off_and_on_again(bot: RunningBot, emulator: BotApiEmulator):
    me = await add_person(bot, CLIENT_TG, Role.CLIENT)
    # A staff broadcast's message to them, queued and not sent yet (due in an hour).
    async with services(bot).sessions.begin() as session:
        await services(bot).outbox.insert_plain(session, [PlainMessage(
            me.person_id, OutboxKind.BROADCAST, f"broadcast:77:{me.person_id}", utcnow() + timedelta(hours=1),
            "broadcast.message", {"broadcast": 77}, broadcast_id=77)])
    client = await open_chat(emulator.user(CLIENT_TG))
    await client.send("/help")
    assert "/settings — your settings; turn practice announcements" in (await client.next_message()).content
    await client.send("/settings")
    shown = await client.next_message()
    assert says(shown, "settings.title")
    assert "Language: English (change it with /language)" in shown.content
    assert "Time zone: Europe/Amsterdam" in shown.content
    assert "Practice announcements: on" in shown.content
    assert labels(shown) == [t("settings.turn_off_button")]
    await client.press(t("settings.turn_off_button"), shown)
    assert says(await client.next_message(), "settings.turned_off")
    assert labels(shown) == []  # the choice cannot be made twice
    assert (await person_by_telegram_id(bot, CLIENT_TG)).announcements is False
    async with services(bot).sessions() as session:  # the queued one will not go out: settled, counted
        row = await session.scalar(select(OutboxMessage).where(OutboxMessage.broadcast_id == 77))
    assert (row.state, row.last_error) == (OutboxState.FAILED, "opted_out")

    await client.send("/mydata")  # the export shows the setting
    export = json.loads((await client.next_message()).document.data.decode("utf-8"))
    assert export["person"]["announcements"] is False

    await client.send("/settings")
    shown = await client.next_message()
    assert "Practice announcements: off" in shown.content
    await client.press(t("settings.turn_on_button"), shown)
    assert says(await client.next_message(), "settings.turned_on")
    assert (await person_by_telegram_id(bot, CLIENT_TG)).announcements is True
    events = await audited(bot, "settings.announcements")
    assert [(e.detail["on"], e.detail["skipped"]) for e in sorted(events, key=lambda e: e.occurred_at)] == [
        (False, 1), (True, 0)]
    person_id = (await person_by_telegram_id(bot, CLIENT_TG)).id
    assert all(e.subject_person_id == person_id for e in events)


async def test_forged_altered_and_stale_settings_buttons_change_nothing(bot: RunningBot, emulator: BotApiEmulator):
    await add_person(bot, CLIENT_TG, Role.CLIENT)
    client = await open_chat(emulator.user(CLIENT_TG))
    codec = services(bot).callbacks
    await client.send("/settings")
    shown = await client.next_message()
    genuine = codec.pack(CLIENT_TG, "set.ann", 0)
    for data in (
        codec.pack(CLIENT_TG + 1, "set.ann", 0),  # made for someone else
        genuine[:-1] + ("B" if genuine.endswith("A") else "A"),  # altered signature (never the same)
        codec.pack(CLIENT_TG, "set.ann", 7),  # a value the bot never makes
        codec.pack(CLIENT_TG, "set.ann", 0, 1),
    ):
        answer = await client.wait_for_callback_answer(await client.press_data(data, shown))
        assert (answer.text or "").startswith("Sorry, that is not available to you."), data
    assert (await person_by_telegram_id(bot, CLIENT_TG)).announcements is True
    async with services(bot).sessions() as session:
        denied = (await session.scalars(select(AuditEvent).where(AuditEvent.action == "access.denied"))).all()
    assert len(denied) == 4 and {e.detail["reason"] for e in denied} == {"payload"}
    assert await audited(bot, "settings.announcements") == []
    # The real button still works after the forgeries...
    await client.press(t("settings.turn_off_button"), shown)
    assert says(await client.next_message(), "settings.turned_off")
    # ... and a button under an ended /settings is stale: another command ended the flow.
    await client.send("/settings")
    again = await client.next_message()
    await client.send("/learn")  # (/help and /about would leave it as it is)
    await client.next_message()
    answer = await client.wait_for_callback_answer(await client.press(t("settings.turn_on_button"), again))
    assert answer.text == t("fallback.stale_button")
    assert (await person_by_telegram_id(bot, CLIENT_TG)).announcements is False


async def test_others_see_their_settings_without_the_switch(bot: RunningBot, emulator: BotApiEmulator):
    for telegram_id, role in ((9601, Role.THERAPIST), (9602, Role.STAFF)):
        await add_person(bot, telegram_id, role, language="nl")
        user = await open_chat(emulator.user(telegram_id))
        await user.send("/settings")
        shown = await user.next_message()
        assert says(shown, "settings.title", "nl") and "Tijdzone: Europe/Amsterdam" in shown.content
        assert "praktijk" not in shown.content and labels(shown) == []
    stranger = await open_chat(emulator.user(9603))
    await stranger.send("/settings")
    assert (await stranger.next_message()).content.startswith("Sorry, that is not available to you.")
    async with services(bot).sessions() as session:
        assert (await session.scalar(select(Person).where(Person.telegram_id == 9601))).announcements is True
