"""check-ins, readiness summaries, and the client's answer to an appointment reminder

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-02

* ``appointments.client_response`` / ``responded_at``: "I'll be there" or "I need to
  reschedule", pressed under an appointment reminder.
* ``check_ins``: a client's pre-appointment check-in; the answers and the readiness worked
  out from them are encrypted under the client's data key (owner = ``client_id``); in clear
  only ids, the state, the step reached (a question's name) and times.
* ``summaries``: one per completed check-in and therapist: the report in the age format,
  encrypted to the therapist's own key (NULL while the therapist has no key yet).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | Sequence[str] | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PERSON_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
RESPONSES = ("attending", "reschedule")
CHECK_IN_STATES = ("draft", "saved", "completed")
SUMMARY_STATES = ("waiting_for_key", "queued")


def _in(column: str, values: Sequence[str]) -> str:
    return f"{column} IN (" + ", ".join(repr(v) for v in values) + ")"


def _fk(table: str, column: str, referred: str, ondelete: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        [column], [f"{referred}.id"], name=op.f(f"fk_{table}_{column}_{referred}"), ondelete=ondelete
    )


def _timestamp(name: str, *, nullable: bool = False) -> sa.Column[sa.DateTime]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    with op.batch_alter_table("appointments") as batch_op:
        batch_op.add_column(sa.Column("client_response", sa.String(length=16), nullable=True))
        batch_op.add_column(_timestamp("responded_at", nullable=True))
        batch_op.create_check_constraint(
            "client_response", _in("client_response", RESPONSES)
        )

    op.create_table(
        "check_ins",
        sa.Column("id", PERSON_ID, autoincrement=False, nullable=False),
        sa.Column("client_id", PERSON_ID, nullable=False),
        sa.Column("therapist_id", PERSON_ID, nullable=True),
        sa.Column("appointment_id", PERSON_ID, nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("step", sa.String(length=32), nullable=True),
        sa.Column("answers", sa.LargeBinary(), nullable=True),
        sa.Column("readiness", sa.LargeBinary(), nullable=True),
        _timestamp("started_at"),
        _timestamp("updated_at"),
        _timestamp("completed_at", nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_check_ins")),
        sa.CheckConstraint(_in("state", CHECK_IN_STATES), name=op.f("ck_check_ins_state")),
        _fk("check_ins", "client_id", "people", "CASCADE"),
        _fk("check_ins", "therapist_id", "people", "SET NULL"),
        _fk("check_ins", "appointment_id", "appointments", "SET NULL"),
    )
    op.create_index(op.f("ix_check_ins_client_id_state"), "check_ins", ["client_id", "state"])
    op.create_index(op.f("ix_check_ins_therapist_id"), "check_ins", ["therapist_id"])
    op.create_index(op.f("ix_check_ins_appointment_id"), "check_ins", ["appointment_id"])
    op.create_index(op.f("ix_check_ins_completed_at"), "check_ins", ["completed_at"])

    op.create_table(
        "summaries",
        sa.Column("id", PERSON_ID, autoincrement=False, nullable=False),
        sa.Column("check_in_id", PERSON_ID, nullable=False),
        sa.Column("client_id", PERSON_ID, nullable=False),
        sa.Column("therapist_id", PERSON_ID, nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("recipient_fingerprint", sa.String(length=32), nullable=True),
        sa.Column("ciphertext", sa.LargeBinary(), nullable=True),
        _timestamp("created_at"),
        _timestamp("encrypted_at", nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_summaries")),
        sa.CheckConstraint(_in("state", SUMMARY_STATES), name=op.f("ck_summaries_state")),
        sa.UniqueConstraint("check_in_id", "therapist_id", name=op.f("uq_summaries_check_in_id")),
        _fk("summaries", "check_in_id", "check_ins", "CASCADE"),
        _fk("summaries", "client_id", "people", "CASCADE"),
        _fk("summaries", "therapist_id", "people", "CASCADE"),
    )
    op.create_index(op.f("ix_summaries_client_id"), "summaries", ["client_id"])
    op.create_index(op.f("ix_summaries_therapist_id"), "summaries", ["therapist_id"])


def downgrade() -> None:
    op.drop_table("summaries")
    op.drop_table("check_ins")
    with op.batch_alter_table("appointments") as batch_op:
        batch_op.drop_constraint("client_response", type_="check")
        batch_op.drop_column("responded_at")
        batch_op.drop_column("client_response")
