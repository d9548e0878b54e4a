"""Many clients with daily reminders: start-up time, a tick with 10,000 due, resident memory.

Set-up (not measured against a goal): a fresh database (a temporary SQLite file, or with
``BENCH_DATABASE_URL`` two new PostgreSQL databases on that server, ``bench_scale_<pid>``
for the data and ``bench_scale_<pid>_keys`` for the key store, both dropped at the end)
with ``clients`` clients (default 100,000), each as the bot stores one: a person row
whose alias is encrypted under their own data key, that data key wrapped under the
keyring in the key store, a consent record, and a daily reminder at a local time spread
over the day in four time zones. 1,000 of them fall due at one instant, 10,000 at
another, the rest later. Rows are written with COPY (PostgreSQL) or multi-row INSERTs
(SQLite) a chunk at a time; PostgreSQL then gets an ANALYZE, as autovacuum would soon.

Measured, in a separate process that holds none of the set-up data (this script with
``--child``: the real ``imrs-bot run`` path, ``bot.runtime.run_bot`` polling the Bot API
emulator that runs here):

* start-up: from spawning the process to the bot consuming updates (goal <= 2 s), and the
  CPU time the process used to get there;
* a tick with nothing due (median of 20), with 1,000 and with 10,000 reminders due: the
  dispatcher's own ``tick`` (its JobQueue job is removed first), which plans the due
  reminders into the outbox and claims the first batch; sending happens after the tick
  returns and is not measured here (bench/outbox_rate.py). Goal: 10,000 due <= 1 s.
  Printed with the CPU time it took in the bot process and, on PostgreSQL (a server on
  this machine), in the server processes serving the database (from /proc): on a shared
  machine the wall time mostly measures the others, the CPU time the work. Then how many
  outbox rows the tick planned, and if it left some for later ticks, how many ticks and
  how much tick time all of them took;
* resident memory of that process: VmRSS sampled here every 50 ms from spawn to exit and
  the kernel's high-water mark VmHWM (goal <= 200 MB).

With ``--new-consent-version`` every client's consent is of an earlier version than the
one in content, so the bot also queues one notice per client in the background at start
(what a practice's first start after changing the consent text does); the ticks are
measured after that job ends (it also runs, and is timed, without the option: the check
finds nobody). ``--profile=FILE`` writes cProfile statistics of the 10,000 tick.
``--keep=FILE`` (PostgreSQL) leaves the databases in place and describes them in FILE;
``--reuse=FILE`` measures again on them (the outbox emptied, the 11,000 reminders made due
again, VACUUM ANALYZE), dropping them afterwards unless ``--keep`` is given too.

Run::

    .venv/bin/python bench/reminders_scale.py 100000
    BENCH_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/test \\
        .venv/bin/python bench/reminders_scale.py 1000000

Figures after issue #16 (branch scale-tick), 2026-12-02 17:04-17:06 UTC: the same kept
1,000,000-client PostgreSQL databases (--reuse), main (e8892dc) and this code alternately,
three runs each, while other engineers' test suites and benches ran (load average 3.2-5.7):

                           main e8892dc                      this code
    start-up, CPU          2.54 / 2.20 / 1.63 s              2.02 / 1.50 / 1.23 s
    start-up, wall         4.79 / 5.41 / 3.37 s              3.13 / 5.29 / 1.79 s
    tick, 10,000 due,      399+640 / 322+570 / 347+630 ms    175+590 / 189+580 / 125+420 ms
      CPU bot+PostgreSQL
    tick, 10,000 due, wall 1,855 / 2,579 / 2,296 ms          1,563 / 2,866 / 989 ms
    tick, 1,000 due, wall  185 / 264 / 140 ms                227 / 261 / 164 ms
    resident memory        132-133 MB                        119 MB

The wall times follow the load, not the code (the same code's 10,000 tick took 0.8-2.9 s
within minutes); the CPU is the work: about 0.75 of main's for both the start-up and the
tick (the bot's part of the tick about half). main's PostgreSQL figure leaves out its
consent check's parallel workers (they exit before the second sample), so it understates
what this code saves there. Earlier the same afternoon, three runs of this code at load
3.2-3.5: start-up 1.75 / 1.80 / 1.41 s (1.66 / 1.66 / 1.30 s CPU); 10,000 due 855 / 790 /
1,047 ms (CPU 207+580 / 189+560 / 198+560 ms). What changed: the consent check of the
planned recipients (one query, one index probe per person, instead of a window over their
decisions that PostgreSQL ran as a scan of all of consent_records, plus a query for their
roles); full garbage collections no longer walk the objects the imports made (gc.freeze
in ``imrs-bot run``: a 0.1-0.2 s pause that fell in the tick); and at start no Alembic
when the schemas are at head, no trio (httpcore's probe), no eval of the models'
annotations, no segno.

Earlier figures (main before issue #16), 2026-12-02, 2 CPU cores shared with five other engineers' test runs: the load
average was 10-15 most of the day, so most wall times here are several times what the
work alone takes; the CPU times are the comparable figures.

    1,000,000 clients, PostgreSQL 15 (data 543 MB, key store 171 MB), final code: a run from
    scratch with the command above (set up in 311 s, load ~9), then --reuse on the same
    databases while the machine was briefly quiet (load ~4):
                           from scratch                   again, quiet machine
    start-up               7.14 s (2.23 s CPU)            2.25 s (2.19 s CPU)
    tick, none due         31.5 ms                        8.0 ms
    tick, 1,000 due        395 ms (CPU 56 + 70 ms)        140 ms (CPU 55 + 90 ms)
    tick, 10,000 due       2,848 ms (CPU 353 + 660 ms)    1,063 ms (CPU 365 + 640 ms)
    resident memory        132 MB (VmHWM 132 MB)          132 MB (VmHWM 132 MB)
    (CPU: bot + PostgreSQL; all 10,000 planned by the one tick, 50 claimed.) The bot's
    consent-version check, in the background after start: 7.1 s and 2.2 s.
    Earlier runs of the same code at load 13-15 (two on kept databases, one from scratch):
    start-up 18.16 / 9.85 / 10.81 s (2.81 / 2.31 / 2.01 s CPU); 10,000 due 4,052 / 3,753 /
    3,764 ms (CPU 246 + 720 / 357 + 620 / 328 + 580 ms); 132 MB each time.

    The same on main (884d0ab), before the planner change (load ~13): the 10,000 tick
    planned 2,000 in 3,548 ms (CPU 552 + 290 ms), all 10,000 after 5 ticks and 26,686 ms
    of tick time; 1,000 due 2,184 ms (CPU 366 + 150 ms).

    100,000 clients, SQLite (data 52 MB, key store 16 MB; set up in 144 s; load ~13):
    start-up 14.80 s (2.17 s CPU); tick, none due 3.1 ms; 1,000 due 606 ms (CPU 84 ms);
    10,000 due 5,933 ms (CPU 753 ms, the database's work included); memory 147 MB.

    Against the goals: memory is met (132 MB). The 10,000 tick takes about 1.0 s of CPU
    (bot, then server) and 1.06 s on the quiet machine: just over the goal. Start-up needs
    2.0-2.8 s of CPU, most of it importing (python-telegram-bot, SQLAlchemy, pydantic,
    alembic for the schema checks) and compiling the safety rules: 2.25 s when quiet.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import datetime, time as dtime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ZONES = ("Europe/Amsterdam", "America/New_York", "Asia/Tokyo", "UTC")
FIRST_USER = 2_000_000_001
CHUNK = 20_000
DUE_FIRST, DUE_SECOND = 1_000, 10_000
#: ``--profile=FILE``: cProfile statistics of the tick with 10,000 due, written to FILE.
PROFILE = next((a.split("=", 1)[1] for a in sys.argv if a.startswith("--profile=")), None)
#: ``--keep=FILE`` (PostgreSQL): leave the databases in place and describe them in FILE;
#: ``--reuse=FILE``: measure again on them (reset first; dropped afterwards unless --keep).
KEEP = next((a.split("=", 1)[1] for a in sys.argv if a.startswith("--keep=")), None)
REUSE = next((a.split("=", 1)[1] for a in sys.argv if a.startswith("--reuse=")), None)


def rss_kb(pid: int | str = "self") -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process, in kB."""
    values = {}
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0, 0
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0])
    return values.get("VmRSS", 0), values.get("VmHWM", 0)


# -- the measured process ------------------------------------------------------------------


def emit(event: str, **values: Any) -> None:
    print(json.dumps({"event": event, **values}), flush=True)


async def child(plan: dict[str, Any]) -> None:
    """The bot as ``imrs-bot run`` starts it; then its dispatcher's tick, timed."""
    from bot.cli import asyncio_only, keep_imports_out_of_gc

    asyncio_only()  # as cmd_run does, first
    from sqlalchemy import func, select, text

    import bot.app
    from bot.config import load_settings
    from bot.context import SERVICES_KEY
    from bot.db.delivery_models import OutboxMessage, ReminderSchedule
    from bot.delivery import dispatcher_of
    from bot.logs import configure_logging
    from bot.runtime import start_bot_task

    keep_imports_out_of_gc()  # as cmd_run does, after the imports

    # The consent-version check post_init starts in the background: known when it ends.
    announced = asyncio.Event()
    announce = bot.app._announce_consent_version
    announce_seconds: list[float] = []

    async def timed_announce(context: Any) -> None:
        started = time.perf_counter()
        try:
            await announce(context)
        finally:
            announce_seconds.append(time.perf_counter() - started)
            announced.set()

    bot.app._announce_consent_version = timed_announce  # type: ignore[assignment]

    settings = load_settings()
    configure_logging(settings.log_level, token=settings.token)
    stop = asyncio.Event()
    task, application = await start_bot_task(settings, stop=stop, timeout=300)
    emit("ready", rss_kb=rss_kb()[0], cpu=time.process_time())

    dispatcher = dispatcher_of(application)
    assert dispatcher is not None and application.job_queue is not None
    for job in application.job_queue.get_jobs_by_name("outbox-dispatcher"):
        job.schedule_removal()
    await asyncio.wait_for(announced.wait(), 600)
    while dispatcher._tick_lock.locked():  # a tick of the job still running
        await asyncio.sleep(0.01)
    await dispatcher.idle(timeout=120)
    sessions = application.bot_data[SERVICES_KEY].sessions

    async def planned_at(instant: datetime) -> int:
        async with sessions() as session:
            return int(await session.scalar(
                select(func.count()).select_from(OutboxMessage).where(OutboxMessage.due_at == instant)
            ) or 0)

    async def still_due(instant: datetime) -> int:
        s = ReminderSchedule
        async with sessions() as session:
            return int(await session.scalar(
                select(func.count()).select_from(s).where(s.active.is_(True), s.next_due_at <= instant)
            ) or 0)

    postgres = sessions.kw["bind"].dialect.name == "postgresql"

    async def database_cpu() -> dict[int, float]:
        """CPU seconds used so far by each PostgreSQL backend serving this database (the
        server runs on this machine): the tick's work there, whatever the load around it."""
        if not postgres:
            return {}
        async with sessions() as session:
            pids = list(await session.scalars(text(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
            )))
        used = {}
        for pid in pids:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            used[pid] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return used

    idle = []
    t0 = datetime.fromisoformat(plan["t0"])
    for _ in range(20):
        started = time.perf_counter()
        await dispatcher.tick(t0)
        idle.append(time.perf_counter() - started)
    ticks: dict[str, Any] = {"none due (median of 20)": {"seconds": statistics.median(idle)}}
    for label, iso in plan["instants"].items():
        instant = datetime.fromisoformat(iso)
        profiler = None
        if plan.get("profile") and label == list(plan["instants"])[-1]:
            import cProfile

            profiler = cProfile.Profile()
            profiler.enable()
        server = await database_cpu()
        started, cpu = time.perf_counter(), time.process_time()
        claimed = await dispatcher.tick(instant)
        first, cpu = time.perf_counter() - started, time.process_time() - cpu
        server = {pid: used - server.get(pid, 0.0) for pid, used in (await database_cpu()).items()}
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(plan["profile"])
        figures = {"seconds": first, "cpu": cpu, "server_cpu": sum(server.values()) if postgres else None,
                   "planned": await planned_at(instant), "claimed": claimed,
                   "rss_kb": rss_kb()[0]}
        # Whatever the first tick left for later ticks (the planner's batch limit).
        more, total = 0, first
        while await still_due(instant) and more < 100:
            started = time.perf_counter()
            await dispatcher.tick(instant)
            total += time.perf_counter() - started
            more += 1
        if more:
            figures.update(all_ticks=1 + more, all_seconds=total, all_planned=await planned_at(instant))
        ticks[label] = figures
        await dispatcher.idle(timeout=120)  # its first batch sent before the next tick
    stop.set()
    await task
    emit("result", ticks=ticks, announce_seconds=announce_seconds[0] if announce_seconds else None,
         hwm_kb=rss_kb()[1])


# -- set-up ----------------------------------------------------------------------------------


class Writer:
    """Rows into tables, a chunk at a time: COPY on PostgreSQL, executemany on SQLite."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.postgres = url.startswith("postgres")
        if self.postgres:
            import psycopg

            self.connection = psycopg.connect(url)
        else:
            import sqlalchemy

            self.engine = sqlalchemy.create_engine(url)
            self.connection = self.engine.connect()

    def write(self, table: Any, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        if self.postgres:
            from bot.crypto.fields import Sealed

            columns = list(rows[0])
            cursor = self.connection.cursor()
            with cursor.copy(f"COPY {table.name} ({', '.join(columns)}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row([
v.data if isinstance(v, Sealed) else v for v in row.values()
                    ])
        else:
            from sqlalchemy import insert

            self.connection.execute(insert(table), rows)

    def commit(self) -> None:
        self.connection.commit()

    def execute(self, sql: str) -> None:
        if self.postgres:
            self.connection.execute(sql)
        else:
            from sqlalchemy import text

            self.connection.execute(text(sql))

    def close(self) -> None:
        self.connection.close()
        if not self.postgres:
            self.engine.dispose()


def populate(url: str, keys_url: str, keyring: Any, count: int, consent_version: str,
             t0: datetime, due: dict[datetime, int]) -> None:
    """``count`` clients with daily reminders; ``due[instant] = n`` of them due at instant
    (a UTC wall time), the rest spread over the day from ``t0 + 10 min`` on."""
    from zoneinfo import ZoneInfo

    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from bot.crypto import formats
    from bot.crypto.fields import Sealed, new_row_id
    from bot.crypto.keystore import data_keys
    from bot.db.delivery_models import OutboxKind, ReminderSchedule
    from bot.db.models import ConsentRecord, Person
    from bot.delivery.schedules import EVERY_DAY, first_occurrence, weekdays_mask

    daily = weekdays_mask(EVERY_DAY)
    instants = [instant for instant, n in due.items() for _ in range(n)]
    kek, kek_id = keyring.active_key, keyring.active
    occurrences: dict[tuple[dtime, str, datetime], Any] = {}
    data = Writer(url)
    keys = Writer(keys_url)
    try:
        for start in range(0, count, CHUNK):
            people, wrapped, consents, schedules = [], [], [], []
            for i in range(start, min(count, start + CHUNK)):
                person_id = new_row_id()
                zone_name = ZONES[i % len(ZONES)]
                data_key = formats.new_data_key()
                wrapped.append({
                    "person_id": person_id, "key_version": 1, "kek_id": kek_id,
                    "wrapped": formats.wrap_data_key(kek, kek_id, person_id, 1, data_key),
                    "created_at": t0,
                })
                alias = formats.seal(AESGCM(data_key), 1, f"C{i:07d}".encode(), table="people",
                                     column="alias", row_id=person_id, owner_id=person_id)
                people.append({
                    "id": person_id, "telegram_id": FIRST_USER + i, "role": "client", "language": "en",
                    "timezone": zone_name, "alias": Sealed(alias), "active": True,
                    "created_at": t0, "updated_at": t0,
                })
                # Clients who consented: the outbox sends nothing to the others.
                consents.append({"person_id": person_id, "consent_version": consent_version,
                                 "choice": "granted", "recorded_at": t0})
                if i < len(instants):
                    at, zone, after = instants[i].time(), "UTC", instants[i] - timedelta(seconds=1)
                else:
                    minute = (i * 1440 // count) % 1440
                    at, zone, after = dtime(minute // 60, minute % 60), zone_name, t0 + timedelta(minutes=10)
                occurrence = occurrences.get((at, zone, after))
                if occurrence is None:
                    occurrence = occurrences[(at, zone, after)] = first_occurrence(after, daily, at, ZoneInfo(zone))
                schedules.append({
                    "person_id": person_id, "kind": OutboxKind.REMINDER.value,
                    "content_key": "outbox.practice_reminder", "weekdays": daily, "local_time": at,
                    "timezone": zone, "grace_minutes": 60, "active": True,
                    "next_due_at": occurrence.due_at, "next_local_date": occurrence.local_date,
                    "created_at": t0, "updated_at": t0,
                })
            # The data keys first: ciphertext never exists without its key.
            keys.write(data_keys, wrapped)
            keys.commit()
            data.write(Person.__table__, people)
            data.write(ConsentRecord.__table__, consents)
            data.write(ReminderSchedule.__table__, schedules)
            data.commit()
        if data.postgres:  # each on its own: ANALYZE holds its locks until the commit
            data.execute("ANALYZE people, consent_records, reminder_schedules, outbox")
            data.commit()
            keys.execute("ANALYZE data_keys")
            keys.commit()
    finally:
        data.close()
        keys.close()


def database_size(url: str) -> int:
    if url.startswith("postgres"):
        import psycopg

        with psycopg.connect(url) as connection:
            return int(connection.execute("SELECT pg_database_size(current_database())").fetchone()[0])
    from sqlalchemy.engine import make_url

    return Path(make_url(url).database or "").stat().st_size


def postgres_databases(base: str, names: list[str], *, create: bool) -> list[str]:
    """Create (or drop) databases on the server of ``base``; their URLs."""
    import psycopg
    from sqlalchemy.engine import make_url

    with psycopg.connect(base, autocommit=True) as connection:
        for name in names:
            if create:
                connection.execute(f'CREATE DATABASE "{name}"')
            else:
                connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return [make_url(base).set(database=name).render_as_string(hide_password=False) for name in names]


# -- the bench ---------------------------------------------------------------------------------


async def bench(count: int, new_consent_version: bool) -> None:
    from bot.content import Content
    from bot.crypto.keyring import Keyring, generate_keyring
    from bot.db.migrate import ensure_keystore_schema, upgrade
    from bot.db.types import utcnow
    from bot.sandbox.emulator import BotApiEmulator, FloodLimits

    current = Content().text("consent.version")
    base = os.environ.get("BENCH_DATABASE_URL")
    if (KEEP or REUSE) and not base:
        raise SystemExit("--keep and --reuse are for PostgreSQL (BENCH_DATABASE_URL)")
    with tempfile.TemporaryDirectory() as tmp:
        if REUSE:
            saved = json.loads(Path(REUSE).read_text())
            names, url, keys_url, count = saved["names"], saved["url"], saved["keys_url"], saved["count"]
            consent_version = saved["consent_version"]
            keyring = Keyring.from_json(saved["keyring"], source=REUSE)
            t0, d1, d2 = (datetime.fromisoformat(saved[k]) for k in ("t0", "d1", "d2"))
            if d2 - timedelta(hours=1) < utcnow():
                raise SystemExit("the kept database's reminders are no longer in the future: set it up again")
        else:
            if count < DUE_FIRST + DUE_SECOND:
                raise SystemExit(f"at least {DUE_FIRST + DUE_SECOND:,} clients")
            consent_version = "2000-01-1" if new_consent_version else current
            t0 = utcnow().replace(microsecond=0) + timedelta(days=1)  # a future day: nothing real is due
            d1, d2 = t0 + timedelta(minutes=1), t0 + timedelta(minutes=2)
            names = [f"bench_scale_{os.getpid()}", f"bench_scale_{os.getpid()}_keys"]
            if base:
                url, keys_url = postgres_databases(base, names, create=True)
            else:
                url, keys_url = f"sqlite:///{tmp}/bench.sqlite3", f"sqlite:///{tmp}/keystore.sqlite3"
        try:
            if REUSE:
                started = time.perf_counter()
                reset(url, {d1: (0, DUE_FIRST), d2: (DUE_FIRST, DUE_FIRST + DUE_SECOND)})
                setup = f"kept from {REUSE}, reset in {time.perf_counter() - started:.0f} s"
            else:
                await upgrade(url)
                await ensure_keystore_schema(keys_url)
                keyring = generate_keyring()
                started = time.perf_counter()
                populate(url, keys_url, keyring, count, consent_version, t0, {d1: DUE_FIRST, d2: DUE_SECOND})
                setup = f"set up in {time.perf_counter() - started:.0f} s"
            if KEEP:
                Path(KEEP).write_text(json.dumps({
                    "names": names, "url": url, "keys_url": keys_url, "count": count,
                    "consent_version": consent_version, "keyring": keyring.to_json(),
                    "t0": t0.isoformat(), "d1": d1.isoformat(), "d2": d2.isoformat(),
                }))
            print(f"database                       {'PostgreSQL' if base else 'SQLite'}"
                  f" (data {database_size(url) / 2**20:,.0f} MB, key store {database_size(keys_url) / 2**20:,.0f} MB)")
            print(f"consent version of the clients {consent_version} (the text in content: {current})")
            print(f"clients with daily reminders   {count:,} ({setup})")
            await measure(url, keys_url, keyring, t0, {"1,000 due": d1, "10,000 due": d2}, tmp,
                          BotApiEmulator, FloodLimits)
        finally:
            if base and not KEEP:
                postgres_databases(base, names, create=False)
                if REUSE:
                    Path(REUSE).unlink(missing_ok=True)


def reset(url: str, due: dict[datetime, tuple[int, int]]) -> None:
    """A kept PostgreSQL database as populate() left it: no outbox rows, the reminders of
    clients ``first .. last - 1`` due at each instant again (they are in UTC)."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("DELETE FROM outbox")
        for instant, (first, last) in due.items():
            connection.execute(
                "UPDATE reminder_schedules SET next_due_at = %s, next_local_date = %s WHERE person_id IN"
                " (SELECT id FROM people WHERE telegram_id >= %s AND telegram_id < %s)",
                (instant, instant.date(), FIRST_USER + first, FIRST_USER + last),
            )
        connection.execute("VACUUM ANALYZE outbox, reminder_schedules")


async def measure(url: str, keys_url: str, keyring: Any, t0: datetime, instants: dict[str, datetime],
                  tmp: str, emulator_class: Any, flood_limits: Any) -> None:
    emulator = emulator_class(flood=flood_limits(overall_per_second=None))
    await emulator.start()
    for i in range(DUE_FIRST + DUE_SECOND):
        emulator.state.chats[emulator.user(FIRST_USER + i).id].reachable = True
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TELEGRAM_", "DATABASE_URL", "IMRS_", "OUTBOX_"))}
    env.update({
        "TELEGRAM_BOT_TOKEN": emulator.token, "TELEGRAM_API_BASE_URL": emulator.base_url,
        "TELEGRAM_API_FILE_URL": emulator.base_file_url, "DATABASE_URL": url,
        "IMRS_KEYS": keyring.to_json(), "IMRS_KEYSTORE_URL": keys_url, "LOG_LEVEL": "WARNING",
    })
    plan = {"t0": t0.isoformat(), "instants": {label: at.isoformat() for label, at in instants.items()},
            "profile": os.path.abspath(PROFILE) if PROFILE else None}
    calls_before = len(emulator.calls)
    spawned = time.perf_counter()
    process = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--child", json.dumps(plan), cwd=tmp, env=env,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    events: dict[str, tuple[float, dict[str, Any]]] = {}

    async def read_events() -> None:
        assert process.stdout is not None
        async for line in process.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            events[event["event"]] = (time.perf_counter() - spawned, event)

    reader = asyncio.create_task(read_events())
    errors = asyncio.create_task(process.stderr.read())  # type: ignore[union-attr]
    peak_rss, first_poll = 0, None
    deadline = spawned + 1800
    while process.returncode is None and time.perf_counter() < deadline:
        peak_rss = max(peak_rss, rss_kb(process.pid)[0])
        if first_poll is None and any(c.method == "getUpdates" for c in emulator.calls[calls_before:]):
            first_poll = time.perf_counter() - spawned
        await asyncio.sleep(0.05)
    if process.returncode is None:
        process.kill()
    await process.wait()
    await reader
    err = await errors
    await emulator.stop()

    if "ready" in events:
        polled = f", first getUpdates at {first_poll:.2f} s" if first_poll is not None else ""
        print(f"start-up                       {events['ready'][0]:.2f} s from spawn to consuming updates"
              f"{polled} ({events['ready'][1]['cpu']:.2f} s of CPU)   (goal <= 2 s)")
    if "result" not in events:
        print(f"the bot process exited with {process.returncode}: {err.decode()[-3000:]}")
        return
    result = events["result"][1]
    if result["announce_seconds"] is not None:
        print(f"consent-version check at start {result['announce_seconds']:.2f} s (in the background)")
    for label, figures in result["ticks"].items():
        line = f"tick, {label:<24} {figures['seconds'] * 1000:8.1f} ms"
        if "planned" in figures:
            server = figures.get("server_cpu")
            line += (f" (CPU: {figures['cpu'] * 1000:.0f} ms bot"
                     + (f" + {server * 1000:.0f} ms PostgreSQL" if server is not None else "")
                     + f")   planned {figures['planned']:,}, claimed {figures['claimed']}")
        if "all_ticks" in figures:
            line += (f"; all {figures['all_planned']:,} planned after {figures['all_ticks']} ticks,"
                     f" {figures['all_seconds'] * 1000:.0f} ms of tick time")
        if label.startswith("10,000"):
            line += "   (goal <= 1 s)"
        print(line)
    print(f"resident memory                {peak_rss / 1024:.0f} MB peak sampled, "
          f"{result['hwm_kb'] / 1024:.0f} MB high-water mark   (goal <= 200 MB)")
    if process.returncode != 0:
        print(f"the bot process exited with {process.returncode}: {err.decode()[-3000:]}")


if __name__ == "__main__":
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    if sys.argv[1:2] == ["--child"]:
        asyncio.run(child(json.loads(sys.argv[2])))
    else:
        arguments = [a for a in sys.argv[1:] if not a.startswith("--")]
        asyncio.run(bench(int(arguments[0]) if arguments else 100_000, "--new-consent-version" in sys.argv))
