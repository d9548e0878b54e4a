"""/appointments through the real stack (the emulator, the running bot, a real database): a
therapist makes an ImRS appointment in their zone and the client reads it in theirs (with the
check-in prompt at once when it is less than a day ahead); bad times are explained and asked
again in the same step; moving and cancelling tell the client and re-plan the outbox rows;
staff choose a therapist first and see nothing of readiness; who may see and press what; and
the "I'll be there" / "I need to reschedule" buttons under a delivered reminder.

The service itself is tested in tests/test_appointments.py and tests/test_appointment_planning.py.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import select

from bot.db.delivery_models import OutboxMessage, OutboxState
from bot.db.models import Appointment, AppointmentKind, AppointmentResponse, AuditEvent, Role
from bot.db.types import utcnow
from bot.delivery.buttons import APPOINTMENT_ATTENDING, APPOINTMENT_RESCHEDULE
from bot.delivery.rendering import local_moment
from bot.sandbox.emulator import BotApiEmulator
from bot.sandbox.emulator.people import SimUser
from bot.sandbox.emulator.records import BotMessage
from bot.services.appointments import key_prefixes, stamp
from bot.services.people import Identity
from handlers import appointments as handler
from tests.fixtures_bot import RunningBot
from tests.join_support import add_person, client_token, content, first_line, join, labels, open_chat, plain, says, services

AMS, LON = "Europe/Amsterdam", "Europe/London"
DENIED = content.text("access.denied", "en")


def t(key: str, **params) -> str:
    return content.text(key, "en", **params)


def when(zone: str, moment: datetime) -> str:
    """A moment as the bot shows it (weekday, date, time) in ``zone``."""
    return local_moment(content, "en", zone, moment)


def typed(moment: datetime, zone: str = AMS) -> str:
    return moment.astimezone(ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M")


def days_ahead(days: int, hour: int = 10, zone: str = AMS) -> datetime:
    """``hour``:00 in ``zone``, ``days`` days from today (UTC)."""
    day = datetime.now(ZoneInfo(zone)).date() + timedelta(days=days)
    return datetime.combine(day, time(hour), tzinfo=ZoneInfo(zone)).astimezone(UTC)


def next_dst_days(zone: str) -> tuple[date, date]:
    """The next day the clocks go forward and the next day they go back in ``zone``."""
    tz = ZoneInfo(zone)
    today = datetime.now(tz).date()
    forward = back = None
    for n in range(1, 400):
        day = today + timedelta(days=n)
        before = datetime.combine(day - timedelta(days=1), time(12), tzinfo=tz).utcoffset()
        after = datetime.combine(day, time(12), tzinfo=tz).utcoffset()
        if after > before and forward is None:
            forward = day
        elif after < before and back is None:
            back = day
    assert forward and back
    return forward, back


def is_formats(message: BotMessage, zone: str) -> bool:
    """The accepted formats follow the question or the refusal."""
    return first_line("appointments.formats", zone=zone) in message.content


async def person_id(bot: RunningBot, user: SimUser) -> int:
    return (await services(bot).people.identify(user.id, user.first_name, "en")).person_id


async def practice(
    bot: RunningBot, emulator: BotApiEmulator, *, zone: str = "london"
) -> tuple[SimUser, Identity, SimUser, int]:
    """Therapist Dr. Jansen (Amsterdam) and their client K7, who joined in ``zone``."""
    therapist = await add_person(bot, 8001, Role.THERAPIST, display_name="Dr. Jansen")
    therapist_chat = await open_chat(emulator.user(8001, first_name="Jan"))
    client = emulator.user(8101, first_name="Sam", language_code="en")
    done = await join(client, await client_token(bot, therapist, alias="K7"), zone=zone)
    assert says(done, "client_join.done", zone=LON if zone == "london" else AMS), done.content
    await therapist_chat.next_message()  # the joined notice
    return therapist_chat, therapist, client, await person_id(bot, client)


async def booked(bot: RunningBot, therapist: Identity, client: SimUser, client_id: int, start: datetime,
                 kind: AppointmentKind = AppointmentKind.PREPARATION) -> int:
    """An appointment made through the service; the client's notice is read."""
    made = await services(bot).appointments.create(therapist, client_id, typed(start), kind)
    notice = await client.wait_for(lambda m: says(m, "outbox.appointment_created"))
    assert made.starts_at == start, (made.starts_at, start)
    assert notice is not None
    return made.id


async def start_new(chat: SimUser, alias: str, kind: AppointmentKind, *, listing: BotMessage | None = None) -> BotMessage:
    """/appointments (or a list already shown) → + New appointment → the client → the kind:
    the question for the time."""
    if listing is None:
        await chat.send("/appointments")
        listing = await chat.next_message()
    await chat.press(t("appointments.new_button"), listing)
    choose = await chat.next_message()
    assert says(choose, "appointments.choose_client"), choose.content
    await chat.press(alias, choose)
    ask_kind = await chat.next_message()
    assert says(ask_kind, "appointments.ask_kind", alias=alias), ask_kind.content
    assert labels(ask_kind) == [t(f"appointments.kinds.{k.value}") for k in AppointmentKind]
    await chat.press(t(f"appointments.kinds.{kind.value}"), ask_kind)
    ask_time = await chat.next_message()
    assert says(ask_time, "appointments.ask_time", kind=t(f"appointments.kinds.{kind.value}")), ask_time.content
    return ask_time


async def open_page(chat: SimUser, start: datetime, alias: str, zone: str = AMS) -> BotMessage:
    """/appointments (a therapist's) → the appointment's button: its page (the list, edited)."""
    await chat.send("/appointments")
    listing = await chat.next_message()
    return await press_row(chat, listing, start, alias, zone)


async def press_row(chat: SimUser, listing: BotMessage, start: datetime, alias: str, zone: str = AMS) -> BotMessage:
    assert says(listing, "appointments.title", zone=zone), listing.content
    local = start.astimezone(ZoneInfo(zone))
    await chat.press(f"{local:%d-%m %H:%M} · {alias}", listing)
    await chat.wait_for_edit(listing)
    return listing


async def outbox_rows(bot: RunningBot, appointment_id: int) -> list[OutboxMessage]:
    """The reminders and check-in rows planned for the appointment (sent or not)."""
    async with services(bot).sessions() as session:
        query = select(OutboxMessage).where(
            OutboxMessage.idempotency_key.like(f"appt:{appointment_id}:%")
            | OutboxMessage.idempotency_key.like(f"checkin:{appointment_id}:%")
        )
        return list(await session.scalars(query.order_by(OutboxMessage.idempotency_key)))


async def appointment_row(bot: RunningBot, appointment_id: int) -> Appointment:
    async with services(bot).sessions() as session:
        return await session.get(Appointment, appointment_id)


async def denied_reasons(bot: RunningBot) -> list[str]:
    async with services(bot).sessions() as session:
        events = await session.scalars(
            select(AuditEvent).where(AuditEvent.action == "access.denied").order_by(AuditEvent.id)
        )
        return [e.detail["reason"] for e in events]


async def refused(user: SimUser, data: str, under: BotMessage | None = None) -> None:
    query = await user.press_data(data, under)
    assert (await user.wait_for_callback_answer(query)).text == DENIED, data


# -- 1. a therapist makes an appointment; the client reads it in their own zone ----------------


def unique_wall_time(moment, zone: str) -> bool:
    """Whether the local time of ``moment`` in ``zone`` names one moment only."""
    from zoneinfo import ZoneInfo

    wall = moment.astimezone(ZoneInfo(zone)).replace(tzinfo=None)
    return wall.replace(tzinfo=ZoneInfo(zone), fold=0).utcoffset() == wall.replace(tzinfo=ZoneInfo(zone), fold=1).utcoffset()


async def test_a_therapist_makes_an_imrs_appointment_the_client_reads_it_in_their_zone(
    bot: RunningBot, emulator: BotApiEmulator
):
    therapist_chat, _, client, client_id = await practice(bot, emulator, zone="london")
    await therapist_chat.send("/appointments")
    listing = await therapist_chat.next_message()
    assert says(listing, "appointments.empty") and labels(listing) == [t("appointments.new_button")]

    ask_time = await start_new(therapist_chat, "K7", AppointmentKind.IMRS, listing=listing)
    assert is_formats(ask_time, AMS)
    start = (utcnow() + timedelta(hours=3)).replace(second=0, microsecond=0)  # less than a day ahead
    while not unique_wall_time(start, AMS):  # the hour that happens twice when the clocks go back
        start += timedelta(hours=2)
    await therapist_chat.send(typed(start, AMS))
    made = await therapist_chat.next_message()
    imrs = t("appointments.kinds.imrs")
    assert says(made, "appointments.made", kind=imrs, when=when(AMS, start), zone=AMS), made.content
    [row] = await services(bot).appointments.upcoming(await services(bot).people.identify(8001, "Jan", "en"))
    assert row.starts_at == start and row.timezone == AMS and row.kind is AppointmentKind.IMRS

    # The notice (in London time, an hour before Amsterdam's) and, less than 24 h ahead, the
    # check-in prompt at once: in either order.
    first, second = await client.next_message(timeout=30), await client.next_message(timeout=30)
    [notice] = [m for m in (first, second) if says(m, "outbox.appointment_created")]
    [prompt] = [m for m in (first, second) if m is not notice]
    assert says(notice, "outbox.appointment_created", kind=imrs, when=when(LON, start)), notice.content
    assert when(LON, start) != when(AMS, start)
    assert labels(prompt) == [t("outbox.buttons.check_in_prompt.start")], prompt.content
    assert says(prompt, "outbox.check_in_prompt", day=when(LON, start)), prompt.content

    await client.send("/appointments")
    own = await client.next_message()
    assert says(own, "appointments.client_title", zone=LON), own.content
    assert plain(t("appointments.client_row", when=when(LON, start), kind=imrs, therapist="Dr. Jansen")) in own.content
    assert labels(own) == []


# -- 2. bad times are explained and asked again in the same step ------------------------------


async def test_bad_times_are_explained_and_asked_again_until_a_good_one(bot: RunningBot, emulator: BotApiEmulator):
    therapist_chat, therapist, client, client_id = await practice(bot, emulator)
    existing = days_ahead(5, hour=10)
    await booked(bot, therapist, client, client_id, existing)

    await start_new(therapist_chat, "K7", AppointmentKind.PREPARATION)
    forward, back = next_dst_days(AMS)
    yesterday = datetime.now(ZoneInfo(AMS)).date() - timedelta(days=1)
    overlapping = existing + timedelta(minutes=30)
    attempts = [
        ("tomorrow at 3", "unparseable", {}),
        (f"{yesterday:%d-%m-%Y} 10:00", "past", {"date": f"{yesterday:%d-%m-%Y}", "time": "10:00", "zone": AMS}),
        (f"{forward:%Y-%m-%d} 02:30", "nonexistent", {"date": f"{forward:%d-%m-%Y}", "time": "02:30", "zone": AMS}),
        (f"{back:%d/%m/%Y} 02:30", "ambiguous", {"date": f"{back:%d-%m-%Y}", "time": "02:30", "zone": AMS}),
        (typed(overlapping), "overlap", {"when": when(AMS, existing),
                                         "until": (existing + timedelta(hours=1)).astimezone(ZoneInfo(AMS)).strftime("%H:%M")}),
    ]
    for text, reason, params in attempts:
        await therapist_chat.send(text)
        reply = await therapist_chat.next_message()
        assert says(reply, f"appointments.errors.{reason}", **params), (reason, reply.content)
        assert is_formats(reply, AMS), reason
    async with services(bot).sessions() as session:
        assert len((await session.scalars(select(Appointment))).all()) == 1, "nothing made by a refused time"

    adjacent = existing + timedelta(hours=1)  # may start when the other ends
    await therapist_chat.send(typed(adjacent))
    made = await therapist_chat.next_message()
    assert says(made, "appointments.made", kind=t("appointments.kinds.preparation"), when=when(AMS, adjacent), zone=AMS)
    notice = await client.wait_for(lambda m: says(m, "outbox.appointment_created"))
    assert when(LON, adjacent) in notice.content


# -- 3. moving and cancelling in the chat ---------------------------------------------------------


async def test_moving_and_cancelling_tell_the_client_and_replan_the_reminders(bot: RunningBot, emulator: BotApiEmulator):
    therapist_chat, therapist, client, client_id = await practice(bot, emulator)
    start = days_ahead(4, hour=10)
    appointment_id = await booked(bot, therapist, client, client_id, start, AppointmentKind.IMRS)
    old = stamp(start)
    assert {r.idempotency_key for r in await outbox_rows(bot, appointment_id)} == {
        f"appt:{appointment_id}:{old}:48h", f"appt:{appointment_id}:{old}:2h",
        f"checkin:{appointment_id}:{old}:prompt", f"checkin:{appointment_id}:{old}:reminder",
    }

    page = await open_page(therapist_chat, start, "K7")
    imrs = t("appointments.kinds.imrs")
    assert says(page, "appointments.page", alias="K7", kind=imrs), page.content
    assert f"{when(AMS, start)} ({AMS})" in page.content and plain(t("appointments.answers.none")) in page.content
    assert labels(page) == [t("appointments.move_button"), t("appointments.cancel_button"), t("appointments.back_button")]
    await therapist_chat.press(t("appointments.move_button"), page)
    ask = await therapist_chat.next_message()
    assert says(ask, "appointments.ask_move", kind=imrs, alias="K7", when=when(AMS, start)), ask.content
    assert is_formats(ask, AMS)

    later = days_ahead(6, hour=15)
    await therapist_chat.send(later.astimezone(ZoneInfo(AMS)).strftime("%d.%m.%Y %H:%M"))  # day first, dots
    moved = await therapist_chat.next_message()
    assert says(moved, "appointments.moved", when=when(AMS, later), zone=AMS), moved.content
    notice = await client.wait_for(lambda m: says(m, "outbox.appointment_moved"))
    assert says(notice, "outbox.appointment_moved", kind=imrs, when=when(LON, later)), notice.content
    assert (await appointment_row(bot, appointment_id)).starts_at == later
    new = stamp(later)
    rows = await outbox_rows(bot, appointment_id)
    assert {r.idempotency_key for r in rows} == {
        f"appt:{appointment_id}:{new}:48h", f"appt:{appointment_id}:{new}:2h",
        f"checkin:{appointment_id}:{new}:prompt", f"checkin:{appointment_id}:{new}:reminder",
    }, "the old rows are withdrawn, new ones follow the new time"
    reminder = next(r for r in rows if r.idempotency_key.endswith(":48h"))
    assert reminder.state == OutboxState.PENDING and reminder.due_at == later - timedelta(hours=48)

    page = await open_page(therapist_chat, later, "K7")
    await therapist_chat.press(t("appointments.cancel_button"), page)
    await therapist_chat.wait_for_edit(page)
    assert says(page, "appointments.cancel_confirm", kind=imrs, alias="K7", when=when(AMS, later)), page.content
    assert labels(page) == [t("appointments.cancel_yes_button"), t("appointments.cancel_no_button")]
    await therapist_chat.press(t("appointments.cancel_yes_button"), page)
    await therapist_chat.wait_for_edit(page)
    assert says(page, "appointments.cancelled", when=when(AMS, later)), page.content
    notice = await client.wait_for(lambda m: says(m, "outbox.appointment_cancelled"))
    assert when(LON, later) in notice.content
    assert (await appointment_row(bot, appointment_id)).cancelled_at is not None
    assert await outbox_rows(bot, appointment_id) == [], "every reminder and check-in row is withdrawn"

    await therapist_chat.press(t("appointments.back_button"), page)  # ‹ All appointments
    await therapist_chat.wait_for_edit(page)
    assert says(page, "appointments.empty")


# -- 4. staff ------------------------------------------------------------------------------------

COLOURS = re.compile(r"\b(green|amber|red|readiness|check-in)\b|🟢|🟠|🔴", re.IGNORECASE)


async def test_staff_choose_a_therapist_then_make_and_move_an_appointment_without_readiness(
    bot: RunningBot, emulator: BotApiEmulator
):
    therapist_chat, _, client, client_id = await practice(bot, emulator)
    await add_person(bot, 8002, Role.THERAPIST, display_name="Dr. Berg")
    await add_person(bot, 8501, Role.STAFF, display_name="Desk")
    staff = await open_chat(emulator.user(8501, first_name="Desk"))
    seen: list[BotMessage] = []

    async def choose_jansen() -> BotMessage:
        await staff.send("/appointments")
        chooser = await staff.next_message()
        assert says(chooser, "appointments.choose_therapist") and labels(chooser) == ["Dr. Jansen", "Dr. Berg"]
        await staff.press("Dr. Jansen", chooser)
        listing = await staff.next_message()
        seen.extend([chooser, listing])
        return listing

    listing = await choose_jansen()
    assert says(listing, "appointments.empty")
    ask_time = await start_new(staff, "K7", AppointmentKind.IMRS, listing=listing)
    assert is_formats(ask_time, AMS), "typed in the therapist's zone"
    start = days_ahead(3, hour=9)
    await staff.send(typed(start))
    made = await staff.next_message()
    imrs = t("appointments.kinds.imrs")
    assert says(made, "appointments.made", kind=imrs, when=when(AMS, start), zone=AMS), made.content
    await client.wait_for(lambda m: says(m, "outbox.appointment_created"))
    [row] = await services(bot).appointments.upcoming(await services(bot).people.identify(8001, "Jan", "en"))
    assert row.therapist_id == (await services(bot).people.identify(8001, "Jan", "en")).person_id

    page = await press_row(staff, await choose_jansen(), start, "K7")
    seen.append(page)
    assert says(page, "appointments.page", alias="K7", kind=imrs)
    await staff.press(t("appointments.move_button"), page)
    ask = await staff.next_message()
    later = start + timedelta(days=1, hours=2)
    await staff.send(typed(later))
    moved = await staff.next_message()
    assert says(moved, "appointments.moved", when=when(AMS, later), zone=AMS), moved.content
    await client.wait_for(lambda m: says(m, "outbox.appointment_moved") and when(LON, later) in m.content)
    seen.extend([made, ask, moved])

    for message in seen:
        for version in [*message.edits, message]:
            words = version.text or ""
            assert not COLOURS.search(words), words
    # The therapist heard nothing of what staff did in the chat (the client is told by the outbox).
    assert [m for m in therapist_chat.messages if says(m, "appointments.made")] == []


# -- 5. who may see and press what --------------------------------------------------------------


async def test_a_client_only_reads_their_own_and_cannot_make_or_open_appointments(
    bot: RunningBot, emulator: BotApiEmulator
):
    _, therapist, client, client_id = await practice(bot, emulator)
    await client.send("/appointments")
    empty = await client.next_message()
    assert says(empty, "appointments.client_empty") and labels(empty) == []

    start = days_ahead(3)
    appointment_id = await booked(bot, therapist, client, client_id, start)
    codec = services(bot).callbacks
    for action, record in [(handler.NEW, therapist.person_id), (handler.CLIENT, client_id),
                           (handler.OPEN, appointment_id), (handler.CANCEL_OK, appointment_id),
                           (handler.THERAPIST, therapist.person_id)]:
        await refused(client, codec.pack(client.id, action, record))
    assert (await appointment_row(bot, appointment_id)).cancelled_at is None
    assert await denied_reasons(bot) == ["role"] * 5

    await client.send("/appointments")
    own = await client.next_message()
    assert says(own, "appointments.client_title", zone=LON) and labels(own) == []
    assert when(LON, start) in own.content


async def test_a_therapist_cannot_see_or_open_another_therapists_client_and_forged_buttons_are_refused(
    bot: RunningBot, emulator: BotApiEmulator
):
    jansen_chat, jansen, client, client_id = await practice(bot, emulator)
    await add_person(bot, 8002, Role.THERAPIST, display_name="Dr. Berg")
    berg = await open_chat(emulator.user(8002, first_name="Berg"))
    start = days_ahead(3)
    appointment_id = await booked(bot, jansen, client, client_id, start)

    await berg.send("/appointments")
    listing = await berg.next_message()
    assert says(listing, "appointments.empty") and "K7" not in listing.content
    await berg.press(t("appointments.new_button"), listing)
    assert says(await berg.next_message(), "appointments.no_clients")

    codec = services(bot).callbacks
    for action, record in [(handler.OPEN, appointment_id), (handler.MOVE, appointment_id),
                           (handler.CANCEL, appointment_id), (handler.CANCEL_OK, appointment_id),
                           (handler.CLIENT, client_id)]:
        await refused(berg, codec.pack(berg.id, action, record))  # signed for Berg: the service says no
    assert await denied_reasons(bot) == ["ownership"] * 5

    # Jansen's own page: its Cancel-yes pressed by Berg (signed for Jansen), and an altered payload.
    page = await open_page(jansen_chat, start, "K7")
    move = next(value for label, value in page.buttons[0] if label == t("appointments.move_button"))
    await refused(berg, move)
    body, _, mac = move.rpartition("|")
    await refused(jansen_chat, f"{body}0|{mac}", page)  # another record, same signature
    await refused(jansen_chat, codec.pack(berg.id, handler.CANCEL_OK, appointment_id), page)
    assert (await denied_reasons(bot))[5:] == ["payload"] * 3
    row = await appointment_row(bot, appointment_id)
    assert row.cancelled_at is None and row.starts_at == start

    # A stale button: the page of an appointment cancelled since.
    await services(bot).appointments.cancel(jansen, appointment_id)
    await jansen_chat.press(t("appointments.move_button"), page)
    assert says(await jansen_chat.next_message(), "appointments.gone.cancelled")


# -- 6. the buttons under a delivered reminder ----------------------------------------------------


async def deliver_now(bot: RunningBot, key: str) -> None:
    """A planned reminder made due now (as if its time had come)."""
    async with services(bot).sessions.begin() as session:
        row = await session.scalar(select(OutboxMessage).where(OutboxMessage.idempotency_key == key))
        assert row is not None and row.state == OutboxState.PENDING, key
        row.due_at = utcnow()


async def test_the_reminder_buttons_record_the_answer_and_tell_the_therapist(bot: RunningBot, emulator: BotApiEmulator):
    therapist_chat, therapist, client, client_id = await practice(bot, emulator)
    other = emulator.user(8102, first_name="Kim", language_code="en")
    await join(other, await client_token(bot, therapist, alias="K8"))
    await therapist_chat.next_message()  # K8 joined
    start = days_ahead(4, hour=11)
    appointment_id = await booked(bot, therapist, client, client_id, start)
    prep = t("appointments.kinds.preparation")
    buttons = [t("outbox.buttons.appointment.attending"), t("outbox.buttons.appointment.reschedule")]

    at = stamp(start)
    await deliver_now(bot, f"appt:{appointment_id}:{at}:48h")
    first = await client.wait_for(lambda m: says(m, "outbox.appointment_reminder"), timeout=30)
    assert says(first, "outbox.appointment_reminder", kind=prep, when=when(LON, start)), first.content
    assert labels(first) == buttons
    row = await services(bot).outbox.get(f"appt:{appointment_id}:{at}:48h")

    codec = services(bot).callbacks
    await refused(other, codec.pack(other.id, APPOINTMENT_ATTENDING, row.id))  # not Kim's reminder
    await refused(other, codec.pack(client.id, APPOINTMENT_RESCHEDULE, row.id))  # Sam's payload, pressed by Kim
    await refused(therapist_chat, codec.pack(therapist_chat.id, APPOINTMENT_RESCHEDULE, row.id))  # not a client
    assert await denied_reasons(bot) == ["ownership", "payload", "role"]
    assert (await appointment_row(bot, appointment_id)).client_response is None

    await client.press(buttons[0], first)
    assert says(await client.next_message(), "appointments.response.attending")
    assert labels(first) == [], "the buttons are taken off"
    answered = await appointment_row(bot, appointment_id)
    assert answered.client_response == AppointmentResponse.ATTENDING and answered.responded_at is not None

    await deliver_now(bot, f"appt:{appointment_id}:{at}:2h")
    second = await client.wait_for(lambda m: says(m, "outbox.appointment_reminder"), timeout=30)
    await client.press(buttons[1], second)
    assert says(await client.next_message(), "appointments.response.reschedule")
    assert (await appointment_row(bot, appointment_id)).client_response == AppointmentResponse.RESCHEDULE
    told = await therapist_chat.wait_for(lambda m: says(m, "appointments.reschedule_notice"), timeout=30)
    assert says(told, "appointments.reschedule_notice", alias="K7", kind=prep, when=when(AMS, start)), told.content

    page = await open_page(therapist_chat, start, "K7")
    assert plain(t("appointments.answers.reschedule")) in page.content

    # After a move, the old reminder's buttons no longer answer for the new time.
    await services(bot).appointments.move(therapist, appointment_id, typed(start + timedelta(days=1)))
    await client.press_data(codec.pack(client.id, APPOINTMENT_ATTENDING, row.id), first)
    assert says(await client.wait_for(lambda m: says(m, "appointments.response_gone.moved")),
                "appointments.response_gone.moved")
    assert (await appointment_row(bot, appointment_id)).client_response is None


async def test_moving_an_appointment_that_began_while_the_new_time_was_typed_says_so(
    bot: RunningBot, emulator: BotApiEmulator
):
    therapist_chat, therapist, client, client_id = await practice(bot, emulator)
    start = days_ahead(2, hour=10)
    appointment_id = await booked(bot, therapist, client, client_id, start)
    page = await open_page(therapist_chat, start, "K7")
    await therapist_chat.press(t("appointments.move_button"), page)
    assert says(await therapist_chat.next_message(), "appointments.ask_move", alias="K7")

    services(bot).appointments.clock = lambda: start + timedelta(minutes=5)  # it has begun meanwhile
    later = start + timedelta(days=2)
    await therapist_chat.send(typed(later))  # a time still ahead: not "that time has passed"
    reply = await therapist_chat.next_message()
    assert says(reply, "appointments.gone.past"), reply.content
    assert (await appointment_row(bot, appointment_id)).starts_at == start


async def test_a_move_is_typed_in_the_zone_the_therapist_has_now(bot: RunningBot, emulator: BotApiEmulator):
    """The appointment was made in Amsterdam; the therapist has since moved to London. The
    service reads the new time in the therapist's zone now, so the question must name it."""
    therapist_chat, therapist, client, client_id = await practice(bot, emulator)
    start = days_ahead(3, hour=10)
    appointment_id = await booked(bot, therapist, client, client_id, start)
    await services(bot).preferences.set_timezone(therapist, LON)

    page = await open_page(therapist_chat, start, "K7", zone=LON)
    await therapist_chat.press(t("appointments.move_button"), page)
    ask = await therapist_chat.next_message()
    assert is_formats(ask, LON), ask.content
    assert says(ask, "appointments.ask_move", alias="K7", when=when(LON, start)), ask.content
    later = days_ahead(5, hour=14, zone=LON)
    await therapist_chat.send(typed(later, LON))
    moved = await therapist_chat.next_message()
    assert says(moved, "appointments.moved", when=when(LON, later), zone=LON), moved.content
    row = await appointment_row(bot, appointment_id)
    assert row.starts_at == later and row.timezone == LON


async def test_a_button_tapped_twice_before_the_first_tap_took_effect_acts_once(bot: RunningBot, emulator: BotApiEmulator):
    """Found by tests/test_fuzz.py: both taps reach the bot with the buttons still on the
    message; the first takes them off, and taking them off again was Telegram's 400 "message
    is not modified", which reached the error handler ("Sorry, something went wrong")."""
    therapist_chat, _, _, _ = await practice(bot, emulator)
    await therapist_chat.send("/appointments")
    listing = await therapist_chat.next_message()
    first = await therapist_chat.press(t("appointments.new_button"), listing)
    second = await therapist_chat.press(t("appointments.new_button"), listing)  # before the bot read the first
    choose = await therapist_chat.next_message()
    assert says(choose, "appointments.choose_client"), choose.content
    await therapist_chat.wait_for_callback_answer(first)
    await therapist_chat.wait_for_callback_answer(second)
    await therapist_chat.expect_silence(0.1)  # acted on once, and no "something went wrong"


async def test_a_deactivated_therapist_asking_for_appointments_is_refused_not_failed(
    bot: RunningBot, emulator: BotApiEmulator
):
    """Found by tests/test_fuzz.py: the service refuses an inactive therapist (NotAllowed),
    which /appointments did not catch: the error handler, "Sorry, something went wrong"."""
    therapist_chat, therapist, _, _ = await practice(bot, emulator)
    staff = await add_person(bot, 8501, Role.STAFF, display_name="Desk")
    await services(bot).clinic.deactivate_therapist(staff, therapist.person_id)
    await therapist_chat.send("/appointments")
    reply = await therapist_chat.next_message()
    assert says(reply, "access.denied"), reply.content
