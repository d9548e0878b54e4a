"""Recurring reminders: days of the week + a local time + an IANA zone.

Occurrences are computed with ``zoneinfo`` (never with APScheduler's CronTrigger, which
fires twice at a time that happens twice on the fall-back day). One local date gives
exactly one instant (:func:`bot.delivery.clock.local_instant`), and the outbox row of an
occurrence is keyed ``schedule:<id>:<local date>``, so the unique idempotency key makes
"one delivery per local date" hold in the database too, whatever happens.

Each schedule row carries its next occurrence (``next_due_at``, indexed, and
``next_local_date``). The planner (:meth:`ScheduleService.plan`, run by the dispatcher's
tick) reads only the schedules whose next occurrence has come, enqueues one outbox row
each with ``expires_at = due + grace`` and advances them. An occurrence that has already
missed its grace window (the bot was down) is skipped, never sent hours late; a person
who is not active gets nothing, but their schedules still advance.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.db.delivery_models import OutboxKind, ReminderSchedule
from bot.db.models import Person
from bot.db.types import utcnow
from bot.delivery.clock import Clock, local_instant
from bot.delivery.outbox import OutboxService, PlainMessage, dialect_of

_log = logging.getLogger(__name__)

MONDAY, TUESDAY, WEDNESDAY, THURSDAY, FRIDAY, SATURDAY, SUNDAY = range(7)  # date.weekday()
EVERY_DAY = frozenset(range(7))


def weekdays_mask(days: Iterable[int]) -> int:
    """``{MONDAY, THURSDAY}`` -> the stored bit mask (bit 0 = Monday)."""
    mask = 0
    for day in days:
        if not 0 <= day <= 6:
            raise ValueError(f"{day} is not a weekday number (0 = Monday ... 6 = Sunday)")
        mask |= 1 << day
    if not mask:
        raise ValueError("a schedule needs at least one day of the week")
    return mask


def weekdays_of(mask: int) -> frozenset[int]:
    return frozenset(day for day in range(7) if mask & (1 << day))


def zone_of(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{name!r} is not an IANA time zone name") from None


@dataclass(frozen=True)
class Occurrence:
    local_date: date
    due_at: datetime  # UTC


def occurrences(from_date: date, mask: int, at: time, zone: ZoneInfo) -> Iterator[Occurrence]:
    """Every occurrence on or after the local date ``from_date``, one per matching date."""
    day = from_date
    while True:
        if mask & (1 << day.weekday()):
            yield Occurrence(day, local_instant(day, at, zone))
        day += timedelta(days=1)


def first_occurrence(now: datetime, mask: int, at: time, zone: ZoneInfo) -> Occurrence:
    """The first occurrence after ``now`` (for a new or changed schedule)."""
    start = now.astimezone(zone).date() - timedelta(days=1)
    return next(o for o in occurrences(start, mask, at, zone) if o.due_at > now)


def next_occurrence(
    after_date: date, now: datetime, mask: int, at: time, zone: ZoneInfo, grace: timedelta
) -> Occurrence:
    """The occurrence following the one on ``after_date``, skipping those that can no
    longer be sent within ``grace`` of their time at ``now``."""
    return next(
        o for o in occurrences(after_date + timedelta(days=1), mask, at, zone) if o.due_at + grace > now
    )


def schedule_key(schedule_id: int, local_date: date) -> str:
    return f"schedule:{schedule_id}:{local_date.isoformat()}"


class ScheduleService:
    """Create, change and stop recurring reminders; plan their occurrences into the outbox."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        outbox: OutboxService,
        *,
        default_grace_minutes: int = 60,
        clock: Clock = utcnow,
    ) -> None:
        self._sessions = sessions
        self._outbox = outbox
        self._default_grace = default_grace_minutes
        self._clock = clock

    async def create(
        self,
        person_id: int,
        *,
        weekdays: Iterable[int],
        at: time,
        content_key: str,
        kind: OutboxKind = OutboxKind.REMINDER,
        params: Mapping[str, Any] | None = None,
        timezone: str | None = None,
        grace_minutes: int | None = None,
    ) -> int:
        """A new active schedule; ``timezone`` None follows the person's own zone."""
        mask = weekdays_mask(weekdays)
        if timezone is not None:
            zone_of(timezone)
        now = self._clock()
        async with self._sessions.begin() as session:
            person = await session.get(Person, person_id)
            if person is None:
                raise LookupError(f"no person {person_id}")
            zone = zone_of(timezone or person.timezone)
            first = first_occurrence(now, mask, at, zone)
            schedule = ReminderSchedule(
                person_id=person_id,
                kind=kind,
                content_key=content_key,
                params=dict(params) if params else None,
                weekdays=mask,
                local_time=at.replace(tzinfo=None),
                timezone=timezone,
                grace_minutes=grace_minutes or self._default_grace,
                active=True,
                next_due_at=first.due_at,
                next_local_date=first.local_date,
            )
            session.add(schedule)
            await session.flush()
            return schedule.id

    async def change(
        self,
        schedule_id: int,
        *,
        weekdays: Iterable[int] | None = None,
        at: time | None = None,
        timezone: str | None = None,
        active: bool | None = None,
        content_key: str | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> None:
        """Change when a schedule fires, what it says (``content_key`` and ``params``
        together), or pause / resume it. A queued occurrence that has not been sent yet is
        cancelled; one already sent keeps its local date from getting a second one (its
        idempotency key)."""
        now = self._clock()
        async with self._sessions.begin() as session:
            schedule = await session.get(ReminderSchedule, schedule_id)
            if schedule is None:
                raise LookupError(f"no schedule {schedule_id}")
            if weekdays is not None:
                schedule.weekdays = weekdays_mask(weekdays)
            if at is not None:
                schedule.local_time = at.replace(tzinfo=None)
            if timezone is not None:
                zone_of(timezone)
                schedule.timezone = timezone
            if active is not None:
                schedule.active = active
            if content_key is not None:
                schedule.content_key = content_key
                schedule.params = dict(params) if params else None
            await self._outbox.cancel_pending(
                recipient_id=schedule.person_id, key_prefix=f"schedule:{schedule_id}:", session=session
            )
            await self._recompute(session, [schedule], now)

    async def delete(self, schedule_id: int) -> None:
        async with self._sessions.begin() as session:
            schedule = await session.get(ReminderSchedule, schedule_id)
            if schedule is not None:
                await self._outbox.cancel_pending(
                    recipient_id=schedule.person_id, key_prefix=f"schedule:{schedule_id}:", session=session
                )
                await session.delete(schedule)

    async def reschedule_person(self, person_id: int, *, session: AsyncSession | None = None) -> None:
        """Recompute a person's next occurrences, e.g. after they changed their time zone;
        in the caller's ``session`` (transaction) if given, so that the change and the new
        plan commit together."""
        if session is None:
            async with self._sessions.begin() as own:
                await self._reschedule(own, person_id)
        else:
            await self._reschedule(session, person_id)

    async def _reschedule(self, session: AsyncSession, person_id: int) -> None:
        now = self._clock()
        schedules = (
            await session.scalars(select(ReminderSchedule).where(ReminderSchedule.person_id == person_id))
        ).all()
        for schedule in schedules:
            await self._outbox.cancel_pending(
                recipient_id=person_id, key_prefix=f"schedule:{schedule.id}:", session=session
            )
        await self._recompute(session, schedules, now)

    async def _recompute(
        self, session: AsyncSession, schedules: Iterable[ReminderSchedule], now: datetime
    ) -> None:
        for schedule in schedules:
            if not schedule.active:
                schedule.next_due_at = schedule.next_local_date = None
                continue
            person = await session.get(Person, schedule.person_id)
            assert person is not None
            zone = zone_of(schedule.timezone or person.timezone)
            # A local date that already had its delivery cannot get a second one: the
            # planner's insert of the same idempotency key does nothing.
            first = first_occurrence(now, schedule.weekdays, schedule.local_time, zone)
            schedule.next_due_at, schedule.next_local_date = first.due_at, first.local_date

    # -- the planner ---------------------------------------------------------------------------

    async def plan(
        self,
        now: datetime | None = None,
        *,
        limit: int = 2000,
        may_receive: Callable[[set[int]], Awaitable[set[int]]] | None = None,
    ) -> int:
        """Enqueue the occurrences that have come (at most ``limit`` schedules per call) and
        advance those schedules. Returns the number of schedules handled; the cost is
        proportional to it (one indexed read when nothing is due).

        ``may_receive`` (the consent check, bot.services.consent) leaves out the people who
        may not be sent anything now, e.g. a client who withdrew consent: their schedules
        advance, nothing is queued. The outbox checks again at send time."""
        now = now or self._clock()
        s = ReminderSchedule
        query = (
            select(
                s.id, s.person_id, s.kind, s.content_key, s.params, s.weekdays, s.local_time,
                s.timezone, s.grace_minutes, s.next_due_at, s.next_local_date,
                Person.timezone.label("person_timezone"), Person.active.label("person_active"),
            )
            .join(Person, Person.id == s.person_id)
            .where(s.active.is_(True), s.next_due_at <= now)
            .order_by(s.next_due_at)
            .limit(limit)
        )
        async with self._sessions.begin() as session:
            if dialect_of(session) == "postgresql":
                # Several instances plan at once: each takes different schedules.
                query = query.with_for_update(of=s, skip_locked=True)
            rows = (await session.execute(query)).all()
            if not rows:
                return 0
            people = {row.person_id for row in rows if row.person_active}
            allowed = await may_receive(people) if may_receive is not None and people else people
            messages: list[PlainMessage] = []
            advances: list[dict[str, Any]] = []
            for row in rows:
                try:
                    zone = zone_of(row.timezone or row.person_timezone)
                except ValueError:
                    zone = ZoneInfo("UTC")
                grace = timedelta(minutes=row.grace_minutes)
                local_date: date = row.next_local_date
                due: datetime = row.next_due_at
                # Usually once; twice after an outage, when the occurrence following a
                # missed one is itself already due (next_occurrence skips the hopeless ones).
                while due <= now:
                    if row.person_id in allowed and now < due + grace:
                        messages.append(
                            PlainMessage(
                                recipient_id=row.person_id,
                                kind=OutboxKind(row.kind),
                                idempotency_key=schedule_key(row.id, local_date),
                                due_at=due,
                                expires_at=due + grace,
                                content_key=row.content_key,
                                params=row.params,
                            )
                        )
                    following = next_occurrence(
                        local_date, now, row.weekdays, row.local_time, zone, grace
                    )
                    local_date, due = following.local_date, following.due_at
                advances.append({"b_id": row.id, "b_due": due, "b_date": local_date})
            if messages:
                await self._outbox.insert_plain(session, messages, check_active=False)
            await session.execute(
                update(s.__table__)
                .where(s.__table__.c.id == bindparam("b_id"))
                .values(next_due_at=bindparam("b_due"), next_local_date=bindparam("b_date")),
                advances,
            )
        _log.debug("Planned %d schedule(s), %d message(s) queued", len(rows), len(messages))
        return len(rows)
