"""Fuzzing the whole bot with arbitrary Telegram updates (issue 16).

Hypothesis generates batches of actions for several people at once: an admin, staff, two
therapists, clients with and without consent, and strangers. Each action becomes a Telegram
update: typed text (odd Unicode, NUL, RTL and zero-width marks, combining and astral
characters, texts over 4,096 characters), commands with and without payloads, presses of the
buttons the bot really sent, forged and replayed button data, edited messages, and update
types the bot does not expect (channel posts, inline queries, polls, reactions, photos,
stickers, group messages, blocking and unblocking). Button presses dominate, so people are
driven deep into the flows (/practice, /reminders, /checkin, /safetyplan, /broadcast,
/appointments, /invite, /setkey, /clients, /therapists, ...). Each person acts on their own,
one update at a time (the next once the bot has processed the last), from a queue Hypothesis
keeps about a batch ahead: nobody waits for the others at the end of a batch, so the bot has
everyone's next update in its inbox while Hypothesis draws the following batch.

The path is the production one, minus the long poll: the bot runs through
``bot.runtime.run_bot`` (handlers, database, persistence, outbox, JobQueue) and its requests go
through python-telegram-bot's HTTP client to the project's Bot API emulator; the updates the
emulator creates are stored in the bot's durable inbox (``bot.inbox``), exactly where polling
stores what getUpdates returns, and the inbox consumer processes them as in production (several chats' at once, each
chat's in order). Two things are switched off because they only throttle: the bot-wide rate
limiter's cap (``OUTBOX_RATE_PER_SECOND=995``, as the
benchmarks do) and the emulator's flood control. ``FUZZ_VIA_POLLING=1`` sends the updates the
whole way instead, through getUpdates, to compare the rates.

Checked:

* no unhandled exception: the application's error handler is never reached (hooked), and
  nobody is sent ``errors.generic``;
* no text a person wrote reaches the logs: every free text carries a unique marker, and the
  log output (the production set-up, ``bot.logs.configure_logging``: its privacy filter and
  library levels, with the bot's own loggers at DEBUG) and the messages of the bot's own
  loggers as logged (before the filter redacts them) never contain one; neither do the
  conversation states nor any plain-text column of the database apart from the few that
  hold what staff and therapists name on purpose (see ``PLAIN_BY_DESIGN``);
* no access the role does not have: a handler restricted to some roles (``@requires``) never
  runs its body for a person of another role (hooked behind the guard), and forged button
  data (altered, someone else's, another role's action signed for the presser, garbage) is
  answered with the refusal or "This button is no longer active";
* no corrupted conversation state: after the run the bot is restarted (conversation states
  are loaded from the database) and everyone can /cancel, gets their own role's /help, and
  /start answers them.

``FUZZ_UPDATES`` sets how many updates per database (default 1,000 in ``make test``, 4,000 in
``.ci/run``'s; ``make fuzz``
runs 4,000 on each database side by side, about two minutes on two cores), ``FUZZ_SEED`` the
seed (printed at the start and in every failure; a run needing more batches than drawn draws
them with seed + 1, + 2, ...).
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import random
import time
from collections import Counter, defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from sqlalchemy import inspect as sa_inspect
from sqlalchemy import text as sql_text
from telegram import Update
from telegram.ext import Application, BaseHandler, ConversationHandler

import handlers.access
import handlers.errors
from bot.callbacks import _SIGNED_ACTIONS
from bot.db.models import Role
from bot.logs import OWN_LOGGERS, configure_logging
from bot.sandbox.emulator import BotApiEmulator, FloodLimits
from bot.sandbox.emulator.records import BotMessage, UserMessage
from bot.sandbox.emulator.state import PendingQuery
from bot.sandbox.emulator.state import now as tg_now
from tests.fixtures_bot import ADMIN_ID, RunningBot, count_finished_jobs, make_settings, prepare_database
from tests.fixtures_db import copied_from_template
from tests.join_support import add_person, client_token, first_line, join, open_chat, plain, services

FUZZ_UPDATES = int(os.environ.get("FUZZ_UPDATES") or 1000)
FUZZ_SEED = int(os.environ.get("FUZZ_SEED") or random.SystemRandom().randrange(2**32))
# FUZZ_VIA_POLLING=1: updates go the whole way, through getUpdates (to compare the rates).
VIA_POLLING = os.environ.get("FUZZ_VIA_POLLING", "") not in ("", "0")
ACTIONS_PER_BATCH = 100  # one Hypothesis example: this many actions, spread over everyone
MARK = "qzfz"  # every free text a person writes carries MARK + a number + "x"
UPDATE_TIMEOUT = 60.0  # an update not processed by then is a hang
WHY = f"FUZZ_SEED={FUZZ_SEED} FUZZ_UPDATES={FUZZ_UPDATES} reproduce the stream"

# Columns in plain text that hold, by design, words people typed that are not clinical:
# names and aliases staff and therapists give, and people's own settings.
PLAIN_BY_DESIGN = {
    ("people", "display_name"),
    ("invites", "alias"),
}


# --------------------------------------------------------------------------- people


@dataclass
class Persona:
    name: str
    role: Role | None  # the role at the start (None: not enrolled)
    user: Any  # SimUser
    language: str = "en"
    history: list[str] = field(default_factory=list)  # callback data of buttons it was shown
    messages: list[int] = field(default_factory=list)  # ids of messages it sent
    doing: str = ""  # the action under way, for reports


# -------------------------------------------------------------------- what people do

ODD = [
    "\u200f", "\u200e", "\u202e", "\u2066", "\u200b", "\u200d", "\ufeff", "\u0301", "\u0308\u0308\u0308",
    "\x00", "\x01", "\x7f", "\U0001d54f", "\U0001f600", "\U0001f9d1\u200d\U0001f91d\u200d\U0001f9d1",
    "\u05e9\u05dc\u05d5\u05dd", "\u0645\u0631\u062d\u0628\u0627", "\u0e01\u0e33", "\ud7a3", "\U00010348",
    "<b>", "</b>", "&amp;", "&lt;", "<a href='x'>", "\\", "%s", "{0}", "{name}", "${x}", "'; DROP TABLE people;--",
    "\n", "\r\n", "\t", "  ", "|", "\U0010fffd", "\u2028", "\u2029", "\u0000\u0000",
]
WORDS = [
    "stop", "STOP", "Stop.", "\u270b", "\u270b\U0001f3fd", "cancel", "/cancel", "yes", "no", "ja", "nee", "ok",
    "0", "5", "8", "10", "11", "-1", "3.5", "٣", "07", "09:00", "21:30", "25:99", "9", "tomorrow 10:00",
    "2031-02-03 10:00", "31-12-2030 14:00", "amsterdam", "Europe/Amsterdam", "London", "Asia/Kolkata",
    "Mars/Olympus", "UTC", "nl", "English", "K7", "Robin", "all", "7",
    "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p",
    "AGE-SECRET-KEY-1QQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQ",
    "-----BEGIN OPENSSH PRIVATE KEY-----", "ssh-ed25519 AAAAC3Nza",
]
COMMANDS = [
    "start", "help", "about", "cancel", "stop", "language", "timezone", "consent", "mydata", "delete",
    "reminders", "learn", "practice", "progress", "safetyplan", "appointments", "checkin", "invite",
    "clients", "setkey", "summaries", "therapists", "staff", "broadcast", "broadcasts", "settings",
    "nonsense", "START", "help@imrs_companion_bot", "help@other_bot",
]
OTHER_UPDATES = [
    "channel_post", "edited_channel_post", "inline_query", "chosen_inline_result", "poll", "poll_answer",
    "block_unblock", "photo", "sticker", "document", "location", "contact", "voice", "group_text",
    "group_command", "inline_callback", "game_callback", "message_reaction", "chat_join_request",
    "edited_message", "forwarded", "reply", "no_text_message", "shipping_query",
]
FORGERIES = ["garbage", "flip_mac", "other_persons", "alter_arg", "other_action_signed", "unsigned", "replay"]

free_texts = st.one_of(
    st.text(max_size=40),
    st.text(st.characters(codec="utf-8"), max_size=30),
    st.lists(st.sampled_from(ODD + WORDS), max_size=8).map("".join),
    st.tuples(st.text(max_size=12), st.integers(110, 700)).map(lambda t: (t[0] or "long ") * t[1]),  # > 4096
)


# Built once (a strategy built inside the composite would be built and validated again for
# every action drawn).
KINDS = st.sampled_from(["press"] * 12 + ["double_tap"] + ["command"] * 3 + ["text"] * 2 + ["word"] * 3
                        + ["forge"] * 2 + ["other"] * 2)
BUTTON_INDEXES = st.integers(0, 15)
PAYLOADS = st.one_of(st.none(), free_texts, st.sampled_from(WORDS), st.text("abcXYZ019_-", max_size=70))
COMMAND_NAMES = st.sampled_from(COMMANDS)
SAID_WORDS = st.sampled_from(WORDS)
HOW_FORGED = st.sampled_from(FORGERIES)
NUMBERS = st.integers(0, 2**16)
FORGED_TEXTS = st.text(max_size=70)
OTHER_KINDS = st.sampled_from(OTHER_UPDATES)


@st.composite
def actions(draw: Callable[..., Any]) -> tuple[str, tuple[Any, ...]]:
    # Mostly presses of the buttons the bot sent last, so that people go deep into the flows;
    # commands start flows (and end the one under way), words answer their questions.
    kind = draw(KINDS)
    if kind in ("press", "double_tap"):
        return kind, (draw(BUTTON_INDEXES),)
    if kind == "command":
        payload = draw(PAYLOADS)
        return kind, (draw(COMMAND_NAMES), payload)
    if kind == "text":
        return kind, (draw(free_texts),)
    if kind == "word":
        return kind, (draw(SAID_WORDS),)
    if kind == "forge":
        return kind, (draw(HOW_FORGED), draw(NUMBERS), draw(FORGED_TEXTS))
    return kind, (draw(OTHER_KINDS), draw(free_texts), draw(NUMBERS))


def batches(people: int) -> st.SearchStrategy[list[tuple[int, tuple[str, tuple[Any, ...]]]]]:
    return st.lists(st.tuples(st.integers(0, people - 1), actions()),
                    min_size=ACTIONS_PER_BATCH, max_size=ACTIONS_PER_BATCH)


def signed_actions() -> set[str]:
    return set(_SIGNED_ACTIONS.values())


# ---------------------------------------------------------------------- the world


class Fuzzer:
    """The bot, the emulator, the people, and what was observed."""

    def __init__(self, bot: RunningBot, emulator: BotApiEmulator, people: list[Persona]) -> None:
        self.bot = bot
        self.emulator = emulator
        self.state = emulator.state
        self.people = people
        self.by_id = {p.user.id: p for p in people}
        self.marks = 0
        self.sent = 0
        self.waiting: dict[int, asyncio.Future[None]] = {}
        self.update_owner: dict[int, Persona] = {}
        self.errors: list[str] = []  # the error handler was reached
        self.violations: list[str] = []
        self.answered: Counter[tuple[str, str]] = Counter()  # (role, handler) -> updates
        self.kinds: Counter[str] = Counter()
        self.refused: set[int] = set()  # update ids that got a refusal
        self.current: dict[int, list[str]] = defaultdict(list)  # update id -> handlers that ran
        self.group = emulator.group(title="Fuzz group")
        self.channel_id = -1_009_999_999_999
        self.labels: dict[int, str] = {}  # update id -> who did what
        self.checked: dict[str, int] = {}  # persona -> bot messages checked so far
        self.feeder: asyncio.Task[None] | None = None
        self.todo: dict[int, deque[tuple[str, tuple[Any, ...]]]] = {}  # person -> actions queued
        self.ready: dict[int, asyncio.Event] = {}  # set when that person has something to do
        self.workers: list[asyncio.Task[None]] = []
        self.backlog = 0  # actions queued, not started
        self.acting = 0  # actions under way
        self.room = asyncio.Event()  # set when the backlog went down or an action failed
        self.failure: BaseException | None = None

    # -- markers -----------------------------------------------------------------------

    def marked(self, text: str) -> str:
        self.marks += 1
        return f"{MARK}{self.marks}x {text}"

    # -- feeding -----------------------------------------------------------------------

    def install_feed(self) -> None:
        """Updates the emulator creates go straight into the bot's durable inbox (bot.inbox),
        where polling puts what getUpdates returns, in the order they were made; the inbox
        consumer processes them as in production."""
        if VIA_POLLING:
            return
        queue = self.state.updates
        application = self.bot.application
        assert application is not None
        inbox = services(self.bot).inbox
        arrived: asyncio.Queue[Update] = asyncio.Queue()

        async def store() -> None:
            while True:
                batch = [await arrived.get()]
                while not arrived.empty():
                    batch.append(arrived.get_nowait())
                await inbox.receive_many(batch)

        if self.feeder is not None:
            self.feeder.cancel()
        self.feeder = asyncio.get_running_loop().create_task(store(), name="fuzz-feed")

        def push(update_type: str, payload: dict[str, Any]) -> dict[str, Any] | None:
            if not queue.accepts(update_type):
                return None
            update = {"update_id": queue._next_id, update_type: payload}
            queue._next_id += 1
            arrived.put_nowait(Update.de_json(update, application.bot))
            return update

        queue.push = push  # type: ignore[method-assign]

    def processed(self, update_id: int) -> None:
        future = self.waiting.pop(update_id, None)
        if future is not None and not future.done():
            future.set_result(None)

    async def _push(self, persona: Persona | None, make: Callable[[], Any]) -> None:
        """Create one update (``make`` pushes it) and wait until the bot has processed it."""
        update_id = self.state.updates._next_id
        future = asyncio.get_running_loop().create_future()
        self.waiting[update_id] = future
        if persona is not None:
            self.update_owner[update_id] = persona
            self.labels[update_id] = f"{persona.name} ({persona.role}): {persona.doing}"
        make()
        if self.state.updates._next_id == update_id:  # filtered out (allowed_updates)
            self.waiting.pop(update_id, None)
            return
        self.sent += 1
        try:
            await asyncio.wait_for(future, UPDATE_TIMEOUT)
        except TimeoutError:
            raise AssertionError(f"update {update_id} not processed within {UPDATE_TIMEOUT}s ({WHY})") from None

    # -- actions -----------------------------------------------------------------------

    # Every person acts on their own (one task each, an update at a time, the next once the bot
    # has processed the last), from a queue of actions that Hypothesis keeps filled: nobody
    # waits for the others at the end of a batch, and the bot always has someone's update.

    def start_people(self) -> None:
        loop = asyncio.get_running_loop()
        self.todo = {i: deque() for i in range(len(self.people))}
        self.ready = {i: asyncio.Event() for i in range(len(self.people))}
        self.workers = [loop.create_task(self._work(i), name=f"fuzz-{p.name}") for i, p in enumerate(self.people)]

    async def add_batch(self, batch: list[tuple[int, tuple[str, tuple[Any, ...]]]]) -> None:
        """Queue one batch of actions, then return once no more than a batch is left to do
        (so that Hypothesis draws the next one while the people act on this one)."""
        self.check()
        for index, action in batch:
            self.todo[index].append(action)
            self.ready[index].set()
        self.backlog += len(batch)
        while self.backlog > ACTIONS_PER_BATCH and self.failure is None:
            self.room.clear()
            await self.room.wait()
        self.check()

    async def drain(self, *, stop: bool = True) -> None:
        """Wait until everyone has done everything queued (and ``stop``: end their tasks)."""
        while (self.backlog or self.acting) and self.failure is None:
            self.room.clear()
            await self.room.wait()
        if stop:
            for worker in self.workers:
                worker.cancel()
            await asyncio.gather(*self.workers, return_exceptions=True)
        self.check()

    async def _work(self, index: int) -> None:
        persona, todo, ready = self.people[index], self.todo[index], self.ready[index]
        while True:
            if not todo:
                ready.clear()
                await ready.wait()
                continue
            kind, args = todo.popleft()
            self.backlog -= 1
            self.acting += 1
            self.kinds[kind] += 1
            persona.doing = f"{kind} {args!r}"[:160]
            try:
                await getattr(self, f"do_{kind}")(persona, *args)
            except Exception as exc:  # the run stops: the next check raises it
                if self.failure is None:
                    self.failure = exc
                    self.room.set()
                raise
            finally:
                self.acting -= 1
            if self.backlog <= ACTIONS_PER_BATCH or not self.acting:
                self.room.set()

    def _chat(self, persona: Persona) -> Any:
        return self.state.chats[persona.user.id]

    def _say(self, persona: Persona, text: str) -> Callable[[], Any]:
        chat = self._chat(persona)

        def make() -> None:
            message_id = self.state.send_user_message(chat, persona.user.person, text)
            persona.messages.append(message_id)

        return make

    def _buttons(self, message: BotMessage) -> list[str]:
        return [b["callback_data"] for b in message.raw_buttons if "callback_data" in b]

    def _newest_with_buttons(self, persona: Persona) -> BotMessage | None:
        for message in reversed(self._chat(persona).bot_messages):
            if not message.deleted and self._buttons(message):
                return message
        return None

    def _press(self, persona: Persona, message: BotMessage, data: str) -> Callable[[], Any]:
        chat = self._chat(persona)
        return lambda: self.state.press_button(chat, persona.user.person, message, data)

    def _remember_buttons(self, persona: Persona) -> None:
        for message in self._chat(persona).bot_messages[-5:]:
            for data in self._buttons(message):
                if data not in persona.history[-200:]:
                    persona.history.append(data)

    async def do_press(self, persona: Persona, index: int) -> None:
        message = self._newest_with_buttons(persona)
        if message is None:  # nothing to press: start something instead
            await self.do_command(persona, COMMANDS[index % len(COMMANDS)], None)
            return
        self._remember_buttons(persona)
        buttons = self._buttons(message)
        await self._push(persona, self._press(persona, message, buttons[index % len(buttons)]))

    async def do_double_tap(self, persona: Persona, index: int) -> None:
        """Two taps on one button, both sent before the bot's answer to the first arrived."""
        message = self._newest_with_buttons(persona)
        if message is None:
            await self.do_command(persona, "help", None)
            return
        data = self._buttons(message)[index % len(self._buttons(message))]
        first = asyncio.ensure_future(self._push(persona, self._press(persona, message, data)))
        await asyncio.sleep(0)  # the first update is queued; the second one follows at once
        await self._push(persona, self._press(persona, message, data))
        await first

    async def do_command(self, persona: Persona, name: str, payload: str | None) -> None:
        text = f"/{name}" if payload is None else f"/{name} {self.marked(payload)}"
        await self._push(persona, self._say(persona, text))

    async def do_text(self, persona: Persona, text: str) -> None:
        await self._push(persona, self._say(persona, self.marked(text)))

    async def do_word(self, persona: Persona, word: str) -> None:
        await self._push(persona, self._say(persona, word))

    async def do_forge(self, persona: Persona, how: str, n: int, text: str) -> None:
        # Under a message that shows buttons: Telegram sends a query only for a button shown.
        message = self._newest_with_buttons(persona)
        if message is None:
            await self.do_command(persona, "help", None)
            return
        self._remember_buttons(persona)
        codec = services(self.bot).callbacks
        own = persona.history or ["learn.menu|x|AAAAAAAAAAA"]
        data = own[n % len(own)]
        expect_refusal = True
        if how == "garbage":
            data = self.marked(text).encode()[:64].decode(errors="ignore")
        elif how == "flip_mac":
            if "|" in data:
                body, _, mac = data.rpartition("|")
                mac = mac[:-1] + ("A" if mac[-1:] != "A" else "B")
                data = f"{body}|{mac}"
            else:
                expect_refusal = False
        elif how == "other_persons":
            others = [d for p in self.people if p is not persona for d in p.history[-50:] if "|" in d]
            if others:
                data = others[n % len(others)]
            else:
                expect_refusal = False
        elif how == "alter_arg":
            parts = data.split("|")
            if len(parts) >= 3:
                parts[1] = str((n % 9) + 1) + parts[1][1:] if parts[1] else "1"
                altered = "|".join(parts)
                if altered == data:
                    expect_refusal = False
                data = altered
            else:
                expect_refusal = False
        elif how == "other_action_signed":
            # A button the bot made for someone else (often of another role, about their
            # records), signed as if made for the presser: only the role and ownership checks
            # at the moment of use stand in the way (the role hooks check those).
            made = [d for p in self.people if p is not persona for d in p.history[-50:]
                    if "|" in d and d.split("|", 1)[0] in signed_actions()]
            if not made:
                return
            action, *args = made[n % len(made)].rpartition("|")[0].split("|")
            try:
                data = codec.pack(persona.user.id, action, *args)
            except ValueError:
                return
            expect_refusal = False
        elif how == "unsigned":
            data = data.rpartition("|")[0] if "|" in data else data + "|1"
            expect_refusal = False
        elif how == "replay":
            expect_refusal = False  # an old button: acted on if still meaningful, else "no longer active"
        update_id = self.state.updates._next_id
        answers_before = len(self.state.callback_answers)
        await self._push(persona, self._press(persona, message, data))
        if expect_refusal and how != "garbage":
            self._check_refused(persona, update_id, answers_before, how)

    def _check_refused(self, persona: Persona, update_id: int, answers_before: int, how: str) -> None:
        """A forged payload in the shape of a signed one: the refusal or "no longer active"."""
        answers = [a for a in self.state.callback_answers[answers_before:] if a.user_id == persona.user.id]
        allowed = {first_line(key, lang) for key in ("access.denied", "fallback.stale_button") for lang in ("en", "nl")}
        texts = [plain(a.text or "").strip().splitlines()[0] if a.text else "" for a in answers]
        if update_id in self.refused or any(t in allowed for t in texts):
            return
        handlers_ran = self.current.get(update_id, [])
        self.violations.append(
            f"forged button ({how}) by {persona.name} ({persona.role}) was not refused: "
            f"answers {texts}, handlers {handlers_ran}"
        )

    async def do_other(self, persona: Persona, kind: str, text: str, n: int) -> None:
        person = persona.user.person
        user = person.to_dict()
        chat = self._chat(persona)
        state = self.state
        marked = self.marked(text or "x")
        base = {"message_id": chat.next_message_id(), "from": user, "chat": chat.to_dict(), "date": tg_now()}
        chat.reachable = True  # whatever they send, they have written to the bot (as send does)
        push = state.updates.push
        if kind in ("inline_callback", "game_callback"):  # answerable, as Telegram's are
            state.callback_queries[f"9{n}" if kind == "inline_callback" else f"8{n}"] = PendingQuery(chat.id, person.id)
        if kind in ("channel_post", "edited_channel_post"):
            post = {"message_id": n + 1, "chat": {"id": self.channel_id, "type": "channel", "title": "News"},
                    "date": tg_now(), "text": marked}
            if kind == "edited_channel_post":
                post["edit_date"] = tg_now()
            make = lambda: push(kind, post)  # noqa: E731
        elif kind == "inline_query":
            make = lambda: push(kind, {"id": str(n), "from": user, "query": marked[:256], "offset": ""})  # noqa: E731
        elif kind == "chosen_inline_result":
            make = lambda: push(kind, {"result_id": str(n), "from": user, "query": marked[:256]})  # noqa: E731
        elif kind == "poll":
            make = lambda: push(kind, {  # noqa: E731
                "id": str(n), "allows_revoting": False, "members_only": False, "question": marked[:300], "options": [{"text": "a", "voter_count": 1, "persistent_id": "o1"}],
                "total_voter_count": 1, "is_closed": False, "is_anonymous": True, "type": "regular",
                "allows_multiple_answers": False})
        elif kind == "poll_answer":
            make = lambda: push(kind, {"poll_id": str(n), "user": user, "option_ids": [0], "option_persistent_ids": ["o1"]})  # noqa: E731
        elif kind == "shipping_query":
            make = lambda: push(kind, {"id": str(n), "from": user, "invoice_payload": marked[:128],  # noqa: E731
                                       "shipping_address": {"country_code": "NL", "state": "", "city": "A",
                                                            "street_line1": "x", "street_line2": "",
                                                            "post_code": "1"}})
        elif kind == "block_unblock":
            await self._push(persona, lambda: state.set_blocked(chat, True))
            await self._push(persona, lambda: state.set_blocked(chat, False))
            return
        elif kind in ("photo", "sticker", "document", "location", "contact", "voice", "no_text_message",
                      "forwarded", "reply"):
            message = dict(base)
            if kind == "photo":
                message["photo"] = [{"file_id": "AgAC" + str(n), "file_unique_id": "u" + str(n), "width": 90,
                                     "height": 90}]
                if n % 2:
                    message["caption"] = marked[:1024]
            elif kind == "sticker":
                message["sticker"] = {"file_id": "CAAC" + str(n), "file_unique_id": "s" + str(n), "type": "regular",
                                      "width": 512, "height": 512, "is_animated": False, "is_video": False,
                                      "emoji": "\U0001f600"}
            elif kind == "document":
                message["document"] = {"file_id": "BQAC" + str(n), "file_unique_id": "d" + str(n),
                                       "file_name": marked[:60] + ".age"}
                message["caption"] = marked[:200]
            elif kind == "location":
                message["location"] = {"latitude": 52.37, "longitude": 4.89}
            elif kind == "contact":
                message["contact"] = {"phone_number": "+31600000000", "first_name": marked[:30]}
            elif kind == "voice":
                message["voice"] = {"file_id": "AwAC" + str(n), "file_unique_id": "v" + str(n), "duration": 3}
            elif kind == "no_text_message":
                message["dice"] = {"emoji": "\U0001f3b2", "value": 1 + n % 6}
            elif kind == "forwarded":
                message["text"] = marked
                message["forward_origin"] = {"type": "hidden_user", "sender_user_name": "Someone", "date": tg_now()}
            elif kind == "reply":
                message["text"] = marked
                replied = chat.bot_messages[-1] if chat.bot_messages else None
                if replied is not None:
                    message["reply_to_message"] = state.message_dict(chat, replied, with_reply=False)
            make = lambda: push("message", message)  # noqa: E731
        elif kind == "edited_message":
            ids = [m for m in persona.messages if isinstance(chat.messages.get(m), UserMessage)]
            if not ids:
                return await self.do_text(persona, text)
            original = chat.messages[ids[n % len(ids)]]
            edited = state.user_message_dict(chat, UserMessage(original.message_id, person.id, marked, original.date))
            edited["edit_date"] = tg_now()
            make = lambda: push("edited_message", edited)  # noqa: E731
        elif kind in ("group_text", "group_command"):
            words = marked if kind == "group_text" else f"/{COMMANDS[n % len(COMMANDS)]}"
            make = lambda: state.send_user_message(self.group._chat, person, words)  # noqa: E731
        elif kind == "inline_callback":
            make = lambda: push("callback_query", {"id": f"9{n}", "from": user, "chat_instance": "1",  # noqa: E731
                                                   "inline_message_id": f"im{n}", "data": marked[:64]})
        elif kind == "game_callback":
            make = lambda: push("callback_query", {"id": f"8{n}", "from": user, "chat_instance": "1",  # noqa: E731
                                                   "game_short_name": "g"})
        elif kind == "message_reaction":
            make = lambda: push(kind, {"chat": chat.to_dict(), "message_id": 1, "user": user,  # noqa: E731
                                       "date": tg_now(), "old_reaction": [],
                                       "new_reaction": [{"type": "emoji", "emoji": "\U0001f44d"}]})
        elif kind == "chat_join_request":
            make = lambda: push(kind, {"chat": self.group._chat.to_dict(), "from": user,  # noqa: E731
                                       "user_chat_id": person.id, "date": tg_now()})
        else:  # pragma: no cover - a kind without a case
            raise AssertionError(kind)
        await self._push(persona, make)

    # -- observing ---------------------------------------------------------------------

    def check(self) -> None:
        """After each batch: the error handler was not reached, no role or button check failed,
        and nobody was told that something went wrong (new messages only)."""
        if self.failure is not None:
            raise AssertionError(f"{WHY}\n{type(self.failure).__name__}: {self.failure}") from self.failure
        problems = list(self.errors) + list(self.violations)
        generic = tuple(first_line("errors.generic", lang) for lang in ("en", "nl"))
        for persona in self.people:
            messages = self._chat(persona).bot_messages
            for message in messages[self.checked.get(persona.name, 0):]:
                if message.text and plain(message.text).lstrip().startswith(generic):
                    problems.append(f"{persona.name} was told errors.generic")
            self.checked[persona.name] = len(messages)
        assert not problems, f"{WHY}\n" + "\n".join(problems[:20])


# ----------------------------------------------------------------------- the hooks


def walk(handlers_: list[BaseHandler]) -> list[BaseHandler]:
    found: list[BaseHandler] = []
    for handler in handlers_:
        if isinstance(handler, ConversationHandler):
            found += walk(handler.entry_points)
            for state_handlers in handler.states.values():
                found += walk(state_handlers)
            found += walk(handler.fallbacks)
        else:
            found.append(handler)
    return found


def hook_handlers(fuzzer: Fuzzer, application: Application, undo: list[Callable[[], None]]) -> None:
    """Record which handler answered each update, and check, behind each role guard, that
    the guarded body runs only for a role it allows. Some handlers and every guard are
    module-level objects: ``undo`` gets what puts them back."""
    wrapped: set[int] = set()
    for group in sorted(application.handlers):
        for handler in walk(application.handlers[group]):
            callback = handler.callback
            if id(callback) in wrapped:
                continue
            name = getattr(callback, "__qualname__", repr(callback))
            module = getattr(callback, "__module__", "")
            allowed = handlers.access.allowed_roles(callback)
            if isinstance(allowed, frozenset) and callback.__closure__:
                cells = dict(zip(callback.__code__.co_freevars, callback.__closure__, strict=True))
                if "callback" in cells:
                    cell, inner = cells["callback"], cells["callback"].cell_contents
                    cell.cell_contents = _behind_guard(fuzzer, inner, allowed, name)
                    undo.append(lambda cell=cell, inner=inner: setattr(cell, "cell_contents", inner))
            wrapped.add(id(callback))
            undo.append(lambda handler=handler, callback=callback: setattr(handler, "callback", callback))
            _record_calls(fuzzer, handler, f"{module.removeprefix('handlers.')}.{name}")


def _record_calls(fuzzer: Fuzzer, handler: BaseHandler, name: str) -> None:
    original = handler.callback

    async def recorded(update: object, context: Any) -> Any:
        if isinstance(update, Update):
            fuzzer.current[update.update_id].append(name)
        return await original(update, context)

    for attribute in ("__allowed_roles__", "__wrapped__", "__qualname__", "__module__", "__name__"):
        if hasattr(original, attribute):
            setattr(recorded, attribute, getattr(original, attribute))
    handler.callback = recorded


def _behind_guard(fuzzer: Fuzzer, inner: Any, allowed: frozenset[Role], name: str) -> Any:
    async def body(update: Update, context: Any) -> Any:
        persona = fuzzer.by_id.get(update.effective_user.id) if update.effective_user else None
        if persona is not None and persona.role not in allowed:
            fuzzer.violations.append(f"{name} (for {sorted(allowed)}) ran for {persona.name} ({persona.role})")
        return await inner(update, context)

    return body


class RawMessages(logging.Handler):
    """The messages (and exception messages) of the bot's own loggers as they were logged:
    first among the root's handlers, so that it sees each record before the privacy filter
    on the output handler rewrites it (redacted message, no exception)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.stream = io.StringIO()

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith(OWN_LOGGERS):
            self.stream.write(record.getMessage() + "\n")
            if record.exc_info and record.exc_info[1] is not None:
                self.stream.write(f"{record.exc_info[1]}\n")


# ------------------------------------------------------------------------ the test


async def enrol_everyone(bot: RunningBot, emulator: BotApiEmulator) -> list[Persona]:
    admin = Persona("admin", Role.ADMIN, emulator.user(ADMIN_ID, first_name="Ada"))
    staff = Persona("staff", Role.STAFF, emulator.user(6001, first_name="Sam"))
    therapist = Persona("therapist", Role.THERAPIST, emulator.user(6002, first_name="Tess"))
    therapist2 = Persona("therapist2", Role.THERAPIST, emulator.user(6003, first_name="Theo", language_code="nl"),
                         language="nl")
    await add_person(bot, 6001, Role.STAFF, display_name="Sam")
    t1 = await add_person(bot, 6002, Role.THERAPIST, display_name="Dr. Tess")
    await add_person(bot, 6003, Role.THERAPIST, display_name="Dr. Theo", language="nl")
    for persona in (admin, staff, therapist, therapist2):
        await open_chat(persona.user)  # Telegram lets the bot write only to people who wrote first
    client = Persona("client", Role.CLIENT, emulator.user(6004, first_name="Cleo"))
    client_nl = Persona("client_nl", Role.CLIENT, emulator.user(6005, first_name="Cas", language_code="nl"),
                        language="nl")
    await join(client.user, await client_token(bot, t1, alias="K7"))
    await join(client_nl.user, await client_token(bot, t1, alias="K8"), language="Nederlands")
    no_consent = Persona("client_no_consent", Role.CLIENT, emulator.user(6006, first_name="Noor"))
    await add_person(bot, 6006, Role.CLIENT)
    stranger = Persona("stranger", None, emulator.user(6007, first_name="Stan"))
    stranger_nl = Persona("stranger_nl", None, emulator.user(6008, first_name="Sien", language_code=None))
    return [admin, staff, therapist, therapist2, client, client_nl, no_consent, stranger, stranger_nl]


@pytest.fixture
async def fuzz_bot(emulator: BotApiEmulator, database_url: str, monkeypatch: pytest.MonkeyPatch):
    emulator.flood = FloodLimits(overall_per_second=None, per_chat_per_second=None)
    if not copied_from_template(database_url):
        await prepare_database(database_url)
    # The production outbox tick (the tests' 0.1 s would be a tenth of the run's CPU), and
    # paced exercises five times faster than a client's, so that people finish some.
    running = RunningBot(make_settings(emulator, database_url, outbox_rate_per_second=995,
                                       outbox_tick_seconds=1.0, practice_time_scale=0.2))
    count_finished_jobs(running, monkeypatch)
    yield running
    await running.stop()


# Generous: a loaded machine processes 10 updates a second or more (an idle core about 75).
@pytest.mark.slow
@pytest.mark.timeout(300 + FUZZ_UPDATES // 10)
async def test_fuzz_arbitrary_updates(fuzz_bot: RunningBot, emulator: BotApiEmulator,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    print(f"fuzz: {WHY}" + (" FUZZ_VIA_POLLING=1" if VIA_POLLING else ""))
    errors_seen: list[str] = []
    labels: dict[int, str] = {}
    original_on_error = handlers.errors.on_error

    async def on_error(update: object, context: Any) -> None:
        update_id = update.update_id if isinstance(update, Update) else None
        label = labels.get(update_id or -1, "")
        failed = [f"{f.method} {f.status} {f.description}" for f in emulator.failures[-3:]]
        errors_seen.append(f"error handler: {type(context.error).__name__} on update {update_id} [{label}]"
                           f" last failed calls {failed}\n"
                           f"{handlers.errors.stack_of(context.error)}")
        await original_on_error(update, context)

    monkeypatch.setattr(handlers.errors, "on_error", on_error)
    refused_updates: set[int] = set()
    original_refuse = handlers.access.refuse

    async def refuse(update: Update, context: Any, *, what: str, reason: str) -> None:
        refused_updates.add(update.update_id)
        await original_refuse(update, context, what=what, reason=reason)

    monkeypatch.setattr(handlers.access, "refuse", refuse)

    # The production log set-up (bot.logs.configure_logging: one handler with the privacy
    # filter, the library loggers' levels), into a buffer, and the bot's own loggers at DEBUG.
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    saved_levels = {name: logger.level for name, logger in logging.root.manager.loggerDict.items()
                    if isinstance(logger, logging.Logger)}
    output = io.StringIO()
    configure_logging("INFO", stream=output, token=emulator.token)
    raw = RawMessages()
    root.handlers.insert(0, raw)
    for name in ("bot", "handlers", "imrs"):
        logging.getLogger(name).setLevel(logging.DEBUG)
    undo: list[Callable[[], None]] = []
    fuzzer: Fuzzer | None = None
    try:
        await fuzz_bot.start()
        people = await enrol_everyone(fuzz_bot, emulator)
        fuzzer = Fuzzer(fuzz_bot, emulator, people)
        fuzzer.errors = errors_seen
        fuzzer.labels = labels
        fuzzer.refused = refused_updates
        application = fuzz_bot.application
        hook_handlers(fuzzer, application, undo)
        original_process = Application.process_update

        async def process_update(self: Application, update: object) -> None:
            try:
                await original_process(self, update)
            finally:
                if isinstance(update, Update) and self is application:
                    owner = fuzzer.update_owner.pop(update.update_id, None)
                    labels.pop(update.update_id, None)
                    ran = fuzzer.current.pop(update.update_id, [])
                    role = owner.role.value if owner and owner.role else "stranger"
                    refused = " (refused)" if update.update_id in refused_updates else ""
                    for name in ran:
                        fuzzer.answered[(role, name + refused)] += 1
                    fuzzer.processed(update.update_id)

        monkeypatch.setattr(Application, "process_update", process_update)
        fuzzer.install_feed()

        loop = asyncio.get_running_loop()
        batch_strategy = batches(len(people))

        def drive(round_seed: int, examples: int) -> None:
            """Hypothesis draws ``examples`` batches (a batch is drawn before the test sees it,
            so no more than needed), and queues them while the count is not reached."""

            @seed(round_seed)
            @settings(max_examples=examples, deadline=None, database=None, phases=[Phase.generate],
                      suppress_health_check=list(HealthCheck), derandomize=False, print_blob=False)
            @given(batch=batch_strategy)
            def queue(batch: list[tuple[int, tuple[str, tuple[Any, ...]]]]) -> None:
                if fuzzer.sent + fuzzer.backlog < FUZZ_UPDATES:
                    asyncio.run_coroutine_threadsafe(fuzzer.add_batch(batch), loop).result()

            queue()

        started, cpu = time.perf_counter(), time.process_time()
        fuzzer.start_people()
        try:
            # An action makes about one update (some none, some two): a round draws what is
            # missing and one batch more; another round (seed + 1, ...) if that fell short.
            for round_ in range(100):
                missing = FUZZ_UPDATES - fuzzer.sent - fuzzer.backlog
                if missing <= 0:
                    await fuzzer.drain(stop=False)
                    if fuzzer.sent >= FUZZ_UPDATES:
                        break
                    continue
                await asyncio.to_thread(drive, FUZZ_SEED + round_, -(-missing // ACTIONS_PER_BATCH) + 1)
        finally:
            await fuzzer.drain()
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
        print(f"fuzz: {fuzzer.sent} updates in {elapsed:.1f} s = {fuzzer.sent / elapsed:.0f} updates/s "
              f"({fuzzer.sent / cpu:.0f} per CPU second); actions {dict(fuzzer.kinds)}")
        assert fuzzer.sent >= FUZZ_UPDATES, f"only {fuzzer.sent} updates were sent ({WHY})"

        # Conversation states load after a restart, and everyone can stop and get help.
        await fuzz_bot.restart()
        fuzzer.install_feed()
        for put_back in reversed(undo):
            put_back()
        undo.clear()
        hook_handlers(fuzzer, fuzz_bot.application, undo)
        application = fuzz_bot.application
        await final_checks(fuzzer)
        fuzzer.check()
        scan_logs(output, raw)
        await scan_database(fuzzer)
        print("fuzz: handlers that answered, by role:")
        for (role, name), count in sorted(fuzzer.answered.items()):
            print(f"  {role:10} {count:7} {name}")
    finally:
        if fuzzer is not None and fuzzer.feeder is not None:
            fuzzer.feeder.cancel()
        for put_back in reversed(undo):
            put_back()
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
        for name, logger in logging.root.manager.loggerDict.items():
            if isinstance(logger, logging.Logger):
                logger.setLevel(saved_levels.get(name, logging.NOTSET))


async def final_checks(fuzzer: Fuzzer) -> None:
    """Everyone can /cancel until nothing is left, gets their own role's help, and /start answers."""
    for persona in fuzzer.people:
        user = persona.user
        identity = await services(fuzzer.bot).people.identify(user.id, user.first_name, user.language_code)
        nothing = first_line("cancel.nothing", identity.language)  # /language may have changed it
        answers = []
        for _ in range(4):
            before = len(user.messages)
            await fuzzer._push(persona, fuzzer._say(persona, "/cancel"))
            replies = [plain(m.text or m.caption or "") for m in user.messages[before:]]
            answers.append([r[:80] for r in replies])
            if any(r.strip().startswith(nothing) for r in replies):
                break
        else:
            raise AssertionError(f"{persona.name}: /cancel never reached 'nothing to cancel': {answers} ({WHY})")
        identity = await services(fuzzer.bot).people.identify(user.id, user.first_name, user.language_code)
        if persona.role is not None:
            assert identity.role in (persona.role, None), (persona.name, identity.role)  # a client may /delete
        lang = identity.language
        before = len(user.messages)
        await fuzzer._push(persona, fuzzer._say(persona, "/help"))
        replies = [plain(m.text or "") for m in user.messages[before:]]
        expected = first_line(f"help.{identity.menu}", lang)
        assert replies and replies[0].strip().startswith(expected), (persona.name, replies[:1], expected, WHY)
        before = len(user.messages)
        await fuzzer._push(persona, fuzzer._say(persona, "/start"))
        assert len(user.messages) > before, f"{persona.name}: /start went unanswered ({WHY})"


def scan_logs(output: io.StringIO, raw: RawMessages) -> None:
    leaks = []
    for name, stream in (("log output", output), ("bot's own log messages", raw.stream)):
        for line in stream.getvalue().splitlines():
            if MARK in line:
                leaks.append(f"{name}: {line[:300]!r}")
    assert not leaks, f"{WHY}\n" + "\n".join(leaks[:20])


async def scan_database(fuzzer: Fuzzer) -> None:
    """No marked text in any plain-text column (encrypted columns hold ciphertext)."""
    engine = services(fuzzer.bot).engine
    found: list[str] = []
    async with engine.connect() as connection:
        tables = await connection.run_sync(lambda c: {t: [col["name"] for col in sa_inspect(c).get_columns(t)]
                                                      for t in sa_inspect(c).get_table_names()})
        for table, columns in tables.items():
            for column in columns:
                if (table, column) in PLAIN_BY_DESIGN:
                    continue
                rows = await connection.execute(sql_text(f'SELECT "{column}" FROM "{table}"'))
                for (value,) in rows:
                    if isinstance(value, str) and MARK in value:
                        found.append(f"{table}.{column}: {value[:80]!r}")
                        break
                    if isinstance(value, (dict, list)) and MARK in repr(value):
                        found.append(f"{table}.{column}: {repr(value)[:80]}")
                        break
    assert not found, f"{WHY}\n" + "\n".join(found)

