"""initial schema: people, therapist-client links, consent, audit, conversation states

Revision ID: 0001
Revises:
Create Date: 2026-11-26

Hand-written (checked against autogenerate). Plain SQLAlchemy types only:
``sa.DateTime(timezone=True)`` is what bot.db.types.UTCDateTime stores, and the
string enums are VARCHAR columns with a named CHECK constraint.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ROLES = ("admin", "staff", "therapist", "client")
CONSENT_CHOICES = ("granted", "withdrawn")


def _in(column: str, values: Sequence[str]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def _timestamp(name: str, *, nullable: bool = False) -> sa.Column[datetime]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "people",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("telegram_id", sa.BigInteger(), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("language", sa.String(length=16), nullable=False),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.Column("alias", sa.String(length=64), nullable=True),
        sa.Column("display_name", sa.String(length=128), nullable=True),
        sa.Column("active", sa.Boolean(), server_default=sa.true(), nullable=False),
        _timestamp("created_at"),
        _timestamp("updated_at"),
        _timestamp("last_seen_at", nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_people")),
        sa.UniqueConstraint("telegram_id", name=op.f("uq_people_telegram_id")),
        sa.CheckConstraint(_in("role", ROLES), name=op.f("ck_people_role")),
    )

    op.create_table(
        "therapist_client_links",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("therapist_id", sa.Integer(), nullable=False),
        sa.Column("client_id", sa.Integer(), nullable=False),
        _timestamp("started_at"),
        _timestamp("ended_at", nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_therapist_client_links")),
        sa.ForeignKeyConstraint(
            ["therapist_id"],
            ["people.id"],
            name=op.f("fk_therapist_client_links_therapist_id_people"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["client_id"],
            ["people.id"],
            name=op.f("fk_therapist_client_links_client_id_people"),
            ondelete="CASCADE",
        ),
        sa.CheckConstraint(
            "therapist_id <> client_id", name=op.f("ck_therapist_client_links_not_self")
        ),
    )
    op.create_index(
        op.f("ix_therapist_client_links_therapist_id"), "therapist_client_links", ["therapist_id"]
    )
    op.create_index(
        op.f("ix_therapist_client_links_client_id"), "therapist_client_links", ["client_id"]
    )
    # At most one active link per client (partial unique index, both backends).
    op.create_index(
        op.f("uq_therapist_client_links_active_client"),
        "therapist_client_links",
        ["client_id"],
        unique=True,
        sqlite_where=sa.text("ended_at IS NULL"),
        postgresql_where=sa.text("ended_at IS NULL"),
    )

    op.create_table(
        "consent_records",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("person_id", sa.Integer(), nullable=False),
        sa.Column("consent_version", sa.String(length=32), nullable=False),
        sa.Column("choice", sa.String(length=16), nullable=False),
        _timestamp("recorded_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_consent_records")),
        sa.ForeignKeyConstraint(
            ["person_id"],
            ["people.id"],
            name=op.f("fk_consent_records_person_id_people"),
            ondelete="CASCADE",
        ),
        sa.CheckConstraint(_in("choice", CONSENT_CHOICES), name=op.f("ck_consent_records_choice")),
    )
    op.create_index(
        op.f("ix_consent_records_person_id_recorded_at"),
        "consent_records",
        ["person_id", "recorded_at"],
    )

    op.create_table(
        "audit_events",
        sa.Column("id", sa.Integer(), nullable=False),
        _timestamp("occurred_at"),
        sa.Column("actor_telegram_id", sa.BigInteger(), nullable=True),
        sa.Column("actor_role", sa.String(length=16), nullable=True),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("subject_person_id", sa.Integer(), nullable=True),
        sa.Column("detail", sa.JSON(none_as_null=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_events")),
        sa.ForeignKeyConstraint(
            ["subject_person_id"],
            ["people.id"],
            name=op.f("fk_audit_events_subject_person_id_people"),
            ondelete="SET NULL",
        ),
    )
    op.create_index(op.f("ix_audit_events_occurred_at"), "audit_events", ["occurred_at"])
    op.create_index(
        op.f("ix_audit_events_actor_telegram_id"), "audit_events", ["actor_telegram_id"]
    )
    op.create_index(
        op.f("ix_audit_events_subject_person_id"), "audit_events", ["subject_person_id"]
    )

    op.create_table(
        "conversation_states",
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("state", sa.JSON(), nullable=False),
        _timestamp("updated_at"),
        sa.PrimaryKeyConstraint("name", "key", name=op.f("pk_conversation_states")),
    )


def downgrade() -> None:
    # Dropping a table drops its indexes; children before parents.
    op.drop_table("conversation_states")
    op.drop_table("audit_events")
    op.drop_table("consent_records")
    op.drop_table("therapist_client_links")
    op.drop_table("people")
