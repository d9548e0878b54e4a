"""What the safety layer keeps for a client's therapist (handlers/safety.py).

* A wish to work on a memory (the boundary route): a flag, never the memory itself; the
  client may add a short note of their own (checked by the safety layer before it gets
  here), encrypted under their key. One open flag per client: asking twice adds nothing.
* A crisis answered yes (the risk route): a flag, and, when the practice's policy says
  ``immediate`` (the default), an alert to the client's therapist queued in the SAME
  transaction (so a flag always has its alert, and a retry queues no second one: the
  alert's key is the flag's id). The alert names the client by the therapist's pseudonym
  and carries nothing clinical.
* Feeling unsafe at home or with someone, answered yes in a check-in: a flag of its own
  (``unsafe``) and the same kind of immediate alert ("K7 flagged a safety concern"), once
  per check-in.

Every method acts for the client themselves (an enrolled client), checked here.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.db.delivery_models import OutboxMessage
from bot.db.models import Role, SafetyFlag, SafetyFlagKind
from bot.db.repositories import AuditRepository
from bot.db.types import utcnow
from bot.services.consent import therapist_of
from bot.services.notices import Notices
from bot.services.people import Identity

NOTE_LIMIT = 1000


class NotAClient(Exception):
    """Only an enrolled client has flags."""


class NoteTooLong(Exception):
    """A note over NOTE_LIMIT characters, or empty."""


@dataclass(frozen=True)
class Flagged:
    flag_id: int
    therapist_alerted: bool  # an alert was queued now
    has_therapist: bool


class SafetyFlagService:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], notices: Notices, *, alert_policy: str) -> None:
        self._sessions = sessions
        self._notices = notices
        self._alert_policy = alert_policy

    @staticmethod
    def _client_id(actor: Identity) -> int:
        if actor.role is not Role.CLIENT or actor.person_id is None:
            raise NotAClient()
        return actor.person_id

    async def wants_memory_work(self, actor: Identity) -> Flagged:
        """Flag "wants to work on this memory" for the next summary (once while open)."""
        client_id = self._client_id(actor)
        async with self._sessions.begin() as session:
            open_flag = await session.scalar(
                select(SafetyFlag).where(
                    SafetyFlag.client_id == client_id,
                    SafetyFlag.kind == SafetyFlagKind.MEMORY_WORK.value,
                    SafetyFlag.included_in_summary_at.is_(None),
                )
            )
            therapist = await therapist_of(session, client_id)
            if open_flag is None:
                open_flag = SafetyFlag(client_id=client_id, kind=SafetyFlagKind.MEMORY_WORK.value)
                session.add(open_flag)
                await session.flush()
                await self._audit(session, actor, "safety.flag.memory_work")
            return Flagged(open_flag.id, False, therapist is not None)

    async def add_note(self, actor: Identity, flag_id: int, note: str) -> bool:
        """The client's own short note on their flag. False when the flag is not theirs or a
        summary has included it already."""
        client_id = self._client_id(actor)
        words = " ".join(note.split())
        if not words or len(words) > NOTE_LIMIT:
            raise NoteTooLong()
        async with self._sessions.begin() as session:
            flag = await session.scalar(
                select(SafetyFlag).where(SafetyFlag.id == flag_id, SafetyFlag.client_id == client_id)
            )
            if flag is None or flag.included_in_summary_at is not None:
                return False
            flag.note = words
            return True

    async def crisis_confirmed(self, actor: Identity) -> Flagged:
        """The client said yes to the crisis question: a flag, and (policy ``immediate``) an
        alert to their therapist, atomically."""
        client_id = self._client_id(actor)
        async with self._sessions.begin() as session:
            flag = SafetyFlag(client_id=client_id, kind=SafetyFlagKind.RISK.value)
            session.add(flag)
            await session.flush()
            await self._audit(session, actor, "safety.flag.risk")
            therapist = await therapist_of(session, client_id)
            alerted = False
            if therapist is not None and self._alert_policy == "immediate":
                alias = therapist.client_alias or self._notices.text("safety.alert.unnamed", therapist.language)
                queued = await self._notices.queue(
                    session, therapist.person_id, therapist.language, "safety.alert.risk",
                    idempotency_key=f"safety-alert:{flag.id}", alias=alias,
                )
                if queued is not None:
                    flag.alerted_at = utcnow()
                    alerted = True
            return Flagged(flag.id, alerted, therapist is not None)

    async def unsafe_reported(self, actor: Identity, check_in_id: int) -> Flagged | None:
        """In check-in ``check_in_id`` the client said they feel unsafe at home or with
        someone: a flag and (policy ``immediate``) an alert to their therapist with nothing
        clinical in it, atomically. Once per check-in (answering it again adds nothing: None)."""
        client_id = self._client_id(actor)
        key = f"safety-alert:unsafe:{check_in_id}"
        async with self._sessions.begin() as session:
            if await session.scalar(select(OutboxMessage.id).where(OutboxMessage.idempotency_key == key)):
                return None
            flag = SafetyFlag(client_id=client_id, kind=SafetyFlagKind.UNSAFE.value)
            session.add(flag)
            await session.flush()
            await self._audit(session, actor, "safety.flag.unsafe")
            therapist = await therapist_of(session, client_id)
            alerted = False
            if therapist is not None and self._alert_policy == "immediate":
                alias = therapist.client_alias or self._notices.text("safety.alert.unnamed", therapist.language)
                queued = await self._notices.queue(
                    session, therapist.person_id, therapist.language, "safety.alert.unsafe",
                    idempotency_key=key, alias=alias,
                )
                if queued is not None:
                    flag.alerted_at = utcnow()
                    alerted = True
            return Flagged(flag.id, alerted, therapist is not None)

    async def open_flags(self, actor: Identity) -> list[SafetyFlag]:
        client_id = self._client_id(actor)
        async with self._sessions() as session:
            return list(
                await session.scalars(
                    select(SafetyFlag)
                    .where(SafetyFlag.client_id == client_id, SafetyFlag.included_in_summary_at.is_(None))
                    .order_by(SafetyFlag.created_at)
                )
            )

    @staticmethod
    async def _audit(session: AsyncSession, actor: Identity, action: str) -> None:
        await AuditRepository(session).record(
            actor_telegram_id=actor.telegram_id,
            actor_role=Role.CLIENT.value,
            action=action,
            subject_person_id=actor.person_id,
            detail={},
        )
