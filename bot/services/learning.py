"""/learn: which psychoeducation modules a client has read, and their "Ask my therapist about
this" questions for the next summary.

Reading is open to anyone; only enrolled clients get rows (``learn_progress``,
``therapist_questions``). For everyone else every method stores nothing: progress is empty
and a question is "unavailable".

A question is the module and page it was asked on, nothing typed. At most one open question
per client and module (a partial unique index): asking again is a no-op, also when two presses
race. A summary feature reads them with :meth:`LearningService.open_questions` and marks the
ones it showed with :meth:`LearningService.mark_included`; after that the client may ask about
the module again.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import case, func, literal, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.content import Content, ContentError
from bot.db.engine import single_read
from bot.db.models import LearnProgress, Role, TherapistQuestion
from bot.db.repositories import LinkRepository
from bot.db.types import utcnow
from bot.services.people import Identity


class Asked(enum.StrEnum):
    SAVED = "saved"  # a new open question
    ALREADY = "already"  # an open question about this module was there already
    UNAVAILABLE = "unavailable"  # not a client, or no therapist at the moment: nothing stored


@dataclass(frozen=True)
class OpenQuestion:
    id: int
    client_id: int
    module_id: str
    page: int  # 1-based
    created_at: datetime


class LearnRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def progress_of(self, client_id: int) -> list[LearnProgress]:
        return list(
            await self.session.scalars(select(LearnProgress).where(LearnProgress.client_id == client_id))
        )

    async def progress(self, client_id: int, module_id: str) -> LearnProgress | None:
        return await self.session.scalar(
            select(LearnProgress).where(
                LearnProgress.client_id == client_id, LearnProgress.module_id == module_id
            )
        )

    async def open_question(self, client_id: int, module_id: str) -> TherapistQuestion | None:
        return await self.session.scalar(
            select(TherapistQuestion).where(
                TherapistQuestion.client_id == client_id,
                TherapistQuestion.module_id == module_id,
                TherapistQuestion.included_in_summary_at.is_(None),
            )
        )

    async def open_questions(self, client_id: int) -> list[TherapistQuestion]:
        return list(
            await self.session.scalars(
                select(TherapistQuestion)
                .where(
                    TherapistQuestion.client_id == client_id,
                    TherapistQuestion.included_in_summary_at.is_(None),
                )
                .order_by(TherapistQuestion.created_at, TherapistQuestion.id)
            )
        )

    async def add_once(self, row: LearnProgress | TherapistQuestion) -> bool:
        """Insert ``row``; False (and nothing inserted) when a unique constraint says it exists."""
        try:
            async with self.session.begin_nested():
                self.session.add(row)
                await self.session.flush()
        except IntegrityError:
            return False
        return True


def _client_id(actor: Identity) -> int | None:
    """The person id of an enrolled client; None for anyone else (nothing is stored)."""
    if actor.role is Role.CLIENT and actor.person_id is not None:
        return actor.person_id
    return None


class LearningService:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], content: Content) -> None:
        self._sessions = sessions
        self._content = content

    # -- reading ------------------------------------------------------------------------------

    async def read_modules(self, actor: Identity) -> set[str]:
        """Ids of the modules the actor has read to the end (empty for non-clients)."""
        client_id = _client_id(actor)
        if client_id is None:
            return set()
        async with self._sessions() as session:
            await single_read(session)
            rows = await LearnRepository(session).progress_of(client_id)
        return {row.module_id for row in rows if row.completed_at is not None}

    async def page_seen(self, actor: Identity, module_id: str, page: int, pages: int) -> None:
        """The actor was shown page ``page`` (1-based) of ``pages``; the last one completes the
        module. Stores nothing for non-clients."""
        client_id = _client_id(actor)
        if client_id is None:
            return
        if not 1 <= page <= pages:
            raise ValueError("page out of range")
        now = utcnow()
        # One UPDATE, so that concurrent presses never lower what was reached; the row is made
        # first only when the UPDATE found none (the module's first page: no SELECT before).
        reached = (
            update(LearnProgress)
            .where(LearnProgress.client_id == client_id, LearnProgress.module_id == module_id)
            .values(
                pages_read=case((LearnProgress.pages_read < page, page), else_=LearnProgress.pages_read),
                completed_at=(
                    func.coalesce(LearnProgress.completed_at, literal(now, LearnProgress.completed_at.type)) if page == pages else LearnProgress.completed_at
                ),
                updated_at=now,
            )
            .execution_options(synchronize_session=False)
        )
        async with self._sessions.begin() as session:
            if (await session.execute(reached)).rowcount == 0:  # type: ignore[attr-defined]
                await LearnRepository(session).add_once(  # (a concurrent insert: no-op)
                    LearnProgress(client_id=client_id, module_id=module_id, pages_read=0, updated_at=now)
                )
                await session.execute(reached)

    # -- questions ----------------------------------------------------------------------------

    async def ask(self, actor: Identity, module_id: str, page: int) -> Asked:
        """"Ask my therapist about this" on page ``page`` of ``module_id``: stored once."""
        client_id = _client_id(actor)
        if client_id is None:
            return Asked.UNAVAILABLE
        if page < 1:
            raise ValueError("pages are numbered from 1")
        async with self._sessions.begin() as session:
            if await LinkRepository(session).active_for_client(client_id) is None:
                return Asked.UNAVAILABLE
            repo = LearnRepository(session)
            if await repo.open_question(client_id, module_id) is not None:
                return Asked.ALREADY
            added = await repo.add_once(TherapistQuestion(client_id=client_id, module_id=module_id, page=page))
            return Asked.SAVED if added else Asked.ALREADY

    async def open_questions(self, client_id: int) -> list[OpenQuestion]:
        """For a summary: the client's questions not yet included in one, oldest first."""
        async with self._sessions() as session:
            await single_read(session)
            rows = await LearnRepository(session).open_questions(client_id)
        return [OpenQuestion(r.id, r.client_id, r.module_id, r.page, r.created_at) for r in rows]

    def summary_lines(self, questions: Sequence[OpenQuestion], language: str) -> list[str]:
        """The summary's lines for ``questions`` in the therapist's language (Telegram HTML)."""
        lines = []
        for question in questions:
            title = self._module_title(question.module_id, language)
            lines.append(self._content.text("learn.summary_question", language, title=title))
        return lines

    async def mark_included(self, client_id: int, question_ids: Iterable[int], at: datetime | None = None) -> int:
        """Close questions a summary has shown to the therapist; returns how many were open."""
        ids = list(question_ids)
        if not ids:
            return 0
        async with self._sessions.begin() as session:
            result = await session.execute(
                update(TherapistQuestion)
                .where(
                    TherapistQuestion.client_id == client_id,
                    TherapistQuestion.id.in_(ids),
                    TherapistQuestion.included_in_summary_at.is_(None),
                )
                .values(included_in_summary_at=at or utcnow())
            )
            return result.rowcount or 0  # type: ignore[attr-defined]  # an UPDATE's Result is a CursorResult

    def _module_title(self, module_id: str, language: str) -> str:
        try:
            return self._content.module(module_id, language).title
        except ContentError:  # a module removed from content since the question was asked
            return module_id
