"""A therapist's own age key (/setkey): the public key their readiness summaries will be
encrypted to (bot.crypto.age), with its history.

* A therapist without a key sets one at once. One who has a key *proposes* a new one and
  confirms it (``confirm``): the old key then ends (``replaced_at``). Nothing encrypted to
  the old key is re-encrypted; the therapist keeps the old private key for that.
* Only the actor's own key, and only while they are an active therapist (checked against
  the database at the moment of use, as every service here does).
* The audit log gets the fingerprint, never the key (``therapist_key.set`` /
  ``therapist_key.replaced`` / ``therapist_key.secret_refused``).
* ``recipient_for(therapist_id)``: the current key, checked against its stored fingerprint,
  or None.
* ``on_key_set`` (bot.services.summaries ``release_waiting``) runs in the transaction that
  makes a key current: the summaries waiting for the therapist's first key are encrypted to
  it and queued then (``KeyChange.released`` says how many). A replacing key re-encrypts
  nothing made before.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.crypto.age import AgeRecipient, fingerprint, parse_recipient
from bot.db.models import Role, TherapistKey
from bot.db.repositories import AuditRepository
from bot.db.types import utcnow
from bot.services.invites import NotAllowed, current_person
from bot.services.people import Identity

PROPOSAL_VALID = timedelta(days=1)  # a replacement not confirmed within a day must be sent again


class KeyTampered(RuntimeError):
    """A stored key does not match its fingerprint: it was changed behind the service's back."""


class Outcome(enum.StrEnum):
    SET = "set"  # the therapist had no key; this one is current now
    SAME = "same"  # this is already their current key: nothing changed
    CONFIRM = "confirm"  # they have another key: ``proposal_id`` waits for their confirmation
    REPLACED = "replaced"  # a confirmed proposal is current now; the old key ended


@dataclass(frozen=True)
class RegisteredKey:
    id: int
    recipient: AgeRecipient
    fingerprint: str
    set_at: datetime | None
    replaced_at: datetime | None = None


@dataclass(frozen=True)
class KeyChange:
    outcome: Outcome
    key: RegisteredKey  # the key given (SET, SAME, CONFIRM) or now current (REPLACED)
    previous: RegisteredKey | None = None  # the key that is (CONFIRM) or was (REPLACED) current
    released: int = 0  # summaries that waited for a key, encrypted to this one and queued now


#: Runs in the transaction that makes a key current: (session, therapist id, key) -> how many
#: waiting summaries it queued.
KeySetListener = Callable[[AsyncSession, int, AgeRecipient], Awaitable[int]]


class TherapistKeyRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def current(self, therapist_id: int) -> TherapistKey | None:
        return await self.session.scalar(
            select(TherapistKey).where(
                TherapistKey.therapist_id == therapist_id,
                TherapistKey.set_at.is_not(None),
                TherapistKey.replaced_at.is_(None),
            )
        )

    async def get(self, key_id: int) -> TherapistKey | None:
        return await self.session.get(TherapistKey, key_id)

    async def history(self, therapist_id: int) -> Sequence[TherapistKey]:
        """Every key that was ever set, newest first (proposals not confirmed are left out)."""
        return (
            await self.session.scalars(
                select(TherapistKey)
                .where(TherapistKey.therapist_id == therapist_id, TherapistKey.set_at.is_not(None))
                .order_by(TherapistKey.set_at.desc(), TherapistKey.id)
            )
        ).all()

    async def add(self, key: TherapistKey) -> TherapistKey:
        self.session.add(key)
        await self.session.flush()
        return key

    async def drop_proposals(self, therapist_id: int) -> None:
        await self.session.execute(
            delete(TherapistKey).where(TherapistKey.therapist_id == therapist_id, TherapistKey.set_at.is_(None))
        )

    async def end_current(self, therapist_id: int, now: datetime) -> None:
        await self.session.execute(
            update(TherapistKey)
            .where(
                TherapistKey.therapist_id == therapist_id,
                TherapistKey.set_at.is_not(None),
                TherapistKey.replaced_at.is_(None),
            )
            .values(replaced_at=now)
            .execution_options(synchronize_session="fetch")
        )


def registered_recipient(row: TherapistKey) -> AgeRecipient:
    """The key of a stored row, checked against its fingerprint (KeyTampered if not)."""
    return _registered(row).recipient


def _registered(row: TherapistKey) -> RegisteredKey:
    recipient = parse_recipient(row.recipient)
    if recipient.fingerprint != row.fingerprint:
        raise KeyTampered(f"therapist key {row.id} does not match its fingerprint")
    return RegisteredKey(row.id, recipient, row.fingerprint, row.set_at, row.replaced_at)


class TherapistKeyService:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        clock: Callable[[], datetime] = utcnow,
        on_key_set: KeySetListener | None = None,
    ) -> None:
        self._sessions = sessions
        self.clock = clock
        self._on_key_set = on_key_set

    async def _key_set(self, session: AsyncSession, therapist_id: int, key: RegisteredKey) -> int:
        if self._on_key_set is None:
            return 0
        return await self._on_key_set(session, therapist_id, key.recipient)

    async def _therapist(self, session: AsyncSession, actor: Identity) -> int:
        role, person = await current_person(session, actor)
        if role is not Role.THERAPIST or person is None:
            raise NotAllowed("role")
        return person.id

    async def current(self, actor: Identity) -> RegisteredKey | None:
        """The asker's own current key."""
        async with self._sessions() as session:
            therapist_id = await self._therapist(session, actor)
            row = await TherapistKeyRepository(session).current(therapist_id)
            return _registered(row) if row else None

    async def history(self, actor: Identity) -> list[RegisteredKey]:
        """Every key the asker ever set, newest first."""
        async with self._sessions() as session:
            therapist_id = await self._therapist(session, actor)
            return [_registered(row) for row in await TherapistKeyRepository(session).history(therapist_id)]

    async def recipient_for(self, therapist_id: int) -> AgeRecipient | None:
        """The key to encrypt to for this therapist now (for the system, e.g. summaries), or
        None when they have none. Raises KeyTampered for a key not matching its fingerprint."""
        async with self._sessions() as session:
            row = await TherapistKeyRepository(session).current(therapist_id)
            return _registered(row).recipient if row else None

    async def submit(self, actor: Identity, text: str | None) -> KeyChange:
        """The asker gave a public key (``/setkey age1…`` or typed). Raises AgeKeyError for
        anything that is not a usable age recipient, NotAllowed for anyone but an active
        therapist. A first key is set at once; a different key replacing one waits for
        ``confirm``."""
        recipient = parse_recipient(text)
        now = self.clock()
        async with self._sessions.begin() as session:
            therapist_id = await self._therapist(session, actor)
            keys = TherapistKeyRepository(session)
            current = await keys.current(therapist_id)
            if current is not None:
                previous = _registered(current)
                if previous.recipient == recipient:
                    return KeyChange(Outcome.SAME, previous)
            await keys.drop_proposals(therapist_id)
            row = await keys.add(
                TherapistKey(
                    therapist_id=therapist_id,
                    recipient=recipient.text,
                    fingerprint=recipient.fingerprint,
                    proposed_at=now,
                    set_at=None if current else now,
                )
            )
            if current is not None:
                return KeyChange(Outcome.CONFIRM, _registered(row), previous)
            await self._audit(session, actor, therapist_id, "therapist_key.set", row.fingerprint, None)
            key = _registered(row)
            return KeyChange(Outcome.SET, key, released=await self._key_set(session, therapist_id, key))

    async def confirm(self, actor: Identity, proposal_id: int) -> KeyChange | None:
        """Make the asker's proposal ``proposal_id`` their current key. None when it is not
        theirs, already used, or older than PROPOSAL_VALID (they send the key again)."""
        now = self.clock()
        async with self._sessions.begin() as session:
            therapist_id = await self._therapist(session, actor)
            keys = TherapistKeyRepository(session)
            row = await keys.get(proposal_id)
            if (
                row is None
                or row.therapist_id != therapist_id
                or row.set_at is not None
                or now - row.proposed_at > PROPOSAL_VALID
            ):
                return None
            current = await keys.current(therapist_id)
            previous = _registered(current) if current else None
            await keys.end_current(therapist_id, now)
            row.set_at = now
            await session.flush()
            await self._audit(
                session, actor, therapist_id, "therapist_key.replaced" if previous else "therapist_key.set",
                row.fingerprint, previous.fingerprint if previous else None,
            )
            key = _registered(row)
            released = await self._key_set(session, therapist_id, key)
            return KeyChange(Outcome.REPLACED if previous else Outcome.SET, key, previous, released)

    async def withdraw_proposal(self, actor: Identity) -> None:
        """The asker kept their current key: forget what they proposed."""
        async with self._sessions.begin() as session:
            await TherapistKeyRepository(session).drop_proposals(await self._therapist(session, actor))

    async def secret_key_refused(self, actor: Identity) -> None:
        """Someone pasted a private key into the chat (refused, and the message deleted): a
        security event worth a line in the audit log (nothing of the key)."""
        async with self._sessions.begin() as session:
            role, person = await current_person(session, actor)
            await AuditRepository(session).record(
                actor_telegram_id=actor.telegram_id,
                actor_role=role.value if role else None,
                action="therapist_key.secret_refused",
                subject_person_id=person.id if person else None,
            )

    @staticmethod
    async def _audit(
        session: AsyncSession, actor: Identity, therapist_id: int, action: str, new: str, old: str | None
    ) -> None:
        detail = {"fingerprint": new} | ({"previous_fingerprint": old} if old else {})
        await AuditRepository(session).record(
            actor_telegram_id=actor.telegram_id,
            actor_role=Role.THERAPIST.value,
            action=action,
            subject_person_id=therapist_id,
            detail=detail,
        )


__all__ = [
    "KeyChange",
    "KeyTampered",
    "Outcome",
    "RegisteredKey",
    "TherapistKeyRepository",
    "TherapistKeyService",
    "fingerprint",
    "registered_recipient",
]
