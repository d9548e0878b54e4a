"""Readiness summaries (issue 13): making, encrypting and sending N summaries (default 1,000).

The goal: <= 50 ms per summary, making and sending together, including the chart.

Everything is real except Telegram: ``SummaryService.on_check_in_completed`` (readiness rules
from content/readiness.yaml, the report with its inline SVG trend chart, age encryption to the
therapist's registered key, the SUMMARY outbox row), the outbox dispatcher wired as
bot.delivery.start_delivery wires it (consent check, buttons, the ``documents`` hook asking
``SummaryService.document``), python-telegram-bot's HTTP client with the project's rate
limiter, the database, and the Bot API emulator (sendDocument) in a child process (the
machine's second core), as Telegram would be elsewhere.

Set-up, not timed: N/10 therapists, each with an age key registered through
``TherapistKeyService.submit``, and 10 linked, consenting clients each (alias ``C0001``...);
per client 3 earlier completed check-ins (7, 14 and 21 days ago: the trend chart has points),
10 exercises with ratings before and after in the last 14 days, and one new completed
check-in whose summary is measured (N in all).

Measured and printed:

1. making: ``on_check_in_completed`` for each new check-in, one transaction each, as
   ``CheckInService.complete`` does (the row loaded, the listener, the commit): mean, p50,
   p95 ms; and the part of it spent reading the report's data (``_gather``), rendering it
   (``render_report``, chart included) and in age encryption (``age.encrypt``), timed by
   wrapping those calls in the same run (the rest: the checks, flushes, the outbox row,
   loading the row and the commit);
2. sending: the dispatcher delivering the N SUMMARY rows as documents, with Telegram's limits
   out of the way (emulator flood limits off; outbox rate 1,000/s, no per-chat interval,
   tick 0.05 s; production's 1 s per chat would space one therapist's 10 documents over 10 s):
   total seconds, wall ms per document, and this process's CPU ms per document ("our side":
   the emulator's work is in the child). Then checked: every therapist received exactly the
   files encrypted for them (SHA-256 of each document against the stored ciphertexts), and
   one document decrypts with its therapist's identity (and not with another's) to a page
   with the client's alias;
3. memory: peak RSS (getrusage) before and after making and after sending; the tracemalloc
   peak while making summaries (a sample of up to 100, run first and rolled back, so that
   tracemalloc's overhead stays out of the timings; it warms the caches too); ciphertext
   bytes per summary (mean) and the plaintext HTML it holds.

The last line adds the mean making time and the wall time per sent document.
``--profile`` also prints cProfile's top functions over making and over sending (the
timings are then inflated by the profiler).

Database: a temporary SQLite file; or, with ``BENCH_DATABASE_URL`` (a PostgreSQL server, e.g.
``postgresql://postgres@127.0.0.1:5432/test``), a database ``bench_summaries`` created on that
server through the URL's database, used, and dropped at the end (the URL's database itself is
not touched). The key store is a temporary SQLite file in both cases.

Run: ``.venv/bin/python bench/summaries.py [count] [--profile]`` (count: a multiple of 10;
``100`` is a quick check)
"""

from __future__ import annotations

import asyncio
import cProfile
import hashlib
import io
import json
import multiprocessing
import os
import pstats
import resource
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections import Counter, defaultdict
from datetime import timedelta
from functools import wraps
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp  # noqa: E402
from sqlalchemy import select  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402
from telegram.constants import ParseMode  # noqa: E402
from telegram.ext import Defaults, ExtBot  # noqa: E402

import bot.services.summaries as summaries_module  # noqa: E402
from bot.callbacks import CallbackCodec  # noqa: E402
from bot.checkins import Answers  # noqa: E402
from bot.content import Content  # noqa: E402
from bot.crypto import age  # noqa: E402
from bot.crypto.fields import FieldCrypto  # noqa: E402
from bot.crypto.keyring import generate_keyring  # noqa: E402
from bot.crypto.keystore import KeyStore  # noqa: E402
from bot.db.delivery_models import OutboxKind, OutboxMessage  # noqa: E402
from bot.db.engine import create_engine, is_sqlite, session_factory  # noqa: E402
from bot.db.migrate import upgrade  # noqa: E402
from bot.db.models import (  # noqa: E402
    CheckIn,
    CheckInState,
    ConsentChoice,
    ConsentRecord,
    ExerciseRun,
    Person,
    Role,
    Summary,
)
from bot.db.repositories import LinkRepository, PeopleRepository  # noqa: E402
from bot.db.types import utcnow  # noqa: E402
from bot.delivery.buttons import OutboxButtons  # noqa: E402
from bot.delivery.dispatcher import Dispatcher, DispatcherConfig  # noqa: E402
from bot.delivery.leadership import InstanceRegistry  # noqa: E402
from bot.delivery.outbox import OutboxService  # noqa: E402
from bot.delivery.ratelimit import bot_rate_limiter  # noqa: E402
from bot.delivery.schedules import ScheduleService  # noqa: E402
from bot.delivery.store import OutboxStore  # noqa: E402
from bot.readiness import default_rules, evaluate  # noqa: E402
from bot.services.consent import ConsentService  # noqa: E402
from bot.services.notices import Notices  # noqa: E402
from bot.services.people import Identity  # noqa: E402
from bot.services.summaries import SummaryService  # noqa: E402
from bot.services.therapist_keys import TherapistKeyService  # noqa: E402

CLIENTS_PER_THERAPIST = 10
EARLIER_CHECK_INS = (21, 14, 7)  # days before now
EXERCISES = 10  # per client, in the last 14 days
FIRST_THERAPIST = 2_000_000_001
FIRST_CLIENT = 3_000_000_001
BENCH_DATABASE = "bench_summaries"
GOAL_MS = 50.0
MEMORY_SAMPLE = 100
SEND_RATE = 1000.0
SEND_TICK = 0.05
NOTE = "Slept badly before the last session; would like to go slower. <b>not bold</b> & co."


def answers_of(i: int, day: int) -> str:
    """A complete check-in's answers, varied by client and day (every colour occurs)."""
    values = {
        "distress": (i * 3 + day) % 11,
        "stressors": [("work", "relationships", "health", "money", "other")[(i + day) % 5]] if (i + day) % 3 else [],
        "sleep": ("well", "fair", "poorly", "very_poorly")[(i + day) % 4],
        "practice_days": (i + day) % 8,
        "practice_help": ("not_at_all", "a_little", "somewhat", "a_lot", "did_not_practise")[(i * 7 + day) % 5],
        "support": ("yes", "partly", "no")[(i + 2 * day) % 3],
        "detached": ("no", "sometimes", "often")[(i + day) % 3],
        "substances": "no",
        "unsafe": "no",
        "self_harm": "no",
        "ready": (i * 5 + day) % 11,
        "note": NOTE if i % 2 else "",
    }
    answers = Answers.empty()
    for question, value in values.items():
        answers = answers.with_answer(question, value)
    return answers.to_json()


# -- the emulator (child process) -------------------------------------------------------------


def run_emulator(therapists: int, ready: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    """An emulator with every therapist reachable, flood limits off; ``/report`` lists each
    chat's documents (name, SHA-256, caption), ``/doc?chat=&n=`` returns one document."""
    from aiohttp import web

    from bot.sandbox.emulator import BotApiEmulator, FloodLimits

    async def main() -> None:
        emulator = BotApiEmulator(flood=FloodLimits(overall_per_second=None, per_chat_per_second=None))
        await emulator.start()
        for i in range(therapists):
            emulator.state.chats[emulator.user(FIRST_THERAPIST + i).id].reachable = True

        def documents(chat_id: int) -> list:
            user = emulator.users.get(chat_id)
            return [m for m in (user.messages if user else []) if getattr(m, "document", None) is not None]

        async def report(_request: web.Request) -> web.Response:
            per_chat = {
                str(chat_id): [
                    [m.document.file_name, hashlib.sha256(m.document.data).hexdigest(), m.caption or "",
                     bool(m.protect_content)]
                    for m in documents(chat_id)
                ]
                for chat_id in emulator.users
            }
            return web.json_response({
                "send_document_calls": sum(1 for c in emulator.calls if c.method == "sendDocument"),
                "other_calls": sorted({c.method for c in emulator.calls if c.method != "sendDocument"}),
                "failures": [[f.status, f.method] for f in emulator.failures][:10],
                "failure_count": len(emulator.failures),
                "per_chat": per_chat,
            })

        async def document(request: web.Request) -> web.Response:
            found = documents(int(request.query["chat"]))[int(request.query.get("n", "0"))]
            return web.Response(body=found.document.data)

        app = web.Application()
        app.router.add_get("/report", report)
        app.router.add_get("/doc", document)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        ready.put((emulator.token, emulator.base_url, runner.addresses[0][1]))
        await asyncio.Event().wait()

    asyncio.run(main())


# -- helpers ------------------------------------------------------------------------------------


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def current_rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def percentile(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))]


class Timed:
    """Wraps a function (sync or async) and adds up its time while ``on``."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.calls = 0
        self.sizes: list[int] = []
        self.on = False

    def sync(self, function, size=None):
        @wraps(function)
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            result = function(*args, **kwargs)
            if self.on:
                self.seconds += time.perf_counter() - start
                self.calls += 1
                if size is not None:
                    self.sizes.append(size(result))
            return result

        return wrapper

    def coroutine(self, function):
        @wraps(function)
        async def wrapper(*args, **kwargs):
            start = time.perf_counter()
            result = await function(*args, **kwargs)
            if self.on:
                self.seconds += time.perf_counter() - start
                self.calls += 1
            return result

        return wrapper


def pg_admin(url: str, statement: str) -> None:
    """Run CREATE/DROP DATABASE through a connection to the URL's own database."""
    import psycopg

    with psycopg.connect(make_url(url).set(drivername="postgresql").render_as_string(hide_password=False),
                         autocommit=True) as connection:
        connection.execute(statement)


# -- set-up ---------------------------------------------------------------------------------------


async def populate(sessions, keys: TherapistKeyService, content: Content, therapists: int):
    """Therapists with keys, linked consenting clients, their history and the new check-ins.
    Returns (therapists: [(person id, telegram id, KeyPair)], new check-in ids in making order,
    {client id: (alias, therapist index)})."""
    rules = default_rules()
    now = utcnow()
    version = content.text("consent.version")
    made = []
    clients: dict[int, tuple[str, int]] = {}
    new_check_ins: list[tuple[int, int, int]] = []  # (client number, therapist index, id)
    for t in range(therapists):
        async with sessions.begin() as session:
            therapist = await PeopleRepository(session).add(Person(
                telegram_id=FIRST_THERAPIST + t, role=Role.THERAPIST, language="en",
                timezone="Europe/Amsterdam", display_name=f"Dr. T{t:03d}",
            ))
        pair = age.generate()
        identity = Identity(therapist.telegram_id, "x", Role.THERAPIST, therapist.id, "en", "Europe/Amsterdam")
        await keys.submit(identity, pair.recipient.text)  # as /setkey does
        made.append((therapist.id, therapist.telegram_id, pair))
        async with sessions.begin() as session:
            links = LinkRepository(session)
            for c in range(CLIENTS_PER_THERAPIST):
                number = t * CLIENTS_PER_THERAPIST + c
                alias = f"C{number + 1:04d}"
                client = await PeopleRepository(session).add(Person(
                    telegram_id=FIRST_CLIENT + number, role=Role.CLIENT, language="en",
                    timezone="Europe/Amsterdam", alias=alias,
                ))
                clients[client.id] = (alias, t)
                await links.add(therapist.id, client.id, now - timedelta(days=60))
                session.add(ConsentRecord(person_id=client.id, consent_version=version, choice=ConsentChoice.GRANTED,
                                          recorded_at=now - timedelta(days=60)))
                for days in EARLIER_CHECK_INS:
                    answers = answers_of(number, days)
                    session.add(CheckIn(
                        client_id=client.id, therapist_id=therapist.id, state=CheckInState.COMPLETED,
                        step="review", answers=answers,
                        readiness=evaluate(rules, Answers.from_json(answers)).to_json(),
                        started_at=now - timedelta(days=days, minutes=10), completed_at=now - timedelta(days=days),
                    ))
                for e in range(EXERCISES):
                    started = now - timedelta(days=13 - e * 1.3, hours=(number + e) % 12)
                    before = 3 + (number + e) % 8
                    session.add(ExerciseRun(
                        client_id=client.id, exercise=("breathing", "grounding", "relaxation", "safe_place")[e % 4],
                        started_at=started, ended_at=started + timedelta(minutes=6),
                        distress_before=str(before), distress_after=str(max(0, before - (number + e) % 4)),
                    ))
                row = CheckIn(
                    client_id=client.id, therapist_id=therapist.id, state=CheckInState.COMPLETED, step="review",
                    answers=answers_of(number, 0), started_at=now - timedelta(minutes=10),
                    completed_at=now - timedelta(minutes=1),
                )
                session.add(row)
                await session.flush()
                new_check_ins.append((c, t, row.id))
    # Making order: one client of every therapist, then the next (as completions would mix).
    order = [check_in_id for _c, _t, check_in_id in sorted(new_check_ins)]
    return made, order, clients


async def make_one(sessions, service: SummaryService, check_in_id: int, *, commit: bool = True) -> None:
    """What CheckInService.complete does around its listeners: one transaction."""
    if commit:
        async with sessions.begin() as session:
            row = await session.get(CheckIn, check_in_id)
            await service.on_check_in_completed(session, row)
    else:
        async with sessions() as session:
            await session.begin()
            row = await session.get(CheckIn, check_in_id)
            await service.on_check_in_completed(session, row)
            await session.rollback()


# -- the benchmark ----------------------------------------------------------------------------------


async def bench(count: int, profile: bool) -> None:
    therapists = max(1, count // CLIENTS_PER_THERAPIST)
    count = therapists * CLIENTS_PER_THERAPIST
    ready: multiprocessing.Queue = multiprocessing.Queue()  # type: ignore[type-arg]
    child = multiprocessing.Process(target=run_emulator, args=(therapists, ready), daemon=True)
    child.start()
    token, base_url, report_port = ready.get(timeout=120)

    server_url = os.environ.get("BENCH_DATABASE_URL")
    with tempfile.TemporaryDirectory() as tmp:
        if server_url:
            pg_admin(server_url, f"DROP DATABASE IF EXISTS {BENCH_DATABASE} WITH (FORCE)")
            pg_admin(server_url, f"CREATE DATABASE {BENCH_DATABASE}")
            url = make_url(server_url).set(database=BENCH_DATABASE).render_as_string(hide_password=False)
        else:
            url = f"sqlite:///{tmp}/bench.sqlite3"
        try:
            await run(url, tmp, count, therapists, token, base_url, report_port, profile)
        finally:
            if server_url:
                pg_admin(server_url, f"DROP DATABASE IF EXISTS {BENCH_DATABASE} WITH (FORCE)")
            child.kill()


async def run(url, tmp, count, therapists, token, base_url, report_port, profile) -> None:
    await upgrade(url)
    engine = create_engine(url)
    keyring = generate_keyring()
    keystore = await KeyStore.open(f"sqlite:///{tmp}/keystore.sqlite3", keyring)
    crypto = FieldCrypto(keystore)
    sessions = crypto.attach(session_factory(engine))
    content = Content()
    outbox = OutboxService(sessions)
    notices = Notices(outbox, content)
    service = SummaryService(sessions, content, outbox, notices)
    keys = TherapistKeyService(sessions, on_key_set=service.release_waiting)

    started = time.perf_counter()
    made, order, clients = await populate(sessions, keys, content, therapists)
    setup_seconds = time.perf_counter() - started

    # The parts of making, timed in the same run by wrapping the calls _seal makes.
    gather, render, encrypt = Timed(), Timed(), Timed()
    service._gather = gather.coroutine(service._gather)  # type: ignore[method-assign]
    summaries_module.render_report = render.sync(summaries_module.render_report, size=lambda html: len(html.encode()))
    age.encrypt = encrypt.sync(age.encrypt, size=len)

    # Memory: tracemalloc over a sample, rolled back (also warms the caches).
    sample = order[: min(MEMORY_SAMPLE, count)]
    rss_before = peak_rss_mb()
    tracemalloc.start()
    base_traced, _ = tracemalloc.get_traced_memory()
    for check_in_id in sample:
        await make_one(sessions, service, check_in_id, commit=False)
    after_traced, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    async with sessions() as session:
        assert not (await session.scalars(select(Summary.id))).all(), "the rolled-back sample left summaries"

    # 1. Making, timed.
    profiler = cProfile.Profile() if profile else None
    for timer in (gather, render, encrypt):
        timer.on = True
    rss_making_before, current_before = peak_rss_mb(), current_rss_mb()
    samples = []
    cpu0 = time.process_time()
    making_started = time.perf_counter()
    if profiler:
        profiler.enable()
    for check_in_id in order:
        t0 = time.perf_counter()
        await make_one(sessions, service, check_in_id)
        samples.append((time.perf_counter() - t0) * 1000)
    if profiler:
        profiler.disable()
    making_seconds = time.perf_counter() - making_started
    making_cpu = time.process_time() - cpu0
    for timer in (gather, render, encrypt):
        timer.on = False
    rss_making_after, current_after = peak_rss_mb(), current_rss_mb()

    async with sessions() as session:
        rows = (await session.execute(
            select(Summary.id, Summary.therapist_id, Summary.client_id, Summary.state, Summary.ciphertext)
        )).all()
        summary_rows = (await session.scalars(
            select(OutboxMessage.id).where(OutboxMessage.kind == OutboxKind.SUMMARY)
        )).all()
    cipher_sizes = [len(r.ciphertext or b"") for r in rows]
    expected: dict[int, Counter] = defaultdict(Counter)  # therapist telegram id -> Counter(sha256)
    by_person = {person_id: telegram_id for person_id, telegram_id, _ in made}
    for r in rows:
        expected[by_person[r.therapist_id]][hashlib.sha256(r.ciphertext).hexdigest()] += 1

    # 2. Sending.
    bot = ExtBot(
        token, base_url=base_url,
        defaults=Defaults(parse_mode=ParseMode.HTML, protect_content=True),
        rate_limiter=bot_rate_limiter(SEND_RATE, max_retries=3),
    )
    await bot.initialize()
    config = DispatcherConfig(rate_per_second=SEND_RATE, per_chat_interval=0.0, tick_seconds=SEND_TICK)
    document_timer = Timed()
    document_timer.on = True
    dispatcher = Dispatcher(
        bot,
        OutboxStore(sessions, crypto),
        content,
        config=config,
        planner=ScheduleService(sessions, outbox),
        registry=None if is_sqlite(url) else InstanceRegistry(sessions),
        may_receive=ConsentService(sessions, content, notices).may_receive,
        buttons=OutboxButtons(content, CallbackCodec(keyring)),
        documents=document_timer.coroutine(service.document),
    )
    dispatcher.start()
    send_profiler = cProfile.Profile() if profile else None
    if send_profiler:
        send_profiler.enable()
    cpu0 = time.process_time()
    send_started = time.perf_counter()
    deadline = send_started + 120 + count * 0.2
    while dispatcher.stats.sent + dispatcher.stats.failed + dispatcher.stats.dead < len(summary_rows):
        await dispatcher.tick()
        await asyncio.sleep(config.tick_seconds)
        if time.perf_counter() > deadline:
            print("gave up waiting", dispatcher.stats)
            break
    await dispatcher.idle()
    send_seconds = time.perf_counter() - send_started
    send_cpu = time.process_time() - cpu0
    if send_profiler:
        send_profiler.disable()
    await dispatcher.stop()
    await bot.shutdown()
    rss_sent = peak_rss_mb()

    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{report_port}/report") as response:
            report = json.loads(await response.text())
        chosen = len(made) // 2
        _therapist_id, telegram_id, pair = made[chosen]
        async with http.get(f"http://127.0.0.1:{report_port}/doc", params={"chat": str(telegram_id), "n": "0"}) as response:
            one_document = await response.read()
    async with sessions() as session:
        states = Counter((await session.scalars(
            select(OutboxMessage.state).where(OutboxMessage.kind == OutboxKind.SUMMARY)
        )).all())
    await engine.dispose()
    await keystore.close()

    # Checks.
    received = {int(chat): Counter(sha for _name, sha, _caption, _protected in docs)
                for chat, docs in report["per_chat"].items()}
    exact = all(received.get(chat, Counter()) == wanted for chat, wanted in expected.items()) and all(
        not docs or int(chat) in expected for chat, docs in received.items()
    )
    per_chat_counts = Counter(sum(c.values()) for c in received.values())
    captions_ok = all(
        fp in caption and not protected
        for (_pid, tg, pair_) in made for fp in [pair_.fingerprint]
        for _name, _sha, caption, protected in report["per_chat"].get(str(tg), [])
    )
    first_name = report["per_chat"][str(telegram_id)][0][0]
    alias = first_name.split("-")[0]
    page = age.decrypt(one_document, pair.identity_file).decode("utf-8")
    other = made[(chosen + 1) % len(made)][2] if len(made) > 1 else age.generate()
    try:
        age.decrypt(one_document, other.identity_file)
        others_refused = False
    except age.AgeDecryptError as error:
        others_refused = error.reason == "not_for_you"
    decrypt_ok = (f"Readiness summary: {alias}" in page and "<svg" in page and "<polyline" in page
                  and (alias, chosen) in clients.values())

    # Figures.
    mean = statistics.fmean(samples)
    listener_total = making_seconds * 1000
    send_wall_ms = send_seconds * 1000 / max(1, len(summary_rows))
    send_cpu_ms = send_cpu * 1000 / max(1, len(summary_rows))
    per_summary = mean + send_wall_ms
    print(f"database                     {'SQLite' if is_sqlite(url) else 'PostgreSQL (database ' + BENCH_DATABASE + ')'}")
    print(f"summaries                    {count:,} ({therapists} therapists x {CLIENTS_PER_THERAPIST} clients; "
          f"{len(EARLIER_CHECK_INS)} earlier check-ins, {EXERCISES} exercises each; set-up {setup_seconds:.1f} s)")
    print("1. making (one transaction each: load, on_check_in_completed, commit)")
    print(f"   per summary               mean {mean:.1f} ms   p50 {percentile(samples, 50):.1f} ms   "
          f"p95 {percentile(samples, 95):.1f} ms   max {max(samples):.1f} ms")
    print(f"   total                     {making_seconds:.2f} s wall, {making_cpu:.2f} s CPU in this process")
    print(f"   of which                  gather {gather.seconds * 1000 / count:.2f} ms "
          f"({gather.seconds * 1000 / listener_total:.0%}), render_report {render.seconds * 1000 / count:.2f} ms "
          f"({render.seconds * 1000 / listener_total:.0%}), age.encrypt {encrypt.seconds * 1000 / count:.2f} ms "
          f"({encrypt.seconds * 1000 / listener_total:.0%}); the rest (checks, flush, outbox row, commit) "
          f"{(listener_total - (gather.seconds + render.seconds + encrypt.seconds) * 1000) / count:.2f} ms")
    print(f"   summaries                 {Counter(str(r.state) for r in rows)}, outbox SUMMARY rows {len(summary_rows)}")
    print("2. sending (dispatcher -> emulator sendDocument; flood limits off, rate "
          f"{SEND_RATE:.0f}/s, no per-chat interval, tick {SEND_TICK} s)")
    print(f"   total                     {send_seconds:.2f} s for {len(summary_rows):,} documents")
    print(f"   per document              {send_wall_ms:.2f} ms wall, {send_cpu_ms:.2f} ms CPU of this process "
          f"(SummaryService.document: {document_timer.seconds * 1000 / max(1, document_timer.calls):.1f} ms wall a call, up to {config.max_in_flight} at once)")
    print(f"   dispatcher                {dispatcher.stats}")
    print(f"   outbox states             {dict(states)}; emulator: {report['send_document_calls']} sendDocument, "
          f"{report['failure_count']} failures, other methods {report['other_calls']}")
    print(f"   every therapist got exactly their documents: {'yes' if exact else 'NO'} "
          f"(documents per therapist: {dict(per_chat_counts)}); captions with the key's fingerprint, "
          f"not protected: {'yes' if captions_ok else 'NO'}")
    print(f"   one document ({first_name}, {len(one_document):,} bytes) decrypts with its therapist's identity "
          f"to the client's page: {'yes' if decrypt_ok else 'NO'}; another therapist's identity refused: "
          f"{'yes' if others_refused else 'NO'}")
    print("3. memory")
    print(f"   peak RSS                  {rss_before:.0f} MB after set-up, {rss_making_before:.0f} MB before making, "
          f"{rss_making_after:.0f} MB after, {rss_sent:.0f} MB after sending "
          f"(current RSS {current_before:.0f} -> {current_after:.0f} MB over making)")
    print(f"   tracemalloc               peak {(traced_peak - base_traced) / 2**20:.2f} MB above the start while "
          f"making {len(sample)} summaries (rolled back); {(after_traced - base_traced) / 2**10:.0f} KiB still "
          f"allocated after")
    print(f"   ciphertext per summary    mean {statistics.fmean(cipher_sizes):,.0f} bytes "
          f"(min {min(cipher_sizes):,}, max {max(cipher_sizes):,}); the HTML inside "
          f"{statistics.fmean(render.sizes):,.0f} bytes")
    for name, found in (("making", profiler), ("sending", send_profiler)):
        if found:
            for order_by, lines in (("cumulative", 40), ("tottime", 25)):
                out = io.StringIO()
                pstats.Stats(found, stream=out).sort_stats(order_by).print_stats(lines)
                print(f"--- cProfile, {name}, by {order_by}\n{out.getvalue()}")
    verdict = "met" if per_summary <= GOAL_MS else "not met"
    print(f"per summary (making + sending): {per_summary:.1f} ms; goal <= {GOAL_MS:.0f} ms: {verdict}")


if __name__ == "__main__":
    arguments = [a for a in sys.argv[1:] if not a.startswith("--")]
    asyncio.run(bench(int(arguments[0]) if arguments else 1000, "--profile" in sys.argv[1:]))
