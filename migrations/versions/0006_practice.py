"""practice sessions (/practice)

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27

* ``practice_sessions``: one calming exercise of a client (breathing, grounding, ...):
  when it started and ended, whether it was stopped early, and the 0-10 distress ratings
  before and after, encrypted under the client's data key (owner = ``client_id``, so the
  table has a Python-assigned random 63-bit id).
* ``safe_places``: a client's own safe place in their words (what they see, hear, feel),
  encrypted under their key; one per client (unique ``client_id``).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PERSON_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "practice_sessions",
        sa.Column("id", PERSON_ID, autoincrement=False, nullable=False),
        sa.Column("client_id", PERSON_ID, nullable=False),
        sa.Column("exercise", sa.String(length=16), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("stopped_early", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("distress_before", sa.LargeBinary(), nullable=True),
        sa.Column("distress_after", sa.LargeBinary(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_practice_sessions")),
        sa.ForeignKeyConstraint(
            ["client_id"], ["people.id"], name=op.f("fk_practice_sessions_client_id_people"), ondelete="CASCADE"
        ),
    )
    op.create_index(op.f("ix_practice_sessions_client_id"), "practice_sessions", ["client_id"])
    op.create_table(
        "safe_places",
        sa.Column("id", PERSON_ID, autoincrement=False, nullable=False),
        sa.Column("client_id", PERSON_ID, nullable=False),
        sa.Column("see", sa.LargeBinary(), nullable=True),
        sa.Column("hear", sa.LargeBinary(), nullable=True),
        sa.Column("feel", sa.LargeBinary(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_safe_places")),
        sa.ForeignKeyConstraint(
            ["client_id"], ["people.id"], name=op.f("fk_safe_places_client_id_people"), ondelete="CASCADE"
        ),
    )
    op.create_index(op.f("ix_safe_places_client_id"), "safe_places", ["client_id"], unique=True)


def downgrade() -> None:
    op.drop_index(op.f("ix_safe_places_client_id"), table_name="safe_places")
    op.drop_table("safe_places")
    op.drop_index(op.f("ix_practice_sessions_client_id"), table_name="practice_sessions")
    op.drop_table("practice_sessions")
