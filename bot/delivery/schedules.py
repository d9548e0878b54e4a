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

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.db.delivery_models import OutboxKind, ReminderSchedule
from bot.db.models import Person
from bot.db.types import id_among, utcnow
from bot.delivery.clock import Clock, local_instant
from bot.delivery.outbox import OutboxService, dialect_of

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
        limit: int = 5000,
        max_rows: int = 20_000,
        may_receive: Callable[[set[int]], Awaitable[set[int]]] | None = None,
    ) -> int:
        """Enqueue the occurrences that have come and advance those schedules, ``limit``
        schedules per transaction until none is left (at most ``max_rows`` per call, so that
        a backlog cannot hold up a tick for long). Returns the number of schedules handled;
        the cost is proportional to it (one indexed read when nothing is due).

        ``may_receive`` (the consent check, bot.services.consent) leaves out the people who
        may not be sent anything now, e.g. a client who withdrew consent: their schedules
        advance, nothing is queued. The outbox checks again at send time."""
        now = now or self._clock()
        handled = 0
        while handled < max_rows:
            batch = min(limit, max_rows - handled)
            found = await self._plan_batch(now, batch, may_receive)
            handled += found
            if found < batch:
                break
        return handled

    async def _plan_batch(
        self,
        now: datetime,
        limit: int,
        may_receive: Callable[[set[int]], Awaitable[set[int]]] | None,
    ) -> int:
        """One transaction of :meth:`plan`.

        Reminders due at one instant mostly share their occurrence (the same local time in
        zones with the same offset) and their next one, so the rows are grouped by them:
        each group is one ``INSERT ... SELECT`` from the schedules into the outbox and one
        ``UPDATE ... WHERE id IN (...)``, instead of a parameter set of a dozen values per
        row, each bound and sent (see bench/reminders_scale.py)."""
        s = ReminderSchedule
        query = (
            select(
                s.id, s.person_id, s.weekdays, s.local_time, s.timezone, s.grace_minutes,
                s.next_due_at, s.next_local_date,
                Person.timezone.label("person_timezone"), Person.active.label("person_active"),
            )
            .join(Person, Person.id == s.person_id)
            .where(s.active.is_(True), s.next_due_at <= now)
            .order_by(s.next_due_at)
            .limit(limit)
        )
        async with self._sessions.begin() as session:
            dialect = dialect_of(session)
            if dialect == "postgresql":
                # Several instances plan at once: each takes different schedules.
                query = query.with_for_update(of=s, skip_locked=True)
            # Core rows (tuples), not the ORM's: thousands of them in a busy tick.
            rows = (await (await session.connection()).execute(query)).all()
            if not rows:
                return 0
            people = {row[1] for row in rows if row[9]}
            allowed = await may_receive(people) if may_receive is not None and people else people
            # (due, local date, expires) -> schedules to queue; (next due, its local date) -> schedules
            queued: dict[tuple[datetime, date, datetime], list[int]] = {}
            advanced: dict[tuple[datetime, date], list[int]] = {}
            zones: dict[str, ZoneInfo] = {}
            following_of: dict[tuple[date, int, time, ZoneInfo, timedelta], Occurrence] = {}
            for (
                schedule_id, person_id, weekdays, at, timezone, grace_minutes, due, local_date,
                person_timezone, _active,
            ) in rows:
                assert due is not None and local_date is not None  # due: next_due_at <= now
                zone_name = timezone or person_timezone
                zone = zones.get(zone_name)
                if zone is None:
                    try:
                        zone = zone_of(zone_name)
                    except ValueError:
                        zone = ZoneInfo("UTC")
                    zones[zone_name] = zone
                grace = timedelta(minutes=grace_minutes)
                # Usually once; twice after an outage, when the occurrence following a
                # missed one is itself already due (next_occurrence skips the hopeless ones).
                while due <= now:
                    if person_id in allowed and now < due + grace:
                        queued.setdefault((due, local_date, due + grace), []).append(schedule_id)
                    key = (local_date, weekdays, at, zone, grace)
                    following = following_of.get(key)
                    if following is None:
                        following = following_of[key] = next_occurrence(
                            local_date, now, weekdays, at, zone, grace
                        )
                    local_date, due = following.local_date, following.due_at
                advanced.setdefault((due, local_date), []).append(schedule_id)
            for (due, local_date, expires), ids in queued.items():
                for chunk in _chunks(ids):
                    await session.execute(
                        self._outbox.from_schedules(
                            session, chunk, due_at=due, expires_at=expires, local_date=local_date
                        )
                    )
            table = s.__table__
            for (due, local_date), ids in advanced.items():
                for chunk in _chunks(ids):
                    await session.execute(
                        update(table)
                        .where(id_among(table.c.id, chunk, dialect))
                        .values(next_due_at=due, next_local_date=local_date)
                    )
        _log.debug(
            "Planned %d schedule(s), %d message(s) queued",
            len(rows), sum(len(ids) for ids in queued.values()),
        )
        return len(rows)


#: Ids per ``IN (...)`` list (SQLite allows 32,766 parameters per statement).
_IN_CHUNK = 5000


def _chunks(ids: list[int]) -> Iterator[list[int]]:
    for start in range(0, len(ids), _IN_CHUNK):
        yield ids[start : start + _IN_CHUNK]
