"""/learn end to end through the emulator (SQLite and, with TEST_DATABASE_URL, PostgreSQL):
every page of every module, Back, progress, Done, stale and forged buttons, "Ask my
therapist about this" stored once, and strangers reading without anything stored.
"""

from __future__ import annotations

from sqlalchemy import func, select

from bot.content import Content, Module
from bot.db.models import AuditEvent, LearnProgress, Role, TherapistQuestion
from bot.sandbox.emulator import BotApiEmulator
from bot.sandbox.emulator.people import SimUser
from bot.sandbox.emulator.records import BotMessage
from handlers.learn import ASK, PAGE
from tests.fixtures_bot import RunningBot
from tests.join_support import (
    add_person,
    client_token,
    count_people,
    join,
    labels,
    open_chat,
    plain,
    says,
    services,
)

EN = Content()
MODULES = EN.modules("en")


def text(key: str, **params: object) -> str:
    return plain(EN.text(key, "en", **params))


def shows_page(message: BotMessage, module: Module, page: int) -> bool:
    first_line = plain(module.pages[page - 1]).strip().splitlines()[0]
    counter = text("learn.page_counter", page=page, pages=len(module.pages))
    return (
        message.content.startswith(module.title)
        and first_line in message.content
        and message.content.rstrip().endswith(counter)
    )


async def enrolled_client(bot: RunningBot, emulator: BotApiEmulator) -> SimUser:
    therapist = await add_person(bot, 8001, Role.THERAPIST, display_name="Dr. Jansen")
    therapist_chat = await open_chat(emulator.user(8001, first_name="Jan"))
    client = emulator.user(first_name="Sam")
    assert says(await join(client, await client_token(bot, therapist)), "client_join.done", zone="Europe/Amsterdam")
    await therapist_chat.next_message()  # joined notice
    return client


async def open_menu(user: SimUser) -> BotMessage:
    await user.send("/learn")
    menu = await user.next_message()
    assert says(menu, "learn.menu"), menu.content
    return menu


async def press(user: SimUser, label: str, message: BotMessage) -> BotMessage:
    await user.press(label, message)
    return await user.wait_for_edit(message)


def menu_label(module: Module, menu: BotMessage) -> str:
    return next(label for label in labels(menu) if label in (module.title, f"✓ {module.title}"))


async def rows(bot: RunningBot, model: type) -> list:
    async with services(bot).sessions() as session:
        return list(await session.scalars(select(model)))


async def test_every_page_of_every_module_with_next_back_and_progress(bot: RunningBot, emulator: BotApiEmulator):
    client = await enrolled_client(bot, emulator)
    message = await open_menu(client)
    total = len(MODULES)
    assert text("learn.progress", read=0, total=total) in message.content
    assert labels(message) == [m.title for m in MODULES]

    for done, module in enumerate(MODULES, 1):
        await press(client, menu_label(module, message), message)
        pages = len(module.pages)
        assert shows_page(message, module, 1), message.content
        for page in range(2, pages + 1):  # forward with Next
            await press(client, text("learn.next_button"), message)
            assert shows_page(message, module, page), (module.id, page, message.content)
        assert text("learn.next_button") not in labels(message)
        assert text("learn.done_button") in labels(message)
        if module.sources:
            assert text("learn.sources_heading") in message.content
        for page in range(pages - 1, 0, -1):  # and back with Back
            await press(client, text("learn.back_button"), message)
            assert shows_page(message, module, page), (module.id, page, message.content)
        assert text("learn.back_button") not in labels(message), "no Back on the first page"
        for _ in range(pages - 1):
            await press(client, text("learn.next_button"), message)
        await press(client, text("learn.done_button"), message)
        progress = text("learn.progress", read=done, total=total)
        assert message.content.startswith(text("learn.module_done", title=module.title, progress=progress)), message.content
        assert (text("learn.all_read") in message.content) is (done == total)
        await press(client, text("learn.menu_button"), message)
        assert says(message, "learn.menu") and progress in message.content
        assert f"✓ {module.title}" in labels(message)

    assert labels(message) == [f"✓ {m.title}" for m in MODULES]
    stored = await rows(bot, LearnProgress)
    assert {(r.module_id, r.pages_read) for r in stored} == {(m.id, len(m.pages)) for m in MODULES}
    assert all(r.completed_at is not None for r in stored)


async def test_progress_counts_modules_read_to_the_end(bot: RunningBot, emulator: BotApiEmulator):
    client = await enrolled_client(bot, emulator)
    module = next(m for m in MODULES if len(m.pages) >= 2)
    message = await open_menu(client)
    await press(client, module.title, message)
    await press(client, text("learn.next_button"), message)  # page 2: not the end (unless 2 pages)
    await press(client, text("learn.menu_button"), message)
    read = 1 if len(module.pages) == 2 else 0
    assert text("learn.progress", read=read, total=len(MODULES)) in message.content
    (row,) = await rows(bot, LearnProgress)
    assert row.module_id == module.id and row.pages_read == 2
    # Reading it again from the start does not lower what was reached, nor count twice.
    await press(client, menu_label(module, message), message)
    for _ in range(len(module.pages) - 1):
        await press(client, text("learn.next_button"), message)
    await press(client, text("learn.menu_button"), message)
    await press(client, menu_label(module, message), message)
    await press(client, text("learn.menu_button"), message)
    assert text("learn.progress", read=1, total=len(MODULES)) in message.content
    (row,) = await rows(bot, LearnProgress)
    assert row.pages_read == len(module.pages) and row.completed_at is not None


async def test_buttons_on_old_messages(bot: RunningBot, emulator: BotApiEmulator):
    client = await enrolled_client(bot, emulator)
    first, second = MODULES[0], MODULES[1]
    old = await open_menu(client)
    await press(client, first.title, old)  # old: page 1 of the first module
    new = await open_menu(client)  # the client moved on: another menu, another module
    await press(client, second.title, new)
    await press(client, text("learn.menu_button"), new)

    # Next on the old page message still shows what it says, in that message.
    await press(client, text("learn.next_button"), old)
    assert shows_page(old, first, 2), old.content
    assert says(new, "learn.menu"), "the other message is left alone"

    # A button naming a module that no longer exists: told so, and the menu instead.
    gone = services(bot).callbacks.pack(client.id, PAGE, "no-such-module", 1)
    answer = await client.wait_for_callback_answer(await client.press_data(gone, old))
    assert answer.text == text("fallback.stale_button")
    await client.wait_for_edit(old)
    assert says(old, "learn.menu")

    # A page past the end (the module got shorter): its last page.
    past = services(bot).callbacks.pack(client.id, PAGE, first.id, 99)
    await client.press_data(past, old)
    await client.wait_for_edit(old)
    assert shows_page(old, first, len(first.pages)), old.content


async def test_ask_my_therapist_is_stored_once_and_read_by_a_summary(bot: RunningBot, emulator: BotApiEmulator):
    client = await enrolled_client(bot, emulator)
    module = next(m for m in MODULES if len(m.pages) >= 2)
    message = await open_menu(client)
    await press(client, module.title, message)
    await press(client, text("learn.next_button"), message)
    await client.press(text("learn.ask_button"), message)
    assert says(await client.next_message(), "learn.ask_saved", title=module.title)
    await client.press(text("learn.ask_button"), message)  # again
    assert says(await client.next_message(), "learn.ask_already")
    await press(client, text("learn.back_button"), message)
    await client.press(text("learn.ask_button"), message)  # another page of the same module
    assert says(await client.next_message(), "learn.ask_already")
    assert shows_page(message, module, 1), "the page stays"

    (question,) = await rows(bot, TherapistQuestion)
    assert (question.module_id, question.page, question.included_in_summary_at) == (module.id, 2, None)

    # What a summary does: read the open questions, show them, close them.
    learning = services(bot).learning
    (found,) = await learning.open_questions(question.client_id)
    assert (found.id, found.module_id, found.page) == (question.id, module.id, 2)
    assert learning.summary_lines([found], "en") == [EN.text("learn.summary_question", "en", title=module.title)]
    assert learning.summary_lines([found], "nl") == [
        EN.text("learn.summary_question", "nl", title=EN.module(module.id, "nl").title)
    ]
    assert await learning.mark_included(question.client_id, [found.id]) == 1
    assert await learning.mark_included(question.client_id, [found.id]) == 0
    assert await learning.open_questions(question.client_id) == []
    # After the summary the client may ask about it again.
    await client.press(text("learn.ask_button"), message)
    assert says(await client.next_message(), "learn.ask_saved", title=module.title)
    assert len(await rows(bot, TherapistQuestion)) == 2
    assert len(await learning.open_questions(question.client_id)) == 1


async def test_a_stranger_reads_everything_and_nothing_is_stored(bot: RunningBot, emulator: BotApiEmulator):
    stranger = emulator.user(first_name="Kim")
    message = await open_menu(stranger)
    assert text("learn.progress", read=0, total=len(MODULES)) not in message.content
    people = await count_people(bot)
    for module in MODULES:
        await press(stranger, module.title, message)
        for page in range(2, len(module.pages) + 1):
            await press(stranger, text("learn.next_button"), message)
            assert shows_page(message, module, page)
        await stranger.press(text("learn.ask_button"), message)
        assert says(await stranger.next_message(), "learn.ask_unavailable")
        await press(stranger, text("learn.done_button"), message)
        assert message.content.startswith(text("learn.module_done", title=module.title, progress="").rstrip())
        await press(stranger, text("learn.menu_button"), message)
        assert labels(message) == [m.title for m in MODULES], "no ✓: nothing remembered"
    assert await count_people(bot) == people
    assert await rows(bot, LearnProgress) == [] and await rows(bot, TherapistQuestion) == []


async def test_a_therapist_reads_without_progress_or_questions(bot: RunningBot, emulator: BotApiEmulator):
    await add_person(bot, 8002, Role.THERAPIST, display_name="Dr. Smit")
    therapist = emulator.user(8002, first_name="Sara")
    message = await open_menu(therapist)
    await press(therapist, MODULES[0].title, message)
    await therapist.press(text("learn.ask_button"), message)
    assert says(await therapist.next_message(), "learn.ask_unavailable")
    assert await rows(bot, LearnProgress) == [] and await rows(bot, TherapistQuestion) == []


async def test_forged_and_borrowed_payloads_are_refused(bot: RunningBot, emulator: BotApiEmulator):
    client = await enrolled_client(bot, emulator)
    module = MODULES[0]
    message = await open_menu(client)
    await press(client, module.title, message)
    version = message.version
    forged = [
        f"{PAGE}|{module.id}|2|AAAAAAAAAAA",  # invented signature
        services(bot).callbacks.pack(client.id + 1, PAGE, module.id, 2),  # made for someone else
        services(bot).callbacks.pack(client.id, PAGE, module.id, 2).replace("|2|", "|3|"),  # altered
        f"{ASK}|{module.id}|1|AAAAAAAAAAA",
    ]
    for data in forged:
        answer = await client.wait_for_callback_answer(await client.press_data(data, message))
        assert answer.text == text("access.denied") and answer.show_alert
    assert message.version == version and shows_page(message, module, 1), "nothing changed"
    assert await rows(bot, TherapistQuestion) == []
    async with services(bot).sessions() as session:
        refused = await session.scalar(
            select(func.count()).select_from(AuditEvent).where(AuditEvent.action == "access.denied")
        )
    assert refused == len(forged)


async def test_concurrent_presses_store_one_question_and_one_progress_row(bot: RunningBot, emulator: BotApiEmulator):
    import asyncio

    client = await enrolled_client(bot, emulator)
    identity = await services(bot).people.identify(client.id, "Sam", "en")
    learning, module = services(bot).learning, MODULES[0]
    asked = await asyncio.gather(*(learning.ask(identity, module.id, 1) for _ in range(5)))
    assert sorted(asked) == sorted(["saved"] + ["already"] * 4)
    await asyncio.gather(*(learning.page_seen(identity, module.id, p, len(module.pages))
                           for p in range(1, len(module.pages) + 1)))
    (row,) = await rows(bot, LearnProgress)
    assert row.pages_read == len(module.pages) and row.completed_at is not None
    assert len(await rows(bot, TherapistQuestion)) == 1


async def test_a_client_without_a_therapist_cannot_ask_but_progress_is_kept(bot: RunningBot, emulator: BotApiEmulator):
    from sqlalchemy import update

    from bot.db.models import TherapistClientLink
    from bot.db.types import utcnow

    client = await enrolled_client(bot, emulator)
    async with services(bot).sessions.begin() as session:
        await session.execute(update(TherapistClientLink).values(ended_at=utcnow()))
    message = await open_menu(client)
    await press(client, MODULES[0].title, message)
    await client.press(text("learn.ask_button"), message)
    assert says(await client.next_message(), "learn.ask_unavailable")
    assert await rows(bot, TherapistQuestion) == []
    assert [r.module_id for r in await rows(bot, LearnProgress)] == [MODULES[0].id]


async def test_completion_time_is_stored_as_a_utc_time(bot: RunningBot, emulator: BotApiEmulator):
    from datetime import timedelta

    from bot.db.types import utcnow

    client = await enrolled_client(bot, emulator)
    identity = await services(bot).people.identify(client.id, "Sam", "en")
    module = MODULES[0]
    before = utcnow()
    await services(bot).learning.page_seen(identity, module.id, len(module.pages), len(module.pages))
    (row,) = await rows(bot, LearnProgress)
    assert before - timedelta(seconds=1) <= row.completed_at <= utcnow() + timedelta(seconds=1)
    assert row.completed_at.utcoffset() == timedelta(0)
