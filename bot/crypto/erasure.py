"""Erasing a person: crypto-shredding first, then their rows.

1. Every data key of the person is deleted from the key store, and that is committed
   before anything else happens. From this moment the person's ciphertext is unreadable
   everywhere: in the clinical database, in its replicas and in every backup of it taken
   earlier (the data keys were never in the clinical database, see bot.crypto.keystore),
   and in this process (its key cache is dropped).
2. The person's row is deleted; the database cascades their links and consent records,
   audit events keep a NULL subject (ON DELETE rules of the schema). An audit event
   ``person.erased`` records the erasure: ids and counts only.
3. The key store is swept again for the person, in case a concurrent request created a
   data key between 1 and 2 (harmless either way: every row it could protect is gone).

If step 2 fails, the person's remaining rows are already unreadable; running the erasure
again completes it (each step is idempotent).

Not covered here: the key store's own backups (keep them on a short retention), copies
held by other processes' key caches (they expire within ``FieldCrypto``'s TTL, 15 min),
and Telegram ids in audit events where the person was the actor.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.crypto.fields import FieldCrypto
from bot.db.models import Person, Role
from bot.db.repositories import AuditRepository


@dataclass(frozen=True)
class Erasure:
    person_id: int
    data_keys_destroyed: int
    person_deleted: bool


async def erase_person(
    sessions: async_sessionmaker[AsyncSession],
    crypto: FieldCrypto,
    person_id: int,
    *,
    actor_telegram_id: int | None = None,
    actor_role: Role | str | None = None,
) -> Erasure:
    """Erase ``person_id`` (see the module docstring). ``actor_*`` = who asked (None = the
    system). Returns what was done; erasing someone already erased changes nothing."""
    destroyed = await crypto.keystore.destroy(person_id)  # committed: crypto-shredding
    crypto.forget(person_id)
    async with sessions.begin() as session:
        result = await session.execute(
            delete(Person).where(Person.id == person_id).execution_options(synchronize_session=False)
        )
        deleted = bool(result.rowcount)  # type: ignore[attr-defined]
        if deleted or destroyed:
            await AuditRepository(session).record(
                actor_telegram_id=actor_telegram_id,
                actor_role=actor_role,
                action="person.erased",
                subject_person_id=None,  # the person is gone; their id is in the detail
                detail={
                    "person_id": person_id,
                    "data_keys_destroyed": destroyed,
                    "person_deleted": deleted,
                },
            )
    destroyed += await crypto.keystore.destroy(person_id)
    crypto.forget(person_id)
    return Erasure(person_id, destroyed, deleted)
