"""Appointments (issue 13): a therapist, or staff, creates, moves and cancels a client's
appointments; the time is given in the therapist's own zone and stored in UTC.

The conversation is handlers/appointments.py (``/appointments``).

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
* **What the client receives** (bot.delivery, the outbox), queued in the same transaction as
  the change, so it is queued if and only if the change commits:

  - a notice that the appointment was made, moved or cancelled
    (``appt-notice:{id}:{what}:{start}``);
  - reminders ``Planning.reminder_hours`` before the start (``APPOINTMENT_REMINDER_HOURS``,
    default 48 and 2; ``appt:{id}:{start}:{hours}h``), with "I'll be there" and "I need to
    reschedule" under them (bot.delivery.buttons); a reminder whose time has passed is not
    queued;
  - before an ImRS appointment, the check-in prompt ``CHECKIN_PROMPT_HOURS`` before the start
    (now, when that has passed; ``checkin:{id}:{start}:prompt``) and one reminder
    ``CHECKIN_REMINDER_AFTER_HOURS`` after it if that is at least an hour before the start
    (``checkin:{id}:{start}:reminder``). The check-in conversation withdraws the
    ``checkin:{id}:`` rows once the check-in is done.

  ``{start}`` is the start in UTC (``%Y%m%dT%H%MZ``). Moving withdraws the pending rows of the
  appointment (key prefixes ``appt:{id}:`` and ``checkin:{id}:``) and plans new ones;
  cancelling withdraws them. Times in these messages are parameters (``moment``), shown in
  the client's zone and language when they are sent (bot.delivery.rendering). When a
  client's link with their therapist ends, their coming appointments with that therapist are
  cancelled and withdrawn in the same transaction (``end_with_therapist``).
  Consent, erasure and deactivation are checked by the outbox at send time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.content import Content
from bot.db.delivery_models import OutboxKind, OutboxMessage
from bot.db.models import Appointment, AppointmentKind, AppointmentResponse, Person, Role
from bot.db.repositories import AuditRepository, LinkRepository, PeopleRepository
from bot.db.types import utcnow
from bot.delivery.buttons import APPOINTMENT_REMINDER_KEY
from bot.delivery.outbox import OutboxService, PlainMessage
from bot.delivery.rendering import content_text, local_moment, moment
from bot.services.invites import NotAllowed, current_person
from bot.services.people import Identity

#: The formats a date and time may be typed in (numeric only: no month names to translate).
FORMATS = ("%Y-%m-%d %H:%M", "%d-%m-%Y %H:%M", "%d/%m/%Y %H:%M", "%d.%m.%Y %H:%M", "%Y-%m-%dT%H:%M")
HORIZON = timedelta(days=2 * 366)  # further ahead is more likely a typo in the year
DEFAULT_DURATION = timedelta(minutes=60)
MAX_DURATION = timedelta(hours=8)
NOTICE_VALID = timedelta(days=7)  # as bot.services.notices: a notice not sent within a week is dropped
CHECKIN_PROMPT_KEY = "outbox.check_in_prompt"
CHECKIN_REMINDER_KEY = "outbox.check_in_reminder"
#: The notices to the client, by what happened (content keys).
CLIENT_NOTICES = {
    "created": "outbox.appointment_created",
    "moved": "outbox.appointment_moved",
    "cancelled": "outbox.appointment_cancelled",
}


@dataclass(frozen=True)
class Planning:
    """When the outbox messages around an appointment are due (from the settings)."""

    reminder_hours: tuple[int, ...] = (48, 2)
    checkin_prompt: timedelta = timedelta(hours=24)
    checkin_reminder_after: timedelta = timedelta(hours=12)
    checkin_reminder_margin: timedelta = timedelta(hours=1)  # the reminder is at least this long before the start


def stamp(starts_at: datetime) -> str:
    """The start as it appears in idempotency keys (UTC, to the minute)."""
    return starts_at.astimezone(UTC).strftime("%Y%m%dT%H%MZ")


def key_prefixes(appointment_id: int) -> tuple[str, str]:
    """The key prefixes of every outbox row planned for an appointment (reminders; check-in)."""
    return f"appt:{appointment_id}:", f"checkin:{appointment_id}:"


class AppointmentError(ValueError):
    """Not possible as asked. ``reason``: ``unparseable``, ``nonexistent`` (skipped by a DST
    change), ``ambiguous`` (repeated by a DST change), ``past``, ``too_far``, ``duration``,
    ``overlap`` (``conflict`` is the other appointment), ``not_a_client``, ``no_therapist``,
    ``cancelled``, ``not_found``."""

    def __init__(self, reason: str, conflict: AppointmentView | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.conflict = conflict


def parse_naive(text: str) -> datetime | None:
    """The local date and time typed (no zone), in one of ``FORMATS``; None if none fits."""
    tidy = " ".join((text or "").split())
    for fmt in FORMATS:
        try:
            return datetime.strptime(tidy, fmt)
        except ValueError:
            continue
    return None


def parse_local(text: str, zone: str, *, now: datetime, horizon: timedelta = HORIZON) -> datetime:
    """The moment (aware UTC) a person means by a local date and time ``text`` in ``zone``.
    Raises AppointmentError (see the module's docstring for what is refused)."""
    naive = parse_naive(text)
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
    client_response: AppointmentResponse | None = None
    client_alias: str | None = None  # filled in for the therapist's and staff's lists
    therapist_name: str | None = None  # filled in for the client's list

    def local_start(self, zone: str | None = None) -> datetime:
        """The start in ``zone`` (default: the therapist's zone)."""
        return self.starts_at.astimezone(ZoneInfo(zone or self.timezone))


def _view(row: Appointment, *, alias: str | None = None, therapist_name: str | None = None) -> AppointmentView:
    return AppointmentView(
        row.id, row.therapist_id, row.client_id, AppointmentKind(row.kind), row.starts_at,
        row.ends_at, row.timezone, row.cancelled_at,
        AppointmentResponse(row.client_response) if row.client_response else None,
        alias, therapist_name,
    )


@dataclass(frozen=True)
class Booking:
    """Whom a new appointment is for, and the zone its time is typed in (the therapist's)."""

    client_id: int
    alias: str | None
    therapist_id: int
    zone: str


@dataclass(frozen=True)
class Choice:
    """A person to choose (a client by alias, a therapist by display name): no other data."""

    person_id: int
    name: str | None


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

    async def coming_with(self, *, client_id: int, therapist_id: int, now: datetime) -> Sequence[Appointment]:
        """The client's appointments with this therapist that have not started, not cancelled."""
        query = select(Appointment).where(
            Appointment.client_id == client_id,
            Appointment.therapist_id == therapist_id,
            Appointment.cancelled_at.is_(None),
            Appointment.starts_at > now,
        )
        return (await self.session.scalars(query)).all()

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
        outbox: OutboxService | None = None,
        content: Content | None = None,
        planning: Planning = Planning(),
    ) -> None:
        self._sessions = sessions
        self.clock = clock
        self.default_duration = default_duration
        self._outbox = outbox or OutboxService(sessions, clock=clock)
        self._content = content or Content()
        self.planning = planning

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
            await self._plan(session, row, now)
            await self._tell_client(session, row, "created", now)
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
            await self._withdraw(session, row)
            row.starts_at, row.ends_at, row.timezone, row.updated_at = starts_at, starts_at + length, therapist.timezone, now
            row.client_response, row.responded_at = None, None  # an answer about the old time
            await session.flush()
            await self._audit(session, actor, role, "appointment.moved", row)
            await self._plan(session, row, now)
            await self._tell_client(session, row, "moved", now)
            return _view(row)

    async def cancel(self, actor: Identity, appointment_id: int) -> AppointmentView:
        now = self.clock()
        async with self._sessions.begin() as session:
            role, _, row = await self._editable(session, actor, appointment_id)
            row.cancelled_at, row.updated_at = now, now
            await session.flush()
            await self._audit(session, actor, role, "appointment.cancelled", row)
            await self._withdraw(session, row)
            await self._tell_client(session, row, "cancelled", now)
            return _view(row)

    async def upcoming(self, actor: Identity, therapist_id: int | None = None) -> list[AppointmentView]:
        """Coming appointments, soonest first: a client's own (with their therapist's display
        name), a therapist's (all their clients', with aliases), or, for staff and admins, those
        of the therapist ``therapist_id`` (with aliases; nothing clinical exists here)."""
        now = self.clock()
        async with self._sessions() as session:
            role, person = await current_person(session, actor)
            repository, people = AppointmentRepository(session), PeopleRepository(session)
            if role is Role.CLIENT and person is not None:
                rows = await repository.upcoming(now=now, client_id=person.id)
                names: dict[int, str | None] = {}
                for row in rows:
                    if row.therapist_id not in names:
                        therapist = await people.get(row.therapist_id)
                        names[row.therapist_id] = therapist.display_name if therapist else None
                return [_view(row, therapist_name=names[row.therapist_id]) for row in rows]
            if role is Role.THERAPIST and person is not None:
                rows = await repository.upcoming(now=now, therapist_id=person.id)
            elif role in (Role.STAFF, Role.ADMIN) and therapist_id is not None:
                rows = await repository.upcoming(now=now, therapist_id=therapist_id)
            else:
                raise NotAllowed("role")
            views = []
            for row in rows:
                client = await people.get(row.client_id)
                views.append(_view(row, alias=client.alias if client else None))
            return views

    async def get(self, actor: Identity, appointment_id: int) -> AppointmentView:
        """One appointment the actor may move or cancel now (with the client's alias)."""
        async with self._sessions() as session:
            _role, _therapist, row = await self._editable(session, actor, appointment_id)
            client = await session.get(Person, row.client_id)
            return _view(row, alias=client.alias if client else None)

    async def booking(self, actor: Identity, client_id: int) -> Booking:
        """The actor may make an appointment for this client now: with whom, in which zone."""
        async with self._sessions() as session:
            _role, therapist, _ = await self._manager(session, actor, client_id)
            client = await session.get(Person, client_id)
            return Booking(client_id, client.alias if client else None, therapist.id, therapist.timezone)

    async def clients(self, actor: Identity, therapist_id: int | None = None) -> list[Choice]:
        """The clients the actor may make appointments for: a therapist's own linked clients;
        for staff and admins, those of the therapist ``therapist_id``."""
        async with self._sessions() as session:
            role, person = await current_person(session, actor)
            if role is Role.THERAPIST and person is not None:
                therapist_id = person.id
            elif role not in (Role.STAFF, Role.ADMIN) or therapist_id is None:
                raise NotAllowed("role")
            return [
                Choice(client.id, client.alias)
                for _link, client in await LinkRepository(session).clients_of(therapist_id)
                if client.active
            ]

    async def therapists(self, actor: Identity) -> list[Choice]:
        """Staff and admins: the active therapists whose clients' appointments they manage."""
        async with self._sessions() as session:
            role, _ = await current_person(session, actor)
            if role not in (Role.STAFF, Role.ADMIN):
                raise NotAllowed("role")
            people = await PeopleRepository(session).with_role(Role.THERAPIST)
            return [Choice(p.id, p.display_name) for p in people if p.active]

    async def respond(self, actor: Identity, message_id: int, response: AppointmentResponse) -> AppointmentView:
        """The client's answer under a delivered reminder (outbox row ``message_id``): recorded
        on the appointment; "I need to reschedule" also tells the therapist through the outbox
        (the client's alias and the time; once per appointment time). Raises NotAllowed when
        the message or the appointment is not the actor's; AppointmentError ``not_found``,
        ``cancelled``, ``past`` or ``moved`` (the reminder was for an earlier time)."""
        now = self.clock()
        async with self._sessions.begin() as session:
            role, person = await current_person(session, actor)
            if role is not Role.CLIENT or person is None:
                raise NotAllowed("role")
            message = await session.get(OutboxMessage, message_id)
            if message is None or message.recipient_id != person.id:
                raise NotAllowed("ownership")
            appointment_id = (message.params or {}).get("appointment_id")
            row = await AppointmentRepository(session).get(int(appointment_id)) if appointment_id else None
            if row is None:
                raise AppointmentError("not_found")
            if row.client_id != person.id:
                raise NotAllowed("ownership")
            if row.cancelled_at is not None:
                raise AppointmentError("cancelled")
            if row.starts_at <= now:
                raise AppointmentError("past")
            if not message.idempotency_key.startswith(f"appt:{row.id}:{stamp(row.starts_at)}:"):
                raise AppointmentError("moved")
            row.client_response, row.responded_at = response, now
            await session.flush()
            if response is AppointmentResponse.RESCHEDULE:
                await self._tell_therapist_reschedule(session, row, person, now)
            await AuditRepository(session).record(
                actor_telegram_id=actor.telegram_id,
                actor_role=Role.CLIENT.value,
                action=f"appointment.{response.value}",
                subject_person_id=person.id,
                detail={"appointment_id": row.id},
            )
            return _view(row)

    async def end_with_therapist(self, session: AsyncSession, client_id: int, therapist_id: int) -> int:
        """The link between this client and therapist ends (in the caller's transaction):
        their coming appointments are cancelled and everything queued for them withdrawn.
        How many were cancelled."""
        now = self.clock()
        rows = await AppointmentRepository(session).coming_with(client_id=client_id, therapist_id=therapist_id, now=now)
        for row in rows:
            row.cancelled_at, row.updated_at = now, now
            await self._withdraw(session, row)
        await session.flush()
        return len(rows)

    # -- what the outbox sends ---------------------------------------------------------------

    async def _plan(self, session: AsyncSession, row: Appointment, now: datetime) -> None:
        """Queue the reminders (and, before an ImRS appointment, the check-in prompt and its
        reminder) for the appointment as it is now."""
        start, at = row.starts_at, stamp(row.starts_at)
        when = moment(start)
        kind = content_text(f"appointments.kinds.{AppointmentKind(row.kind).value}")
        messages = [
            PlainMessage(
                recipient_id=row.client_id,
                kind=OutboxKind.NOTICE,
                idempotency_key=f"appt:{row.id}:{at}:{hours}h",
                due_at=start - timedelta(hours=hours),
                content_key=APPOINTMENT_REMINDER_KEY,
                params={"appointment_id": row.id, "kind": kind, "when": when},
                expires_at=start,
            )
            for hours in self.planning.reminder_hours
            if start - timedelta(hours=hours) > now
        ]
        if AppointmentKind(row.kind) is AppointmentKind.IMRS:
            prompt_due = max(start - self.planning.checkin_prompt, now)
            params = {"appointment_id": row.id, "day": when}
            messages.append(PlainMessage(
                recipient_id=row.client_id, kind=OutboxKind.CHECK_IN_PROMPT,
                idempotency_key=f"checkin:{row.id}:{at}:prompt", due_at=prompt_due,
                content_key=CHECKIN_PROMPT_KEY, params=params, expires_at=start,
            ))
            reminder_due = prompt_due + self.planning.checkin_reminder_after
            if reminder_due <= start - self.planning.checkin_reminder_margin:
                messages.append(PlainMessage(
                    recipient_id=row.client_id, kind=OutboxKind.CHECK_IN_PROMPT,
                    idempotency_key=f"checkin:{row.id}:{at}:reminder", due_at=reminder_due,
                    content_key=CHECKIN_REMINDER_KEY, params=params, expires_at=start,
                ))
        await self._outbox.insert_plain(session, messages)

    async def _withdraw(self, session: AsyncSession, row: Appointment) -> None:
        for prefix in key_prefixes(row.id):
            await self._outbox.cancel_pending(key_prefix=prefix, session=session)

    async def _tell_client(self, session: AsyncSession, row: Appointment, what: str, now: datetime) -> None:
        """The client hears that an appointment was made, moved or cancelled (its time shown
        in their zone when sent)."""
        expires = now + NOTICE_VALID
        if what != "cancelled":
            expires = min(expires, row.starts_at)
        await self._outbox.insert_plain(session, [PlainMessage(
            recipient_id=row.client_id,
            kind=OutboxKind.NOTICE,
            idempotency_key=f"appt-notice:{row.id}:{what}:{stamp(row.starts_at)}",
            due_at=now,
            content_key=CLIENT_NOTICES[what],
            params={
                "appointment_id": row.id,
                "kind": content_text(f"appointments.kinds.{AppointmentKind(row.kind).value}"),
                "when": moment(row.starts_at),
            },
            expires_at=expires,
        )])

    async def _tell_therapist_reschedule(self, session: AsyncSession, row: Appointment, client: Person, now: datetime) -> None:
        """The therapist hears that the client asked to reschedule: the alias and the time in
        the therapist's zone, nothing clinical; stored encrypted (the alias)."""
        therapist = await session.get(Person, row.therapist_id)
        if therapist is None or not therapist.active:
            return
        language = therapist.language
        name = client.alias or self._content.text("appointments.no_alias", language)
        text = self._content.text(
            "appointments.reschedule_notice", language,
            alias=name, when=local_moment(self._content, language, therapist.timezone, row.starts_at),
            kind=self._content.text(f"appointments.kinds.{AppointmentKind(row.kind).value}", language),
        )
        await self._outbox.add_text(
            session, therapist.id, kind=OutboxKind.NOTICE,
            idempotency_key=f"appt-reschedule:{row.id}:{stamp(row.starts_at)}",
            text=text, expires_at=min(now + NOTICE_VALID, row.starts_at), subject_id=client.id,
        )

    @staticmethod
    async def _audit(session: AsyncSession, actor: Identity, role: Role, action: str, row: Appointment) -> None:
        await AuditRepository(session).record(
            actor_telegram_id=actor.telegram_id,
            actor_role=role.value,
            action=action,
            subject_person_id=row.client_id,
            detail={"appointment_id": row.id},
        )
