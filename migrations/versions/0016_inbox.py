"""the durable inbox of updates

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-02

* ``inbox``: every update from Telegram, stored before Telegram is told it was received,
  deduplicated by ``update_id``; the payload (the update's JSON) is encrypted under the key
  of the hour it arrived in (``key_owner``); processed rows are deleted after
  INBOX_RETENTION_SECONDS (bot.inbox).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | Sequence[str] | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ROW_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "inbox",
        sa.Column("id", ROW_ID, autoincrement=False, nullable=False),
        sa.Column("update_id", sa.BigInteger(), nullable=False),
        sa.Column("chat_id", sa.BigInteger(), nullable=True),
        sa.Column("user_id", sa.BigInteger(), nullable=True),
        sa.Column("key_owner", sa.BigInteger(), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_inbox")),
        sa.UniqueConstraint("update_id", name=op.f("uq_inbox_update_id")),
    )
    op.create_index(op.f("ix_inbox_processed_at_update_id"), "inbox", ["processed_at", "update_id"])
    op.create_index(op.f("ix_inbox_chat_id"), "inbox", ["chat_id"])
    op.create_index(op.f("ix_inbox_user_id"), "inbox", ["user_id"])


def downgrade() -> None:
    op.drop_table("inbox")
