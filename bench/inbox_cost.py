"""The durable inbox's cost: the whole bot's throughput with every update stored in the inbox
before it is confirmed (bot.inbox, the production path) and with python-telegram-bot's
in-memory path (updates go straight from getUpdates into ``Application.update_queue``).

The bot runs as in production (``bot.runtime``, long polling, the database, persistence after
every update) against the local Bot API emulator in this process; the load is the one of
``bench/safety_layer.py`` (``clients`` strangers each send ``per_client`` typed messages at
once; each is screened and answered). For the in-memory figure polling is restarted with PTB's
stock ``Updater`` on the Application's own queue (and the inbox consumer stopped).

Run: ``.venv/bin/python bench/inbox_cost.py [clients] [per_client]`` (default 50 × 4);
``BENCH_DATABASE_URL`` for PostgreSQL (an empty database), else a temporary SQLite file.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from telegram import Update  # noqa: E402
from telegram.ext import Updater  # noqa: E402

from bot.config import Settings  # noqa: E402
from bot.context import UPDATE_CONSUMER_KEY  # noqa: E402
from bot.crypto.keyring import generate_keyring  # noqa: E402
from bot.db.engine import is_sqlite  # noqa: E402
from bot.db.migrate import upgrade  # noqa: E402
from bot.runtime import start_bot_task  # noqa: E402
from bot.sandbox.emulator import BotApiEmulator  # noqa: E402
from safety_layer import load, percentile  # noqa: E402


async def in_memory(application) -> None:  # type: ignore[no-untyped-def]
    """Stop the inbox (polling into it, its consumer); poll into the Application's queue."""
    consumer = application.bot_data[UPDATE_CONSUMER_KEY]
    await consumer._stop()  # noqa: SLF001 - the bench switches paths in place
    application.updater = Updater(application.bot, application.update_queue)
    await application.updater.initialize()
    await application.updater.start_polling(poll_interval=0, timeout=1, allowed_updates=Update.ALL_TYPES)


async def main(clients: int, per_client: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        url = os.environ.get("BENCH_DATABASE_URL") or f"sqlite:///{folder}/bench.sqlite3"
        if not is_sqlite(url):
            await upgrade(url)
        async with BotApiEmulator() as emulator:
            settings = Settings(
                _env_file=None,  # type: ignore[call-arg]
                telegram_bot_token=emulator.token,
                telegram_api_base_url=emulator.base_url,
                telegram_api_file_url=emulator.base_file_url,
                database_url=url,
                imrs_keys=generate_keyring().to_json(),
                outbox_rate_per_second=995,
            )
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
    total = clients * per_client
    print(f"{clients} people x {per_client} messages, database {'SQLite' if is_sqlite(url) else 'PostgreSQL'}:")
    rates = {}
    for label in ("inbox", "in memory"):
        seconds, latencies = results[label]
        rates[label] = total / seconds
        print(
            f"  {label:9}: {rates[label]:6.1f} updates/s, reply p50 {statistics.median(latencies) * 1000:.0f} ms, "
            f"p95 {percentile(latencies, 0.95) * 1000:.0f} ms"
        )
    print(f"  inbox / in memory: {rates['inbox'] / rates['in memory']:.2f}")


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:3]]
    asyncio.run(main(*(args or [50, 4])))
