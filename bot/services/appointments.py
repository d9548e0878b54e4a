"""Appointments (issue 13): a therapist, or staff, creates, moves and cancels a client's
appointments; the time is given in the therapist's own zone and stored in UTC.

Only the service layer exists so far: no handlers, reminders or check-in prompts yet.

* **Times.** ``parse_local`` reads a local date and time in a fixed set of numeric formats
  (``2027-03-28 14:30``, ``28-03-2027 14:30``, ``28/03/2027 14:30``; 24-hour clock), never
  guessing: a text it cannot read, a time that does not exist in the zone (the hour skipped
  when DST begins), a time that exists twice (the hour repeated when DST ends), a time in
  the past, or one further ahead than ``HORIZON`` is refused with a reason. Strict formats
  rather than a fuzzy parser (dateutil): "03-04" must not silently become March or April.
* **Overlaps.** An appointment may not overlap (half-open intervals: one may start when the
  previous ends) another one of the same therapist or of the same client that is not
  cancelled. The therapist's row is locked (``FOR UPDATE`` on PostgreSQL) while checking, so
  two requests at once cannot both pass the check.
* **Who.** A therapist manages the appointments of their own linked clients; staff and admins
  those of any linked client (the appointment is with the client's current therapist).
  Clients read their own. Checked against the database at the moment of use; audited
  (``appointment.created`` / ``.moved`` / ``.cancelled``, ids only).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.db.models import Appointment, AppointmentKind, Person, Role
from bot.db.repositories import AuditRepository, LinkRepository
from bot.db.types import utcnow
from bot.services.invites import NotAllowed, current_person
from bot.services.people import Identity

#: The formats a date and time may be typed in (numeric only: no month names to translate).
FORMATS = ("%Y-%m-%d %H:%M", "%d-%m-%Y %H:%M", "%d/%m/%Y %H:%M", "%d.%m.%Y %H:%M", "%Y-%m-%dT%H:%M")
HORIZON = timedelta(days=2 * 366)  # further ahead is more likely a typo in the year
DEFAULT_DURATION = timedelta(minutes=60)
MAX_DURATION = timedelta(hours=8)


class AppointmentError(ValueError):
    """Not possible as asked. ``reason``: ``unparseable``, ``nonexistent`` (skipped by a DST
    change), ``ambiguous`` (repeated by a DST change), ``past``, ``too_far``, ``duration``,
    ``overlap`` (``conflict`` is the other appointment), ``not_a_client``, ``no_therapist``,
    ``cancelled``, ``not_found``."""

    def __init__(self, reason: str, conflict: AppointmentView | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.conflict = conflict


def parse_local(text: str, zone: str, *, now: datetime, horizon: timedelta = HORIZON) -> datetime:
    """The moment (aware UTC) a person means by a local date and time ``text`` in ``zone``.
    Raises AppointmentError (see the module's docstring for what is refused)."""
    tidy = " ".join((text or "").split())
    naive = None
    for fmt in FORMATS:
        try:
            naive = datetime.strptime(tidy, fmt)
            break
        except ValueError:
            continue
    if naive is None:
        raise AppointmentError("unparseable")
    tz = ZoneInfo(zone)
    first, second = naive.replace(tzinfo=tz, fold=0), naive.replace(tzinfo=tz, fold=1)
    if first.astimezone(UTC).astimezone(tz).replace(tzinfo=None) != naive:
        raise AppointmentError("nonexistent")  # the clocks jumped over it
    if first.utcoffset() != second.utcoffset():
        raise AppointmentError("ambiguous")  # the clocks showed it twice
    moment = first.astimezone(UTC)
    if moment <= now:
        raise AppointmentError("past")
    if moment - now > horizon:
        raise AppointmentError("too_far")
    return moment


@dataclass(frozen=True)
class AppointmentView:
    id: int
    therapist_id: int
    client_id: int
    kind: AppointmentKind
    starts_at: datetime  # UTC
    ends_at: datetime  # UTC
    timezone: str  # the therapist's zone it was given in
    cancelled_at: datetime | None

    def local_start(self, zone: str | None = None) -> datetime:
        """The start in ``zone`` (default: the therapist's zone)."""
        return self.starts_at.astimezone(ZoneInfo(zone or self.timezone))


def _view(row: Appointment) -> AppointmentView:
    return AppointmentView(
        row.id, row.therapist_id, row.client_id, AppointmentKind(row.kind), row.starts_at,
        row.ends_at, row.timezone, row.cancelled_at,
    )


class AppointmentRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, appointment: Appointment) -> Appointment:
        self.session.add(appointment)
        await self.session.flush()
        return appointment

    async def get(self, appointment_id: int) -> Appointment | None:
        return await self.session.get(Appointment, appointment_id)

    async def overlapping(
        self, *, therapist_id: int, client_id: int, starts_at: datetime, ends_at: datetime, excluding: int | None = None
    ) -> Appointment | None:
        """The first appointment not cancelled of this therapist or this client that overlaps."""
        query = (
            select(Appointment)
            .where(
                or_(Appointment.therapist_id == therapist_id, Appointment.client_id == client_id),
                Appointment.cancelled_at.is_(None),
                Appointment.starts_at < ends_at,
                Appointment.ends_at > starts_at,
            )
            .order_by(Appointment.starts_at)
            .limit(1)
        )
        if excluding is not None:
            query = query.where(Appointment.id != excluding)
        return await self.session.scalar(query)

    async def upcoming(self, *, now: datetime, therapist_id: int | None = None, client_id: int | None = None) -> Sequence[Appointment]:
        query = select(Appointment).where(Appointment.cancelled_at.is_(None), Appointment.ends_at > now)
        if therapist_id is not None:
            query = query.where(Appointment.therapist_id == therapist_id)
        if client_id is not None:
            query = query.where(Appointment.client_id == client_id)
        return (await self.session.scalars(query.order_by(Appointment.starts_at, Appointment.id))).all()

    async def lock_person(self, person_id: int) -> Person | None:
        """The person's row, locked until the transaction ends (PostgreSQL; SQLite has one writer)."""
        return await self.session.scalar(select(Person).where(Person.id == person_id).with_for_update())


class AppointmentService:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        clock: Callable[[], datetime] = utcnow,
        default_duration: timedelta = DEFAULT_DURATION,
    ) -> None:
        self._sessions = sessions
        self.clock = clock
        self.default_duration = default_duration

    async def _manager(self, session: AsyncSession, actor: Identity, client_id: int) -> tuple[Role, Person, int]:
        """(the actor's role, the client's therapist locked, the actor's person id) when the
        actor may manage this client's appointments now; else NotAllowed / AppointmentError."""
        role, person = await current_person(session, actor)
        if role not in (Role.THERAPIST, Role.STAFF, Role.ADMIN) or person is None:
            raise NotAllowed("role")
        client = await session.get(Person, client_id)
        if client is None or Role(client.role) is not Role.CLIENT or not client.active:
            raise AppointmentError("not_a_client")
        link = await LinkRepository(session).active_for_client(client_id)
        if role is Role.THERAPIST and (link is None or link.therapist_id != person.id):
            raise NotAllowed("ownership")
        if link is None:
            raise AppointmentError("no_therapist")
        therapist = await AppointmentRepository(session).lock_person(link.therapist_id)
        assert therapist is not None  # the link's foreign key
        return role, therapist, person.id

    async def _free(
        self, session: AsyncSession, therapist_id: int, client_id: int, starts_at: datetime, ends_at: datetime,
        excluding: int | None = None,
    ) -> None:
        clash = await AppointmentRepository(session).overlapping(
            therapist_id=therapist_id, client_id=client_id, starts_at=starts_at, ends_at=ends_at, excluding=excluding
        )
        if clash is not None:
            raise AppointmentError("overlap", _view(clash))

    async def create(
        self,
        actor: Identity,
        client_id: int,
        when: str,
        kind: AppointmentKind,
        *,
        duration: timedelta | None = None,
    ) -> AppointmentView:
        """A new appointment at the local time ``when`` in the therapist's zone."""
        length = duration or self.default_duration
        if not timedelta(0) < length <= MAX_DURATION:
            raise AppointmentError("duration")
        now = self.clock()
        async with self._sessions.begin() as session:
            role, therapist, actor_id = await self._manager(session, actor, client_id)
            starts_at = parse_local(when, therapist.timezone, now=now)
            await self._free(session, therapist.id, client_id, starts_at, starts_at + length)
            row = await AppointmentRepository(session).add(
                Appointment(
                    therapist_id=therapist.id,
                    client_id=client_id,
                    kind=kind,
                    starts_at=starts_at,
                    ends_at=starts_at + length,
                    timezone=therapist.timezone,
                    created_by_id=actor_id,
                    created_at=now,
                    updated_at=now,
                )
            )
            await self._audit(session, actor, role, "appointment.created", row)
            return _view(row)

    async def _editable(self, session: AsyncSession, actor: Identity, appointment_id: int) -> tuple[Role, Person, Appointment]:
        row = await AppointmentRepository(session).get(appointment_id)
        if row is None:
            raise AppointmentError("not_found")
        role, therapist, _ = await self._manager(session, actor, row.client_id)
        if role is Role.THERAPIST and row.therapist_id != therapist.id:
            raise NotAllowed("ownership")  # made with the client's earlier therapist
        if row.cancelled_at is not None:
            raise AppointmentError("cancelled")
        if row.starts_at <= self.clock():
            raise AppointmentError("past")
        return role, therapist, row

    async def move(self, actor: Identity, appointment_id: int, when: str) -> AppointmentView:
        """The same appointment (kind, length) at another local time in the therapist's zone."""
        now = self.clock()
        async with self._sessions.begin() as session:
            role, therapist, row = await self._editable(session, actor, appointment_id)
            starts_at = parse_local(when, therapist.timezone, now=now)
            length = row.ends_at - row.starts_at
            await self._free(session, row.therapist_id, row.client_id, starts_at, starts_at + length, excluding=row.id)
            row.starts_at, row.ends_at, row.timezone, row.updated_at = starts_at, starts_at + length, therapist.timezone, now
            await session.flush()
            await self._audit(session, actor, role, "appointment.moved", row)
            return _view(row)

    async def cancel(self, actor: Identity, appointment_id: int) -> AppointmentView:
        now = self.clock()
        async with self._sessions.begin() as session:
            role, _, row = await self._editable(session, actor, appointment_id)
            row.cancelled_at, row.updated_at = now, now
            await session.flush()
            await self._audit(session, actor, role, "appointment.cancelled", row)
            return _view(row)

    async def upcoming(self, actor: Identity) -> list[AppointmentView]:
        """A client's own coming appointments, or a therapist's (all their clients'), soonest first."""
        now = self.clock()
        async with self._sessions() as session:
            role, person = await current_person(session, actor)
            repository = AppointmentRepository(session)
            if role is Role.CLIENT and person is not None:
                rows = await repository.upcoming(now=now, client_id=person.id)
            elif role is Role.THERAPIST and person is not None:
                rows = await repository.upcoming(now=now, therapist_id=person.id)
            else:
                raise NotAllowed("role")
            return [_view(row) for row in rows]

    @staticmethod
    async def _audit(session: AsyncSession, actor: Identity, role: Role, action: str, row: Appointment) -> None:
        await AuditRepository(session).record(
            actor_telegram_id=actor.telegram_id,
            actor_role=role.value,
            action=action,
            subject_person_id=row.client_id,
            detail={"appointment_id": row.id},
        )
