"""Encrypted columns: a model declares one in one word, services only ever see plaintext.

Declaring::

    class CheckIn(Base):
        __tablename__ = "check_ins"
        id: Mapped[int] = row_id_column()                  # client-generated random id
        client_id: Mapped[int] = mapped_column(PersonId, ForeignKey("people.id"))
        note: Mapped[str | None] = encrypted(owner="client_id")
        drawing: Mapped[bytes | None] = encrypted(owner="client_id", kind=bytes)

``encrypted(owner=...)`` is a ``mapped_column`` of type :class:`Encrypted` (a
``LargeBinary`` holding bot.crypto.formats' field format) that names the attribute
holding the owner's person id. The table needs a single-column integer primary key;
the value is bound to (table, column, row id, owner, data-key version) through the
AES-GCM associated data.

How it works (ORM events, registered when a mapper with encrypted columns is configured)
    * ``before_flush``: new rows of such tables get a random 63-bit id if they have none
      (the id must be known before the INSERT to be bound into the ciphertext; no second
      write). Every new or changed plaintext value is encrypted, and re-encrypted when
      the row's owner or id changes. The ciphertext replaces the plaintext for the
      flush only: ``after_flush_postexec`` puts the plaintext back as the committed value.
    * ``load`` / ``refresh``: values are decrypted as rows are loaded, so the instance
      never holds ciphertext.
    * The column type refuses anything but ciphertext made by this module: a Core
      ``insert``/``update`` or bulk ORM ``update()`` with a plaintext, a WHERE clause
      comparing an encrypted column with a value, or ciphertext copied from another
      attribute raise :class:`PlaintextRefused` rather than store plaintext.

The crypto context
    A session reaches its :class:`FieldCrypto` through ``session.info`` (set on the
    session factory by :meth:`FieldCrypto.attach`). A session without one can still
    read and write rows whose encrypted values are NULL; anything else raises
    :class:`CryptoNotConfigured`.

Async, and where key-store IO happens
    Encrypting and decrypting are synchronous and need the owner's unwrapped data key in
    the process cache (an LRU of 10 000 people's keys, kept 15 minutes). On a cache miss inside an
    ``AsyncSession`` operation, the flush or load is already running in SQLAlchemy's
    greenlet (``greenlet_spawn``), so the module awaits the key store right there
    (``sqlalchemy.util.concurrency.await_``) - the same mechanism the async drivers
    use. No IO ever happens on attribute access: values are plaintext after the load.
    The cost of a cold cache is one key-store query per owner met: for a list of many
    people's rows, ``await crypto.prepare(person_ids)`` first fetches all their keys in
    one query. Outside a greenlet (a sync ``Session``) a miss raises
    :class:`KeyNotPrepared`.

    Creating a person's first data key commits it in the key store before the clinical
    transaction commits: clinical ciphertext never exists without its key. A rolled-back
    clinical transaction may leave an unused data key behind, which is harmless.

Not supported (by design): querying on encrypted columns, selecting an encrypted column
on its own (``select(Person.alias)`` yields opaque :class:`Sealed` values, not
plaintext - select the entity), mutable JSON values.
"""

from __future__ import annotations

import logging
import secrets
import time
import weakref
from collections import OrderedDict
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass
from itertools import chain
from typing import Any, TypeVar

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import BigInteger, Integer, LargeBinary, event
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Mapper, Session, mapped_column
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.orm.base import instance_state
from sqlalchemy.orm.properties import MappedColumn
from sqlalchemy.orm.state import InstanceState
from sqlalchemy.types import TypeDecorator
from sqlalchemy.util.concurrency import in_greenlet

from bot.crypto import formats
from bot.crypto.errors import (
    CryptoError,
    CryptoNotConfigured,
    DataKeyMissing,
    KeyNotPrepared,
    PlaintextRefused,
)
from bot.crypto.keystore import KeyStore

try:  # SQLAlchemy 2.1
    from sqlalchemy.util.concurrency import await_ as _await
except ImportError:  # pragma: no cover - SQLAlchemy 2.0
    from sqlalchemy.util.concurrency import await_only as _await

_log = logging.getLogger(__name__)
_T = TypeVar("_T")

SESSION_INFO_KEY = "imrs.crypto"
_RESTORE_INFO_KEY = "imrs.crypto.restore"
_COLUMN_INFO_KEY = "imrs.encrypted"

#: The type of every person id and every column referring to one: 64-bit on PostgreSQL,
#: SQLite's INTEGER (a 64-bit rowid alias that still autoincrements for raw inserts).
PersonId = BigInteger().with_variant(Integer(), "sqlite")
#: The same for the primary keys of tables with encrypted columns.
RowId = PersonId


def new_row_id() -> int:
    """A random positive 63-bit id: known before the INSERT, never reused."""
    return secrets.randbelow(2**63 - 1) + 1


def row_id_column(**kwargs: Any) -> MappedColumn[Any]:
    """The primary key of a table with encrypted columns (ids assigned in Python)."""
    return mapped_column(RowId, primary_key=True, autoincrement=False, default=new_row_id, **kwargs)


# -- the column type -----------------------------------------------------------------------


class Sealed:
    """Ciphertext as read from an encrypted column, before the ORM decrypted it. Opaque:
    its repr and str never show the bytes."""

    __slots__ = ("data", "__weakref__")

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sealed) and other.data == self.data

    def __hash__(self) -> int:
        return hash(self.data)

    def __repr__(self) -> str:
        return f"<sealed {len(self.data)} bytes>"

    __str__ = __repr__


class Encrypted(TypeDecorator[Any]):
    """``LargeBinary`` that only ever binds ciphertext (see the module docstring)."""

    impl = LargeBinary
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> bytes | None:
        if value is None:
            return None
        if isinstance(value, Sealed):
            return value.data
        raise PlaintextRefused(
            "Refusing to store an unencrypted value in an encrypted column (or to compare one "
            "in SQL): write encrypted columns through ORM objects in a session with field crypto."
        )

    def process_result_value(self, value: Any, dialect: Dialect) -> Sealed | None:
        if value is None:
            return None
        return Sealed(bytes(value))


@dataclass(frozen=True)
class _FieldSpec:
    owner: str
    kind: type
    max_length: int | None


def encrypted(
    *, owner: str, kind: type = str, max_length: int | None = None, **kwargs: Any
) -> MappedColumn[Any]:
    """An encrypted column (``str`` by default, or ``kind=bytes``) owned by the person whose
    id is in attribute ``owner`` (``"id"`` for the people table itself). ``max_length``
    (characters, or bytes) is checked before encrypting: the database cannot any more."""
    if kind not in (str, bytes):
        raise TypeError("encrypted columns hold str or bytes")
    spec = _FieldSpec(owner, kind, max_length)
    return mapped_column(Encrypted(), info={_COLUMN_INFO_KEY: spec}, **kwargs)


def encrypted_owner(column: Any) -> str | None:
    """For a table column: the attribute naming its owner if it is encrypted, else None
    (e.g. for a data export that decrypts only the exporting person's own values)."""
    spec = getattr(column, "info", {}).get(_COLUMN_INFO_KEY)
    return spec.owner if isinstance(spec, _FieldSpec) else None


# -- what the mappers declare --------------------------------------------------------------


@dataclass(frozen=True)
class _Field:
    key: str  # attribute name
    column: str  # column name (bound into the ciphertext)
    owner: str  # attribute holding the owner's person id
    kind: type
    max_length: int | None


@dataclass(frozen=True)
class _EncryptedMapping:
    table: str
    pk: str
    fields: tuple[_Field, ...]


_MAPPINGS: weakref.WeakKeyDictionary[Mapper[Any], _EncryptedMapping] = weakref.WeakKeyDictionary()


@event.listens_for(Mapper, "mapper_configured")
def _on_mapper_configured(mapper: Mapper[Any], class_: type) -> None:
    fields: list[_Field] = []
    for prop in mapper.column_attrs:
        for column in prop.columns:
            spec = getattr(column, "info", {}).get(_COLUMN_INFO_KEY)
            if isinstance(spec, _FieldSpec):
                fields.append(_Field(prop.key, column.name, spec.owner, spec.kind, spec.max_length))
    if not fields:
        return
    if len(mapper.primary_key) != 1:
        raise CryptoError(f"{class_.__name__}: encrypted columns need a single-column primary key")
    pk = mapper.get_property_by_column(mapper.primary_key[0]).key
    for f in fields:
        if f.owner not in mapper.column_attrs:
            raise CryptoError(
                f"{class_.__name__}.{f.key}: owner {f.owner!r} is not a column attribute"
            )
    table = mapper.persist_selectable.name  # type: ignore[attr-defined]
    _MAPPINGS[mapper] = _EncryptedMapping(table, pk, tuple(fields))
    event.listen(mapper, "load", _on_load)
    event.listen(mapper, "refresh", _on_refresh)


def _mapping_of(state: InstanceState[Any]) -> _EncryptedMapping | None:
    return _MAPPINGS.get(state.mapper)


# -- the process-wide crypto service -------------------------------------------------------


class _KeyCache:
    """Unwrapped data keys (as ready AESGCM objects) by person: LRU over people, with a TTL."""

    def __init__(self, max_people: int, ttl: float) -> None:
        self.max_people = max_people
        self.ttl = ttl
        # person -> ({version: AESGCM}, expires at)
        self._people: OrderedDict[int, tuple[dict[int, AESGCM], float]] = OrderedDict()

    def _versions(self, person_id: int) -> dict[int, AESGCM] | None:
        entry = self._people.get(person_id)
        if entry is None:
            return None
        if entry[1] < time.monotonic():
            del self._people[person_id]
            return None
        self._people.move_to_end(person_id)
        return entry[0]

    def get(self, person_id: int, version: int) -> AESGCM | None:
        versions = self._versions(person_id)
        return None if versions is None else versions.get(version)

    def current(self, person_id: int) -> tuple[int, AESGCM] | None:
        versions = self._versions(person_id)
        if not versions:
            return None
        version = max(versions)
        return version, versions[version]

    def put(self, person_id: int, keys: dict[int, bytes]) -> None:
        if not keys:
            return
        versions = self._versions(person_id) or {}
        versions.update((version, AESGCM(key)) for version, key in keys.items())
        self._people[person_id] = (versions, time.monotonic() + self.ttl)
        self._people.move_to_end(person_id)
        while len(self._people) > self.max_people:
            self._people.popitem(last=False)

    def forget(self, person_id: int) -> None:
        self._people.pop(person_id, None)

    def clear(self) -> None:
        self._people.clear()

    def __len__(self) -> int:
        return sum(len(versions) for versions, _ in self._people.values())


class FieldCrypto:
    """Encrypts and decrypts field values with per-person data keys from a key store.

    One per process (``Services.crypto``). Sessions reach it through ``session.info``:
    ``sessions = crypto.attach(session_factory(engine))``.
    """

    def __init__(self, keystore: KeyStore, *, cache_people: int = 10_000, cache_ttl: float = 900.0) -> None:
        self.keystore = keystore
        self._cache = _KeyCache(cache_people, cache_ttl)

    # -- wiring -----------------------------------------------------------------------------

    def attach(self, factory: async_sessionmaker[AsyncSession]) -> async_sessionmaker[AsyncSession]:
        """A copy of ``factory`` whose sessions use this crypto service."""
        kw = dict(factory.kw)
        info = dict(kw.pop("info", None) or {})
        info[SESSION_INFO_KEY] = self
        return async_sessionmaker(class_=factory.class_, info=info, **kw)

    async def aclose(self) -> None:
        self._cache.clear()
        await self.keystore.close()

    # -- keys -------------------------------------------------------------------------------

    async def prepare(self, person_ids: Iterable[int]) -> None:
        """Fetch (one query) and cache the data keys of ``person_ids`` that are not cached:
        call before loading rows of many owners to avoid one key-store query per owner."""
        missing = {p for p in person_ids if self._cache.current(p) is None}
        if missing:
            found = await self.keystore.fetch(missing)
            for person_id, versions in found.items():
                self._cache.put(person_id, versions)

    async def ensure_writable(self, person_ids: Iterable[int]) -> None:
        """Make sure each person has a current data key (creating it) and cache it."""
        missing = {p for p in person_ids if self._cache.current(p) is None}
        if missing:
            found = await self.keystore.fetch(missing)
            for person_id, versions in found.items():
                self._cache.put(person_id, versions)
            for person_id in sorted(missing - found.keys()):
                version, key = await self.keystore.create(person_id)
                self._cache.put(person_id, {version: key})

    def forget(self, person_id: int) -> None:
        """Drop a person's keys from this process's cache (after erasing them)."""
        self._cache.forget(person_id)

    def clear_cache(self) -> None:
        self._cache.clear()

    @property
    def cached_keys(self) -> int:
        return len(self._cache)

    def _run(self, awaitable: Awaitable[_T], why: str) -> _T:
        if in_greenlet():
            return _await(awaitable)
        close = getattr(awaitable, "close", None)
        if close is not None:
            close()
        raise KeyNotPrepared(f"Data keys not cached ({why}): await crypto.prepare()/ensure_writable() first.")

    def _writable(self, person_id: int) -> tuple[int, AESGCM]:
        found = self._cache.current(person_id)
        if found is None:
            self._run(self.ensure_writable([person_id]), "writing")
            found = self._cache.current(person_id)
        if found is None:  # pragma: no cover - ensure_writable always caches
            raise DataKeyMissing(f"No data key for person {person_id}.")
        return found

    def _readable(self, person_id: int, version: int) -> AESGCM:
        aead = self._cache.get(person_id, version)
        if aead is None:
            self._cache.forget(person_id)  # reload all versions of this person
            self._run(self.prepare([person_id]), "reading")
            aead = self._cache.get(person_id, version)
        if aead is None:
            raise DataKeyMissing(
                f"There is no data key {version} for person {person_id} in the key store: the "
                "person was erased, or this database does not belong to this key store."
            )
        return aead

    # -- values -----------------------------------------------------------------------------

    def seal(self, plaintext: bytes, *, table: str, column: str, row_id: int, owner_id: int) -> bytes:
        version, aead = self._writable(owner_id)
        return formats.seal(
            aead, version, plaintext, table=table, column=column, row_id=row_id, owner_id=owner_id
        )

    def open(self, value: bytes, *, table: str, column: str, row_id: int, owner_id: int) -> bytes:
        version = formats.key_version_of(value, table=table, column=column, row_id=row_id)
        aead = self._readable(owner_id, version)
        return formats.open_sealed(
            aead, value, table=table, column=column, row_id=row_id, owner_id=owner_id
        )


# -- ORM events ----------------------------------------------------------------------------


def _crypto_of(session: Session | None, what: str) -> FieldCrypto:
    crypto = session.info.get(SESSION_INFO_KEY) if session is not None else None
    if not isinstance(crypto, FieldCrypto):
        raise CryptoNotConfigured(
            f"{what} needs field crypto, but this session has none: build the session factory "
            "with FieldCrypto.attach(session_factory(engine))."
        )
    return crypto


def _encode(field: _Field, value: Any, table: str) -> bytes:
    if field.kind is str:
        if not isinstance(value, str):
            raise TypeError(f"{table}.{field.column} holds text, got {type(value).__name__}")
    elif not isinstance(value, bytes | bytearray | memoryview):
        raise TypeError(f"{table}.{field.column} holds bytes, got {type(value).__name__}")
    if field.max_length is not None and len(value) > field.max_length:
        raise ValueError(f"{table}.{field.column} holds at most {field.max_length} characters")
    return value.encode("utf-8") if isinstance(value, str) else bytes(value)


def _decode(field: _Field, plaintext: bytes) -> Any:
    return plaintext.decode("utf-8") if field.kind is str else plaintext


def _decrypt_into(target: Any, context: Any, attrs: Iterable[str] | None) -> None:
    state = instance_state(target)
    mapping = _mapping_of(state)
    if mapping is None:
        return
    wanted = set(attrs) if attrs is not None else None
    values = state.dict
    session = getattr(context, "session", None)
    crypto: FieldCrypto | None = None
    for field in mapping.fields:
        if wanted is not None and field.key not in wanted:
            continue
        value = values.get(field.key)
        if not isinstance(value, Sealed):
            continue
        if crypto is None:
            crypto = _crypto_of(session, f"Reading {mapping.table}.{field.column}")
        row_id, owner_id = values.get(mapping.pk), values.get(field.owner)
        if not isinstance(row_id, int) or not isinstance(owner_id, int):
            raise CryptoError(
                f"Loading {mapping.table}.{field.column} needs its row id and owner "
                f"({field.owner!r}) loaded too."
            )
        plaintext = crypto.open(
            value.data, table=mapping.table, column=field.column, row_id=row_id, owner_id=owner_id
        )
        set_committed_value(target, field.key, _decode(field, plaintext))


def _on_load(target: Any, context: Any) -> None:
    _decrypt_into(target, context, None)


def _on_refresh(target: Any, context: Any, attrs: Iterable[str] | None) -> None:
    _decrypt_into(target, context, attrs)


@dataclass
class _Restore:
    state: InstanceState[Any]
    key: str
    sealed: Sealed
    plaintext: Any


@event.listens_for(Session, "before_flush")
def _before_flush(session: Session, _flush_context: Any, _instances: Any) -> None:
    work: list[tuple[InstanceState[Any], _EncryptedMapping, _Field, Any]] = []
    for obj in chain(session.new, session.dirty):
        state = instance_state(obj)
        mapping = _mapping_of(state)
        if mapping is None:
            continue
        values = state.dict
        pending = state.key is None
        if pending and values.get(mapping.pk) is None:
            setattr(obj, mapping.pk, new_row_id())
        identity_changed = not pending and state.attrs[mapping.pk].history.has_changes()
        for field in mapping.fields:
            if field.key not in values:
                if not pending and (
                    identity_changed or state.attrs[field.owner].history.has_changes()
                ):
                    raise CryptoError(
                        f"{mapping.table}.{field.column} must be loaded to move the row to "
                        "another owner or id (it has to be re-encrypted)."
                    )
                continue
            value = values[field.key]
            if value is None:
                continue
            changed = (
                pending
                or identity_changed
                or state.attrs[field.key].history.added
                or state.attrs[field.owner].history.has_changes()
            )
            if not changed:
                continue
            if isinstance(value, Sealed):
                raise PlaintextRefused(
                    f"Ciphertext was assigned to {mapping.table}.{field.column}: assign the "
                    "plaintext instead (ciphertext is bound to its own row and column)."
                )
            work.append((state, mapping, field, value))
    if not work:
        return
    crypto = _crypto_of(session, f"Writing {work[0][1].table}.{work[0][2].column}")
    owners = {state.dict.get(field.owner) for state, _m, field, _v in work}
    for owner in owners:
        if not isinstance(owner, int):
            raise CryptoError("Set the owner (a person id) before writing an encrypted column.")
    missing = [o for o in owners if isinstance(o, int) and crypto._cache.current(o) is None]  # noqa: SLF001
    if missing:
        crypto._run(crypto.ensure_writable(missing), "writing")  # noqa: SLF001
    restores: list[_Restore] = session.info.setdefault(_RESTORE_INFO_KEY, [])
    for state, mapping, field, value in work:
        data = crypto.seal(
            _encode(field, value, mapping.table),
            table=mapping.table,
            column=field.column,
            row_id=state.dict[mapping.pk],
            owner_id=state.dict[field.owner],
        )
        sealed = Sealed(data)
        obj = state.obj()
        setattr(obj, field.key, sealed)
        restores.append(_Restore(state, field.key, sealed, value))


def _restore_plaintext(session: Session) -> None:
    restores: list[_Restore] | None = session.info.pop(_RESTORE_INFO_KEY, None)
    for item in restores or ():
        obj = item.state.obj()
        if obj is not None and item.state.dict.get(item.key) is item.sealed:
            set_committed_value(obj, item.key, item.plaintext)


@event.listens_for(Session, "after_flush_postexec")
def _after_flush_postexec(session: Session, _flush_context: Any) -> None:
    _restore_plaintext(session)


@event.listens_for(Session, "after_soft_rollback")
def _after_soft_rollback(session: Session, _previous_transaction: Any) -> None:
    _restore_plaintext(session)
