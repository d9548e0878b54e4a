"""The pre-appointment check-in of a client (/checkin, handlers/checkin.py): starting or
resuming it, one answer at a time, Back, "save and finish later", discarding, completing.

* **One open check-in per client.** A check-in is ``draft`` while it is being answered,
  ``saved`` once the client chose "save and finish later", ``completed`` when sent. Starting
  while one is open resumes it (``start``), unless the client asks to start again
  (``fresh=True``: the open one is deleted). An open check-in whose appointment has begun
  (or was cancelled) is out of date: it is deleted and a new one begins.
* **Answers** (:class:`bot.checkins.Answers` as JSON) are stored encrypted under the
  client's key the moment they are given, so a restart loses nothing; in clear are only the
  ids, the state and ``step``, the name of the question reached (or ``review``).
* **Discarding** (/cancel, a stop word) deletes a draft; a saved check-in is kept (with the
  answers given since it was resumed): "nothing half-saved unless you chose to save it".
* **The appointment** it prepares: the client's next appointment that is not cancelled and
  has not begun, preferring an ImRS appointment within the next 7 days; none: NULL, and
  the client is told it goes to the therapist marked "no appointment ahead".
* **Practice** (``practice_days``, ``practice_help``) is suggested from the practice log of
  the last 7 days (:meth:`suggestions`); the client confirms or changes it.
* **Completing** is one transaction: the state, ``completed_at``, ``therapist_id`` (the
  client's current therapist), the appointment's pending prompt and reminder withdrawn
  (outbox keys ``checkin:{appointment_id}:``), then every listener (e.g. the summary) is
  awaited with the session and the row. A listener that fails rolls it all back.

Every method acts for the client themself, checked at the moment of use (NotAllowed
otherwise). Nothing here logs or raises with an answer in it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.checkins import QUESTIONS, Answers, InvalidAnswer, previous_question
from bot.db.delivery_models import OutboxKind, OutboxMessage
from bot.db.models import Appointment, AppointmentKind, CheckIn, CheckInState, ExerciseRun, Person, Role
from bot.db.repositories import AuditRepository, LinkRepository
from bot.db.types import utcnow
from bot.delivery.outbox import OutboxService
from bot.services.invites import NotAllowed, current_person
from bot.services.people import Identity

REVIEW = "review"  # the step after the last question: the answers shown, send or change one
OPEN_STATES = (CheckInState.DRAFT, CheckInState.SAVED)
PREFER_IMRS_WITHIN = timedelta(days=7)
PRACTICE_WINDOW = timedelta(days=7)

#: ``async (session, check_in_row) -> None``: run inside the completing transaction.
Listener = Callable[[AsyncSession, CheckIn], Awaitable[None]]


class NoCheckIn(LookupError):
    """The client has no open check-in (any more): sent, discarded, or out of date."""


@dataclass(frozen=True)
class AppointmentAhead:
    id: int
    kind: AppointmentKind
    starts_at: datetime  # UTC


@dataclass(frozen=True)
class CheckInView:
    """An open (or just completed) check-in as the conversation sees it."""

    id: int
    state: CheckInState
    step: str  # a question's name, or REVIEW
    answers: Answers
    appointment: AppointmentAhead | None  # None: no appointment ahead
    resumed: bool = False  # start() found it open (rather than beginning it)

    @property
    def answered(self) -> int:
        return len(self.answers.values)


@dataclass(frozen=True)
class PracticeSuggestion:
    """What the practice log says about the last 7 days."""

    days: int  # distinct local days with at least one exercise
    help: str  # one of bot.checkins.PRACTICE_HELP
    average_drop: float | None  # before minus after, over exercises rated both times


def help_from_drop(days: int, average_drop: float | None) -> str:
    """How much practising helped, suggested from the average drop in distress."""
    if days == 0:
        return "did_not_practise"
    if average_drop is None or average_drop <= 0:
        return "not_at_all"
    if average_drop < 2:
        return "a_little"
    if average_drop < 4:
        return "somewhat"
    return "a_lot"


class CheckInRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def open_of(self, client_id: int) -> CheckIn | None:
        return await self.session.scalar(
            select(CheckIn)
            .where(CheckIn.client_id == client_id, CheckIn.state.in_(OPEN_STATES))
            .order_by(CheckIn.started_at.desc())
            .limit(1)
        )

    async def add(self, row: CheckIn) -> CheckIn:
        self.session.add(row)
        await self.session.flush()
        return row

    async def next_appointment(self, client_id: int, now: datetime) -> Appointment | None:
        """The next appointment not cancelled and not begun; an ImRS one within a week first."""
        rows = (
            await self.session.scalars(
                select(Appointment)
                .where(
                    Appointment.client_id == client_id,
                    Appointment.cancelled_at.is_(None),
                    Appointment.starts_at > now,
                )
                .order_by(Appointment.starts_at, Appointment.id)
                .limit(50)
            )
        ).all()
        soon_imrs = [r for r in rows if r.kind == AppointmentKind.IMRS and r.starts_at - now <= PREFER_IMRS_WITHIN]
        return soon_imrs[0] if soon_imrs else (rows[0] if rows else None)

    async def runs_since(self, client_id: int, since: datetime) -> Sequence[ExerciseRun]:
        return (
            await self.session.scalars(
                select(ExerciseRun).where(ExerciseRun.client_id == client_id, ExerciseRun.started_at >= since)
            )
        ).all()


def _aware(moment: datetime) -> datetime:
    """SQLite hands back naive UTC datetimes."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


class CheckInService:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        outbox: OutboxService,
        *,
        listeners: Sequence[Listener] = (),
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._sessions = sessions
        self._outbox = outbox
        self.listeners: list[Listener] = list(listeners)
        self.clock = clock

    # -- who --------------------------------------------------------------------------------

    @staticmethod
    async def _client(session: AsyncSession, actor: Identity) -> Person:
        role, person = await current_person(session, actor)
        if role is not Role.CLIENT or person is None:
            raise NotAllowed("role")
        return person

    async def _open(self, session: AsyncSession, client: Person) -> CheckIn:
        row = await CheckInRepository(session).open_of(client.id)
        if row is None:
            raise NoCheckIn()
        return row

    # -- reading ----------------------------------------------------------------------------

    async def _view(self, session: AsyncSession, row: CheckIn, *, resumed: bool = False) -> CheckInView:
        ahead = None
        if row.appointment_id is not None:
            appointment = await session.get(Appointment, row.appointment_id)
            if appointment is not None:
                ahead = AppointmentAhead(appointment.id, AppointmentKind(appointment.kind), _aware(appointment.starts_at))
        return CheckInView(
            row.id, CheckInState(row.state), row.step or QUESTIONS[0], Answers.from_json(row.answers), ahead, resumed
        )

    def _out_of_date(self, appointment: Appointment | None, row: CheckIn, now: datetime) -> bool:
        if row.appointment_id is None:
            return False
        return appointment is None or appointment.cancelled_at is not None or _aware(appointment.starts_at) <= now

    async def current(self, actor: Identity) -> CheckInView | None:
        """The client's open check-in, or None (one out of date is not shown)."""
        now = self.clock()
        async with self._sessions() as session:
            client = await self._client(session, actor)
            row = await CheckInRepository(session).open_of(client.id)
            if row is None:
                return None
            appointment = await session.get(Appointment, row.appointment_id) if row.appointment_id else None
            if self._out_of_date(appointment, row, now):
                return None
            return await self._view(session, row, resumed=True)

    # -- beginning ----------------------------------------------------------------------------

    async def start(self, actor: Identity, *, fresh: bool = False) -> CheckInView:
        """The client's open check-in (``resumed``), or a new one. ``fresh``: the open one is
        deleted first (start again). One out of date is deleted too."""
        now = self.clock()
        async with self._sessions.begin() as session:
            client = await self._client(session, actor)
            repository = CheckInRepository(session)
            row = await repository.open_of(client.id)
            if row is not None:
                appointment = await session.get(Appointment, row.appointment_id) if row.appointment_id else None
                if fresh or self._out_of_date(appointment, row, now):
                    await session.delete(row)
                    await session.flush()
                else:
                    return await self._view(session, row, resumed=True)
            appointment = await repository.next_appointment(client.id, now)
            row = await repository.add(
                CheckIn(
                    client_id=client.id,
                    appointment_id=appointment.id if appointment else None,
                    state=CheckInState.DRAFT,
                    step=QUESTIONS[0],
                    answers=Answers.empty().to_json(),
                    started_at=now,
                    updated_at=now,
                )
            )
            await self._audit(session, actor, "checkin.started", row)
            return await self._view(session, row)

    # -- answering ------------------------------------------------------------------------------

    async def answer(self, actor: Identity, question: str, value: object, *, advance: bool = True) -> CheckInView:
        """Store one answer (InvalidAnswer: not an answer to that question; nothing changes).
        ``advance``: go on to the first question not answered yet (or the review); without
        it the step stays (the stressors' toggles)."""
        async with self._sessions.begin() as session:
            client = await self._client(session, actor)
            row = await self._open(session, client)
            answers = Answers.from_json(row.answers).with_answer(question, value)
            row.answers = answers.to_json()
            if advance:
                row.step = answers.next_question() or REVIEW
            else:
                row.step = question
            row.updated_at = self.clock()
            return await self._view(session, row)

    async def go_to(self, actor: Identity, step: str) -> CheckInView:
        """Ask ``step`` next (a question, to change its answer from the review; or REVIEW)."""
        if step != REVIEW and step not in QUESTIONS:
            raise InvalidAnswer(step)
        async with self._sessions.begin() as session:
            client = await self._client(session, actor)
            row = await self._open(session, client)
            row.step, row.updated_at = step, self.clock()
            return await self._view(session, row)

    async def back(self, actor: Identity, question: str) -> CheckInView:
        """Back from ``question`` (or the review): the question before it is asked again, its
        answer kept until it is changed. At the first question Back stays there."""
        previous = QUESTIONS[-1] if question == REVIEW else previous_question(question)
        return await self.go_to(actor, previous or QUESTIONS[0])

    async def save_for_later(self, actor: Identity) -> CheckInView:
        async with self._sessions.begin() as session:
            client = await self._client(session, actor)
            row = await self._open(session, client)
            row.state, row.updated_at = CheckInState.SAVED, self.clock()
            await self._audit(session, actor, "checkin.saved", row)
            return await self._view(session, row)

    async def discard(self, actor: Identity) -> bool:
        """/cancel: a draft is deleted (True); a saved check-in, or none, is kept (False)."""
        async with self._sessions.begin() as session:
            client = await self._client(session, actor)
            row = await CheckInRepository(session).open_of(client.id)
            if row is None or row.state != CheckInState.DRAFT:
                return False
            await session.delete(row)
            return True

    # -- completing -----------------------------------------------------------------------------

    async def complete(self, actor: Identity) -> CheckInView:
        """Send it: every question must be answered (InvalidAnswer names the first that is
        not). One transaction with the outbox withdrawal and every listener."""
        now = self.clock()
        async with self._sessions.begin() as session:
            client = await self._client(session, actor)
            row = await self._open(session, client)
            answers = Answers.from_json(row.answers)
            missing = answers.next_question()
            if missing is not None:
                raise InvalidAnswer(missing)
            appointment = await session.get(Appointment, row.appointment_id) if row.appointment_id else None
            if self._out_of_date(appointment, row, now) or row.appointment_id is None:
                better = await CheckInRepository(session).next_appointment(client.id, now)
                row.appointment_id = better.id if better else None
            link = await LinkRepository(session).active_for_client(client.id)
            row.therapist_id = link.therapist_id if link is not None else None
            row.state, row.step, row.completed_at, row.updated_at = CheckInState.COMPLETED, REVIEW, now, now
            await session.flush()
            if row.appointment_id is not None:
                await self._outbox.cancel_pending(key_prefix=f"checkin:{row.appointment_id}:", session=session)
            await self._audit(session, actor, "checkin.completed", row)
            for listener in self.listeners:
                await listener(session, row)
            return await self._view(session, row)

    async def prompt_is_theirs(self, actor: Identity, outbox_id: int) -> bool:
        """Whether outbox row ``outbox_id`` is a check-in prompt (or its reminder) sent to
        the actor (the button under it: its signed payload names the row)."""
        async with self._sessions() as session:
            client = await self._client(session, actor)
            row = await session.get(OutboxMessage, outbox_id)
            return row is not None and row.recipient_id == client.id and row.kind == OutboxKind.CHECK_IN_PROMPT

    # -- the practice log -------------------------------------------------------------------------

    async def suggestions(self, actor: Identity) -> PracticeSuggestion:
        """Practice in the last 7 days: distinct days in the client's zone, and how much it
        helped judging by the average drop in distress (rated before and after)."""
        now = self.clock()
        async with self._sessions() as session:
            client = await self._client(session, actor)
            runs = await CheckInRepository(session).runs_since(client.id, now - PRACTICE_WINDOW)
            zone = ZoneInfo(client.timezone or "UTC")
            days = {_aware(run.started_at).astimezone(zone).date() for run in runs}
            drops = [
                int(run.distress_before) - int(run.distress_after)
                for run in runs
                if run.distress_before is not None and run.distress_after is not None
            ]
        average = sum(drops) / len(drops) if drops else None
        count = min(len(days), 7)
        return PracticeSuggestion(count, help_from_drop(count, average), average)

    @staticmethod
    async def _audit(session: AsyncSession, actor: Identity, action: str, row: CheckIn) -> None:
        await AuditRepository(session).record(
            actor_telegram_id=actor.telegram_id,
            actor_role=Role.CLIENT.value,
            action=action,
            subject_person_id=row.client_id,
            detail={"check_in_id": row.id},
        )
