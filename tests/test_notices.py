"""Notices to other people are queued in the transaction of the change that causes them.

For every kind of notice: it is queued exactly once, under a key derived from the change
(never random), with the text and recipient the person should get; and a failure after
the change, inside its transaction (the audit record fails), leaves neither the change nor
the notice, while a retry afterwards queues exactly one. Also: a time-zone change plans
the person's reminders anew in the same transaction.

These run the real services (``bot.runtime.open_services``) on a real database (SQLite,
and PostgreSQL with TEST_DATABASE_URL) and look in the outbox table itself; the delivery
of notices through the emulator is tested in test_join, test_account and test_clinic.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import time
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from bot.db.delivery_models import OutboxKind, OutboxMessage, ReminderSchedule
from bot.db.models import ConsentChoice, InviteKind, Person, Role, TherapistClientLink
from bot.db.repositories import AuditRepository, ConsentRepository, LinkRepository, PeopleRepository
from bot.db.types import utcnow
from bot.delivery.schedules import EVERY_DAY, ScheduleService
from bot.runtime import open_services
from bot.sandbox.emulator import BotApiEmulator
from bot.services import Services
from bot.services.enrollment import InviteUnavailable
from bot.services.invites import NotAllowed
from bot.services.names import InvalidAlias
from bot.services.people import Identity
from bot.services.preferences import UnknownZone
from tests.fixtures_bot import ADMIN_ID, make_settings, prepare_database
from tests.fixtures_delivery import grant_consent

ADMIN = Identity(ADMIN_ID, "Ada", Role.ADMIN, None, "en", "Europe/Amsterdam")


@pytest.fixture
async def services(emulator: BotApiEmulator, database_url: str) -> AsyncIterator[Services]:
    """The bot's services, without the bot: nothing delivers, so every notice stays queued."""
    await prepare_database(database_url)
    opened = await open_services(make_settings(emulator, database_url))
    try:
        yield opened
    finally:
        await opened.close()


async def add(
    services: Services, telegram_id: int, role: Role, *, name: str | None = None,
    alias: str | None = None, language: str = "en",
) -> Identity:
    async with services.sessions.begin() as session:
        person = await PeopleRepository(session).add(
            Person(telegram_id=telegram_id, role=role, language=language, timezone="Europe/Amsterdam",
                   display_name=name, alias=alias)
        )
        if role is Role.CLIENT:
            await grant_consent(session, [person.id])
    return Identity(telegram_id, "x", role, person.id, language, "Europe/Amsterdam")


async def link(services: Services, therapist: Identity, client: Identity) -> int:
    async with services.sessions.begin() as session:
        return (await LinkRepository(session).add(therapist.person_id, client.person_id, utcnow())).id


async def notices(services: Services) -> dict[str, tuple[int, str]]:
    """Every queued notice: idempotency key -> (recipient, text)."""
    async with services.sessions() as session:
        rows = await session.scalars(select(OutboxMessage).where(OutboxMessage.kind == OutboxKind.NOTICE))
        return {row.idempotency_key: (row.recipient_id, row.body) for row in rows}


def says(services: Services, key: str, language: str = "en", **params: Any) -> str:
    return services.content.text(key, language, **params)


async def fails_after_the_change(monkeypatch: pytest.MonkeyPatch, change: Callable[[], Awaitable[object]]) -> None:
    """Run ``change`` with the audit record (written after the change and its notices, in
    the same transaction) failing: the transaction must roll back as a whole."""

    async def crash(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("the database went away")

    monkeypatch.setattr(AuditRepository, "record", crash)
    try:
        with pytest.raises(RuntimeError, match="went away"):
            await change()
    finally:
        monkeypatch.undo()


# -- consent ------------------------------------------------------------------------------------


async def test_a_consent_decision_and_its_notice_commit_together(services: Services, monkeypatch):
    anna = await add(services, 9001, Role.THERAPIST, name="Anna", language="nl")
    robin = await add(services, 9002, Role.CLIENT, alias="Robin")
    await link(services, anna, robin)
    consent = services.consent

    await fails_after_the_change(monkeypatch, lambda: consent.withdraw(robin))
    assert (await consent.current(robin.person_id)).choice is ConsentChoice.GRANTED, "nothing changed"
    assert await notices(services) == {}

    withdrawn = await consent.withdraw(robin)
    assert withdrawn.changed
    async with services.sessions() as session:
        record = await ConsentRepository(session).latest(robin.person_id)
    # The therapist's language, their pseudonym for the client, nothing else.
    assert await notices(services) == {
        f"notice:consent:{record.id}": (
            anna.person_id, says(services, "account.consent.withdrawn_notice", "nl", alias="Robin")
        )
    }
    assert not (await consent.withdraw(robin)).changed  # pressed twice: no second notice
    assert len(await notices(services)) == 1

    regranted = await consent.grant(robin)
    async with services.sessions() as session:
        record = await ConsentRepository(session).latest(robin.person_id)
    assert regranted.changed and not regranted.was_granted
    found = await notices(services)
    assert found[f"notice:consent:{record.id}"] == (
        anna.person_id, says(services, "account.consent.regranted_notice", "nl", alias="Robin")
    )
    assert len(found) == 2
    await consent.grant(robin)  # the grant in force already: nothing for the therapist
    assert len(await notices(services)) == 2


async def test_a_client_without_a_pseudonym_is_named_as_unnamed(services: Services):
    anna = await add(services, 9011, Role.THERAPIST, name="Anna")
    kim = await add(services, 9012, Role.CLIENT)
    await link(services, anna, kim)
    await services.consent.withdraw(kim)
    ((recipient, body),) = (await notices(services)).values()
    unnamed = says(services, "account.consent.unnamed_client")
    assert (recipient, body) == (anna.person_id, says(services, "account.consent.withdrawn_notice", alias=unnamed))


# -- joining and switching ----------------------------------------------------------------------


async def test_joining_and_its_notice_commit_together(services: Services, monkeypatch):
    anna = await add(services, 9021, Role.THERAPIST, name="Anna")
    made = await services.invites.create(anna, InviteKind.CLIENT, bot_username="imrs_bot", alias="Robin")
    view = await services.invites.inspect(made.token)
    newcomer = Identity(9022, "Robin", None, None, "en", "Europe/Amsterdam")

    def enroll() -> Awaitable[object]:
        return services.enrollment.enroll(
            view.id, newcomer, language="en", timezone="Europe/Amsterdam",
            consent_version=services.consent.current_version,
        )

    await fails_after_the_change(monkeypatch, enroll)
    assert (await services.invites.inspect(made.token)).valid, "the invite is still unused"
    assert await notices(services) == {}

    enrolled = await enroll()
    async with services.sessions() as session:
        joined = await LinkRepository(session).active_for_client(enrolled.identity.person_id)
    assert await notices(services) == {
        f"notice:joined:{joined.id}": (anna.person_id, says(services, "client_join.joined_notice", alias="Robin"))
    }
    with pytest.raises(InviteUnavailable):  # "I agree" pressed twice: the invite is used
        await enroll()
    assert len(await notices(services)) == 1


async def test_an_invite_without_a_pseudonym_gives_the_unnamed_notice(services: Services):
    anna = await add(services, 9031, Role.THERAPIST, name="Anna")
    made = await services.invites.create(anna, InviteKind.CLIENT, bot_username="imrs_bot")
    view = await services.invites.inspect(made.token)
    await services.enrollment.enroll(
        view.id, Identity(9032, "x", None, None, "en", "Europe/Amsterdam"),
        language="en", timezone="Europe/Amsterdam", consent_version=services.consent.current_version,
    )
    assert list((await notices(services)).values()) == [
        (anna.person_id, says(services, "client_join.joined_notice_unnamed"))
    ]


async def test_a_switch_and_both_notices_commit_together(services: Services, monkeypatch):
    anna = await add(services, 9041, Role.THERAPIST, name="Anna")
    bert = await add(services, 9042, Role.THERAPIST, name="Bert", language="nl")
    robin = await add(services, 9043, Role.CLIENT, alias="Robin")
    old_link = await link(services, anna, robin)
    made = await services.invites.create(bert, InviteKind.CLIENT, bot_username="imrs_bot", alias="Robin B")
    view = await services.invites.inspect(made.token)

    await fails_after_the_change(monkeypatch, lambda: services.enrollment.switch(view.id, robin))
    async with services.sessions() as session:
        assert (await LinkRepository(session).active_for_client(robin.person_id)).id == old_link
    assert await notices(services) == {}

    await services.enrollment.switch(view.id, robin)
    async with services.sessions() as session:
        new_link = (await LinkRepository(session).active_for_client(robin.person_id)).id
    assert await notices(services) == {
        # The old therapist: no pseudonym, nothing clinical.
        f"notice:link-ended:{old_link}": (anna.person_id, says(services, "client_join.switch.ended_notice")),
        f"notice:joined:{new_link}": (
            bert.person_id, says(services, "client_join.joined_notice", "nl", alias="Robin B")
        ),
    }


# -- a therapist's clients ----------------------------------------------------------------------


async def test_unlinking_and_its_notice_commit_together(services: Services, monkeypatch):
    anna = await add(services, 9051, Role.THERAPIST, name="Anna")
    robin = await add(services, 9052, Role.CLIENT, alias="Robin", language="nl")
    link_id = await link(services, anna, robin)

    await fails_after_the_change(monkeypatch, lambda: services.clinic.unlink_client(anna, robin.person_id))
    assert (await services.clinic.client(anna, robin.person_id)).client_id == robin.person_id, "still linked"
    assert await notices(services) == {}

    await services.clinic.unlink_client(anna, robin.person_id)
    assert await notices(services) == {
        f"notice:unlinked:{link_id}": (robin.person_id, says(services, "clients.unlinked_notice", "nl"))
    }
    with pytest.raises(NotAllowed):  # pressed twice: no longer her client
        await services.clinic.unlink_client(anna, robin.person_id)
    assert len(await notices(services)) == 1


# -- staff: deactivating a therapist and moving their clients -----------------------------------


async def test_deactivation_moving_and_their_notices_commit_together(services: Services, monkeypatch):
    anna = await add(services, 9061, Role.THERAPIST, name="Anna")
    bert = await add(services, 9062, Role.THERAPIST, name="Bert", language="nl")
    robin = await add(services, 9063, Role.CLIENT, alias="Robin")
    kim = await add(services, 9064, Role.CLIENT, alias="Kim", language="nl")
    ended = {robin.person_id: await link(services, anna, robin), kim.person_id: await link(services, anna, kim)}
    clinic = services.clinic

    await fails_after_the_change(monkeypatch, lambda: clinic.deactivate_therapist(ADMIN, anna.person_id))
    assert (await clinic.therapist(ADMIN, anna.person_id)).active, "still active"
    assert len(await clinic.clients(anna)) == 2, "her clients are still hers"
    assert await notices(services) == {}

    done = await clinic.deactivate_therapist(ADMIN, anna.person_id)
    assert {c.person_id for c in done.clients} == set(ended)
    deactivated = {
        f"notice:therapist-deactivated:{ended[robin.person_id]}": (
            robin.person_id, says(services, "therapists.client_notice")
        ),
        f"notice:therapist-deactivated:{ended[kim.person_id]}": (
            kim.person_id, says(services, "therapists.client_notice", "nl")
        ),
    }
    assert await notices(services) == deactivated
    with pytest.raises(NotAllowed):  # pressed twice
        await clinic.deactivate_therapist(ADMIN, anna.person_id)
    assert await notices(services) == deactivated

    await fails_after_the_change(monkeypatch, lambda: clinic.move_clients(ADMIN, anna.person_id, bert.person_id))
    assert await clinic.clients(bert) == [], "nobody moved"
    assert await notices(services) == deactivated

    moved = await clinic.move_clients(ADMIN, anna.person_id, bert.person_id)
    assert len(moved.clients) == 2
    async with services.sessions() as session:
        new_links = {
            row.client_id: row.id
            for row in await session.scalars(
                select(TherapistClientLink).where(TherapistClientLink.therapist_id == bert.person_id)
            )
        }
    found = await notices(services)
    assert {k: v for k, v in found.items() if k.startswith("notice:moved:")} == {
        f"notice:moved:{new_links[robin.person_id]}": (
            robin.person_id, says(services, "therapists.moved_client_notice", name="Bert")
        ),
        f"notice:moved:{new_links[kim.person_id]}": (
            kim.person_id, says(services, "therapists.moved_client_notice", "nl", name="Bert")
        ),
    }
    to_bert = {k: v for k, v in found.items() if k.startswith("notice:moved-to:")}
    assert list(to_bert.values()) == [
        (bert.person_id, says(services, "therapists.moved_therapist_notice", "nl", clients=2))
    ]
    assert len(found) == 5

    again = await clinic.move_clients(ADMIN, anna.person_id, bert.person_id)  # Move pressed again
    assert again.clients == []
    assert await notices(services) == found, "nothing new for anyone"


async def test_a_deactivated_client_is_not_told(services: Services):
    anna = await add(services, 9071, Role.THERAPIST, name="Anna")
    robin = await add(services, 9072, Role.CLIENT, alias="Robin")
    await link(services, anna, robin)
    async with services.sessions.begin() as session:
        (await session.get(Person, robin.person_id)).active = False  # e.g. blocked the bot
    await services.clinic.unlink_client(anna, robin.person_id)
    assert await notices(services) == {}


# -- time zone ----------------------------------------------------------------------------------


async def test_a_new_time_zone_plans_the_reminders_in_the_same_transaction(services: Services, monkeypatch):
    robin = await add(services, 9081, Role.CLIENT)
    reminder_id = await services.reminders.add(robin.person_id, EVERY_DAY, time(9, 0))

    async def due() -> tuple[str, time]:
        async with services.sessions() as session:
            person = await session.get(Person, robin.person_id)
            schedule = await session.get(ReminderSchedule, reminder_id)
            return person.timezone, schedule.next_due_at.astimezone(ZoneInfo(person.timezone)).time()

    assert await due() == ("Europe/Amsterdam", time(9, 0))

    async def crash(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("the database went away")

    monkeypatch.setattr(ScheduleService, "_recompute", crash)
    with pytest.raises(RuntimeError):
        await services.preferences.set_timezone(robin, "America/New_York")
    monkeypatch.undo()
    assert await due() == ("Europe/Amsterdam", time(9, 0)), "neither the zone nor the plan changed"

    changed = await services.preferences.set_timezone(robin, "America/New_York")
    assert changed.timezone == "America/New_York"
    assert await due() == ("America/New_York", time(9, 0))
    with pytest.raises(UnknownZone):
        await services.preferences.set_timezone(robin, "Mars/Olympus_Mons")


# -- domain outcomes are not ValueError ---------------------------------------------------------


async def test_an_unusable_alias_is_its_own_exception_not_a_value_error(services: Services):
    anna = await add(services, 9091, Role.THERAPIST, name="Anna")
    robin = await add(services, 9092, Role.CLIENT, alias="Robin")
    await link(services, anna, robin)
    with pytest.raises(InvalidAlias) as raised:
        await services.clinic.rename_client(anna, robin.person_id, "  \u202e ")
    assert not isinstance(raised.value, ValueError), "a genuine ValueError must not read as 'invalid name'"
