"""invites; encrypt people.display_name

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27

* ``invites``: one-time invite links (therapist, staff and client invites). Only the
  SHA-256 hex of a token is stored (``token_hash``, unique); single use is a conditional
  UPDATE of ``used_at``. ``alias`` is the pseudonym a therapist gave a client invite,
  encrypted under the therapist's data key (``owner = therapist_id``).
* ``people.display_name`` becomes an encrypted column (a therapist's or staff member's
  chosen name): dropped and re-added, as 0002 did with ``alias`` (a migration cannot
  encrypt). Display names stored before are lost.
* ``people.deactivated_at``: when staff deactivated a therapist (their client links end
  at that moment; the clients can then be moved to another therapist).

Downgrading drops the invites and the encrypted display names.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INVITE_KINDS = ("therapist", "staff", "client")
PERSON_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _in(column: str, values: Sequence[str]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def _person_fk(column: str, ondelete: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        [column], ["people.id"], name=op.f(f"fk_invites_{column}_people"), ondelete=ondelete
    )


def upgrade() -> None:
    op.create_table(
        "invites",
        sa.Column("id", PERSON_ID, autoincrement=False, nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("created_by_id", PERSON_ID, nullable=True),
        sa.Column("therapist_id", PERSON_ID, nullable=True),
        sa.Column("alias", sa.LargeBinary(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("used_by_id", PERSON_ID, nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_invites")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_invites_token_hash")),
        sa.CheckConstraint(_in("kind", INVITE_KINDS), name=op.f("ck_invites_kind")),
        _person_fk("created_by_id", "SET NULL"),
        _person_fk("therapist_id", "CASCADE"),
        _person_fk("used_by_id", "SET NULL"),
    )
    for column in ("created_by_id", "therapist_id", "used_by_id"):
        op.create_index(op.f(f"ix_invites_{column}"), "invites", [column])

    with op.batch_alter_table("people") as batch_op:
        batch_op.drop_column("display_name")
    with op.batch_alter_table("people") as batch_op:
        batch_op.add_column(sa.Column("display_name", sa.LargeBinary(), nullable=True))
        batch_op.add_column(sa.Column("deactivated_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("people") as batch_op:
        batch_op.drop_column("deactivated_at")
        batch_op.drop_column("display_name")
    with op.batch_alter_table("people") as batch_op:
        batch_op.add_column(sa.Column("display_name", sa.String(length=128), nullable=True))
    op.drop_table("invites")
