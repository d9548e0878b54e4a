"""Recurring reminders in the person's own time zone: DST days in Europe/Amsterdam and
America/New_York give exactly one reminder per local date; the grace window drops what is
late; quiet hours hold messages back. A controllable clock, never sleeping."""

from __future__ import annotations

import itertools
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import update

from bot.db.delivery_models import OutboxKind, OutboxMessage, OutboxState, ReminderSchedule
from bot.db.models import Person
from bot.delivery.clock import local_instant, quiet_until
from bot.delivery.schedules import (
    EVERY_DAY,
    MONDAY,
    WEDNESDAY,
    ScheduleService,
    first_occurrence,
    next_occurrence,
    occurrences,
    weekdays_mask,
    weekdays_of,
)
from tests.fixtures_delivery import *  # noqa: F403

AMSTERDAM = ZoneInfo("Europe/Amsterdam")
NEW_YORK = ZoneInfo("America/New_York")
REMINDER = "outbox.practice_reminder"
DAILY = weekdays_mask(EVERY_DAY)


# -- the arithmetic -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("zone", "day", "at", "expected_utc"),
    [
        # Amsterdam springs forward on 2025-03-30 at 02:00 -> 03:00: 02:30 does not exist.
        (AMSTERDAM, date(2025, 3, 30), time(2, 30), datetime(2025, 3, 30, 1, 30)),  # 03:30 CEST
        (AMSTERDAM, date(2025, 3, 30), time(9, 0), datetime(2025, 3, 30, 7, 0)),
        # ... and falls back on 2025-10-26 at 03:00 -> 02:00: 02:30 happens twice.
        (AMSTERDAM, date(2025, 10, 26), time(2, 30), datetime(2025, 10, 26, 0, 30)),  # the first
        (AMSTERDAM, date(2025, 10, 26), time(9, 0), datetime(2025, 10, 26, 8, 0)),
        # New York: forward on 2025-03-09 (02:00 -> 03:00), back on 2025-11-02 (02:00 -> 01:00).
        (NEW_YORK, date(2025, 3, 9), time(2, 30), datetime(2025, 3, 9, 7, 30)),  # 03:30 EDT
        (NEW_YORK, date(2025, 11, 2), time(1, 30), datetime(2025, 11, 2, 5, 30)),  # 01:30 EDT
        (NEW_YORK, date(2025, 11, 2), time(8, 0), datetime(2025, 11, 2, 13, 0)),
    ],
)
def test_local_times_on_dst_days(zone, day, at, expected_utc):
    assert local_instant(day, at, zone) == utc(*expected_utc.timetuple()[:6])


@pytest.mark.parametrize("zone", [AMSTERDAM, NEW_YORK])
@pytest.mark.parametrize("at", [time(0, 30), time(1, 30), time(2, 0), time(2, 30), time(3, 0), time(23, 59)])
def test_one_occurrence_per_local_date_through_a_whole_year(zone, at):
    start = date(2025, 1, 1)
    seen = list(itertools.islice(occurrences(start, DAILY, at, zone), 365))
    assert [o.local_date for o in seen] == [start + timedelta(days=i) for i in range(365)]
    instants = [o.due_at for o in seen]
    assert instants == sorted(instants) and len(set(instants)) == 365
    for o in seen:  # on its own local date, at the wall time (or just after a gap)
        local = o.due_at.astimezone(zone)
        assert local.date() == o.local_date
        assert timedelta(0) <= datetime.combine(o.local_date, local.time()) - datetime.combine(o.local_date, at) <= timedelta(hours=1)


def test_weekdays_and_next_occurrences():
    mask = weekdays_mask({MONDAY, WEDNESDAY})
    assert weekdays_of(mask) == {MONDAY, WEDNESDAY}
    with pytest.raises(ValueError):
        weekdays_mask([])
    now = utc(2025, 10, 24, 12, 0)  # a Friday
    first = first_occurrence(now, mask, time(9, 0), AMSTERDAM)
    assert first.local_date == date(2025, 10, 27)  # Monday, after the fall-back weekend
    assert first.due_at == utc(2025, 10, 27, 8, 0)
    following = next_occurrence(first.local_date, now, mask, time(9, 0), AMSTERDAM, timedelta(hours=1))
    assert following.local_date == date(2025, 10, 29)
    # After a long outage the missed ones are skipped, not caught up.
    late = utc(2025, 11, 12, 8, 30)
    skipped = next_occurrence(first.local_date, late, mask, time(9, 0), AMSTERDAM, timedelta(minutes=60))
    assert skipped.local_date == date(2025, 11, 12)  # 09:00 local = 08:00 UTC, still in grace
    gone = next_occurrence(first.local_date, late, mask, time(9, 0), AMSTERDAM, timedelta(minutes=20))
    assert gone.local_date == date(2025, 11, 17)


def test_quiet_hours_arithmetic():
    quiet = (time(22, 0), time(7, 0))
    assert quiet_until(utc(2025, 10, 25, 21, 0), AMSTERDAM, *quiet) == utc(2025, 10, 26, 6, 0)  # 23:00 CEST -> 07:00 CET
    assert quiet_until(utc(2025, 10, 26, 5, 59), AMSTERDAM, *quiet) == utc(2025, 10, 26, 6, 0)
    assert quiet_until(utc(2025, 10, 26, 6, 0), AMSTERDAM, *quiet) is None
    assert quiet_until(utc(2025, 10, 26, 12, 0), AMSTERDAM, time(12, 0), time(14, 0)) == utc(2025, 10, 26, 13, 0)
    assert quiet_until(utc(2025, 10, 26, 12, 0), AMSTERDAM, time(9, 0), time(9, 0)) is None


# -- planning and delivering, with a clock the test moves --------------------------------------------


async def walk(
    clock: FakeClock, until: datetime, step: timedelta, schedules: ScheduleService, dispatcher=None
) -> None:
    """Move the clock in steps, planning (and delivering) at each, like ticks would."""
    while clock.now < until:
        clock.now += step
        await schedules.plan(clock.now)
        if dispatcher is not None:
            await dispatcher.tick(clock.now)
            await dispatcher.idle()


@pytest.mark.parametrize(
    ("zone_name", "at", "first_day"),
    [
        ("Europe/Amsterdam", time(2, 30), date(2025, 10, 24)),  # fall back: 02:30 twice
        ("Europe/Amsterdam", time(2, 30), date(2025, 3, 28)),  # spring forward: no 02:30
        ("America/New_York", time(1, 30), date(2025, 10, 31)),  # fall back: 01:30 twice
        ("America/New_York", time(2, 30), date(2025, 3, 7)),  # spring forward: no 02:30
    ],
)
async def test_exactly_one_reminder_per_local_date_across_dst(
    session_factory, emulator, delivery_bot, zone_name, at, first_day
):
    zone = ZoneInfo(zone_name)
    [(alex, user)] = await add_people(session_factory, emulator, 1, timezone=zone_name)
    start = local_instant(first_day, time(12, 0), zone)
    clock = FakeClock(start)
    outbox = OutboxService(session_factory, clock=clock)
    schedules = ScheduleService(session_factory, outbox, clock=clock)
    await schedules.create(alex, weekdays=EVERY_DAY, at=at, content_key=REMINDER, grace_minutes=30)
    # The test clock jumps days in milliseconds; the per-chat interval is real time.
    dispatcher = make_dispatcher(delivery_bot, session_factory, clock=clock, per_chat_interval=0)
    dispatcher.start()
    try:
        await walk(clock, start + timedelta(days=3), timedelta(minutes=10), schedules, dispatcher)
    finally:
        await dispatcher.stop()

    rows = await outbox_rows(session_factory)
    expected_dates = [first_day + timedelta(days=i) for i in range(1, 4)]
    assert [r.idempotency_key.rsplit(":", 1)[1] for r in rows] == [d.isoformat() for d in expected_dates]
    assert [r.due_at for r in rows] == [local_instant(d, at, zone) for d in expected_dates]
    assert {r.state for r in rows} == {OutboxState.SENT}
    assert len(user.messages) == 3  # one per local date, also on the DST day (the middle one)


async def test_the_grace_window(session_factory, emulator, delivery_bot):
    [(alex, user)] = await add_people(session_factory, emulator, 1)
    clock = FakeClock(utc(2025, 6, 2, 5, 0))  # Monday 07:00 in Amsterdam
    outbox = OutboxService(session_factory, clock=clock)
    schedules = ScheduleService(session_factory, outbox, clock=clock)
    schedule_id = await schedules.create(alex, weekdays=EVERY_DAY, at=time(9, 0), content_key=REMINDER,
                                         grace_minutes=60)
    dispatcher = make_dispatcher(delivery_bot, session_factory, clock=clock)
    dispatcher.start()
    try:
        # The bot is down from 07:00 to 10:30: Monday's 09:00 is past its hour of grace.
        clock.now = utc(2025, 6, 2, 8, 30)
        await schedules.plan()
        assert await outbox_rows(session_factory) == []
        async with session_factory() as session:
            schedule = await session.get(ReminderSchedule, schedule_id)
            assert schedule.next_local_date == date(2025, 6, 3)

        # Tuesday: planned at 09:00, but nothing dispatches until 10:01: dropped, not sent late.
        clock.now = utc(2025, 6, 3, 7, 0)
        await schedules.plan()
        clock.now = utc(2025, 6, 3, 8, 1)
        await dispatcher.tick()
        await dispatcher.idle()
        [row] = await outbox_rows(session_factory)
        assert (row.state, row.last_error) == (OutboxState.DEAD, "expired")
        assert user.messages == []

        # Down for a week: no catching up, just the next one in time.
        clock.now = utc(2025, 6, 10, 7, 30)  # Tuesday 09:30 local
        await schedules.plan()
        await dispatcher.tick()
        await dispatcher.idle()
    finally:
        await dispatcher.stop()
    rows = await outbox_rows(session_factory)
    assert [r.idempotency_key for r in rows] == [f"schedule:{schedule_id}:2025-06-03", f"schedule:{schedule_id}:2025-06-10"]
    assert rows[-1].state is OutboxState.SENT and len(user.messages) == 1


async def test_quiet_hours_hold_messages_until_they_end(session_factory, emulator, delivery_bot):
    [(alex, user)] = await add_people(session_factory, emulator, 1)
    clock = FakeClock(utc(2025, 10, 25, 21, 0))  # Saturday 23:00 CEST
    outbox = OutboxService(session_factory, clock=clock)
    await outbox.set_quiet_hours(alex, time(22, 0), time(7, 0))
    await outbox.enqueue(alex, kind=OutboxKind.BROADCAST, idempotency_key="news", content_key=REMINDER)
    await outbox.enqueue(alex, kind=OutboxKind.REMINDER, idempotency_key="early", content_key=REMINDER,
                         due_at=utc(2025, 10, 26, 5, 30), expires_at=utc(2025, 10, 26, 5, 50))
    dispatcher = make_dispatcher(delivery_bot, session_factory, clock=clock)
    dispatcher.start()
    try:
        await dispatcher.tick()
        await dispatcher.idle()
        rows = {r.idempotency_key: r for r in await outbox_rows(session_factory)}
        # Quiet until 07:00 on Sunday, the fall-back day: 06:00 UTC, not 05:00.
        assert (rows["news"].state, rows["news"].due_at) == (OutboxState.PENDING, utc(2025, 10, 26, 6, 0))
        assert rows["news"].attempts == 0 and user.messages == []

        clock.now = utc(2025, 10, 26, 5, 30)  # 06:30 CET: the early reminder's time, still quiet
        await dispatcher.tick()
        await dispatcher.idle()
        clock.now = utc(2025, 10, 26, 6, 0)
        await dispatcher.tick()
        await dispatcher.idle()
    finally:
        await dispatcher.stop()
    rows = {r.idempotency_key: r for r in await outbox_rows(session_factory)}
    assert rows["news"].state is OutboxState.SENT and len(user.messages) == 1
    assert (rows["early"].state, rows["early"].last_error) == (OutboxState.DEAD, "expired")


async def test_changing_a_schedule_and_the_persons_zone(session_factory, emulator):
    [(alex, _)] = await add_people(session_factory, emulator, 1, timezone="Europe/Amsterdam")
    clock = FakeClock(utc(2025, 6, 2, 6, 0))  # Monday 08:00 in Amsterdam
    outbox = OutboxService(session_factory, clock=clock)
    schedules = ScheduleService(session_factory, outbox, clock=clock)
    schedule_id = await schedules.create(alex, weekdays=EVERY_DAY, at=time(9, 0), content_key=REMINDER)
    clock.now = utc(2025, 6, 2, 7, 0)
    await schedules.plan()  # Monday's reminder is queued
    # Moved to 20:00 after Monday's was queued (not sent): Monday gets the new time only.
    await schedules.change(schedule_id, at=time(20, 0))
    clock.now = utc(2025, 6, 2, 18, 0)
    await schedules.plan()
    rows = await outbox_rows(session_factory)
    assert [(r.idempotency_key, r.due_at) for r in rows] == [(f"schedule:{schedule_id}:2025-06-02", utc(2025, 6, 2, 18, 0))]

    # Monday's is sent; then the person moves to New York, where it is Monday 14:00: their
    # reminders follow the new zone, but Monday does not get a second one.
    async with session_factory.begin() as session:
        await session.execute(update(OutboxMessage).values(state=OutboxState.SENT))
        await session.execute(update(Person).where(Person.id == alex).values(timezone="America/New_York"))
    await schedules.reschedule_person(alex)
    async with session_factory() as session:
        schedule = await session.get(ReminderSchedule, schedule_id)
        assert (schedule.next_local_date, schedule.next_due_at) == (date(2025, 6, 2), utc(2025, 6, 3, 0, 0))
    clock.now = utc(2025, 6, 3, 0, 0)
    assert await schedules.plan() == 1
    clock.now = utc(2025, 6, 4, 0, 0)
    assert await schedules.plan() == 1
    rows = await outbox_rows(session_factory)
    assert [(r.idempotency_key, r.due_at) for r in rows] == [
        (f"schedule:{schedule_id}:2025-06-02", utc(2025, 6, 2, 18, 0)),  # Amsterdam's, sent
        (f"schedule:{schedule_id}:2025-06-03", utc(2025, 6, 4, 0, 0)),  # 20:00 in New York
    ]

    await schedules.change(schedule_id, active=False)
    clock.now = utc(2025, 6, 10, 0, 0)
    assert await schedules.plan() == 0
    await schedules.delete(schedule_id)


async def test_inactive_people_get_nothing_but_their_schedules_advance(session_factory, emulator):
    people = await add_people(session_factory, emulator, 3)
    clock = FakeClock(utc(2025, 6, 2, 6, 0))
    outbox = OutboxService(session_factory, clock=clock)
    schedules = ScheduleService(session_factory, outbox, clock=clock)
    for person, _ in people:
        await schedules.create(person, weekdays=EVERY_DAY, at=time(9, 0), content_key=REMINDER)
    inactive = people[0][0]
    async with session_factory.begin() as session:
        await session.execute(update(Person).where(Person.id == inactive).values(active=False))
    clock.now = utc(2025, 6, 2, 7, 0)
    assert await schedules.plan() == 3
    assert await schedules.plan() == 0  # nothing is due twice
    rows = await outbox_rows(session_factory)
    assert sorted(r.recipient_id for r in rows) == sorted(p for p, _ in people[1:])
    assert all(r.expires_at == utc(2025, 6, 2, 8, 0) for r in rows)
