"""Pacing of outbox sends in this process: Telegram's limits, kept before Telegram enforces them.

* **Overall:** a token bucket refilled at ``rate`` messages per second, holding at most
  ``max(2, rate / 20)`` tokens (a 50 ms burst: enough to absorb timer jitter so that the
  achieved rate stays at the cap, small against Telegram's own burst allowance). With
  several instances each gets ``OUTBOX_RATE_PER_SECOND / instances`` (bot.delivery.leadership).
* **Per chat:** at least ``per_chat_interval`` seconds between two messages to one chat,
  counted from the moment each actually starts (a chat is reserved while its message waits
  for its overall token).
* **Flood wait:** ``pause(seconds)`` after a RetryAfter stops every send until then.
* **Replies first:** with a ``shared`` rate (bot.delivery.ratelimit.SharedRate, Telegram's
  overall rate that replies spend without waiting), a send also waits for a token of it:
  the outbox takes only what replies leave.

The pacer only answers "when may this send start"; the dispatcher does the waiting.
Times are ``time.monotonic()`` seconds (injectable).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Protocol

#: Burst, in seconds of the rate (10 messages at 25/s): after waiting for the replies' share of
#: Telegram's overall rate (``shared``), the outbox makes the wait up within that rate. The
#: shared bucket still caps both together; at 0.05 s a 10,000 broadcast beside 50 chatting
#: clients kept 0.93-0.94 of its rate, at 0.4 s 0.950-0.956 (bench/README.md).
BURST_SECONDS = 0.4


class Shared(Protocol):
    """A rate shared with other senders (bot.delivery.ratelimit.SharedRate)."""

    def wait(self) -> float: ...

    def spend(self) -> None: ...


class Pacer:
    def __init__(
        self,
        rate: float,
        per_chat_interval: float,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        shared: Shared | None = None,
    ) -> None:
        self._monotonic = monotonic
        self.shared = shared
        self._per_chat = per_chat_interval
        self._rate = 0.0
        self._tokens = 1.0
        self._updated = monotonic()
        self._paused_until = 0.0
        self._chat_next: dict[int, float] = {}
        self.rate = rate

    # -- configuration -------------------------------------------------------------------------

    @property
    def rate(self) -> float:
        return self._rate

    @rate.setter
    def rate(self, value: float) -> None:
        if value <= 0:
            raise ValueError("the rate must be positive")
        self._refill(self._monotonic())
        self._rate = value
        self._capacity = max(2.0, value * BURST_SECONDS)
        self._tokens = min(self._tokens, self._capacity)

    @property
    def per_chat_interval(self) -> float:
        return self._per_chat

    # -- flood waits -----------------------------------------------------------------------------

    def pause(self, seconds: float) -> None:
        """Telegram said RetryAfter(seconds): nothing is sent before then."""
        self._paused_until = max(self._paused_until, self._monotonic() + seconds)

    def paused_for(self, now: float | None = None) -> float:
        now = self._monotonic() if now is None else now
        return max(0.0, self._paused_until - now)

    # -- asking ----------------------------------------------------------------------------------

    def chat_ready_at(self, chat_id: int) -> float:
        """When a message to ``chat_id`` may be sent, as far as its chat is concerned."""
        return self._chat_next.get(chat_id, 0.0)

    def overall_wait(self, now: float | None = None) -> float:
        """Seconds until the next send may start (flood pause, overall rate, and what replies
        leave of the shared rate)."""
        now = self._monotonic() if now is None else now
        self._refill(now)
        token_wait = 0.0 if self._tokens >= 1.0 else (1.0 - self._tokens) / self._rate
        shared_wait = self.shared.wait() if self.shared is not None else 0.0
        return max(token_wait, shared_wait, self.paused_for(now))

    def reserve_chat(self, chat_id: int) -> None:
        """A send to ``chat_id`` is on its way (waiting for a token): no other may start for
        that chat until :meth:`take` (or :meth:`release_chat`)."""
        self._chat_next[chat_id] = math.inf

    def release_chat(self, chat_id: int) -> None:
        """The reserved send did not happen."""
        if self._chat_next.get(chat_id) == math.inf:
            del self._chat_next[chat_id]

    def take(self, chat_id: int, now: float | None = None) -> None:
        """A send to ``chat_id`` starts now (the caller checked both waits are over)."""
        now = self._monotonic() if now is None else now
        self._refill(now)
        self._tokens -= 1.0
        if self.shared is not None:
            self.shared.spend()
        self._chat_next[chat_id] = now + self._per_chat
        if len(self._chat_next) > 4096:
            self.prune(now)

    def prune(self, now: float | None = None) -> None:
        """Forget chats whose interval is over (bounded memory for large broadcasts)."""
        now = self._monotonic() if now is None else now
        self._chat_next = {chat: at for chat, at in self._chat_next.items() if at > now}  # inf stays

    def _refill(self, now: float) -> None:
        elapsed = now - self._updated
        if elapsed > 0:
            self._tokens = min(self._capacity if self._rate else 1.0, self._tokens + elapsed * self._rate)
        self._updated = now
