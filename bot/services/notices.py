"""Notices: telling someone other than the asker about a change, queued in the change's own
transaction.

A service that makes a change others should hear about (a client withdrew consent, a link
ended, clients were moved) queues the notice with ``Notices.queue`` inside the transaction
that makes the change. So the notice is queued if and only if the change commits: a crash
after the change cannot lose it, and a failure before the commit leaves neither.

The idempotency key is derived from the rows the change creates or ends (``notice:unlinked:
{link_id}``, ...), never random: the same change queued twice (a retry) is queued once.

The text is made now, in the recipient's language, and stored encrypted under the
recipient's key (it may hold the therapist's pseudonym for a client); the outbox paces it,
retries it, holds it back in the recipient's quiet hours and drops it when it is a week
old (the bot was down that long). Nothing is queued for someone who is not active.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.content import Content
from bot.db.delivery_models import OutboxKind
from bot.db.models import Person
from bot.db.types import utcnow
from bot.delivery.outbox import OutboxService

NOTICE_VALID = timedelta(days=7)  # a notice not sent within a week (the bot was down) is dropped


class Notices:
    def __init__(self, outbox: OutboxService, content: Content) -> None:
        self._outbox = outbox
        self._content = content

    def text(self, key: str, language: str, **params: Any) -> str:
        """The content text ``key`` in ``language`` (e.g. a fallback name for a notice)."""
        return self._content.text(key, language, **params)

    async def queue(
        self,
        session: AsyncSession,
        recipient_id: int,
        language: str,
        key: str,
        *,
        idempotency_key: str,
        **params: Any,
    ) -> int | None:
        """Queue the content text ``key`` for ``recipient_id`` in the caller's transaction;
        the outbox row's id, or None when the recipient is not active or ``idempotency_key``
        was queued before."""
        if not await session.scalar(select(Person.active).where(Person.id == recipient_id)):
            return None
        return await self._outbox.add_text(
            session,
            recipient_id,
            kind=OutboxKind.NOTICE,
            idempotency_key=idempotency_key,
            text=self._content.text(key, language, **params),
            expires_at=utcnow() + NOTICE_VALID,
        )
