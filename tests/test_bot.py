"""The first slice end to end: simulated people talk to the real bot through the emulator.

Every test runs on a fresh SQLite file and, when TEST_DATABASE_URL is set, on a fresh
PostgreSQL database. Expected words come from content/, the single source of the texts.
"""

from __future__ import annotations

import asyncio
import io
import logging

import pytest
from sqlalchemy import select

from bot.content import Content
from bot.logs import PrivacyFilter
from bot.db.models import AuditEvent, ConversationState, Person, Role
from bot.sandbox.emulator import BotApiEmulator
from tests.fixtures_bot import ADMIN_ID, RunningBot


def first_line(text: str) -> str:
    """The first line of a content text without its HTML tags, as the emulator stores it."""
    import re

    return re.sub(r"<[^>]+>", "", text).splitlines()[0].strip()


async def test_start_offers_the_tour_and_pages_turn(bot: RunningBot, emulator: BotApiEmulator, content: Content):
    client = emulator.user(first_name="Sam", language_code="en")
    await client.send("/start")
    welcome = await client.next_message()
    assert welcome.text.startswith("Hello Sam, welcome.")
    assert [label for row in welcome.buttons for label, _ in row] == ["Take the tour", "Not now"]
    assert welcome.protect_content is True

    await client.press("Take the tour")
    page = await client.next_message()
    pages = content.texts("tour.pages", "en")
    assert page.text.startswith(first_line(pages[0]))
    assert "1 of 4" in page.text
    assert client.callback_answers, "the button press was answered"

    await client.press("Next ›", page)
    edited = await client.wait_for_edit(page)
    assert edited.text.startswith(first_line(pages[1])) and "2 of 4" in edited.text
    await client.press("‹ Back", edited)
    edited = await client.wait_for_edit(edited)
    assert "1 of 4" in edited.text

    for n in (2, 3, 4):
        await client.press("Next ›", edited)
        edited = await client.wait_for_edit(edited)
        assert f"{n} of 4" in edited.text
    assert [label for row in edited.buttons for label, _ in row] == ["‹ Back", "Done"]
    await client.press("Done", edited)
    finished = await client.next_message()
    assert finished.text.startswith("That was the tour.")


async def test_the_tour_is_in_dutch_for_a_dutch_telegram(bot: RunningBot, emulator: BotApiEmulator, content: Content):
    client = emulator.user(first_name="Noor", language_code="nl-BE")
    await client.send("/start")
    welcome = await client.next_message()
    assert welcome.text == _plain(content.text("start.welcome", "nl", name="Noor"))


async def test_help_about_and_cancel(bot: RunningBot, emulator: BotApiEmulator):
    client = emulator.user(first_name="Sam")
    await client.send("/help")
    help_text = (await client.next_message()).text
    assert "/about" in help_text and "/cancel" in help_text
    assert "113" in help_text, "help points to crisis resources"

    await client.send("/about")
    about = (await client.next_message()).text
    assert "not an emergency service" in about
    assert "Rescripting and work on memories happen only in a session with your therapist" in about

    await client.send("/cancel")
    assert (await client.next_message()).text.startswith("There is nothing to stop right now.")

    # /cancel inside the welcome conversation ends it; its buttons are then stale.
    await client.send("/start")
    offer = await client.next_message()
    await client.send("/cancel")
    assert (await client.next_message()).text.startswith("Okay, we've stopped.")
    await client.press("Take the tour", offer)
    await client.expect_silence(0.5)
    assert client.callback_answers[-1]["text"] == "This button is no longer active."


@pytest.mark.parametrize("word", ["stop", "STOP!", "✋", "stoppen", "✋🏽"])
async def test_a_stop_word_ends_the_conversation_like_cancel(bot: RunningBot, emulator: BotApiEmulator, word: str):
    client = emulator.user(first_name="Sam")
    await client.send("/start")
    await client.next_message()
    await client.press("Take the tour")
    page = await client.next_message()
    await client.send(word)
    assert (await client.next_message()).text.startswith("Okay, we've stopped.")
    await client.press("Next ›", page)
    await client.expect_silence(0.3)
    assert client.callback_answers[-1]["text"] == "This button is no longer active."
    # Outside a conversation a stop word is understood too, and nothing needs stopping.
    await client.send(word)
    assert (await client.next_message()).text.startswith("There is nothing to stop right now.")


async def test_stop_inside_a_longer_sentence_is_not_a_stop_word(bot: RunningBot, emulator: BotApiEmulator):
    client = emulator.user()
    await client.send("/start")
    await client.next_message()
    await client.send("please don't stop the tour")
    assert (await client.next_message()).text.startswith("Please use the buttons")


async def test_unknown_commands_stray_text_and_typing_during_buttons(bot: RunningBot, emulator: BotApiEmulator):
    client = emulator.user()
    await client.send("/frobnicate")
    assert (await client.next_message()).text.startswith("I don't know that command.")

    await client.send("hello there")
    reply = (await client.next_message()).text
    assert reply.startswith("I can't reply to messages in my own words")
    assert "113" in reply

    await client.send("/start")
    await client.next_message()
    await client.send("what is this?")
    assert (await client.next_message()).text.startswith("Please use the buttons")


async def test_start_with_an_unknown_invite_stores_nothing(bot: RunningBot, emulator: BotApiEmulator, db_sessions):
    client = emulator.user()
    await client.send("/start not-a-real-invite")
    assert (await client.next_message()).text.startswith("This link is not one I recognise.")
    async with db_sessions() as session:
        assert (await session.scalars(select(Person))).all() == []


async def test_an_admin_from_the_configuration_is_recognised(bot: RunningBot, emulator: BotApiEmulator, db_sessions):
    admin = emulator.user(ADMIN_ID, first_name="Ada")
    await admin.send("/start")
    assert (await admin.next_message()).text.startswith("Hello Ada. You are signed in as an administrator")
    await admin.send("/help")
    assert "(administrator)" in (await admin.next_message()).text

    async with db_sessions() as session:
        person = (await session.scalars(select(Person))).one()
        assert person.telegram_id == ADMIN_ID and person.role == Role.ADMIN
        events = (await session.scalars(select(AuditEvent))).all()
        assert [e.action for e in events] == ["admin.registered"]

    # The admin's own command menu was set in their chat.
    scoped = [k for k in emulator.commands if "chat" in str(k) and str(ADMIN_ID) in str(k)]
    assert scoped, f"no chat-scoped menu for the admin in {list(emulator.commands)}"

    # A second /start neither duplicates the person nor the audit event.
    await admin.send("/start")
    await admin.next_message()
    async with db_sessions() as session:
        assert len((await session.scalars(select(Person))).all()) == 1
        assert len((await session.scalars(select(AuditEvent))).all()) == 1


async def test_command_menus_and_profile_are_set_per_language(bot: RunningBot, emulator: BotApiEmulator, content: Content):
    methods = {method for method, _ in emulator.calls}
    assert {"setMyCommands", "setMyDescription", "setMyShortDescription"} <= methods
    menu_calls = [params for method, params in emulator.calls if method == "setMyCommands"]
    languages = {params.get("language_code") for params in menu_calls}
    assert {None, "nl"} <= languages
    english = next(p for p in menu_calls if p.get("language_code") is None and "scope" in p and "default" in str(p["scope"]))
    assert [c["command"] for c in _commands(english)] == [c.command for c in content.commands("everyone", "en")]
    assert {"start", "help", "about", "cancel"} <= {c["command"] for c in _commands(english)}


async def test_groups_get_a_polite_refusal(bot: RunningBot, emulator: BotApiEmulator):
    group = emulator.group()
    member = emulator.user(first_name="Someone")
    await group.send(member, "/start")
    refusal = await group.next_message()
    assert refusal.text.startswith("Hello! I only talk in private chats")
    for _ in range(100):
        if any(method == "leaveChat" for method, _ in emulator.calls):
            break
        await asyncio.sleep(0.02)
    else:
        raise AssertionError("the bot did not leave the group")


async def test_a_restart_mid_conversation_resumes_where_the_person_was(
    bot: RunningBot, emulator: BotApiEmulator, db_sessions
):
    client = emulator.user(first_name="Robin")
    await client.send("/start")
    await client.next_message()
    await client.press("Take the tour")
    page = await client.next_message()
    await client.press("Next ›", page)
    page = await client.wait_for_edit(page)
    assert "2 of 4" in page.text

    async with db_sessions() as session:
        states = (await session.scalars(select(ConversationState))).all()
        assert [(s.name, s.state) for s in states] == [("welcome", "tour")]

    await bot.restart()

    await client.press("Next ›", page)
    page = await client.wait_for_edit(page)
    assert "3 of 4" in page.text, "the tour went on after the restart"


async def test_errors_are_logged_without_what_people_wrote(bot: RunningBot, emulator: BotApiEmulator):
    """Even at DEBUG, with a handler failing on a message, no log line carries the text."""
    marker = "MARKER-7f3a my private words"
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(PrivacyFilter(token=emulator.token))
    root = logging.getLogger()
    root.addHandler(handler)
    old_level, root.level = root.level, logging.DEBUG
    try:
        client = emulator.user()
        emulator.inject("sendMessage", status=500, count=1, chat_id=client.chat_id)
        await client.send(marker)
        apology = await client.next_message()
        await client.send("/start " + marker)
        await client.next_message()
    finally:
        root.removeHandler(handler)
        root.level = old_level
    logged = stream.getvalue()
    assert apology.text.startswith("Sorry, something went wrong on my side.")
    assert "Unhandled NetworkError while processing update" in logged
    assert "MARKER-7f3a" not in logged
    assert emulator.token.split(":")[1] not in logged


def _commands(params: dict) -> list[dict]:
    import json

    commands = params["commands"]
    return json.loads(commands) if isinstance(commands, str) else commands


def _plain(html_text: str) -> str:
    import html
    import re

    return html.unescape(re.sub(r"<[^>]+>", "", html_text))
