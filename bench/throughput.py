"""The bot's throughput against a bare python-telegram-bot echo bot, in one run (issue 16).

Each bot runs in a child process (the machine's other core) against the project's Bot API
emulator in this process, through python-telegram-bot's own HTTP client and long polling;
our bot exactly as ``imrs-bot run`` serves it (``bot.runtime``, logging with the privacy
filter to a file, the database, persistence after every update).

(a) the echo bot: a text is echoed with a button under it, a press is answered and edits
    its message;
(b) this bot, with enrolled clients doing a realistic mix, each a closed loop (an action, wait
    for its reply, the next action): menus (/help), /learn (a topic, Next, Next, Menu), stray
    text that passes the safety layer (answered with the crisis lines), a grounding exercise
    (/practice, the rating before, every step, the rating after), check-in steps (/checkin, a
    rating, a stressor, Done, sleep, /cancel). Each client starts at another part of the mix.

The same number of people send the same kinds of updates (texts, presses) to (a). Printed for
each: updates/s (from the first action to the last reply), the p50 / p95 reply latency (from
an action to the reply its person waits for) and b / a, in two modes:

* lifted: OUTBOX_RATE_PER_SECOND=995 and no flood control in the emulator: the bots' own
  processing (goal b / a >= 0.8);
* at the cap: the defaults (the bot-wide limiter's 30 messages/s, Telegram's guidance; the
  echo bot with python-telegram-bot's stock AIORateLimiter, also 30/s) against the emulator's
  Telegram-like flood limits: every client acts at once, so this is the reply latency in a
  burst (it is bounded by clients / 30 s, whatever the bot does).

``--broadcast``: a staff broadcast to ``--recipients`` clients (bot.services.broadcasts, at
the default outbox rate, the cap) while ``--chatting`` clients go through the same mix at a
person's pace (``--think`` seconds between actions, uniformly drawn); printed: the chatting
clients' reply p50 / p95 (goal p95 < 1 s), the messages a second their replies took of
Telegram's 30 (sends and edits to their chats, the broadcast's one message to each included;
replies go first, so the broadcast can keep at most what they leave) and the broadcast's
achieved rate / configured rate over the window (goal >= 0.95).

Database: a temporary SQLite file, and also PostgreSQL when ``BENCH_DATABASE_URL`` names a
server (e.g. ``postgresql://postgres@127.0.0.1:5432/test``): a database is created there and
dropped at the end. ``--profile DIR`` writes a cProfile of each bot process to DIR, ``--logs
DIR`` keeps their log files there.

Run: ``.venv/bin/python bench/throughput.py [--clients 200] [--steps 8] [--cap-steps 2]
[--mode both|lifted|cap]``,
``.venv/bin/python bench/throughput.py --broadcast [--recipients 10000] [--chatting 50]
[--seconds 60]``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import random
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import delete, insert  # noqa: E402
from telegram.constants import FloodLimit  # noqa: E402

from bench.common import (  # noqa: E402
    NO_FLOOD,
    TELEGRAM_FLOOD,
    BotProcess,
    Chats,
    Person,
    bench_database,
    bot_settings,
    cpu_seconds,
    database_label,
    emulator_failures,
    latency_line,
    make_settings,
)
from bot.crypto.fields import new_row_id  # noqa: E402
from bot.db.delivery_models import OutboxMessage  # noqa: E402
from bot.db.models import ConsentChoice, ConsentRecord, Person as PersonRow, Role  # noqa: E402
from bot.db.repositories import ConsentRepository, LinkRepository, PeopleRepository  # noqa: E402
from bot.db.types import utcnow  # noqa: E402
from bot.runtime import open_services  # noqa: E402
from bot.sandbox.emulator import BotApiEmulator  # noqa: E402
from bot.sandbox.emulator.methods import METHODS  # noqa: E402
from bot.sandbox.emulator.records import ApiCall  # noqa: E402
from bot.services.broadcasts import Audience  # noqa: E402
from bot.services.people import Identity  # noqa: E402

#: Telegram's overall limit, messages a second (the emulator's TELEGRAM_FLOOD).
LIMIT = float(FloodLimit.MESSAGES_PER_SECOND)
MESSAGE_METHODS = frozenset(method.name for method in METHODS.values() if method.sends)

THERAPIST_ID = 900_000_001
STAFF_ID = 900_000_002
STRAY = [
    "I had a long day at work and I feel tired",
    "what should I expect at my next appointment?",
    "ik heb vandaag goed geoefend, dank je",
    "this traffic is killing me",
]

Step = Callable[[Person], Awaitable[object]]


# ----------------------------------------------------------------------------- the mix


def mix() -> list[list[Step]]:
    """Episodes of steps, one action each; a client goes through them in a circle."""
    state: dict[int, object] = {}

    def keep(p: Person, value: object) -> object:
        state[p.user.id] = value
        return value

    def kept(p: Person):  # noqa: ANN202
        return state[p.user.id]

    async def learn_open(p: Person) -> object:
        return keep(p, await p.say("/learn"))

    async def learn_topic(p: Person) -> object:
        return await p.tap(0, kept(p))

    async def learn_next(p: Person) -> object:
        return await p.tap("Next ›", kept(p))

    async def learn_menu(p: Person) -> object:
        return await p.tap("Menu", kept(p))

    async def stray(p: Person) -> object:
        return await p.say(STRAY[(p.user.id + p.actions) % len(STRAY)])

    async def practice(p: Person) -> object:
        return keep(p, await p.say("/practice"))

    async def grounding(p: Person) -> object:
        return keep(p, await p.tap("Grounding 5-4-3-2-1", kept(p), replies=1))

    async def rate_before(p: Person) -> object:
        return keep(p, await p.tap("4", kept(p), replies=1))

    async def grounding_next(p: Person) -> object:
        return await p.tap("Next ›", kept(p))

    async def grounding_done(p: Person) -> object:
        return keep(p, await p.tap("Next ›", kept(p), replies=2))

    async def rate_after(p: Person) -> object:
        return await p.tap("3", kept(p), replies=1)

    async def checkin(p: Person) -> object:
        return keep(p, await p.say("/checkin", replies=2))

    async def checkin_rating(p: Person) -> object:
        return keep(p, await p.tap("4", kept(p), replies=1))

    async def stressor(p: Person) -> object:
        return await p.tap("Work or study", kept(p))

    async def stressors_done(p: Person) -> object:
        return keep(p, await p.tap("Done", kept(p), replies=1))

    async def sleep(p: Person) -> object:
        return keep(p, await p.tap("Poorly", kept(p), replies=1))

    async def cancel(p: Person) -> object:
        return await p.say("/cancel")

    async def menu(p: Person) -> object:
        return await p.say("/help")

    return [
        [menu],
        [learn_open, learn_topic, learn_next, learn_next, learn_menu],
        [stray],
        [practice, grounding, rate_before] + [grounding_next] * 5 + [grounding_done, rate_after],
        [stray],
        [checkin, checkin_rating, stressor, stressors_done, sleep, cancel],
    ]


def echo_mix() -> list[list[Step]]:
    """The same actions for the echo bot: a text where (b) sends one, a press where (b) presses."""

    async def text(p: Person) -> object:
        return await p.say(STRAY[(p.user.id + p.actions) % len(STRAY)])

    async def tap(p: Person) -> object:
        return await p.tap("Next ›")

    def like(step: Step) -> Step:
        return text if step.__name__ in {"menu", "learn_open", "stray", "practice", "checkin", "cancel"} else tap

    return [[like(step) for step in episode] for episode in mix()]


async def act(person: Person, episodes: list[list[Step]], first: int, steps: int,
              think: tuple[float, float] | None = None, until: float | None = None) -> None:
    """``steps`` actions (or until ``until``) from episode ``first`` on, in a circle; episodes are
    only begun at their first step, so a client may end in the middle of one."""
    rng = random.Random(person.user.id)
    done, episode = 0, first
    while True:
        for step in episodes[episode % len(episodes)]:
            if done >= steps or (until is not None and time.perf_counter() >= until):
                return
            if think is not None:
                await asyncio.sleep(rng.uniform(*think))
                if until is not None and time.perf_counter() >= until:
                    return
            try:
                await step(person)
            except AssertionError:  # the bot's message had not the button expected: note it
                person.off_script += 1  # and go on with the next part of the mix
                break
            finally:
                done += 1
        episode += 1


@dataclass
class Result:
    label: str
    updates: int
    seconds: float
    latencies: list[float] = field(default_factory=list)
    flood: int = 0
    failed: int = 0
    off_script: int = 0
    bot_cpu: float = 0.0
    bench_cpu: float = 0.0
    calls: collections.Counter[str] = field(default_factory=collections.Counter)

    @property
    def rate(self) -> float:
        return self.updates / self.seconds

    def line(self) -> str:
        extra = f", {self.flood} 429s" if self.flood else ""
        extra += f", {self.failed} failed calls" if self.failed else ""
        extra += f", {self.off_script} replies without the button expected" if self.off_script else ""
        return f"  {self.label:<16} {self.rate:7.1f} updates/s, {latency_line(self.latencies)}{extra}"

    def cpu_line(self) -> str:
        """CPU per update: the bot's process, and this one's (the emulator and the clients)."""
        return (f"  {self.label:<16} CPU {1000 * self.bot_cpu / self.updates:5.1f} ms per update in the bot, "
                f"{1000 * self.bench_cpu / self.updates:4.1f} ms in the emulator and clients; Bot API calls per "
                f"update {sum(self.calls.values()) / self.updates:.2f} ("
                + ", ".join(f"{method} {n / self.updates:.2f}" for method, n in self.calls.most_common()) + ")")


async def load(emulator: BotApiEmulator, chats: Chats, ids: list[int], episodes: list[list[Step]],
               steps: int, label: str, bot: BotProcess) -> Result:
    """Every client of ``ids`` does ``steps`` actions at once; the figures."""
    latencies: list[float] = []
    people = [Person(chats, emulator.user(i, first_name="C"), latencies) for i in ids]
    failures = len(emulator.state.failures)
    bot_cpu, bench_cpu, calls = cpu_seconds(bot.pid), cpu_seconds(), len(emulator.state.calls)
    begin = time.perf_counter()
    await asyncio.gather(*(act(p, episodes, n, steps) for n, p in enumerate(people)))
    seconds = time.perf_counter() - begin
    bot_cpu, bench_cpu = cpu_seconds(bot.pid) - bot_cpu, cpu_seconds() - bench_cpu
    methods = collections.Counter(call.method for call in emulator.state.calls[calls:])
    flood, failed = emulator_failures(emulator, failures)
    result = Result(label, sum(p.actions for p in people), seconds, latencies, flood, failed,
                    sum(p.off_script for p in people), bot_cpu, bench_cpu, methods)
    print(f"{result.line()}  [{len(ids)} clients x {steps}]", file=sys.stderr, flush=True)
    return result


# ----------------------------------------------------------------------------- the database


async def enrol(values: dict, ids: list[int]) -> None:
    """Clients of one therapist, enrolled with consent, as a join leaves them (written
    directly: joining is not what is measured)."""
    services = await open_services(make_settings(values))
    try:
        version = services.consent.current_version
        async with services.sessions.begin() as session:
            people = PeopleRepository(session)
            therapist = await people.get_by_telegram_id(THERAPIST_ID)
            if therapist is None:
                therapist = await people.add(PersonRow(telegram_id=THERAPIST_ID, role=Role.THERAPIST, language="en",
                                                       timezone="Europe/Amsterdam", display_name="Dr. Bench"))
            for telegram_id in ids:
                client = await people.add(PersonRow(telegram_id=telegram_id, role=Role.CLIENT, language="en",
                                                    timezone="Europe/Amsterdam"))
                await LinkRepository(session).add(therapist.id, client.id, utcnow())
                await ConsentRepository(session).add(client.id, version, ConsentChoice.GRANTED, utcnow())
    finally:
        await services.close()


# ----------------------------------------------------------------------------- the runs


async def compare(url: str, args: argparse.Namespace, folder: Path) -> list[str]:
    lines = [f"{database_label(url)}: {args.clients} clients"]
    warm = max(10, args.clients // 10)
    blocks = {mode: block for mode, block in {"lifted": (1_000_000, args.steps), "cap": (2_000_000, args.cap_steps)}.items()
              if args.mode in (mode, "both")}
    emulator = BotApiEmulator()
    async with emulator:
        chats = Chats(emulator)
        values = bot_settings(emulator, url)
        await enrol(values, [base + n for base, _ in blocks.values() for n in range(warm + args.clients)])
        results: dict[tuple[str, str], Result] = {}
        for mode, (base, steps) in blocks.items():
            emulator.flood = NO_FLOOD if mode == "lifted" else TELEGRAM_FLOOD
            echo_base = base + 500_000
            kind = "echo" if mode == "lifted" else "echo-limited"
            async with BotProcess(kind, values, log_file=folder / f"echo-{mode}.log") as echo:
                await load(emulator, chats, [echo_base + n for n in range(warm)], echo_mix(), 5, "warm-up", echo)
                results[mode, "a"] = await load(emulator, chats, [echo_base + warm + n for n in range(args.clients)],
                                                echo_mix(), steps, "(a) echo bot", echo)
            overrides = {"outbox_rate_per_second": 995} if mode == "lifted" else {}
            profile = args.profile / f"bot-{database_label(url)}-{mode}.pstats" if args.profile else None
            async with BotProcess("bot", {**values, **overrides}, log_file=folder / f"bot-{mode}.log",
                                  profile=profile) as ours:
                warming = range(warm if mode == "lifted" else warm // 2)  # every step of the mix once
                await load(emulator, chats, [base + n for n in warming], mix(), 23, "warm-up", ours)
                results[mode, "b"] = await load(emulator, chats, [base + warm + n for n in range(args.clients)],
                                                mix(), steps, "(b) this bot", ours)
        for mode, title in (("lifted", "cap lifted (OUTBOX_RATE_PER_SECOND=995, no flood control)"),
                            ("cap", "at the cap (defaults: 30 messages/s; emulator at Telegram's limits)")):
            if mode not in blocks:
                continue
            a, b = results[mode, "a"], results[mode, "b"]
            lines.append(f" {title}, {blocks[mode][1]} actions each:")
            lines += [a.line(), b.line(), f"  b / a            {b.rate / a.rate:7.2f}"
                      + ("   (goal >= 0.8)" if mode == "lifted" else ""), a.cpu_line(), b.cpu_line()]
    return lines


async def broadcast(url: str, args: argparse.Namespace, folder: Path) -> list[str]:
    first_recipient = 3_000_000
    chatting = [4_000_000 + n for n in range(args.chatting)]
    emulator = BotApiEmulator(flood=TELEGRAM_FLOOD)
    async with emulator:
        chats = Chats(emulator)
        values = bot_settings(emulator, url)
        rate = make_settings(values).outbox_rate_per_second
        await enrol(values, chatting)
        recipients = [emulator.user(first_recipient + n, first_name="R") for n in range(args.recipients)]
        # The chatting clients are in the audience too, and have pressed Start long ago: were
        # their chats not reachable yet, the broadcast's 403 would make them inactive.
        for user in recipients + [emulator.user(i, first_name="C") for i in chatting]:
            emulator.state.chats[user.id].reachable = True
        services = await open_services(make_settings(values))
        try:
            version = services.consent.current_version
            now = utcnow()
            rows = [{"id": new_row_id(), "telegram_id": u.id, "role": "client", "language": "en",
                     "timezone": "Europe/Amsterdam", "active": True, "created_at": now, "updated_at": now}
                    for u in recipients]
            async with services.sessions.begin() as session:
                for start in range(0, len(rows), 1000):
                    await session.execute(insert(PersonRow.__table__), rows[start:start + 1000])
                    await session.execute(insert(ConsentRecord.__table__), [
                        {"person_id": r["id"], "consent_version": version, "choice": ConsentChoice.GRANTED.value,
                         "recorded_at": now} for r in rows[start:start + 1000]])
                staff = await PeopleRepository(session).add(
                    PersonRow(telegram_id=STAFF_ID, role=Role.STAFF, language="en", timezone="Europe/Amsterdam"))
            actor = Identity(STAFF_ID, "Desk", Role.STAFF, staff.id, "en", "Europe/Amsterdam")
            draft = await services.broadcasts.draft(actor, "The practice is closed on Friday afternoon.")
            await services.broadcasts.send(actor, draft, Audience("all"))
            async with services.sessions.begin() as session:  # no notices from the setup
                await session.execute(delete(OutboxMessage))
        finally:
            await services.close()

        def delivered() -> int:
            return sum(1 for u in recipients if emulator.state.chats[u.id].bot_messages)

        profile = args.profile / f"bot-{database_label(url)}-broadcast.pstats" if args.profile else None
        async with BotProcess("bot", values, log_file=folder / "bot-broadcast.log", profile=profile):
            waiting = time.perf_counter() + 120
            while delivered() == 0:
                if time.perf_counter() > waiting:
                    raise TimeoutError("the broadcast did not start within 120 s of the bot")
                await asyncio.sleep(0.05)
            begin, sent_at_begin = time.perf_counter(), delivered()
            latencies: list[float] = []
            people = [Person(chats, emulator.user(i, first_name="C"), latencies) for i in chatting]
            failures, calls = len(emulator.state.failures), len(emulator.state.calls)
            until = begin + args.seconds if args.seconds else None
            episodes = mix()
            talk = asyncio.gather(*(act(p, episodes, n, 10**9, think=args.think,
                                        until=until or float("inf")) for n, p in enumerate(people)))
            if until is None:
                while delivered() < len(recipients):
                    await asyncio.sleep(0.1)
                talk.cancel()
                await asyncio.gather(talk, return_exceptions=True)
            else:
                await talk
            seconds = time.perf_counter() - begin
            sent = delivered() - sent_at_begin
            flood, failed = emulator_failures(emulator, failures)
            window = emulator.state.calls[calls:]
            asked = asked_for(window, set(chatting))
            to_recipients = {u.id for u in recipients}
            others = sum(1 for call in window if call.method in MESSAGE_METHODS
                         and _chat(call) not in to_recipients and _chat(call) not in set(chatting))
    actions = len(latencies)
    return [
        f"{database_label(url)}: broadcast to {args.recipients:,} at {rate:.0f}/s (the default outbox rate) while "
        f"{args.chatting} clients chat, {args.think[0]:g}-{args.think[1]:g} s between actions, {seconds:.0f} s:",
        f"  chatting clients {actions / seconds:7.1f} updates/s, {latency_line(latencies)}   (goal p95 < 1 s)",
        f"  their replies    {asked / seconds:7.1f} messages/s (sends and edits: what counts against the 30/s); "
        f"the broadcast can keep at most {min(rate, LIMIT - asked / seconds) / rate:.3f} of its rate",
        f"  other messages   {others / seconds:7.1f} messages/s (the staff's progress message, notices to therapists); "
        f"with them it can keep at most {min(rate, LIMIT - (asked + others) / seconds) / rate:.3f}",
        f"  broadcast        {sent / seconds:7.1f} messages/s, achieved / configured {sent / seconds / rate:.3f}"
        f"   (goal >= 0.95); {delivered():,} of {args.recipients:,} sent",
        f"  emulator         {flood} 429s, {failed} other failed calls",
    ]


def asked_for(calls: list[ApiCall], chats: set[int]) -> int:
    """Requests to these chats that count against Telegram's overall limit (sends and edits;
    answering a button press does not)."""
    return sum(1 for call in calls if call.method in MESSAGE_METHODS and _chat(call) in chats)


def _chat(call: ApiCall) -> int | None:
    try:
        return int(call.params.get("chat_id"))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


async def main(args: argparse.Namespace) -> None:
    server = os.environ.get("BENCH_DATABASE_URL")
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.logs or Path(tmp)
        output: list[str] = []
        for server_url in ("", *([server] if server else [])):
            async with bench_database(server_url) as url:
                run = broadcast if args.broadcast else compare
                output += await run(url, args, folder)
    print()
    print("\n".join(output))


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=200, help="simulated clients at once (default 200)")
    parser.add_argument("--steps", type=int, default=8, help="actions per client with the cap lifted (8)")
    parser.add_argument("--cap-steps", type=int, default=2, help="actions per client at the cap (2)")
    parser.add_argument("--mode", choices=("both", "lifted", "cap"), default="both",
                        help="cap lifted, at the cap, or both (default)")
    parser.add_argument("--broadcast", action="store_true", help="the broadcast scenario instead")
    parser.add_argument("--recipients", type=int, default=10_000, help="broadcast recipients (10,000)")
    parser.add_argument("--chatting", type=int, default=50, help="clients chatting during the broadcast (50)")
    parser.add_argument("--seconds", type=float, default=60.0,
                        help="how long they chat (60; 0: until the whole broadcast is sent)")
    parser.add_argument("--think", type=float, nargs=2, default=(4.0, 16.0), metavar=("MIN", "MAX"),
                        help="seconds between a chatting client's actions (4 16)")
    parser.add_argument("--profile", type=Path, help="write a cProfile of each bot process to this folder")
    parser.add_argument("--logs", type=Path, help="keep the bots' log files in this folder")
    args = parser.parse_args()
    if args.logs:
        args.logs.mkdir(parents=True, exist_ok=True)
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    return args


if __name__ == "__main__":
    asyncio.run(main(arguments()))
