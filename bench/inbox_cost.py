"""The durable inbox's cost: the whole bot's throughput with every update stored in the inbox
before it is confirmed (bot.inbox, the production path) and with python-telegram-bot's
in-memory path (updates go straight from getUpdates into ``Application.update_queue``).

The bot runs as in production (``bot.runtime``, long polling, the database, persistence after
every update) against the local Bot API emulator in this process; the load is the one of
``bench/safety_layer.py`` (``clients`` strangers each send ``per_client`` typed messages at
once; each is screened and answered). For the in-memory figure polling is restarted with PTB's
stock ``Updater`` on the Application's own queue (and the inbox consumer stopped).

Run: ``.venv/bin/python bench/inbox_cost.py [clients] [per_client]`` (default 50 × 4);
with ``BENCH_DATABASE_URL`` naming a PostgreSQL server, on a database of its own there
(bench/common.py), else on a temporary SQLite file. The emulator's flood control is off.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from telegram import Update  # noqa: E402
from telegram.ext import Updater  # noqa: E402

from bench.common import NO_FLOOD, bench_database, bot_settings, compare, database_label, make_settings  # noqa: E402
from bench.safety_layer import load  # noqa: E402
from bot.context import UPDATE_CONSUMER_KEY  # noqa: E402
from bot.runtime import start_bot_task  # noqa: E402
from bot.sandbox.emulator import BotApiEmulator  # noqa: E402


async def in_memory(application) -> None:  # type: ignore[no-untyped-def]
    """Stop the inbox (polling into it, its consumer); poll into the Application's queue."""
    consumer = application.bot_data[UPDATE_CONSUMER_KEY]
    await consumer._stop()  # noqa: SLF001 - the bench switches paths in place
    application.updater = Updater(application.bot, application.update_queue)
    await application.updater.initialize()
    await application.updater.start_polling(poll_interval=0, timeout=1, allowed_updates=Update.ALL_TYPES)


async def main(clients: int, per_client: int) -> None:
    async with bench_database() as url:
        # No flood control: the emulator's default 30/s would cap both paths alike.
        async with BotApiEmulator(flood=NO_FLOOD) as emulator:
            settings = make_settings(bot_settings(emulator, url, outbox_rate_per_second=995))
            stop = asyncio.Event()
            task, application = await start_bot_task(settings, stop=stop, timeout=30, poll_timeout=1)
            try:
                results = {}
                for label, first_id in (("warm-up", 3_000_000), ("inbox", 4_000_000)):
                    results[label] = await load(emulator, first_id, clients, per_client)
                await in_memory(application)
                results["in memory"] = await load(emulator, 5_000_000, clients, per_client)
                await application.updater.stop()
            finally:
                stop.set()
                await asyncio.wait_for(task, 30)
    print(f"{clients} people x {per_client} messages, database {database_label(url)}:")
    print(f"  inbox / in memory: {compare(results, 'inbox', 'in memory', clients * per_client):.2f}")


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:3]]
    asyncio.run(main(*(args or [50, 4])))
