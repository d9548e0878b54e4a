"""A client joining through their therapist's invite link, end to end through the emulator
(SQLite and, with TEST_DATABASE_URL, PostgreSQL): consent, language, time zone, the unhappy
paths of the link, declining, switching therapist, and practice members opening a client link.
"""

from __future__ import annotations

import re
import string
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select, text

from bot.crypto.keystore import data_keys
from bot.db.models import AuditEvent, ConsentChoice, ConsentRecord, Invite, Role, TherapistClientLink
from bot.db.repositories import InviteRepository, LinkRepository
from bot.db.types import utcnow
from bot.sandbox.emulator import BotApiEmulator
from tests.fixtures_bot import ADMIN_ID, RunningBot
from tests.join_support import (
    add_person,
    client_token,
    count_people,
    first_line,
    join,
    labels,
    open_chat,
    person_by_telegram_id,
    says,
    services,
)

ALPHABET = string.ascii_letters + string.digits + "_-"
VERSION = "2026-12-3"


async def test_a_client_joins_with_consent_language_and_time_zone(bot: RunningBot, emulator: BotApiEmulator):
    therapist = await add_person(bot, 7001, Role.THERAPIST, display_name="Dr. Jansen")
    therapist_chat = await open_chat(emulator.user(7001, first_name="Jan"))
    token = await client_token(bot, therapist, alias="Robin")
    client = emulator.user(first_name="Sam", language_code="en")

    await client.send(f"/start {token}")
    welcome = await client.next_message()
    assert says(welcome, "client_join.welcome", name="Sam", therapist="Dr. Jansen")
    assert "Dr. Jansen has invited you" in welcome.text
    assert labels(welcome) == ["Continue"]
    assert await count_people(bot) == 1, "nothing stored on opening the link"

    await client.press("Continue", welcome)
    about = await client.next_message()
    assert says(about, "client_join.about")
    assert "not an emergency service" in about.text and "What Dr. Jansen will see" in about.text
    await client.press("Read the consent", about)
    consent = await client.next_message()
    assert f"(version {VERSION})" in consent.text and "113" in consent.text
    assert labels(consent) == ["I agree", "Not now"]
    assert await count_people(bot) == 1, "nothing stored before consent"

    before = utcnow()
    await client.press("I agree", consent)
    agreed = await client.next_message()
    assert says(agreed, "client_join.agreed", version=VERSION, therapist="Dr. Jansen")
    notice = await therapist_chat.next_message()
    assert notice.text == first_line("client_join.joined_notice", alias="Robin")

    question = await client.next_message()
    assert says(question, "client_join.language_question")
    assert labels(question) == ["✓ English", "Nederlands"], "preselected from Telegram's language"
    await client.press("Nederlands", question)
    zone_question = await client.next_message()
    assert says(zone_question, "client_join.timezone_question", "nl"), "asked in the new language"
    assert "Nederland" in labels(zone_question)

    await client.send("Atlantis onder zee")
    assert says(await client.next_message(), "account.timezone.unknown", "nl")
    await client.send("port")
    choices = await client.next_message()
    assert says(choices, "account.timezone.choices", "nl") and "Port of Spain" in " ".join(labels(choices))
    await client.send("new york")
    done = await client.next_message()
    assert says(done, "client_join.done", "nl", zone="America/New_York")

    client_person = await person_by_telegram_id(bot, client.id)
    assert client_person is not None
    assert (client_person.role, client_person.language, client_person.timezone) == (Role.CLIENT, "nl", "America/New_York")
    assert client_person.alias == "Robin", "the alias decrypts, under the client's own key"
    async with services(bot).sessions() as session:
        records = (await session.scalars(select(ConsentRecord))).all()
        links = (await session.scalars(select(TherapistClientLink))).all()
        invite = (await session.scalars(select(Invite))).one()
        events = [e.action for e in (await session.scalars(select(AuditEvent).order_by(AuditEvent.id))).all()]
        raw_people = (await session.execute(text("SELECT * FROM people"))).all()
    assert [(r.person_id, r.consent_version, r.choice) for r in records] == [
        (client_person.id, VERSION, ConsentChoice.GRANTED)
    ]
    assert records[0].recorded_at.tzinfo is not None and before <= records[0].recorded_at <= utcnow()
    assert [(link.therapist_id, link.client_id, link.ended_at) for link in links] == [
        (therapist.person_id, client_person.id, None)
    ]
    assert invite.used_by_id == client_person.id and invite.used_at is not None
    assert {"consent.granted", "client.joined"} <= set(events)
    assert b"Robin" not in repr(raw_people).encode(), "the alias is stored encrypted"
    assert await services(bot).consent.has_active_consent(client_person.id)
    # The client's own menu was set, in their chat.
    assert any(str(client.id) in str(scope) for scope in emulator.commands)


async def test_declining_consent_stores_nothing_and_the_link_still_works(bot: RunningBot, emulator: BotApiEmulator):
    therapist = await add_person(bot, 7002, Role.THERAPIST, display_name="Dr. Visser")
    token = await client_token(bot, therapist)
    client = emulator.user(first_name="Noor", language_code="nl")
    events_before = await _count(bot, AuditEvent)

    await client.send(f"/start {token}")
    welcome = await client.next_message()
    assert says(welcome, "client_join.welcome", "nl", name="Noor", therapist="Dr. Visser")
    await client.press("Verder", welcome)
    await client.press(0, await client.next_message())
    await client.press("Nu niet", await client.next_message())
    assert says(await client.next_message(), "client_join.declined", "nl")

    assert await count_people(bot) == 1  # the therapist only
    assert await _count(bot, AuditEvent) == events_before, "not even an audit event"
    assert await _count(bot, ConsentRecord) == 0
    async with services(bot).sessions() as session:
        invite = (await session.scalars(select(Invite))).one()
    assert invite.used_at is None
    async with services(bot).crypto.keystore.engine.connect() as connection:
        owners = set((await connection.execute(select(data_keys.c.person_id))).scalars())
    people = {owner for owner in owners if owner > 0}  # negative: the inbox's hourly keys (bot.inbox)
    assert people == {therapist.person_id}, "no data key was made for the client"

    await client.send(f"/start {token}")
    assert says(await client.next_message(), "client_join.welcome", "nl", name="Noor", therapist="Dr. Visser")


async def test_expired_used_revoked_and_unknown_links_are_answered_and_store_nothing(
    bot: RunningBot, emulator: BotApiEmulator
):
    therapist = await add_person(bot, 7003, Role.THERAPIST, display_name="Dr. Bakker")
    sv = services(bot)
    cases: list[tuple[str, str]] = []

    expired = await client_token(bot, therapist)
    cases.append((expired, "expired"))
    revoked = await client_token(bot, therapist)
    async with sv.sessions.begin() as session:
        invite = await InviteRepository(session).by_token_hash(sv.invites.hash_token(revoked))
        await InviteRepository(session).revoke(invite.id, utcnow())
    cases.append((revoked, "revoked"))
    used = await client_token(bot, therapist)
    first = emulator.user(first_name="First")
    assert says(await join(first, used), "client_join.done", zone="Europe/Amsterdam")
    cases.append((used, "used"))
    cases.append(("A" * 32, "unknown"))
    cases.append(("short", "malformed"))
    cases.append(("x" * 65, "malformed"))

    people = await count_people(bot)
    for token, status in cases:
        stranger = emulator.user(first_name="Stranger")
        if status == "expired":
            sv.invites.clock = lambda: utcnow() + timedelta(days=15)
        try:
            await stranger.send(f"/start {token}")
            reply = await stranger.next_message()
        finally:
            sv.invites.clock = utcnow
        assert says(reply, f"client_join.link.{status}"), (status, reply.text)
        assert reply.buttons == []
    assert await count_people(bot) == people


async def test_an_invite_expiring_before_consent_is_not_claimed(bot: RunningBot, emulator: BotApiEmulator):
    therapist = await add_person(bot, 7004, Role.THERAPIST, display_name="Dr. de Wit")
    token = await client_token(bot, therapist)
    client = emulator.user()
    await client.send(f"/start {token}")
    await client.press("Continue", await client.next_message())
    await client.press("Read the consent", await client.next_message())
    consent = await client.next_message()
    services(bot).invites.clock = lambda: utcnow() + timedelta(days=15)
    try:
        await client.press("I agree", consent)
        assert says(await client.next_message(), "client_join.link.expired")
    finally:
        services(bot).invites.clock = utcnow
    assert await person_by_telegram_id(bot, client.id) is None


async def test_a_forged_consent_button_is_refused(bot: RunningBot, emulator: BotApiEmulator):
    therapist = await add_person(bot, 7005, Role.THERAPIST, display_name="Dr. Smit")
    token = await client_token(bot, therapist)
    owner, thief = emulator.user(), emulator.user()
    await owner.send(f"/start {token}")
    welcome = await owner.next_message()
    # Someone else sends the owner's payload (and one with another invite id).
    data = welcome.buttons[0][0].value
    await thief.send("/help")
    await thief.next_message()
    await thief.press_data(data)
    await thief.press_data(re.sub(r"\|\d+\|", "|123|", data))
    await thief.expect_silence(0.3)
    assert all(a["text"].startswith("Sorry, that is not available") for a in thief.callback_answers)
    assert await person_by_telegram_id(bot, thief.id) is None


@given(
    payload=st.one_of(
        st.text(alphabet=ALPHABET, min_size=1, max_size=64),
        st.text(alphabet=ALPHABET, min_size=65, max_size=120),
        st.text(alphabet=string.printable.strip(), min_size=1, max_size=80).filter(lambda s: s.strip() == s and "\n" not in s),
    )
)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
async def test_fuzzed_start_payloads_get_a_clear_answer_and_store_nothing(
    bot: RunningBot, emulator: BotApiEmulator, payload: str
):
    stranger = emulator.user()
    await stranger.send(f"/start {payload}")
    reply = await stranger.next_message()
    joined = " ".join(payload.split())
    status = "unknown" if re.fullmatch(r"[A-Za-z0-9_-]{16,64}", joined) else "malformed"
    assert says(reply, f"client_join.link.{status}"), (payload, reply.text)
    assert await count_people(bot) == 0


async def test_switching_therapist_tells_the_old_one_without_the_alias(bot: RunningBot, emulator: BotApiEmulator):
    old = await add_person(bot, 7010, Role.THERAPIST, display_name="Dr. Oud")
    new = await add_person(bot, 7011, Role.THERAPIST, display_name="Dr. Nieuw")
    old_chat, new_chat = await open_chat(emulator.user(7010)), await open_chat(emulator.user(7011))
    client = emulator.user(first_name="Kim")
    await join(client, await client_token(bot, old, alias="Kim-old"))
    await old_chat.next_message()  # joined notice
    before = await person_by_telegram_id(bot, client.id)

    token = await client_token(bot, new, alias="Kim-new")
    await client.send(f"/start {token}")
    confirm = await client.next_message()
    assert says(confirm, "client_join.switch.confirm", current="Dr. Oud", therapist="Dr. Nieuw")
    assert labels(confirm) == ["Switch", "Keep things as they are"]

    # Keeping things as they are changes nothing and leaves the link unused.
    await client.press("Keep things as they are", confirm)
    assert says(await client.next_message(), "client_join.switch.kept")
    await client.send(f"/start {token}")
    await client.press("Switch", await client.next_message())
    assert says(await client.next_message(), "client_join.switch.switched", therapist="Dr. Nieuw")

    ended = await old_chat.next_message()
    assert ended.text == first_line("client_join.switch.ended_notice")
    assert "Kim" not in ended.text and "check-in" not in ended.text.lower()
    assert (await new_chat.next_message()).text == first_line("client_join.joined_notice", alias="Kim-new")

    after = await person_by_telegram_id(bot, client.id)
    assert after.id == before.id and after.alias == "Kim-new"
    async with services(bot).sessions() as session:
        links = (await session.scalars(select(TherapistClientLink).order_by(TherapistClientLink.started_at))).all()
        switched = (await session.scalars(select(AuditEvent).where(AuditEvent.action == "client.switched"))).all()
    assert [(link.therapist_id, link.ended_at is None) for link in links] == [
        (old.person_id, False),
        (new.person_id, True),
    ]
    assert [e.subject_person_id for e in switched] == [after.id]
    assert await services(bot).consent.has_active_consent(after.id), "consent carries over"

    # The same therapist's link again: already connected, and it is not used.
    again = await client_token(bot, new)
    await client.send(f"/start {again}")
    assert says(await client.next_message(), "client_join.link.already_connected", therapist="Dr. Nieuw")
    assert (await services(bot).invites.inspect(again)).valid


async def test_a_client_without_a_therapist_any_more_can_connect_again(bot: RunningBot, emulator: BotApiEmulator):
    first = await add_person(bot, 7015, Role.THERAPIST, display_name="Dr. Eerst")
    client = emulator.user(first_name="Lou")
    await join(client, await client_token(bot, first))
    person = await person_by_telegram_id(bot, client.id)
    async with services(bot).sessions.begin() as session:  # e.g. unlinked by the therapist
        (await LinkRepository(session).active_for_client(person.id)).ended_at = utcnow()

    second = await add_person(bot, 7016, Role.THERAPIST, display_name="Dr. Tweede")
    await client.send(f"/start {await client_token(bot, second, alias=None)}")
    offer = await client.next_message()
    assert says(offer, "client_join.switch.reconnect", therapist="Dr. Tweede")
    await client.press("Connect", offer)
    assert says(await client.next_message(), "client_join.switch.switched", therapist="Dr. Tweede")
    async with services(bot).sessions() as session:
        link = await LinkRepository(session).active_for_client(person.id)
        reconnected = await session.scalar(select(func.count()).where(AuditEvent.action == "client.reconnected"))
    assert link.therapist_id == second.person_id and reconnected == 1
    assert (await person_by_telegram_id(bot, client.id)).alias == "Robin", "no new alias given: kept"


@pytest.mark.parametrize("role", [Role.THERAPIST, Role.STAFF, Role.ADMIN])
async def test_a_practice_member_opening_a_client_link_is_refused_and_it_stays_valid(
    bot: RunningBot, emulator: BotApiEmulator, role: Role
):
    therapist = await add_person(bot, 7020, Role.THERAPIST, display_name="Dr. Jong")
    token = await client_token(bot, therapist)
    if role is Role.ADMIN:
        member = emulator.user(ADMIN_ID)  # from the configuration, without a record yet
    else:
        await add_person(bot, 7021, role, display_name="Member")
        member = emulator.user(7021)
    await member.send(f"/start {token}")
    reply = await member.next_message()
    assert says(reply, "client_join.link.staff_member") and reply.buttons == []
    assert (await services(bot).invites.inspect(token)).valid
    async with services(bot).sessions() as session:
        assert await session.scalar(select(func.count()).select_from(TherapistClientLink)) == 0


async def _count(bot: RunningBot, model: type) -> int:
    async with services(bot).sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(model)))
