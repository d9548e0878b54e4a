"""A client's safety plan (/safetyplan): Stanley & Brown's six steps, in the client's words.

Clinicians: the structure follows the Safety Planning Intervention of Stanley, B. & Brown,
G. K. (2012), "Safety Planning Intervention: A Brief Intervention to Mitigate Suicide
Risk", Cognitive and Behavioral Practice 19(2). The words the client sees are in
content/<language>/safetyplan.yaml.

Each step (``SAFETY_PLAN_STEPS``) is stored the moment it is answered, encrypted under the
client's key, so leaving half-way loses nothing; ``steps_done`` says where building it goes
on. Only the client reads and changes their plan. A therapist reads it only while the client
shares it, and only as the client's current therapist (``for_therapist``).

Nothing here logs or raises with a client's words: exceptions carry codes and numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.db.models import SAFETY_PLAN_STEP_MAX, SAFETY_PLAN_STEPS, Role, SafetyPlan
from bot.db.repositories import AuditRepository, LinkRepository
from bot.services.people import Identity

STEPS = SAFETY_PLAN_STEPS
MAX_CHARS = SAFETY_PLAN_STEP_MAX


class SafetyPlanError(Exception):
    """A request about a safety plan that cannot be done (never holds the client's words)."""


class NotTheOwner(SafetyPlanError):
    """Only the client changes their own plan; a therapist reads it only when it is shared
    with them. ``reason``: ``role``, ``not_linked`` or ``not_shared``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class UnknownStep(SafetyPlanError):
    """A step name that is not one of the six."""


class EmptyAnswer(SafetyPlanError):
    """Nothing but spaces."""


class AnswerTooLong(SafetyPlanError):
    def __init__(self, length: int, limit: int = MAX_CHARS) -> None:
        super().__init__(f"{length} characters; at most {limit}")
        self.length, self.limit = length, limit


class NoPlan(SafetyPlanError):
    """The client has no safety plan (yet, or any more)."""


@dataclass(frozen=True)
class Plan:
    """A safety plan as the services hand it out: the steps' words, in order."""

    steps: dict[str, str | None]  # step -> the client's words (None: not filled in)
    steps_done: int
    shared_with_therapist: bool

    @property
    def complete(self) -> bool:
        """Every step has been gone through (answered or skipped)."""
        return self.steps_done >= len(STEPS)

    @property
    def has_words(self) -> bool:
        return any(self.steps.values())

    @property
    def next_step(self) -> int | None:
        """The index of the step building it goes on at (None: all gone through)."""
        return None if self.complete else self.steps_done

    def __repr__(self) -> str:  # no words in logs
        return f"<Plan steps_done={self.steps_done} shared={self.shared_with_therapist}>"


def clean_answer(words: str) -> str:
    """The answer as stored: each line's spaces collapsed, empty lines dropped; checked
    against the limit. A step may hold several short items, one a line."""
    lines = [" ".join(line.split()) for line in (words or "").splitlines()]
    cleaned = "\n".join(line for line in lines if line)
    if not cleaned:
        raise EmptyAnswer()
    if len(cleaned) > MAX_CHARS:
        raise AnswerTooLong(len(cleaned))
    return cleaned


class SafetyPlanRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def of_client(self, client_id: int) -> SafetyPlan | None:
        return await self.session.scalar(select(SafetyPlan).where(SafetyPlan.client_id == client_id))

    async def get_or_add(self, client_id: int) -> SafetyPlan:
        plan = await self.of_client(client_id)
        if plan is None:
            plan = SafetyPlan(client_id=client_id, steps_done=0, shared_with_therapist=False)
            self.session.add(plan)
        return plan

    async def delete(self, plan: SafetyPlan) -> None:
        await self.session.delete(plan)


def _client_id(actor: Identity) -> int:
    if actor.role is not Role.CLIENT or actor.person_id is None:
        raise NotTheOwner("role")
    return actor.person_id


def _step(step: str) -> str:
    if step not in STEPS:
        raise UnknownStep(step)
    return step


def _plan(row: SafetyPlan) -> Plan:
    return Plan({step: getattr(row, step) for step in STEPS}, row.steps_done, row.shared_with_therapist)


class SafetyPlanService:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def plan(self, actor: Identity) -> Plan | None:
        """The actor's own plan, or None."""
        client_id = _client_id(actor)
        async with self._sessions() as session:
            row = await SafetyPlanRepository(session).of_client(client_id)
            return _plan(row) if row is not None else None

    async def answer(self, actor: Identity, step: str, words: str, *, building: bool) -> Plan:
        """Store the answer to ``step`` at once (cleaned, see ``clean_answer``). While
        ``building`` the plan, the step counts as gone through."""
        client_id = _client_id(actor)
        cleaned = clean_answer(words)
        async with self._sessions.begin() as session:
            row = await SafetyPlanRepository(session).get_or_add(client_id)
            setattr(row, _step(step), cleaned)
            if building:
                row.steps_done = max(row.steps_done, STEPS.index(step) + 1)
            await session.flush()
            return _plan(row)

    async def skip(self, actor: Identity, step: str) -> Plan:
        """While building: go past ``step`` without an answer (what it held stays)."""
        client_id = _client_id(actor)
        async with self._sessions.begin() as session:
            row = await SafetyPlanRepository(session).get_or_add(client_id)
            row.steps_done = max(row.steps_done, STEPS.index(_step(step)) + 1)
            await session.flush()
            return _plan(row)

    async def clear_step(self, actor: Identity, step: str) -> Plan:
        """Empty one step of an existing plan."""
        client_id = _client_id(actor)
        async with self._sessions.begin() as session:
            row = await SafetyPlanRepository(session).of_client(client_id)
            if row is None:
                raise NoPlan()
            setattr(row, _step(step), None)
            await session.flush()
            return _plan(row)

    async def start_over(self, actor: Identity) -> Plan:
        """Every step emptied, building begins again at step 1, and the plan is no longer
        shared (the client is asked again at the end)."""
        client_id = _client_id(actor)
        async with self._sessions.begin() as session:
            row = await SafetyPlanRepository(session).get_or_add(client_id)
            for step in STEPS:
                setattr(row, step, None)
            row.steps_done = 0
            was_shared, row.shared_with_therapist = row.shared_with_therapist, False
            if was_shared:
                await self._audit(session, actor, client_id, "safety_plan.unshared")
            await session.flush()
            return _plan(row)

    async def share(self, actor: Identity, shared: bool) -> Plan:
        """Share the plan with the therapist, or stop sharing it (audited, no content)."""
        client_id = _client_id(actor)
        async with self._sessions.begin() as session:
            row = await SafetyPlanRepository(session).of_client(client_id)
            if row is None:
                raise NoPlan()
            if row.shared_with_therapist != shared:
                row.shared_with_therapist = shared
                await self._audit(session, actor, client_id, "safety_plan.shared" if shared else "safety_plan.unshared")
            await session.flush()
            return _plan(row)

    async def delete(self, actor: Identity) -> bool:
        """Delete the actor's plan; False when there was none."""
        client_id = _client_id(actor)
        async with self._sessions.begin() as session:
            repo = SafetyPlanRepository(session)
            row = await repo.of_client(client_id)
            if row is None:
                return False
            await repo.delete(row)
            await self._audit(session, actor, client_id, "safety_plan.deleted")
            return True

    async def for_therapist(self, actor: Identity, client_id: int) -> Plan:
        """A client's plan as their current therapist may read it: only while the client
        shares it. Raises NotTheOwner (``role``, ``not_linked``, ``not_shared``) or NoPlan."""
        if actor.role is not Role.THERAPIST or actor.person_id is None:
            raise NotTheOwner("role")
        async with self._sessions() as session:
            link = await LinkRepository(session).active(actor.person_id, client_id)
            if link is None:
                raise NotTheOwner("not_linked")
            row = await SafetyPlanRepository(session).of_client(client_id)
            if row is None:
                raise NoPlan()
            if not row.shared_with_therapist:
                raise NotTheOwner("not_shared")
            return _plan(row)

    @staticmethod
    async def _audit(session: AsyncSession, actor: Identity, client_id: int, action: str) -> None:
        await AuditRepository(session).record(
            actor_telegram_id=actor.telegram_id,
            actor_role=actor.role.value if actor.role else None,
            action=action,
            subject_person_id=client_id,
        )
