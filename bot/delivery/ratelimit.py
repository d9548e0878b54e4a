"""The bot-wide rate limiter: replies go first, the outbox takes what they leave.

Every request of the bot goes through python-telegram-bot's ``AIORateLimiter``: direct
replies rely on it (an overall rate, 20 messages a minute per group, RetryAfter waited out
and retried). Outbox sends go through it too, but are paced by bot.delivery.pacing before
they get there, and they must not be retried inside it:

* A RetryAfter retried inside the limiter would hold the outbox row in flight for the wait
  and hide the flood signal from the dispatcher, which has to pause *all* outbox sends and
  put the row back with its new due time. So outbox sends pass
  ``rate_limit_args=OUTBOX_SEND`` and see every RetryAfter themselves. (A plain 0 cannot
  say that: ``ExtBot`` drops falsy ``rate_limit_args`` and ``AIORateLimiter`` reads
  ``rate_limit_args or max_retries``; :class:`BotRateLimiter` understands :class:`Retries`.)

**Replies first.** Telegram allows about 30 messages a second in all; the outbox is paced at
``OUTBOX_RATE_PER_SECOND`` (25). Both share that overall rate through one
:class:`SharedRate`, a token bucket refilled at the overall rate (holding a third of a
second's worth, see ``BURST_SECONDS``):

* a reply (any request to a chat that is not an outbox send: a message, an edit) *spends* a
  token as it leaves the limiter, and never waits for one (it may run the bucket into debt,
  at most one second's worth);
* the outbox pacer waits until the bucket has a token, besides its own rate, and spends it.

So the outbox sends ``min(OUTBOX_RATE_PER_SECOND, overall - replies)`` a second: never more
than its configured rate, never more than what replies leave, and replies do not queue
behind outbox sends (before, both waited in the limiter's one queue: 50 people chatting
during a broadcast saw a reply p95 of 3.1 s, now 0.1-0.6 s; bench/README.md). With the
defaults the outbox keeps its 25/s while replies ask for at most 5/s; when they ask for
more, the broadcast slows down, not the replies (those 50 people ask for about 5/s, and the
broadcast kept 0.950-0.956 of its rate: the outbox pacer's own burst, bot.delivery.pacing,
lets it make up what it waited for replies within this bucket). ``AIORateLimiter``'s own overall rate (a 30-message
burst) stays in place: the outbox leaves at least 20 of that burst to replies, and replies
beyond 30 a second queue there among themselves. With several instances, each outbox share is
``OUTBOX_RATE_PER_SECOND / instances``; only the instance consuming updates sends replies, and
its shared bucket counts what the other instances may send (see :meth:`SharedRate.set_others`).

The overall rate is ``max(30, outbox rate + REPLY_HEADROOM_PER_SECOND)``: a configured
outbox rate above Telegram's (a self-hosted Bot API server, paid broadcasts) keeps some room
for replies.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from telegram.constants import FloodLimit
from telegram.ext import AIORateLimiter


@dataclass(frozen=True)
class Retries:
    """``rate_limit_args`` of :class:`BotRateLimiter`: retry a RetryAfter ``count`` times.
    ``paced``: the call already took its token of the :class:`SharedRate` (an outbox send)."""

    count: int
    paced: bool = False


#: ``rate_limit_args`` for a call that must see a RetryAfter rather than wait it out.
NO_RETRIES = Retries(0)
#: ``rate_limit_args`` of an outbox send: no retries, and paced by the outbox pacer.
OUTBOX_SEND = Retries(0, paced=True)
#: Messages per second kept for direct replies on top of OUTBOX_RATE_PER_SECOND.
REPLY_HEADROOM_PER_SECOND = 5.0
#: Burst of the shared bucket, in seconds of its rate: 10 messages at 30/s. The outbox's own
#: burst stays 2 (bot.delivery.pacing); this lets it keep the rate that replies left unused a
#: moment ago, so that bursty replies averaging under 5/s cost it nothing (with a 50 ms burst
#: they cost it 6-8 % in a simulation), while a burst of up to 20 replies still finds room in
#: the limiter's 30.
BURST_SECONDS = 1 / 3


class SharedRate:
    """Telegram's overall rate, shared by replies and the outbox (see the module docstring).

    Replies :meth:`spend` without waiting; the outbox pacer waits for :meth:`wait` to be 0,
    then spends. Times are ``monotonic()`` seconds (injectable)."""

    def __init__(self, rate: float, *, monotonic: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0:
            raise ValueError("the rate must be positive")
        self._monotonic = monotonic
        self.overall = rate
        self._others = 0.0
        self._tokens = self.capacity
        self._updated = monotonic()
        #: Replies counted since start (requests to a chat that were not outbox sends).
        self.replies = 0

    @property
    def rate(self) -> float:
        """Tokens a second for this process: the overall rate less what other instances'
        outboxes may send."""
        return max(1.0, self.overall - self._others)

    @property
    def capacity(self) -> float:
        return max(2.0, self.rate * BURST_SECONDS)

    def set_others(self, per_second: float) -> None:
        """Other instances' outboxes may send this many messages a second (PostgreSQL, several
        instances): this process keeps the rest."""
        self._refill()
        self._others = max(0.0, per_second)
        self._tokens = min(self._tokens, self.capacity)

    def spend(self, *, reply: bool = False) -> None:
        """A message leaves now. The bucket may go into debt, down to one second's worth."""
        self._refill()
        self._tokens = max(self._tokens - 1.0, -self.rate)
        if reply:
            self.replies += 1

    def wait(self) -> float:
        """Seconds until a token is left."""
        self._refill()
        return 0.0 if self._tokens >= 1.0 else (1.0 - self._tokens) / self.rate

    def _refill(self) -> None:
        now = self._monotonic()
        elapsed = now - self._updated
        if elapsed > 0:
            self._tokens = min(self.capacity, self._tokens + elapsed * self.rate)
        self._updated = now


class BotRateLimiter(AIORateLimiter):
    """``AIORateLimiter`` whose per-call ``rate_limit_args`` may be :class:`Retries` (also
    ``Retries(0)``) or an int; calls that pass nothing get ``max_retries``. Every request to a
    chat that is not ``paced`` spends a token of :attr:`shared` as it goes out."""

    def __init__(self, *, max_retries: int, shared: SharedRate, **kwargs: Any) -> None:
        super().__init__(max_retries=0, **kwargs)
        self._default_retries = max_retries
        #: The overall rate shared with the outbox pacer (bot.delivery.pacing).
        self.shared = shared

    async def process_request(
        self,
        callback: Callable[..., Coroutine[Any, Any, Any]],
        args: Any,
        kwargs: dict[str, Any],
        endpoint: str,
        data: dict[str, Any],
        rate_limit_args: Retries | int | None,
    ) -> Any:
        paced = isinstance(rate_limit_args, Retries) and rate_limit_args.paced
        if not paced and data.get("chat_id") is not None:
            callback = self._spending(callback)
        if isinstance(rate_limit_args, Retries):
            retries = rate_limit_args.count
        else:
            retries = self._default_retries if rate_limit_args is None else rate_limit_args
        if retries <= 0:
            # The base class would log an unretried RetryAfter as an ERROR with a traceback;
            # the dispatcher handles and logs flood waits itself. Same throttling, no loop.
            return await self._run_request(  # noqa: SLF001 - the base class's own step
                chat=data.get("chat_id") is not None,
                group=_group_of(data.get("chat_id")),
                allow_paid_broadcast=bool(data.get("allow_paid_broadcast", False)),
                callback=callback,
                args=args,
                kwargs=kwargs,
            )
        # The base class computes ``retries or self._max_retries``, and _max_retries is 0.
        return await super().process_request(callback, args, kwargs, endpoint, data, retries)

    def _spending(
        self, callback: Callable[..., Coroutine[Any, Any, Any]]
    ) -> Callable[..., Coroutine[Any, Any, Any]]:
        """``callback``, spending a shared token each time it is called: inside the limiter,
        right before the HTTP request (a retried reply spends once per attempt)."""
        shared = self.shared

        async def spend_then_call(*args: Any, **kwargs: Any) -> Any:
            shared.spend(reply=True)
            return await callback(*args, **kwargs)

        return spend_then_call


def _group_of(chat_id: object) -> int | str | bool:
    """As AIORateLimiter.process_request: groups and channels have negative ids or names."""
    with contextlib.suppress(ValueError, TypeError):
        chat_id = int(chat_id)  # type: ignore[call-overload]
    if (isinstance(chat_id, int) and chat_id < 0) or isinstance(chat_id, str):
        return chat_id
    return False


def bot_rate_limiter(outbox_rate_per_second: float, *, max_retries: int) -> BotRateLimiter:
    overall = max(
        float(FloodLimit.MESSAGES_PER_SECOND), outbox_rate_per_second + REPLY_HEADROOM_PER_SECOND
    )
    return BotRateLimiter(
        max_retries=max_retries, shared=SharedRate(overall), overall_max_rate=overall
    )
