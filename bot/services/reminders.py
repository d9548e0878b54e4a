"""A client's own practice reminders (/reminders) and the buttons of a delivered reminder.

Built on the schedule service (bot.delivery.schedules): one schedule per reminder, in the
client's own time zone (``timezone`` NULL), delivered through the outbox. Every method
takes the asker's person id and checks, at the moment of use, that the reminder (or the
delivered outbox message) is theirs: :class:`NotYours` otherwise.

A reminder is for one exercise (``params = {"exercise": "breathing"}``, and the content
key of its words, ``outbox.practice_reminder_for.breathing``) or for any (no params,
``outbox.practice_reminder``); "Start now" opens /practice on that exercise.

Snooze queues a one-off copy of a delivered reminder 15 minutes later (keyed
``snooze:<outbox row id>``, so pressing twice queues one); "Skip today" cancels the
client's queued snoozes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.db.delivery_models import OutboxKind, OutboxMessage, ReminderSchedule
from bot.db.types import utcnow
from bot.delivery.clock import Clock
from bot.delivery.outbox import OutboxService
from bot.delivery.schedules import ScheduleService, weekdays_of
from bot.exercises import EXERCISES

REMINDER_KEY = "outbox.practice_reminder"  # any exercise
EXERCISE_KEY = "outbox.practice_reminder_for."  # + the exercise
REMINDER_KEYS = (REMINDER_KEY, *(EXERCISE_KEY + name for name in EXERCISES))
SNOOZE = timedelta(minutes=15)
SNOOZE_PREFIX = "snooze:"
MAX_REMINDERS = 10


class NotYours(Exception):
    """The reminder or message does not exist, or belongs to someone else."""


class TooMany(Exception):
    """The client already has the most reminders allowed."""


@dataclass(frozen=True)
class Reminder:
    id: int
    weekdays: frozenset[int]
    at: time
    active: bool
    next_due_at: datetime | None
    exercise: str | None  # None: any exercise


def exercise_of(params: dict[str, Any] | None) -> str | None:
    """The exercise a reminder (or a delivered one) is for; None: any."""
    exercise = (params or {}).get("exercise")
    return exercise if exercise in EXERCISES else None


def _words_of(exercise: str | None) -> tuple[str, dict[str, str] | None]:
    """The content key and params of a reminder for ``exercise`` (None: any)."""
    if exercise is None:
        return REMINDER_KEY, None
    if exercise not in EXERCISES:
        raise ValueError(f"{exercise!r} is not an exercise")
    return EXERCISE_KEY + exercise, {"exercise": exercise}


def _reminder(row: ReminderSchedule) -> Reminder:
    return Reminder(
        row.id, weekdays_of(row.weekdays), row.local_time, row.active, row.next_due_at, exercise_of(row.params)
    )


class ReminderService:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        schedules: ScheduleService,
        outbox: OutboxService,
        *,
        clock: Clock = utcnow,
    ) -> None:
        self._sessions = sessions
        self._schedules = schedules
        self._outbox = outbox
        self._clock = clock

    async def list(self, person_id: int) -> list[Reminder]:
        async with self._sessions() as session:
            rows = await session.scalars(
                select(ReminderSchedule)
                .where(
                    ReminderSchedule.person_id == person_id,
                    ReminderSchedule.content_key.in_(REMINDER_KEYS),
                )
                .order_by(ReminderSchedule.local_time, ReminderSchedule.id)
            )
            return [_reminder(row) for row in rows]

    async def get(self, person_id: int, reminder_id: int) -> Reminder:
        async with self._sessions() as session:
            row = await session.get(ReminderSchedule, reminder_id)
            if row is None or row.person_id != person_id or row.content_key not in REMINDER_KEYS:
                raise NotYours(reminder_id)
            return _reminder(row)

    async def add(
        self, person_id: int, weekdays: frozenset[int] | set[int], at: time, exercise: str | None = None
    ) -> int:
        if len(await self.list(person_id)) >= MAX_REMINDERS:
            raise TooMany()
        content_key, params = _words_of(exercise)
        return await self._schedules.create(
            person_id, weekdays=weekdays, at=at, content_key=content_key, params=params, kind=OutboxKind.REMINDER
        )

    async def change(
        self,
        person_id: int,
        reminder_id: int,
        *,
        weekdays: frozenset[int] | set[int] | None = None,
        at: time | None = None,
        active: bool | None = None,
        exercise: str | None = None,
        any_exercise: bool = False,
    ) -> Reminder:
        """Change days, time, active, or the exercise (``exercise``; ``any_exercise=True``
        for any)."""
        await self.get(person_id, reminder_id)
        content_key = params = None
        if exercise is not None or any_exercise:
            content_key, params = _words_of(None if any_exercise else exercise)
        await self._schedules.change(
            reminder_id, weekdays=weekdays, at=at, active=active, content_key=content_key, params=params
        )
        return await self.get(person_id, reminder_id)

    async def delete(self, person_id: int, reminder_id: int) -> None:
        await self.get(person_id, reminder_id)
        await self._schedules.delete(reminder_id)

    # -- the buttons of a delivered reminder ---------------------------------------------------

    async def _delivered(self, person_id: int, message_id: int) -> OutboxMessage:
        async with self._sessions() as session:
            row = await session.get(OutboxMessage, message_id)
            if row is None or row.recipient_id != person_id or row.kind != OutboxKind.REMINDER:
                raise NotYours(message_id)
            return row

    async def delivered_exercise(self, person_id: int, message_id: int) -> str | None:
        """The exercise a delivered reminder is for (None: any); NotYours when it is not the
        person's reminder."""
        return exercise_of((await self._delivered(person_id, message_id)).params)

    async def snooze(self, person_id: int, message_id: int) -> int | None:
        """Queue the reminder again in 15 minutes; the new row's id (None: already snoozed)."""
        row = await self._delivered(person_id, message_id)
        due = self._clock() + SNOOZE
        return await self._outbox.enqueue(
            person_id,
            kind=OutboxKind.REMINDER,
            idempotency_key=f"{SNOOZE_PREFIX}{message_id}",
            due_at=due,
            expires_at=due + timedelta(minutes=60),
            content_key=row.content_key or REMINDER_KEY,
            params=row.params,
        )

    async def skip_today(self, person_id: int, message_id: int) -> int:
        """No more reminders today: the client's queued snoozes are cancelled."""
        await self._delivered(person_id, message_id)
        return await self._outbox.cancel_pending(recipient_id=person_id, key_prefix=SNOOZE_PREFIX)
