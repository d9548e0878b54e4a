"""Outbox throughput: N recipients (default 10,000) at a configured cap (default 200 msg/s).

Everything is real except Telegram: the dispatcher (ticked every OUTBOX_TICK_SECONDS, as the
JobQueue does), python-telegram-bot's HTTP client with the project's rate limiter, the
database, and the Bot API emulator enforcing Telegram-style flood limits *at the cap* (overall
200/s with a burst of 30, 1/s per chat). Printed:

* achieved rate / cap, over the span from the first to the last send (goal >= 0.95);
* 429s the emulator answered (goal 0: the pacer must keep under the limit, not rely on
  retries), and whether every recipient got exactly one message.

The emulator runs in a child process (the machine's second core), as Telegram would be
elsewhere. Database: a temporary SQLite file, or with ``BENCH_DATABASE_URL`` (e.g.
``postgresql://postgres@127.0.0.1:5432/test``) a PostgreSQL database created on that server
and dropped at the end.

``--broadcast``: the same rows made by one staff broadcast (bot.services.broadcasts) to every
recipient instead: queued by the service on the dispatcher's tick (batches, due times spread
ahead of the cap), each text read at send time; its progress figures are printed at the end.
Replies to clients chatting meanwhile: ``bench/throughput.py --broadcast``.

Run: ``.venv/bin/python bench/outbox_rate.py [recipients] [cap] [--broadcast]``
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp  # noqa: E402
from sqlalchemy import insert  # noqa: E402
from telegram.constants import ParseMode  # noqa: E402
from telegram.ext import Defaults, ExtBot  # noqa: E402

from bench.common import bench_database  # noqa: E402
from bot.content import Content  # noqa: E402
from bot.crypto.fields import FieldCrypto, new_row_id  # noqa: E402
from bot.crypto.keyring import generate_keyring  # noqa: E402
from bot.crypto.keystore import KeyStore  # noqa: E402
from bot.db.delivery_models import OutboxKind  # noqa: E402
from bot.db.engine import create_engine, session_factory  # noqa: E402
from bot.db.models import Person, Role  # noqa: E402
from bot.db.types import utcnow  # noqa: E402
from bot.delivery.dispatcher import Dispatcher, DispatcherConfig  # noqa: E402
from bot.delivery.outbox import OutboxService, PlainMessage  # noqa: E402
from bot.delivery.ratelimit import bot_rate_limiter  # noqa: E402
from bot.delivery.store import OutboxStore  # noqa: E402
from bot.services.broadcasts import Audience, BroadcastService  # noqa: E402
from bot.services.people import Identity  # noqa: E402

FIRST_USER = 1_000_000_001


def run_emulator(count: int, cap: float, ready: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    """The child process: an emulator with ``count`` reachable people, limits at the cap."""
    from aiohttp import web

    from bot.sandbox.emulator import BotApiEmulator, FloodLimits

    async def main() -> None:
        emulator = BotApiEmulator(
            flood=FloodLimits(overall_per_second=cap, overall_burst=30, per_chat_per_second=1, per_chat_burst=1)
        )
        await emulator.start()
        for i in range(count):
            user = emulator.user(FIRST_USER + i)
            emulator.state.chats[user.id].reachable = True

        async def report(_request: web.Request) -> web.Response:
            sends = [c for c in emulator.calls if c.method == "sendMessage"]
            per_chat: dict[int, int] = {}
            for call in sends:
                per_chat[int(call.params["chat_id"])] = per_chat.get(int(call.params["chat_id"]), 0) + 1
            delivered = sum(len(u.messages) for u in emulator.users.values())
            return web.json_response({
                "calls": len(sends),
                "delivered": delivered,
                "recipients_reached": sum(1 for u in emulator.users.values() if u.messages),
                "max_per_chat": max((len(u.messages) for u in emulator.users.values()), default=0),
                "status_429": sum(1 for f in emulator.failures if f.status == 429),
                "other_failures": sum(1 for f in emulator.failures if f.status != 429),
            })

        app = web.Application()
        app.router.add_get("/report", report)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        report_port = runner.addresses[0][1]
        ready.put((emulator.token, emulator.base_url, report_port))
        await asyncio.Event().wait()

    asyncio.run(main())


async def bench(count: int, cap: float, broadcast: bool = False) -> None:
    ready: multiprocessing.Queue = multiprocessing.Queue()  # type: ignore[type-arg]
    child = multiprocessing.Process(target=run_emulator, args=(count, cap, ready), daemon=True)
    child.start()
    token, base_url, report_port = ready.get(timeout=120)

    with tempfile.TemporaryDirectory() as tmp:
        async with bench_database() as url:
            engine = create_engine(url)
            keystore = await KeyStore.open(f"sqlite:///{tmp}/keystore.sqlite3", generate_keyring())
            sessions = FieldCrypto(keystore).attach(session_factory(engine))
            now = utcnow()
            people = [
                {"id": new_row_id(), "telegram_id": FIRST_USER + i, "role": "client", "language": "en",
                 "timezone": "Europe/Amsterdam", "active": True, "created_at": now, "updated_at": now}
                for i in range(count)
            ]
            async with sessions.begin() as session:
                for start in range(0, count, 1000):
                    await session.execute(insert(Person.__table__), people[start : start + 1000])
            outbox = OutboxService(sessions)
            broadcasts: BroadcastService | None = None
            t = time.perf_counter()
            if broadcast:
                async with sessions.begin() as session:
                    staff = Person(telegram_id=FIRST_USER - 1, role=Role.STAFF, language="en", timezone="Europe/Amsterdam")
                    session.add(staff)
                    await session.flush()
                    actor = Identity(staff.telegram_id, "Desk", Role.STAFF, staff.id, "en", "Europe/Amsterdam")

                async def everyone(ids: set[int]) -> set[int]:
                    return ids  # consent is the outbox's check at send time, not measured here

                broadcasts = BroadcastService(sessions, outbox=outbox, content=Content(), may_receive=everyone,
                                              rate_per_second=cap)
                view, _ = await broadcasts.send(actor, await broadcasts.draft(actor, "A calm evening"), Audience("all"))
                await broadcasts.plan()  # what the dispatcher's tick does: start it and queue every row
                queued = (await broadcasts.progress(view.id)).queued
            else:
                queued = await outbox.enqueue_many(
                    PlainMessage(p["id"], OutboxKind.BROADCAST, f"bench:{p['id']}", now, "outbox.practice_reminder")
                    for p in people
                )
            enqueue_seconds = time.perf_counter() - t

            bot = ExtBot(
                token, base_url=base_url,
                defaults=Defaults(parse_mode=ParseMode.HTML, protect_content=True),
                rate_limiter=bot_rate_limiter(cap, max_retries=3),
            )
            await bot.initialize()
            config = DispatcherConfig(rate_per_second=cap, tick_seconds=1.0)
            dispatcher = Dispatcher(bot, OutboxStore(sessions, FieldCrypto(keystore)), Content(), config=config,
                                    broadcasts=broadcasts)
            dispatcher.start()

            marks: dict[str, float] = {}

            async def watch() -> None:
                """When the first and the last message were sent (polled every 5 ms)."""
                while dispatcher.stats.sent + dispatcher.stats.failed + dispatcher.stats.dead < queued:
                    if "first" not in marks and dispatcher.stats.sent:
                        marks["first"] = time.perf_counter()
                    await asyncio.sleep(0.005)
                marks["last"] = time.perf_counter()

            watcher = asyncio.create_task(watch())
            started = time.perf_counter()
            while not watcher.done():  # what the JobQueue does: tick every OUTBOX_TICK_SECONDS
                await dispatcher.tick()
                await asyncio.sleep(config.tick_seconds)
                if time.perf_counter() - started > count / cap * 3 + 60:
                    print("gave up waiting", dispatcher.stats)
                    watcher.cancel()
                    break
            await dispatcher.idle()
            figures = None
            if broadcasts is not None:
                await dispatcher.tick()  # closes the broadcast
                figures = await broadcasts.progress(view.id)
            await dispatcher.stop()
            await bot.shutdown()

            async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{report_port}/report") as response:
                report = json.loads(await response.text())
            await engine.dispose()
            await keystore.close()
    child.kill()

    elapsed = marks.get("last", time.perf_counter()) - marks.get("first", started)
    achieved = (report["delivered"] - 1) / max(elapsed, 1e-9)
    print(f"database                     {'PostgreSQL' if url.startswith('postgres') else 'SQLite'}")
    print(f"recipients                   {count:,} (queued in {enqueue_seconds:.2f} s)")
    print(f"cap                          {cap:.0f} messages/s (emulator limits: {cap:.0f}/s overall, 1/s per chat)")
    print(f"elapsed                      {elapsed:.1f} s")
    print(f"achieved rate                {achieved:.1f} messages/s")
    print(f"achieved / cap               {achieved / cap:.3f}   (goal >= 0.95)")
    print(f"429s answered by emulator    {report['status_429']}   (goal 0)")
    print(f"other failures               {report['other_failures']}")
    print(f"recipients reached           {report['recipients_reached']:,} of {count:,} "
          f"(max {report['max_per_chat']} per chat)")
    print(f"dispatcher                   {dispatcher.stats}")
    if figures is not None:
        print(f"broadcast progress           {figures}")


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--broadcast"]
    recipients = int(args[0]) if args else 10_000
    cap = float(args[1]) if len(args) > 1 else 200.0
    asyncio.run(bench(recipients, cap, broadcast="--broadcast" in sys.argv[1:]))
