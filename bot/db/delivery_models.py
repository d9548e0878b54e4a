"""Models of outbound delivery (bot.delivery): the outbox, recurring schedules, quiet hours
and the registry of running instances.

Imported at the end of bot.db.models, so ``Base.metadata`` (and Alembic) see these tables.

The outbox is the single source of truth for every message the bot sends on its own
initiative (never for direct replies). Its rows move through::

    pending --claim--> sending --Telegram accepted--> sent
       ^                  |  \\--permanent refusal (403, 400)--> failed
       |                  |   \\--retries exhausted / grace window passed--> dead
       \\--retry (5xx, network, 429, quiet hours, lease expired)--/

See bot.delivery for the crash semantics.
"""

# (no "from __future__ import annotations": SQLAlchemy would eval every Mapped[...] string at import)

import enum
from datetime import date, datetime, time
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    SmallInteger,
    String,
    false,
    true,
)
from sqlalchemy.orm import Mapped, mapped_column

from bot.crypto.fields import PersonId, encrypted, row_id_column
from bot.db.models import Base, _string_enum
from bot.db.types import utcnow


class OutboxKind(enum.StrEnum):
    REMINDER = "reminder"  # a recurring reminder (bot.delivery.schedules)
    CHECK_IN_PROMPT = "check_in_prompt"  # "time for your pre-appointment check-in"
    SUMMARY = "summary"  # a client's readiness summary, to their therapist (clinical)
    BROADCAST = "broadcast"  # a message from staff to many people
    NOTICE = "notice"  # from the bot about the service itself, e.g. a new consent version


class OutboxState(enum.StrEnum):
    PENDING = "pending"  # waiting for due_at
    SENDING = "sending"  # claimed by a dispatcher until lease_until
    SENT = "sent"  # Telegram accepted it (telegram_message_id)
    FAILED = "failed"  # Telegram refused it for good (blocked, deactivated, bad request)
    DEAD = "dead"  # given up: retries exhausted, or too late (past expires_at)


#: States a row never leaves.
FINAL_STATES = frozenset({OutboxState.SENT, OutboxState.FAILED, OutboxState.DEAD})


class OutboxMessage(Base):
    """One message the bot sends on its own initiative.

    The payload is either a content key + parameters (rendered in the recipient's language
    at send time; the parameters hold ids, numbers and dates, never clinical text) or
    ``body``, ready Telegram-HTML text encrypted under the recipient's data key (summaries
    and anything else clinical).
    """

    __tablename__ = "outbox"
    __table_args__ = (
        # The claim query: pending rows that are due, oldest first (also finds stale leases).
        Index("ix_outbox_state_due_at", "state", "due_at"),
        CheckConstraint("(content_key IS NULL) <> (body IS NULL)", name="one_payload"),
        CheckConstraint("attempts >= 0", name="attempts_not_negative"),
    )

    id: Mapped[int] = row_id_column()
    # Unique: enqueueing the same message twice is a no-op (e.g. "reminder:<schedule>:<date>").
    idempotency_key: Mapped[str] = mapped_column(String(200), unique=True)
    kind: Mapped[OutboxKind] = mapped_column(_string_enum(OutboxKind, "kind", length=32))
    recipient_id: Mapped[int] = mapped_column(
        PersonId, ForeignKey("people.id", ondelete="CASCADE"), index=True
    )
    # Whom the message is about, if not the recipient (a summary's client): erasing that
    # person deletes the messages about them that are still queued.
    subject_id: Mapped[int | None] = mapped_column(
        PersonId, ForeignKey("people.id", ondelete="CASCADE"), index=True
    )
    content_key: Mapped[str | None] = mapped_column(String(128))
    params: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    body: Mapped[str | None] = encrypted(owner="recipient_id", max_length=4096)
    # A staff broadcast's row: its broadcast (bot.services.broadcasts counts and cancels by it).
    # No foreign key: erasing the sender (their broadcasts go with them) must not delete
    # the rows of messages other people were sent; the dispatcher finds a row whose
    # broadcast is gone and drops it.
    broadcast_id: Mapped[int | None] = mapped_column(PersonId, index=True)

    state: Mapped[OutboxState] = mapped_column(
        _string_enum(OutboxState, "state"), default=OutboxState.PENDING
    )
    due_at: Mapped[datetime]  # UTC: not before; the next attempt's time after a retry
    expires_at: Mapped[datetime | None]  # UTC: dropped (dead) rather than sent after this
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    lease_until: Mapped[datetime | None]  # while sending: others may retry it after this
    claim_token: Mapped[str | None] = mapped_column(String(32))  # which claim holds the lease
    telegram_message_id: Mapped[int | None] = mapped_column(BigInteger)
    last_error: Mapped[str | None] = mapped_column(String(32))  # a code, e.g. "forbidden"
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]  # when it became sent, failed or dead

    def __repr__(self) -> str:  # never the payload
        return (
            f"<OutboxMessage id={self.id} kind={self.kind} state={self.state} "
            f"attempts={self.attempts}>"
        )


class ReminderSchedule(Base):
    """A recurring message: on ``weekdays`` at ``local_time`` in the person's zone.

    ``next_due_at`` / ``next_local_date`` are the next occurrence, precomputed with
    zoneinfo (bot.delivery.schedules), so the planner only ever reads the schedules that
    are due. Each occurrence becomes one outbox row keyed ``schedule:<id>:<local date>``.
    """

    __tablename__ = "reminder_schedules"
    __table_args__ = (CheckConstraint("weekdays BETWEEN 1 AND 127", name="weekdays"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    person_id: Mapped[int] = mapped_column(
        PersonId, ForeignKey("people.id", ondelete="CASCADE"), index=True
    )
    kind: Mapped[OutboxKind] = mapped_column(_string_enum(OutboxKind, "kind", length=32))
    content_key: Mapped[str] = mapped_column(String(128))
    params: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    weekdays: Mapped[int] = mapped_column(SmallInteger)  # bit 0 = Monday ... bit 6 = Sunday
    local_time: Mapped[time]
    timezone: Mapped[str | None] = mapped_column(String(64))  # IANA; NULL = the person's
    grace_minutes: Mapped[int] = mapped_column(Integer)
    active: Mapped[bool] = mapped_column(default=True, server_default=true())
    next_due_at: Mapped[datetime | None] = mapped_column(index=True)  # NULL while inactive
    next_local_date: Mapped[date | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    def __repr__(self) -> str:
        return f"<ReminderSchedule id={self.id} person_id={self.person_id} active={self.active}>"


class QuietHours(Base):
    """A person's quiet hours, in their own time zone: nothing is sent from ``starts`` to
    ``ends`` (overnight when ``ends`` <= ``starts``); messages wait until they end."""

    __tablename__ = "quiet_hours"

    person_id: Mapped[int] = mapped_column(
        PersonId, ForeignKey("people.id", ondelete="CASCADE"), primary_key=True
    )
    starts: Mapped[time]
    ends: Mapped[time]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    def __repr__(self) -> str:
        return f"<QuietHours person_id={self.person_id}>"


class DeliveryInstance(Base):
    """A running ``imrs-bot run`` process (PostgreSQL deployments): heartbeats let the
    instances share the overall send rate, and show which one consumes updates."""

    __tablename__ = "delivery_instances"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    consuming_updates: Mapped[bool] = mapped_column(default=False, server_default=false())

    def __repr__(self) -> str:
        return f"<DeliveryInstance id={self.id} consuming={self.consuming_updates}>"


class InboxUpdate(Base):
    """An update from Telegram, stored before Telegram is told it was received (bot.inbox).

    ``payload`` is the update's JSON, encrypted: it holds what a person typed. Its key is not
    the sender's (a stranger has none) but the key of the hour it arrived in (``key_owner``,
    a negative number: never a person's id); those keys are destroyed once their rows are
    gone and the retention time has passed, so a copy of the database does not keep the
    texts readable for longer. ``chat_id`` and ``user_id`` (Telegram's) order the work per
    chat and find a person's rows for erasure. ``processed_at`` is set in the transaction
    that writes the conversation states the update produced."""

    __tablename__ = "inbox"
    __table_args__ = (
        # The consumer's query: unprocessed rows in update order; retention: old processed rows.
        Index("ix_inbox_processed_at_update_id", "processed_at", "update_id"),
    )

    id: Mapped[int] = row_id_column()
    update_id: Mapped[int] = mapped_column(BigInteger, unique=True)  # Telegram's: deduplicates
    chat_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
    user_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
    key_owner: Mapped[int] = mapped_column(BigInteger)
    payload: Mapped[str] = encrypted(owner="key_owner")
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    processed_at: Mapped[datetime | None]

    def __repr__(self) -> str:  # never the payload
        return f"<InboxUpdate update_id={self.update_id} processed={self.processed_at is not None}>"
