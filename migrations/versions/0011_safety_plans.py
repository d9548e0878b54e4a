"""safety plans (/safetyplan)

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02

* ``safety_plans``: a client's own safety plan (Stanley & Brown's six steps), one per client
  (unique ``client_id``). Each step is the client's words, encrypted under their data key
  (owner = ``client_id``, so the table has a Python-assigned random 63-bit id);
  ``steps_done`` (0-6, where building the plan resumes) and ``shared_with_therapist`` are
  not clinical.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | Sequence[str] | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PERSON_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
STEPS = ("warning_signs", "coping", "distraction", "ask_for_help", "professionals", "safe_environment")


def upgrade() -> None:
    op.create_table(
        "safety_plans",
        sa.Column("id", PERSON_ID, autoincrement=False, nullable=False),
        sa.Column("client_id", PERSON_ID, nullable=False),
        *(sa.Column(step, sa.LargeBinary(), nullable=True) for step in STEPS),
        sa.Column("steps_done", sa.Integer(), server_default="0", nullable=False),
        sa.Column("shared_with_therapist", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_safety_plans")),
        sa.ForeignKeyConstraint(
            ["client_id"], ["people.id"], name=op.f("fk_safety_plans_client_id_people"), ondelete="CASCADE"
        ),
        sa.CheckConstraint("steps_done BETWEEN 0 AND 6", name=op.f("ck_safety_plans_steps_done_range")),
    )
    op.create_index(op.f("ix_safety_plans_client_id"), "safety_plans", ["client_id"], unique=True)


def downgrade() -> None:
    op.drop_index(op.f("ix_safety_plans_client_id"), table_name="safety_plans")
    op.drop_table("safety_plans")
