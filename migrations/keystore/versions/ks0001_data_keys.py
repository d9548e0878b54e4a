"""key store: data_keys

Revision ID: ks0001
Revises:
Create Date: 2026-11-26

One row per data key of a person, wrapped under a key-encryption key (see
bot.crypto.keystore and bot.crypto.formats). ``person_id`` is deliberately not a foreign
key: the key store is a database of its own.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "ks0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "data_keys",
        sa.Column("person_id", sa.BigInteger(), nullable=False),
        sa.Column("key_version", sa.Integer(), nullable=False),
        sa.Column("kek_id", sa.String(length=64), nullable=False),
        sa.Column("wrapped", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("rewrapped_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("person_id", "key_version", name=op.f("pk_data_keys")),
        sa.CheckConstraint(
            "key_version >= 1", name=op.f("ck_data_keys_key_version_positive")
        ),
    )
    op.create_index(op.f("ix_data_keys_kek_id"), "data_keys", ["kek_id"])


def downgrade() -> None:
    op.drop_table("data_keys")
