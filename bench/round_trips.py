"""Database round trips per processed update (issue 16): SQL statements, transaction commands
(SQLAlchemy's begin, commit, rollback, savepoint events; on PostgreSQL also the BEGIN, COMMIT,
ROLLBACK, SAVEPOINT commands psycopg sends, and the pool's pings) and, on SQLite, hand-overs to aiosqlite's thread, each
grouped by where it comes from (the innermost stack frame in bot/ or handlers/ outside bot/db/,
and the inbox consumer's step that led to it).

The bot runs in this process as ``imrs-bot run`` serves it (bot.runtime, long polling, the inbox,
persistence) against the project's Bot API emulator, with enrolled clients going through
bench/throughput.py's mix (menus, /learn, stray text, a grounding exercise, check-in steps),
the outbox rate lifted. Counted: everything the database sees while the clients act (the inbox's
receive and read, the consumer's updates, the outbox delivering the replies), divided by the
updates the clients sent.

Run: ``.venv/bin/python bench/round_trips.py [clients] [steps] [--top N]`` (default 40 × 23: every
step of the mix once); with ``BENCH_DATABASE_URL`` naming a PostgreSQL server on a database of
its own there (bench/common.py), else on a temporary SQLite file.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import sys
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiosqlite.core  # noqa: E402
import greenlet  # noqa: E402
from sqlalchemy import event  # noqa: E402
from sqlalchemy.engine import Engine  # noqa: E402
from sqlalchemy.pool import Pool  # noqa: E402

from bench.common import NO_FLOOD, Chats, Person, bench_database, bot_settings, database_label, make_settings  # noqa: E402
from bench.throughput import act, enrol, mix  # noqa: E402
from bot.runtime import start_bot_task  # noqa: E402
from bot.sandbox.emulator import BotApiEmulator  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
OURS = (str(ROOT / "bot") + "/", str(ROOT / "handlers") + "/")
PLUMBING = (str(ROOT / "bot" / "db") + "/",)


class Counter:
    def __init__(self) -> None:
        self.on = False
        self.kinds: collections.Counter[str] = collections.Counter()
        self.where: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)

    def note(self, kind: str) -> None:
        if not self.on:
            return
        self.kinds[kind] += 1
        self.where[kind][_origin()] += 1


def _frames() -> list[traceback.FrameSummary]:
    """The stack, and where it runs inside SQLAlchemy's greenlet, the awaiting task's too."""
    frames = traceback.extract_stack()
    current = greenlet.getcurrent()
    if current.parent is not None and current.parent.gr_frame is not None:
        frames = traceback.extract_stack(current.parent.gr_frame) + frames
    return frames


def _origin() -> str:
    ours = [f for f in _frames() if f.filename.startswith(OURS) and not f.filename.endswith("round_trips.py")]
    inner = [f for f in ours if not f.filename.startswith(PLUMBING)]
    def name(f: traceback.FrameSummary) -> str:
        return f"{Path(f.filename).relative_to(ROOT)}:{f.name}"
    if not ours:
        return "(outside bot/, handlers/)"
    chain = [name(f) for f in (inner or ours)[-3:]]
    return " < ".join(reversed(chain))


COUNTER = Counter()


def install() -> None:
    event.listen(Engine, "before_cursor_execute", lambda *a, **k: COUNTER.note("statement"))
    for kind in ("begin", "commit", "rollback", "savepoint", "rollback_savepoint", "release_savepoint"):
        event.listen(Engine, kind, (lambda k: lambda *a, **kw: COUNTER.note(k))(kind))
    event.listen(Pool, "checkout", lambda *a, **k: COUNTER.note("pool checkout"))
    from sqlalchemy.dialects.postgresql._psycopg_common import _PGDialect_common_psycopg as psycopg_dialect

    do_ping = psycopg_dialect.do_ping

    def counted_ping(self: Any, dbapi_connection: Any) -> bool:
        COUNTER.note("ping (SELECT 1)")
        return do_ping(self, dbapi_connection)

    psycopg_dialect.do_ping = counted_ping  # type: ignore[method-assign]

    # What psycopg itself sends besides statements: BEGIN (before a transaction's first
    # statement), COMMIT, ROLLBACK (only when a transaction is open), SAVEPOINT...
    from psycopg._connection_base import BaseConnection

    exec_command = BaseConnection._exec_command

    def counted_command(self: Any, command: Any, *args: Any, **kwargs: Any) -> Any:
        word = command.split()[0].decode() if isinstance(command, bytes) else type(command).__name__
        COUNTER.note(f"psycopg {word}")
        return exec_command(self, command, *args, **kwargs)

    BaseConnection._exec_command = counted_command  # type: ignore[method-assign]
    original = aiosqlite.core.Connection._execute

    async def counted(self: Any, fn: Any, *args: Any, **kwargs: Any) -> Any:
        COUNTER.note("aiosqlite hand-over")
        return await original(self, fn, *args, **kwargs)

    aiosqlite.core.Connection._execute = counted  # type: ignore[method-assign]


async def main(clients: int, steps: int, top: int) -> None:
    install()
    async with bench_database() as url:
        async with BotApiEmulator(flood=NO_FLOOD) as emulator:
            values = bot_settings(emulator, url, outbox_rate_per_second=995)
            warm, first = list(range(5_000_000, 5_000_010)), 6_000_000
            ids = [first + n for n in range(clients)]
            await enrol(values, warm + ids)
            stop = asyncio.Event()
            task, _application = await start_bot_task(make_settings(values), stop=stop, timeout=60, poll_timeout=1)
            chats = Chats(emulator)
            try:
                latencies: list[float] = []
                episodes = mix()
                people = [Person(chats, emulator.user(i, first_name="C"), latencies) for i in warm]
                await asyncio.gather(*(act(p, episodes, n, 23) for n, p in enumerate(people)))
                await asyncio.sleep(1.0)
                COUNTER.on = True
                people = [Person(chats, emulator.user(i, first_name="C"), latencies) for i in ids]
                await asyncio.gather(*(act(p, episodes, n, steps) for n, p in enumerate(people)))
                await asyncio.sleep(1.5)  # the last rows marked, the last replies delivered
                COUNTER.on = False
                updates = sum(p.actions for p in people)
                off = sum(p.off_script for p in people)
            finally:
                stop.set()
                await asyncio.wait_for(task, 60)
    print(f"{database_label(url)}: {clients} clients x {steps} actions = {updates} updates"
          + (f" ({off} off script)" if off else ""))
    for kind, count in COUNTER.kinds.most_common():
        print(f"  {kind:<22} {count / updates:6.2f} per update")
    for kind, where in COUNTER.where.items():
        print(f" {kind}, per update, by origin:")
        for origin, count in where.most_common(top):
            print(f"  {count / updates:6.2f}  {origin}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("clients", type=int, nargs="?", default=40)
    parser.add_argument("steps", type=int, nargs="?", default=23)
    parser.add_argument("--top", type=int, default=25)
    options = parser.parse_args()
    asyncio.run(main(options.clients, options.steps, options.top))
