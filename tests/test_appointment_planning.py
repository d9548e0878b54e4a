"""What an appointment queues in the outbox (bot.services.appointments), at the service level with
a settable clock: reminders 48 h and 2 h before (absolute hours, so across a DST change the
local time differs), the check-in prompt and its reminder before an ImRS appointment, the
client's notices; moving re-plans, cancelling withdraws, a link that ends cancels; the
client's answer under a reminder. Real database (SQLite; PostgreSQL with TEST_DATABASE_URL)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from bot.content import Content
from bot.db.delivery_models import OutboxKind, OutboxMessage, OutboxState
from bot.db.models import Appointment, AppointmentKind, AppointmentResponse, Role
from bot.db.repositories import LinkRepository, PeopleRepository
from bot.delivery.outbox import OutboxService
from bot.delivery.rendering import render_params
from bot.services.appointments import AppointmentError, AppointmentService, Planning
from bot.services.clinic import ClinicService
from bot.services.invites import InviteService, NotAllowed
from bot.services.notices import Notices
from tests.test_invites import Clock, enrol

NOW = datetime(2027, 10, 20, 8, 0, tzinfo=UTC)  # a Wednesday, summer time in Amsterdam
AMSTERDAM = ZoneInfo("Europe/Amsterdam")
content = Content()


@pytest.fixture
def clock() -> Clock:
    return Clock(NOW)


@pytest.fixture
async def practice(session_factory):
    people = {
        "jan": await enrol(session_factory, 11, Role.THERAPIST),
        "amy": await enrol(session_factory, 12, Role.THERAPIST),
        "staff": await enrol(session_factory, 13, Role.STAFF),
        "robin": await enrol(session_factory, 14, Role.CLIENT),
        "kim": await enrol(session_factory, 15, Role.CLIENT),
    }
    async with session_factory.begin() as session:
        (await PeopleRepository(session).get(people["robin"].person_id)).alias = "Robin"
        await LinkRepository(session).add(people["jan"].person_id, people["robin"].person_id, NOW)
        await LinkRepository(session).add(people["amy"].person_id, people["kim"].person_id, NOW)
    return people


@pytest.fixture
def appointments(session_factory, clock) -> AppointmentService:
    return AppointmentService(session_factory, clock=clock, outbox=OutboxService(session_factory, clock=clock), content=content)


async def rows(session_factory, prefix: str = "") -> dict[str, OutboxMessage]:
    async with session_factory() as session:
        found = await session.scalars(select(OutboxMessage).where(OutboxMessage.idempotency_key.like(f"{prefix}%")))
        return {row.idempotency_key: row for row in found}


async def test_reminders_across_the_october_dst_change(appointments, practice, session_factory):
    """Monday 1 November 2027, 10:00 in Amsterdam (winter time, 09:00 UTC): 48 h before is
    Saturday 30 October 09:00 UTC, which is 11:00 summer time there; 2 h before is 08:00 local."""
    jan, robin = practice["jan"], practice["robin"]
    made = await appointments.create(jan, robin.person_id, "2027-11-01 10:00", AppointmentKind.EVALUATION)
    start = datetime(2027, 11, 1, 9, 0, tzinfo=UTC)
    assert made.starts_at == start
    queued = await rows(session_factory, f"appt:{made.id}:")
    assert set(queued) == {f"appt:{made.id}:20271101T0900Z:48h", f"appt:{made.id}:20271101T0900Z:2h"}
    early, late = queued[f"appt:{made.id}:20271101T0900Z:48h"], queued[f"appt:{made.id}:20271101T0900Z:2h"]
    assert early.due_at == start - timedelta(hours=48) and late.due_at == start - timedelta(hours=2)
    assert early.due_at.astimezone(AMSTERDAM).strftime("%a %H:%M") == "Sat 11:00"  # summer time still
    assert late.due_at.astimezone(AMSTERDAM).strftime("%a %H:%M") == "Mon 08:00"
    for row in (early, late):
        assert row.recipient_id == robin.person_id and row.state is OutboxState.PENDING
        assert row.content_key == "outbox.appointment_reminder" and row.expires_at == start
        assert row.params == {"appointment_id": made.id, "kind": {"text": "appointments.kinds.evaluation"},
                              "when": {"at": start.isoformat()}}
    # No check-in prompt for an evaluation; the client is told it was made.
    assert await rows(session_factory, "checkin:") == {}
    [notice] = (await rows(session_factory, f"appt-notice:{made.id}:")).values()
    assert notice.content_key == "outbox.appointment_created" and notice.due_at == NOW
    # Rendered when sent, in the recipient's zone and language: the time they will see.
    assert render_params(content, "en", "Europe/Amsterdam", notice.params)["when"] == "Monday 01-11-2027 at 10:00"
    assert render_params(content, "nl", "Europe/London", notice.params)["when"] == "maandag 01-11-2027 om 09:00"
    assert content.text("outbox.appointment_reminder", "en", **render_params(content, "en", "America/New_York", early.params)) == (
        "A reminder of your appointment: evaluation session on <b>Monday 01-11-2027 at 05:00</b>."
    )


async def test_an_imrs_appointment_plans_the_check_in_prompt_and_one_reminder(appointments, practice, session_factory):
    jan, robin = practice["jan"], practice["robin"]
    made = await appointments.create(jan, robin.person_id, "2027-10-25 15:00", AppointmentKind.IMRS)
    start = datetime(2027, 10, 25, 13, 0, tzinfo=UTC)  # summer time (UTC+2) until 31 October
    at = "20271025T1300Z"
    checkin = await rows(session_factory, f"checkin:{made.id}:")
    assert set(checkin) == {f"checkin:{made.id}:{at}:prompt", f"checkin:{made.id}:{at}:reminder"}
    prompt, reminder = checkin[f"checkin:{made.id}:{at}:prompt"], checkin[f"checkin:{made.id}:{at}:reminder"]
    assert prompt.kind is OutboxKind.CHECK_IN_PROMPT and prompt.content_key == "outbox.check_in_prompt"
    assert prompt.due_at == start - timedelta(hours=24) and prompt.expires_at == start
    assert reminder.kind is OutboxKind.CHECK_IN_PROMPT and reminder.content_key == "outbox.check_in_reminder"
    assert reminder.due_at == prompt.due_at + timedelta(hours=12)
    assert prompt.params == {"appointment_id": made.id, "day": {"at": start.isoformat()}}
    assert "Monday 25-10-2027 at 15:00" in content.text(
        "outbox.check_in_prompt", "en", **render_params(content, "en", "Europe/Amsterdam", prompt.params)
    )
    assert set(await rows(session_factory, f"appt:{made.id}:")) == {f"appt:{made.id}:{at}:48h", f"appt:{made.id}:{at}:2h"}


async def test_an_imrs_appointment_soon_gets_its_prompt_now_and_no_late_reminders(appointments, practice, session_factory, clock):
    jan, robin = practice["jan"], practice["robin"]
    # 20 h ahead: the 48 h reminder and the prompt's time have passed; the prompt goes now,
    # and its reminder (12 h after) would be 8 h before the start: still queued.
    made = await appointments.create(jan, robin.person_id, "2027-10-21 06:00", AppointmentKind.IMRS)
    queued = await rows(session_factory)
    assert [k for k in queued if k.startswith(f"appt:{made.id}:")] == [f"appt:{made.id}:20271021T0400Z:2h"]
    assert queued[f"checkin:{made.id}:20271021T0400Z:prompt"].due_at == NOW
    assert queued[f"checkin:{made.id}:20271021T0400Z:reminder"].due_at == NOW + timedelta(hours=12)
    # 12 h 30 min ahead: the prompt's reminder would come 30 min before the start: not queued.
    soon = await appointments.create(jan, robin.person_id, "2027-10-20 22:30", AppointmentKind.IMRS)
    assert set(await rows(session_factory, f"checkin:{soon.id}:")) == {f"checkin:{soon.id}:20271020T2030Z:prompt"}
    # 1 h ahead: not even the 2 h reminder.
    sooner = await appointments.create(jan, robin.person_id, "2027-10-20 11:00", AppointmentKind.OTHER)
    assert await rows(session_factory, f"appt:{sooner.id}:") == {}


async def test_moving_replans_and_cancelling_withdraws(appointments, practice, session_factory):
    jan, staff, robin = practice["jan"], practice["staff"], practice["robin"]
    made = await appointments.create(jan, robin.person_id, "2027-10-27 10:00", AppointmentKind.IMRS)
    assert len(await rows(session_factory, f"appt:{made.id}:")) == 2
    moved = await appointments.move(staff, made.id, "2027-11-03 10:00")  # a week later, winter time
    start = datetime(2027, 11, 3, 9, 0, tzinfo=UTC)
    assert moved.starts_at == start
    queued = await rows(session_factory, f"appt:{made.id}:")
    assert set(queued) == {f"appt:{made.id}:20271103T0900Z:48h", f"appt:{made.id}:20271103T0900Z:2h"}
    assert {r.due_at for r in queued.values()} == {start - timedelta(hours=48), start - timedelta(hours=2)}
    checkin = await rows(session_factory, f"checkin:{made.id}:")
    assert set(checkin) == {f"checkin:{made.id}:20271103T0900Z:prompt", f"checkin:{made.id}:20271103T0900Z:reminder"}
    notices = await rows(session_factory, f"appt-notice:{made.id}:")
    assert {n.content_key for n in notices.values()} == {"outbox.appointment_created", "outbox.appointment_moved"}

    await appointments.cancel(jan, made.id)
    assert await rows(session_factory, f"appt:{made.id}:") == {}
    assert await rows(session_factory, f"checkin:{made.id}:") == {}
    notices = await rows(session_factory, f"appt-notice:{made.id}:")
    assert "outbox.appointment_cancelled" in {n.content_key for n in notices.values()}


async def test_sent_reminders_stay_and_a_failed_change_queues_nothing(appointments, practice, session_factory):
    jan, robin = practice["jan"], practice["robin"]
    made = await appointments.create(jan, robin.person_id, "2027-10-27 10:00", AppointmentKind.OTHER)
    key = f"appt:{made.id}:20271027T0800Z:48h"
    async with session_factory.begin() as session:
        row = await session.scalar(select(OutboxMessage).where(OutboxMessage.idempotency_key == key))
        row.state = OutboxState.SENT
    before = set(await rows(session_factory))
    with pytest.raises(AppointmentError, match="nonexistent"):
        await appointments.move(jan, made.id, "2028-03-26 02:30")  # the spring change: nothing moves
    assert set(await rows(session_factory)) == before
    await appointments.cancel(jan, made.id)
    assert set(await rows(session_factory, f"appt:{made.id}:")) == {key}  # history stays; pending went


async def test_the_practice_configures_the_reminder_hours(session_factory, practice, clock):
    service = AppointmentService(
        session_factory, clock=clock, content=content,
        planning=Planning(reminder_hours=(72, 24, 1), checkin_prompt=timedelta(hours=36)),
    )
    made = await service.create(practice["jan"], practice["robin"].person_id, "2027-10-27 10:00", AppointmentKind.IMRS)
    queued = await rows(session_factory)
    assert {k.rsplit(":", 1)[1] for k in queued if k.startswith("appt:")} == {"72h", "24h", "1h"}
    assert queued[f"checkin:{made.id}:20271027T0800Z:prompt"].due_at == made.starts_at - timedelta(hours=36)


async def test_the_clients_answer_and_the_reschedule_notice(appointments, practice, session_factory, clock):
    jan, robin, kim = practice["jan"], practice["robin"], practice["kim"]
    made = await appointments.create(jan, robin.person_id, "2027-10-27 10:00", AppointmentKind.IMRS)
    reminder = (await rows(session_factory, f"appt:{made.id}:20271027T0800Z:48h"))[f"appt:{made.id}:20271027T0800Z:48h"]
    async with session_factory.begin() as session:  # delivered: a move no longer withdraws it
        (await session.get(OutboxMessage, reminder.id)).state = OutboxState.SENT
    with pytest.raises(NotAllowed):
        await appointments.respond(kim, reminder.id, AppointmentResponse.ATTENDING)  # not her message
    with pytest.raises(NotAllowed):
        await appointments.respond(jan, reminder.id, AppointmentResponse.ATTENDING)  # not a client
    answered = await appointments.respond(robin, reminder.id, AppointmentResponse.RESCHEDULE)
    assert answered.client_response is AppointmentResponse.RESCHEDULE
    [notice] = (await rows(session_factory, f"appt-reschedule:{made.id}:")).values()
    assert notice.recipient_id == jan.person_id and notice.subject_id == robin.person_id
    assert notice.content_key is None and notice.body == (
        "Robin needs to reschedule the ImRS session on Wednesday 27-10-2027 at 10:00. "
        "Please contact them; move it with /appointments."
    )
    await appointments.respond(robin, reminder.id, AppointmentResponse.RESCHEDULE)  # again: told once
    assert len(await rows(session_factory, "appt-reschedule:")) == 1
    await appointments.respond(robin, reminder.id, AppointmentResponse.ATTENDING)
    async with session_factory() as session:
        stored = await session.get(Appointment, made.id)
        assert stored.client_response is AppointmentResponse.ATTENDING and stored.responded_at == NOW
    # Moved: the old reminder's buttons no longer answer for the new time, and the answer is reset.
    await appointments.move(jan, made.id, "2027-10-28 10:00")
    with pytest.raises(AppointmentError, match="moved"):
        await appointments.respond(robin, reminder.id, AppointmentResponse.ATTENDING)
    async with session_factory() as session:
        assert (await session.get(Appointment, made.id)).client_response is None
    await appointments.cancel(jan, made.id)
    new_reminder = next(iter((await rows(session_factory, "appt-notice:")).values()))
    with pytest.raises(AppointmentError, match="cancelled"):
        await appointments.respond(robin, new_reminder.id, AppointmentResponse.ATTENDING)


async def test_a_link_that_ends_cancels_the_coming_appointments_and_withdraws_everything(
    appointments, practice, session_factory, clock
):
    jan, robin = practice["jan"], practice["robin"]
    clinic = ClinicService(
        session_factory, InviteService(session_factory, clock=clock),
        Notices(OutboxService(session_factory), content), appointments=appointments,
    )
    first = await appointments.create(jan, robin.person_id, "2027-10-27 10:00", AppointmentKind.IMRS)
    second = await appointments.create(jan, robin.person_id, "2027-11-10 10:00", AppointmentKind.OTHER)
    assert len(await rows(session_factory, "appt:")) == 4 and len(await rows(session_factory, "checkin:")) == 2
    await clinic.unlink_client(jan, robin.person_id)
    assert await rows(session_factory, "appt:") == {} and await rows(session_factory, "checkin:") == {}
    async with session_factory() as session:
        for appointment_id in (first.id, second.id):
            assert (await session.get(Appointment, appointment_id)).cancelled_at == NOW
    assert await appointments.upcoming(jan) == [] and await appointments.upcoming(robin) == []


async def test_a_deactivated_therapists_clients_lose_their_coming_appointments(appointments, practice, session_factory, clock):
    amy, staff, kim = practice["amy"], practice["staff"], practice["kim"]
    clinic = ClinicService(
        session_factory, InviteService(session_factory, clock=clock),
        Notices(OutboxService(session_factory), content), appointments=appointments,
    )
    await appointments.create(staff, kim.person_id, "2027-10-27 10:00", AppointmentKind.IMRS)
    await clinic.deactivate_therapist(staff, amy.person_id)
    assert await rows(session_factory, "appt:") == {} and await rows(session_factory, "checkin:") == {}
    assert await appointments.upcoming(kim) == []
