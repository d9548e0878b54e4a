"""A person's data rights: a copy of everything stored about them, and erasure.

Which tables hold a person's data is derived from the models, not listed by hand: every
table with a foreign key to ``people.id`` (plus the person's own row). A table added later
with such a key is exported, and checked by the erasure tests, without a change here.

A row is the person's when one of its person columns holds their id, or one of its
``*telegram_id`` columns their Telegram id (e.g. audit events they caused). In an exported
row
  * the person's own encrypted values are decrypted; encrypted values owned by someone
    else (e.g. an invite's copy of the alias, under the therapist's key) are left out;
  * a reference to another person shows only the role and, for practice members, their
    display name (a link row names the therapist, nothing else of theirs); another
    person's Telegram id is left out.
"""

from __future__ import annotations

import base64
import enum
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time
from typing import Any

from sqlalchemy import Column, Table, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Mapper, defer

from bot.crypto.erasure import Erasure, erase_person
from bot.crypto.fields import FieldCrypto, encrypted_owner
from bot.db.models import Base, Person, Role
from bot.db.repositories import AuditRepository, ConversationStateRepository, PeopleRepository
from bot.db.types import utcnow
from bot.inbox import Inbox
from bot.services.people import Identity

EXPORT_FORMAT = "imrs-companion-export/1"
PEOPLE_TABLE = Person.__table__.name
WITHHELD = "(not shown: held under another person's key)"


@dataclass(frozen=True)
class PersonColumns:
    """The columns of one table that can refer to a person."""

    table: Table
    person_ids: tuple[Column[Any], ...]  # foreign keys to people.id
    telegram_ids: tuple[Column[Any], ...]  # columns named *telegram_id


def tables_with_person_data(tables: Iterable[Table] | None = None) -> list[PersonColumns]:
    """Every table (other than ``people``) with a foreign key to ``people.id``, in
    dependency order, with its person and Telegram-id columns."""
    result: list[PersonColumns] = []
    for table in tables if tables is not None else Base.metadata.sorted_tables:
        if table.name == PEOPLE_TABLE:
            continue
        person_ids = tuple(column for column in table.columns if _refers_to_a_person(column))
        if person_ids:
            telegram_ids = tuple(c for c in table.columns if c.name.endswith("telegram_id"))
            result.append(PersonColumns(table, person_ids, telegram_ids))
    return result


def _refers_to_a_person(column: Column[Any]) -> bool:
    return any(fk.column.table.name == PEOPLE_TABLE and fk.column.name == "id" for fk in column.foreign_keys)


def _mapper_of(table: Table) -> Mapper[Any] | None:
    for mapper in Base.registry.mappers:
        if mapper.local_table is table:
            return mapper
    return None


class DataRightsService:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], crypto: FieldCrypto) -> None:
        self._sessions = sessions
        self._crypto = crypto

    # -- export -------------------------------------------------------------------------------

    async def export(self, actor: Identity) -> bytes:
        """Everything stored about the asker, decrypted, as UTF-8 JSON. Audited
        (``data.exported``, no content)."""
        if actor.person_id is None:
            raise PermissionError("only enrolled people have stored data")
        person_id, telegram_id = actor.person_id, actor.telegram_id
        async with self._sessions() as session:
            person = await PeopleRepository(session).get(person_id)
            if person is None:
                raise PermissionError("the person no longer exists")
            tables: dict[str, list[dict[str, Any]]] = {}
            mentioned: set[int] = set()
            for spec in tables_with_person_data():
                rows = await _rows_of(session, spec, person_id, telegram_id)
                for row in rows:
                    mentioned.update(
                        v for c in spec.person_ids if isinstance(v := row.get(c.key), int) and v != person_id
                    )
                tables[spec.table.name] = rows
            others = await _describe_people(session, mentioned)
        for spec in tables_with_person_data():
            for row in tables[spec.table.name]:
                for column in spec.person_ids:
                    value = row.get(column.key)
                    if isinstance(value, int) and value != person_id:
                        row[column.key] = others.get(value)
        document = {
            "format": EXPORT_FORMAT,
            "exported_at": utcnow(),
            "about": "Everything this bot stores about you. Times are in UTC.",
            "person": _row_dict(person.__table__, person, own=lambda _c: True),
            "tables": tables,
        }
        async with self._sessions.begin() as session:
            await AuditRepository(session).record(
                actor_telegram_id=telegram_id,
                actor_role=actor.role.value if actor.role else None,
                action="data.exported",
                subject_person_id=person_id,
                detail={"tables": len(tables)},
            )
        return json.dumps(document, default=_json_value, ensure_ascii=False, indent=2).encode("utf-8")

    # -- erasure ------------------------------------------------------------------------------

    async def erase(self, actor: Identity) -> Erasure:
        """Erase the asker (crypto-shredding first, see bot.crypto.erasure). Before that, the
        Telegram id is taken off the events they caused, their conversation states and their
        updates in the inbox (bot.inbox) are deleted, so that afterwards only the audit
        record of the erasure refers to them."""
        if actor.person_id is None:
            raise PermissionError("only enrolled people have stored data")
        async with self._sessions.begin() as session:
            await AuditRepository(session).forget_actor(actor.telegram_id)
            await ConversationStateRepository(session).forget_user(actor.telegram_id)
            await Inbox.forget_user(session, actor.telegram_id)  # the updates they sent
        return await erase_person(
            self._sessions,
            self._crypto,
            actor.person_id,
            actor_telegram_id=actor.telegram_id,
            actor_role=actor.role.value if actor.role else None,
        )


async def _rows_of(
    session: AsyncSession, spec: PersonColumns, person_id: int, telegram_id: int
) -> list[dict[str, Any]]:
    """The rows of one table that are the person's, as dicts (column key -> value).

    Mapped tables are read through the ORM, one query per person column, so that the
    encrypted values owned through that column are decrypted and nothing else is."""
    mapper = _mapper_of(spec.table)
    if mapper is None:  # a plain table: no encrypted columns are possible
        matches = [c == person_id for c in spec.person_ids] + [c == telegram_id for c in spec.telegram_ids]
        result = await session.execute(select(spec.table).where(or_(*matches)))
        return [_telegram_ids_hidden(spec, dict(row), telegram_id) for row in result.mappings()]

    by_key: dict[Any, dict[str, Any]] = {}
    (pk,) = mapper.primary_key
    lookups: list[tuple[Any, str | None]] = [(c == person_id, c.key) for c in spec.person_ids]
    lookups += [(c == telegram_id, None) for c in spec.telegram_ids]
    for condition, via in lookups:
        # Encrypted columns owned through the column that matched are the person's own.
        encrypted = [c for c in spec.table.columns if encrypted_owner(c) is not None]
        own = {c.key for c in encrypted if via is not None and encrypted_owner(c) == via}
        hidden = [
            getattr(mapper.class_, mapper.get_property_by_column(c).key)
            for c in encrypted
            if c.key not in own
        ]
        query = select(mapper.class_).where(condition).options(*(defer(a) for a in hidden))
        for obj in (await session.scalars(query)).all():
            row = _row_dict(spec.table, obj, own=lambda c, own=own: c.key in own)
            key = getattr(obj, mapper.get_property_by_column(pk).key)
            merged = by_key.setdefault(key, row)
            merged.update({k: v for k, v in row.items() if v != WITHHELD})
            session.expunge(obj)
    return [_telegram_ids_hidden(spec, row, telegram_id) for row in by_key.values()]


def _row_dict(table: Table, obj: Any, *, own: Any) -> dict[str, Any]:
    mapper = obj.__mapper__
    row: dict[str, Any] = {}
    for column in table.columns:
        attr = mapper.get_property_by_column(column).key
        if encrypted_owner(column) is not None and not own(column):
            row[column.key] = WITHHELD
        else:
            row[column.key] = getattr(obj, attr)
    return row


def _telegram_ids_hidden(spec: PersonColumns, row: dict[str, Any], telegram_id: int) -> dict[str, Any]:
    for column in spec.telegram_ids:
        if row.get(column.key) not in (None, telegram_id):
            row[column.key] = WITHHELD
    return row


async def _describe_people(session: AsyncSession, person_ids: set[int]) -> dict[int, dict[str, Any]]:
    """Other people as an export may show them: their role, and a practice member's
    display name (never a client's pseudonym or anything else)."""
    described: dict[int, dict[str, Any]] = {}
    people = PeopleRepository(session)
    for person_id in sorted(person_ids):
        other = await people.get(person_id)
        if other is None:
            continue
        role = Role(other.role)
        entry: dict[str, Any] = {"role": role.value}
        if role is not Role.CLIENT and other.display_name:
            entry["display_name"] = other.display_name
        described[person_id] = entry
    return described


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime | date | time):  # time: a reminder's local time
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"cannot export a {type(value).__name__}")
