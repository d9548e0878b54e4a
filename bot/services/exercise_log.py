"""The practice log of /practice: one row per calming exercise a client does, with the 0-10
distress ratings before and after (encrypted under the client's key).

The rating before is stored the moment it is given, so stopping (or a restart) loses
nothing already answered; ``finish`` adds the rating after, ``stop`` marks the open
exercises of a client as stopped early. Every method checks that the actor is an enrolled
client and, for a run id taken from a button, that the run is theirs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.db.engine import single_read
from bot.db.models import Person, ExerciseRun, Role, SafePlace
from bot.db.types import utcnow
from bot.services.people import Identity

RATINGS = range(0, 11)


@dataclass(frozen=True)
class Change:
    exercise: str
    before: int | None = field(repr=False)
    after: int | None = field(repr=False)
    recorded: bool = True  # False: the exercise had ended already (a stale button)


@dataclass(frozen=True)
class Run:
    """A timed exercise under way: where it is, and whose it is (nothing clinical)."""

    run_id: int
    exercise: str
    telegram_id: int
    language: str
    message_id: int
    step: int
    since: datetime


class ExerciseRunRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, row: ExerciseRun) -> ExerciseRun:
        self.session.add(row)
        await self.session.flush()
        return row

    async def get_of(self, run_id: int, client_id: int) -> ExerciseRun | None:
        return await self.session.scalar(
            select(ExerciseRun).where(
                ExerciseRun.id == run_id, ExerciseRun.client_id == client_id
            )
        )

    async def runs_since(self, since: datetime) -> list[Run]:
        rows = await self.session.execute(
            select(
                ExerciseRun.id, ExerciseRun.exercise, Person.telegram_id, Person.language,
                ExerciseRun.run_message_id, ExerciseRun.run_step, ExerciseRun.run_step_since,
            )
            .join(Person, Person.id == ExerciseRun.client_id)
            .where(
                ExerciseRun.run_step_since >= since,
                ExerciseRun.ended_at.is_(None),
                ExerciseRun.run_message_id.is_not(None),
                Person.role == Role.CLIENT,
                Person.active.is_(True),
            )
            .order_by(ExerciseRun.run_step_since)
        )
        # (the WHERE clause leaves out the NULLs; the test says so to the type checker)
        return [Run(r, e, t, lang, m, s, at) for r, e, t, lang, m, s, at in rows
                if m is not None and s is not None and at is not None]

    async def open_of(self, client_id: int) -> list[ExerciseRun]:
        return list(
            await self.session.scalars(
                select(ExerciseRun).where(
                    ExerciseRun.client_id == client_id, ExerciseRun.ended_at.is_(None)
                )
            )
        )


def _client_id(actor: Identity) -> int:
    if actor.role is not Role.CLIENT or actor.person_id is None:
        raise PermissionError("only enrolled clients practise")
    return actor.person_id


class ExerciseLogService:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def begin(self, actor: Identity, exercise: str, before: int) -> int:
        """A new exercise with its rating before; earlier open ones end as stopped early."""
        client_id = _client_id(actor)
        if before not in RATINGS:
            raise ValueError("a rating is 0-10")
        async with self._sessions.begin() as session:
            repo = ExerciseRunRepository(session)
            now = utcnow()
            for row in await repo.open_of(client_id):
                row.ended_at, row.stopped_early = now, True
            row = await repo.add(
                ExerciseRun(client_id=client_id, exercise=exercise, distress_before=str(before))
            )
            return row.id

    async def finish(self, actor: Identity, run_id: int, after: int) -> Change | None:
        """The rating after, for the actor's own session; None when it is not theirs. Only an
        exercise under way takes it: one already rated, stopped or replaced by a newer one
        (an old message's button) is left as it is, and ``recorded`` is False."""
        client_id = _client_id(actor)
        if after not in RATINGS:
            raise ValueError("a rating is 0-10")
        async with self._sessions.begin() as session:
            row = await ExerciseRunRepository(session).get_of(run_id, client_id)
            if row is None:
                return None
            if row.distress_after is not None or row.ended_at is not None:
                return Change(row.exercise, _int(row.distress_before), _int(row.distress_after), recorded=False)
            row.distress_after = str(after)
            row.ended_at = utcnow()
            return Change(row.exercise, _int(row.distress_before), after)

    async def mark_run(self, actor: Identity, run_id: int, message_id: int, step: int, since: datetime) -> bool:
        """A timed exercise shows ``step`` in ``message_id`` from ``since`` (for resuming it
        after a restart). False when the session is not the actor's or has ended."""
        client_id = _client_id(actor)
        async with self._sessions.begin() as session:
            row = await ExerciseRunRepository(session).get_of(run_id, client_id)
            if row is None or row.ended_at is not None:
                return False
            row.run_message_id, row.run_step, row.run_step_since = message_id, step, since
            return True

    async def pause_run(self, actor: Identity, run_id: int, step: int) -> bool:
        """A timed exercise is paused at ``step``: no message shows it any more, so a restart
        does not resume it (``runs_since`` skips it); ``paused_run`` finds it again."""
        client_id = _client_id(actor)
        async with self._sessions.begin() as session:
            row = await ExerciseRunRepository(session).get_of(run_id, client_id)
            if row is None or row.ended_at is not None:
                return False
            row.run_message_id, row.run_step, row.run_step_since = None, step, utcnow()
            return True

    async def paused_run(self, actor: Identity) -> tuple[int, str, int] | None:
        """The actor's paused timed exercise: (run id, exercise, step), or None."""
        client_id = _client_id(actor)
        async with self._sessions() as session:
            await single_read(session)
            rows = await ExerciseRunRepository(session).open_of(client_id)
        paused = [r for r in rows if r.run_message_id is None and r.run_step is not None]
        if not paused:
            return None
        row = max(paused, key=lambda r: r.started_at)
        assert row.run_step is not None  # as filtered above
        return row.id, row.exercise, row.run_step

    async def runs_since(self, since: datetime) -> list[Run]:
        """The timed exercises under way that showed a step since ``since``: the bot's own
        question at start-up (not an actor's), answered from non-clinical columns only."""
        async with self._sessions() as session:
            return await ExerciseRunRepository(session).runs_since(since)

    async def owns(self, actor: Identity, run_id: int) -> bool:
        client_id = _client_id(actor)
        async with self._sessions() as session:
            await single_read(session)
            return await ExerciseRunRepository(session).get_of(run_id, client_id) is not None

    async def open_ids(self, actor: Identity) -> list[int]:
        """The actor's exercises not ended yet, oldest first."""
        client_id = _client_id(actor)
        async with self._sessions() as session:
            await single_read(session)
            rows = await ExerciseRunRepository(session).open_of(client_id)
            return [row.id for row in sorted(rows, key=lambda r: r.started_at)]

    async def open_rating_before(self, actor: Identity) -> int | None:
        """The highest rating before among the actor's exercises under way (None: none under
        way, or not a client): asked before a stop, to offer support after a high one."""
        if actor.role is not Role.CLIENT or actor.person_id is None:
            return None
        async with self._sessions() as session:
            await single_read(session)
            rows = await ExerciseRunRepository(session).open_of(actor.person_id)
            ratings = [_int(row.distress_before) for row in rows]
            return max((r for r in ratings if r is not None), default=None)

    async def stop(self, actor: Identity) -> int:
        """End the actor's open exercises as stopped early (their ratings are kept)."""
        if actor.role is not Role.CLIENT or actor.person_id is None:
            return 0
        async with self._sessions.begin() as session:
            rows = await ExerciseRunRepository(session).open_of(actor.person_id)
            now = utcnow()
            for row in rows:
                row.ended_at, row.stopped_early = now, True
            return len(rows)

    # -- the safe place -------------------------------------------------------------------

    async def safe_place(self, actor: Identity) -> dict[str, str | None] | None:
        """The actor's safe place ({"see", "hear", "feel"}), or None."""
        client_id = _client_id(actor)
        async with self._sessions() as session:
            await single_read(session)
            place = await session.scalar(select(SafePlace).where(SafePlace.client_id == client_id))
            if place is None:
                return None
            return {field: getattr(place, field) for field in SAFE_FIELDS}

    async def save_safe_place(self, actor: Identity, field: str, words: str) -> None:
        """One answer, stored at once (a stop after it keeps it)."""
        client_id = _client_id(actor)
        if field not in SAFE_FIELDS:
            raise ValueError(field)
        async with self._sessions.begin() as session:
            place = await session.scalar(select(SafePlace).where(SafePlace.client_id == client_id))
            if place is None:
                place = SafePlace(client_id=client_id)
                session.add(place)
            setattr(place, field, words)

    async def delete_safe_place(self, actor: Identity) -> bool:
        client_id = _client_id(actor)
        async with self._sessions.begin() as session:
            place = await session.scalar(select(SafePlace).where(SafePlace.client_id == client_id))
            if place is None:
                return False
            await session.delete(place)
            return True


SAFE_FIELDS = ("see", "hear", "feel")


def _int(value: str | None) -> int | None:
    return int(value) if value is not None else None
