"""Telegram's flood control, as token buckets.

Telegram lets a bot send about 30 messages a second overall and about one a second to one chat,
allowing short bursts, and answers excess with 429 "Too Many Requests: retry after N". Here each
limit is a bucket holding up to ``burst`` tokens that refills at ``per_second``; a message takes a
token from the overall bucket and from its chat's bucket, and when either is empty the request is
refused with the number of whole seconds until a token is back. Refused requests take nothing.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from bot.sandbox.emulator.protocol import ApiError


@dataclass
class FloodLimits:
    """Rates and bursts; ``None`` switches a limit off."""

    overall_per_second: float | None = 30
    overall_burst: int = 30
    per_chat_per_second: float | None = None
    per_chat_burst: int = 1


@dataclass
class _Bucket:
    tokens: float
    updated: float

    def wait_for_token(self, rate: float, burst: int, now: float) -> float:
        """Refill up to ``now``; seconds until one token is available (0 if one is)."""
        self.tokens = min(float(burst), self.tokens + (now - self.updated) * rate)
        self.updated = now
        return 0.0 if self.tokens >= 1 else (1 - self.tokens) / rate


class FloodControl:
    """Applies :class:`FloodLimits` (read live, so they can be changed at run time)."""

    def __init__(self, limits: FloodLimits, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self._clock = clock
        self._overall: _Bucket | None = None
        self._chats: dict[int, _Bucket] = {}

    def take(self, chat_id: int | None) -> None:
        """Take a token for one message to ``chat_id``, or raise the 429 Telegram would answer."""
        now = self._clock()
        limits = self.limits
        waits: list[float] = []
        charged: list[_Bucket] = []
        if limits.overall_per_second is not None:
            if self._overall is None:
                self._overall = _Bucket(float(limits.overall_burst), now)
            waits.append(self._overall.wait_for_token(limits.overall_per_second, limits.overall_burst, now))
            charged.append(self._overall)
        if limits.per_chat_per_second is not None and chat_id is not None:
            bucket = self._chats.setdefault(chat_id, _Bucket(float(limits.per_chat_burst), now))
            waits.append(bucket.wait_for_token(limits.per_chat_per_second, limits.per_chat_burst, now))
            charged.append(bucket)
        wait = max(waits, default=0.0)
        if wait > 0:
            raise ApiError.too_many_requests(max(1, math.ceil(wait)))
        for bucket in charged:
            bucket.tokens -= 1
