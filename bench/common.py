"""What the benches share: figures, a database of their own, settings for the bot against an
emulator, the bot (or a bare python-telegram-bot echo bot) in a child process, and people
whose replies are awaited per chat.

Imported as ``bench.common`` (the benches put the repository's root on ``sys.path``).
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import secrets
import signal
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from bot.config import Settings
from bot.crypto.keyring import generate_keyring
from bot.db.engine import is_sqlite
from bot.sandbox.emulator import BotApiEmulator, BotMessage, FloodLimits, SimUser
from bot.sandbox.emulator.people import press

#: Telegram's limits as the emulator applies them by default: about 30 messages a second overall.
TELEGRAM_FLOOD = FloodLimits()
#: No flood control: the bot's own processing is measured, not Telegram's cap.
NO_FLOOD = FloodLimits(overall_per_second=None, per_chat_per_second=None)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def latency_line(latencies: list[float]) -> str:
    if not latencies:
        return "no replies"
    return (f"reply p50 {statistics.median(latencies) * 1000:5.0f} ms, "
            f"p95 {percentile(latencies, 0.95) * 1000:5.0f} ms")


def compare(results: dict[str, tuple[float, list[float]]], first: str, second: str, total: int) -> float:
    """Print updates/s and reply latency of two runs of ``total`` updates each (``results``:
    label -> (seconds, reply latencies)); return the first's rate divided by the second's."""
    rates = {}
    for label in (first, second):
        seconds, latencies = results[label]
        rates[label] = total / seconds
        print(f"  {label:9}: {rates[label]:6.1f} updates/s, {latency_line(latencies)}")
    return rates[first] / rates[second]


def cpu_seconds(pid: int | None = None) -> float:
    """CPU time (user + system) a process has used so far: this one, or a child by ``pid``
    (from /proc, Linux). On a shared machine wall-clock rates follow the others' load; the CPU
    a bot spends per update is the steadier figure."""
    if pid is None:
        return time.process_time()
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def database_label(url: str) -> str:
    return "SQLite" if is_sqlite(url) else "PostgreSQL"


@contextlib.asynccontextmanager
async def bench_database(server_url: str | None = None, *, migrate: bool = True) -> AsyncIterator[str]:
    """A database of the bench's own, gone afterwards: a temporary SQLite file, or (with
    ``server_url``, by default ``BENCH_DATABASE_URL``) a new PostgreSQL database created on that
    server (the database the URL names is left alone) and dropped at the end."""
    from bot.db.migrate import upgrade

    server_url = server_url if server_url is not None else os.environ.get("BENCH_DATABASE_URL")
    with tempfile.TemporaryDirectory() as folder:
        if not server_url or is_sqlite(server_url):
            url = f"sqlite:///{folder}/bench.sqlite3"
            if migrate:
                await upgrade(url)
            yield url
            return
        import psycopg
        from psycopg import sql
        from sqlalchemy.engine import make_url

        admin = make_url(server_url).set(drivername="postgresql").render_as_string(hide_password=False)
        name = f"bench_{secrets.token_hex(5)}"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        try:
            url = make_url(admin).set(database=name).render_as_string(hide_password=False)
            if migrate:
                await upgrade(url)
            yield url
        finally:
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def bot_settings(emulator: BotApiEmulator, database_url: str, **overrides: Any) -> dict[str, Any]:
    """Settings of the bot against ``emulator`` (as keyword arguments, so that a child process
    can build the same :class:`Settings`); a new keyring unless ``imrs_keys`` is given."""
    values: dict[str, Any] = {
        "telegram_bot_token": emulator.token,
        "telegram_api_base_url": emulator.base_url,
        "telegram_api_file_url": emulator.base_file_url,
        "database_url": database_url,
        "imrs_keys": generate_keyring().to_json(),
        "default_timezone": "Europe/Amsterdam",
    }
    values.update(overrides)
    return values


def make_settings(values: dict[str, Any]) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


# ----------------------------------------------------------------------------- child processes


def _serve(kind: str, values: dict[str, Any], log_file: str, profile: str | None,
           ready: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    """The child process: the bot (``kind`` "bot", logging as ``imrs-bot run`` does, to
    ``log_file``) or a bare python-telegram-bot echo bot ("echo", "echo-limited" with PTB's
    stock AIORateLimiter, retrying a RetryAfter as our bot does), until SIGTERM."""
    from bot.logs import configure_logging

    configure_logging(values.get("log_level", "INFO"), file=Path(log_file), token=values["telegram_bot_token"])

    async def main() -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        if kind == "bot":
            from bot.runtime import start_bot_task

            task, _ = await start_bot_task(make_settings(values), stop=stop, timeout=120, poll_timeout=1)
            ready.put(os.getpid())
            await task
        else:
            await _echo_bot(values, limited=kind == "echo-limited", stop=stop, ready=ready)

    profiler = None
    if profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    try:
        asyncio.run(main())
    finally:
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(profile)


async def _echo_bot(values: dict[str, Any], *, limited: bool, stop: asyncio.Event,
                    ready: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    """The bare bot: python-telegram-bot's Application, long polling, one handler per kind of
    update. A text is echoed with a button under it; a press is answered and edits its message."""
    from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Update
    from telegram.ext import AIORateLimiter, ApplicationBuilder, CallbackQueryHandler, MessageHandler, filters

    keyboard = InlineKeyboardMarkup([[InlineKeyboardButton("Next ›", callback_data="next")]])

    async def echo(update: Update, _context: Any) -> None:
        assert update.message is not None
        await update.message.reply_text(update.message.text or "?", reply_markup=keyboard)

    async def pressed(update: Update, _context: Any) -> None:
        query = update.callback_query
        assert query is not None
        await query.answer()
        await query.edit_message_text(f"{getattr(query.message, 'text', '')} ›", reply_markup=keyboard)

    builder = (ApplicationBuilder().token(values["telegram_bot_token"])
               .base_url(values["telegram_api_base_url"]).base_file_url(values["telegram_api_file_url"]))
    if limited:
        builder = builder.rate_limiter(AIORateLimiter(max_retries=3))  # as our bot: RetryAfter waited out
    application = builder.build()
    application.add_handler(MessageHandler(filters.TEXT, echo))
    application.add_handler(CallbackQueryHandler(pressed))
    async with application:
        await application.start()
        assert application.updater is not None
        await application.bot.delete_webhook()
        await application.updater.start_polling(poll_interval=0, timeout=1, allowed_updates=Update.ALL_TYPES)
        ready.put(os.getpid())
        await stop.wait()
        await application.updater.stop()
        await application.stop()


class BotProcess:
    """``kind`` ("bot", "echo", "echo-limited") in a child process (the machine's other core),
    as Telegram's bots run elsewhere than Telegram. ``async with`` starts it and waits until it
    serves updates; leaving stops it with SIGTERM (a clean stop)."""

    def __init__(self, kind: str, values: dict[str, Any], *, log_file: Path, profile: Path | None = None) -> None:
        self.kind, self.values, self.log_file, self.profile = kind, values, log_file, profile
        self.pid: int | None = None
        self._process: multiprocessing.process.BaseProcess | None = None

    async def __aenter__(self) -> BotProcess:
        context = multiprocessing.get_context("spawn")
        ready = context.Queue()
        self._process = context.Process(
            target=_serve, args=(self.kind, self.values, str(self.log_file),
                                 str(self.profile) if self.profile else None, ready), daemon=True)
        self._process.start()
        deadline = time.monotonic() + 180
        while True:
            with contextlib.suppress(Exception):
                self.pid = ready.get_nowait()
                break
            if not self._process.is_alive():
                raise RuntimeError(f"the {self.kind} process ended at start (see {self.log_file})")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the {self.kind} process did not start (see {self.log_file})")
            await asyncio.sleep(0.05)
        return self

    async def __aexit__(self, *_exc: object) -> None:
        process = self._process
        if process is None:
            return
        if process.pid is not None and process.is_alive():
            os.kill(process.pid, signal.SIGTERM)
        for _ in range(600):
            if not process.is_alive():
                break
            await asyncio.sleep(0.05)
        if process.is_alive() and process.pid is not None:
            os.kill(process.pid, signal.SIGKILL)
        process.join(5)


# ----------------------------------------------------------------------------- people


class Chats:
    """Wakes the one person a bot action concerns (the emulator's own ``changed`` pulse wakes
    every waiting person at every action: with hundreds waiting, the bench would measure itself)."""

    def __init__(self, emulator: BotApiEmulator) -> None:
        self.emulator = emulator
        self._events: dict[int, asyncio.Event] = {}
        state = emulator.state
        original = state.record

        def record(chat: Any, event: Any) -> None:
            original(chat, event)
            waiting = self._events.get(chat.id)
            if waiting is not None:
                waiting.set()

        state.record = record  # type: ignore[method-assign]

    def event(self, chat_id: int) -> asyncio.Event:
        return self._events.setdefault(chat_id, asyncio.Event())


class Person:
    """One simulated person: each action (a text, a button press) is timed until the reply it
    waits for (so many new messages, or an edit of the message pressed)."""

    patience = 600.0  # a busy machine is slow; the bench measures, it does not judge

    def __init__(self, chats: Chats, user: SimUser, latencies: list[float]) -> None:
        self.user = user
        self.latencies = latencies
        self.actions = 0
        self.off_script = 0  # actions the bot's reply did not allow (see throughput.act)
        self._chat = chats.emulator.state.chats[user.id]
        self._state = chats.emulator.state
        self._changed = chats.event(user.id)
        self._seen = 0  # bot messages handed out

    @property
    def last(self) -> BotMessage:
        return self._chat.bot_messages[-1]

    async def _until(self, condition: Callable[[], bool], what: str) -> None:
        deadline = time.perf_counter() + self.patience
        while not condition():
            self._changed.clear()
            if condition():
                break
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                recent = [m.content[:60] for m in self._chat.bot_messages[-3:]]
                raise TimeoutError(f"{self.user.id}: no {what} within {self.patience} s; last: {recent}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)

    async def say(self, text: str, replies: int = 1) -> BotMessage:
        """Send ``text``; returns the last of the ``replies`` new messages."""
        want = len(self._chat.bot_messages) + replies
        begin = time.perf_counter()
        self._state.send_user_message(self._chat, self.user.person, text)
        self.actions += 1
        await self._until(lambda: len(self._chat.bot_messages) >= want, f"reply to {text[:20]!r}")
        self.latencies.append(time.perf_counter() - begin)
        return self._chat.bot_messages[want - 1]

    async def tap(self, button: str | int, message: BotMessage | None = None, replies: int = 0) -> BotMessage:
        """Press ``button`` of ``message`` (default: the newest); waits for its edit, or for
        ``replies`` new messages (returns the last)."""
        message = message or self.last
        version = message.version
        want = len(self._chat.bot_messages) + replies
        begin = time.perf_counter()
        press(self._state, self._chat, self.user.person, button, message)
        self.actions += 1
        if replies:
            await self._until(lambda: len(self._chat.bot_messages) >= want, f"reply to {button!r}")
            message = self._chat.bot_messages[want - 1]
        else:
            await self._until(lambda: message.version > version, f"edit after {button!r}")
        self.latencies.append(time.perf_counter() - begin)
        return message


def emulator_failures(emulator: BotApiEmulator, since: int) -> tuple[int, int]:
    """429s and other failed calls since index ``since`` of the emulator's failures."""
    failures = emulator.state.failures[since:]
    flood = sum(1 for f in failures if f.status == 429)
    return flood, len(failures) - flood
