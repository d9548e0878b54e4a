"""Small typed repositories over an ``AsyncSession``.

No business logic and no commits: the caller (a service) owns the session and
its transaction, e.g. ``async with factory() as session, session.begin(): ...``.
Methods that add rows flush, so generated ids are available right away.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeAlias

from sqlalchemy import ColumnElement, String, Subquery, cast, delete, exists, func, literal, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from bot.db.models import (
    AuditEvent,
    ConsentChoice,
    ConsentRecord,
    ConversationState,
    Invite,
    Person,
    Role,
    TherapistClientLink,
)
from bot.db.delivery_models import OutboxMessage
from bot.db.types import id_among, utcnow

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

    async def with_role(self, role: Role) -> Sequence[Person]:
        """Everyone with this role, active or not, oldest first."""
        return (
            await self.session.scalars(
                select(Person).where(Person.role == role).order_by(Person.created_at, Person.id)
            )
        ).all()

    async def with_role_among(self, person_ids: Iterable[int], role: Role) -> set[int]:
        """Which of ``person_ids`` have ``role`` (ids only, one query)."""
        dialect = self.session.get_bind().dialect.name
        query = select(Person.id).where(id_among(Person.id, person_ids, dialect), Person.role == role)
        return set((await self.session.scalars(query)).all())

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


class LinkRepository:
    """Therapist-client links. A link ends (``ended_at``) rather than being deleted; at most
    one active link per client (a partial unique index)."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, therapist_id: int, client_id: int, now: datetime) -> TherapistClientLink:
        link = TherapistClientLink(therapist_id=therapist_id, client_id=client_id, started_at=now)
        self.session.add(link)
        await self.session.flush()
        return link

    async def active_for_client(self, client_id: int) -> TherapistClientLink | None:
        return await self.session.scalar(
            select(TherapistClientLink).where(
                TherapistClientLink.client_id == client_id, TherapistClientLink.ended_at.is_(None)
            )
        )

    async def active(self, therapist_id: int, client_id: int) -> TherapistClientLink | None:
        """The active link between exactly this therapist and this client (ownership)."""
        return await self.session.scalar(
            select(TherapistClientLink).where(
                TherapistClientLink.therapist_id == therapist_id,
                TherapistClientLink.client_id == client_id,
                TherapistClientLink.ended_at.is_(None),
            )
        )

    async def client_ids_of(self, therapist_id: int) -> Sequence[int]:
        """The clients a therapist is actively linked to, longest-linked first."""
        rows = await self.session.scalars(
            select(TherapistClientLink.client_id)
            .where(
                TherapistClientLink.therapist_id == therapist_id,
                TherapistClientLink.ended_at.is_(None),
            )
            .order_by(TherapistClientLink.started_at, TherapistClientLink.id)
        )
        return rows.all()

    async def clients_of(self, therapist_id: int) -> Sequence[tuple[TherapistClientLink, Person]]:
        """A therapist's active links with their clients, longest-linked first (one query;
        call ``FieldCrypto.prepare`` with ``client_ids_of`` first to fetch keys in one go)."""
        rows = await self.session.execute(
            select(TherapistClientLink, Person)
            .join(Person, Person.id == TherapistClientLink.client_id)
            .where(
                TherapistClientLink.therapist_id == therapist_id,
                TherapistClientLink.ended_at.is_(None),
            )
            .order_by(TherapistClientLink.started_at, TherapistClientLink.id)
        )
        return [(link, person) for link, person in rows]

    async def active_counts(self) -> dict[int, int]:
        """Number of active clients per therapist id (therapists without any are absent)."""
        rows = await self.session.execute(
            select(TherapistClientLink.therapist_id, func.count())
            .where(TherapistClientLink.ended_at.is_(None))
            .group_by(TherapistClientLink.therapist_id)
        )
        return {therapist_id: count for therapist_id, count in rows}

    async def end_all_of_therapist(self, therapist_id: int, now: datetime) -> Sequence[tuple[int, int]]:
        """End every active link of a therapist at ``now``; (link id, client id) of each link
        that ended, longest-linked first."""
        ended = (
            await self.session.execute(
                select(TherapistClientLink.id, TherapistClientLink.client_id)
                .where(
                    TherapistClientLink.therapist_id == therapist_id,
                    TherapistClientLink.ended_at.is_(None),
                )
                .order_by(TherapistClientLink.started_at, TherapistClientLink.id)
            )
        ).all()
        await self.session.execute(
            update(TherapistClientLink)
            .where(
                TherapistClientLink.therapist_id == therapist_id,
                TherapistClientLink.ended_at.is_(None),
            )
            .values(ended_at=now)
            .execution_options(synchronize_session=False)
        )
        return [(link_id, client_id) for link_id, client_id in ended]

    async def unlinked_since(self, therapist_id: int, ended_at: datetime) -> Sequence[int]:
        """Clients whose link with this therapist ended at exactly ``ended_at`` and who have
        no active link now (e.g. the clients of a deactivated therapist, not yet moved)."""
        still_linked = select(TherapistClientLink.client_id).where(
            TherapistClientLink.ended_at.is_(None)
        )
        rows = await self.session.scalars(
            select(TherapistClientLink.client_id)
            .where(
                TherapistClientLink.therapist_id == therapist_id,
                TherapistClientLink.ended_at == ended_at,
                TherapistClientLink.client_id.not_in(still_linked),
            )
            .order_by(TherapistClientLink.id)
        )
        return rows.all()


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

    async def forget_actor(self, telegram_id: int) -> int:
        """Erasure: events this Telegram user did keep their role and action, not their id.
        Returns how many events were changed."""
        result = await self.session.execute(
            update(AuditEvent)
            .where(AuditEvent.actor_telegram_id == telegram_id)
            .values(actor_telegram_id=None)
            .execution_options(synchronize_session=False)
        )
        return int(result.rowcount)  # type: ignore[attr-defined]


class ConsentRepository:
    """Consent decisions, append-only: a withdrawal is a new row, nothing is ever updated."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(
        self, person_id: int, version: str, choice: ConsentChoice, when: datetime | None = None
    ) -> ConsentRecord:
        record = ConsentRecord(
            person_id=person_id, consent_version=version, choice=choice, recorded_at=when or utcnow()
        )
        self.session.add(record)
        await self.session.flush()
        return record

    async def latest(self, person_id: int) -> ConsentRecord | None:
        """The person's most recent decision (the one in force), or None."""
        return await self.session.scalar(
            select(ConsentRecord)
            .where(ConsentRecord.person_id == person_id)
            .order_by(ConsentRecord.recorded_at.desc(), ConsentRecord.id.desc())
            .limit(1)
        )

    async def granted_other_version(self, version: str, *, unless_queued: str) -> list[int]:
        """Active clients whose decision in force is a grant of a version other than
        ``version`` and who have no outbox row keyed ``unless_queued`` + their id yet (one
        query; for the notice of a new consent text)."""
        ranked = _ranked_decisions()
        queued_key = literal(unless_queued) + cast(ranked.c.person_id, String)
        rows = await self.session.scalars(
            select(ranked.c.person_id)
            .join(Person, Person.id == ranked.c.person_id)
            .where(
                ranked.c.n == 1,
                ranked.c.choice == ConsentChoice.GRANTED.value,
                ranked.c.consent_version != version,
                Person.role == Role.CLIENT,
                Person.active.is_(True),
            )
            .where(~exists().where(OutboxMessage.idempotency_key == queued_key))
            .order_by(ranked.c.person_id)
        )
        return list(rows)

    async def latest_choices(self, person_ids: Sequence[int]) -> dict[int, ConsentChoice]:
        """The choice in force for each of ``person_ids`` that has any record (one query)."""
        if not person_ids:
            return {}
        dialect = self.session.get_bind().dialect.name
        rows = await self.session.execute(
            select(Person.id, _choice_in_force()).where(id_among(Person.id, person_ids, dialect))
        )
        return {person_id: ConsentChoice(choice) for person_id, choice in rows if choice is not None}

    async def clients_choices(self, person_ids: Iterable[int]) -> dict[int, str | None]:
        """Which of ``person_ids`` are clients, each with the value of their choice in force
        (None: no decision recorded); one query, for the outbox's consent check of
        thousands of recipients at once."""
        dialect = self.session.get_bind().dialect.name
        rows = await self.session.execute(
            select(Person.id, _choice_in_force(raw=True)).where(
                id_among(Person.id, person_ids, dialect), Person.role == Role.CLIENT
            )
        )
        return dict(rows.tuples().all())


def _choice_in_force(*, raw: bool = False) -> ColumnElement[Any]:
    """The choice of a person's newest decision, correlated with ``Person.id``: one probe of
    the index on (person_id, recorded_at) per person. (Numbering every decision of the
    people asked about, as ``_ranked_decisions`` does, makes PostgreSQL scan the whole table
    when they are thousands.) ``raw``: the stored text, without making an enum of each."""
    column = cast(ConsentRecord.choice, String) if raw else ConsentRecord.choice
    return (
        select(column)
        .where(ConsentRecord.person_id == Person.id)
        .order_by(ConsentRecord.recorded_at.desc(), ConsentRecord.id.desc())
        .limit(1)
        .scalar_subquery()
    )


def _ranked_decisions(*where: ColumnElement[bool]) -> Subquery:
    """Consent decisions numbered per person, newest first: ``n == 1`` is the one in force."""
    return (
        select(
            ConsentRecord.person_id,
            ConsentRecord.choice,
            ConsentRecord.consent_version,
            func.row_number()
            .over(
                partition_by=ConsentRecord.person_id,
                order_by=(ConsentRecord.recorded_at.desc(), ConsentRecord.id.desc()),
            )
            .label("n"),
        )
        .where(*where)
        .subquery()
    )


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

    async def load_all(self) -> dict[str, dict[ConversationKey, object]]:
        """Every conversation's states, by conversation name (one query)."""
        rows = await self.session.execute(
            select(ConversationState.name, ConversationState.key, ConversationState.state)
        )
        loaded: dict[str, dict[ConversationKey, object]] = {}
        for name, key, state in rows:
            loaded.setdefault(name, {})[decode_conversation_key(key)] = state
        return loaded

    async def get(self, name: str, key: ConversationKey) -> object | None:
        """The state of one conversation, or None."""
        return await self.session.scalar(
            select(ConversationState.state).where(
                ConversationState.name == name, ConversationState.key == encode_conversation_key(key)
            )
        )

    async def forget_user(self, user_id: int) -> int:
        """Erasure: delete every conversation state whose key names this Telegram user (or
        their private chat, which has the same id). Returns how many rows were deleted."""
        rows = await self.session.execute(
            select(ConversationState.name, ConversationState.key).where(
                ConversationState.key.contains(str(user_id))  # narrows; decoding decides
            )
        )
        mine = [(name, key) for name, key in rows if user_id in decode_conversation_key(key)]
        for name, key in mine:
            await self.session.execute(
                delete(ConversationState).where(
                    ConversationState.name == name, ConversationState.key == key
                )
            )
        return len(mine)

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
