"""Readiness summaries: a completed check-in becomes a report only its client's therapist can
read, encrypted in the age format to the key they registered with /setkey.

* **The listener.** ``SummaryService.on_check_in_completed(session, check_in)`` is given to
  the check-in service (``listeners=[services.summaries.on_check_in_completed]``) and runs in
  the transaction that completes the check-in. It works out the readiness (bot.readiness),
  stores it encrypted with the check-in, and makes one ``Summary`` for ``check_in.therapist_id``
  (none when that is NULL, or the therapist is no longer linked to the client). A therapist
  with a key: the report (bot.summary_report) is encrypted to that key at once, and ONE
  outbox row is queued (kind ``summary``, key ``summary:<summary id>``, params
  ``{"summary": id}`` only; the content key is the caption's). A therapist without a key:
  the summary waits (``waiting_for_key``, nothing encrypted, nothing clinical stored), and
  they get a notice without clinical content asking for their key.
* **A key arrives.** ``release_waiting(session, therapist_id, recipient)`` runs in the
  transaction that sets a therapist's key (bot.services.therapist_keys): every summary
  waiting for them is made, encrypted and queued then. A new key re-encrypts nothing old.
* **Delivery.** The outbox dispatcher asks ``document(row)`` for a summary row: the
  ciphertext, a file name and a caption without clinical content (the alias, the date, the
  key's fingerprint). It is sent as a document (bot.delivery.dispatcher).
* **/summaries.** ``resend(actor)``: the therapist's summaries of the last 30 days queued
  again (new outbox keys), and how many still wait for a key.

The report is made when it is encrypted: from the check-in's answers and readiness, the
client's earlier completed check-ins, their practice in the 14 days before the check-in, the
questions they saved in /learn and the open safety flags (both marked as included then).
Plaintext of a report exists only in memory while it is encrypted; it is never stored,
logged or sent.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import load_only

from bot.checkins import Answers, InvalidAnswer
from bot.content import Content, ContentError
from bot.crypto import age
from bot.crypto.age import AgeRecipient
from bot.db.delivery_models import OutboxKind
from bot.db.models import (
    Appointment,
    CheckIn,
    CheckInState,
    ExerciseRun,
    Person,
    Role,
    SafetyFlag,
    Summary,
    SummaryState,
    TherapistQuestion,
)
from bot.db.models import ConsentChoice
from bot.db.repositories import ConsentRepository, LinkRepository
from bot.db.types import utcnow
from bot.delivery.outbox import OutboxService, PlainMessage
from bot.readiness import Colour, Readiness, Rule, default_rules, evaluate
from bot.services.invites import NotAllowed, current_person
from bot.services.notices import Notices
from bot.services.people import Identity
from bot.services.therapist_keys import TherapistKeyRepository, registered_recipient
from bot.summary_report import (
    TREND_POINTS,
    AppointmentInfo,
    FlagLine,
    PracticeFigures,
    ReportData,
    TrendPoint,
    render_report,
)


PRACTICE_DAYS = 14  # the practice the report shows: the 14 days before the check-in
RESEND_WINDOW = timedelta(days=30)  # /summaries re-sends the summaries of the last 30 days
CAPTION_KEY = "summary.caption"
_FILE_SAFE = re.compile(r"[^A-Za-z0-9_-]+")


@dataclass(frozen=True)
class SummaryDocument:
    """What the dispatcher sends for a summary row: nothing clinical outside ``data``."""

    filename: str
    data: bytes  # the age file
    caption: str

    def __repr__(self) -> str:
        return f"<SummaryDocument {len(self.data)} bytes>"


@dataclass(frozen=True)
class Resent:
    queued: int  # summaries queued again now
    waiting: int  # summaries still waiting for the therapist's key


def file_name(alias: str | None, day: str) -> str:
    """``K7-2027-03-28.html.age``: the alias (letters, digits, - and _ only), the date."""
    stem = _FILE_SAFE.sub("-", alias or "").strip("-")[:32] or "summary"
    return f"{stem}-{day}.html.age"


def _zone(name: str | None) -> ZoneInfo:
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


async def _consents(session: AsyncSession, client_id: int) -> bool:
    """Whether the client's latest consent decision is a grant: a client who withdrew has no
    summary made, released, re-sent or delivered."""
    record = await ConsentRepository(session).latest(client_id)
    return record is not None and record.choice is ConsentChoice.GRANTED


def _readiness_of(row: CheckIn, rules: Sequence[Rule]) -> Readiness | None:
    """A check-in's stored readiness, else worked out from its answers; None if unreadable."""
    try:
        if row.readiness:
            return Readiness.from_json(row.readiness)
        return evaluate(rules, Answers.from_json(row.answers))
    except (InvalidAnswer, ValueError, KeyError, TypeError):
        return None


class SummaryService:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        content: Content,
        outbox: OutboxService,
        notices: Notices,
        *,
        rules: Sequence[Rule] | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._sessions = sessions
        self._content = content
        self._outbox = outbox
        self._notices = notices
        self._rules = tuple(rules) if rules is not None else default_rules()
        self.clock = clock

    # -- the listener -------------------------------------------------------------------------

    async def on_check_in_completed(self, session: AsyncSession, check_in: CheckIn) -> None:
        """A check-in was completed (in ``session``'s transaction): its readiness, and a
        summary for its therapist (see the module docstring)."""
        answers = Answers.from_json(check_in.answers)
        check_in.readiness = evaluate(self._rules, answers).to_json()
        therapist_id = check_in.therapist_id
        if therapist_id is None:
            return
        if await LinkRepository(session).active(therapist_id, check_in.client_id) is None:
            return  # no longer this client's therapist: nothing for them
        if not await _consents(session, check_in.client_id):
            return
        therapist = await session.get(Person, therapist_id)
        if therapist is None or Role(therapist.role) is not Role.THERAPIST:
            return
        if await session.scalar(
            select(Summary.id).where(Summary.check_in_id == check_in.id, Summary.therapist_id == therapist_id)
        ):
            return  # made already (a retried completion)
        summary = Summary(
            check_in_id=check_in.id,
            client_id=check_in.client_id,
            therapist_id=therapist_id,
            state=SummaryState.WAITING_FOR_KEY,
            created_at=self.clock(),
        )
        session.add(summary)
        await session.flush()
        key = await TherapistKeyRepository(session).current(therapist_id)
        if key is not None:
            await self._seal(session, summary, check_in, therapist, registered_recipient(key))
            return
        client = await session.get(Person, check_in.client_id)
        alias = (client.alias if client else None) or self._content.text("summary.unnamed", therapist.language)
        await self._notices.queue(
            session, therapist.id, therapist.language, "summary.waiting_notice",
            idempotency_key=f"notice:summary-waiting:{summary.id}", alias=alias,
        )

    # -- a key arrives ------------------------------------------------------------------------

    async def release_waiting(self, session: AsyncSession, therapist_id: int, recipient: AgeRecipient) -> int:
        """Encrypt and queue every summary waiting for this therapist's key (in the caller's
        transaction, the one that sets the key); how many were queued. Summaries of clients
        no longer linked to the therapist are dropped, never sent."""
        waiting = (
            await session.scalars(
                select(Summary)
                .where(Summary.therapist_id == therapist_id, Summary.state == SummaryState.WAITING_FOR_KEY)
                .order_by(Summary.created_at, Summary.id)
            )
        ).all()
        if not waiting:
            return 0
        therapist = await session.get(Person, therapist_id)
        links = LinkRepository(session)
        released = 0
        for summary in waiting:
            check_in = await session.get(CheckIn, summary.check_in_id)
            if (
                therapist is None
                or check_in is None
                or await links.active(therapist_id, summary.client_id) is None
                or not await _consents(session, summary.client_id)
            ):
                await session.execute(delete(Summary).where(Summary.id == summary.id))
                continue
            await self._seal(session, summary, check_in, therapist, recipient)
            released += 1
        return released

    # -- making, encrypting, queueing ---------------------------------------------------------

    async def _seal(
        self, session: AsyncSession, summary: Summary, check_in: CheckIn, therapist: Person, recipient: AgeRecipient
    ) -> None:
        now = self.clock()
        data, question_ids, flag_ids = await self._gather(session, check_in, therapist, now)
        report = render_report(data, self._content)
        summary.ciphertext = age.encrypt(report.encode("utf-8"), recipient)
        summary.recipient_fingerprint = recipient.fingerprint
        summary.state = SummaryState.QUEUED
        summary.encrypted_at = now
        if question_ids:
            await session.execute(
                update(TherapistQuestion)
                .where(TherapistQuestion.id.in_(question_ids), TherapistQuestion.included_in_summary_at.is_(None))
                .values(included_in_summary_at=now)
                .execution_options(synchronize_session=False)
            )
        if flag_ids:
            await session.execute(
                update(SafetyFlag)
                .where(SafetyFlag.id.in_(flag_ids), SafetyFlag.included_in_summary_at.is_(None))
                .values(included_in_summary_at=now)
                .execution_options(synchronize_session=False)
            )
        await session.flush()
        await self._queue(session, summary, f"summary:{summary.id}", now)

    async def _queue(self, session: AsyncSession, summary: Summary, key: str, now: datetime) -> bool:
        ids = await self._outbox.insert_plain(
            session,
            [
                PlainMessage(
                    recipient_id=summary.therapist_id,
                    kind=OutboxKind.SUMMARY,
                    idempotency_key=key,
                    due_at=now,
                    content_key=CAPTION_KEY,
                    params={"summary": summary.id},
                    subject_id=summary.client_id,
                )
            ],
        )
        return bool(ids)

    async def _gather(
        self, session: AsyncSession, check_in: CheckIn, therapist: Person, now: datetime
    ) -> tuple[ReportData, list[int], list[int]]:
        """What the report shows, read in ``session``; and the ids of the /learn questions and
        safety flags it includes."""
        client = await session.get(Person, check_in.client_id)
        completed = check_in.completed_at or now
        answers = Answers.from_json(check_in.answers)
        readiness = _readiness_of(check_in, self._rules) or evaluate(self._rules, answers)
        appointment = None
        if check_in.appointment_id is not None:
            row = await session.get(Appointment, check_in.appointment_id)
            if row is not None and row.cancelled_at is None:
                appointment = AppointmentInfo(str(row.kind), row.starts_at, therapist.timezone)
        earlier_rows = (
            await session.scalars(
                select(CheckIn)
                .where(
                    CheckIn.client_id == check_in.client_id,
                    CheckIn.state == CheckInState.COMPLETED,
                    CheckIn.id != check_in.id,
                    CheckIn.completed_at < completed,
                )
                .order_by(CheckIn.completed_at.desc())
                .limit(TREND_POINTS)
            )
        ).all()
        earlier = []
        for past in reversed(earlier_rows):
            assert past.completed_at is not None  # completed before this one
            try:
                old = Answers.from_json(past.answers)
            except (InvalidAnswer, ValueError):
                continue
            found = _readiness_of(past, self._rules)
            earlier.append(TrendPoint(past.completed_at, old.get("distress"), old.get("ready"), found.colour if found else None))
        practice = await self._practice(session, check_in.client_id, client.timezone if client else None, completed)
        language = therapist.language
        questions = (
            await session.scalars(
                select(TherapistQuestion)
                .where(TherapistQuestion.client_id == check_in.client_id, TherapistQuestion.included_in_summary_at.is_(None))
                .order_by(TherapistQuestion.created_at)
            )
        ).all()
        flags = (
            await session.scalars(
                select(SafetyFlag)
                .where(SafetyFlag.client_id == check_in.client_id, SafetyFlag.included_in_summary_at.is_(None))
                .order_by(SafetyFlag.created_at)
            )
        ).all()
        data = ReportData(
            alias=(client.alias if client else None) or self._content.text("summary.unnamed", language),
            language=language,
            zone=therapist.timezone,
            made_at=now,
            completed_at=completed,
            appointment=appointment,
            answers=answers,
            readiness=readiness,
            earlier=earlier,
            practice=practice,
            questions=[self._question_line(q, language) for q in questions],
            flags=[FlagLine(f.kind, f.created_at, f.note) for f in flags],
        )
        return data, [q.id for q in questions], [f.id for f in flags]

    def _question_line(self, question: TherapistQuestion, language: str) -> str:
        try:
            title = self._content.module(question.module_id, language).title
        except ContentError:  # a module removed since
            title = question.module_id
        return self._content.text("learn.summary_question", language, title=title)

    @staticmethod
    async def _practice(session: AsyncSession, client_id: int, zone: str | None, until: datetime) -> PracticeFigures:
        """The client's exercises in the PRACTICE_DAYS before ``until``: days with practice
        (the client's local days), how many, and the mean drop in distress over those rated
        before and after."""
        rows = (
            await session.scalars(
                select(ExerciseRun)
                .options(load_only(ExerciseRun.id, ExerciseRun.client_id, ExerciseRun.started_at,
                                   ExerciseRun.distress_before, ExerciseRun.distress_after))
                .where(
                    ExerciseRun.client_id == client_id,
                    ExerciseRun.started_at >= until - timedelta(days=PRACTICE_DAYS),
                    ExerciseRun.started_at <= until,
                )
            )
        ).all()
        local = _zone(zone)
        drops = []
        for row in rows:
            before, after = _rating(row.distress_before), _rating(row.distress_after)
            if before is not None and after is not None:
                drops.append(before - after)
        return PracticeFigures(
            days=len({row.started_at.astimezone(local).date() for row in rows}),
            count=len(rows),
            rated=len(drops),
            mean_drop=sum(drops) / len(drops) if drops else None,
        )

    # -- delivery -----------------------------------------------------------------------------

    async def document(self, row) -> SummaryDocument | None:  # row: bot.delivery.store.Claimed
        """The file and caption of a claimed summary row; None when there is nothing to send
        (the summary is gone, not for this recipient, or not encrypted)."""
        summary_id = (row.params or {}).get("summary")
        if not isinstance(summary_id, int):
            return None
        async with self._sessions() as session:
            summary = await session.get(Summary, summary_id)
            if (
                summary is None
                or summary.therapist_id != row.recipient_id
                or summary.state != SummaryState.QUEUED
                or not summary.ciphertext
                or not await _consents(session, summary.client_id)
            ):
                return None
            completed = await session.scalar(select(CheckIn.completed_at).where(CheckIn.id == summary.check_in_id))
            client = await session.get(Person, summary.client_id)
            alias = client.alias if client else None
            data = bytes(summary.ciphertext)
            fingerprint = summary.recipient_fingerprint or ""
        moment = (completed or summary.created_at).astimezone(_zone(row.timezone))
        day = moment.strftime("%Y-%m-%d")
        caption = self._content.text(
            row.content_key or CAPTION_KEY,
            row.language,
            alias=alias or self._content.text("summary.unnamed", row.language),
            date=moment.strftime(self._content.text("summary.date_format", row.language)),
            fingerprint=fingerprint,
        )
        return SummaryDocument(file_name(alias, day), data, caption)

    # -- /summaries ---------------------------------------------------------------------------

    async def resend(self, actor: Identity) -> Resent:
        """Queue again the asker's summaries of the last RESEND_WINDOW (clients still linked
        to them), under new outbox keys; NotAllowed for anyone but an active therapist."""
        now = self.clock()
        async with self._sessions.begin() as session:
            role, person = await current_person(session, actor)
            if role is not Role.THERAPIST or person is None:
                raise NotAllowed("role")
            linked = set(await LinkRepository(session).client_ids_of(person.id))
            rows = (
                await session.scalars(
                    select(Summary)
                    .options(load_only(Summary.id, Summary.client_id, Summary.therapist_id, Summary.state,
                                       Summary.created_at))
                    .where(Summary.therapist_id == person.id, Summary.created_at >= now - RESEND_WINDOW)
                    .order_by(Summary.created_at, Summary.id)
                )
            ).all()
            queued = waiting = 0
            stamp = now.strftime("%Y%m%d%H%M")
            consenting = {c for c in linked if await _consents(session, c)}
            for summary in rows:
                if summary.client_id not in consenting:
                    continue
                if summary.state == SummaryState.WAITING_FOR_KEY:
                    waiting += 1
                else:  # asked twice within a minute: the first one's rows stand (same keys)
                    await self._queue(session, summary, f"summary:{summary.id}:again:{stamp}", now)
                    queued += 1
            return Resent(queued, waiting)

    # -- for /clients -------------------------------------------------------------------------

    @staticmethod
    async def latest_readiness(session: AsyncSession, client_ids: Sequence[int]) -> dict[int, tuple[datetime, Colour | None]]:
        """Each client's latest completed check-in: when, and its readiness colour."""
        if not client_ids:
            return {}
        latest = (
            select(CheckIn.client_id, func.max(CheckIn.completed_at).label("at"))
            .where(CheckIn.client_id.in_(list(client_ids)), CheckIn.state == CheckInState.COMPLETED)
            .group_by(CheckIn.client_id)
            .subquery()
        )
        rows = (
            await session.scalars(
                select(CheckIn)
                .options(load_only(CheckIn.id, CheckIn.client_id, CheckIn.completed_at, CheckIn.readiness))
                .join(latest, (latest.c.client_id == CheckIn.client_id) & (latest.c.at == CheckIn.completed_at))
                .where(CheckIn.state == CheckInState.COMPLETED)
            )
        ).all()
        found: dict[int, tuple[datetime, Colour | None]] = {}
        for row in rows:
            colour = None
            try:
                colour = Readiness.from_json(row.readiness).colour if row.readiness else None
            except (ValueError, KeyError, TypeError):
                colour = None
            assert row.completed_at is not None  # a completed check-in
            found[row.client_id] = (row.completed_at, colour)
        return found


def _rating(value: str | None) -> int | None:
    if value is None or not value.isdigit():
        return None
    number = int(value)
    return number if 0 <= number <= 10 else None


__all__ = ["RESEND_WINDOW", "Resent", "SummaryDocument", "SummaryService", "file_name"]
