"""Authorization, derived from the registered handlers so that a new one cannot be missed.

1. Every callback registered in the application declares who may use it (``@public`` or
   ``@requires``).
2. The matrix: every restricted command is tried by every role that may not use it (and by
   a stranger); each attempt is refused, changes nothing, and lands in the audit log.
3. Restricted buttons: a payload signed for the presser but of an action their role may not
   use is refused; a payload signed for someone else, or altered, is refused by the handler.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import select
from telegram.ext import (
    Application,
    BaseHandler,
    CallbackQueryHandler,
    CommandHandler,
    ConversationHandler,
)

from bot.callbacks import CallbackCodec, InvalidPayload
from bot.crypto.keyring import generate_keyring
from bot.db.models import AuditEvent, Person, Role
from bot.db.repositories import PeopleRepository
from bot.sandbox.emulator import BotApiEmulator
from handlers.access import allowed_roles
from tests.fixtures_bot import ADMIN_ID, RunningBot

ROLES: list[Role | None] = [None, *Role]  # None: someone the practice has not enrolled


def walk(handlers: list[BaseHandler]) -> Iterator[BaseHandler]:
    for handler in handlers:
        if isinstance(handler, ConversationHandler):
            yield from walk(handler.entry_points)
            for state_handlers in handler.states.values():
                yield from walk(state_handlers)
            yield from walk(handler.fallbacks)
        else:
            yield handler


def registered(application: Application) -> list[BaseHandler]:
    return [h for group in sorted(application.handlers) for h in walk(application.handlers[group])]


def restricted_commands(application: Application) -> dict[str, frozenset[Role]]:
    found: dict[str, frozenset[Role]] = {}
    for handler in registered(application):
        roles = allowed_roles(handler.callback)
        if isinstance(handler, CommandHandler) and roles:
            for command in handler.commands:
                found[command] = found.get(command, frozenset()) | roles
    return found


async def test_every_handler_declares_who_may_use_it(bot: RunningBot):
    undeclared = [
        f"{type(h).__name__}({getattr(h.callback, '__qualname__', h.callback)})"
        for h in registered(bot.application)
        if allowed_roles(h.callback) is False
    ]
    assert undeclared == []


async def enrol(db_sessions, telegram_id: int, role: Role) -> None:
    async with db_sessions.begin() as session:
        await PeopleRepository(session).add(
            Person(telegram_id=telegram_id, role=role, language="en", timezone="Europe/Amsterdam")
        )


async def test_restricted_commands_are_refused_to_every_other_role(
    bot: RunningBot, emulator: BotApiEmulator, db_sessions
):
    commands = restricted_commands(bot.application)
    assert {"invite", "clients", "therapists", "staff", "mydata", "delete", "consent", "safetyplan", "setkey", "summaries", "appointments", "broadcast", "broadcasts", "settings"} <= set(commands)
    people = {}
    for n, role in enumerate(ROLES):
        telegram_id = ADMIN_ID if role is Role.ADMIN else 5000 + n
        if role not in (None, Role.ADMIN):
            await enrol(db_sessions, telegram_id, role)
        people[role] = emulator.user(telegram_id, first_name=f"as-{role}")
    attempts = 0
    for command, allowed in sorted(commands.items()):
        for role, user in people.items():
            if role in allowed:
                continue
            await user.send(f"/{command}")
            reply = await user.next_message()
            assert reply.text.startswith("Sorry, that is not available to you."), (command, role)
            attempts += 1
    async with db_sessions() as session:
        denied = (await session.scalars(select(AuditEvent).where(AuditEvent.action == "access.denied"))).all()
    assert len(denied) == attempts
    assert all(e.detail and e.detail["reason"] == "role" for e in denied)


def test_signed_payloads_bind_person_action_and_arguments():
    keyring = generate_keyring()
    codec = CallbackCodec(keyring)
    data = codec.pack(111, "clients.open", 8123456789)
    assert len(data.encode()) <= 64
    assert codec.pattern("clients.open").match(data)
    assert codec.unpack(111, data, "clients.open") == ["8123456789"]
    with pytest.raises(InvalidPayload):
        codec.unpack(222, data)  # pressed by someone else
    with pytest.raises(InvalidPayload):
        codec.unpack(111, data.replace("8123456789", "8123456788"))  # another record
    with pytest.raises(InvalidPayload):
        codec.unpack(111, data, "clients.unlink")  # another action
    with pytest.raises(InvalidPayload):
        codec.unpack(111, "clients.open|8123456789")  # unsigned
    with pytest.raises(ValueError):
        codec.pack(111, "notes.save", "free text with spaces")
    # Still valid after a rotation while the old key is in the keyring; not after retiring it.
    newer = generate_keyring()
    rotated = type(keyring)(active=newer.active, keys={**keyring.keys, **newer.keys})
    assert CallbackCodec(rotated).unpack(111, data) == ["8123456789"]
    with pytest.raises(InvalidPayload):
        CallbackCodec(newer).unpack(111, data)
