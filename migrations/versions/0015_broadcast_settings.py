"""practice announcements opt-out; broadcast templates; outbox rows name their broadcast

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-02

* ``people.announcements``: false once a person opted out of practice announcements (staff
  broadcasts) in ``/settings``; everyone starts opted in.
* ``broadcasts.template``: a ready-made text from content/ (``broadcast.templates.<name>``),
  shown to each recipient in their language (``text`` is then empty);
  ``broadcasts.skipped_opted_out``: how many of the audience had opted out when it was queued.
* ``outbox.broadcast_id`` (indexed): the staff broadcast a row belongs to, so its figures
  and its cancel read an index instead of ``idempotency_key LIKE 'broadcast:{id}:%'``.
  Existing rows are filled in from their key. No foreign key (see the model).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | Sequence[str] | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ROW_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
KEY = re.compile(r"^broadcast:([0-9]+):[0-9]+$")
BATCH = 1000


def _backfill() -> None:
    """broadcast_id from the key of every staff broadcast's row (``broadcast:{id}:{person}``)."""
    connection = op.get_bind()
    outbox = sa.table(
        "outbox", sa.column("id", ROW_ID), sa.column("kind", sa.String()),
        sa.column("idempotency_key", sa.String()), sa.column("broadcast_id", ROW_ID),
    )
    rows = connection.execute(
        sa.select(outbox.c.id, outbox.c.idempotency_key)
        .where(outbox.c.kind == "broadcast", outbox.c.idempotency_key.like("broadcast:%"))
    ).all()
    values = [{"row": row_id, "value": int(m.group(1))} for row_id, key in rows if (m := KEY.match(key))]
    statement = (
        sa.update(outbox).where(outbox.c.id == sa.bindparam("row")).values(broadcast_id=sa.bindparam("value"))
    )
    for start in range(0, len(values), BATCH):
        connection.execute(statement, values[start : start + BATCH])


def upgrade() -> None:
    with op.batch_alter_table("people") as batch:
        batch.add_column(sa.Column("announcements", sa.Boolean(), server_default=sa.true(), nullable=False))
    with op.batch_alter_table("broadcasts") as batch:
        batch.add_column(sa.Column("template", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("skipped_opted_out", sa.Integer(), nullable=True))
    with op.batch_alter_table("outbox") as batch:
        batch.add_column(sa.Column("broadcast_id", ROW_ID, nullable=True))
    _backfill()
    op.create_index(op.f("ix_outbox_broadcast_id"), "outbox", ["broadcast_id"])


def downgrade() -> None:
    # The older code cannot compose a template's text: those not finished are dropped.
    op.execute("DELETE FROM broadcasts WHERE template IS NOT NULL AND state IN ('draft', 'scheduled', 'sending')")
    op.drop_index(op.f("ix_outbox_broadcast_id"), table_name="outbox")
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("broadcast_id")
    with op.batch_alter_table("broadcasts") as batch:
        batch.drop_column("skipped_opted_out")
        batch.drop_column("template")
    with op.batch_alter_table("people") as batch:
        batch.drop_column("announcements")
