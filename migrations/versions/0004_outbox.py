"""outbox, reminder schedules, quiet hours, delivery instances

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27

* ``outbox``: every message the bot sends on its own initiative (bot.delivery). A unique
  ``idempotency_key``; ``state`` pending -> sending -> sent / failed / dead with
  ``attempts``, a lease (``lease_until``, ``claim_token``) and the Telegram message id.
  The payload is a content key + JSON parameters, or ``body``: text encrypted under the
  recipient's data key (owner = ``recipient_id``, so the table has a Python-assigned
  random 63-bit id). ``ix_outbox_state_due_at`` serves the claim query.
* ``reminder_schedules``: weekdays (bit mask, Monday = bit 0) + local time + IANA zone,
  with the next occurrence precomputed (``next_due_at``, indexed).
* ``quiet_hours``: per person, in their own zone.
* ``delivery_instances``: heartbeats of running instances (PostgreSQL deployments).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PERSON_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
KINDS = ("reminder", "check_in_prompt", "summary", "broadcast")
STATES = ("pending", "sending", "sent", "failed", "dead")


def _in(column: str, values: Sequence[str]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def _person_fk(table: str, column: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        [column], ["people.id"], name=op.f(f"fk_{table}_{column}_people"), ondelete="CASCADE"
    )


def _timestamp(name: str, *, nullable: bool = False) -> sa.Column[sa.DateTime]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "outbox",
        sa.Column("id", PERSON_ID, autoincrement=False, nullable=False),
        sa.Column("idempotency_key", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("recipient_id", PERSON_ID, nullable=False),
        sa.Column("subject_id", PERSON_ID, nullable=True),
        sa.Column("content_key", sa.String(length=128), nullable=True),
        sa.Column("params", sa.JSON(none_as_null=True), nullable=True),
        sa.Column("body", sa.LargeBinary(), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        _timestamp("due_at"),
        _timestamp("expires_at", nullable=True),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        _timestamp("lease_until", nullable=True),
        sa.Column("claim_token", sa.String(length=32), nullable=True),
        sa.Column("telegram_message_id", sa.BigInteger(), nullable=True),
        sa.Column("last_error", sa.String(length=32), nullable=True),
        _timestamp("created_at"),
        _timestamp("finished_at", nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_outbox_idempotency_key")),
        sa.CheckConstraint(_in("kind", KINDS), name=op.f("ck_outbox_kind")),
        sa.CheckConstraint(_in("state", STATES), name=op.f("ck_outbox_state")),
        sa.CheckConstraint(
            "(content_key IS NULL) <> (body IS NULL)", name=op.f("ck_outbox_one_payload")
        ),
        sa.CheckConstraint("attempts >= 0", name=op.f("ck_outbox_attempts_not_negative")),
        _person_fk("outbox", "recipient_id"),
        _person_fk("outbox", "subject_id"),
    )
    op.create_index(op.f("ix_outbox_state_due_at"), "outbox", ["state", "due_at"])
    op.create_index(op.f("ix_outbox_recipient_id"), "outbox", ["recipient_id"])
    op.create_index(op.f("ix_outbox_subject_id"), "outbox", ["subject_id"])

    op.create_table(
        "reminder_schedules",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("person_id", PERSON_ID, nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("content_key", sa.String(length=128), nullable=False),
        sa.Column("params", sa.JSON(none_as_null=True), nullable=True),
        sa.Column("weekdays", sa.SmallInteger(), nullable=False),
        sa.Column("local_time", sa.Time(), nullable=False),
        sa.Column("timezone", sa.String(length=64), nullable=True),
        sa.Column("grace_minutes", sa.Integer(), nullable=False),
        sa.Column("active", sa.Boolean(), server_default=sa.true(), nullable=False),
        _timestamp("next_due_at", nullable=True),
        sa.Column("next_local_date", sa.Date(), nullable=True),
        _timestamp("created_at"),
        _timestamp("updated_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reminder_schedules")),
        sa.CheckConstraint(_in("kind", KINDS), name=op.f("ck_reminder_schedules_kind")),
        sa.CheckConstraint("weekdays BETWEEN 1 AND 127", name=op.f("ck_reminder_schedules_weekdays")),
        _person_fk("reminder_schedules", "person_id"),
    )
    op.create_index(
        op.f("ix_reminder_schedules_person_id"), "reminder_schedules", ["person_id"]
    )
    op.create_index(
        op.f("ix_reminder_schedules_next_due_at"), "reminder_schedules", ["next_due_at"]
    )

    op.create_table(
        "quiet_hours",
        sa.Column("person_id", PERSON_ID, nullable=False),
        sa.Column("starts", sa.Time(), nullable=False),
        sa.Column("ends", sa.Time(), nullable=False),
        _timestamp("updated_at"),
        sa.PrimaryKeyConstraint("person_id", name=op.f("pk_quiet_hours")),
        _person_fk("quiet_hours", "person_id"),
    )

    op.create_table(
        "delivery_instances",
        sa.Column("id", sa.String(length=36), nullable=False),
        _timestamp("started_at"),
        _timestamp("heartbeat_at"),
        sa.Column("consuming_updates", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_delivery_instances")),
    )
    op.create_index(
        op.f("ix_delivery_instances_heartbeat_at"), "delivery_instances", ["heartbeat_at"]
    )


def downgrade() -> None:
    op.drop_table("delivery_instances")
    op.drop_table("quiet_hours")
    op.drop_table("reminder_schedules")
    op.drop_table("outbox")
