"""The dispatcher's database work: claiming due rows, recording outcomes, recovering leases.

Claiming (one transaction, then the rows are ours until ``lease_until``)::

    SELECT id FROM outbox WHERE state = 'pending' AND due_at <= :now
    ORDER BY due_at LIMIT :n
    [FOR UPDATE SKIP LOCKED]                       -- PostgreSQL: instances take disjoint rows
    UPDATE outbox SET state = 'sending', claim_token = :token, lease_until = :now + lease,
                      attempts = attempts + 1
    WHERE id IN (:ids) AND state = 'pending'       -- the conditional UPDATE (SQLite's guard)
    RETURNING id, recipient_id, ...

On PostgreSQL the row locks taken by ``FOR UPDATE SKIP LOCKED`` keep concurrent claimers
apart. SQLite has no row locks (and serves one instance): its driver runs the SELECT
outside a write transaction, and the UPDATE's ``state = 'pending'`` condition makes the
claim atomic anyway, returning only the rows this claim really moved.

Every outcome is written with ``WHERE id = :id AND claim_token = :token AND state =
'sending'``: a dispatcher whose lease ran out (and whose row was claimed again) cannot
overwrite the newer claim's result.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Any

from sqlalchemy import bindparam, delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.crypto.errors import CryptoError
from bot.crypto.fields import FieldCrypto, Sealed
from bot.db.delivery_models import OutboxMessage, OutboxState, QuietHours
from bot.db.models import Person

_log = logging.getLogger(__name__)
_outbox = OutboxMessage.__table__
_people = Person.__table__
_quiet = QuietHours.__table__
_FINAL = (OutboxState.SENT, OutboxState.FAILED, OutboxState.DEAD)


@dataclass
class Claimed:
    """A row this process holds the lease of, with what sending it needs."""

    id: int
    token: str
    recipient_id: int
    chat_id: int
    language: str
    timezone: str
    recipient_active: bool
    kind: str
    content_key: str | None
    params: dict[str, Any] | None
    body: str | None
    undecryptable: bool
    due_at: datetime
    expires_at: datetime | None
    attempts: int  # including this one
    quiet_hours: tuple[time, time] | None


@dataclass(frozen=True)
class Outcome:
    """What became of a claimed row. ``state`` PENDING = try again at ``retry_at``."""

    row_id: int
    token: str
    state: OutboxState
    code: str | None = None
    message_id: int | None = None
    retry_at: datetime | None = None
    refund_attempt: bool = False  # the attempt does not count (flood wait, quiet hours, shutdown)
    deactivate_recipient: int | None = None  # 403: the person blocked the bot / is gone


class OutboxStore:
    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], crypto: FieldCrypto | None = None
    ) -> None:
        self._sessions = sessions
        self._crypto = crypto

    async def claim(self, now: datetime, limit: int, lease: timedelta) -> list[Claimed]:
        """Claim up to ``limit`` due rows, oldest first (see the module docstring)."""
        if limit <= 0:
            return []
        token = secrets.token_hex(16)
        async with self._sessions.begin() as session:
            candidates = (
                select(_outbox.c.id)
                .where(_outbox.c.state == OutboxState.PENDING, _outbox.c.due_at <= now)
                .order_by(_outbox.c.due_at)
                .limit(limit)
            )
            if session.get_bind().dialect.name == "postgresql":
                candidates = candidates.with_for_update(skip_locked=True)
            ids = list(await session.scalars(candidates))
            if not ids:
                return []
            claimed = (
                await session.execute(
                    update(_outbox)
                    .where(_outbox.c.id.in_(ids), _outbox.c.state == OutboxState.PENDING)
                    .values(
                        state=OutboxState.SENDING,
                        claim_token=token,
                        lease_until=now + lease,
                        attempts=_outbox.c.attempts + 1,
                    )
                    .returning(_outbox.c.id)
                )
            ).scalars().all()
            if not claimed:
                return []
            rows = (
                await session.execute(
                    select(
                        _outbox.c.id, _outbox.c.recipient_id, _outbox.c.kind,
                        _outbox.c.content_key, _outbox.c.params, _outbox.c.body,
                        _outbox.c.due_at, _outbox.c.expires_at, _outbox.c.attempts,
                        _people.c.telegram_id, _people.c.language, _people.c.timezone,
                        _people.c.active, _quiet.c.starts, _quiet.c.ends,
                    )
                    .join(_people, _people.c.id == _outbox.c.recipient_id)
                    .outerjoin(_quiet, _quiet.c.person_id == _outbox.c.recipient_id)
                    .where(_outbox.c.id.in_(claimed))
                    .order_by(_outbox.c.due_at)
                )
            ).all()
        return await self._to_claimed(rows, token)

    async def _to_claimed(self, rows: Sequence[Any], token: str) -> list[Claimed]:
        sealed_owners = {row.recipient_id for row in rows if row.body is not None}
        if sealed_owners and self._crypto is not None:
            try:
                await self._crypto.prepare(sealed_owners)  # one key-store query for all
            except CryptoError as exc:
                _log.warning("Could not prepare data keys for outbox rows (%s)", type(exc).__name__)
        result = []
        for row in rows:
            body, undecryptable = None, False
            if isinstance(row.body, Sealed):
                body, undecryptable = self._open(row.body, row.id, row.recipient_id)
            result.append(
                Claimed(
                    id=row.id,
                    token=token,
                    recipient_id=row.recipient_id,
                    chat_id=row.telegram_id,
                    language=row.language,
                    timezone=row.timezone,
                    recipient_active=bool(row.active),
                    kind=str(row.kind),
                    content_key=row.content_key,
                    params=row.params,
                    body=body,
                    undecryptable=undecryptable,
                    due_at=row.due_at,
                    expires_at=row.expires_at,
                    attempts=row.attempts,
                    quiet_hours=(row.starts, row.ends) if row.starts is not None else None,
                )
            )
        return result

    def _open(self, sealed: Sealed, row_id: int, owner_id: int) -> tuple[str | None, bool]:
        if self._crypto is None:
            return None, True
        try:
            plaintext = self._crypto.open(
                sealed.data, table="outbox", column="body", row_id=row_id, owner_id=owner_id
            )
        except CryptoError as exc:
            _log.warning("Outbox row %s does not decrypt (%s)", row_id, type(exc).__name__)
            return None, True
        return plaintext.decode("utf-8"), False

    async def record(self, outcomes: Iterable[Outcome], now: datetime) -> None:
        """Write outcomes (one transaction, one executemany per kind of outcome)."""
        sent: list[dict[str, Any]] = []
        retries: list[dict[str, Any]] = []
        final: list[dict[str, Any]] = []
        deactivate: set[int] = set()
        for o in outcomes:
            key = {"b_id": o.row_id, "b_token": o.token}
            if o.state is OutboxState.SENT:
                sent.append({**key, "b_message_id": o.message_id})
            elif o.state is OutboxState.PENDING:
                assert o.retry_at is not None
                retries.append(
                    {**key, "b_due": o.retry_at, "b_code": o.code, "b_refund": int(o.refund_attempt)}
                )
            else:
                final.append({**key, "b_state": o.state.value, "b_code": o.code})
            if o.deactivate_recipient is not None:
                deactivate.add(o.deactivate_recipient)
        ours = (
            (_outbox.c.id == bindparam("b_id"))
            & (_outbox.c.claim_token == bindparam("b_token"))
            & (_outbox.c.state == OutboxState.SENDING)
        )
        released = {"lease_until": None, "claim_token": None}  # a column name  # nosec B105
        async with self._sessions.begin() as session:
            if sent:
                await session.execute(
                    update(_outbox).where(ours).values(
                        state=OutboxState.SENT,
                        telegram_message_id=bindparam("b_message_id"),
                        finished_at=now,
                        last_error=None,
                        **released,
                    ),
                    sent,
                )
            if retries:
                await session.execute(
                    update(_outbox).where(ours).values(
                        state=OutboxState.PENDING,
                        due_at=bindparam("b_due"),
                        last_error=bindparam("b_code"),
                        attempts=_outbox.c.attempts - bindparam("b_refund"),
                        **released,
                    ),
                    retries,
                )
            if final:
                await session.execute(
                    update(_outbox).where(ours).values(
                        state=bindparam("b_state"),
                        last_error=bindparam("b_code"),
                        finished_at=now,
                        **released,
                    ),
                    final,
                )
            if deactivate:
                await self._deactivate(session, sorted(deactivate), now)

    async def _deactivate(self, session: AsyncSession, person_ids: list[int], now: datetime) -> None:
        """Telegram answered 403 (blocked, deactivated): the person is no longer active,
        and what was queued for them will not be sent."""
        await session.execute(
            update(_people).where(_people.c.id.in_(person_ids)).values(active=False, updated_at=now)
        )
        await session.execute(
            update(_outbox)
            .where(_outbox.c.recipient_id.in_(person_ids), _outbox.c.state == OutboxState.PENDING)
            .values(state=OutboxState.FAILED, last_error="recipient_inactive", finished_at=now)
        )
        _log.info("%d recipient(s) marked inactive after Telegram refused delivery", len(person_ids))

    async def release_expired_leases(self, now: datetime) -> int:
        """Rows left in 'sending' past their lease (a dispatcher crashed or hung while they
        were in flight) become pending again: they will be sent again, which is the only
        way a duplicate can happen. Their attempt still counts (a row that keeps crashing
        the process ends dead after OUTBOX_MAX_ATTEMPTS)."""
        async with self._sessions.begin() as session:
            result = await session.execute(
                update(_outbox)
                .where(_outbox.c.state == OutboxState.SENDING, _outbox.c.lease_until < now)
                .values(state=OutboxState.PENDING, lease_until=None, claim_token=None,
                        last_error="lease_expired", due_at=now)
            )
            count = int(result.rowcount or 0)  # type: ignore[attr-defined]
        if count:
            _log.warning("%d outbox row(s) were left in flight past their lease; retrying them", count)
        return count

    async def purge(self, before: datetime) -> int:
        """Delete finished rows due before ``before`` (their idempotency keys are never
        reused: schedule keys carry dates that are then long past)."""
        async with self._sessions.begin() as session:
            result = await session.execute(
                delete(_outbox).where(_outbox.c.state.in_(_FINAL), _outbox.c.due_at < before)
            )
            return int(result.rowcount or 0)  # type: ignore[attr-defined]
