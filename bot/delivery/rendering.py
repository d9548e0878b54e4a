"""Parameters of an outbox row as its recipient reads them, at send time.

An outbox row made from a content key carries ``params``: ids, numbers and dates, never
clinical text (they are stored in plain). Two kinds of value are turned into words when the
message is sent, in the recipient's language and time zone *as they are then* (a client who
changes their zone after an appointment was made reads its time in the new zone):

* ``{"at": "2027-11-01T09:00:00+00:00"}``: a moment (ISO 8601, UTC), shown as
  ``outbox.formats.moment`` says ("Monday 01-11-2027 at 10:00"), in the recipient's zone;
* ``{"text": "appointments.kinds.imrs"}``: another content text (a word from a fixed list).

Anything else is filled in as it is. ``local_moment`` is the same formatting for a reply.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from bot.content import Content, trusted_html

MOMENT = "at"
TEXT = "text"


def moment(when: datetime) -> dict[str, str]:
    """A moment as an outbox parameter."""
    return {MOMENT: when.isoformat()}


def content_text(key: str) -> dict[str, str]:
    """Another content text as an outbox parameter (rendered in the recipient's language)."""
    return {TEXT: key}


def local_moment(content: Content, language: str, zone: str, when: datetime) -> str:
    """``when`` in ``zone``: weekday, date and time, in ``language``."""
    local = when.astimezone(ZoneInfo(zone))
    weekdays = content.texts("outbox.formats.weekdays", language)
    return content.text(
        "outbox.formats.moment",
        language,
        weekday=weekdays[local.weekday()],
        date=local.strftime(content.text("outbox.formats.date", language)),
        time=local.strftime("%H:%M"),
    )


def render_params(content: Content, language: str, zone: str, params: Mapping[str, Any] | None) -> dict[str, Any]:
    """``params`` with moments and content references turned into words."""
    rendered: dict[str, Any] = {}
    for name, value in (params or {}).items():
        if isinstance(value, Mapping) and MOMENT in value:
            rendered[name] = local_moment(content, language, zone, datetime.fromisoformat(value[MOMENT]))
        elif isinstance(value, Mapping) and TEXT in value:
            rendered[name] = trusted_html(content.text(str(value[TEXT]), language))
        else:
            rendered[name] = value
    return rendered
