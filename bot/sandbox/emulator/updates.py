"""The bot's update queue with Telegram's getUpdates semantics."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from bot.sandbox.emulator.protocol import ApiError

# Update types Telegram leaves out unless they are asked for in allowed_updates.
_OPT_IN_TYPES = frozenset({"chat_member", "message_reaction", "message_reaction_count"})


class Pulse:
    """Wakes everyone waiting for "something changed", without a lock (safe from sync code)."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def fire(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def wait(self, timeout: float | None) -> None:
        """Return at the next :meth:`fire`, or after ``timeout`` seconds."""
        event = self._event
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)


class UpdateQueue:
    """Pending updates, confirmed (forgotten) by a later getUpdates offset or a webhook's 2xx.

    * An update is created only if its type passes the bot's current allowed_updates (like
      Telegram, changing allowed_updates does not affect updates created before).
    * getUpdates returns pending updates oldest first and long-polls when there are none.
    * A getUpdates that arrives while another is waiting takes over: the waiting one answers
      409 "Conflict: terminated by other getUpdates request; ...", as on Telegram.
    """

    def __init__(self, first_update_id: int = 1) -> None:
        self.pending: list[dict[str, Any]] = []
        self.dropped: set[int] = set()  # ids dropped unseen (drop_pending_updates)
        self.allowed_updates: frozenset[str] | None = None  # None: all but _OPT_IN_TYPES
        self.changed = Pulse()
        self._next_id = first_update_id
        self._poller: object | None = None  # token of the getUpdates currently waiting
        self._terminated: set[object] = set()
        self._closing = False

    @property
    def last_id(self) -> int:
        """The id of the newest update created (0 before the first)."""
        return self._next_id - 1

    def accepts(self, update_type: str) -> bool:
        if self.allowed_updates is None:
            return update_type not in _OPT_IN_TYPES
        return update_type in self.allowed_updates

    def set_allowed_updates(self, allowed: list[str] | None) -> None:
        """``None`` keeps the previous setting, an empty list restores the default."""
        if allowed is not None:
            self.allowed_updates = frozenset(allowed) or None

    def push(self, update_type: str, payload: dict[str, Any]) -> dict[str, Any] | None:
        """Create an update; returns it, or None if allowed_updates filtered it out."""
        if not self.accepts(update_type):
            return None
        update = {"update_id": self._next_id, update_type: payload}
        self._next_id += 1
        self.pending.append(update)
        self.changed.fire()
        return update

    def confirm(self, offset: int | None) -> None:
        """Forget every update with id < offset; a negative offset keeps only the last -offset."""
        if not offset:
            return
        if offset < 0:
            del self.pending[:offset]
        else:
            self.pending = [u for u in self.pending if u["update_id"] >= offset]

    def drop_pending(self) -> None:
        self.dropped.update(u["update_id"] for u in self.pending)
        self.pending.clear()

    def close(self) -> None:
        """Let every waiting getUpdates answer now (the server is stopping)."""
        self._closing = True
        self.changed.fire()

    async def get_updates(self, offset: int | None, limit: int, timeout: float) -> list[dict[str, Any]]:
        self.confirm(offset)
        if self._poller is not None:
            self._terminated.add(self._poller)
            self.changed.fire()
        me = object()
        self._poller = me
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            while True:
                if me in self._terminated:
                    self._terminated.discard(me)
                    raise ApiError.conflict(
                        "terminated by other getUpdates request; make sure that only one bot instance is running"
                    )
                remaining = deadline - loop.time()
                if self.pending or self._closing or remaining <= 0:
                    return self.pending[:limit]
                await self.changed.wait(remaining)
        finally:
            if self._poller is me:
                self._poller = None
