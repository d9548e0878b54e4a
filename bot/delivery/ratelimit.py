"""The bot-wide rate limiter, and how outbox sends and python-telegram-bot's limiter get along.

Every request of the bot goes through python-telegram-bot's ``AIORateLimiter``: direct
replies rely on it (an overall rate, 20 messages a minute per group, RetryAfter waited out
and retried). Outbox sends go through it too, but are paced by bot.delivery.pacing before
they get there, and they must not be retried inside it:

* A RetryAfter retried inside the limiter would hold the outbox row in flight for the wait
  and hide the flood signal from the dispatcher, which has to pause *all* outbox sends and
  put the row back with its new due time. So outbox sends pass
  ``rate_limit_args=NO_RETRIES`` and see every RetryAfter themselves. (A plain 0 cannot
  say that: ``ExtBot`` drops falsy ``rate_limit_args`` and ``AIORateLimiter`` reads
  ``rate_limit_args or max_retries``; :class:`BotRateLimiter` understands :class:`Retries`.)
* Its overall rate must not throttle the pacer's: it is set to the outbox rate plus
  headroom for replies, and never below Telegram's 30 messages/s. With the defaults (25
  outbox messages/s) that is Telegram's 30/s: at most 25 for the outbox, the rest for
  replies, which still queue inside the limiter when both peak together.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from telegram.constants import FloodLimit
from telegram.ext import AIORateLimiter


@dataclass(frozen=True)
class Retries:
    """``rate_limit_args`` of :class:`BotRateLimiter`: retry a RetryAfter ``count`` times."""

    count: int


#: ``rate_limit_args`` for a call that must see a RetryAfter rather than wait it out.
NO_RETRIES = Retries(0)
#: Messages per second kept for direct replies on top of OUTBOX_RATE_PER_SECOND.
REPLY_HEADROOM_PER_SECOND = 5.0


class BotRateLimiter(AIORateLimiter):
    """``AIORateLimiter`` whose per-call ``rate_limit_args`` may be :class:`Retries` (also
    ``Retries(0)``) or an int; calls that pass nothing get ``max_retries``."""

    def __init__(self, *, max_retries: int, **kwargs: Any) -> None:
        super().__init__(max_retries=0, **kwargs)
        self._default_retries = max_retries

    async def process_request(
        self,
        callback: Callable[..., Coroutine[Any, Any, Any]],
        args: Any,
        kwargs: dict[str, Any],
        endpoint: str,
        data: dict[str, Any],
        rate_limit_args: Retries | int | None,
    ) -> Any:
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
    return BotRateLimiter(max_retries=max_retries, overall_max_rate=overall)
