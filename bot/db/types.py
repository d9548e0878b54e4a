"""Column types shared by the models.

``UTCDateTime`` is the only datetime type the schema uses: the application deals
exclusively in timezone-aware datetimes, the database stores UTC, and reading a
value back always yields an aware datetime in UTC, whatever the backend
(SQLite has no timezone support and would otherwise hand back naive values).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import BigInteger, ColumnElement, DateTime, String, any_, bindparam, cast, func
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import InstrumentedAttribute
from sqlalchemy.types import TypeDecorator


def utcnow() -> datetime:
    """The current time as an aware UTC datetime (the default of every timestamp)."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A ``TIMESTAMP WITH TIME ZONE`` that accepts and returns aware UTC datetimes only.

    * Binding a naive datetime raises ``ValueError``: a naive value is ambiguous
      (local time? UTC?) and would silently corrupt reminders and audit times.
    * Aware values are converted to UTC before they are stored. On SQLite they
      are stored as naive UTC text, so lexical order equals time order and
      comparisons in SQL work.
    * Values read back are always aware and in UTC.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise TypeError(f"UTCDateTime expects a datetime, got {type(value).__name__}")
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(
                "UTCDateTime refuses naive datetimes; pass an aware datetime "
                "(e.g. bot.db.types.utcnow() or datetime.now(UTC))"
            )
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            # SQLite stores text; keep one canonical (naive UTC) representation.
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            # Only SQLite gets here: the value was stored as naive UTC above.
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def id_among(column: ColumnElement[Any] | InstrumentedAttribute[Any], ids: Iterable[int], dialect: str) -> ColumnElement[bool]:
    """``column IN (ids)`` for an integer column. On PostgreSQL ``column = ANY(...)`` of one
    text parameter, ``'1,2,3'``: not one placeholder per id (thousands of them for the
    planner and the consent check, each bound, sent and planned as a separate value), nor
    a list parameter (psycopg checks every element of a list it adapts)."""
    if dialect == "postgresql":
        text = ",".join(map(str, ids))
        array = cast(func.string_to_array(bindparam(None, text, type_=String), ","), ARRAY(BigInteger))
        return column == any_(array)
    return column.in_(list(ids))
