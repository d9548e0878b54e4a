"""learning: /learn progress and "Ask my therapist about this" questions

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27

* ``learn_progress``: one row per (client, learn module): how many pages of the module the
  client has reached (``pages_read``; pages are read in order, so the furthest page is the
  count), and ``completed_at`` once they reached its last page.
* ``therapist_questions``: "Ask my therapist about this" from a /learn page. Only the module
  id and page number are stored (no typed words, so nothing to encrypt); a random 63-bit id
  (``row_id_column``) so that an encrypted column can be added later without changing ids.
  ``included_in_summary_at`` is set when a summary has shown the question to the therapist.
  At most one open (not yet summarised) question per client and module: the partial unique
  index ``uq_therapist_questions_open`` makes asking twice a no-op.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PERSON_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _person_fk(table: str, column: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        [column], ["people.id"], name=op.f(f"fk_{table}_{column}_people"), ondelete="CASCADE"
    )


def _timestamp(name: str, *, nullable: bool = False) -> sa.Column[sa.DateTime]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "learn_progress",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("client_id", PERSON_ID, nullable=False),
        sa.Column("module_id", sa.String(length=64), nullable=False),
        sa.Column("pages_read", sa.Integer(), server_default="0", nullable=False),
        _timestamp("completed_at", nullable=True),
        _timestamp("updated_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_learn_progress")),
        sa.UniqueConstraint("client_id", "module_id", name=op.f("uq_learn_progress_client_id")),
        sa.CheckConstraint("pages_read >= 0", name=op.f("ck_learn_progress_pages_read_not_negative")),
        _person_fk("learn_progress", "client_id"),
    )

    op.create_table(
        "therapist_questions",
        sa.Column("id", PERSON_ID, autoincrement=False, nullable=False),
        sa.Column("client_id", PERSON_ID, nullable=False),
        sa.Column("module_id", sa.String(length=64), nullable=False),
        sa.Column("page", sa.Integer(), nullable=False),
        _timestamp("created_at"),
        _timestamp("included_in_summary_at", nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_therapist_questions")),
        sa.CheckConstraint("page >= 1", name=op.f("ck_therapist_questions_page_positive")),
        _person_fk("therapist_questions", "client_id"),
    )
    op.create_index(
        op.f("ix_therapist_questions_client_id"), "therapist_questions", ["client_id"]
    )
    op.create_index(
        op.f("uq_therapist_questions_open"),
        "therapist_questions",
        ["client_id", "module_id"],
        unique=True,
        sqlite_where=sa.text("included_in_summary_at IS NULL"),
        postgresql_where=sa.text("included_in_summary_at IS NULL"),
    )


def downgrade() -> None:
    op.drop_table("therapist_questions")
    op.drop_table("learn_progress")
