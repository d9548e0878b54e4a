"""One-time invite links: therapists and staff join the practice, clients join their therapist.

A link is ``https://t.me/<bot>?start=<token>``. The token (``secrets.token_urlsafe(24)``,
32 characters) exists only in the link: the database keeps its SHA-256 (``token_hash``).
An invite is used up by one conditional UPDATE (``InviteRepository.claim``) inside the
transaction that enrolls the person, so two people racing for one link cannot both win.

Who may invite whom (checked here, at the moment of use, against the stored person):

    therapist        -> client     (linked to that therapist; optional alias)
    staff or admin   -> therapist
    admin            -> staff

Nothing a person wrote reaches the audit log: events carry ids and kinds only.
"""

from __future__ import annotations

import enum
import hashlib
import io
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.db.models import Invite, InviteKind, Person, Role
from bot.db.repositories import AuditRepository, InviteRepository, PeopleRepository
from bot.db.types import utcnow
from bot.services.names import InvalidAlias, clean_alias
from bot.services.people import Identity

__all__ = [
    "InviteKind",
    "InviteNotAllowed",
    "InviteService",
    "InviteStatus",
    "InviteView",
    "NewInvite",
    "NotAllowed",
    "TOKEN_PATTERN",
    "current_person",
    "hash_token",
    "invite_link",
    "qr_png",
]

#: What a start payload must look like to be looked up at all (Telegram allows up to 64
#: characters of this alphabet in a deep link; our own tokens are 32).
TOKEN_PATTERN = re.compile(r"^[A-Za-z0-9_-]{16,64}$")

DEFAULT_VALIDITY: Mapping[InviteKind, timedelta] = {
    InviteKind.THERAPIST: timedelta(days=7),
    InviteKind.STAFF: timedelta(days=7),
    InviteKind.CLIENT: timedelta(days=14),
}

#: Which role may create which kind of invite (admins may also do what staff do).
INVITERS: Mapping[InviteKind, frozenset[Role]] = {
    InviteKind.CLIENT: frozenset({Role.THERAPIST}),
    InviteKind.THERAPIST: frozenset({Role.STAFF, Role.ADMIN}),
    InviteKind.STAFF: frozenset({Role.ADMIN}),
}


class InviteStatus(enum.StrEnum):
    VALID = "valid"
    EXPIRED = "expired"
    USED = "used"
    REVOKED = "revoked"
    UNKNOWN = "unknown"  # well-formed, but no such invite
    MALFORMED = "malformed"  # not a token at all


class NotAllowed(PermissionError):
    """The actor may not do this right now. ``reason`` is a short code for the audit log
    (``"role"``: not their role; ``"ownership"``: not their record)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


InviteNotAllowed = NotAllowed


@dataclass(frozen=True)
class NewInvite:
    """A freshly made invite. ``token`` is shown once (in ``link``) and never stored."""

    id: int
    kind: InviteKind
    token: str
    link: str
    expires_at: datetime


@dataclass(frozen=True)
class InviteView:
    """What a start payload is, read without side effects.

    ``kind`` and ``id`` are None for unknown and malformed payloads. For client invites
    ``therapist_id``/``therapist_display_name`` name the inviting therapist and ``alias``
    is the pseudonym they gave (may be None).
    """

    status: InviteStatus
    token_hash: str | None = None
    id: int | None = None
    kind: InviteKind | None = None
    therapist_id: int | None = None
    therapist_display_name: str | None = None
    alias: str | None = None
    expires_at: datetime | None = None

    @property
    def valid(self) -> bool:
        return self.status is InviteStatus.VALID


def hash_token(token: str) -> str:
    """The stored form of a token: SHA-256, hex (64 characters)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def invite_link(bot_username: str, token: str) -> str:
    return f"https://t.me/{bot_username}?start={token}"


def qr_png(link: str) -> bytes:
    """The link as a QR code, PNG bytes (for sendPhoto)."""
    import segno  # here, not at start-up: only an invitation needs it

    buffer = io.BytesIO()
    segno.make(link, error="m", micro=False).save(buffer, kind="png", scale=8, border=4)
    return buffer.getvalue()


async def current_person(session: AsyncSession, actor: Identity) -> tuple[Role | None, Person | None]:
    """The actor's role and person as stored right now (not as when the update began).

    Administrators come from the configuration (``Identity.is_admin``) and may not have a
    record yet; everyone else counts only with an active record.
    """
    person = await PeopleRepository(session).get_by_telegram_id(actor.telegram_id)
    if actor.is_admin:
        return Role.ADMIN, person
    if person is None or not person.active:
        return None, person
    return Role(person.role), person


class InviteService:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        validity: Mapping[InviteKind, timedelta] | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._sessions = sessions
        self.validity = {**DEFAULT_VALIDITY, **(validity or {})}
        #: The service's notion of "now" (aware UTC); tests replace it instead of sleeping.
        self.clock = clock

    # Re-exported for callers that only hold the service.
    hash_token = staticmethod(hash_token)
    link = staticmethod(invite_link)
    qr_png = staticmethod(qr_png)

    def now(self) -> datetime:
        """"Now" for invite decisions; pass it to ``InviteRepository.claim``."""
        return self.clock()

    async def create(
        self,
        actor: Identity,
        kind: InviteKind,
        *,
        bot_username: str,
        alias: str | None = None,
    ) -> NewInvite:
        """Make a one-time invite of ``kind``. Raises :class:`InviteNotAllowed` when the
        actor's current role may not, and :class:`InvalidAlias` for an unusable alias (an
        alias on another kind of invite is a programming error: ``ValueError``)."""
        kind = InviteKind(kind)
        if alias is not None:
            if kind is not InviteKind.CLIENT:
                raise ValueError("only client invites carry an alias")
            cleaned = clean_alias(alias)
            if cleaned is None:
                raise InvalidAlias()
            alias = cleaned
        token = secrets.token_urlsafe(24)
        now = self.now()
        async with self._sessions.begin() as session:
            role, person = await current_person(session, actor)
            if role not in INVITERS[kind]:
                raise InviteNotAllowed("role")
            therapist_id = person.id if kind is InviteKind.CLIENT and person else None
            invite = await InviteRepository(session).add(
                Invite(
                    token_hash=hash_token(token),
                    kind=kind,
                    created_by_id=person.id if person else None,
                    therapist_id=therapist_id,
                    alias=alias,
                    created_at=now,
                    expires_at=now + self.validity[kind],
                )
            )
            await AuditRepository(session).record(
                actor_telegram_id=actor.telegram_id,
                actor_role=role.value,
                action="invite.created",
                subject_person_id=therapist_id,
                detail={"invite_id": invite.id, "kind": kind.value},
            )
            return NewInvite(
                id=invite.id,
                kind=kind,
                token=token,
                link=invite_link(bot_username, token),
                expires_at=invite.expires_at,
            )

    async def inspect(self, token: str | None) -> InviteView:
        """What this start payload is. Reads only: nothing is stored, whatever comes in."""
        if token is None or not TOKEN_PATTERN.fullmatch(token):
            return InviteView(InviteStatus.MALFORMED)
        return await self.inspect_hash(hash_token(token))

    async def inspect_hash(self, token_hash: str) -> InviteView:
        """As ``inspect``, for a token kept only as its hash (between conversation steps)."""
        now = self.now()
        async with self._sessions() as session:
            invite = await InviteRepository(session).by_token_hash(token_hash)
            if invite is None:
                return InviteView(InviteStatus.UNKNOWN, token_hash=token_hash)
            therapist_name = None
            if invite.therapist_id is not None:
                therapist = await PeopleRepository(session).get(invite.therapist_id)
                therapist_name = therapist.display_name if therapist else None
            return InviteView(
                status=status_of(invite, now),
                token_hash=token_hash,
                id=invite.id,
                kind=InviteKind(invite.kind),
                therapist_id=invite.therapist_id,
                therapist_display_name=therapist_name,
                alias=invite.alias,
                expires_at=invite.expires_at,
            )


def status_of(invite: Invite, now: datetime) -> InviteStatus:
    if invite.revoked_at is not None:
        return InviteStatus.REVOKED
    if invite.used_at is not None:
        return InviteStatus.USED
    if invite.expires_at <= now:
        return InviteStatus.EXPIRED
    return InviteStatus.VALID
