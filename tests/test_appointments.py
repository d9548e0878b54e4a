"""Appointments at the service level (bot.services.appointments): local times in the
therapist's zone across DST changes, past and far dates, overlaps, and who may do what."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from bot.db.models import AuditEvent, AppointmentKind, Role
from bot.db.repositories import LinkRepository, PeopleRepository
from bot.services.appointments import AppointmentError, AppointmentService, parse_local
from bot.services.invites import NotAllowed
from tests.test_invites import Clock, enrol

NOW = datetime(2027, 1, 15, 9, 0, tzinfo=UTC)


# -- local times: a table ------------------------------------------------------------------------

PARSE = [
    # (zone, typed, the moment meant in UTC, or the reason it is refused)
    ("Europe/Amsterdam", "2027-06-01 14:00", datetime(2027, 6, 1, 12, 0, tzinfo=UTC)),  # summer time, +2
    ("Europe/Amsterdam", "2027-02-01 14:00", datetime(2027, 2, 1, 13, 0, tzinfo=UTC)),  # winter time, +1
    ("Europe/Amsterdam", "01-06-2027 14:00", datetime(2027, 6, 1, 12, 0, tzinfo=UTC)),  # day first
    ("Europe/Amsterdam", " 1/6/2027   9:05 ", datetime(2027, 6, 1, 7, 5, tzinfo=UTC)),
    ("Europe/Amsterdam", "01.06.2027 14:00", datetime(2027, 6, 1, 12, 0, tzinfo=UTC)),
    ("Europe/Amsterdam", "2027-03-28 01:59", datetime(2027, 3, 28, 0, 59, tzinfo=UTC)),  # just before the jump
    ("Europe/Amsterdam", "2027-03-28 02:30", "nonexistent"),  # 02:00 -> 03:00
    ("Europe/Amsterdam", "2027-03-28 03:00", datetime(2027, 3, 28, 1, 0, tzinfo=UTC)),
    ("Europe/Amsterdam", "2027-10-31 02:30", "ambiguous"),  # 03:00 -> 02:00: twice
    ("Europe/Amsterdam", "2027-10-31 03:00", datetime(2027, 10, 31, 2, 0, tzinfo=UTC)),
    ("Europe/London", "2027-03-28 01:30", "nonexistent"),
    ("Europe/London", "2027-10-31 01:30", "ambiguous"),
    ("America/New_York", "2027-03-14 02:30", "nonexistent"),
    ("America/New_York", "2027-11-07 01:30", "ambiguous"),
    ("America/New_York", "2027-11-07 02:30", datetime(2027, 11, 7, 7, 30, tzinfo=UTC)),
    ("Australia/Sydney", "2027-10-03 02:30", "nonexistent"),  # southern spring
    ("Australia/Sydney", "2027-04-04 02:30", "ambiguous"),
    ("Australia/Lord_Howe", "2027-04-04 01:45", "ambiguous"),  # a half-hour change
    ("Asia/Kolkata", "2027-03-28 02:30", datetime(2027, 3, 27, 21, 0, tzinfo=UTC)),  # no DST at all
    ("Europe/Amsterdam", "2027-01-15 10:00", "past"),  # exactly now (09:00 UTC)
    ("Europe/Amsterdam", "2027-01-15 10:01", datetime(2027, 1, 15, 9, 1, tzinfo=UTC)),
    ("Europe/Amsterdam", "2026-12-31 14:00", "past"),
    ("Europe/Amsterdam", "2072-01-15 14:00", "too_far"),
    ("Europe/Amsterdam", "2027-02-30 14:00", "unparseable"),
    ("Europe/Amsterdam", "2027-06-01 24:00", "unparseable"),
    ("Europe/Amsterdam", "2027-06-01", "unparseable"),
    ("Europe/Amsterdam", "tomorrow at 3", "unparseable"),
    ("Europe/Amsterdam", "2027-06-01 2pm", "unparseable"),
    ("Europe/Amsterdam", "", "unparseable"),
]


@pytest.mark.parametrize(("zone", "typed", "expected"), PARSE)
def test_local_times_in_the_therapists_zone(zone, typed, expected):
    if isinstance(expected, str):
        with pytest.raises(AppointmentError) as refused:
            parse_local(typed, zone, now=NOW)
        assert refused.value.reason == expected
    else:
        moment = parse_local(typed, zone, now=NOW)
        assert moment == expected and moment.tzinfo is UTC


# -- the service -------------------------------------------------------------------------------


@pytest.fixture
def clock() -> Clock:
    return Clock(NOW)


@pytest.fixture
async def practice(session_factory):
    """Two therapists (Amsterdam, New York) with a client each, a staff member, an unlinked client."""
    people = {
        "jan": await enrol(session_factory, 11, Role.THERAPIST),
        "amy": await enrol(session_factory, 12, Role.THERAPIST),
        "staff": await enrol(session_factory, 13, Role.STAFF),
        "robin": await enrol(session_factory, 14, Role.CLIENT),
        "kim": await enrol(session_factory, 15, Role.CLIENT),
        "alone": await enrol(session_factory, 16, Role.CLIENT),
    }
    async with session_factory.begin() as session:
        (await PeopleRepository(session).get(people["amy"].person_id)).timezone = "America/New_York"
        await LinkRepository(session).add(people["jan"].person_id, people["robin"].person_id, NOW)
        await LinkRepository(session).add(people["amy"].person_id, people["kim"].person_id, NOW)
    return people


@pytest.fixture
def appointments(session_factory, clock) -> AppointmentService:
    return AppointmentService(session_factory, clock=clock)


async def test_an_appointment_is_made_in_the_therapists_zone_and_shown_in_the_clients(
    appointments, practice, session_factory
):
    jan, staff, robin, kim = practice["jan"], practice["staff"], practice["robin"], practice["kim"]
    made = await appointments.create(jan, robin.person_id, "2027-03-29 10:00", AppointmentKind.IMRS)
    assert made.starts_at == datetime(2027, 3, 29, 8, 0, tzinfo=UTC)  # summer time began the day before
    assert made.ends_at - made.starts_at == timedelta(minutes=60)
    assert made.local_start().strftime("%H:%M") == "10:00"
    assert made.local_start("Europe/London").strftime("%H:%M") == "09:00"
    # Staff make Kim's appointment with Amy, in Amy's zone.
    amys = await appointments.create(staff, kim.person_id, "2027-03-29 10:00", AppointmentKind.PREPARATION)
    assert amys.therapist_id == practice["amy"].person_id and amys.timezone == "America/New_York"
    assert amys.starts_at == datetime(2027, 3, 29, 14, 0, tzinfo=UTC)

    assert [a.id for a in await appointments.upcoming(robin)] == [made.id]
    assert [a.id for a in await appointments.upcoming(jan)] == [made.id]
    async with session_factory() as session:
        events = (await session.scalars(select(AuditEvent).where(AuditEvent.action.like("appointment.%")))).all()
    assert [(e.action, e.subject_person_id, e.detail) for e in events] == [
        ("appointment.created", robin.person_id, {"appointment_id": made.id}),
        ("appointment.created", kim.person_id, {"appointment_id": amys.id}),
    ]


async def test_dst_refusals_reach_the_caller_with_their_reason(appointments, practice):
    jan, robin = practice["jan"], practice["robin"]
    for typed, reason in (("2027-03-28 02:30", "nonexistent"), ("2027-10-31 02:30", "ambiguous"), ("2027-01-01 10:00", "past")):
        with pytest.raises(AppointmentError) as refused:
            await appointments.create(jan, robin.person_id, typed, AppointmentKind.IMRS)
        assert refused.value.reason == reason
    assert await appointments.upcoming(jan) == []


OVERLAPS = [
    # (start of the second appointment, minutes, overlaps the first 10:00-11:00?)
    ("2027-02-01 10:00", 60, True),
    ("2027-02-01 10:59", 30, True),
    ("2027-02-01 09:30", 31, True),
    ("2027-02-01 09:00", 180, True),  # around it
    ("2027-02-01 11:00", 60, False),  # right after
    ("2027-02-01 09:00", 60, False),  # right before
]


@pytest.mark.parametrize(("start", "minutes", "clash"), OVERLAPS)
async def test_overlapping_appointments_are_refused(appointments, practice, start, minutes, clash):
    jan, robin = practice["jan"], practice["robin"]
    first = await appointments.create(jan, robin.person_id, "2027-02-01 10:00", AppointmentKind.IMRS)
    try:
        second = await appointments.create(
            jan, robin.person_id, start, AppointmentKind.OTHER, duration=timedelta(minutes=minutes)
        )
    except AppointmentError as refused:
        assert clash and refused.reason == "overlap" and refused.conflict.id == first.id
    else:
        assert not clash and second.id != first.id


async def test_overlaps_count_per_therapist_and_per_client_and_not_when_cancelled(appointments, practice, session_factory):
    jan, staff, robin, kim = practice["jan"], practice["staff"], practice["robin"], practice["kim"]
    first = await appointments.create(jan, robin.person_id, "2027-02-01 10:00", AppointmentKind.IMRS)
    # Another client of Jan's at the same time: Jan cannot be in two places.
    other = await enrol(session_factory, 17, Role.CLIENT)
    async with session_factory.begin() as session:
        await LinkRepository(session).add(jan.person_id, other.person_id, NOW)
    with pytest.raises(AppointmentError, match="overlap"):
        await appointments.create(staff, other.person_id, "2027-02-01 10:30", AppointmentKind.OTHER)
    # Amy and her client at the same moment are no clash (04:00 in New York is 10:00 in Amsterdam).
    await appointments.create(staff, kim.person_id, "2027-02-01 04:00", AppointmentKind.OTHER)
    # Cancelled, the time is free again; moving keeps the length and checks again.
    await appointments.cancel(jan, first.id)
    second = await appointments.create(staff, other.person_id, "2027-02-01 10:30", AppointmentKind.OTHER)
    third = await appointments.create(jan, robin.person_id, "2027-02-01 12:00", AppointmentKind.IMRS, duration=timedelta(minutes=90))
    with pytest.raises(AppointmentError, match="overlap"):
        await appointments.move(jan, third.id, "2027-02-01 10:00")
    moved = await appointments.move(jan, third.id, "2027-02-01 11:30")  # overlaps only itself
    assert moved.ends_at - moved.starts_at == timedelta(minutes=90)
    assert [a.id for a in await appointments.upcoming(jan)] == [second.id, third.id]


async def test_who_may_manage_which_appointment(appointments, practice, clock):
    jan, amy, staff, robin, kim, alone = (practice[k] for k in ("jan", "amy", "staff", "robin", "kim", "alone"))
    robins = await appointments.create(jan, robin.person_id, "2027-02-01 10:00", AppointmentKind.IMRS)
    for actor, client, refused in (
        (amy, robin, NotAllowed),  # not her client
        (robin, robin, NotAllowed),  # clients do not make appointments
        (staff, alone, AppointmentError),  # no therapist to have it with
        (jan, jan, AppointmentError),  # not a client
    ):
        with pytest.raises(refused):
            await appointments.create(actor, client.person_id, "2027-02-02 10:00", AppointmentKind.OTHER)
    with pytest.raises(NotAllowed):
        await appointments.move(amy, robins.id, "2027-02-03 10:00")
    with pytest.raises(NotAllowed):
        await appointments.cancel(kim, robins.id)
    with pytest.raises(NotAllowed):
        await appointments.upcoming(staff)  # staff see no list of clients' appointments here
    assert await appointments.upcoming(kim) == []

    moved = await appointments.move(staff, robins.id, "2027-02-03 10:00")
    assert moved.starts_at == datetime(2027, 2, 3, 9, 0, tzinfo=UTC)
    await appointments.cancel(jan, robins.id)
    with pytest.raises(AppointmentError, match="cancelled"):
        await appointments.move(jan, robins.id, "2027-02-04 10:00")
    with pytest.raises(AppointmentError, match="not_found"):
        await appointments.cancel(jan, 12345)
    later = await appointments.create(jan, robin.person_id, "2027-02-05 10:00", AppointmentKind.EVALUATION)
    clock.now = datetime(2027, 2, 5, 9, 30, tzinfo=UTC)  # it has begun
    with pytest.raises(AppointmentError, match="past"):
        await appointments.cancel(jan, later.id)
    with pytest.raises(AppointmentError, match="duration"):
        await appointments.create(jan, robin.person_id, "2027-02-06 10:00", AppointmentKind.OTHER, duration=timedelta(hours=9))
