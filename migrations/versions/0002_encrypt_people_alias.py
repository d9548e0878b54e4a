"""encrypt people.alias; 64-bit person ids

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26

* ``people.alias`` becomes an encrypted column (bot.crypto.fields): ``LargeBinary``
  holding ``version | data-key version | nonce | AES-GCM ciphertext``. The column is
  dropped and re-added: there were no production rows, and a migration cannot encrypt
  (it has neither the keyring nor the key store). Pseudonyms stored by 0001 are lost.
* People get random 63-bit ids assigned by the application (the row id is bound into
  every ciphertext, so it must be known before the INSERT). On PostgreSQL ``people.id``
  and every column referring to it become BIGINT (its sequence stays, for raw inserts).
  On SQLite they already are 64-bit INTEGERs (``people.id`` stays the rowid alias).

Downgrading drops the encrypted pseudonyms, and fails on PostgreSQL once ids beyond
32 bits exist.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (table, column, nullable) of every column referring to people.id
PERSON_REFERENCES = (
    ("therapist_client_links", "therapist_id", False),
    ("therapist_client_links", "client_id", False),
    ("consent_records", "person_id", False),
    ("audit_events", "subject_person_id", True),
)


def _is_postgresql() -> bool:
    return op.get_context().dialect.name == "postgresql"


def _person_id_types(new: sa.types.TypeEngine, old: sa.types.TypeEngine) -> None:
    # Referencing columns first, then the key: PostgreSQL rebuilds the foreign keys.
    for table, column, nullable in PERSON_REFERENCES:
        op.alter_column(table, column, type_=new, existing_type=old, existing_nullable=nullable)
    op.alter_column("people", "id", type_=new, existing_type=old, existing_nullable=False)


def upgrade() -> None:
    if _is_postgresql():
        _person_id_types(sa.BigInteger(), sa.Integer())
    with op.batch_alter_table("people") as batch_op:
        batch_op.drop_column("alias")
    with op.batch_alter_table("people") as batch_op:
        batch_op.add_column(sa.Column("alias", sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("people") as batch_op:
        batch_op.drop_column("alias")
    with op.batch_alter_table("people") as batch_op:
        batch_op.add_column(sa.Column("alias", sa.String(length=64), nullable=True))
    if _is_postgresql():
        _person_id_types(sa.Integer(), sa.BigInteger())
