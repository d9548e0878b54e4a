"""Small typed repositories over an ``AsyncSession``.

No business logic and no commits: the caller (a service) owns the session and
its transaction, e.g. ``async with factory() as session, session.begin(): ...``.
Methods that add rows flush, so generated ids are available right away.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, TypeAlias

from sqlalchemy import delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from bot.db.models import AuditEvent, ConversationState, Invite, Person, Role
from bot.db.types import utcnow

#: python-telegram-bot's ConversationKey: a tuple of chat/user ids (ints or strs).
ConversationKey: TypeAlias = tuple[int | str, ...]


class PeopleRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, person_id: int) -> Person | None:
        return await self.session.get(Person, person_id)

    async def get_by_telegram_id(self, telegram_id: int) -> Person | None:
        return await self.session.scalar(select(Person).where(Person.telegram_id == telegram_id))

    async def add(self, person: Person) -> Person:
        """Add ``person`` and flush: assigns ``person.id``, raises IntegrityError on a duplicate."""
        self.session.add(person)
        await self.session.flush()
        return person

    async def ensure_admin(self, telegram_id: int, language: str, timezone: str) -> Person:
        """Return the person with ``telegram_id``, made an active admin.

        Creates them (with ``language`` and ``timezone``) when unknown; an existing
        person keeps their own language and timezone and is promoted/reactivated.
        Idempotent; meant for startup (the admin ids come from the configuration).
        """
        person = await self.get_by_telegram_id(telegram_id)
        if person is None:
            return await self.add(
                Person(
                    telegram_id=telegram_id, role=Role.ADMIN, language=language, timezone=timezone
                )
            )
        if person.role is not Role.ADMIN or not person.active:
            person.role = Role.ADMIN
            person.active = True
            await self.session.flush()
        return person

    async def touch_last_seen(self, telegram_id: int, when: datetime | None = None) -> bool:
        """Set ``last_seen_at`` (default: now) without loading the row.

        ``updated_at`` is deliberately left alone: it records profile changes, not
        activity. Returns False when no person has this Telegram id.
        """
        result = await self.session.execute(
            update(Person)
            .where(Person.telegram_id == telegram_id)
            # SET updated_at = updated_at: suppresses the column's onupdate default
            .values(last_seen_at=when or utcnow(), updated_at=Person.updated_at)
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]


class InviteRepository:
    """One-time invites. Only token hashes ever reach this class (never a raw token)."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, invite: Invite) -> Invite:
        """Add ``invite`` and flush (assigns its id; IntegrityError on a duplicate hash)."""
        self.session.add(invite)
        await self.session.flush()
        return invite

    async def get(self, invite_id: int) -> Invite | None:
        return await self.session.get(Invite, invite_id)

    async def by_token_hash(self, token_hash: str) -> Invite | None:
        return await self.session.scalar(select(Invite).where(Invite.token_hash == token_hash))

    async def claim(self, token_hash: str, used_by_id: int, now: datetime) -> Invite | None:
        """Use the invite up, atomically: the single-use step.

        One conditional UPDATE (not used, not revoked, not expired at ``now``): of two
        concurrent claims only one sees a rowcount of 1, the other gets None. Runs in the
        caller's transaction, so a rolled-back enrollment also un-claims the invite.
        Returns the claimed invite (refreshed), or None when it was not claimable.
        """
        result = await self.session.execute(
            update(Invite)
            .where(
                Invite.token_hash == token_hash,
                Invite.used_at.is_(None),
                Invite.revoked_at.is_(None),
                Invite.expires_at > now,
            )
            .values(used_at=now, used_by_id=used_by_id)
            .execution_options(synchronize_session=False)
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            return None
        invite = await self.by_token_hash(token_hash)
        if invite is not None:
            await self.session.refresh(invite, ["used_at", "used_by_id"])
        return invite

    async def revoke(self, invite_id: int, now: datetime) -> bool:
        """Revoke an unused invite; False when it was already used or revoked."""
        result = await self.session.execute(
            update(Invite)
            .where(Invite.id == invite_id, Invite.used_at.is_(None), Invite.revoked_at.is_(None))
            .values(revoked_at=now)
            .execution_options(synchronize_session=False)
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]


class AuditRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def record(
        self,
        actor_telegram_id: int | None,
        actor_role: Role | str | None,
        action: str,
        subject_person_id: int | None = None,
        detail: Mapping[str, Any] | None = None,
    ) -> AuditEvent:
        """Append an audit event. ``actor_telegram_id=None`` means the system.

        ``detail`` must be JSON-serializable and hold ids/codes only, never
        anything a person wrote.
        """
        event = AuditEvent(
            actor_telegram_id=actor_telegram_id,
            actor_role=str(actor_role) if actor_role is not None else None,
            action=action,
            subject_person_id=subject_person_id,
            detail=dict(detail) if detail is not None else None,
        )
        self.session.add(event)
        await self.session.flush()
        return event

    async def recent(
        self,
        limit: int = 50,
        actor: int | None = None,
        action: str | None = None,
        subject: int | None = None,
    ) -> Sequence[AuditEvent]:
        """The newest events first, optionally only those of one actor (Telegram id), about
        one subject (person id), and/or with one action (``"invite.*"``: a family of actions)."""
        query = select(AuditEvent).order_by(AuditEvent.occurred_at.desc(), AuditEvent.id.desc())
        if actor is not None:
            query = query.where(AuditEvent.actor_telegram_id == actor)
        if subject is not None:
            query = query.where(AuditEvent.subject_person_id == subject)
        if action is not None and action.endswith("*"):
            query = query.where(AuditEvent.action.startswith(action[:-1], autoescape=True))
        elif action is not None:
            query = query.where(AuditEvent.action == action)
        return (await self.session.scalars(query.limit(limit))).all()


def encode_conversation_key(key: ConversationKey) -> str:
    """``(123, -456)`` -> ``'[123,-456]'``: compact, unambiguous, keeps int vs str."""
    for part in key:
        if isinstance(part, bool) or not isinstance(part, int | str):
            raise TypeError(f"conversation key parts must be int or str, got {type(part).__name__}")
    return json.dumps(list(key), separators=(",", ":"), ensure_ascii=False)


def decode_conversation_key(encoded: str) -> ConversationKey:
    return tuple(json.loads(encoded))


class ConversationStateRepository:
    """Rows of ``conversation_states`` (python-telegram-bot ConversationHandler states)."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def load(self, name: str) -> dict[ConversationKey, object]:
        rows = await self.session.execute(
            select(ConversationState.key, ConversationState.state).where(
                ConversationState.name == name
            )
        )
        return {decode_conversation_key(key): state for key, state in rows}

    async def save(self, name: str, key: ConversationKey, state: object | None) -> None:
        """Insert or update the state of one conversation; ``None`` deletes it.

        ``state`` must be JSON-serializable (python-telegram-bot states are ints
        or strings in this project); anything else raises TypeError here rather
        than at commit.
        """
        encoded_key = encode_conversation_key(key)
        if state is None:
            await self.session.execute(
                delete(ConversationState).where(
                    ConversationState.name == name, ConversationState.key == encoded_key
                )
            )
            return
        try:
            json.dumps(state)
        except (TypeError, ValueError) as exc:
            raise TypeError(
                f"conversation state of {name!r} is not JSON-serializable: {type(state).__name__}"
            ) from exc

        values = {"name": name, "key": encoded_key, "state": state, "updated_at": utcnow()}
        dialect = self.session.get_bind().dialect.name
        statement: sqlite.Insert | postgresql.Insert
        if dialect == "sqlite":
            statement = sqlite.insert(ConversationState).values(values)
        elif dialect == "postgresql":
            statement = postgresql.insert(ConversationState).values(values)
        else:
            raise NotImplementedError(f"no upsert for the {dialect!r} dialect")
        statement = statement.on_conflict_do_update(
            index_elements=[ConversationState.name, ConversationState.key],
            set_={
                "state": statement.excluded.state,
                "updated_at": statement.excluded.updated_at,
            },
        )
        await self.session.execute(statement)
