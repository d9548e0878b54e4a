"""a kind of outbox message for the bot's own notices

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-27

``notice``: a one-off message from the bot about the service itself, e.g. that the consent
text has a new version (bot.services.consent). The ``kind`` columns of ``outbox`` and
``reminder_schedules`` share one list of values, so both CHECK constraints are replaced
(batch mode: SQLite rebuilds the tables).
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BEFORE = ("reminder", "check_in_prompt", "summary", "broadcast")
AFTER = (*BEFORE, "notice")
TABLES = {"outbox": "ck_outbox_kind", "reminder_schedules": "ck_reminder_schedules_kind"}


def _in(values: Sequence[str]) -> str:
    return f"kind IN ({', '.join(repr(v) for v in values)})"


def _replace(values: Sequence[str]) -> None:
    for table, name in TABLES.items():
        with op.batch_alter_table(table) as batch:
            batch.drop_constraint(op.f(name), type_="check")
            batch.create_check_constraint(op.f(name), _in(values))


def upgrade() -> None:
    _replace(AFTER)


def downgrade() -> None:
    op.execute("DELETE FROM outbox WHERE kind = 'notice'")
    _replace(BEFORE)
