"""100,000 clients with daily reminders: tick times, resident memory, start-up time.

Set-up: a fresh database (a temporary SQLite file, or ``BENCH_DATABASE_URL``, an empty
PostgreSQL database) with 100,000 clients, each with a daily reminder at a local time
spread over the day in four time zones. 1,000 of them fall due at one instant, 2,000 at
another, the rest later.

Measured, in this process (the dispatcher with its planner, against the Bot API emulator):

* a tick with nothing due (median of 50): one indexed read of the schedules, one of the
  outbox, whatever their size;
* a tick with 1,000 and with 2,000 reminders due (planned into the outbox, the first
  batch claimed; sending happens after the tick returns): proportional to the rows due
  (goal).

Then a real ``imrs-bot run`` process on that database, 1,000 reminders due a few seconds
after it starts:

* start-up time: from spawning the process to its first getUpdates (goal <= 2 s);
* resident memory (VmRSS, sampled every 50 ms, and the kernel's high-water mark VmHWM)
  while it plans and sends those 1,000 reminders (goal <= 150 MB).

With ``--new-consent-version`` every client's consent is of an earlier version than the
one in content, so the process also queues one notice per client in the background (what a
practice's first start after changing the consent text does).

Run: ``.venv/bin/python bench/reminders_scale.py [clients] [--new-consent-version]``
"""

from __future__ import annotations

import asyncio
import os
import signal
import statistics
import sys
import tempfile
import time
from datetime import datetime, time as dtime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import delete, insert, update  # noqa: E402
from telegram.constants import ParseMode  # noqa: E402
from telegram.ext import Defaults, ExtBot  # noqa: E402

from bot.content import Content  # noqa: E402
from bot.services.consent import ConsentService  # noqa: E402
from bot.services.notices import Notices  # noqa: E402
from bot.crypto.fields import FieldCrypto, new_row_id  # noqa: E402
from bot.crypto.keyring import generate_keyring  # noqa: E402
from bot.crypto.keystore import KeyStore  # noqa: E402
from bot.db.delivery_models import OutboxKind, OutboxMessage, ReminderSchedule  # noqa: E402
from bot.db.engine import create_engine, session_factory  # noqa: E402
from bot.db.migrate import upgrade  # noqa: E402
from bot.db.models import ConsentRecord, Person  # noqa: E402
from bot.db.types import utcnow  # noqa: E402
from bot.delivery.dispatcher import Dispatcher, DispatcherConfig  # noqa: E402
from bot.delivery.outbox import OutboxService  # noqa: E402
from bot.delivery.ratelimit import bot_rate_limiter  # noqa: E402
from bot.delivery.schedules import EVERY_DAY, ScheduleService, first_occurrence, weekdays_mask  # noqa: E402
from bot.delivery.store import OutboxStore  # noqa: E402
from bot.sandbox.emulator import BotApiEmulator, FloodLimits  # noqa: E402

IMRS_BOT = str(Path(sys.executable).parent / "imrs-bot")
ZONES = ("Europe/Amsterdam", "America/New_York", "Asia/Tokyo", "UTC")
FIRST_USER = 2_000_000_001
DAILY = weekdays_mask(EVERY_DAY)
CHUNK = 5000


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


async def populate(sessions, count: int, t0: datetime, due: dict[datetime, int]) -> list[int]:  # type: ignore[no-untyped-def]
    """``count`` clients with daily reminders; ``due[instant] = n`` of them due at instant
    (in UTC at that wall time), the rest spread over the day from ``t0 + 10 min`` on.
    Returns the person ids of the ones due at a given instant, in order."""
    people, consents, schedules, special = [], [], [], []
    instants = [instant for instant, n in due.items() for _ in range(n)]
    for i in range(count):
        person_id = new_row_id()
        zone_name = ZONES[i % len(ZONES)]
        people.append({
            "id": person_id, "telegram_id": FIRST_USER + i, "role": "client", "language": "en",
            "timezone": zone_name, "active": True, "created_at": t0, "updated_at": t0,
        })
        # Clients who consented: the outbox sends nothing to the others.
        consents.append({"person_id": person_id, "consent_version": CONSENT_VERSION, "choice": "granted", "recorded_at": t0})
        if i < len(instants):
            special.append(person_id)
            at, zone, after = instants[i].time(), "UTC", instants[i] - timedelta(seconds=1)
        else:
            minute = (i * 1440 // count) % 1440
            at, zone, after = dtime(minute // 60, minute % 60), zone_name, t0 + timedelta(minutes=10)
        occurrence = first_occurrence(after, DAILY, at, ZoneInfo(zone))
        schedules.append({
            "person_id": person_id, "kind": OutboxKind.REMINDER, "content_key": "outbox.practice_reminder",
            "weekdays": DAILY, "local_time": at, "timezone": zone, "grace_minutes": 60, "active": True,
            "next_due_at": occurrence.due_at, "next_local_date": occurrence.local_date,
            "created_at": t0, "updated_at": t0,
        })
    async with sessions.begin() as session:
        await session.execute(delete(OutboxMessage))
        await session.execute(delete(ReminderSchedule))
        await session.execute(delete(ConsentRecord))
        await session.execute(delete(Person))
        for start in range(0, count, CHUNK):
            await session.execute(insert(Person.__table__), people[start : start + CHUNK])
        for start in range(0, count, CHUNK):
            await session.execute(insert(ConsentRecord.__table__), consents[start : start + CHUNK])
        for start in range(0, count, CHUNK):
            await session.execute(insert(ReminderSchedule.__table__), schedules[start : start + CHUNK])
    return special


# The consent every client gave: the current text's version, or (--new-consent-version) an
# earlier one, so that the bot queues a notice to each of them as it starts.
CONSENT_VERSION = "2000-01-1" if "--new-consent-version" in sys.argv else Content().text("consent.version")


def rss_kb(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process, in kB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0])
    return values.get("VmRSS", 0), values.get("VmHWM", 0)


async def bench(count: int) -> None:
    t0 = utcnow().replace(microsecond=0) + timedelta(days=1)  # a future day: nothing real is due
    d1, d2 = t0 + timedelta(minutes=1), t0 + timedelta(minutes=2)
    emulator = BotApiEmulator(flood=FloodLimits(overall_per_second=None))
    await emulator.start()
    with tempfile.TemporaryDirectory() as tmp:
        url = os.environ.get("BENCH_DATABASE_URL") or f"sqlite:///{tmp}/bench.sqlite3"
        await upgrade(url)
        engine = create_engine(url)
        keyring = generate_keyring()
        keystore = await KeyStore.open(f"sqlite:///{tmp}/keystore.sqlite3", keyring)
        crypto = FieldCrypto(keystore)
        sessions = crypto.attach(session_factory(engine))
        started = time.perf_counter()
        special = await populate(sessions, count, t0, {d1: 1000, d2: 2000})
        print(f"database                       {'PostgreSQL' if url.startswith('postgres') else 'SQLite'}")
        print(f"consent version of the clients {CONSENT_VERSION} (the text in content: {Content().text('consent.version')})")
        print(f"clients with daily reminders   {count:,} (created in {time.perf_counter() - started:.1f} s)")
        for i in range(len(special)):
            emulator.state.chats[emulator.user(FIRST_USER + i).id].reachable = True

        clock = Clock(t0)
        outbox = OutboxService(sessions, clock=clock)
        planner = ScheduleService(sessions, outbox, clock=clock)
        bot = ExtBot(emulator.token, base_url=emulator.base_url,
                     defaults=Defaults(parse_mode=ParseMode.HTML, protect_content=True),
                     rate_limiter=bot_rate_limiter(25, max_retries=3))
        await bot.initialize()
        # As in production (bot.delivery.start_delivery): consent checked when planning and sending.
        may_receive = ConsentService(sessions, Content(), Notices(outbox, Content())).may_receive
        dispatcher = Dispatcher(bot, OutboxStore(sessions, crypto), Content(), config=DispatcherConfig(),
                                planner=planner, clock=clock, may_receive=may_receive)
        dispatcher.start()

        idle_ticks = []
        for _ in range(50):
            tick_started = time.perf_counter()
            await dispatcher.tick()
            idle_ticks.append(time.perf_counter() - tick_started)
        figures = {"none due (median of 50)": statistics.median(idle_ticks)}
        for instant, label in ((d1, "1,000 due"), (d2, "2,000 due")):
            clock.now = instant
            tick_started = time.perf_counter()
            await dispatcher.tick()
            figures[label] = time.perf_counter() - tick_started
            await dispatcher.stop()  # sending them is not part of the tick
            dispatcher = Dispatcher(bot, OutboxStore(sessions, crypto), Content(), config=DispatcherConfig(),
                                    planner=planner, clock=clock, may_receive=may_receive)
            dispatcher.start()
        await dispatcher.stop()
        await bot.shutdown()
        for label, seconds in figures.items():
            print(f"tick, {label:<24} {seconds * 1000:8.1f} ms")
        per_row = (figures["2,000 due"] - figures["1,000 due"]) / 1000
        print(f"  marginal cost per due row    {per_row * 1e6:8.0f} µs (2,000 vs 1,000)")

        # A real process: 1,000 reminders due shortly after it starts.
        async with sessions.begin() as session:
            await session.execute(delete(OutboxMessage))
            soon = utcnow() + timedelta(seconds=4)
            await session.execute(
                update(ReminderSchedule)
                .where(ReminderSchedule.person_id.in_(special[:1000]))
                .values(next_due_at=soon)
            )
        await engine.dispose()
        await keystore.close()

        env = {k: v for k, v in os.environ.items() if not k.startswith(("TELEGRAM_", "DATABASE_URL", "IMRS_"))}
        env.update({
            "TELEGRAM_BOT_TOKEN": emulator.token, "TELEGRAM_API_BASE_URL": emulator.base_url,
            "TELEGRAM_API_FILE_URL": emulator.base_file_url, "DATABASE_URL": url,
            "IMRS_KEYS": keyring.to_json(), "IMRS_KEYSTORE_URL": f"sqlite:///{tmp}/keystore.sqlite3",
            "OUTBOX_RATE_PER_SECOND": "200", "LOG_LEVEL": "WARNING",
        })
        calls_before = len(emulator.calls)
        spawned = time.perf_counter()
        process = await asyncio.create_subprocess_exec(
            IMRS_BOT, "run", cwd=tmp, env=env, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )
        startup = None
        peak_rss = 0
        delivered = 0
        due_users = [emulator.users[FIRST_USER + i] for i in range(1000)]
        deadline = spawned + 60
        while time.perf_counter() < deadline:
            if startup is None and any(c.method == "getUpdates" for c in emulator.calls[calls_before:]):
                startup = time.perf_counter() - spawned
            if process.returncode is not None:
                break
            peak_rss = max(peak_rss, rss_kb(process.pid)[0])
            delivered = sum(1 for user in due_users if user.messages)
            if delivered == 1000:
                break
            await asyncio.sleep(0.05)
        hwm = rss_kb(process.pid)[1] if process.returncode is None else 0
        process.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(process.communicate(), 30)
        await emulator.stop()
    print(f"imrs-bot run: start-up         {startup:.2f} s to the first getUpdates   (goal <= 2 s)"
          if startup is not None else "imrs-bot run: never polled")
    print(f"imrs-bot run: reminders sent   {delivered:,} of 1,000 due after start")
    print(f"imrs-bot run: resident memory  {peak_rss / 1024:.0f} MB peak sampled, "
          f"{hwm / 1024:.0f} MB high-water mark   (goal <= 150 MB)")
    if process.returncode not in (0, -signal.SIGTERM):
        print(f"imrs-bot run exited with {process.returncode}: {err.decode()[-2000:]}")


if __name__ == "__main__":
    arguments = [a for a in sys.argv[1:] if not a.startswith("--")]
    asyncio.run(bench(int(arguments[0]) if arguments else 100_000))
