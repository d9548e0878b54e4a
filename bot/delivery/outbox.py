"""The outbox service: how the rest of the bot queues a message it sends on its own initiative.

    await services.outbox.enqueue(
        person_id, kind=OutboxKind.CHECK_IN_PROMPT, idempotency_key=f"check-in:{appointment_id}",
        content_key="delivery.check_in_prompt", params={"day": "Tuesday"}, due_at=when,
    )
    await services.outbox.enqueue(
        therapist_id, kind=OutboxKind.SUMMARY, idempotency_key=f"summary:{check_in_id}",
        text=summary_html, subject_id=client_id,
    )

* ``content_key`` + ``params``: rendered in the recipient's language when sent. Parameters
  are stored in clear: ids, numbers, dates, never anything a person wrote.
* ``text``: ready Telegram HTML (escape what you fill in), stored encrypted under the
  recipient's data key. For anything clinical.

The idempotency key is unique: queueing the same key again does nothing (``None``), so a
caller may retry freely. Nothing is queued for a person who is not active (they blocked
the bot, or were deactivated): ``None`` again.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time
from typing import Any

from sqlalchemy import BigInteger, Insert, Integer, String, cast, delete, func, literal, literal_column, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.crypto.fields import new_row_id
from bot.db.delivery_models import OutboxKind, OutboxMessage, OutboxState, QuietHours, ReminderSchedule
from bot.db.models import Person
from bot.db.types import id_among, utcnow
from bot.delivery.clock import Clock

#: Rows per multi-row INSERT (SQLite allows 32,766 parameters per statement).
_INSERT_CHUNK = 500
_outbox = OutboxMessage.__table__


def dialect_of(session: AsyncSession) -> str:
    return session.get_bind().dialect.name


@dataclass(frozen=True)
class PlainMessage:
    """A message whose text is built from content when it is sent (no clinical payload)."""

    recipient_id: int
    kind: OutboxKind
    idempotency_key: str
    due_at: datetime
    content_key: str
    params: Mapping[str, Any] | None = None
    expires_at: datetime | None = None
    subject_id: int | None = None
    broadcast_id: int | None = None  # a staff broadcast's row (bot.services.broadcasts)


class OutboxService:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], *, clock: Clock = utcnow) -> None:
        self._sessions = sessions
        self._clock = clock

    # -- queueing ------------------------------------------------------------------------------

    async def enqueue(
        self,
        recipient_id: int,
        *,
        kind: OutboxKind,
        idempotency_key: str,
        due_at: datetime | None = None,
        expires_at: datetime | None = None,
        content_key: str | None = None,
        params: Mapping[str, Any] | None = None,
        text: str | None = None,
        subject_id: int | None = None,
    ) -> int | None:
        """Queue one message; its id, or None when the key was queued before or the
        recipient is not active. Give exactly one of ``content_key`` and ``text``."""
        if (content_key is None) == (text is None):
            raise ValueError("give either content_key (+ params) or text, not both")
        if text is not None and params:
            raise ValueError("params go with content_key; fill them into text yourself")
        due_at = due_at or self._clock()
        async with self._sessions.begin() as session:
            if not await session.scalar(select(Person.active).where(Person.id == recipient_id)):
                return None
            if content_key is not None:
                ids = await self.insert_plain(
                    session,
                    [
                        PlainMessage(
                            recipient_id, kind, idempotency_key, due_at, content_key,
                            params, expires_at, subject_id,
                        )
                    ],
                    check_active=False,
                )
                return ids[0] if ids else None
            assert text is not None  # exactly one of the two: checked above
            return await self.add_text(
                session, recipient_id, kind=kind, idempotency_key=idempotency_key, text=text,
                due_at=due_at, expires_at=expires_at, subject_id=subject_id,
            )

    async def add_text(
        self,
        session: AsyncSession,
        recipient_id: int,
        *,
        kind: OutboxKind,
        idempotency_key: str,
        text: str,
        due_at: datetime | None = None,
        expires_at: datetime | None = None,
        subject_id: int | None = None,
    ) -> int | None:
        """Queue a text (stored encrypted under the recipient's key) in the caller's
        transaction, so that it is queued if and only if the change that causes it commits.
        None when the key was queued before."""
        if await session.scalar(select(_outbox.c.id).where(_outbox.c.idempotency_key == idempotency_key)):
            return None
        row = OutboxMessage(
            idempotency_key=idempotency_key,
            kind=kind,
            recipient_id=recipient_id,
            subject_id=subject_id,
            body=text,
            state=OutboxState.PENDING,
            due_at=due_at or self._clock(),
            expires_at=expires_at,
            attempts=0,
        )
        try:
            async with session.begin_nested():  # a concurrent enqueue of the same key
                session.add(row)
                await session.flush()
        except IntegrityError:
            return None
        return row.id

    async def enqueue_many(self, messages: Iterable[PlainMessage]) -> int:
        """Queue many plain messages (a broadcast); the number actually queued (duplicates
        and inactive recipients are skipped)."""
        async with self._sessions.begin() as session:
            return len(await self.insert_plain(session, list(messages)))

    async def insert_plain(
        self, session: AsyncSession, messages: Sequence[PlainMessage], *, check_active: bool = True
    ) -> list[int]:
        """INSERT ... ON CONFLICT (idempotency_key) DO NOTHING, in chunks, in the caller's
        transaction; the ids of the rows inserted."""
        if check_active and messages:
            wanted = {m.recipient_id for m in messages}
            active: set[int] = set()
            ids = list(wanted)
            for start in range(0, len(ids), _INSERT_CHUNK):
                chunk = ids[start : start + _INSERT_CHUNK]
                active.update(
                    await session.scalars(
                        select(Person.id).where(Person.id.in_(chunk), Person.active.is_(True))
                    )
                )
            messages = [m for m in messages if m.recipient_id in active]
        insert = postgresql.insert if dialect_of(session) == "postgresql" else sqlite.insert
        # One statement, many parameter sets: SQLAlchemy batches them into multi-row
        # INSERTs ("insertmanyvalues") and caches the compiled statement.
        statement = (
            insert(_outbox)
            .on_conflict_do_nothing(index_elements=["idempotency_key"])
            .returning(_outbox.c.id)
        )
        now = self._clock()
        inserted: list[int] = []
        for start in range(0, len(messages), _INSERT_CHUNK):
            values = [
                {
                    "id": new_row_id(),
                    "idempotency_key": m.idempotency_key,
                    "kind": m.kind,
                    "recipient_id": m.recipient_id,
                    "subject_id": m.subject_id,
                    "broadcast_id": m.broadcast_id,
                    "content_key": m.content_key,
                    "params": dict(m.params) if m.params else None,
                    "state": OutboxState.PENDING,
                    "due_at": m.due_at,
                    "expires_at": m.expires_at,
                    "attempts": 0,
                    "created_at": now,
                }
                for m in messages[start : start + _INSERT_CHUNK]
            ]
            inserted.extend(await session.scalars(statement, values))
        return inserted

    def from_schedules(
        self,
        session: AsyncSession,
        schedule_ids: Sequence[int],
        *,
        due_at: datetime,
        expires_at: datetime,
        local_date: date,
    ) -> Insert:
        """``INSERT ... SELECT`` of one occurrence of each of ``schedule_ids`` (rows of
        ``reminder_schedules`` sharing it), keyed ``schedule:<id>:<local date>`` like
        bot.delivery.schedules.schedule_key, ``ON CONFLICT (idempotency_key) DO NOTHING``:
        one statement for many reminders, for the planner to execute in its transaction.
        Their ids are random 63-bit integers drawn by the database (no body is encrypted
        under them, so they need not be known beforehand)."""
        s = ReminderSchedule.__table__
        postgres = dialect_of(session) == "postgresql"
        if postgres:
            # Two draws: random() has 52 random bits, an id 63. Range 1 .. 2**63 - 2**32.
            row_id = literal_column(
                "(floor(random() * 2147483647)::bigint * 4294967296"
                " + floor(random() * 4294967296)::bigint + 1)", BigInteger,
            )
        else:  # SQLite's random() is a 64-bit signed integer
            row_id = literal_column("(abs(random() % 9223372036854775807) + 1)", BigInteger)
        key = literal("schedule:") + cast(s.c.id, String) + literal(f":{local_date.isoformat()}")
        rows = select(
            row_id,
            key,
            s.c.kind,
            s.c.person_id,
            s.c.content_key,
            s.c.params,
            literal(OutboxState.PENDING, _outbox.c.state.type),
            literal(due_at, _outbox.c.due_at.type),
            literal(expires_at, _outbox.c.expires_at.type),
            literal(0, Integer),
            literal(self._clock(), _outbox.c.created_at.type),
        ).where(id_among(s.c.id, schedule_ids, "postgresql" if postgres else "sqlite"))
        insert = postgresql.insert if postgres else sqlite.insert
        return (
            insert(_outbox)
            .from_select(
                ["id", "idempotency_key", "kind", "recipient_id", "content_key", "params",
                 "state", "due_at", "expires_at", "attempts", "created_at"],
                rows,
            )
            .on_conflict_do_nothing(index_elements=["idempotency_key"])
        )

    async def cancel_pending(
        self,
        *,
        recipient_id: int | None = None,
        key_prefix: str | None = None,
        broadcast_id: int | None = None,
        session: AsyncSession | None = None,
    ) -> int:
        """Delete queued messages not sent yet (their keys become free again): a person's,
        those whose idempotency key starts with ``key_prefix`` (a schedule's), or a staff
        broadcast's. In the caller's ``session`` (transaction) if given."""
        if recipient_id is None and key_prefix is None and broadcast_id is None:
            raise ValueError("cancel by recipient, by key prefix, by broadcast, or a combination")
        statement = delete(_outbox).where(_outbox.c.state == OutboxState.PENDING)
        if recipient_id is not None:
            statement = statement.where(_outbox.c.recipient_id == recipient_id)
        if broadcast_id is not None:
            statement = statement.where(_outbox.c.broadcast_id == broadcast_id)
        if key_prefix is not None:
            escaped = key_prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            statement = statement.where(_outbox.c.idempotency_key.like(f"{escaped}%", escape="\\"))
        if session is not None:
            result = await session.execute(statement)
            return int(result.rowcount or 0)  # type: ignore[attr-defined]
        async with self._sessions.begin() as own:
            result = await own.execute(statement)
            return int(result.rowcount or 0)  # type: ignore[attr-defined]

    # -- quiet hours ---------------------------------------------------------------------------

    async def set_quiet_hours(self, person_id: int, starts: time, ends: time) -> None:
        """Nothing reaches ``person_id`` between ``starts`` and ``ends`` (their own zone;
        overnight when ``ends`` <= ``starts``): messages wait until the quiet hours end, or
        are dropped if that is past their grace window."""
        async with self._sessions.begin() as session:
            existing = await session.get(QuietHours, person_id)
            if existing is None:
                session.add(QuietHours(person_id=person_id, starts=starts, ends=ends))
            else:
                existing.starts, existing.ends = starts, ends

    async def clear_quiet_hours(self, person_id: int) -> None:
        async with self._sessions.begin() as session:
            await session.execute(delete(QuietHours).where(QuietHours.person_id == person_id))

    # -- looking ---------------------------------------------------------------------------------

    async def counts(self) -> dict[OutboxState, int]:
        """How many rows are in each state."""
        async with self._sessions() as session:
            rows = await session.execute(
                select(_outbox.c.state, func.count()).group_by(_outbox.c.state)
            )
            found = {OutboxState(state): int(count) for state, count in rows}
        return {state: found.get(state, 0) for state in OutboxState}

    async def get(self, idempotency_key: str) -> OutboxMessage | None:
        async with self._sessions() as session:
            return await session.scalar(
                select(OutboxMessage).where(OutboxMessage.idempotency_key == idempotency_key)
            )
