"""The audit log: who did what to whose record. Ids, roles and action codes only."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.db.models import AuditEvent
from bot.db.repositories import AuditRepository
from bot.services.people import Identity


class AuditService:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def record(
        self,
        actor: Identity | None,
        action: str,
        *,
        subject_person_id: int | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        """One event in its own transaction (use the repository inside a service's own
        transaction when the event must commit together with the change it describes)."""
        async with self._sessions.begin() as session:
            await AuditRepository(session).record(
                actor_telegram_id=actor.telegram_id if actor else None,
                actor_role=actor.role.value if actor and actor.role else None,
                action=action,
                subject_person_id=subject_person_id,
                detail=detail,
            )

    async def denied(self, actor: Identity, what: str, reason: str) -> None:
        """A refused command or button: ``what`` is the command or button action name."""
        await self.record(actor, "access.denied", detail={"what": what, "reason": reason})

    async def recent(
        self,
        *,
        limit: int = 50,
        actor: int | None = None,
        action: str | None = None,
        subject: int | None = None,
    ) -> Sequence[AuditEvent]:
        async with self._sessions() as session:
            return await AuditRepository(session).recent(
                limit=limit, actor=actor, action=action, subject=subject
            )


async def record_operator_action(database_url: str, action: str, detail: dict[str, Any]) -> None:
    """For CLI commands (key rotation, admin changes): an event whose actor is the operator
    at the command line. Opens and closes its own connection."""
    from bot.db.engine import create_engine, session_factory

    engine = create_engine(database_url)
    try:
        async with session_factory(engine).begin() as session:
            await AuditRepository(session).record(
                actor_telegram_id=None, actor_role="operator", action=action, detail=detail
            )
    finally:
        await engine.dispose()
