"""The readiness summary as a web page a therapist reads in a minute (pure: no database, no
Telegram). ``render_report(data, content)`` returns one self-contained HTML document: inline
CSS, an inline SVG chart, no script, no link to anything outside it, so it opens the same in
any browser, offline. Every word comes from content (``summary.*``, ``readiness.*`` in the
therapist's language) and everything a person wrote (the alias, the note, a flag's note) is
escaped.

What it shows, top to bottom: the client's alias and when it was made; the appointment (in
the therapist's time zone) or "no appointment ahead"; the readiness colour with every reason;
every answer in words; the trend against the client's earlier completed check-ins (distress,
ready, colour) as a table and a small chart; practice in the last 14 days (days practised,
exercises, the mean drop in distress during an exercise); the questions the client saved in
/learn; and the open safety notes.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from bot.checkins import CHOICES, QUESTIONS, Answers
from bot.content import Content
from bot.readiness import Colour, Readiness

#: The most earlier check-ins drawn and listed (the newest ones).
TREND_POINTS = 8
_COLOURS = {Colour.GREEN: "#2e7d32", Colour.AMBER: "#b45f00", Colour.RED: "#c62828"}
_YES_NO = frozenset({"substances", "unsafe", "self_harm"})


@dataclass(frozen=True)
class AppointmentInfo:
    kind: str  # an AppointmentKind value
    starts_at: datetime  # aware
    zone: str  # the therapist's IANA zone


@dataclass(frozen=True)
class TrendPoint:
    """One earlier completed check-in (or this one)."""

    when: datetime
    distress: int | None = field(repr=False)
    ready: int | None = field(repr=False)
    colour: Colour | None = field(repr=False)


@dataclass(frozen=True)
class PracticeFigures:
    days: int  # local days with at least one exercise
    count: int  # exercises started
    rated: int  # of those, rated before and after
    mean_drop: float | None = field(repr=False)  # mean (before - after) over the rated ones


@dataclass(frozen=True)
class FlagLine:
    kind: str  # a SafetyFlagKind value
    created_at: datetime
    note: str | None = field(repr=False)


@dataclass(frozen=True)
class ReportData:
    """Everything one summary shows (clinical: never logged, see __repr__)."""

    alias: str
    language: str  # the therapist's
    zone: str  # the therapist's IANA zone
    made_at: datetime
    completed_at: datetime
    appointment: AppointmentInfo | None
    answers: Answers
    readiness: Readiness
    earlier: Sequence[TrendPoint]  # oldest first, without this check-in
    practice: PracticeFigures
    questions: Sequence[str]  # lines (content HTML) for the questions saved in /learn
    flags: Sequence[FlagLine]

    def __repr__(self) -> str:
        return "<ReportData>"


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def _esc(value: str) -> str:
    return html.escape(value, quote=True)


class _Words:
    def __init__(self, content: Content, language: str, zone: str) -> None:
        self.content, self.language, self.zone = content, language, _zone(zone)

    def __call__(self, key: str, **params: object) -> str:
        return self.content.text(key, self.language, **params)

    def when(self, moment: datetime, fmt_key: str = "summary.report.datetime_format") -> str:
        return moment.astimezone(self.zone).strftime(self(fmt_key))

    def date(self, moment: datetime) -> str:
        return self.when(moment, "summary.date_format")


def answer_words(words: _Words, question: str, answers: Answers) -> str:
    """An answer in the therapist's words (escaped HTML)."""
    if question not in answers:
        return words("summary.answers.not_answered")
    value = answers.get(question)
    if question in ("distress", "ready"):
        return words("summary.answers.scale", value=value)
    if question == "practice_days":
        return words("summary.answers.days", value=value)
    if question == "note":
        return _esc(value) if value else words("summary.answers.no_note")
    if question == "stressors":
        if not value:
            return words("summary.answers.stressors.none")
        return ", ".join(words(f"summary.answers.stressors.{choice}") for choice in value)
    table = "yes_no" if question in _YES_NO else question
    return words(f"summary.answers.{table}.{value}")


def _number(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".") if value % 1 else str(int(value))


def chart_svg(points: Sequence[TrendPoint], words: _Words) -> str:
    """Distress and readiness (0-10) over the check-ins, oldest left: an inline SVG."""
    width, height, left, right, top, bottom = 560, 210, 34, 14, 28, 34
    plot_w, plot_h = width - left - right, height - top - bottom
    n = len(points)

    def x(i: int) -> float:
        return left + (plot_w / 2 if n == 1 else plot_w * i / (n - 1))

    def y(v: float) -> float:
        return top + plot_h * (1 - v / 10)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" '
        f'height="{height}" role="img" aria-label="{_esc(words("summary.report.chart_title"))}">',
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="#fafafa" stroke="#ccc"/>',
    ]
    for v in (0, 5, 10):
        parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#e0e0e0"/>')
        parts.append(f'<text x="{left - 6}" y="{y(v) + 4:.1f}" text-anchor="end" font-size="11">{v}</text>')
    series = (("distress", "#c62828", "chart_distress"), ("ready", "#1565c0", "chart_ready"))
    for index, (name, colour, label) in enumerate(series):
        values = [(x(i), y(getattr(p, name))) for i, p in enumerate(points) if getattr(p, name) is not None]
        if len(values) > 1:
            path = " ".join(f"{px:.1f},{py:.1f}" for px, py in values)
            parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
        for px, py in values:
            parts.append(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="3.5" fill="{colour}"/>')
        lx = left + index * 120
        parts.append(f'<rect x="{lx}" y="8" width="12" height="4" fill="{colour}"/>')
        parts.append(f'<text x="{lx + 16}" y="14" font-size="12">{words(f"summary.report.{label}")}</text>')
    for i, point in enumerate(points):
        label = words("summary.report.this_time") if i == n - 1 else point.when.astimezone(words.zone).strftime("%d-%m")
        parts.append(f'<text x="{x(i):.1f}" y="{height - 12}" text-anchor="middle" font-size="11">{label}</text>')
    parts.append("</svg>")
    return "".join(parts)


_CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1a1a1a;max-width:46rem;margin:1.5rem auto;padding:0 1rem}
h1{font-size:1.35rem;margin:0 0 .2rem}h2{font-size:1.05rem;margin:1.4rem 0 .4rem;border-bottom:1px solid #ddd;padding-bottom:.2rem}
.muted{color:#555;font-size:.9rem}.badge{display:inline-block;padding:.2rem .7rem;border-radius:1rem;color:#fff;font-weight:600}
table{border-collapse:collapse;width:100%}td,th{text-align:left;padding:.25rem .5rem;border-bottom:1px solid #eee;vertical-align:top}
th{font-weight:600;width:45%}ul{margin:.3rem 0;padding-left:1.3rem}.note{white-space:pre-wrap}
svg{max-width:100%;height:auto;font-family:system-ui,sans-serif}
"""


def render_report(data: ReportData, content: Content) -> str:
    """The summary as one self-contained HTML document (see the module docstring)."""
    words = _Words(content, data.language, data.zone)
    out: list[str] = [
        f'<!doctype html><html lang="{_esc(data.language)}"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width,initial-scale=1">',
        "<meta name=\"referrer\" content=\"no-referrer\">",
        f"<title>{words('summary.report.title', alias=data.alias)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>{words('summary.report.title', alias=data.alias)}</h1>",
        f'<p class="muted">{words("summary.report.intro", date=words.when(data.made_at))}</p>',
    ]
    if data.appointment is None:
        out.append(f"<p><b>{words('summary.report.no_appointment')}</b></p>")
    else:
        appointment = data.appointment
        out.append(
            "<p><b>"
            + words(
                "summary.report.appointment",
                kind=words(f"summary.report.kinds.{appointment.kind}"),
                when=words.when(appointment.starts_at),
                zone=appointment.zone,
            )
            + "</b></p>"
        )
    # Readiness
    colour = data.readiness.colour
    out.append(f"<h2>{words('summary.report.readiness')}</h2>")
    out.append(
        f'<p><span class="badge" style="background:{_COLOURS[colour]}">'
        f"{words(f'readiness.colours.{colour.value}')}</span></p>"
    )
    if data.readiness.reasons:
        out.append("<ul>" + "".join(f"<li>{words(f'readiness.reasons.{r}')}</li>" for r in data.readiness.reasons) + "</ul>")
    else:
        out.append(f"<p>{words('summary.report.no_reasons')}</p>")
    out.append(f'<p class="muted">{words("summary.report.rules_note")}</p>')
    # Answers
    out.append(f"<h2>{words('summary.report.answers')}</h2><table>")
    for question in QUESTIONS:
        cls = ' class="note"' if question == "note" else ""
        out.append(
            f"<tr><th>{words(f'summary.questions.{question}')}</th>"
            f"<td{cls}>{answer_words(words, question, data.answers)}</td></tr>"
        )
    out.append("</table>")
    # Trend
    out.append(f"<h2>{words('summary.report.trend')}</h2>")
    earlier = list(data.earlier)[-TREND_POINTS:]
    this = TrendPoint(data.completed_at, data.answers.get("distress"), data.answers.get("ready"), colour)
    if not earlier:
        out.append(f"<p>{words('summary.report.trend_none')}</p>")
    else:
        out.append(
            "<table><tr>"
            + "".join(
                f"<th>{words(f'summary.report.trend_header_{h}')}</th>"
                for h in ("date", "distress", "ready", "colour")
            )
            + "</tr>"
        )
        for point in [*earlier, this]:
            cells = [
                words.date(point.when),
                "–" if point.distress is None else str(point.distress),
                "–" if point.ready is None else str(point.ready),
                words(f"readiness.colours.{point.colour.value}") if point.colour else "–",
            ]
            out.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
        out.append("</table>")
    out.append(chart_svg([*earlier, this], words))
    # Practice
    practice = data.practice
    out.append(f"<h2>{words('summary.report.practice')}</h2>")
    out.append(f"<p>{words('summary.report.practice_days', days=practice.days, count=practice.count)}</p>")
    if practice.mean_drop is None:
        out.append(f"<p>{words('summary.report.practice_no_ratings')}</p>")
    else:
        out.append(
            f"<p>{words('summary.report.practice_drop', drop=_number(round(practice.mean_drop, 1)), rated=practice.rated)}</p>"
        )
    # Questions from /learn
    out.append(f"<h2>{words('summary.report.questions')}</h2>")
    if data.questions:
        out.append("<ul>" + "".join(f"<li>{line}</li>" for line in data.questions) + "</ul>")
    else:
        out.append(f"<p>{words('summary.report.questions_none')}</p>")
    # Safety notes
    out.append(f"<h2>{words('summary.report.flags')}</h2>")
    if data.flags:
        items = []
        for flag in data.flags:
            line = words(f"summary.report.flag_{flag.kind}", date=words.date(flag.created_at))
            if flag.note:
                line += f'<br><span class="note">{words("summary.report.flag_note", note=flag.note)}</span>'
            items.append(f"<li>{line}</li>")
        out.append("<ul>" + "".join(items) + "</ul>")
    else:
        out.append(f"<p>{words('summary.report.flags_none')}</p>")
    out.append("</body></html>")
    return "\n".join(out)


__all__ = [
    "AppointmentInfo",
    "FlagLine",
    "PracticeFigures",
    "ReportData",
    "TrendPoint",
    "answer_words",
    "chart_svg",
    "render_report",
]

# Every choice has words (checked by tests/test_summaries.py against content): kept here so
# the report and the check-in's domain module cannot drift apart unnoticed.
ANSWER_KEYS = tuple(
    f"summary.answers.{'yes_no' if q in _YES_NO else q}.{choice}"
    for q, choices in CHOICES.items()
    for choice in choices
) + tuple(f"summary.questions.{q}" for q in QUESTIONS)
