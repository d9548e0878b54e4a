"""where a timed exercise is, so a restart can resume it

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-27

python-telegram-bot keeps JobQueue jobs in memory only, so a restart (a redeploy, a crash,
a standby taking over) used to leave a breathing or muscle-relaxation message frozen.
Three columns on ``practice_sessions``, none of them clinical: the Telegram message the
exercise edits, the step it showed, and since when. They are written when a timed
exercise starts and when a muscle group is skipped; the elapsed time gives the rest.
The index serves the one query at start-up: "timed exercises under way lately".
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("practice_sessions") as batch:
        batch.add_column(sa.Column("run_message_id", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("run_step", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("run_step_since", sa.DateTime(timezone=True), nullable=True))
        batch.create_index(batch.f("ix_practice_sessions_run_step_since"), ["run_step_since"])


def downgrade() -> None:
    with op.batch_alter_table("practice_sessions") as batch:
        batch.drop_index(batch.f("ix_practice_sessions_run_step_since"))
        batch.drop_column("run_step_since")
        batch.drop_column("run_step")
        batch.drop_column("run_message_id")
