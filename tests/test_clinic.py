"""The clinic side end to end, through the emulator: therapists and staff joining by
invite, /invite, /clients (rename, unlink, forged buttons), /therapists (deactivate, move)
and /staff. Runs on SQLite and, with TEST_DATABASE_URL, on PostgreSQL.
"""

from __future__ import annotations

import re
import string
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select, text

from bot.content import Content
from bot.context import SERVICES_KEY
from bot.db.delivery_models import OutboxKind, OutboxMessage, OutboxState
from bot.db.models import AuditEvent, Invite, InviteKind, Person, Role, TherapistClientLink
from bot.db.repositories import LinkRepository, PeopleRepository
from bot.db.types import utcnow
from bot.sandbox.emulator import BotApiEmulator
from bot.sandbox.emulator.people import SimUser
from bot.sandbox.emulator.records import BotMessage
from bot.services import Services
from bot.reader import reader_page
from tests.fixtures_delivery import grant_consent
from tests.join_support import says
from tests.fixtures_bot import ADMIN_ID, RunningBot

TOKEN = re.compile(r"\?start=([A-Za-z0-9_-]+)")


def services(bot: RunningBot) -> Services:
    return bot.application.bot_data[SERVICES_KEY]


def plain(html: str) -> str:
    """A content text as the emulator stores it (tags removed, entities decoded)."""
    return re.sub(r"<[^>]+>", "", html).replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def starts(message: BotMessage, content: Content, key: str, **params: object) -> bool:
    first = plain(content.text(key, "en", **params)).splitlines()[0]
    return message.content.startswith(first)


async def receive_invite(user: SimUser) -> tuple[str, BotMessage, BotMessage]:
    """The two invite messages (the link, the QR code) and the token in the link."""
    link = await user.next_message()
    qr = await user.next_message()
    found = TOKEN.search(link.content)
    assert found, link.content
    return found.group(1), link, qr


async def therapist_invite(emulator: BotApiEmulator) -> str:
    admin = emulator.user(ADMIN_ID, first_name="Ada")
    await admin.send("/therapists")
    await admin.press("Invite a therapist", await admin.next_message())
    token, _, _ = await receive_invite(admin)
    return token


async def join(user: SimUser, token: str, name: str) -> BotMessage:
    await user.send(f"/start {token}")
    await user.press("I accept", await user.next_message())
    await user.next_message()  # "What name should ..."
    await user.send(name)
    return await user.next_message()


async def new_therapist(emulator: BotApiEmulator, name: str, telegram_id: int | None = None) -> SimUser:
    therapist = emulator.user(telegram_id, first_name=name.split()[0])
    done = await join(therapist, await therapist_invite(emulator), name)
    assert done.content.startswith(f"Welcome, {name}."), done.content
    reader = await therapist.next_message()  # the reader page follows the welcome
    assert reader.document is not None and reader.document.file_name == "imrs-reader.html"
    return therapist


async def person(bot: RunningBot, telegram_id: int) -> Person | None:
    async with services(bot).sessions() as session:
        return await PeopleRepository(session).get_by_telegram_id(telegram_id)


async def add_clients(
    bot: RunningBot, emulator: BotApiEmulator, therapist: SimUser, aliases: list[str], first_id: int
) -> list[Person]:
    """Clients linked to ``therapist`` directly in the database (joining as a client is
    another flow's business), with their consent, as joining records it. Each has talked to
    the bot once, so it can write to them."""
    found = await person(bot, therapist.id)
    for n in range(len(aliases)):
        user = emulator.user(first_id + n, first_name=f"C{n}")
        await user.send("/about")
        await user.next_message()
    added = []
    async with services(bot).sessions.begin() as session:
        for n, alias in enumerate(aliases):
            client = await PeopleRepository(session).add(
                Person(telegram_id=first_id + n, role=Role.CLIENT, language="en",
                       timezone="Europe/Amsterdam", alias=alias)
            )
            await LinkRepository(session).add(found.id, client.id, utcnow())
            added.append(client)
        await grant_consent(session, [client.id for client in added])
    return added


async def database_dump(bot: RunningBot) -> str:
    """Every row of every table, as text: to show that something is stored nowhere."""
    from bot.db.models import Base

    rows = []
    async with services(bot).engine.connect() as connection:
        for table in Base.metadata.sorted_tables:
            rows.extend(repr(tuple(row)) for row in await connection.execute(table.select()))
    return "\n".join(rows)


async def denied(bot: RunningBot, reason: str | None = None) -> list[AuditEvent]:
    async with services(bot).sessions() as session:
        events = (await session.scalars(select(AuditEvent).where(AuditEvent.action == "access.denied"))).all()
    return [e for e in events if reason is None or e.detail["reason"] == reason]


# -- therapists joining --------------------------------------------------------------------


async def test_staff_invite_a_therapist_who_joins(bot: RunningBot, emulator: BotApiEmulator, content: Content):
    admin = emulator.user(ADMIN_ID, first_name="Ada")
    await admin.send("/therapists")
    empty = await admin.next_message()
    assert starts(empty, content, "therapists.empty")
    await admin.press("Invite a therapist", empty)
    token, link, qr = await receive_invite(admin)
    assert link.content.startswith("Invite link for a therapist")
    assert f"https://t.me/{emulator.username}?start={token}" in link.content
    assert link.protect_content is False and qr.protect_content is False, "made to be forwarded"
    assert qr.photo is not None and qr.photo.data.startswith(b"\x89PNG")

    therapist = emulator.user(first_name="Anna", language_code="en")
    await therapist.send(f"/start {token}")
    terms = await therapist.next_message()
    assert "practice terms" in terms.content and "a therapist" in terms.content
    await therapist.send("hello?")  # typing instead of pressing a button
    assert (await therapist.next_message()).content.startswith("Please use the buttons")
    await therapist.press("I accept", terms)
    assert starts(await therapist.next_message(), content, "clinic.ask_name")
    for bad in ["A", "x" * 65, "!!!", "\u202eevil"]:
        await therapist.send(bad)
        assert starts(await therapist.next_message(), content, "clinic.name_invalid"), bad
    assert await person(bot, therapist.id) is None, "nothing stored before the name is accepted"
    await therapist.send("  Dr.  Anna Jansen ")
    done = await therapist.next_message()
    assert done.content.startswith("Welcome, Dr. Anna Jansen.") and "imrs-reader.html" in done.content
    reader = await therapist.next_message()  # the page that makes their key and opens summaries
    assert reader.document.file_name == "imrs-reader.html" and reader.protect_content is False
    assert reader.document.data == reader_page(content, "en") and says(reader, "reader.caption")

    stored = await person(bot, therapist.id)
    assert stored.role is Role.THERAPIST and stored.active and stored.display_name == "Dr. Anna Jansen"
    menu = emulator.state.visible_commands(therapist.id)
    assert [c["command"] for c in menu] == [c.command for c in content.commands("therapist", "en")]
    async with services(bot).sessions() as session:
        invite = await session.scalar(select(Invite))
        joined = await session.scalar(select(AuditEvent).where(AuditEvent.action == "clinic.joined"))
        raw = (await session.execute(text("SELECT display_name FROM people WHERE role = 'therapist'"))).scalar()
    assert invite.used_by_id == stored.id and invite.used_at is not None
    assert joined.subject_person_id == stored.id and joined.detail == {"invite_id": invite.id, "role": "therapist"}
    assert b"Anna" not in bytes(raw), "display names are stored encrypted"
    dump = await database_dump(bot)
    assert token not in dump and "Anna" not in dump, "no raw token or name anywhere in the database"

    # The link works once.
    latecomer = emulator.user(first_name="Bert")
    await latecomer.send(f"/start {token}")
    assert starts(await latecomer.next_message(), content, "clinic.link.used")
    assert await person(bot, latecomer.id) is None


async def test_declining_the_terms_stores_nothing_and_the_link_stays_valid(
    bot: RunningBot, emulator: BotApiEmulator, content: Content
):
    token = await therapist_invite(emulator)
    therapist = emulator.user(first_name="Anna")
    await therapist.send(f"/start {token}")
    await therapist.press("Not now", await therapist.next_message())
    assert starts(await therapist.next_message(), content, "clinic.declined")
    assert await person(bot, therapist.id) is None
    assert (await join(therapist, token, "Anna")).content.startswith("Welcome, Anna.")


async def test_an_expired_therapist_link_is_refused(bot: RunningBot, emulator: BotApiEmulator, content: Content):
    token = await therapist_invite(emulator)
    invites = services(bot).invites
    real_clock = invites.clock
    invites.clock = lambda: real_clock() + timedelta(days=7, seconds=1)
    therapist = emulator.user(first_name="Anna")
    await therapist.send(f"/start {token}")
    assert starts(await therapist.next_message(), content, "clinic.link.expired")
    assert await person(bot, therapist.id) is None


async def test_a_link_that_expires_between_the_terms_and_the_name_is_refused_at_the_end(
    bot: RunningBot, emulator: BotApiEmulator, content: Content
):
    token = await therapist_invite(emulator)
    therapist = emulator.user(first_name="Anna")
    await therapist.send(f"/start {token}")
    await therapist.press("I accept", await therapist.next_message())
    await therapist.next_message()
    invites = services(bot).invites
    real_clock = invites.clock
    invites.clock = lambda: real_clock() + timedelta(days=8)
    await therapist.send("Anna")
    assert starts(await therapist.next_message(), content, "clinic.link.expired")
    assert await person(bot, therapist.id) is None


async def test_someone_already_registered_cannot_use_a_therapist_link(
    bot: RunningBot, emulator: BotApiEmulator, content: Content
):
    anna = await new_therapist(emulator, "Anna")
    token = await therapist_invite(emulator)
    await anna.send(f"/start {token}")
    assert starts(await anna.next_message(), content, "clinic.link.enrolled")
    admin = emulator.user(ADMIN_ID)
    await admin.send(f"/start {token}")
    assert starts(await admin.next_message(), content, "clinic.link.enrolled")
    assert (await services(bot).invites.inspect(token)).valid, "the link was not used up"


async def test_admins_invite_staff_who_join_and_see_therapists(
    bot: RunningBot, emulator: BotApiEmulator, content: Content
):
    admin = emulator.user(ADMIN_ID, first_name="Ada")
    await admin.send("/staff")
    listing = await admin.next_message()
    assert starts(listing, content, "staff.empty")
    await admin.press("Invite a staff member", listing)
    token, link, _ = await receive_invite(admin)
    assert link.content.startswith("Invite link for a staff member")
    clerk = emulator.user(first_name="Sam")
    await clerk.send(f"/start {token}")
    terms = await clerk.next_message()
    assert "a staff member" in terms.content
    await clerk.press("I accept", terms)
    await clerk.next_message()
    await clerk.send("Sam de Vries")
    assert (await clerk.next_message()).content.startswith("Welcome, Sam de Vries.")
    assert (await person(bot, clerk.id)).role is Role.STAFF

    await admin.send("/staff")
    assert "Sam de Vries" in (await admin.next_message()).content
    # Staff may invite therapists but not staff, and may not list staff.
    await clerk.send("/staff")
    assert (await clerk.next_message()).content.startswith("Sorry, that is not available to you.")
    await clerk.send("/therapists")
    await clerk.press("Invite a therapist", await clerk.next_message())
    _, link, _ = await receive_invite(clerk)
    assert link.content.startswith("Invite link for a therapist")


PAYLOAD_ALPHABET = string.ascii_letters + string.digits + "_-"


def invite_answers(content: Content) -> list[str]:
    """The first lines of every text that may answer an unusable start payload."""
    keys = [k for k in content.keys() if k == "start.invite_unknown" or k.startswith(("clinic.link.", "client_join.link."))]
    return [plain(content.text(k, "en")).splitlines()[0] for k in keys if "{" not in content.raw(k, "en")]


@given(
    payload=st.one_of(
        st.text(alphabet=PAYLOAD_ALPHABET, min_size=1, max_size=64),
        st.text(alphabet=PAYLOAD_ALPHABET, min_size=65, max_size=100),
        st.text(min_size=1, max_size=80),
    )
)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
async def test_fuzzed_start_payloads_get_a_clear_answer_and_store_nothing(
    bot: RunningBot, emulator: BotApiEmulator, content: Content, payload: str
):
    assume(payload.strip() and not payload.strip().startswith("@"))
    user = emulator.user(first_name="Fuzz")
    await user.send(f"/start {payload}")
    reply = await user.next_message()
    assert any(reply.content.startswith(line) for line in invite_answers(content)), reply.content
    async with services(bot).sessions() as session:
        assert await session.scalar(select(func.count()).select_from(Person)) == 0
        assert await session.scalar(select(func.count()).select_from(Invite)) == 0


# -- /invite --------------------------------------------------------------------------------


async def test_therapists_invite_clients_with_or_without_an_alias(
    bot: RunningBot, emulator: BotApiEmulator, content: Content
):
    anna = await new_therapist(emulator, "Anna")
    await anna.send("/invite")
    ask = await anna.next_message()
    assert starts(ask, content, "invite.ask_alias")
    await anna.send("!!")
    assert starts(await anna.next_message(), content, "invite.alias_invalid")
    await anna.send("Robin T.")
    token, link, qr = await receive_invite(anna)
    assert link.content.startswith("Invite link for Robin T.")
    assert link.protect_content is False and qr.photo is not None

    await anna.send("/invite")
    await anna.press("Skip", await anna.next_message())
    other, link, _ = await receive_invite(anna)
    assert link.content.startswith("Invite link for a client")

    view = await services(bot).invites.inspect(token)
    stored = await person(bot, anna.id)
    assert view.kind is InviteKind.CLIENT and view.alias == "Robin T." and view.therapist_id == stored.id
    assert view.therapist_display_name == "Anna"
    assert view.expires_at - utcnow() > timedelta(days=13)
    assert (await services(bot).invites.inspect(other)).alias is None
    dump = await database_dump(bot)
    assert "Robin" not in dump and token not in dump and other not in dump


# -- /clients -------------------------------------------------------------------------------


async def test_clients_list_rename_and_unlink(bot: RunningBot, emulator: BotApiEmulator, content: Content):
    anna = await new_therapist(emulator, "Anna")
    await anna.send("/clients")
    assert starts(await anna.next_message(), content, "clients.empty")
    robin, kim = await add_clients(bot, emulator, anna, ["Robin", "Kim"], 7000)

    await anna.send("/clients")
    listing = await anna.next_message()
    assert listing.content.startswith("Your clients (2)")
    assert "Robin: last active never" in listing.content
    assert [b.text for b in listing.button_list] == ["Robin", "Kim"]

    await anna.press("Robin", listing)
    page = await anna.wait_for_edit(listing)
    assert page.content.startswith("Robin\n") and "Last active: never" in page.content
    await anna.press("Rename", page)
    assert starts(await anna.next_message(), content, "clients.ask_alias", alias="Robin")
    await anna.send("   !!   ")
    assert starts(await anna.next_message(), content, "clients.alias_invalid")
    await anna.send("Robin (Tue)")
    assert (await anna.next_message()).content.startswith("Done: this client is now called Robin (Tue).")
    assert (await person(bot, 7000)).alias == "Robin (Tue)"

    await anna.send("/clients")
    listing = await anna.next_message()
    await anna.press("Kim", listing)
    page = await anna.wait_for_edit(listing)
    rename_kim = page.buttons[0][0].value  # kept: the message is edited in place below
    await anna.press("Unlink", page)
    confirm = await anna.wait_for_edit(page)
    assert confirm.content.startswith("Unlink Kim?")
    await anna.press("Yes, unlink", confirm)
    done = await anna.wait_for_edit(confirm)
    assert done.content.startswith("Kim has been unlinked")
    client = emulator.user(kim.telegram_id)
    notice = await client.next_message()
    assert starts(notice, content, "clients.unlinked_notice")
    assert "Kim" not in notice.content and "Anna" not in notice.content

    await anna.send("/clients")
    listing = await anna.next_message()
    assert listing.content.startswith("Your clients (1)") and "Kim" not in listing.content
    # The old page's buttons name a client who is no longer Anna's: refused at the moment of use.
    await anna.press_data(rename_kim, listing)
    await anna.expect_silence(0.3)
    assert anna.callback_answers[-1]["text"].startswith("Sorry, that is not available to you.")
    async with services(bot).sessions() as session:
        link = await session.scalar(select(TherapistClientLink).where(TherapistClientLink.client_id == kim.id))
        actions = set((await session.scalars(select(AuditEvent.action))).all())
    assert link.ended_at is not None
    assert {"client.renamed", "client.unlinked"} <= actions
    assert [e.detail["reason"] for e in await denied(bot)] == ["ownership"]


async def test_a_long_client_list_has_pages(bot: RunningBot, emulator: BotApiEmulator):
    anna = await new_therapist(emulator, "Anna")
    await add_clients(bot, emulator, anna, [f"C{n:02}" for n in range(11)], 7100)
    await anna.send("/clients")
    listing = await anna.next_message()
    assert "page 1 of 2" in listing.content
    assert [b.text for b in listing.button_list] == [f"C{n:02}" for n in range(8)] + ["Next ›"]
    await anna.press("Next ›", listing)
    second = await anna.wait_for_edit(listing)
    assert "page 2 of 2" in second.content
    assert [b.text for b in second.button_list] == ["C08", "C09", "C10", "‹ Previous"]


async def test_a_genuine_value_error_is_not_shown_as_an_invalid_name(
    bot: RunningBot, emulator: BotApiEmulator, content: Content, monkeypatch: pytest.MonkeyPatch
):
    """"Invalid name" is a domain outcome (InvalidAlias); a ValueError from a bug reaches the
    error handler (logged with its stack) and the person gets the generic error message."""
    anna = await new_therapist(emulator, "Anna", 8051)
    await add_clients(bot, emulator, anna, ["Robin"], 7050)
    await anna.send("/clients")
    listing = await anna.next_message()
    await anna.press("Robin", listing)
    page = await anna.wait_for_edit(listing)
    await anna.press("Rename", page)
    await anna.next_message()  # what should the client be called?

    def bug(_alias: str | None) -> str | None:
        raise ValueError("a bug, not the therapist's input")

    monkeypatch.setattr("bot.services.clinic.clean_alias", bug)
    await anna.send("Robin (Tue)")
    answer = await anna.next_message()
    assert starts(answer, content, "errors.generic"), answer.content
    assert not starts(answer, content, "clients.alias_invalid")
    assert (await person(bot, 7050)).alias == "Robin"


async def test_forged_client_buttons_are_refused_and_audited(
    bot: RunningBot, emulator: BotApiEmulator, content: Content
):
    anna = await new_therapist(emulator, "Anna", 8001)
    bert = await new_therapist(emulator, "Bert", 8002)
    (robin,) = await add_clients(bot, emulator, anna, ["Robin"], 7200)
    (kim,) = await add_clients(bot, emulator, bert, ["Kim"], 7300)
    codec = services(bot).callbacks

    # Bert replays a button made for Anna (a valid signature, but not for him).
    await bert.send("/clients")
    own = await bert.next_message()
    await bert.press_data(codec.pack(anna.id, "cl.open", robin.id), own)
    # A payload altered to name Anna's client.
    genuine = own.button_list[0].value
    await bert.press_data(genuine.replace(str(kim.id), str(robin.id)), own)
    # Signed for Bert, but naming Anna's client: the signature is fine, the ownership is not.
    await bert.press_data(codec.pack(bert.id, "cl.unlink_ok", robin.id), own)
    await bert.press_data(codec.pack(bert.id, "cl.rename", robin.id), own)
    await bert.expect_silence(0.3)
    answers = [a["text"] for a in bert.callback_answers[-4:]]
    assert all(a.startswith("Sorry, that is not available to you.") for a in answers), answers
    assert own.version == 0, "nothing was shown"
    assert len(await denied(bot, "payload")) == 2
    assert len(await denied(bot, "ownership")) == 2
    assert all(e.actor_telegram_id == bert.id for e in await denied(bot))
    async with services(bot).sessions() as session:
        link = await LinkRepository(session).active_for_client(robin.id)
    assert link is not None, "Anna's client is still linked to her"
    assert (await person(bot, robin.telegram_id)).alias == "Robin"
    assert len(emulator.user(robin.telegram_id).messages) == 1, "the client was told nothing new"


# -- /therapists: deactivate and move ---------------------------------------------------------


async def test_deactivating_a_therapist_tells_their_clients_who_can_be_moved(
    bot: RunningBot, emulator: BotApiEmulator, content: Content
):
    anna = await new_therapist(emulator, "Anna", 8101)
    bert = await new_therapist(emulator, "Bert", 8102)
    clients = await add_clients(bot, emulator, anna, ["Robin", "Kim"], 7400)
    await anna.send("/invite")
    await anna.press("Skip", await anna.next_message())
    pending, _, _ = await receive_invite(anna)

    admin = emulator.user(ADMIN_ID)
    await admin.send("/therapists")
    listing = await admin.next_message()
    assert "Anna: 2 clients" in listing.content and "Bert: 0 clients" in listing.content
    assert "Robin" not in listing.content and "Kim" not in listing.content, "staff see no aliases"
    await admin.press("Anna", listing)
    page = await admin.wait_for_edit(listing)
    assert "Connected clients: 2" in page.content
    await admin.press("Deactivate", page)
    confirm = await admin.wait_for_edit(page)
    await admin.press("Yes, deactivate", confirm)
    done = await admin.wait_for_edit(confirm)
    assert done.content.startswith("Anna has been deactivated; 2 clients were told.")
    for client in clients:
        notice = await emulator.user(client.telegram_id).next_message()
        assert starts(notice, content, "therapists.client_notice") and "Anna" not in notice.content
    assert starts(await anna.next_message(), content, "therapists.deactivated_notice")
    # The clients' notices went through the outbox (paced, however many clients).
    async with services(bot).sessions() as session:
        told = await session.scalars(
            select(OutboxMessage.recipient_id).where(
                OutboxMessage.kind == OutboxKind.NOTICE, OutboxMessage.state.in_([OutboxState.SENDING, OutboxState.SENT])
            )
        )
        assert sorted(told) == sorted(client.id for client in clients)
    assert not (await services(bot).invites.inspect(pending)).valid, "her unused client links are revoked"

    # A deactivated therapist can no longer reach clients or make invites.
    await anna.send("/clients")
    assert (await anna.next_message()).content.startswith("Sorry, that is not available to you.")
    await anna.send("/invite")
    await anna.next_message()
    await anna.press("Skip")
    await anna.expect_silence(0.3)
    assert anna.callback_answers[-1]["text"].startswith("Sorry, that is not available to you.")

    await admin.send("/therapists")
    listing = await admin.next_message()
    assert "Anna (deactivated): 2 clients to move" in listing.content
    await admin.press("Anna", listing)
    page = await admin.wait_for_edit(listing)
    await admin.press("Move clients", page)
    choose = await admin.wait_for_edit(page)
    assert [b.text for b in choose.button_list] == ["Bert", "‹ All therapists"]
    move_to_bert = choose.button_list[0].value  # kept: the message is edited in place
    await admin.press("Bert", choose)
    moved = await admin.wait_for_edit(choose)
    assert moved.content.startswith("2 clients were moved to Bert")
    for client in clients:
        notice = await emulator.user(client.telegram_id).next_message()
        assert notice.content.startswith("You are now connected with Bert")
    assert starts(await bert.next_message(), content, "therapists.moved_therapist_notice", clients=2)
    await bert.send("/clients")
    assert (await bert.next_message()).content.startswith("Your clients (2)")
    # Pressing Move again finds nobody left to move.
    await admin.press_data(move_to_bert, moved)
    again = await admin.wait_for_edit(moved)
    assert again.content.startswith("0 clients were moved")
    async with services(bot).sessions() as session:
        actions = (await session.scalars(select(AuditEvent.action))).all()
    assert {"therapist.deactivated", "therapist.clients_moved"} <= set(actions)


async def test_a_therapist_tapped_twice_in_the_list_shows_their_page_without_an_error(
    bot: RunningBot, emulator: BotApiEmulator
):
    """Found by tests/test_fuzz.py: the second tap asks for the page the first one showed, and
    Telegram answers that edit with 400 "message is not modified"; it reached the error
    handler and the admin was told something went wrong."""
    await new_therapist(emulator, "Anna", 8101)
    admin = emulator.user(ADMIN_ID)
    await admin.send("/therapists")
    listing = await admin.next_message()
    await admin.press("Anna", listing)
    await admin.press("Anna", listing)  # before the bot read the first tap
    page = await admin.wait_for_edit(listing)
    assert "Connected clients: 0" in page.content
    await emulator.updates_processed()
    assert not [m for m in admin.messages if says(m, "errors.generic")]


async def test_therapist_buttons_refuse_other_roles_and_forged_ids(
    bot: RunningBot, emulator: BotApiEmulator
):
    anna = await new_therapist(emulator, "Anna", 8201)
    await anna.send("/therapists")
    assert (await anna.next_message()).content.startswith("Sorry, that is not available to you.")
    codec = services(bot).callbacks
    stored = await person(bot, anna.id)
    # Signed for Anna herself, but her role may not use it.
    await anna.press_data(codec.pack(anna.id, "th.deact_ok", stored.id))
    await anna.expect_silence(0.3)
    assert anna.callback_answers[-1]["text"].startswith("Sorry")
    assert (await person(bot, anna.id)).active
    # Staff replaying an id that is not a therapist's (the admin's own person, a client).
    admin = emulator.user(ADMIN_ID)
    await admin.send("/therapists")
    listing = await admin.next_message()
    (client,) = await add_clients(bot, emulator, anna, ["Robin"], 7500)
    await admin.press_data(codec.pack(ADMIN_ID, "th.deact_ok", client.id), listing)
    await admin.expect_silence(0.3)
    assert admin.callback_answers[-1]["text"].startswith("Sorry")
    assert (await person(bot, client.telegram_id)).active
    reasons = sorted(e.detail["reason"] for e in await denied(bot))
    assert reasons == ["ownership", "role", "role"]


# -- imrs-bot admin add -----------------------------------------------------------------------


def test_the_admin_add_command_makes_an_audited_administrator(
    database_url: str, tmp_path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    """In-process (the real subprocess paths are covered by tests/test_cli.py)."""
    import asyncio
    import logging

    from bot.cli import main
    from bot.crypto.keyring import generate_keyring
    from bot.db.migrate import upgrade
    from bot.runtime import open_services

    # main() installs a root log handler on this test's captured stderr: put the old ones back
    # afterwards, or later tests would log into a closed stream.
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", list(root.handlers))
    monkeypatch.setattr(root, "level", root.level)
    asyncio.run(upgrade(database_url))
    monkeypatch.chdir(tmp_path)  # no .env from the checkout
    for name in ("ADMIN_TELEGRAM_IDS", "IMRS_KEYS_FILE", "IMRS_KEYSTORE_URL", "TELEGRAM_BOT_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("IMRS_KEYS", generate_keyring().to_json())

    assert main(["admin", "add", "777"]) == 0
    assert "777 is now an administrator" in capsys.readouterr().out
    assert main(["admin", "add", "777"]) == 0
    assert "already an administrator" in capsys.readouterr().out

    async def look() -> tuple[Person | None, list[AuditEvent]]:
        from bot.config import load_settings

        services = await open_services(load_settings())
        try:
            async with services.sessions.begin() as session:
                admin = await PeopleRepository(session).get_by_telegram_id(777)
                await PeopleRepository(session).add(
                    Person(telegram_id=778, role=Role.CLIENT, language="en", timezone="UTC")
                )
                events = (await session.scalars(select(AuditEvent).where(AuditEvent.action == "admin.added"))).all()
            return admin, list(events)
        finally:
            await services.close()

    admin, events = asyncio.run(look())
    assert admin.role is Role.ADMIN and admin.active
    assert len(events) == 1 and events[0].subject_person_id == admin.id
    assert events[0].actor_role == "operator" and events[0].detail == {"previous_role": None}

    assert main(["admin", "add", "778"]) == 2  # a client keeps their clinical role
    assert "registered as a client" in capsys.readouterr().err


@pytest.mark.parametrize("lang", Content().languages)
def test_clinic_button_labels_are_short_texts(lang: str):
    """YAML reads a bare ``No`` as false: every label must stay a short text."""
    content = Content()
    labels = [k for k in content.keys(lang) if k.split(".")[0] in {"practice", "invite", "clients", "therapists", "staff"}
              and k.endswith("_button")]
    assert len(labels) >= 15
    for key in labels:
        value = content.raw(key, lang)
        assert isinstance(value, str) and 1 <= len(value) <= 32, key


# -- the button half of the access matrix -----------------------------------------------------


def reachable_buttons(application) -> dict[str, tuple[frozenset[Role], str | None]]:
    """Every restricted button handler a press can reach at any time (top level, or a
    conversation's entry points), from the registered handlers: pattern -> (allowed roles,
    the signed action it answers, or None). A handler whose pattern is not a regular
    expression fails here: no restricted button may escape the matrix."""
    from telegram.ext import CallbackQueryHandler, ConversationHandler

    from bot.callbacks import CallbackCodec
    from handlers.access import allowed_roles

    found: dict[str, tuple[frozenset[Role], str | None]] = {}

    def visit(handlers) -> None:
        for handler in handlers:
            if isinstance(handler, ConversationHandler):
                visit(handler.entry_points)
            elif isinstance(handler, CallbackQueryHandler):
                roles = allowed_roles(handler.callback)
                if not roles:
                    continue  # public
                assert isinstance(handler.pattern, re.Pattern) or isinstance(handler.pattern, str), handler
                source = getattr(handler.pattern, "pattern", handler.pattern)
                found[source] = (roles, CallbackCodec.signed_action(source))

    for group in sorted(application.handlers):
        visit(application.handlers[group])
    return found


def press_data_for(pattern: str, signed: str | None, codec, user_id: int) -> str:
    """A payload the handler's pattern takes: validly signed for the presser where the
    action is signed, otherwise the simplest string the pattern matches."""
    from hypothesis import find
    from hypothesis import strategies as st

    if signed is not None:
        return codec.pack(user_id, signed, 1, 2)
    return find(st.from_regex(re.compile(pattern), fullmatch=True), lambda s: len(s.encode()) <= 64)


async def test_restricted_buttons_are_refused_to_every_other_role(bot: RunningBot, emulator: BotApiEmulator):
    """Generated from the registered handlers, like test_access's command matrix: every
    restricted button, validly signed for the presser, pressed by every role that may not."""
    buttons = reachable_buttons(bot.application)
    signed = {action for _, action in buttons.values() if action}
    assert {"cl.open", "cl.unlink_ok", "th.deact_ok", "th.move_to", "st.invite"} <= signed
    # /appointments (staff and therapists) and the buttons under an appointment reminder (clients).
    assert {"ap.th", "ap.list", "ap.new", "ap.client", "ap.open", "ap.move", "ap.cancel", "ap.cancel_ok",
            "ap.yes", "ap.resched"} <= signed
    assert "ci.start" in signed  # under a check-in prompt (clients)
    assert "bc.cancel" in signed  # /broadcasts: cancel a scheduled or running broadcast (staff)
    assert "bc.page" in signed  # /broadcasts: older and newer pages (staff)
    assert any(action is None for _, action in buttons.values()), "unsigned patterns are pressed too"
    assert {f"^{re.escape(a)}$" for a in ("splan:begin", "splan:edit", "splan:share", "splan:unshare", "splan:delete_yes")} <= set(buttons)
    people: dict[Role | None, SimUser] = {}
    for n, role in enumerate([None, *Role]):
        telegram_id = ADMIN_ID if role is Role.ADMIN else 9000 + n
        if role not in (None, Role.ADMIN):
            async with services(bot).sessions.begin() as session:
                await PeopleRepository(session).add(
                    Person(telegram_id=telegram_id, role=role, language="en", timezone="UTC")
                )
        people[role] = user = emulator.user(telegram_id)
        await user.send("/about")  # something to press under
        await user.next_message()
    codec = services(bot).callbacks
    attempts = 0
    for pattern, (allowed, action) in sorted(buttons.items()):
        for role, user in people.items():
            if role in allowed:
                continue
            data = press_data_for(pattern, action, codec, user.id)
            query = await user.press_data(data)
            answer = await user.wait_for_callback_answer(query)
            assert (answer.text or "").startswith("Sorry, that is not available to you."), (pattern, data, role)
            attempts += 1
    assert len(await denied(bot, "role")) == attempts > 0
