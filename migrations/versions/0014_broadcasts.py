"""staff broadcasts

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-02

* ``broadcasts``: a message from staff to many clients. The text is encrypted under the
  sender's data key (owner = ``created_by_id``); the audience is a kind and parameters
  (JSON: ids, a number of days, never clinical content), with an optional language. Its
  outbox rows are keyed ``broadcast:{id}:{recipient id}`` (one per recipient).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | Sequence[str] | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PERSON_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
STATES = ("draft", "scheduled", "sending", "done", "cancelled")
COUNTS = ("audience_size", "queued", "sent", "failed", "blocked", "skipped_no_consent", "withdrawn")


def _timestamp(name: str, *, nullable: bool = False) -> sa.Column[sa.DateTime]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "broadcasts",
        sa.Column("id", PERSON_ID, autoincrement=False, nullable=False),
        sa.Column("created_by_id", PERSON_ID, nullable=False),
        sa.Column("text", sa.LargeBinary(), nullable=False),
        sa.Column("audience", sa.JSON(), nullable=False),
        sa.Column("language", sa.String(length=16), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        _timestamp("scheduled_for"),
        sa.Column("progress_chat_id", sa.BigInteger(), nullable=True),
        sa.Column("progress_message_id", sa.BigInteger(), nullable=True),
        *(sa.Column(name, sa.Integer(), nullable=True) for name in COUNTS),
        _timestamp("created_at"),
        _timestamp("started_at", nullable=True),
        _timestamp("queued_at", nullable=True),
        _timestamp("finished_at", nullable=True),
        _timestamp("reported_at", nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_broadcasts")),
        sa.CheckConstraint(
            "state IN (" + ", ".join(repr(s) for s in STATES) + ")", name=op.f("ck_broadcasts_state")
        ),
        sa.ForeignKeyConstraint(
            ["created_by_id"], ["people.id"], name=op.f("fk_broadcasts_created_by_id_people"), ondelete="CASCADE"
        ),
    )
    op.create_index(op.f("ix_broadcasts_created_by_id"), "broadcasts", ["created_by_id"])
    op.create_index(op.f("ix_broadcasts_state_scheduled_for"), "broadcasts", ["state", "scheduled_for"])


def downgrade() -> None:
    op.drop_table("broadcasts")
