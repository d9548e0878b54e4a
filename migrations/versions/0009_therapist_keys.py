"""therapist keys: the age public keys summaries are encrypted to

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02

``therapist_keys``: the age recipients (``age1…``) a therapist registered with /setkey, with
their history. ``recipient`` is an encrypted column under the therapist's data key (it is
not secret, but AES-GCM binds it to the row and the therapist: a key put into the database
without the keyring is never used); ``fingerprint`` is the short form shown to compare in
person (bot.crypto.age). A row is proposed (``set_at`` NULL) until the therapist confirms
it replaces their current key; current while ``replaced_at`` is NULL; at most one current
key per therapist (``uq_therapist_keys_current``, a partial unique index).

Downgrading drops the table: therapists register their keys again.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PERSON_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
CURRENT = "set_at IS NOT NULL AND replaced_at IS NULL"


def _timestamp(name: str, *, nullable: bool = False) -> sa.Column[sa.DateTime]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "therapist_keys",
        sa.Column("id", PERSON_ID, autoincrement=False, nullable=False),
        sa.Column("therapist_id", PERSON_ID, nullable=False),
        sa.Column("recipient", sa.LargeBinary(), nullable=False),
        sa.Column("fingerprint", sa.String(length=19), nullable=False),
        _timestamp("proposed_at"),
        _timestamp("set_at", nullable=True),
        _timestamp("replaced_at", nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_therapist_keys")),
        sa.ForeignKeyConstraint(
            ["therapist_id"], ["people.id"], name=op.f("fk_therapist_keys_therapist_id_people"), ondelete="CASCADE"
        ),
    )
    op.create_index(op.f("ix_therapist_keys_therapist_id"), "therapist_keys", ["therapist_id"])
    op.create_index(
        op.f("uq_therapist_keys_current"),
        "therapist_keys",
        ["therapist_id"],
        unique=True,
        sqlite_where=sa.text(CURRENT),
        postgresql_where=sa.text(CURRENT),
    )


def downgrade() -> None:
    op.drop_table("therapist_keys")
