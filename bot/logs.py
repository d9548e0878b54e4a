"""Logging that cannot carry what people wrote.

Clients write about distress and safety; none of it may reach a log line, also not when a
handler raises or a library logs at DEBUG. ``PrivacyFilter`` sits on every log handler
the bot installs and enforces, for every record:

1. Libraries (python-telegram-bot, httpx, tornado, aiohttp, …) log request parameters,
   API results and whole updates at DEBUG: their records below INFO are dropped.
2. Library records at INFO and above keep their message template, but their arguments are
   replaced by type names (numbers stay): an argument could be a message or an update.
3. Exceptions are logged as their class and the frames they passed (file, line, function),
   never their message, which may quote input (``invalid literal for int(): 'my words'``).
4. Every text that reached the bot in an update (message text, caption, callback data, …)
   is remembered for a while (``SeenTexts``); any log line containing one is redacted.
5. The bot token is replaced by ``<token>`` wherever it appears.

Our own modules log ids, counts and class names only; the filter is the safety net.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
import traceback
from collections import OrderedDict
from collections.abc import Mapping
from enum import Enum
from pathlib import Path
from types import TracebackType
from typing import TextIO

OWN_LOGGERS = ("bot", "handlers", "imrs", "migrations", "alembic", "__main__")
REDACTED = "[redacted]"
MIN_REMEMBERED_LENGTH = 4  # shorter strings ("yes", "5") are too common to redact usefully


class SeenTexts:
    """A bounded, expiring set of texts people sent, used to redact log lines."""

    def __init__(self, capacity: int = 5000, ttl_seconds: float = 3600.0) -> None:
        self._capacity = capacity
        self._ttl = ttl_seconds
        # Oldest first: every add moves its text to the end, so the expired ones lead.
        self._items: OrderedDict[str, float] = OrderedDict()
        self._longest_first: list[str] | None = None  # the texts sorted for redact, until a change
        self._lock = threading.Lock()

    def add(self, text: str | None) -> None:
        if not text or len(text) < MIN_REMEMBERED_LENGTH:
            return
        now = time.monotonic()
        with self._lock:
            if text not in self._items:
                self._longest_first = None
            self._items[text] = now
            self._items.move_to_end(text)
            while len(self._items) > self._capacity:
                self._items.popitem(last=False)
                self._longest_first = None

    def redact(self, line: str) -> str:
        """``line`` with every remembered text in it replaced, the longest first. Cheap per log
        line: the expired texts are taken from the front, the sorted list is kept until a text
        comes or goes."""
        now = time.monotonic()
        with self._lock:
            while self._items:
                oldest, at = next(iter(self._items.items()))
                if now - at <= self._ttl:
                    break
                del self._items[oldest]
                self._longest_first = None
            if self._longest_first is None:
                self._longest_first = sorted(self._items, key=len, reverse=True)
            texts = self._longest_first
        for text in texts:
            if text in line:
                line = line.replace(text, REDACTED)
        return line


SEEN_TEXTS = SeenTexts()


def remember_update_texts(update: object) -> None:
    """Register every free text an update carries (called for each update before handlers)."""
    from telegram import Update

    if not isinstance(update, Update):
        return
    message = update.effective_message
    if message is not None:
        SEEN_TEXTS.add(message.text)
        SEEN_TEXTS.add(message.caption)
        if message.text:
            # Also the words after a command ("/start <payload>") on their own.
            for part in message.text.split(maxsplit=1)[1:]:
                SEEN_TEXTS.add(part)
    if update.callback_query is not None:
        SEEN_TEXTS.add(update.callback_query.data)
    if update.inline_query is not None:
        SEEN_TEXTS.add(update.inline_query.query)


class PrivacyFilter(logging.Filter):
    def __init__(self, *, token: str | None = None, seen: SeenTexts = SEEN_TEXTS) -> None:
        super().__init__()
        self._token = token
        self._seen = seen

    def filter(self, record: logging.LogRecord) -> bool:
        own = record.name.startswith(OWN_LOGGERS)
        if not own and record.levelno < logging.INFO:
            return False
        if not own and record.args:
            record.args = _scrub_args(record.args)
        if record.exc_info:
            record.exc_text = safe_traceback(*record.exc_info)
            record.exc_info = None
        if record.stack_info:
            record.stack_info = None
        message = self._seen.redact(record.getMessage())
        if self._token:
            message = message.replace(self._token, "<token>")
            if record.exc_text:
                record.exc_text = record.exc_text.replace(self._token, "<token>")
        record.msg, record.args = message, None
        return True


def _scrub_args(args: tuple[object, ...] | Mapping[str, object]) -> tuple[object, ...] | Mapping[str, object]:
    def scrub(value: object) -> object:
        if value is None or isinstance(value, (bool, int, float, Enum)):
            return value
        return f"<{type(value).__name__}>"

    if isinstance(args, tuple):
        return tuple(scrub(v) for v in args)
    return {k: scrub(v) for k, v in args.items()}


def safe_traceback(
    exc_type: type[BaseException] | None,
    exc: BaseException | None,
    tb: TracebackType | None,
) -> str:
    """A traceback with class names and frames only: no exception messages, no locals."""
    lines: list[str] = []
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        frames = traceback.extract_tb(exc.__traceback__ if exc.__traceback__ else tb)
        lines.append(f"{type(exc).__module__}.{type(exc).__qualname__} (message withheld)")
        lines.extend(f"  at {f.filename}:{f.lineno} in {f.name}" for f in frames)
        exc = exc.__cause__ or exc.__context__
        tb = None
        if exc is not None:
            lines.append("caused by / while handling:")
    return "\n".join(lines) if lines else (exc_type.__name__ if exc_type else "")


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of the record (like logging's
    last-resort handler), so replacing stderr (tests, daemons) never leaves it writing to a
    closed stream."""

    def __init__(self) -> None:
        super().__init__()

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _value: TextIO) -> None:
        pass


def configure_logging(
    level: str = "INFO",
    *,
    file: Path | None = None,
    stream: TextIO | None = None,
    token: str | None = None,
) -> logging.Handler:
    """One handler on the root logger, with the privacy filter; returns the handler."""
    handler: logging.Handler
    if file is not None:
        file.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(file, encoding="utf-8")
    elif stream is not None:
        handler = logging.StreamHandler(stream)
    else:
        handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(PrivacyFilter(token=token))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # httpx logs every request URL at INFO, and a Bot API URL contains the token.
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # Alembic narrates its internals at INFO; bot.db.migrate says what was migrated.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    # APScheduler logs every run of a job at INFO: two lines a second for the outbox tick.
    logging.getLogger("apscheduler.executors").setLevel(logging.WARNING)
    return handler
