"""Staff broadcasts (issue 15): one message from staff to many clients, through the outbox.

The conversation is handlers/broadcast.py (``/broadcast``, ``/broadcasts``).

* **Who.** Staff and admins only (``NotAllowed("role")`` otherwise), checked against the
  database at the moment of use. Every broadcast is audited (``broadcast.created`` /
  ``.cancelled`` / ``.finished``: who, the audience, counts; never the text).
* **The text** is what the staff member wrote, or a ready-made template from content/
  (``broadcast.templates.<name>``: a label for staff and a text per language, checked by
  ``imrs-bot content check`` to carry none of the clinical words); a template is stored by
  name and each recipient reads it in their own language. A typed text is Telegram HTML (checked with the emulator's
  parser, as Telegram parses it), at most 4096 characters once wrapped in
  ``broadcast.message`` (a line saying it is from the practice), in every language; it is
  stored encrypted under the sender's key and read by the dispatcher at send time
  (:meth:`BroadcastService.compose`), so the outbox rows carry no text: only
  ``{"broadcast": id}`` and the ``broadcast_id`` column. ``warnings`` flags words that would reveal a diagnosis or
  treatment to someone reading over the client's shoulder (``content/broadcast_words.yaml``).
* **Audiences** (``Audience``): every client; the clients of one therapist (active links);
  clients with a preparation or ImRS appointment in the next N days; each optionally of one
  language. Resolved when sending starts, not when the broadcast is made.
* **Opting out.** Clients who turned practice announcements off (``/settings``) are not
  queued; they are counted (``skipped_opted_out``), as clients without consent are. One who
  opts out while a broadcast is going out has their rows not sent yet settled as
  ``failed``/``opted_out`` (:func:`skip_pending_for`), counted the same way.
* **Exactly once.** Each recipient gets one outbox row keyed ``broadcast:{id}:{person id}``,
  inserted in batches with ``ON CONFLICT DO NOTHING``: queueing is resumable (a restart or a
  second instance queues the rest, never a second row), and the dispatcher's claims give
  each row to one sender. Due times are spread at twice the configured rate: reminders due
  meanwhile wait behind at most half of what has gone out, and the dispatcher always has
  rows ready to catch up after a flood wait (at exactly the rate, bench/outbox_rate.py --broadcast
  reached about half of it).
* **Driving it.** ``plan(now)`` runs on every outbox dispatcher tick (any instance): it
  starts broadcasts whose time has come, queues their rows, and closes those with nothing
  left to send (state ``done``, final figures written, audited).
* **Cancel** withdraws the rows not sent yet (``cancel_pending(broadcast_id=...)``); rows in
  flight at that moment are still delivered.
* **Figures** (``progress``) come from the outbox rows' states: sent; blocked (403, or
  inactive when their turn came, plus clients already inactive when it was queued);
  skipped without consent (checked at send time); opted out; failed (refused or given up); remaining;
  withdrawn by a cancel; and the time left at the configured rate.
"""

from __future__ import annotations

import builtins
import math
import re
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import and_, case, delete, exists, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.content import CONTENT_DIR, Content, ContentError, trusted_html
from bot.db.delivery_models import OutboxKind, OutboxMessage, OutboxState
from bot.db.models import (
    Appointment,
    AppointmentKind,
    Broadcast,
    BroadcastState,
    Person,
    Role,
    TherapistClientLink,
)
from bot.db.repositories import AuditRepository
from bot.db.types import utcnow
from bot.delivery.outbox import OutboxService, PlainMessage
from bot.sandbox.emulator.markup import MarkupError, parse_html, utf16_len
from bot.services.appointments import AppointmentError, parse_local
from bot.services.invites import NotAllowed, current_person
from bot.services.people import Identity

MESSAGE_KEY = "broadcast.message"  # the text as recipients see it: {text} under a line from the practice
TEMPLATES_KEY = "broadcast.templates"  # ready-made texts: <name>: {label, text}
OPTED_OUT = "opted_out"  # last_error of a row whose recipient opted out after it was queued
MAX_TEXT = 4096
HORIZON = timedelta(days=366)
MAX_DAYS = 60  # "appointment in the next N days"
BATCH = 500  # rows per transaction while queueing
EXPIRES_AFTER = timedelta(days=2)  # a broadcast row not sent within this long is dropped
DRAFT_KEPT = timedelta(days=1)  # a draft nobody sent or discarded is deleted after this
WORDS_FILE = CONTENT_DIR / "broadcast_words.yaml"
PREPARING = (AppointmentKind.PREPARATION, AppointmentKind.IMRS)
OPEN_STATES = (BroadcastState.SCHEDULED, BroadcastState.SENDING)
BLOCKED_CODES = frozenset({"forbidden", "recipient_inactive"})
PAGE = 10  # broadcasts per page of /broadcasts


def key_prefix(broadcast_id: int) -> str:
    return f"broadcast:{broadcast_id}:"


class BroadcastError(ValueError):
    """Not possible as asked. ``reason``: ``empty_text``, ``too_long``, ``markup``,
    ``empty_audience``, ``bad_days``, ``unknown_therapist``, ``unknown_template``, the time's reasons
    (``unparseable``, ``nonexistent``, ``ambiguous``, ``past``, ``too_far``), ``not_found``,
    ``finished`` (cannot be cancelled any more)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Audience:
    """Who receives a broadcast: ``kind`` ``all``, ``therapist`` (``therapist_id``) or
    ``appointments`` (a preparation or ImRS appointment within ``days``), optionally only
    clients of ``language``."""

    kind: str
    therapist_id: int | None = None
    days: int | None = None
    language: str | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"kind": self.kind}
        if self.therapist_id is not None:
            data["therapist_id"] = self.therapist_id
        if self.days is not None:
            data["days"] = self.days
        return data

    @classmethod
    def of(cls, data: dict[str, Any], language: str | None) -> Audience:
        return cls(data["kind"], data.get("therapist_id"), data.get("days"), language)


@dataclass(frozen=True)
class Reach:
    """How many a broadcast would reach now, by language, how many of the audience cannot
    receive it (inactive, or no consent) and how many opted out of practice announcements."""

    by_language: dict[str, int]
    unreachable: int
    opted_out: int = 0

    @property
    def total(self) -> int:
        return sum(self.by_language.values())


@dataclass(frozen=True)
class Progress:
    state: BroadcastState
    audience: int  # clients matching when queued (0 before)
    queued: int
    sent: int
    blocked: int
    no_consent: int
    failed: int
    remaining: int
    withdrawn: int
    eta_seconds: int
    opted_out: int = 0  # opted out of practice announcements (/settings)


@dataclass(frozen=True)
class BroadcastView:
    id: int
    state: BroadcastState
    audience: Audience
    scheduled_for: datetime
    created_at: datetime
    finished_at: datetime | None
    progress_chat_id: int | None = None
    progress_message_id: int | None = None
    template: str | None = None


@dataclass(frozen=True)
class Page:
    """One page of /broadcasts: scheduled and running ones first (soonest first), then the
    finished ones (latest first); ``number`` from 0, of ``count`` pages."""

    views: list[BroadcastView]
    number: int
    count: int


def _view(row: Broadcast) -> BroadcastView:
    return BroadcastView(
        row.id, BroadcastState(row.state), Audience.of(row.audience, row.language), row.scheduled_for,
        row.created_at, row.finished_at, row.progress_chat_id, row.progress_message_id, row.template,
    )


async def skip_pending_for(session: AsyncSession, person_id: int, now: datetime) -> int:
    """A client opted out of practice announcements: their broadcast rows not sent yet are
    settled (``failed``, ``opted_out``), in the caller's transaction; how many."""
    result = await session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.recipient_id == person_id, OutboxMessage.broadcast_id.is_not(None),
               OutboxMessage.state == OutboxState.PENDING)
        .values(state=OutboxState.FAILED, last_error=OPTED_OUT, finished_at=now, lease_until=None)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def load_words(path: Path = WORDS_FILE) -> dict[str, list[str]]:
    """The words a broadcast should not carry, per language (content/broadcast_words.yaml)."""
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return {str(lang): [str(w) for w in words or []] for lang, words in (data.get("words") or {}).items()}


def clinical_words(text: str, words: dict[str, list[str]]) -> list[str]:
    """The words of ``words`` (any language) found in ``text``, in order of the list, once."""
    plain = re.sub(r"<[^>]*>", " ", text).lower()
    found: list[str] = []
    for listed in words.values():
        for word in listed:
            if word.lower() not in found and re.search(rf"(?<!\w){re.escape(word.lower())}", plain):
                found.append(word.lower())
    return found


class BroadcastService:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        outbox: OutboxService,
        content: Content,
        may_receive: Callable[[set[int]], Any],
        rate_per_second: float = 25.0,
        clock: Callable[[], datetime] = utcnow,
        words: dict[str, list[str]] | None = None,
        batch: int = BATCH,
    ) -> None:
        self._sessions = sessions
        self._outbox = outbox
        self._content = content
        self._may_receive = may_receive
        self.rate_per_second = rate_per_second
        self.clock = clock
        self.words = load_words() if words is None else words
        self.batch = batch
        # broadcast id -> (text, template), read at send time
        self._texts: OrderedDict[int, tuple[str, str | None]] = OrderedDict()

    # -- checks ------------------------------------------------------------------------------

    async def _staff(self, session: AsyncSession, actor: Identity) -> tuple[Role, Person]:
        role, person = await current_person(session, actor)
        if role not in (Role.STAFF, Role.ADMIN) or person is None:
            raise NotAllowed("role")
        return role, person

    def message(self, text: str, language: str, template: str | None = None) -> str:
        """The text (or the template's text in ``language``) as a recipient of ``language``
        reads it."""
        if template is not None:
            text = self._content.text(f"{TEMPLATES_KEY}.{template}.text", language)
        return self._content.text(MESSAGE_KEY, language, text=trusted_html(text))

    def templates(self, language: str) -> list[tuple[str, str]]:
        """The ready-made texts: (name, label in ``language``), in the order of content/."""
        names = self._content.raw(TEMPLATES_KEY, self._content.default_language)
        return [(name, self._content.text(f"{TEMPLATES_KEY}.{name}.label", language)) for name in names]

    def check_template(self, name: str) -> str:
        if not any(name == known for known, _ in self.templates(self._content.default_language)):
            raise BroadcastError("unknown_template")
        for language in self._content.languages:
            try:
                self.check_text(self._content.text(f"{TEMPLATES_KEY}.{name}.text", language))
            except (BroadcastError, ContentError):
                raise BroadcastError("unknown_template") from None
        return name

    def check_text(self, text: str) -> str:
        """The text, trimmed, if it can be sent (else BroadcastError)."""
        text = (text or "").strip()
        if not text:
            raise BroadcastError("empty_text")
        if len(text) > MAX_TEXT:
            raise BroadcastError("too_long")
        try:
            parse_html(text)
        except MarkupError:
            raise BroadcastError("markup") from None
        for language in self._content.languages:
            plain, _ = parse_html(self.message(text, language))
            if utf16_len(plain) > MAX_TEXT:
                raise BroadcastError("too_long")
        return text

    def warnings(self, text: str) -> list[str]:
        """Words in ``text`` that could reveal a diagnosis or treatment."""
        return clinical_words(text, self.words)

    def check_time(self, typed: str, zone: str) -> datetime:
        try:
            return parse_local(typed, zone, now=self.clock(), horizon=HORIZON)
        except AppointmentError as exc:
            raise BroadcastError(exc.reason) from None

    # -- audiences ---------------------------------------------------------------------------

    def _members(self, audience: Audience, now: datetime) -> Any:
        """SELECT id, active, language, announcements of the clients in ``audience``."""
        query = select(Person.id, Person.active, Person.language, Person.announcements).where(Person.role == Role.CLIENT)
        if audience.language:
            query = query.where(Person.language == audience.language)
        if audience.kind == "therapist":
            query = query.where(
                exists().where(
                    TherapistClientLink.client_id == Person.id,
                    TherapistClientLink.therapist_id == audience.therapist_id,
                    TherapistClientLink.ended_at.is_(None),
                )
            )
        elif audience.kind == "appointments":
            query = query.where(
                exists().where(
                    Appointment.client_id == Person.id,
                    Appointment.cancelled_at.is_(None),
                    Appointment.kind.in_([k.value for k in PREPARING]),
                    Appointment.starts_at > now,
                    Appointment.starts_at <= now + timedelta(days=audience.days or 0),
                )
            )
        elif audience.kind != "all":
            raise BroadcastError("empty_audience")
        return query.order_by(Person.id)

    async def _check_audience(self, session: AsyncSession, audience: Audience) -> None:
        if audience.kind == "appointments" and not (audience.days and 1 <= audience.days <= MAX_DAYS):
            raise BroadcastError("bad_days")
        if audience.kind == "therapist":
            therapist = await session.get(Person, audience.therapist_id) if audience.therapist_id else None
            if therapist is None or Role(therapist.role) is not Role.THERAPIST:
                raise BroadcastError("unknown_therapist")

    async def reach(self, actor: Identity, audience: Audience) -> Reach:
        """Who the broadcast would reach if it were sent now."""
        async with self._sessions() as session:
            await self._staff(session, actor)
            await self._check_audience(session, audience)
            rows = (await session.execute(self._members(audience, self.clock()))).all()
        opted_out = sum(1 for row in rows if not row.announcements)
        active = {row.id: row.language for row in rows if row.active and row.announcements}
        allowed = await self._may_receive(set(active)) if active else set()
        by_language: dict[str, int] = {}
        for person_id in allowed:
            language = self._content.resolve_language(active[person_id])
            by_language[language] = by_language.get(language, 0) + 1
        return Reach(by_language, len(rows) - len(allowed) - opted_out, opted_out)

    async def therapists(self, actor: Identity) -> list[tuple[int, str | None]]:
        """The active therapists (id, display name), to choose an audience from."""
        async with self._sessions() as session:
            await self._staff(session, actor)
            rows = (
                await session.scalars(
                    select(Person).where(Person.role == Role.THERAPIST, Person.active.is_(True)).order_by(Person.created_at)
                )
            ).all()
            return [(row.id, row.display_name) for row in rows]

    # -- making, cancelling --------------------------------------------------------------------

    async def draft(self, actor: Identity, text: str, *, template: str | None = None) -> int:
        """Keep the text of a broadcast being prepared (encrypted under the sender's key, so
        that no conversation state holds it), or the name of the template chosen; its id.
        Refused if it cannot be sent."""
        if template is not None:
            template, text = self.check_template(template), ""
        else:
            text = self.check_text(text)
        now = self.clock()
        async with self._sessions.begin() as session:
            _, person = await self._staff(session, actor)
            row = Broadcast(
                created_by_id=person.id, text=text, template=template, audience={"kind": "all"}, language=None,
                state=BroadcastState.DRAFT, scheduled_for=now, created_at=now,
            )
            session.add(row)
            await session.flush()
            return row.id

    async def _own_draft(self, session: AsyncSession, actor: Identity, broadcast_id: int) -> tuple[Role, Broadcast]:
        role, person = await self._staff(session, actor)
        row = await session.get(Broadcast, broadcast_id)
        if row is None or BroadcastState(row.state) is not BroadcastState.DRAFT:
            raise BroadcastError("not_found")
        if row.created_by_id != person.id:
            raise NotAllowed("ownership")
        return role, row

    async def draft_text(self, actor: Identity, broadcast_id: int) -> tuple[str, str | None]:
        """A draft's typed text and template name (one of them is used)."""
        async with self._sessions() as session:
            _, row = await self._own_draft(session, actor, broadcast_id)
            return row.text, row.template

    async def send(
        self, actor: Identity, broadcast_id: int, audience: Audience, at: datetime | None = None
    ) -> tuple[BroadcastView, Reach]:
        """Send a draft to ``audience`` from ``at`` (UTC; None: now). Refused with
        ``empty_audience`` when nobody would receive it now, ``past`` for a time gone by."""
        now = self.clock()
        if at is not None and at <= now:
            raise BroadcastError("past")
        reach = await self.reach(actor, audience)
        if reach.total == 0:
            raise BroadcastError("empty_audience")
        async with self._sessions.begin() as session:
            role, row = await self._own_draft(session, actor, broadcast_id)
            row.audience, row.language = audience.to_json(), audience.language
            row.state, row.scheduled_for = BroadcastState.SCHEDULED, at or now
            await AuditRepository(session).record(
                actor.telegram_id, role, "broadcast.created",
                detail={"broadcast_id": row.id, "audience": audience.to_json(), "language": audience.language,
                        "count": reach.total, "scheduled": at is not None},
            )
            return _view(row), reach

    async def discard(self, actor: Identity, broadcast_id: int) -> None:
        """Delete a draft (nothing was sent)."""
        async with self._sessions.begin() as session:
            _, row = await self._own_draft(session, actor, broadcast_id)
            await session.delete(row)

    async def attach_progress(self, broadcast_id: int, chat_id: int, message_id: int) -> None:
        """The sender's message that shows the progress (edited while it is sent)."""
        async with self._sessions.begin() as session:
            await session.execute(
                update(Broadcast).where(Broadcast.id == broadcast_id)
                .values(progress_chat_id=chat_id, progress_message_id=message_id)
            )

    async def cancel(self, actor: Identity, broadcast_id: int) -> BroadcastView:
        """Stop a scheduled or running broadcast: what is not sent yet is withdrawn."""
        now = self.clock()
        async with self._sessions.begin() as session:
            role, _ = await self._staff(session, actor)
            row = await session.get(Broadcast, broadcast_id, with_for_update=True)
            if row is None:
                raise BroadcastError("not_found")
            if BroadcastState(row.state) not in OPEN_STATES:
                raise BroadcastError("finished")
            row.state, row.finished_at = BroadcastState.CANCELLED, now
            withdrawn = await self._outbox.cancel_pending(broadcast_id=row.id, session=session)
            await AuditRepository(session).record(
                actor.telegram_id, role, "broadcast.cancelled",
                detail={"broadcast_id": row.id, "withdrawn": withdrawn},
            )
            view = _view(row)
        await self._close(broadcast_id, BroadcastState.CANCELLED)
        return view

    async def page(self, actor: Identity, number: int = 0, size: int = PAGE) -> Page:
        """Page ``number`` (from 0; past the last: the last) of the scheduled and running
        broadcasts, soonest first, then the finished ones, latest first."""
        shown = [s.value for s in (*OPEN_STATES, BroadcastState.DONE, BroadcastState.CANCELLED)]
        is_open = Broadcast.state.in_([s.value for s in OPEN_STATES])
        async with self._sessions() as session:
            await self._staff(session, actor)
            total = int(await session.scalar(
                select(func.count()).select_from(Broadcast).where(Broadcast.state.in_(shown))
            ) or 0)
            count = max(1, math.ceil(total / size))
            number = min(max(0, number), count - 1)
            rows = (
                await session.scalars(
                    select(Broadcast).where(Broadcast.state.in_(shown))
                    .order_by(
                        case((is_open, 0), else_=1),
                        case((is_open, Broadcast.scheduled_for), else_=None),
                        Broadcast.finished_at.desc(),
                        Broadcast.id.desc(),
                    )
                    .offset(number * size).limit(size)
                )
            ).all()
            return Page([_view(row) for row in rows], number, count)

    async def list(self, actor: Identity, limit: int = PAGE) -> list[BroadcastView]:
        """The first page: scheduled and running broadcasts, then the latest finished ones."""
        return (await self.page(actor, 0, limit)).views

    async def get(self, actor: Identity, broadcast_id: int) -> BroadcastView:
        async with self._sessions() as session:
            await self._staff(session, actor)
            row = await session.get(Broadcast, broadcast_id)
            if row is None:
                raise BroadcastError("not_found")
            return _view(row)

    # -- sending -------------------------------------------------------------------------------

    async def plan(self, now: datetime | None = None) -> None:
        """Start the broadcasts whose time has come, queue their rows, close the finished
        ones, delete abandoned drafts. Safe to run on every instance at once."""
        now = now or self.clock()
        stale = and_(Broadcast.state == BroadcastState.DRAFT, Broadcast.created_at < now - DRAFT_KEPT)
        due = and_(Broadcast.state == BroadcastState.SCHEDULED, Broadcast.scheduled_for <= now)
        # Every tick of every instance comes here: one read, and a write transaction only when
        # there is something to write (SQLite has one writer at a time).
        async with self._sessions() as session:
            work = (await session.execute(
                select(stale, due).where(stale | due | (Broadcast.state == BroadcastState.SENDING))
            )).all()
        if not work:
            return
        if any(is_stale or is_due for is_stale, is_due in work):
            async with self._sessions.begin() as session:
                # Drafts left behind (a flow ended without sending or discarding): their text goes.
                await session.execute(delete(Broadcast).where(stale))
                await session.execute(update(Broadcast).where(due).values(state=BroadcastState.SENDING, started_at=now))
        async with self._sessions() as session:
            sending = (
                await session.execute(
                    select(Broadcast.id, Broadcast.queued_at).where(Broadcast.state == BroadcastState.SENDING)
                )
            ).all()
        for broadcast_id, queued_at in sending:
            if queued_at is None:
                await self.fan_out(broadcast_id)
            else:
                await self._close(broadcast_id, BroadcastState.DONE)

    async def fan_out(self, broadcast_id: int) -> int:
        """Queue one outbox row per recipient, ``batch`` per transaction; resumable (rows
        already queued are skipped by their key). The number of rows the broadcast has."""
        async with self._sessions() as session:
            row = await session.get(Broadcast, broadcast_id)
            if row is None or BroadcastState(row.state) is not BroadcastState.SENDING:
                return 0
            audience = Audience.of(row.audience, row.language)
            start = row.started_at or self.clock()
            everyone = (await session.execute(self._members(audience, start))).all()
        members = [member for member in everyone if member.announcements]  # the others opted out
        spacing = 1.0 / max(2 * self.rate_per_second, 0.001)  # see the module's docstring
        for first in range(0, len(members), self.batch):
            messages = [
                PlainMessage(
                    member.id, OutboxKind.BROADCAST, f"{key_prefix(broadcast_id)}{member.id}",
                    start + timedelta(seconds=(first + offset) * spacing), MESSAGE_KEY,
                    {"broadcast": broadcast_id}, expires_at=start + EXPIRES_AFTER, broadcast_id=broadcast_id,
                )
                for offset, member in enumerate(members[first : first + self.batch])
            ]
            async with self._sessions.begin() as session:
                state = await session.scalar(
                    select(Broadcast.state).where(Broadcast.id == broadcast_id).with_for_update()
                )
                if state != BroadcastState.SENDING:
                    return 0  # cancelled meanwhile: queue nothing more
                await self._outbox.insert_plain(session, messages)
        async with self._sessions.begin() as session:
            queued = await self._row_count(session, broadcast_id)
            await session.execute(
                update(Broadcast)
                .where(Broadcast.id == broadcast_id, Broadcast.state == BroadcastState.SENDING,
                       Broadcast.queued_at.is_(None))
                .values(queued_at=self.clock(), audience_size=len(everyone), queued=queued,
                        skipped_opted_out=len(everyone) - len(members))
            )
        return queued

    @staticmethod
    async def _row_count(session: AsyncSession, broadcast_id: int) -> int:
        return int(
            await session.scalar(
                select(func.count()).select_from(OutboxMessage).where(_of(broadcast_id))
            ) or 0
        )

    async def _close(self, broadcast_id: int, state: BroadcastState) -> None:
        """Write the final figures once nothing is left to send (``done``), or at once for a
        cancelled broadcast (its rows in flight are counted as they were)."""
        figures = await self.progress(broadcast_id)
        if state is BroadcastState.DONE and figures.remaining:
            return
        async with self._sessions.begin() as session:
            values: dict[str, Any] = {
                "sent": figures.sent, "failed": figures.failed, "blocked": figures.blocked,
                "skipped_no_consent": figures.no_consent, "withdrawn": figures.withdrawn,
                "skipped_opted_out": figures.opted_out,  # from now on the total (see progress)
            }
            query = update(Broadcast).where(Broadcast.id == broadcast_id)
            if state is BroadcastState.DONE:
                query = query.where(Broadcast.state == BroadcastState.SENDING)
                values |= {"state": BroadcastState.DONE, "finished_at": self.clock()}
            result = await session.execute(query.values(**values))
            if state is BroadcastState.DONE and result.rowcount:  # type: ignore[attr-defined]
                await AuditRepository(session).record(
                    None, None, "broadcast.finished",
                    detail={"broadcast_id": broadcast_id, "sent": figures.sent, "blocked": figures.blocked,
                            "no_consent": figures.no_consent, "failed": figures.failed},
                )

    async def progress(self, broadcast_id: int) -> Progress:
        """The figures, from the outbox rows (or, once they are purged, as written at the end)."""
        async with self._sessions() as session:
            row = await session.get(Broadcast, broadcast_id)
            if row is None:
                raise BroadcastError("not_found")
            counts = (
                await session.execute(
                    select(OutboxMessage.state, OutboxMessage.last_error, func.count())
                    .where(_of(broadcast_id))
                    .group_by(OutboxMessage.state, OutboxMessage.last_error)
                )
            ).all()
        sent = blocked = no_consent = opted_out = failed = remaining = rows = 0
        for state, code, count in counts:
            rows += count
            state = OutboxState(state)
            if state is OutboxState.SENT:
                sent += count
            elif state in (OutboxState.PENDING, OutboxState.SENDING):
                remaining += count
            elif state is OutboxState.FAILED and code == "no_consent":
                no_consent += count
            elif state is OutboxState.FAILED and code == OPTED_OUT:
                opted_out += count
            elif state is OutboxState.FAILED and code in BLOCKED_CODES:
                blocked += count
            else:
                failed += count
        queued = row.queued or 0
        audience = row.audience_size or 0
        overall = BroadcastState(row.state)
        skipped_at_queue = row.skipped_opted_out or 0
        if row.sent is not None:
            # Written at the end: the total (at queueing, and later from the rows), so the
            # rows' own count is not added again.
            skipped_at_queue, opted_out = skipped_at_queue - opted_out, skipped_at_queue
        else:
            opted_out += skipped_at_queue
        if row.sent is not None and rows < queued - (row.withdrawn or 0):
            # the finished outbox rows were purged: the figures as they were written at the end
            return Progress(
                overall, audience, queued, row.sent or 0, row.blocked or 0, row.skipped_no_consent or 0,
                row.failed or 0, 0, row.withdrawn or 0, 0, row.skipped_opted_out or 0,
            )
        blocked += max(0, audience - queued - skipped_at_queue)  # already inactive when it was queued
        withdrawn = max(0, queued - rows) if overall is BroadcastState.CANCELLED else 0
        eta = math.ceil(remaining / self.rate_per_second) if remaining else 0
        return Progress(overall, audience, queued, sent, blocked, no_consent, failed, remaining, withdrawn, eta, opted_out)

    async def compose(self, row: Any) -> str | None:
        """The dispatcher's hook for a broadcast row: the text in the recipient's language
        (None: the broadcast is gone)."""
        broadcast_id = int((row.params or {}).get("broadcast", 0))
        cached = self._texts.get(broadcast_id)
        if cached is None:
            async with self._sessions() as session:
                found = await session.get(Broadcast, broadcast_id)
                if found is None:
                    return None
                cached = (found.text, found.template)
            self._texts[broadcast_id] = cached
            while len(self._texts) > 16:
                self._texts.popitem(last=False)
        text, template = cached
        return self.message(text, row.language, template)

    async def to_report(self) -> builtins.list[tuple[BroadcastView, str]]:  # list: a method here
        """Broadcasts whose progress message is to be brought up to date, with the sender's
        language: running ones, and finished ones whose final figures were not shown yet."""
        async with self._sessions() as session:
            rows = (
                await session.execute(
                    select(Broadcast, Person.language)
                    .join(Person, Person.id == Broadcast.created_by_id)
                    .where(
                        Broadcast.progress_message_id.is_not(None),
                        Broadcast.reported_at.is_(None),
                        Broadcast.state.in_([BroadcastState.SENDING.value, BroadcastState.DONE.value,
                                             BroadcastState.CANCELLED.value]),
                    )
                )
            ).all()
            return [(_view(row), self._content.resolve_language(language)) for row, language in rows]

    async def reported(self, broadcast_id: int) -> None:
        async with self._sessions.begin() as session:
            await session.execute(
                update(Broadcast).where(Broadcast.id == broadcast_id).values(reported_at=self.clock())
            )


def _of(broadcast_id: int) -> Any:
    """The outbox rows of one broadcast (ix_outbox_broadcast_id)."""
    return OutboxMessage.broadcast_id == broadcast_id
