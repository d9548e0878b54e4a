"""appointments

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02

``appointments``: a client's appointments with their therapist (bot.services.appointments):
kind (preparation, ImRS, evaluation, other), start and end in UTC, the therapist's IANA zone
the time was given in, who made it, and ``cancelled_at`` (rows are kept so that reminders can
be withdrawn). Overlaps are refused by the service, not by a constraint (SQLite has no
exclusion constraints). Indexed by therapist and by client with the start time.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PERSON_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
KINDS = ("preparation", "imrs", "evaluation", "other")


def _person_fk(column: str, ondelete: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        [column], ["people.id"], name=op.f(f"fk_appointments_{column}_people"), ondelete=ondelete
    )


def _timestamp(name: str, *, nullable: bool = False) -> sa.Column[sa.DateTime]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "appointments",
        sa.Column("id", PERSON_ID, autoincrement=False, nullable=False),
        sa.Column("therapist_id", PERSON_ID, nullable=False),
        sa.Column("client_id", PERSON_ID, nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        _timestamp("starts_at"),
        _timestamp("ends_at"),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.Column("created_by_id", PERSON_ID, nullable=True),
        _timestamp("created_at"),
        _timestamp("updated_at"),
        _timestamp("cancelled_at", nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_appointments")),
        sa.CheckConstraint(
            "kind IN (" + ", ".join(repr(k) for k in KINDS) + ")", name=op.f("ck_appointments_kind")
        ),
        sa.CheckConstraint("ends_at > starts_at", name=op.f("ck_appointments_ends_after_start")),
        sa.CheckConstraint("therapist_id <> client_id", name=op.f("ck_appointments_not_self")),
        _person_fk("therapist_id", "CASCADE"),
        _person_fk("client_id", "CASCADE"),
        _person_fk("created_by_id", "SET NULL"),
    )
    op.create_index(op.f("ix_appointments_created_by_id"), "appointments", ["created_by_id"])
    op.create_index(
        op.f("ix_appointments_therapist_id_starts_at"), "appointments", ["therapist_id", "starts_at"]
    )
    op.create_index(op.f("ix_appointments_client_id_starts_at"), "appointments", ["client_id", "starts_at"])


def downgrade() -> None:
    op.drop_table("appointments")
