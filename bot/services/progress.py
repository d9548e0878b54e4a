"""/progress: a client's own practice, summed up and drawn as a PNG chart.

What is shown
    * top panel: distress before and after practice (0-10). Up to ``DAILY_WEEKS`` weeks, a
      line through each local day's mean; over a longer span each day is a faint dot and the
      line goes through the weekly means (a year of daily points is unreadable noise). Each
      series is over the ratings it has: an exercise stopped before its rating after still
      counts for "before";
    * bottom panel: practices per week (local Monday-based weeks, empty weeks as 0; at least
      ``MIN_WEEKS`` weeks are drawn, so that a first week is not one wide bar);
    * a one-line summary: practices in the last 4 weeks (28 local days) and in all, and the
      mean rating before and after over the practices that have both (shown period).

Time zone
    Everything is grouped in the client's IANA time zone (``Identity.timezone``): a practice
    at 23:30 UTC on a Sunday is a Monday, next week, in Auckland.

Fast with years of data
    The chart shows at most the last ``WINDOW_WEEKS`` (52) local weeks, starting at the first
    week with a practice in them. Only the rows of that window are loaded and decrypted (the
    ratings are encrypted, so decryption is the cost per row); the all-time total is one
    ``COUNT`` in SQL. The work is therefore bounded by one year of practice, however long
    the history, and the chart has at most 53 bars and ~365 daily points. The caption says
    so when older practice exists (``Progress.older``).

Rendering
    ``bot.services.progress_chart.render_chart`` draws a :class:`Progress` (kept apart so that
    matplotlib, ~40 MB resident, is imported only when a chart is first drawn).

Privacy: ratings never appear in logs, exceptions or reprs; the dataclasses below hold them
only on their way to the chart and are not logged.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from statistics import fmean
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import load_only

from bot.db.models import ExerciseRun, Role
from bot.db.types import utcnow
from bot.services.people import Identity

WINDOW_WEEKS = 52  # the chart's longest span: the last year
MIN_WEEKS = 4  # the chart's shortest span (a first week alone would be one wide bar)
DAILY_WEEKS = 10  # up to this many weeks, the ratings are drawn per day; beyond, per week
RECENT_DAYS = 28  # "the last 4 weeks" of the summary
CHART_SIZE = (1200, 900)  # pixels (width, height) of the PNG
_DPI = 100


@dataclass(frozen=True)
class Day:
    """One local day with practice: the mean ratings of that day (None: no such rating)."""

    day: date
    before: float | None = field(repr=False)
    after: float | None = field(repr=False)


@dataclass(frozen=True)
class Week:
    """One local week (Monday-based): how many practices, and their mean ratings."""

    start: date  # the local Monday
    count: int
    before: float | None = field(default=None, repr=False)
    after: float | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Progress:
    """A client's practice as /progress shows it (see the module docstring)."""

    today: date  # local
    days: tuple[Day, ...]  # in the window, oldest first
    weeks: tuple[Week, ...]  # every week from the first with practice to this one
    total: int  # all time
    recent: int  # the last RECENT_DAYS local days
    rated: int = field(repr=False)  # practices in the window with both ratings
    mean_before: float | None = field(repr=False)  # over those
    mean_after: float | None = field(repr=False)

    @property
    def shown(self) -> int:
        """Practices in the window (drawn in the chart)."""
        return sum(week.count for week in self.weeks)

    @property
    def older(self) -> bool:
        """Whether there is practice before the window (not drawn)."""
        return self.total > self.shown


@dataclass(frozen=True)
class _Row:
    day: date
    before: int | None
    after: int | None


class ProgressRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def count_of(self, client_id: int) -> int:
        return await self.session.scalar(
            select(func.count()).select_from(ExerciseRun).where(ExerciseRun.client_id == client_id)
        ) or 0

    async def since(self, client_id: int, start: datetime) -> list[ExerciseRun]:
        """The client's practices started at or after ``start``, only the columns needed. The
        entity is selected (not the columns) so that the ratings are decrypted on load; the
        id and the owner are loaded because the ciphertext is bound to them."""
        rows = await self.session.scalars(
            select(ExerciseRun)
            .options(
                load_only(
                    ExerciseRun.id,
                    ExerciseRun.client_id,
                    ExerciseRun.started_at,
                    ExerciseRun.distress_before,
                    ExerciseRun.distress_after,
                )
            )
            .where(ExerciseRun.client_id == client_id, ExerciseRun.started_at >= start)
        )
        return list(rows)


class ProgressService:
    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], *, clock: Callable[[], datetime] = utcnow
    ) -> None:
        self._sessions = sessions
        self._clock = clock

    async def summary(self, actor: Identity) -> Progress | None:
        """The actor's own practice; None when they have none at all."""
        if actor.role is not Role.CLIENT or actor.person_id is None:
            raise PermissionError("only enrolled clients have a practice log")
        zone = _zone(actor.timezone)
        today = self._clock().astimezone(zone).date()
        first_week = week_of(today) - timedelta(weeks=WINDOW_WEEKS - 1)
        async with self._sessions() as session:
            repo = ProgressRepository(session)
            total = await repo.count_of(actor.person_id)
            if total == 0:
                return None
            loaded = await repo.since(actor.person_id, _local_midnight(first_week, zone))
            rows = [
                _Row(r.started_at.astimezone(zone).date(), _rating(r.distress_before), _rating(r.distress_after))
                for r in loaded
            ]
        return aggregate(rows, today=today, total=total)


def aggregate(rows: Iterable[_Row], *, today: date, total: int) -> Progress:
    """The window's rows (local dates) summed up: daily means, weekly counts, the summary."""
    by_day: dict[date, list[_Row]] = defaultdict(list)
    for row in rows:
        by_day[row.day].append(row)
    days = tuple(
        Day(day, _mean(r.before for r in found), _mean(r.after for r in found))
        for day, found in sorted(by_day.items())
    )
    pairs = [r for found in by_day.values() for r in found if r.before is not None and r.after is not None]
    recent_from = today - timedelta(days=RECENT_DAYS - 1)
    return Progress(
        today=today,
        days=days,
        weeks=_weeks(by_day, today),
        total=total,
        recent=sum(len(found) for day, found in by_day.items() if day >= recent_from),
        rated=len(pairs),
        mean_before=_mean(r.before for r in pairs),
        mean_after=_mean(r.after for r in pairs),
    )


def _weeks(by_day: Mapping[date, list[_Row]], today: date) -> tuple[Week, ...]:
    """Every week from the first with practice (at least MIN_WEEKS back) to the current one,
    empty weeks as 0."""
    if not by_day:
        return ()
    grouped: dict[date, list[_Row]] = defaultdict(list)
    for day, found in by_day.items():
        grouped[week_of(day)].extend(found)
    last = week_of(today)
    start = min(min(grouped), last - timedelta(weeks=MIN_WEEKS - 1))
    weeks = []
    while start <= last:
        found = grouped.get(start, [])
        weeks.append(Week(start, len(found), _mean(r.before for r in found), _mean(r.after for r in found)))
        start += timedelta(weeks=1)
    return tuple(weeks)


def week_of(day: date) -> date:
    """The Monday of ``day``'s week."""
    return day - timedelta(days=day.weekday())


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def _local_midnight(day: date, zone: ZoneInfo) -> datetime:
    return datetime.combine(day, time(), tzinfo=zone).astimezone(UTC)


def _rating(value: str | None) -> int | None:
    """A stored rating ("0"-"10"), or None for a missing or unreadable one (never echoed)."""
    if value is None or not value.isdigit():
        return None
    number = int(value)
    return number if 0 <= number <= 10 else None


def _mean(values: Iterable[int | None]) -> float | None:
    present = [v for v in values if v is not None]
    return fmean(present) if present else None


# -- the chart ---------------------------------------------------------------------------------

#: The words on the chart: the names under ``progress.chart`` in content.
CHART_LABELS = (
    "ratings_title",
    "ratings_title_weekly",
    "ratings_axis",
    "before",
    "after",
    "weeks_title",
    "weeks_axis",
    "months",  # twelve short month names
    "day_tick",  # {day} {month}
    "month_tick",  # {month}
    "year_tick",  # {month} {year}
)
