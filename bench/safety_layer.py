"""The safety layer's cost, in one run: the detector per message, and the whole bot's
throughput on typed messages with the layer on and with it off.

The bot runs as in production (``bot.runtime``: python-telegram-bot's HTTP client, long
polling, the database, persistence after every update) against the local Bot API emulator in
this process. ``clients`` people (not enrolled, so every message is screened and answered by
the stray-text reply) each send ``per_client`` everyday messages at once; the figure is
updates answered per second, from the first send to the last reply, and the p50 / p95 time
from a message to its reply. The layer is then removed from the application
(``handlers.safety.screening``'s group) and the same load is sent by new people. The bot-wide
rate limit is lifted (OUTBOX_RATE_PER_SECOND=995) so that the bot's own processing is
measured, not Telegram's cap (the emulator's flood control is off too).

Run: ``.venv/bin/python bench/safety_layer.py [clients] [per_client]`` (default 50 × 4);
a temporary SQLite file, or with ``BENCH_DATABASE_URL`` a PostgreSQL database created on that
server and dropped at the end.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (  # noqa: E402
    NO_FLOOD, bench_database, bot_settings, compare, database_label, make_settings, percentile,
)
from bot.runtime import start_bot_task  # noqa: E402
from bot.safety import SafetyDetector  # noqa: E402
from bot.sandbox.emulator import BotApiEmulator  # noqa: E402

MESSAGES = [
    "I had a long day at work and I feel tired",
    "what should I expect at my next appointment?",
    "ik heb vandaag goed geoefend, dank je",
    "I paused the muscle exercise because my shoulder hurt",
    "this traffic is killing me",
    "kan ik mijn oefenmelding op negen uur zetten?",
]


async def load(emulator: BotApiEmulator, first_id: int, clients: int, per_client: int) -> tuple[float, list[float]]:
    users = [emulator.user(first_id + n, first_name=f"B{n}") for n in range(clients)]
    sent: dict[tuple[int, int], float] = {}
    latencies: list[float] = []
    start = time.perf_counter()
    for round_ in range(per_client):
        for user in users:
            sent[(user.id, round_)] = time.perf_counter()
            await user.send(MESSAGES[(user.id + round_) % len(MESSAGES)])
    expected = clients * per_client
    deadline = time.perf_counter() + 300
    seen = {user.id: 0 for user in users}
    while sum(seen.values()) < expected:
        if time.perf_counter() > deadline:
            raise TimeoutError(f"{sum(seen.values())} of {expected} replies")
        for user in users:
            while seen[user.id] < min(len(user.messages), per_client):
                latencies.append(time.perf_counter() - sent[(user.id, seen[user.id])])
                seen[user.id] += 1
        await asyncio.sleep(0.005)
    return time.perf_counter() - start, latencies


async def main(clients: int, per_client: int) -> None:
    detector = SafetyDetector.from_content()
    costs = []
    for _ in range(200):
        for message in MESSAGES:
            begin = time.perf_counter()
            detector.classify(message)
            costs.append(time.perf_counter() - begin)
    print(f"detector per message: p50 {percentile(costs, 0.5) * 1e6:.0f} us, p95 {percentile(costs, 0.95) * 1e6:.0f} us")

    async with bench_database() as url:
        async with BotApiEmulator(flood=NO_FLOOD) as emulator:
            settings = make_settings(bot_settings(emulator, url, outbox_rate_per_second=995))
            stop = asyncio.Event()
            task, application = await start_bot_task(settings, stop=stop, timeout=30, poll_timeout=1)
            try:
                from handlers import SAFETY

                results = {}
                for label, first_id in (("warm-up", 3_000_000), ("layer on", 4_000_000)):
                    results[label] = await load(emulator, first_id, clients, per_client)
                screening = list(application.handlers[SAFETY])
                for handler in screening:
                    application.remove_handler(handler, group=SAFETY)
                results["layer off"] = await load(emulator, 5_000_000, clients, per_client)
            finally:
                stop.set()
                await asyncio.wait_for(task, 30)
    total = clients * per_client
    print(f"{clients} people x {per_client} messages, database {database_label(url)}:")
    print(f"  on / off: {compare(results, 'layer on', 'layer off', total):.2f}")


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:3]]
    asyncio.run(main(*(args or [50, 4])))
