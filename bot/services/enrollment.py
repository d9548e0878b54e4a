"""A client joins their therapist through a one-time client invite, or switches to another.

Nothing about the person is stored before they agree to the consent. Agreeing is one
transaction: the invite is claimed (single use), the client is created (the alias the
therapist gave is copied from the invite and encrypted under the client's own key), linked
to the therapist, the consent decision recorded and the join audited. If anything fails,
none of it happened and the invite is still unused.

Switching (a client opens another therapist's client link, and confirms) is one
transaction too: claim, end the old link, start the new one, audit.

The therapist whose invite was accepted is told (with the pseudonym they gave), and on a
switch the old therapist too (with no pseudonym and nothing clinical): both notices are
queued in the same transaction, keyed by the link that starts (``notice:joined:{link}``)
and the link that ends (``notice:link-ended:{link}``).

Between the steps of the conversation the invite is named by its id in a signed button
payload (bot.callbacks): only the person who opened the link ever holds it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.db.models import ConsentChoice, Invite, InviteKind, Person, Role
from bot.db.repositories import (
    AuditRepository,
    ConsentRepository,
    InviteRepository,
    LinkRepository,
    PeopleRepository,
)
from bot.db.types import utcnow
from bot.services.appointments import AppointmentService
from bot.services.consent import Recipient
from bot.services.invites import InviteService, InviteStatus, InviteView
from bot.services.notices import Notices
from bot.services.people import Identity


class JoinSituation(enum.StrEnum):
    """Who is opening a (valid) client invite."""

    NEW = "new"  # not enrolled: the join conversation
    SWITCH = "switch"  # a client of another therapist: confirm the switch
    RECONNECT = "reconnect"  # a client without an active link: confirm the connection
    ALREADY_CONNECTED = "already_connected"  # already this therapist's client
    NOT_A_CLIENT = "not_a_client"  # a therapist, staff member or administrator


@dataclass(frozen=True)
class JoinAssessment:
    situation: JoinSituation
    current_therapist_name: str | None = None  # for SWITCH and ALREADY_CONNECTED


class InviteUnavailable(Exception):
    """The invite cannot be used (any more): ``status`` says why."""

    def __init__(self, status: InviteStatus) -> None:
        super().__init__(status.value)
        self.status = status


class AlreadyEnrolled(Exception):
    """The Telegram user is enrolled already (e.g. "I agree" pressed twice), or already
    connected with this invite's therapist."""


@dataclass(frozen=True)
class Enrollment:
    identity: Identity  # the new client
    therapist_name: str | None
    therapist: Recipient | None  # told that their invite was accepted (alias included)
    consent_version: str


@dataclass(frozen=True)
class Switch:
    identity: Identity
    therapist_name: str | None
    new_therapist: Recipient | None  # told that their invite was accepted
    old_therapist: Recipient | None  # told that the connection ended (no alias!)


class ClientEnrollmentService:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        invites: InviteService,
        notices: Notices,
        *,
        appointments: AppointmentService | None = None,
    ) -> None:
        self._sessions = sessions
        self._invites = invites
        self._notices = notices
        self._appointments = appointments  # switching therapist cancels the coming appointments with the old one

    async def invite(self, invite_id: int) -> InviteView:
        """The invite a signed button names, as ``InviteService.inspect`` sees it now."""
        async with self._sessions() as session:
            invite = await InviteRepository(session).get(invite_id)
            token_hash = invite.token_hash if invite else None
        if token_hash is None:
            return InviteView(InviteStatus.UNKNOWN)
        return await self._invites.inspect_hash(token_hash)

    async def assess(self, identity: Identity, view: InviteView) -> JoinAssessment:
        """What opening this valid client invite means for this person."""
        if identity.is_admin or identity.role in (Role.THERAPIST, Role.STAFF):
            return JoinAssessment(JoinSituation.NOT_A_CLIENT)
        if identity.role is None or identity.person_id is None:
            return JoinAssessment(JoinSituation.NEW)
        async with self._sessions() as session:
            link = await LinkRepository(session).active_for_client(identity.person_id)
            if link is None:
                return JoinAssessment(JoinSituation.RECONNECT)
            current = await PeopleRepository(session).get(link.therapist_id)
            name = current.display_name if current else None
        if link.therapist_id == view.therapist_id:
            return JoinAssessment(JoinSituation.ALREADY_CONNECTED, name)
        return JoinAssessment(JoinSituation.SWITCH, name)

    async def enroll(
        self, invite_id: int, identity: Identity, *, language: str, timezone: str, consent_version: str
    ) -> Enrollment:
        """Create the client from a valid client invite, with their consent (see the module
        docstring). Raises InviteUnavailable, AlreadyEnrolled, or PermissionError for
        someone who is not a prospective client."""
        if identity.role is Role.CLIENT:
            raise AlreadyEnrolled()
        if identity.is_admin or identity.role is not None:
            raise PermissionError("not a prospective client")
        view = await self._usable(invite_id)
        now = self._invites.now()  # the invite's clock decides validity
        async with self._sessions.begin() as session:
            people = PeopleRepository(session)
            if await people.get_by_telegram_id(identity.telegram_id) is not None:
                raise AlreadyEnrolled()
            invite, therapist = await self._invite_and_therapist(session, invite_id)
            client = await people.add(
                Person(
                    telegram_id=identity.telegram_id,
                    role=Role.CLIENT,
                    language=language,
                    timezone=timezone,
                    alias=invite.alias,
                )
            )
            if await InviteRepository(session).claim(invite.token_hash, client.id, now) is None:
                raise InviteUnavailable(InviteStatus.USED)  # lost a race: all of this rolls back
            link = await LinkRepository(session).add(therapist.id, client.id, utcnow())
            await ConsentRepository(session).add(client.id, consent_version, ConsentChoice.GRANTED, utcnow())
            await self._tell_joined(session, therapist, link.id, client.alias)
            audit = AuditRepository(session)
            for action, detail in (
                ("consent.granted", {"version": consent_version}),
                ("client.joined", {"invite_id": invite.id}),
            ):
                await audit.record(
                    actor_telegram_id=identity.telegram_id,
                    actor_role=Role.CLIENT.value,
                    action=action,
                    subject_person_id=client.id,
                    detail=detail,
                )
            enrolled = replace(
                identity, role=Role.CLIENT, person_id=client.id, language=language, timezone=timezone
            )
            return Enrollment(
                identity=enrolled,
                therapist_name=view.therapist_display_name,
                therapist=Recipient(therapist.id, therapist.telegram_id, therapist.language, client.alias),
                consent_version=consent_version,
            )

    async def switch(self, invite_id: int, identity: Identity) -> Switch:
        """Connect an existing client to the therapist of this invite, ending their current
        link. Raises InviteUnavailable, or PermissionError for someone not a client."""
        if identity.is_admin or identity.role is not Role.CLIENT or identity.person_id is None:
            raise PermissionError("not a client")
        view = await self._usable(invite_id)
        now = self._invites.now()  # the invite's clock decides validity
        async with self._sessions.begin() as session:
            people, links = PeopleRepository(session), LinkRepository(session)
            client = await people.get(identity.person_id)
            if client is None:
                raise PermissionError("the person no longer exists")
            invite, therapist = await self._invite_and_therapist(session, invite_id)
            current = await links.active_for_client(client.id)
            if current is not None and current.therapist_id == therapist.id:
                raise AlreadyEnrolled()  # already this therapist's client; the link stays unused
            if await InviteRepository(session).claim(invite.token_hash, client.id, now) is None:
                raise InviteUnavailable(InviteStatus.USED)
            old_therapist: Recipient | None = None
            if current is not None:
                current.ended_at = utcnow()
                await session.flush()  # the old link ends before the new one starts
                if self._appointments is not None:  # coming appointments with the old therapist
                    await self._appointments.end_with_therapist(session, client.id, current.therapist_id)
                old = await people.get(current.therapist_id)
                if old is not None and old.active:
                    old_therapist = Recipient(old.id, old.telegram_id, old.language)
                    # No pseudonym, nothing clinical.
                    await self._notices.queue(
                        session, old.id, old.language, "client_join.switch.ended_notice",
                        idempotency_key=f"notice:link-ended:{current.id}",
                    )
            link = await links.add(therapist.id, client.id, utcnow())
            if invite.alias is not None:
                client.alias = invite.alias  # the name the new therapist gave
            client.active = True
            await self._tell_joined(session, therapist, link.id, client.alias)
            await AuditRepository(session).record(
                actor_telegram_id=identity.telegram_id,
                actor_role=Role.CLIENT.value,
                action="client.switched" if current is not None else "client.reconnected",
                subject_person_id=client.id,
                detail={"invite_id": invite.id},
            )
            return Switch(
                identity=identity,
                therapist_name=view.therapist_display_name,
                new_therapist=Recipient(therapist.id, therapist.telegram_id, therapist.language, client.alias),
                old_therapist=old_therapist,
            )

    async def _tell_joined(self, session: AsyncSession, therapist: Person, link_id: int, alias: str | None) -> None:
        """Tell the therapist that their invite was accepted (by the pseudonym they chose)."""
        if alias:
            key, params = "client_join.joined_notice", {"alias": alias}
        else:
            key, params = "client_join.joined_notice_unnamed", {}
        await self._notices.queue(
            session, therapist.id, therapist.language, key, idempotency_key=f"notice:joined:{link_id}", **params
        )

    async def _usable(self, invite_id: int) -> InviteView:
        view = await self.invite(invite_id)
        if not view.valid:
            raise InviteUnavailable(view.status)
        if view.kind is not InviteKind.CLIENT or view.therapist_id is None:
            raise InviteUnavailable(InviteStatus.UNKNOWN)
        return view

    @staticmethod
    async def _invite_and_therapist(session: AsyncSession, invite_id: int) -> tuple[Invite, Person]:
        invite = await InviteRepository(session).get(invite_id)
        if invite is None or invite.therapist_id is None:
            raise InviteUnavailable(InviteStatus.UNKNOWN)
        therapist = await PeopleRepository(session).get(invite.therapist_id)
        if therapist is None or not therapist.active or therapist.role is not Role.THERAPIST:
            raise InviteUnavailable(InviteStatus.REVOKED)
        return invite, therapist
