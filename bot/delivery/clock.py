"""Wall-clock time for delivery code, injectable so that tests can walk through DST days
without sleeping. Every datetime here is aware and in UTC."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from bot.db.types import utcnow

Clock = Callable[[], datetime]

__all__ = ["Clock", "utcnow", "local_instant", "quiet_until"]

_UTC = ZoneInfo("UTC")


def local_instant(day: date, at: time, zone: ZoneInfo) -> datetime:
    """The UTC instant at which the wall clock in ``zone`` shows ``at`` on ``day``.

    DST: a time that does not exist that day (the spring-forward gap, e.g. 02:30 in
    Europe/Amsterdam on the last Sunday of March) is moved forward by the gap (03:30); a
    time that happens twice (fall-back) is its first occurrence (``fold=0``). Either way
    one local date gives exactly one instant.
    """
    local = datetime.combine(day, at.replace(tzinfo=None), tzinfo=zone)
    # For a time in a gap, fold=0 applies the offset from before the transition, which
    # lands the instant after the gap by exactly the gap's length: the shift we want.
    return local.astimezone(_UTC)


def quiet_until(now: datetime, zone: ZoneInfo, starts: time, ends: time) -> datetime | None:
    """When the quiet hours ``starts``-``ends`` (wall clock in ``zone``) that contain ``now``
    end, as a UTC instant; None when ``now`` is outside them. ``ends`` <= ``starts`` means
    overnight (22:00-07:00); equal times mean no quiet hours."""
    if starts == ends:
        return None
    local = now.astimezone(zone)
    wall = local.time().replace(tzinfo=None)
    today = local.date()
    if starts < ends:
        inside = starts <= wall < ends
        end_day = today
    elif wall >= starts:  # overnight, evening part
        inside, end_day = True, today + timedelta(days=1)
    else:  # overnight, morning part
        inside, end_day = wall < ends, today
    if not inside:
        return None
    end = local_instant(end_day, ends, zone)
    return end if end > now else None
