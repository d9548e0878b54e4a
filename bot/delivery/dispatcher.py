"""The dispatcher: claims due outbox rows, sends them within Telegram's limits, records outcomes.

Started from ``post_init`` (bot.app) as a repeating JobQueue job, ``tick`` about once a
second (OUTBOX_TICK_SECONDS). A tick is short; it

1. heartbeats (PostgreSQL: the instances share the overall rate), every few seconds;
2. puts rows whose lease ran out back to pending (every few seconds);
3. plans recurring schedules that have come (bot.delivery.schedules), and staff broadcasts
   (bot.services.broadcasts: starts those due, queues their rows, closes finished ones);
4. claims due rows (bot.delivery.store) to keep about two ticks' worth of sends buffered,
   and triages them: too late (dead), recipient inactive (failed), in their quiet hours
   (back to pending until they end), two for one chat (the later one waits a tick);
5. hands the rest to the sender task.

A row is sent as a text (its content key in the recipient's language, or its encrypted
body), or, for a row of a kind in ``DOCUMENT_KINDS`` (a summary) without a body, as a
document whose file and caption ``documents(row)`` reads at send time. A broadcast row holds
only its broadcast's id: ``broadcasts.compose(row)`` reads the text at send time.

The sender task starts a send task for each row once its chat may get a message (one per
OUTBOX_PER_CHAT_INTERVAL), up to ``max_in_flight`` at once; each send task takes its token
of the overall rate right before its HTTP call (bot.delivery.pacing), so a busy event loop
cannot turn late tasks into a burst. Each outcome goes to the writer task, which commits
outcomes as they come (several in one transaction under load). Outcomes:

===========================  ===========================================================
Telegram's answer            the row
===========================  ===========================================================
a Message                    sent (with its message id)
RetryAfter                   pending again at now + retry_after (the attempt does not
                             count); every outbox send pauses that long
5xx, network error, timeout  pending again after a backoff with jitter (2 s, 4 s, 8 s ...
                             up to 5 min), dead after OUTBOX_MAX_ATTEMPTS, but only if
                             other messages got through to Telegram since this one began
                             failing: while nothing does (Telegram down, unreachable or
                             failing for everyone), its last attempt does not count and it
                             keeps being retried at the backoff's longest interval
403 Forbidden                failed; the person becomes inactive and their queued rows fail
400 Bad Request              failed (the message itself is wrong: retrying cannot help)
past expires_at              dead (a reminder is dropped, not sent hours late)
===========================  ===========================================================

Crash semantics: 'sending' is committed before the Telegram call and the outcome after it.
If the process dies in between, its rows stay 'sending' until their lease
(OUTBOX_LEASE_SECONDS) runs out, and are then sent again: the only duplicates possible are
rows that were in flight at the crash, and rows whose answer from Telegram was lost (a
network error or a timeout after Telegram took the message looks like one before it did;
the Bot API has no idempotency key). A clean stop sends nothing new, waits for the sends
in flight, records them and puts the rows it had claimed but not started back to pending.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import math
import random
import time
import warnings
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol
from zoneinfo import ZoneInfo

from sqlalchemy.exc import SQLAlchemyError
from telegram import Bot, InlineKeyboardMarkup
from telegram.error import (
    BadRequest,
    ChatMigrated,
    Forbidden,
    NetworkError,
    RetryAfter,
    TelegramError,
)
from telegram.ext import ExtBot

from bot.content import Content, ContentError
from bot.db.delivery_models import OutboxKind, OutboxState
from bot.db.types import utcnow
from bot.delivery.clock import Clock, quiet_until
from bot.delivery.pacing import Pacer
from bot.delivery.rendering import render_params
from bot.delivery.ratelimit import OUTBOX_SEND, BotRateLimiter
from bot.delivery.store import Claimed, Outcome, OutboxStore

if TYPE_CHECKING:
    from bot.config import Settings
    from bot.delivery.leadership import InstanceRegistry
    from bot.delivery.schedules import ScheduleService

_log = logging.getLogger(__name__)

#: A flood wait at least this long sends the buffered rows back to the database.
_RELEASE_BUFFER_AFTER = 5.0
#: Finished rows older than this are deleted (hourly).
RETENTION = timedelta(days=30)


@dataclass(frozen=True)
class DispatcherConfig:
    rate_per_second: float = 25.0  # the bot's total; divided among live instances
    per_chat_interval: float = 1.0
    lease: timedelta = timedelta(seconds=60)
    max_attempts: int = 6
    tick_seconds: float = 1.0
    backoff_base: float = 2.0
    backoff_cap: float = 300.0
    max_in_flight: int = 64
    heartbeat_seconds: float = 5.0
    lease_sweep_seconds: float = 5.0
    purge_seconds: float = 3600.0

    @classmethod
    def from_settings(cls, settings: Settings) -> DispatcherConfig:
        return cls(
            rate_per_second=settings.outbox_rate_per_second,
            per_chat_interval=settings.outbox_per_chat_interval,
            lease=timedelta(seconds=settings.outbox_lease_seconds),
            max_attempts=settings.outbox_max_attempts,
            tick_seconds=settings.outbox_tick_seconds,
        )

    @property
    def send_timeout(self) -> float:
        """A send still unanswered after this is treated as a network error, well inside
        the lease (so no other claim can start while it might still go through)."""
        return max(1.0, self.lease.total_seconds() / 2)


class Broadcasts(Protocol):
    async def plan(self, now: datetime | None = None) -> None: ...

    async def compose(self, row: Claimed) -> str | None: ...


class Document(Protocol):
    """A file to send instead of a text: its name, bytes and caption (Telegram HTML)."""

    filename: str
    data: bytes
    caption: str


#: Kinds sent as a document (``Dispatcher.documents``) rather than as a text.
DOCUMENT_KINDS = frozenset({OutboxKind.SUMMARY.value})


@dataclass
class DispatchStats:
    """Counters since start (for logs, tests and the benchmarks)."""

    claimed: int = 0
    sent: int = 0
    retried: int = 0
    failed: int = 0
    dead: int = 0
    flood_waits: int = 0
    by_code: dict[str, int] = field(default_factory=dict)

    def count(self, outcome: Outcome) -> None:
        if outcome.state is OutboxState.SENT:
            self.sent += 1
        elif outcome.state is OutboxState.PENDING:
            self.retried += 1
        elif outcome.state is OutboxState.FAILED:
            self.failed += 1
        else:
            self.dead += 1
        if outcome.code:
            self.by_code[outcome.code] = self.by_code.get(outcome.code, 0) + 1


def retry_after_seconds(error: RetryAfter) -> float:
    """RetryAfter's wait in seconds, without PTB 22's int/timedelta deprecation warning."""
    value = getattr(error, "_retry_after", None)
    if isinstance(value, timedelta):
        return value.total_seconds()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        raw = error.retry_after
    return raw.total_seconds() if isinstance(raw, timedelta) else float(raw)


class Dispatcher:
    def __init__(
        self,
        bot: Bot,
        store: OutboxStore,
        content: Content,
        *,
        config: DispatcherConfig = DispatcherConfig(),
        planner: ScheduleService | None = None,
        registry: InstanceRegistry | None = None,
        clock: Clock = utcnow,
        monotonic: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        may_receive: Callable[[set[int]], Awaitable[set[int]]] | None = None,
        buttons: Callable[[Claimed], InlineKeyboardMarkup | None] | None = None,
        documents: Callable[[Claimed], Awaitable[Document | None]] | None = None,
        broadcasts: Broadcasts | None = None,
    ) -> None:
        self.bot = bot
        #: Staff broadcasts (bot.services.broadcasts): planned on every tick, and the text of
        #: a broadcast row read at send time (its row holds only the broadcast's id).
        self.broadcasts = broadcasts
        #: The file of a row sent as a document (a summary: bot.services.summaries), read at
        #: send time; None: nothing to send any more (the row fails).
        self.documents = documents
        #: The inline keyboard of a row, made at send time for its recipient (bot.delivery.buttons).
        self.buttons = buttons
        #: Policy checked at send time, not at scheduling time: of these recipients, who may
        #: be sent a message now (e.g. a client who withdrew consent may not).
        self.may_receive = may_receive
        self.store = store
        self.content = content
        self.config = config
        self.planner = planner
        self.registry = registry
        self.clock = clock
        self.monotonic = monotonic
        limiter = bot.rate_limiter if isinstance(bot, ExtBot) else None
        #: Telegram's overall rate, shared with replies (bot.delivery.ratelimit): they go first.
        self.shared = limiter.shared if isinstance(limiter, BotRateLimiter) else None
        self.pacer = Pacer(config.rate_per_second, config.per_chat_interval, monotonic=monotonic,
                           shared=self.shared)
        self.stats = DispatchStats()
        #: Set by the update consumer (bot.delivery.leadership); reported in heartbeats.
        self.consuming_updates = False
        self._rng = rng or random.Random()  # retry jitter, not a secret  # nosec B311
        self._heap: list[tuple[float, int, Claimed]] = []  # (ready at, seq, row)
        self._seq = itertools.count()
        self._wake = asyncio.Event()
        self._slots = asyncio.Semaphore(config.max_in_flight)
        self._in_flight: set[asyncio.Task[None]] = set()
        self._outcomes: asyncio.Queue[Outcome | None] = asyncio.Queue()
        self._unwritten = 0  # outcomes queued or being written
        self._tick_lock = asyncio.Lock()
        self._token_lock = asyncio.Lock()
        self._sender: asyncio.Task[None] | None = None
        self._writer: asyncio.Task[None] | None = None
        self._stopping = False
        self._next_heartbeat = 0.0
        self._next_sweep = 0.0
        self._next_purge = monotonic() + 60.0
        #: When Telegram last accepted an outbox message (monotonic), and, per row failing with
        #: a server or network error, when its current run of failures began (this process).
        #: A row is given up only if messages got through in between (see _retry).
        self._last_delivered = -math.inf
        self._failing_since: dict[int, float] = {}
        self._write_failing = False  # the writer's last attempt to record outcomes failed
        self._send_kwargs: dict[str, Any] = (
            {"rate_limit_args": OUTBOX_SEND}
            if isinstance(bot, ExtBot) and bot.rate_limiter is not None
            else {}
        )

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        if self._sender is None:
            self._sender = asyncio.create_task(self._run_sender(), name="outbox-sender")
            self._writer = asyncio.create_task(self._run_writer(), name="outbox-writer")

    async def stop(self, timeout: float = 10.0) -> None:
        """Stop cleanly: no new sends; wait for those in flight; record everything; put the
        rows claimed but not started back to pending; leave the instance registry."""
        if self._stopping:
            return
        self._stopping = True
        async with self._tick_lock:  # a tick in progress finishes first
            pass
        if self._sender is not None:
            self._sender.cancel()
            # Python 3.11's asyncio.wait_for (the sender's nap) loses a cancellation that
            # arrives together with the wake-up it waits for; the sender then waits for the
            # next wake-up, which would never come. Waking it makes it see _stopping and end.
            self._wake.set()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sender
        self._release_buffer(self.clock(), code="shutdown")
        if self._in_flight:
            _done, pending = await asyncio.wait(self._in_flight, timeout=timeout)
            for task in pending:  # unknown outcome: left 'sending' for the lease to expire
                task.cancel()
        if self._writer is not None:
            self._outcomes.put_nowait(None)
            try:
                await asyncio.wait_for(self._writer, timeout)
            except TimeoutError:
                _log.warning("Outbox outcomes not all written at shutdown; their leases will expire")
        if self.registry is not None:
            with contextlib.suppress(SQLAlchemyError, OSError):
                await self.registry.leave()
        _log.info(
            "Outbox dispatcher stopped (sent %d, retried %d, failed %d, dead %d)",
            self.stats.sent, self.stats.retried, self.stats.failed, self.stats.dead,
        )

    async def idle(self, timeout: float = 30.0) -> None:
        """Wait until nothing is buffered, in flight or unwritten (for tests and benches)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._heap or self._in_flight or self._unwritten:
            if loop.time() > deadline:
                raise TimeoutError("the outbox dispatcher did not become idle")
            await asyncio.sleep(0.01)

    @property
    def buffered(self) -> int:
        return len(self._heap) + len(self._in_flight)

    # -- the tick ------------------------------------------------------------------------------

    async def tick(self, now: datetime | None = None) -> int:
        """One round (see the module docstring); the number of rows claimed. A tick that
        finds the previous one still running returns at once."""
        if self._stopping or self._tick_lock.locked():
            return 0
        async with self._tick_lock:
            try:
                return await self._tick(now or self.clock())
            except (SQLAlchemyError, OSError) as exc:
                _log.warning("Outbox tick failed (%s); retrying next tick", type(exc).__name__)
                return 0

    async def _tick(self, now: datetime) -> int:
        mono = self.monotonic()
        if self.registry is not None and mono >= self._next_heartbeat:
            self._next_heartbeat = mono + self.config.heartbeat_seconds
            live = await self.registry.heartbeat(now, consuming_updates=self.consuming_updates)
            self.pacer.rate = self.config.rate_per_second / max(1, live)
            if self.shared is not None:  # what the other instances' outboxes may send
                self.shared.set_others(self.config.rate_per_second - self.pacer.rate)
        # Not while outcomes of ours wait for a retry of their write (the database was away):
        # their rows' leases may have run out meanwhile, and releasing them would send them again.
        if mono >= self._next_sweep and not self._write_failing:
            self._next_sweep = mono + self.config.lease_sweep_seconds
            await self.store.release_expired_leases(now)
        if mono >= self._next_purge:
            self._next_purge = mono + self.config.purge_seconds
            await self.store.purge(now - RETENTION)
        if self.planner is not None:
            await self.planner.plan(now, may_receive=self.may_receive)
        if self.broadcasts is not None:
            await self.broadcasts.plan(now)
        if self.pacer.paused_for(mono) > self.config.tick_seconds:
            return 0  # flood wait: claim nothing now
        target = min(1000, max(4, math.ceil(self.pacer.rate * self.config.tick_seconds * 2)))
        room = target - self.buffered
        if room <= 0:
            return 0
        rows = await self.store.claim(now, room, self.config.lease)
        self.stats.claimed += len(rows)
        self._accept(await self._withhold(rows), now)
        return len(rows)

    async def _withhold(self, rows: list[Claimed]) -> list[Claimed]:
        """Settle the rows whose recipient may not receive anything now (one query per tick)."""
        if self.may_receive is None or not rows:
            return rows
        allowed = await self.may_receive({row.recipient_id for row in rows})
        for row in rows:
            if row.recipient_id not in allowed:
                self._settle(Outcome(row.id, row.token, OutboxState.FAILED, "no_consent"))
        return [row for row in rows if row.recipient_id in allowed]

    def _accept(self, rows: list[Claimed], now: datetime) -> None:
        """Triage claimed rows: settle the ones that must not be sent now, buffer the rest."""
        busy_chats = {row.chat_id for _, _, row in self._heap}
        later = 0
        mono = self.monotonic()
        for row in rows:
            if row.expires_at is not None and now > row.expires_at:
                self._settle(Outcome(row.id, row.token, OutboxState.DEAD, "expired"))
            elif row.attempts > self.config.max_attempts:
                self._settle(Outcome(row.id, row.token, OutboxState.DEAD, "retries_exhausted"))
            elif not row.recipient_active:
                self._settle(Outcome(row.id, row.token, OutboxState.FAILED, "recipient_inactive"))
            elif (quiet_end := self._quiet_end(row, now)) is not None:
                if row.expires_at is not None and quiet_end > row.expires_at:
                    self._settle(Outcome(row.id, row.token, OutboxState.DEAD, "expired"))
                else:
                    self._settle(
                        Outcome(row.id, row.token, OutboxState.PENDING, "quiet_hours",
                                retry_at=quiet_end, refund_attempt=True)
                    )
            elif row.chat_id in busy_chats:
                # One row per chat in the buffer: the next waits for its interval, keeping
                # its order; its lease can never run out while it waits here.
                later += 1
                retry_at = now + timedelta(
                    seconds=self.config.per_chat_interval, microseconds=later
                )
                self._settle(
                    Outcome(row.id, row.token, OutboxState.PENDING, "chat_busy",
                            retry_at=retry_at, refund_attempt=True)
                )
            else:
                busy_chats.add(row.chat_id)
                heapq.heappush(self._heap, (mono, next(self._seq), row))
        self._wake.set()

    @staticmethod
    def _quiet_end(row: Claimed, now: datetime) -> datetime | None:
        if row.quiet_hours is None:
            return None
        try:
            zone = ZoneInfo(row.timezone)
        except (ValueError, KeyError):
            zone = ZoneInfo("UTC")
        return quiet_until(now, zone, *row.quiet_hours)

    # -- sending -------------------------------------------------------------------------------

    async def _run_sender(self) -> None:
        """Start a send task for each buffered row once its chat may get a message, at most
        ``max_in_flight`` at once. The overall rate is applied inside the task, right before
        its HTTP call (see :meth:`_token`)."""
        while not self._stopping:
            if not self._heap:
                self._wake.clear()
                await self._wake.wait()
                continue
            now = self.monotonic()
            ready_at, seq, row = self._heap[0]
            chat_ready = self.pacer.chat_ready_at(row.chat_id)
            if chat_ready == math.inf:  # its previous message still waits for a token
                chat_ready = ready_at if ready_at > now else now + max(self.pacer.per_chat_interval, 0.05)
            due = max(ready_at, chat_ready)
            if due > now:
                if due > ready_at:
                    heapq.heapreplace(self._heap, (due, seq, row))
                else:
                    await self._nap(due - now)
                continue
            await self._slots.acquire()
            if not self._heap or self._heap[0][2] is not row:  # released meanwhile
                self._slots.release()
                continue
            heapq.heappop(self._heap)
            self.pacer.reserve_chat(row.chat_id)
            task = asyncio.create_task(self._send(row))
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)

    async def _nap(self, seconds: float) -> None:
        """Sleep, but wake up for newly buffered rows (they may be ready sooner)."""
        self._wake.clear()
        with contextlib.suppress(TimeoutError, asyncio.TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)

    async def _token(self, chat_id: int) -> str | None:
        """Wait for the overall rate's next token and take it, right before the HTTP call:
        tasks that start late (a busy event loop) then still cannot reach Telegram faster
        than the rate plus its small burst. One waiter at a time (a lock, FIFO), so waiting
        costs one wake-up per send. Returns why the row must go back instead: a long flood
        wait (it would hold the row past reason) or a stop."""
        async with self._token_lock:
            while True:
                now = self.monotonic()
                if self._stopping:
                    reason = "shutdown"
                elif self.pacer.paused_for(now) >= _RELEASE_BUFFER_AFTER:
                    reason = "flood_wait"
                else:
                    wait = self.pacer.overall_wait(now)
                    if wait <= 0:
                        self.pacer.take(chat_id, now)
                        return None
                    await asyncio.sleep(wait)
                    continue
                self.pacer.release_chat(chat_id)
                return reason

    async def _send(self, row: Claimed) -> None:
        try:
            reason = await self._token(row.chat_id)
            if reason is None:
                outcome = await self._deliver(row)
            else:
                retry_at = self.clock() + timedelta(seconds=self.pacer.paused_for())
                outcome = Outcome(row.id, row.token, OutboxState.PENDING, reason,
                                  retry_at=retry_at, refund_attempt=True)
        finally:
            self._slots.release()
        self._settle(outcome)

    async def _deliver(self, row: Claimed) -> Outcome:
        document: Document | None = None
        try:
            if row.kind in DOCUMENT_KINDS and row.body is None and not row.undecryptable:
                document = await self.documents(row) if self.documents is not None else None
                if document is None:
                    raise ValueError("no document")
            elif (
                row.kind == OutboxKind.BROADCAST.value and self.broadcasts is not None and row.body is None
                and "broadcast" in (row.params or {})  # a staff broadcast's row; others render as usual
            ):
                composed = await self.broadcasts.compose(row)
                if composed is None:
                    raise ValueError("the broadcast is gone")
                text, markup = composed, None
            else:
                text = self._render(row)
                markup = self.buttons(row) if self.buttons is not None else None
        except (SQLAlchemyError, OSError) as exc:  # the summary (broadcast) could not be read now
            _log.warning("Outbox row %s: its document could not be read (%s)", row.id, type(exc).__name__)
            return self._retry(row, "database_error")
        except (ContentError, KeyError, ValueError, TypeError) as exc:
            _log.error("Outbox row %s cannot be rendered (%s)", row.id, type(exc).__name__)
            return Outcome(row.id, row.token, OutboxState.FAILED, "render_error")
        _log.debug("Sending outbox row %s (%s), attempt %d", row.id, row.kind, row.attempts)
        try:
            if document is not None:
                # Encrypted to the recipient's own key: they must be able to save the file to
                # open it on their computer, so it is not protected from saving.
                sending = self.bot.send_document(
                    chat_id=row.chat_id,
                    document=document.data,
                    filename=document.filename,
                    caption=document.caption,
                    protect_content=False,
                    **self._send_kwargs,
                )
            else:
                sending = self.bot.send_message(
                    chat_id=row.chat_id, text=text, reply_markup=markup, **self._send_kwargs
                )
            message = await asyncio.wait_for(sending, self.config.send_timeout)
        except RetryAfter as exc:
            seconds = retry_after_seconds(exc)
            self._flood_wait(seconds)
            return Outcome(
                row.id, row.token, OutboxState.PENDING, "flood_wait",
                retry_at=self.clock() + timedelta(seconds=seconds), refund_attempt=True,
            )
        except Forbidden:
            return Outcome(
                row.id, row.token, OutboxState.FAILED, "forbidden",
                deactivate_recipient=row.recipient_id,
            )
        except (BadRequest, ChatMigrated) as exc:  # BadRequest before NetworkError: a subclass
            _log.warning("Telegram refused outbox row %s (%s)", row.id, type(exc).__name__)
            return Outcome(row.id, row.token, OutboxState.FAILED, "bad_request")
        except (NetworkError, TimeoutError) as exc:
            code = "network_error" if isinstance(exc, NetworkError) else "timeout"
            return self._retry(row, code, telegram=True)
        except TelegramError as exc:  # Conflict, InvalidToken, ...: maybe an operator's fix
            _log.warning("Outbox row %s: %s from Telegram", row.id, type(exc).__name__)
            return self._retry(row, "telegram_error", telegram=True)
        self._last_delivered = self.monotonic()
        return Outcome(row.id, row.token, OutboxState.SENT, message_id=message.message_id)

    def _render(self, row: Claimed) -> str:
        if row.body is not None:
            return row.body
        if row.undecryptable or row.content_key is None:
            raise ValueError("no payload")
        params = render_params(self.content, row.language, row.timezone, row.params)
        return self.content.text(row.content_key, row.language, **params)

    def _retry(self, row: Claimed, code: str, *, telegram: bool = False) -> Outcome:
        """Back off exponentially with jitter ("equal jitter": half fixed, half random).

        ``telegram``: the failure was Telegram's answer or the lack of one (5xx, network
        error, timeout). Such a row is given up after OUTBOX_MAX_ATTEMPTS only if other
        messages got through since it began failing; while none does, Telegram is down or
        unreachable for everyone, which says nothing about this message: its last attempt
        does not count and it is tried again, however long the outage lasts (until its
        expiry, if it has one)."""
        refund, began = False, math.inf
        if telegram:
            if len(self._failing_since) > 100_000:  # rows another instance finished meanwhile
                self._failing_since.clear()
            began = self._failing_since.setdefault(row.id, self.monotonic())
        if row.attempts >= self.config.max_attempts:
            if not telegram or self._last_delivered > began:
                return Outcome(row.id, row.token, OutboxState.DEAD, "retries_exhausted")
            refund = True
        delay = min(self.config.backoff_cap, self.config.backoff_base * 2 ** (row.attempts - 1))
        delay = delay / 2 + self._rng.uniform(0, delay / 2)
        retry_at = self.clock() + timedelta(seconds=delay)
        if row.expires_at is not None and retry_at > row.expires_at:
            return Outcome(row.id, row.token, OutboxState.DEAD, "expired")
        return Outcome(row.id, row.token, OutboxState.PENDING, code, retry_at=retry_at, refund_attempt=refund)

    def _flood_wait(self, seconds: float) -> None:
        self.stats.flood_waits += 1
        self.pacer.pause(seconds)
        _log.warning("Telegram asked to wait %.0f s (flood control): outbox sends paused", seconds)
        if seconds >= _RELEASE_BUFFER_AFTER:
            self._release_buffer(self.clock() + timedelta(seconds=seconds), code="flood_wait")

    def _release_buffer(self, retry_at: datetime, *, code: str) -> None:
        """Rows claimed but not started go back to pending (the attempt does not count)."""
        while self._heap:
            _, _, row = heapq.heappop(self._heap)
            self._settle(
                Outcome(row.id, row.token, OutboxState.PENDING, code, retry_at=retry_at,
                        refund_attempt=True)
            )

    # -- recording -----------------------------------------------------------------------------

    def _settle(self, outcome: Outcome) -> None:
        self.stats.count(outcome)
        if outcome.state is not OutboxState.PENDING:
            self._failing_since.pop(outcome.row_id, None)
        self._unwritten += 1
        self._outcomes.put_nowait(outcome)

    async def _run_writer(self) -> None:
        """Commit outcomes as they come: one transaction for whatever has accumulated."""
        stopping = False
        while not stopping:
            first = await self._outcomes.get()
            batch: list[Outcome] = []
            if first is None:
                stopping = True
            else:
                batch.append(first)
            while not self._outcomes.empty() and len(batch) < 1000:
                item = self._outcomes.get_nowait()
                if item is None:
                    stopping = True
                else:
                    batch.append(item)
            if batch:
                await self._write(batch, giving_up=stopping)

    async def _write(self, batch: list[Outcome], *, giving_up: bool) -> None:
        for attempt in itertools.count(1):
            try:
                await self.store.record(batch, self.clock())
                self._write_failing = False
                break
            except (SQLAlchemyError, OSError) as exc:
                self._write_failing = True
                _log.warning("Recording %d outbox outcome(s) failed (%s)", len(batch), type(exc).__name__)
                if giving_up and attempt >= 3:
                    break  # their rows stay 'sending' until the lease expires
                await asyncio.sleep(min(5.0, 0.5 * attempt))
        self._unwritten -= len(batch)
