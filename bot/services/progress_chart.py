"""The /progress chart: a :class:`~bot.services.progress.Progress` drawn as a PNG.

``render_chart`` is a pure function (matplotlib's object API on the Agg canvas: no pyplot
global state, safe in a worker thread) returning a PNG of ``CHART_SIZE`` pixels. Every word
on it comes from content (``progress.chart``), passed in by the handler. This module imports
matplotlib (and numpy, Pillow): ~40 MB resident, so the handler imports it on first use.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, timedelta
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.dates import date2num
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, MaxNLocator

from bot.services.progress import _DPI, CHART_SIZE, DAILY_WEEKS, Progress, week_of

BEFORE_COLOUR = "#c2703d"  # warm, not alarm red
AFTER_COLOUR = "#3d7ea6"
BAR_COLOUR = "#7fa88a"


def render_chart(progress: Progress, labels: Mapping[str, Any]) -> bytes:
    """The chart as PNG bytes of ``CHART_SIZE`` pixels. ``labels`` maps each of
    ``CHART_LABELS`` to its words (titles, axis labels, legend, month names, tick formats)."""
    width, height = CHART_SIZE
    figure = Figure(figsize=(width / _DPI, height / _DPI), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(figure)
    top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=(3, 2))
    _draw_ratings(top, progress, labels)
    _draw_weeks(bottom, progress, labels)
    _date_ticks(bottom, progress, labels)
    out = io.BytesIO()
    figure.savefig(out, format="png", dpi=_DPI)
    return out.getvalue()


def _span(progress: Progress) -> tuple[float, float]:
    """The x range: the first shown week's Monday to the end of the current week."""
    first = progress.weeks[0].start if progress.weeks else week_of(progress.today)
    last = week_of(progress.today) + timedelta(days=7)
    return float(date2num(first)), float(date2num(last))


def _draw_ratings(axes: Any, progress: Progress, labels: Mapping[str, Any]) -> None:
    """A few weeks: a line through each day's mean. Longer: each day as a faint dot and a
    line through the weekly means, so that a year stays readable (the title says which)."""
    weekly = len(progress.weeks) > DAILY_WEEKS
    axes.set_title(str(labels["ratings_title_weekly" if weekly else "ratings_title"]), loc="left")
    axes.set_ylabel(str(labels["ratings_axis"]))
    axes.set_ylim(-0.5, 10.5)
    axes.yaxis.set_major_locator(FixedLocator(range(0, 11, 2)))
    axes.grid(axis="y", alpha=0.3)
    for key, colour, marker in (("before", BEFORE_COLOUR, "o"), ("after", AFTER_COLOUR, "s")):
        days = _points(((d.day, getattr(d, key)) for d in progress.days), 0.5)
        if not weekly:
            axes.plot(*days, marker=marker, color=colour, label=str(labels[key]), linewidth=1.6, markersize=6)
            continue
        axes.plot(*days, linestyle="none", marker=marker, color=colour, alpha=0.25, markersize=3)
        weeks = _points(((w.start, getattr(w, key)) for w in progress.weeks), 3.5)
        axes.plot(*weeks, marker=marker, color=colour, label=str(labels[key]), linewidth=2.0, markersize=4)
    axes.legend(loc="upper right", frameon=False, ncols=2)
    axes.set_xlim(*_span(progress))


def _points(values: Iterable[tuple[date, float | None]], offset: float) -> tuple[list[float], list[float]]:
    """x (days, shifted to the middle of the day or week) and y, without missing values."""
    present = [(float(date2num(day)) + offset, value) for day, value in values if value is not None]
    return [x for x, _ in present], [y for _, y in present]


def _draw_weeks(axes: Any, progress: Progress, labels: Mapping[str, Any]) -> None:
    axes.set_title(str(labels["weeks_title"]), loc="left")
    axes.set_ylabel(str(labels["weeks_axis"]))
    axes.bar(
        [float(date2num(w.start)) + 3.5 for w in progress.weeks],
        [w.count for w in progress.weeks],
        width=6.0,
        color=BAR_COLOUR,
    )
    axes.yaxis.set_major_locator(MaxNLocator(integer=True, nbins=5, min_n_ticks=1))
    axes.set_ylim(0, max([w.count for w in progress.weeks] + [1]) * 1.15)
    axes.grid(axis="y", alpha=0.3)


def _date_ticks(axes: Any, progress: Progress, labels: Mapping[str, Any]) -> None:
    ticks, texts = _ticks(progress, labels)
    axes.xaxis.set_major_locator(FixedLocator([float(date2num(t)) for t in ticks]))
    axes.set_xticklabels(texts)
    axes.set_xlim(*_span(progress))


def _ticks(progress: Progress, labels: Mapping[str, Any]) -> tuple[list[date], list[str]]:
    """Mondays ("3 Mar") for up to DAILY_WEEKS weeks; else the first of each month ("Mar",
    with the year at January and at the first tick). Month names come from content, not
    from the process locale (which is English, or C, whatever the client's language)."""
    months: Sequence[str] = labels["months"]
    start = progress.weeks[0].start if progress.weeks else week_of(progress.today)
    if len(progress.weeks) <= DAILY_WEEKS:
        ticks = [start + timedelta(weeks=n) for n in range(len(progress.weeks) or 1)]
        return ticks, [str(labels["day_tick"]).format(day=t.day, month=months[t.month - 1]) for t in ticks]
    ticks = _month_starts(start, progress.today)
    texts = [
        str(labels["year_tick" if n == 0 or t.month == 1 else "month_tick"]).format(
            month=months[t.month - 1], year=t.year
        )
        for n, t in enumerate(ticks)
    ]
    return ticks, texts


def _month_starts(start: date, end: date) -> list[date]:
    """The first day of every month after ``start`` up to ``end``."""
    month = date(start.year, start.month, 1)
    found = []
    while month <= end:
        if month >= start:
            found.append(month)
        month = date(month.year + month.month // 12, month.month % 12 + 1, 1)
    return found or [start]
