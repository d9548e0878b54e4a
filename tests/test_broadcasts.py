"""Staff broadcasts (issue 15): /broadcast through the running bot and the emulator, and the
service's fan-out with the dispatcher: exactly one message per recipient through 429s, 403s
and a restart, cancel mid-way, a scheduled broadcast that fires once, figures that add up."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select, update

from bot.content import Content
from bot.db.delivery_models import OutboxMessage
from bot.db.models import AuditEvent, Broadcast, BroadcastState, ConsentChoice, ConsentRecord, Person, Role, TherapistClientLink
from bot.db.repositories import PeopleRepository
from bot.db.types import utcnow
from bot.delivery.dispatcher import Dispatcher
from bot.delivery.store import OutboxStore
from bot.sandbox.emulator import BotApiEmulator, FloodLimits
from bot.services.broadcasts import Audience, BroadcastError, BroadcastService, key_prefix
from bot.services.consent import ConsentService
from bot.services.invites import NotAllowed
from bot.services.notices import Notices
from bot.services.people import Identity
from tests.fixtures_bot import RunningBot
from tests.fixtures_delivery import *  # noqa: F403
from tests.fixtures_delivery import FAST, FakeClock, add_people, crypto_of, grant_consent
from tests.join_support import add_person, labels, open_chat, plain, says, services

STAFF_TG = 8601


def t(key: str, **params) -> str:
    return Content().text(key, "en", **params)


# -- helpers: people -----------------------------------------------------------------------------


async def link(sessions, therapist_id: int, client_ids: list[int]) -> None:
    async with sessions.begin() as session:
        session.add_all(TherapistClientLink(therapist_id=therapist_id, client_id=c) for c in client_ids)


async def withdraw(sessions, person_id: int) -> None:
    async with sessions.begin() as session:
        session.add(ConsentRecord(person_id=person_id, consent_version=Content().text("consent.version"),
                                  choice=ConsentChoice.WITHDRAWN, recorded_at=utcnow()))


async def staff_identity(sessions) -> Identity:
    async with sessions.begin() as session:
        person = await PeopleRepository(session).add(
            Person(telegram_id=STAFF_TG, role=Role.STAFF, language="en", timezone="Europe/Amsterdam")
        )
    return Identity(STAFF_TG, "Desk", Role.STAFF, person.id, "en", "Europe/Amsterdam")


def broadcast_service(sessions, *, rate: float = 200.0, clock=None) -> BroadcastService:
    content = Content()
    outbox = OutboxService(sessions)  # noqa: F405
    consent = ConsentService(sessions, content, Notices(outbox, content))
    options = {"clock": clock} if clock is not None else {}
    return BroadcastService(sessions, outbox=outbox, content=content, may_receive=consent.may_receive,
                            rate_per_second=rate, **options)


def dispatcher_for(bot, sessions, service: BroadcastService, *, clock=None, **config) -> Dispatcher:
    """A dispatcher as bot.delivery wires it: consent checked at send time, broadcasts planned
    on each tick and their texts read at send time."""
    options = {"clock": clock} if clock is not None else {}
    return Dispatcher(
        bot, OutboxStore(sessions, crypto_of(sessions)), Content(), config=dataclasses.replace(FAST, **config),
        may_receive=service._may_receive, broadcasts=service, **options,
    )


async def broadcast_rows(sessions, broadcast_id: int) -> list[OutboxMessage]:
    async with sessions() as session:
        return list((await session.scalars(
            select(OutboxMessage).where(OutboxMessage.idempotency_key.like(f"{key_prefix(broadcast_id)}%"))
        )).all())


async def run_until(dispatcher, condition, timeout: float = 60.0) -> None:
    dispatcher.start()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await condition():
        if loop.time() > deadline:
            raise AssertionError(f"not done within {timeout}s: {dispatcher.stats}")
        await dispatcher.tick()
        await asyncio.sleep(dispatcher.config.tick_seconds)


# -- the service ---------------------------------------------------------------------------------


async def test_only_staff_may_broadcast_and_bad_texts_are_refused(session_factory, emulator):
    service = broadcast_service(session_factory)
    staff = await staff_identity(session_factory)
    [(client, _)] = await add_people(session_factory, emulator, 1)
    as_client = Identity(9, "c", Role.CLIENT, client, "en", "UTC")
    with pytest.raises(NotAllowed):
        await service.draft(as_client, "Hello")
    for text, reason in [("  ", "empty_text"), ("x" * 4097, "too_long"), ("<b>open", "markup"), ("<blink>x</blink>", "markup")]:
        with pytest.raises(BroadcastError) as refused:
            await service.draft(staff, text)
        assert refused.value.reason == reason
    assert service.warnings("Your <b>ImRS</b> session and trauma work") == ["trauma", "imrs"]
    draft = await service.draft(staff, "A calm evening")
    with pytest.raises(BroadcastError) as refused:
        await service.send(staff, draft, Audience("appointments", days=3))  # nobody has one
    assert refused.value.reason == "empty_audience"
    with pytest.raises(BroadcastError) as refused:
        service.check_time("2020-01-01 10:00", "Europe/Amsterdam")
    assert refused.value.reason == "past"
    with pytest.raises(BroadcastError) as refused:
        await service.send(staff, draft, Audience("all"), utcnow() - timedelta(minutes=1))
    assert refused.value.reason == "past"
    await service.plan(utcnow() + timedelta(days=1, minutes=1))  # an abandoned draft is deleted, text and all
    async with session_factory() as session:
        assert await session.scalar(select(func.count()).select_from(Broadcast)) == 0


async def test_a_scheduled_broadcast_fires_once_even_planned_by_two_instances(session_factory, emulator, delivery_bot):
    clock = FakeClock(utcnow())
    first, second = broadcast_service(session_factory, clock=clock), broadcast_service(session_factory, clock=clock)
    staff = await staff_identity(session_factory)
    people = await add_people(session_factory, emulator, 5)
    draft = await first.draft(staff, "See you <b>soon</b>")
    view, reach = await first.send(staff, draft, Audience("all"), clock() + timedelta(hours=1))
    assert reach.total == 5 and view.state is BroadcastState.SCHEDULED
    await first.plan(clock())
    assert await broadcast_rows(session_factory, view.id) == []  # not yet
    clock.now += timedelta(hours=1, seconds=1)
    await asyncio.gather(first.plan(clock()), second.plan(clock()))
    await first.plan(clock())
    assert len(await broadcast_rows(session_factory, view.id)) == 5
    clock.now += timedelta(seconds=1)  # the rows are due at the configured rate, one after another
    dispatcher = dispatcher_for(delivery_bot, session_factory, first, clock=clock)

    async def finished() -> bool:
        return (await first.progress(view.id)).state is BroadcastState.DONE

    await run_until(dispatcher, finished)
    await dispatcher.stop()
    for _, user in people:
        assert [m.content for m in user.messages] == ["A message from your practice:\n\nSee you soon"]
    figures = await first.progress(view.id)
    assert (figures.sent, figures.remaining, figures.queued) == (5, 0, 5)
    async with session_factory() as session:
        actions = (await session.scalars(select(AuditEvent.action).where(AuditEvent.action.like("broadcast.%")))).all()
        detail = await session.scalar(select(AuditEvent.detail).where(AuditEvent.action == "broadcast.created"))
    assert sorted(actions) == ["broadcast.created", "broadcast.finished"]
    assert "See you" not in str(detail) and detail["count"] == 5


async def test_cancel_mid_way_leaves_the_rest_unsent(session_factory, emulator, delivery_bot):
    service = broadcast_service(session_factory, rate=20)
    staff = await staff_identity(session_factory)
    people = await add_people(session_factory, emulator, 60)
    draft = await service.draft(staff, "Hello")
    view, _ = await service.send(staff, draft, Audience("all"))
    dispatcher = dispatcher_for(delivery_bot, session_factory, service, rate_per_second=20.0)

    async def some_sent() -> bool:
        return (await service.progress(view.id)).sent >= 10

    await run_until(dispatcher, some_sent)
    await service.cancel(staff, view.id)
    for _ in range(10):
        await dispatcher.tick()
        await asyncio.sleep(0.05)
    await dispatcher.idle()
    await dispatcher.stop()
    received = sum(len(user.messages) for _, user in people)
    figures = await service.progress(view.id)
    assert figures.state is BroadcastState.CANCELLED
    assert 10 <= received < 60 and all(len(user.messages) <= 1 for _, user in people)
    assert figures.sent == received and figures.remaining == 0
    assert figures.sent + figures.withdrawn == 60
    with pytest.raises(BroadcastError):
        await service.cancel(staff, view.id)


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_two_thousand_recipients_through_429_403_and_a_restart_get_one_each(session_factory, delivery_bot):
    # Telegram's overall limit raised (the emulator's default is 30/s), so that 2,000 take seconds.
    emulator = BotApiEmulator(flood=FloodLimits(overall_per_second=2000, overall_burst=200))
    async with emulator:
        bot = type(delivery_bot)(
            emulator.token, base_url=emulator.base_url, defaults=delivery_bot.defaults,
            rate_limiter=delivery_bot.rate_limiter,
        )
        await bot.initialize()
        try:
            await two_thousand(session_factory, emulator, bot)
        finally:
            await bot.shutdown()


async def two_thousand(session_factory, emulator, delivery_bot) -> None:
    service = broadcast_service(session_factory, rate=400)
    staff = await staff_identity(session_factory)
    people = await add_people(session_factory, emulator, 2000)
    ids = [p for p, _ in people]
    blocked = {ids[n] for n in range(0, 2000, 100)}  # 20 blocked the bot
    no_consent = set(ids[5:15])  # 10 withdrew consent
    inactive = set(ids[20:25])  # 5 already inactive
    for person_id, user in people:
        if person_id in blocked:
            user.block()
    for person_id in no_consent:
        await withdraw(session_factory, person_id)
    async with session_factory.begin() as session:
        await session.execute(update(Person).where(Person.id.in_(inactive)).values(active=False))
    draft = await service.draft(staff, "Practise your calm place this week.")
    view, reach = await service.send(staff, draft, Audience("all"))
    assert reach.total == 2000 - 10 - 5 and reach.unreachable == 15
    emulator.inject("sendMessage", status=429, retry_after=1, count=3)
    dispatcher = dispatcher_for(delivery_bot, session_factory, service, rate_per_second=400.0)

    async def halfway() -> bool:
        return (await service.progress(view.id)).sent >= 700

    await run_until(dispatcher, halfway, timeout=120)
    await dispatcher.stop()  # a restart: a new service and dispatcher take over
    service = broadcast_service(session_factory, rate=400)
    dispatcher = dispatcher_for(delivery_bot, session_factory, service, rate_per_second=400.0)

    async def finished() -> bool:
        return (await service.progress(view.id)).state is BroadcastState.DONE

    await run_until(dispatcher, finished, timeout=180)
    await dispatcher.stop()
    skipped = blocked | no_consent | inactive
    for person_id, user in people:
        assert len(user.messages) == (0 if person_id in skipped else 1), person_id
    figures = await service.progress(view.id)
    assert figures.audience == 2000 and figures.queued == 1995
    assert (figures.sent, figures.blocked, figures.no_consent, figures.failed, figures.remaining) == (
        2000 - 35, 20 + 5, 10, 0, 0)
    assert figures.sent + figures.blocked + figures.no_consent + figures.failed + figures.remaining == figures.audience
    assert len(await broadcast_rows(session_factory, view.id)) == 1995


async def test_two_instances_share_a_broadcast_and_send_one_each(session_factory, delivery_bot):
    """Two instances (on PostgreSQL: claims with SKIP LOCKED) plan and deliver one broadcast
    at once: both queue it, each row goes out once."""
    emulator = BotApiEmulator(flood=FloodLimits(overall_per_second=2000, overall_burst=200))
    async with emulator:
        bot = type(delivery_bot)(
            emulator.token, base_url=emulator.base_url, defaults=delivery_bot.defaults,
            rate_limiter=delivery_bot.rate_limiter,
        )
        await bot.initialize()
        try:
            first, second = broadcast_service(session_factory, rate=300), broadcast_service(session_factory, rate=300)
            staff = await staff_identity(session_factory)
            people = await add_people(session_factory, emulator, 300)
            view, _ = await first.send(staff, await first.draft(staff, "Hello"), Audience("all"))
            emulator.inject("sendMessage", status=429, retry_after=1, count=2)
            one = dispatcher_for(bot, session_factory, first, rate_per_second=150.0)
            two = dispatcher_for(bot, session_factory, second, rate_per_second=150.0)

            async def finished() -> bool:
                return (await first.progress(view.id)).state is BroadcastState.DONE

            await asyncio.gather(run_until(one, finished), run_until(two, finished))
            await asyncio.gather(one.stop(), two.stop())
        finally:
            await bot.shutdown()
    assert all(len(user.messages) == 1 for _, user in people)
    assert one.stats.sent > 0 and two.stats.sent > 0 and one.stats.sent + two.stats.sent == 300
    async with session_factory() as session:
        finished_events = await session.scalar(
            select(func.count()).select_from(AuditEvent).where(AuditEvent.action == "broadcast.finished"))
    assert finished_events == 1


async def test_audiences_one_therapists_clients_and_coming_sessions(session_factory, emulator):
    from bot.db.models import Appointment, AppointmentKind

    service = broadcast_service(session_factory)
    staff = await staff_identity(session_factory)
    people = await add_people(session_factory, emulator, 4)
    dutch = await add_people(session_factory, emulator, 1, language="nl")
    async with session_factory.begin() as session:
        therapist = await PeopleRepository(session).add(
            Person(telegram_id=777, role=Role.THERAPIST, language="en", timezone="Europe/Amsterdam"))
    ids = [p for p, _ in people] + [dutch[0][0]]
    await link(session_factory, therapist.id, [ids[0], ids[1], ids[4]])
    now = utcnow()
    async with session_factory.begin() as session:
        for client, kind, days in [(ids[0], AppointmentKind.IMRS, 2), (ids[2], AppointmentKind.PREPARATION, 5),
                                   (ids[3], AppointmentKind.EVALUATION, 1)]:
            session.add(Appointment(therapist_id=therapist.id, client_id=client, kind=kind, timezone="UTC",
                                    starts_at=now + timedelta(days=days), ends_at=now + timedelta(days=days, hours=1)))
    assert (await service.reach(staff, Audience("therapist", therapist.id))).by_language == {"en": 2, "nl": 1}
    assert (await service.reach(staff, Audience("therapist", therapist.id, language="nl"))).total == 1
    assert (await service.reach(staff, Audience("appointments", days=3))).total == 1
    assert (await service.reach(staff, Audience("appointments", days=7))).total == 2
    assert (await service.reach(staff, Audience("all"))).total == 5
    with pytest.raises(BroadcastError):
        await service.reach(staff, Audience("appointments", days=0))


# -- through the chat ----------------------------------------------------------------------------


async def test_staff_broadcast_to_one_therapists_clients_through_the_chat(bot: RunningBot, emulator: BotApiEmulator):
    sessions = services(bot).sessions
    await add_person(bot, STAFF_TG, Role.STAFF, display_name="Desk")
    therapist = await add_person(bot, 8602, Role.THERAPIST, display_name="Dr. Jansen")
    await add_person(bot, 8603, Role.THERAPIST, display_name="Dr. Other")
    mine, others = [], []
    for n in range(4):
        client = await add_person(bot, 8700 + n, Role.CLIENT, language="nl" if n == 3 else "en")
        user = emulator.user(8700 + n)
        emulator.state.chats[user.id].reachable = True  # pressed Start before
        (mine if n != 2 else others).append((client.person_id, user))
    async with sessions.begin() as session:
        await grant_consent(session, [mine[0][0], mine[2][0], others[0][0]])  # mine[1]: no consent
    await link(sessions, therapist.person_id, [p for p, _ in mine])
    staff = await open_chat(emulator.user(STAFF_TG, first_name="Desk"))

    await staff.send("/broadcast")
    assert says(await staff.next_message(), "broadcast.ask_text")
    await staff.send("<b>open")  # malformed: asked again
    assert (await staff.next_message()).content.startswith("I cannot read the formatting")
    await staff.send("Your ImRS session is this week: plan a calm evening afterwards.")
    audience = await staff.next_message()
    assert labels(audience) == [t("broadcast.audiences.all"), t("broadcast.audiences.therapist"), t("broadcast.audiences.appointments")]
    await staff.press(t("broadcast.audiences.therapist"), audience)
    chooser = await staff.next_message()
    assert labels(chooser) == ["Dr. Jansen", "Dr. Other"]
    await staff.press("Dr. Jansen", chooser)
    await staff.press(t("broadcast.all_languages"), await staff.next_message())
    english = await staff.next_message()
    assert "A message from your practice:\n\nYour ImRS session is this week" in english.content
    dutch = await staff.next_message()
    assert "Een bericht van je praktijk:" in dutch.content
    summary = await staff.next_message()
    assert summary.content.startswith("2 clients will receive it (English: 1, Dutch: 1)")
    assert "1 more in this audience cannot receive it now" in summary.content
    assert "imrs" in summary.content  # the clinical-word warning
    await staff.press(t("broadcast.schedule_button"), summary)
    assert says(await staff.next_message(), "broadcast.ask_time")
    await staff.send("2020-01-01 10:00")  # the past: asked again
    assert (await staff.next_message()).content.startswith("That time has passed")
    await staff.send("tomorrow")
    assert (await staff.next_message()).content.startswith("I could not read that time")
    await staff.send("/broadcasts")  # a command ends the flow; nothing was sent
    assert says(await staff.next_message(), "broadcast.list_empty")

    # Again, now: send at once.
    await staff.send("/broadcast")
    await staff.next_message()
    await staff.send("A calm <i>evening</i>")
    await staff.press(t("broadcast.audiences.therapist"), await staff.next_message())
    await staff.press("Dr. Jansen", await staff.next_message())
    await staff.press(t("broadcast.all_languages"), await staff.next_message())
    await staff.next_message()
    await staff.next_message()
    summary = await staff.next_message()
    assert "could reveal" not in summary.content
    await staff.press(t("broadcast.send_now_button"), summary)
    confirm = await staff.next_message()
    assert confirm.content == "Send it to 2 clients now?"
    await staff.press(t("broadcast.yes_button"), confirm)
    progress = await staff.next_message()
    assert progress.content.startswith("Message to clients (")
    for _ in range(60):
        await bot.outbox_settled()
        if "(done)" in progress.content:
            break
    assert progress.content.startswith("Message to clients (done)"), progress.content
    assert "Sent: 2 · blocked: 0 · skipped (no consent): 1 · failed: 0" in progress.content
    (en_id, en_user), (nl_id, nl_user) = mine[0], mine[2]
    assert [m.content for m in en_user.messages] == ["A message from your practice:\n\nA calm evening"]
    assert [m.content for m in nl_user.messages] == ["Een bericht van je praktijk:\n\nA calm evening"]
    assert mine[1][1].messages == [] and others[0][1].messages == []

    listing_before = len(staff.messages)
    await staff.send("/broadcasts")
    listing = await staff.next_message()
    assert len(staff.messages) == listing_before + 1
    assert "The clients of one therapist, done; sent 2 of 3" in listing.content
    assert labels(listing) == []  # nothing left to cancel


async def test_a_client_and_a_therapist_may_not_broadcast(bot: RunningBot, emulator: BotApiEmulator):
    await add_person(bot, 8801, Role.THERAPIST)
    await add_person(bot, 8802, Role.CLIENT)
    for telegram_id in (8801, 8802):
        user = await open_chat(emulator.user(telegram_id))
        for command in ("/broadcast", "/broadcasts"):
            await user.send(command)
            assert (await user.next_message()).content.startswith("Sorry, that is not available to you.")


async def test_bad_days_are_asked_again_and_a_scheduled_one_can_be_cancelled(bot: RunningBot, emulator: BotApiEmulator):
    sessions = services(bot).sessions
    await add_person(bot, STAFF_TG, Role.STAFF)
    client = await add_person(bot, 8901, Role.CLIENT)
    async with sessions.begin() as session:
        await grant_consent(session, [client.person_id])
    staff = await open_chat(emulator.user(STAFF_TG))
    await staff.send("/broadcast")
    await staff.next_message()
    await staff.send("Hello all")
    await staff.press(t("broadcast.audiences.appointments"), await staff.next_message())
    assert says(await staff.next_message(), "broadcast.ask_days")
    for bad in ("0", "seven", "61"):
        await staff.send(bad)
        assert says(await staff.next_message(), "broadcast.errors.bad_days")
    await staff.send("7")
    await staff.press(t("broadcast.all_languages"), await staff.next_message())
    assert says(await staff.next_message(), "broadcast.errors.empty_audience")  # nobody has a session soon
    await staff.press(t("broadcast.audiences.all"), await staff.next_message())
    await staff.press(t("broadcast.all_languages"), await staff.next_message())
    await staff.next_message()  # the preview
    await staff.press(t("broadcast.schedule_button"), await staff.next_message())
    await staff.next_message()
    await staff.send((utcnow() + timedelta(days=2)).astimezone(ZoneInfo("Europe/Amsterdam")).strftime("%Y-%m-%d %H:%M"))
    confirm = await staff.next_message()
    assert confirm.content.startswith("Send it to 1 clients on ")
    await staff.press(t("broadcast.yes_button"), confirm)
    assert (await staff.next_message()).content.startswith("It will be sent on ")
    await staff.send("/broadcasts")
    listing = await staff.next_message()
    assert "All clients, scheduled; sent 0 of 0" in listing.content
    [label] = labels(listing)
    await staff.press(label, listing)
    assert (await staff.next_message()).content.startswith("The message of ")
    async with sessions() as session:
        state = await session.scalar(select(Broadcast.state))
    assert state == BroadcastState.CANCELLED


async def test_a_restart_mid_way_continues_the_broadcast_and_its_progress_message(bot: RunningBot, emulator: BotApiEmulator):
    await add_person(bot, STAFF_TG, Role.STAFF)
    clients = []
    for n in range(80):
        client = await add_person(bot, 9100 + n, Role.CLIENT)
        user = emulator.user(9100 + n)
        emulator.state.chats[user.id].reachable = True
        clients.append((client.person_id, user))
    async with services(bot).sessions.begin() as session:
        await grant_consent(session, [p for p, _ in clients])
    staff = await open_chat(emulator.user(STAFF_TG))
    await staff.send("/broadcast")
    await staff.next_message()
    await staff.send("A calm evening")
    await staff.press(t("broadcast.audiences.all"), await staff.next_message())
    await staff.press(t("broadcast.all_languages"), await staff.next_message())
    await staff.next_message()  # the preview
    await staff.press(t("broadcast.send_now_button"), await staff.next_message())
    await staff.press(t("broadcast.yes_button"), await staff.next_message())
    progress = await staff.next_message()
    async with services(bot).sessions() as session:
        broadcast_id = await session.scalar(select(Broadcast.id))
    # At 25 messages a second, in the order of the person ids: the tenth is well before the end.
    tenth = sorted(clients, key=lambda client: client[0])[9][1]
    await tenth.next_message()
    before = await services(bot).broadcasts.progress(broadcast_id)
    assert before.remaining > 0  # the restart comes in the middle
    await bot.restart()
    for _ in range(200):
        await bot.outbox_settled()
        if "(done)" in progress.content:
            break
    assert progress.content.startswith("Message to clients (done)"), progress.content
    assert "Sent: 80 · blocked: 0" in progress.content and "Remaining: 0" in progress.content
    assert all(len(user.messages) == 1 for _, user in clients)


# -- opting out of practice announcements (/settings), templates, paging ---------------------------


async def opt_out(sessions, person_ids) -> None:
    async with sessions.begin() as session:
        await session.execute(update(Person).where(Person.id.in_(list(person_ids))).values(announcements=False))


async def test_opted_out_clients_are_skipped_and_counted_and_the_figures_add_up(session_factory, emulator, delivery_bot):
    from bot.services.broadcasts import OPTED_OUT, skip_pending_for

    clock = FakeClock(utcnow())
    service = broadcast_service(session_factory, clock=clock)
    staff = await staff_identity(session_factory)
    people = await add_people(session_factory, emulator, 8)
    ids = [p for p, _ in people]
    opted_out, no_consent, inactive, late = set(ids[0:2]), {ids[2]}, {ids[3]}, ids[4]
    await opt_out(session_factory, opted_out | {ids[5]})  # ids[5] is also inactive: opted out counts first
    await withdraw(session_factory, ids[2])
    async with session_factory.begin() as session:
        await session.execute(update(Person).where(Person.id.in_(inactive | {ids[5]})).values(active=False))
    draft = await service.draft(staff, "A calm evening")
    view, reach = await service.send(staff, draft, Audience("all"))
    assert (reach.total, reach.opted_out, reach.unreachable) == (3, 3, 2)  # 3 + 3 + 2 == 8
    await service.plan(clock())  # queued, nothing sent yet
    rows = await broadcast_rows(session_factory, view.id)
    assert sorted(row.recipient_id for row in rows) == sorted(set(ids) - opted_out - {ids[5]} - inactive)
    assert all(row.broadcast_id == view.id for row in rows)
    # One more opts out while it is going out: their row is settled, not sent.
    await opt_out(session_factory, [late])
    async with session_factory.begin() as session:
        assert await skip_pending_for(session, late, clock()) == 1
    figures = await service.progress(view.id)
    assert (figures.audience, figures.queued, figures.opted_out, figures.blocked, figures.remaining) == (8, 4, 4, 1, 3)

    clock.now += timedelta(seconds=1)
    dispatcher = dispatcher_for(delivery_bot, session_factory, service, clock=clock)

    async def finished() -> bool:
        return (await service.progress(view.id)).state is BroadcastState.DONE

    await run_until(dispatcher, finished)
    await dispatcher.stop()
    received = {person_id for person_id, user in people if user.messages}
    assert received == {ids[6], ids[7]}
    for figures in (await service.progress(view.id), await service.progress(view.id)):  # closed: read twice, same
        assert (figures.sent, figures.opted_out, figures.no_consent, figures.blocked, figures.failed, figures.remaining) == (
            2, 4, 1, 1, 0, 0)
        assert figures.sent + figures.opted_out + figures.no_consent + figures.blocked + figures.failed == figures.audience
    async with session_factory() as session:
        row = await session.get(Broadcast, view.id)
        assert row.skipped_opted_out == 4
        assert await session.scalar(select(func.count()).select_from(OutboxMessage).where(
            OutboxMessage.last_error == OPTED_OUT)) == 1


async def test_a_template_is_read_in_each_recipients_language(session_factory, emulator, delivery_bot):
    service = broadcast_service(session_factory)
    staff = await staff_identity(session_factory)
    english = await add_people(session_factory, emulator, 2)
    dutch = await add_people(session_factory, emulator, 2, language="nl")
    names = [name for name, _ in service.templates("en")]
    assert names and [label for _, label in service.templates("nl")] != [label for _, label in service.templates("en")]
    with pytest.raises(BroadcastError) as refused:
        await service.draft(staff, "", template="no_such_template")
    assert refused.value.reason == "unknown_template"
    for name in names:  # what content check promises: no word that reveals a diagnosis or treatment
        for language in ("en", "nl"):
            assert service.warnings(service.message("", language, name)) == []
    draft = await service.draft(staff, "ignored", template=names[0])
    assert await service.draft_text(staff, draft) == ("", names[0])
    view, reach = await service.send(staff, draft, Audience("all"))
    assert reach.by_language == {"en": 2, "nl": 2}
    dispatcher = dispatcher_for(delivery_bot, session_factory, service)

    async def finished() -> bool:
        return (await service.progress(view.id)).state is BroadcastState.DONE

    await run_until(dispatcher, finished)
    await dispatcher.stop()
    for people, language, first_line in ((english, "en", "A message from your practice:"),
                                         (dutch, "nl", "Een bericht van je praktijk:")):
        expected = plain(Content().text(f"broadcast.templates.{names[0]}.text", language))
        for _, user in people:
            [message] = user.messages
            assert message.content == f"{first_line}\n\n{expected}"


async def test_staff_pick_a_template_and_each_language_gets_its_text_through_the_chat(bot: RunningBot, emulator: BotApiEmulator):
    sessions = services(bot).sessions
    await add_person(bot, STAFF_TG, Role.STAFF)
    clients = []
    for n, language in enumerate(["en", "nl", "en"]):
        client = await add_person(bot, 9300 + n, Role.CLIENT, language=language)
        user = emulator.user(9300 + n)
        emulator.state.chats[user.id].reachable = True
        clients.append((client.person_id, language, user))
    async with sessions.begin() as session:
        await grant_consent(session, [p for p, _, _ in clients])
    await opt_out(sessions, [clients[2][0]])  # an English client who turned announcements off
    staff = await open_chat(emulator.user(STAFF_TG))
    await staff.send("/broadcast")
    ask = await staff.next_message()
    assert says(ask, "broadcast.ask_text")
    week = t("broadcast.templates.week.label")
    assert week in labels(ask)
    await staff.press_data("bct:no_such_text", ask)  # an invented name: said, and asked again
    again = await staff.next_message()
    assert says(again, "broadcast.errors.unknown_template") and week in labels(again)
    await staff.press(week, again)
    await staff.press(t("broadcast.audiences.all"), await staff.next_message())
    await staff.press(t("broadcast.all_languages"), await staff.next_message())
    en_preview, nl_preview = await staff.next_message(), await staff.next_message()
    en_text = plain(Content().text("broadcast.templates.week.text", "en"))
    nl_text = plain(Content().text("broadcast.templates.week.text", "nl"))
    assert en_preview.content.endswith(f"A message from your practice:\n\n{en_text}")
    assert nl_preview.content.endswith(f"Een bericht van je praktijk:\n\n{nl_text}")
    summary = await staff.next_message()
    assert summary.content.startswith("2 clients will receive it (English: 1, Dutch: 1)")
    assert "1 more turned practice announcements off in /settings" in summary.content
    assert "could reveal" not in summary.content
    await staff.press(t("broadcast.send_now_button"), summary)
    await staff.press(t("broadcast.yes_button"), await staff.next_message())
    progress = await staff.next_message()
    for _ in range(60):
        await bot.outbox_settled()
        if "(done)" in progress.content:
            break
    assert progress.content.startswith("Message to clients (done)"), progress.content
    assert "Sent: 2 · blocked: 0 · skipped (no consent): 0 · failed: 0" in progress.content
    assert "Skipped (announcements off): 1" in progress.content
    (_, _, en_user), (_, _, nl_user), (_, _, quiet_user) = clients
    assert [m.content for m in en_user.messages] == [f"A message from your practice:\n\n{en_text}"]
    assert [m.content for m in nl_user.messages] == [f"Een bericht van je praktijk:\n\n{nl_text}"]
    assert quiet_user.messages == []
    async with sessions() as session:
        row = await session.scalar(select(Broadcast))
    assert row.template == "week" and row.text == ""


async def test_broadcasts_are_listed_ten_a_page_with_older_and_newer(bot: RunningBot, emulator: BotApiEmulator):
    sessions = services(bot).sessions
    staff_person = await add_person(bot, STAFF_TG, Role.STAFF)
    now = utcnow()
    async with sessions.begin() as session:
        for n in range(23):  # 2 scheduled, 21 done, the newest done first after the scheduled
            scheduled = n < 2
            session.add(Broadcast(
                created_by_id=staff_person.person_id, text="x", audience={"kind": "all"}, language=None,
                state=BroadcastState.SCHEDULED if scheduled else BroadcastState.DONE,
                scheduled_for=now + timedelta(days=1 + n) if scheduled else now - timedelta(days=n),
                created_at=now - timedelta(days=n), finished_at=None if scheduled else now - timedelta(days=n),
                audience_size=n, queued=n, sent=n,
            ))
    staff = await open_chat(emulator.user(STAFF_TG))
    await staff.send("/broadcasts")
    listing = await staff.next_message()
    rows = [line for line in listing.content.splitlines() if line.startswith("• ")]
    assert len(rows) == 10 and ", scheduled;" in rows[0] and ", scheduled;" in rows[1]
    assert "sent 2 of 2" in rows[2]  # the latest finished one
    assert "Page 1 of 3" in listing.content
    assert labels(listing)[-1:] == [t("broadcast.older_button")]
    assert sum(label.startswith("Cancel: ") for label in labels(listing)) == 2
    await staff.press(t("broadcast.older_button"), listing)
    await staff.expect_silence(0)
    assert "Page 2 of 3" in listing.content  # the same message, edited
    rows = [line for line in listing.content.splitlines() if line.startswith("• ")]
    assert len(rows) == 10 and "sent 10 of 10" in rows[0]
    assert labels(listing) == [t("broadcast.newer_button"), t("broadcast.older_button")]
    await staff.press(t("broadcast.older_button"), listing)
    await staff.expect_silence(0)
    assert "Page 3 of 3" in listing.content and labels(listing) == [t("broadcast.newer_button")]
    assert len([line for line in listing.content.splitlines() if line.startswith("• ")]) == 3
    await staff.press(t("broadcast.newer_button"), listing)
    await staff.expect_silence(0)
    assert "Page 2 of 3" in listing.content
    # A page payload altered (or made for someone else) is refused, and the page stays.
    forged = services(bot).callbacks.pack(STAFF_TG + 1, "bc.page", 0)
    answer = await staff.wait_for_callback_answer(await staff.press_data(forged, listing))
    assert (answer.text or "").startswith("Sorry, that is not available to you.")
    assert "Page 2 of 3" in listing.content
