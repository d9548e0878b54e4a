"""Helpers for the client-side tests (tests/test_join.py, tests/test_account.py): therapists
enrolled straight through the repositories (their own joining is tested elsewhere), client
invites made through the invite service, and a client joining through the emulator."""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import select

from bot.content import Content
from bot.context import SERVICES_KEY
from bot.db.models import InviteKind, Person, Role
from bot.db.repositories import PeopleRepository
from bot.sandbox.emulator.people import SimUser
from bot.sandbox.emulator.records import BotMessage
from bot.services import Services
from bot.services.people import Identity
from tests.fixtures_bot import RunningBot

content = Content()


def services(bot: RunningBot) -> Services:
    return bot.application.bot_data[SERVICES_KEY]


def plain(html: str) -> str:
    """A content text as the emulator stores it (tags removed, entities decoded)."""
    return re.sub(r"<[^>]+>", "", html).replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


ANY = "\x00"  # stands for a placeholder the caller did not give


def first_line(key: str, lang: str = "en", **params: Any) -> str:
    """The first line of a content text as shown (placeholders not given: ``ANY``)."""
    filled = {name: ANY for name in content.placeholders(key, lang)} | params
    return plain(content.text(key, lang, **filled)).strip().splitlines()[0]


def says(message: BotMessage, key: str, lang: str = "en", **params: Any) -> bool:
    """Whether the message begins with the first line of content text ``key``."""
    line = first_line(key, lang, **params)
    pattern = ".*?".join(re.escape(part) for part in line.split(ANY))
    return re.match(pattern, message.content) is not None


def labels(message: BotMessage) -> list[str]:
    return [label for row in message.buttons for label, _ in row]


async def add_person(
    bot: RunningBot, telegram_id: int, role: Role, *, display_name: str | None = None, language: str = "en"
) -> Identity:
    """A therapist, staff member or client stored directly (encrypted with the bot's keys)."""
    async with services(bot).sessions.begin() as session:
        person = await PeopleRepository(session).add(
            Person(
                telegram_id=telegram_id,
                role=role,
                language=language,
                timezone="Europe/Amsterdam",
                display_name=display_name,
            )
        )
    return Identity(telegram_id, "x", role, person.id, language, "Europe/Amsterdam")


async def client_token(bot: RunningBot, therapist: Identity, alias: str | None = "Robin") -> str:
    made = await services(bot).invites.create(therapist, InviteKind.CLIENT, bot_username="imrs_bot", alias=alias)
    return made.token


async def join(client: SimUser, token: str, *, language: str = "English", zone: str = "amsterdam") -> BotMessage:
    """The whole join conversation; returns the final message."""
    await client.send(f"/start {token}")
    await client.press(0, await client.next_message())  # Continue
    await client.press(0, await client.next_message())  # Read the consent
    consent = await client.next_message()
    await client.press(0, consent)  # I agree
    await client.next_message()  # consent recorded
    question = await client.next_message()
    await client.press(next(label for label in labels(question) if label.endswith(language)), question)
    await client.next_message()  # the time zone question
    await client.send(zone)
    return await client.next_message()


async def person_by_telegram_id(bot: RunningBot, telegram_id: int) -> Person | None:
    async with services(bot).sessions() as session:
        return await PeopleRepository(session).get_by_telegram_id(telegram_id)


async def count_people(bot: RunningBot) -> int:
    async with services(bot).sessions() as session:
        return len((await session.scalars(select(Person.id))).all())


async def open_chat(user: SimUser) -> SimUser:
    """A person who has talked to the bot before (Telegram lets a bot write only to them)."""
    await user.send("/help")
    await user.next_message()
    return user
