"""safety flags for the therapist (the boundary and crisis routes)

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02

* ``safety_flags``: what the safety layer keeps for a client's therapist: a wish to work on
  a memory (never the memory itself) or a crisis answered yes; the client's optional short
  note, encrypted under their data key (owner = ``client_id``, so the id is a
  Python-assigned random 63-bit id); when the therapist was alerted; when a summary
  included it.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | Sequence[str] | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PERSON_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "safety_flags",
        sa.Column("id", PERSON_ID, autoincrement=False, nullable=False),
        sa.Column("client_id", PERSON_ID, nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("note", sa.LargeBinary(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("alerted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("included_in_summary_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_safety_flags")),
        sa.ForeignKeyConstraint(
            ["client_id"], ["people.id"], name=op.f("fk_safety_flags_client_id_people"), ondelete="CASCADE"
        ),
    )
    op.create_index(op.f("ix_safety_flags_client_id"), "safety_flags", ["client_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_safety_flags_client_id"), table_name="safety_flags")
    op.drop_table("safety_flags")
