"""The practice side: therapists and staff joining, a therapist's clients, staff managing
therapists.

Every method takes the actor's :class:`Identity` and checks, inside its own transaction,
the actor's *current* role (``current_person``) and their ownership of the record:
a therapist reaches only clients they are actively linked to; staff and admins see
therapists with counts only, never a client's alias or anything clinical. A refusal
raises :class:`NotAllowed` (``reason`` "role" or "ownership") and changes nothing.

Notices to other people (a client told their link ended, ...) are queued in the same
transaction as the change (bot.services.notices), keyed by the links the change ends or
starts. Methods still return :class:`Recipient` values (a Telegram id and a language) for
what the handler says itself, e.g. to a therapist just deactivated, whom the outbox no
longer serves.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.crypto.fields import FieldCrypto
from bot.db.models import Appointment, Invite, InviteKind, Person, Role, TherapistClientLink
from bot.db.repositories import (
    AuditRepository,
    InviteRepository,
    LinkRepository,
    PeopleRepository,
)
from bot.services.appointments import AppointmentService
from bot.services.invites import InviteService, InviteStatus, NotAllowed, current_person, status_of
from bot.services.names import InvalidAlias, InvalidDisplayName, clean_alias, clean_display_name
from bot.services.notices import Notices
from bot.services.people import Identity
from bot.services.summaries import SummaryService

STAFF_ROLES = frozenset({Role.STAFF, Role.ADMIN})
#: The role each practice invite gives.
ROLE_OF_INVITE = {InviteKind.THERAPIST: Role.THERAPIST, InviteKind.STAFF: Role.STAFF}


class JoinRefused(Exception):
    """Joining through an invite did not happen (nothing was stored).

    ``reason``: an :class:`InviteStatus` value (``"expired"``, ``"used"``, ...) or
    ``"enrolled"`` when the person already has a role here.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Recipient:
    """Someone the bot should tell about a change, in their language."""

    person_id: int
    telegram_id: int
    language: str


@dataclass(frozen=True)
class ClientSummary:
    """One row of a therapist's /clients.

    ``next_appointment`` (the next one not cancelled), ``last_check_in`` (when the latest
    completed check-in was completed) and ``readiness`` (its colour code, ``"green"``,
    ``"amber"`` or ``"red"``) are None when there is none. Never an answer: the chat shows
    the colour and dates only, the rest is in the encrypted summary.
    """

    client_id: int
    alias: str | None
    last_seen_at: datetime | None
    linked_since: datetime
    next_appointment: datetime | None = None
    readiness: str | None = None
    last_check_in: datetime | None = None


@dataclass(frozen=True)
class TherapistSummary:
    """One therapist as staff see them: no client names, counts only."""

    person_id: int
    display_name: str | None
    active: bool
    clients: int  # actively linked
    awaiting_move: int  # clients whose link ended when the therapist was deactivated


@dataclass(frozen=True)
class StaffSummary:
    person_id: int
    display_name: str | None
    active: bool


@dataclass(frozen=True)
class Deactivation:
    therapist: Recipient
    clients: Sequence[Recipient]


@dataclass(frozen=True)
class Move:
    to_therapist: Recipient
    to_display_name: str | None
    clients: Sequence[Recipient]


@dataclass(frozen=True)
class _Extra:
    next_appointment: dict[int, datetime]
    check_ins: dict[int, tuple[datetime, Any]]  # client -> (completed at, readiness Colour or None)


def _recipient(person: Person) -> Recipient:
    return Recipient(person.id, person.telegram_id, person.language)


class ClinicService:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        invites: InviteService,
        notices: Notices,
        crypto: FieldCrypto | None = None,
        *,
        appointments: AppointmentService | None = None,
    ) -> None:
        self._sessions = sessions
        # A link that ends cancels the client's coming appointments with that therapist.
        self._appointments = appointments
        self._invites = invites  # its clock is "now" for every decision here too
        self._notices = notices
        self._crypto = crypto

    async def _prepare(self, person_ids: Sequence[int]) -> None:
        """One key-store query for many people's encrypted columns (see FieldCrypto)."""
        if self._crypto is not None and person_ids:
            await self._crypto.prepare(person_ids)

    async def _link_ended(self, session: AsyncSession, client_id: int, therapist_id: int) -> None:
        if self._appointments is not None:
            await self._appointments.end_with_therapist(session, client_id, therapist_id)

    # -- joining --------------------------------------------------------------------------

    async def join(self, identity: Identity, token_hash: str, display_name: str) -> Identity:
        """Enrol the asker as a therapist or staff member through a practice invite.

        One transaction: the person is created, the invite claimed (atomically, single
        use), the event audited. A claim that fails rolls the person back. Raises
        :class:`InvalidDisplayName` for an unusable display name, :class:`JoinRefused`
        otherwise.
        """
        name = clean_display_name(display_name)
        if name is None:
            raise InvalidDisplayName()
        now = self._invites.now()
        async with self._sessions.begin() as session:
            people = PeopleRepository(session)
            if identity.is_admin or await people.get_by_telegram_id(identity.telegram_id):
                raise JoinRefused("enrolled")
            invites = InviteRepository(session)
            invite = await invites.by_token_hash(token_hash)
            if invite is None or invite.kind not in ROLE_OF_INVITE:
                raise JoinRefused(InviteStatus.UNKNOWN.value)
            status = status_of(invite, now)
            if status is not InviteStatus.VALID:
                raise JoinRefused(status.value)
            role = ROLE_OF_INVITE[InviteKind(invite.kind)]
            person = await people.add(
                Person(
                    telegram_id=identity.telegram_id,
                    role=role,
                    language=identity.language,
                    timezone=identity.timezone,
                    display_name=name,
                    created_at=now,
                )
            )
            if await invites.claim(token_hash, person.id, now) is None:
                # Someone else used it between our read and our claim.
                raise JoinRefused(InviteStatus.USED.value)
            await AuditRepository(session).record(
                actor_telegram_id=identity.telegram_id,
                actor_role=role.value,
                action="clinic.joined",
                subject_person_id=person.id,
                detail={"invite_id": invite.id, "role": role.value},
            )
        return Identity(
            telegram_id=identity.telegram_id,
            first_name=identity.first_name,
            role=role,
            person_id=person.id,
            language=person.language,
            timezone=person.timezone,
        )

    # -- a therapist's clients ------------------------------------------------------------

    async def _therapist(self, session: AsyncSession, actor: Identity) -> Person:
        role, person = await current_person(session, actor)
        if role is not Role.THERAPIST or person is None:
            raise NotAllowed("role")
        return person

    async def _own_client(
        self, session: AsyncSession, actor: Identity, client_id: int
    ) -> tuple[Person, TherapistClientLink, Person]:
        therapist = await self._therapist(session, actor)
        link = await LinkRepository(session).active(therapist.id, client_id)
        client = await PeopleRepository(session).get(client_id) if link else None
        if link is None or client is None:
            raise NotAllowed("ownership")
        return therapist, link, client

    async def clients(self, actor: Identity) -> list[ClientSummary]:
        """The actor's active clients, longest-linked first."""
        async with self._sessions() as session:
            therapist = await self._therapist(session, actor)
            links = LinkRepository(session)
            ids = await links.client_ids_of(therapist.id)
            await self._prepare(ids)
            extra = await self._extra(session, therapist.id, ids)
            return [
                self._enrich(client, link.started_at, extra)
                for link, client in await links.clients_of(therapist.id)
            ]

    async def client(self, actor: Identity, client_id: int) -> ClientSummary:
        """One of the actor's clients; :class:`NotAllowed` if not (or no longer) theirs."""
        async with self._sessions() as session:
            therapist, link, client = await self._own_client(session, actor, client_id)
            return self._enrich(client, link.started_at, await self._extra(session, therapist.id, [client.id]))

    async def _extra(self, session: AsyncSession, therapist_id: int, client_ids: Sequence[int]) -> _Extra:
        """The clients' next appointments with this therapist, and their latest check-ins."""
        now = self._invites.now()
        upcoming: Any = await session.execute(
            select(Appointment.client_id, func.min(Appointment.starts_at))
            .where(
                Appointment.therapist_id == therapist_id,
                Appointment.client_id.in_(list(client_ids)),
                Appointment.cancelled_at.is_(None),
                Appointment.starts_at > now,
            )
            .group_by(Appointment.client_id)
        ) if client_ids else []
        return _Extra(
            next_appointment={client: when for client, when in upcoming},
            check_ins=await SummaryService.latest_readiness(session, client_ids),
        )

    def _enrich(self, client: Person, linked_since: datetime, extra: _Extra | None = None) -> ClientSummary:
        last = extra.check_ins.get(client.id) if extra else None
        return ClientSummary(
            client_id=client.id,
            alias=client.alias,
            last_seen_at=client.last_seen_at,
            linked_since=linked_since,
            next_appointment=extra.next_appointment.get(client.id) if extra else None,
            readiness=last[1].value if last and last[1] else None,
            last_check_in=last[0] if last else None,
        )

    async def rename_client(self, actor: Identity, client_id: int, alias: str) -> str:
        """Give one of the actor's clients a new alias (pseudonym); returns it tidied.
        :class:`InvalidAlias` for an unusable alias."""
        cleaned = clean_alias(alias)
        if cleaned is None:
            raise InvalidAlias()
        async with self._sessions.begin() as session:
            _therapist, _link, client = await self._own_client(session, actor, client_id)
            client.alias = cleaned
            await AuditRepository(session).record(
                actor_telegram_id=actor.telegram_id,
                actor_role=Role.THERAPIST.value,
                action="client.renamed",
                subject_person_id=client.id,
            )
        return cleaned

    async def unlink_client(self, actor: Identity, client_id: int) -> Recipient:
        """End the link with one of the actor's clients, and tell the client (in the same
        transaction); returns the client."""
        now = self._invites.now()
        async with self._sessions.begin() as session:
            _therapist, link, client = await self._own_client(session, actor, client_id)
            link.ended_at = now
            await self._link_ended(session, client.id, link.therapist_id)
            await self._notices.queue(
                session, client.id, client.language, "clients.unlinked_notice",
                idempotency_key=f"notice:unlinked:{link.id}",
            )
            await AuditRepository(session).record(
                actor_telegram_id=actor.telegram_id,
                actor_role=Role.THERAPIST.value,
                action="client.unlinked",
                subject_person_id=client.id,
                detail={"link_id": link.id},
            )
            return _recipient(client)

    # -- staff: therapists and staff ------------------------------------------------------

    async def _staff(
        self, session: AsyncSession, actor: Identity, roles: frozenset[Role] = STAFF_ROLES
    ) -> Role:
        role, _person = await current_person(session, actor)
        if role not in roles:
            raise NotAllowed("role")
        return role

    async def _a_therapist(self, session: AsyncSession, therapist_id: int) -> Person:
        person = await PeopleRepository(session).get(therapist_id)
        if person is None or person.role is not Role.THERAPIST:
            raise NotAllowed("ownership")  # not a therapist: a forged or stale id
        return person

    async def _summary(self, session: AsyncSession, therapist: Person, counts: dict[int, int]) -> TherapistSummary:
        awaiting = 0
        if not therapist.active and therapist.deactivated_at is not None:
            awaiting = len(
                await LinkRepository(session).unlinked_since(therapist.id, therapist.deactivated_at)
            )
        return TherapistSummary(
            person_id=therapist.id,
            display_name=therapist.display_name,
            active=therapist.active,
            clients=counts.get(therapist.id, 0),
            awaiting_move=awaiting,
        )

    async def therapists(self, actor: Identity) -> list[TherapistSummary]:
        """Every therapist (active first), with client counts. Staff and admins only."""
        async with self._sessions() as session:
            await self._staff(session, actor)
            people = await PeopleRepository(session).with_role(Role.THERAPIST)
            await self._prepare([p.id for p in people])
            counts = await LinkRepository(session).active_counts()
            found = [await self._summary(session, p, counts) for p in people]
        return sorted(found, key=lambda t: not t.active)

    async def therapist(self, actor: Identity, therapist_id: int) -> TherapistSummary:
        async with self._sessions() as session:
            await self._staff(session, actor)
            person = await self._a_therapist(session, therapist_id)
            return await self._summary(session, person, await LinkRepository(session).active_counts())

    async def deactivate_therapist(self, actor: Identity, therapist_id: int) -> Deactivation:
        """Deactivate a therapist: their links end now and each client is told (in the same
        transaction), their unused client invites are revoked. Returns the therapist (to be
        told directly: the outbox no longer serves them) and the clients told."""
        now = self._invites.now()
        async with self._sessions.begin() as session:
            role = await self._staff(session, actor)
            therapist = await self._a_therapist(session, therapist_id)
            if not therapist.active:
                raise NotAllowed("inactive")
            therapist.active = False
            therapist.deactivated_at = now
            ended = await LinkRepository(session).end_all_of_therapist(therapist.id, now)
            await session.execute(
                update(Invite)
                .where(
                    Invite.therapist_id == therapist.id,
                    Invite.used_at.is_(None),
                    Invite.revoked_at.is_(None),
                )
                .values(revoked_at=now)
                .execution_options(synchronize_session=False)
            )
            people = PeopleRepository(session)
            clients: list[Person] = []
            for link_id, client_id in ended:
                await self._link_ended(session, client_id, therapist.id)
                client = await people.get(client_id)
                if client is None:
                    continue
                clients.append(client)
                await self._notices.queue(
                    session, client.id, client.language, "therapists.client_notice",
                    idempotency_key=f"notice:therapist-deactivated:{link_id}",
                )
            await AuditRepository(session).record(
                actor_telegram_id=actor.telegram_id,
                actor_role=role.value,
                action="therapist.deactivated",
                subject_person_id=therapist.id,
                detail={"clients": len(clients)},
            )
            return Deactivation(_recipient(therapist), [_recipient(c) for c in clients])

    async def move_targets(self, actor: Identity, from_id: int) -> list[TherapistSummary]:
        """The active therapists a deactivated therapist's clients can be moved to."""
        return [
            t
            for t in await self.therapists(actor)
            if t.active and t.person_id != from_id
        ]

    async def move_clients(self, actor: Identity, from_id: int, to_id: int) -> Move:
        """Link the clients a deactivated therapist left behind to another active therapist;
        each client and the therapist are told, in the same transaction. The therapist's
        notice is keyed by the deactivation it follows, so pressing Move again (nobody left
        to move) tells them nothing new."""
        now = self._invites.now()
        async with self._sessions.begin() as session:
            role = await self._staff(session, actor)
            source = await self._a_therapist(session, from_id)
            target = await self._a_therapist(session, to_id)
            if source.active or source.deactivated_at is None or not target.active:
                raise NotAllowed("state")
            links = LinkRepository(session)
            client_ids = await links.unlinked_since(source.id, source.deactivated_at)
            people = PeopleRepository(session)
            moved: list[Person] = []
            name = target.display_name
            for client_id in client_ids:
                client = await people.get(client_id)
                if client is None or not client.active:
                    continue
                link = await links.add(target.id, client.id, now)
                moved.append(client)
                await self._notices.queue(
                    session, client.id, client.language, "therapists.moved_client_notice",
                    idempotency_key=f"notice:moved:{link.id}",
                    name=name or self._notices.text("therapists.no_name", client.language),
                )
            await self._notices.queue(
                session, target.id, target.language, "therapists.moved_therapist_notice",
                idempotency_key=f"notice:moved-to:{target.id}:{source.id}:{int(source.deactivated_at.timestamp())}",
                clients=len(moved),
            )
            await AuditRepository(session).record(
                actor_telegram_id=actor.telegram_id,
                actor_role=role.value,
                action="therapist.clients_moved",
                subject_person_id=target.id,
                detail={"from": source.id, "to": target.id, "clients": len(moved)},
            )
            return Move(_recipient(target), target.display_name, [_recipient(c) for c in moved])

    async def staff(self, actor: Identity) -> list[StaffSummary]:
        """The practice's staff members. Admins only."""
        async with self._sessions() as session:
            await self._staff(session, actor, frozenset({Role.ADMIN}))
            people = await PeopleRepository(session).with_role(Role.STAFF)
            await self._prepare([p.id for p in people])
            return [StaffSummary(p.id, p.display_name, p.active) for p in people]
