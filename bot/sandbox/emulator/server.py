"""The emulator's HTTP server and its public face, :class:`BotApiEmulator`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
import string
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal

from aiohttp import web

from bot.sandbox.emulator.flood import FloodControl, FloodLimits
from bot.sandbox.emulator.methods import METHODS
from bot.sandbox.emulator.people import SimGroup, SimUser
from bot.sandbox.emulator.protocol import ApiError, Params, decode_request, ok_response
from bot.sandbox.emulator.records import ApiCall, CallbackAnswer, FailedCall, StoredFile, WebhookConfig
from bot.sandbox.emulator.state import Chat, CommandScope, EmulatorState, Person
from bot.sandbox.emulator.webhook import WebhookDelivery

logger = logging.getLogger(__name__)

_TOKEN_ALPHABET = string.ascii_letters + string.digits + "_-"
_TOKEN_RE = re.compile(r"\d+:[A-Za-z0-9_-]+")
# Telegram accepts uploads of up to 50 MB from bots; a little more for the multipart overhead.
_MAX_REQUEST_BYTES = 51 * 1024 * 1024


def make_token(bot_id: int) -> str:
    """A random token shaped like Telegram's: ``<bot id>:<35 characters of [A-Za-z0-9_-]>``."""
    return f"{bot_id}:" + "".join(secrets.choice(_TOKEN_ALPHABET) for _ in range(35))


@dataclass
class Fault:
    """An injected failure or slowdown; see :meth:`BotApiEmulator.inject`."""

    method: str | None  # lower-case method name; None matches every method
    status: int | None
    remaining: int | None  # answers still to spoil; None = until cleared
    retry_after: int | None = None
    description: str | None = None
    chat_id: int | None = None
    delay: float = 0.0
    hits: int = 0
    until: float | None = None  # time.monotonic() after which it no longer applies; None = no end

    def matches(self, method: str, chat_id: int | None) -> bool:
        return (self.remaining != 0
                and (self.until is None or time.monotonic() < self.until)
                and (self.method is None or self.method == method.lower())
                and (self.chat_id is None or self.chat_id == chat_id))


class BotApiEmulator:
    """A local Telegram Bot API server for tests and the sandbox.

    Point a bot at it with ``ApplicationBuilder().token(emu.token).base_url(emu.base_url)
    .base_file_url(emu.base_file_url)``, create people with :meth:`user` and :meth:`group`, and
    let them write and press buttons. Use as ``async with BotApiEmulator() as emu:`` or call
    :meth:`start` and :meth:`stop`.
    """

    def __init__(
        self,
        *,
        token: str | None = None,
        bot_id: int = 7000000001,
        username: str = "imrs_companion_bot",
        first_name: str = "ImRS Companion",
        host: str = "127.0.0.1",
        port: int = 0,
        flood: FloodLimits | None = None,
    ) -> None:
        self.token = token or make_token(bot_id)
        self.host = host
        self.port = port
        self.state = EmulatorState(bot_id=bot_id, username=username, first_name=first_name)
        self.faults: list[Fault] = []
        #: The flood limits' clock (time.monotonic); a test may set its own before setting
        #: ``flood``, so that a busy machine's slowness does not refill the buckets.
        self.flood_clock: Callable[[], float] = time.monotonic
        self._flood = FloodControl(flood or FloodLimits(), clock=lambda: self.flood_clock())
        self._users: dict[int, SimUser] = {}
        self._groups: dict[int, SimGroup] = {}
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        #: None while up; "refuse" or "close" while down (see :meth:`go_down`).
        self.down: Literal["refuse", "close"] | None = None
        self._back_up: asyncio.TimerHandle | None = None
        self._delivery: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        app = web.Application(client_max_size=_MAX_REQUEST_BYTES)
        app.router.add_route("*", "/bot{token}/{method}", self._handle_api)
        app.router.add_get("/file/bot{token}/{path:.+}", self._handle_file)
        app.router.add_route("*", "/{tail:.*}", self._handle_unknown_path)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        await site.start()
        self._runner, self._site = runner, site
        self.port = runner.addresses[0][1]
        self._delivery = asyncio.create_task(WebhookDelivery(self.state).run(), name="emulator-webhook-delivery")
        logger.info("Bot API emulator listening on %s", self.url)

    async def stop(self) -> None:
        if self._back_up is not None:
            self._back_up.cancel()
            self._back_up = None
        self.state.updates.close()  # pending long polls answer now instead of holding up the shutdown
        if self._delivery is not None:
            self._delivery.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._delivery
            self._delivery = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
            self._site = None

    async def __aenter__(self) -> BotApiEmulator:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()

    @property
    def username(self) -> str:
        """The bot's username (without "@")."""
        return self.state.bot_username

    @property
    def first_name(self) -> str:
        return self.state.bot_first_name

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host  # an IPv6 address
        return f"http://{host}:{self.port}"

    @property
    def base_url(self) -> str:
        """For ``ApplicationBuilder().base_url(...)`` / ``Bot(base_url=...)``."""
        return f"{self.url}/bot"

    @property
    def base_file_url(self) -> str:
        """For ``ApplicationBuilder().base_file_url(...)`` / ``Bot(base_file_url=...)``."""
        return f"{self.url}/file/bot"

    # ------------------------------------------------------------------ people and chats

    def user(self, user_id: int | None = None, *, first_name: str = "Alex", last_name: str | None = None,
             username: str | None = None, language_code: str | None = "en") -> SimUser:
        """The person ``user_id`` (a new id when None); asking again for an id returns the same person."""
        if user_id is None:
            user_id = 1_000_000_001 + len(self._users)
            while user_id in self.state.chats:
                user_id += 1
        if user_id in self._users:
            return self._users[user_id]
        if user_id <= 0 or user_id in self.state.chats:
            raise ValueError(f"{user_id} cannot be a user id here")
        person = Person(user_id, first_name, last_name, username, language_code)
        chat = Chat(user_id, "private", person=person)
        self.state.chats[user_id] = chat
        self._users[user_id] = SimUser(self.state, chat, person)
        return self._users[user_id]

    def group(self, chat_id: int | None = None, title: str = "Practice group") -> SimGroup:
        """A group with the bot in it (a supergroup if the id looks like one, ``-100…``)."""
        if chat_id is None:
            chat_id = -4_000_000_001 - len(self._groups)
            while chat_id in self.state.chats:
                chat_id -= 1
        if chat_id in self._groups:
            return self._groups[chat_id]
        if chat_id >= 0 or chat_id in self.state.chats:
            raise ValueError(f"{chat_id} cannot be a group id here")
        kind: Literal["group", "supergroup"] = "supergroup" if chat_id <= -1_000_000_000_000 else "group"
        chat = Chat(chat_id, kind, title=title, reachable=True)
        self.state.chats[chat_id] = chat
        self._groups[chat_id] = SimGroup(self.state, chat)
        return self._groups[chat_id]

    @property
    def users(self) -> dict[int, SimUser]:
        return dict(self._users)

    # --------------------------------------------------------------- what the bot did

    @property
    def calls(self) -> list[ApiCall]:
        """Every API call received, in order: ``(method, params)``, the method spelled as documented."""
        return self.state.calls

    def calls_to(self, method: str) -> list[dict[str, Any]]:
        """The parameters of every call of ``method`` (case-insensitive)."""
        return [call.params for call in self.state.calls if call.method.lower() == method.lower()]

    @property
    def failures(self) -> list[FailedCall]:
        """Every call answered with an error, with the status and description sent back."""
        return self.state.failures

    @property
    def commands(self) -> dict[tuple[CommandScope, str], list[dict[str, str]]]:
        """setMyCommands results by (scope, language_code): scope ``("default",)``, ``("chat", id)``, …;
        language ``""`` when none was given."""
        return self.state.commands

    def visible_commands(self, chat_id: int, user_id: int | None = None,
                         language_code: str = "") -> list[dict[str, str]]:
        """The command menu a person sees in a chat, after Telegram's scope and language fallback."""
        return self.state.visible_commands(chat_id, user_id, language_code)

    @property
    def webhook(self) -> WebhookConfig | None:
        return self.state.webhook

    @property
    def descriptions(self) -> dict[str, str]:
        return self.state.descriptions

    @property
    def short_descriptions(self) -> dict[str, str]:
        return self.state.short_descriptions

    @property
    def names(self) -> dict[str, str]:
        return self.state.names

    @property
    def menu_buttons(self) -> dict[int | None, dict[str, Any]]:
        """setChatMenuButton results by chat id (None: the default for all chats)."""
        return self.state.menu_buttons

    @property
    def files(self) -> dict[str, StoredFile]:
        return self.state.files

    @property
    def callback_answers(self) -> list[CallbackAnswer]:
        return self.state.callback_answers

    @property
    def pending_updates(self) -> list[dict[str, Any]]:
        """Updates created but not yet confirmed by the bot."""
        return list(self.state.updates.pending)

    async def updates_processed(self, timeout: float = 15.0) -> None:
        """Wait until the bot has processed every update created so far. Needs a bot that
        reports what it processed (``EmulatorState.update_processed``; the tests' fixtures
        arrange it): without one this fails rather than pretend."""
        if self.state.processed_updates is None:
            raise RuntimeError("nothing reports processed updates to this emulator")
        newest = self.state.updates.last_id
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while left := self.state.unprocessed_updates(newest):
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(f"the bot did not process update(s) {left} within {timeout}s")
            await self.state.changed.wait(remaining)

    # ----------------------------------------------------------------- misbehaving

    @property
    def flood(self) -> FloodLimits:
        return self._flood.limits

    @flood.setter
    def flood(self, limits: FloodLimits) -> None:
        self._flood = FloodControl(limits, clock=lambda: self.flood_clock())

    def inject(self, method: str | None, *, status: int | None = None, count: int | None = 1,
               retry_after: int | None = None, description: str | None = None, chat_id: int | None = None,
               delay: float = 0.0, seconds: float | None = None) -> Fault:
        """Spoil the next ``count`` calls of ``method`` (None: any method; ``count=None``: until cleared,
        or for ``seconds`` from now: an outage of a given length).

        With ``status`` they are answered with that error (429 with ``retry_after``, 5xx, 403, …;
        ``description`` defaults to Telegram's wording), after ``delay`` seconds; with only a
        ``delay`` they are answered normally, late. ``chat_id`` narrows it to calls for one chat.
        """
        if status is None and delay <= 0:
            raise ValueError("inject needs a status, a delay or both")
        until = None if seconds is None else time.monotonic() + seconds
        fault = Fault(method.lower() if method else None, status, count, retry_after, description, chat_id, delay,
                      until=until)
        self.faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        self.faults.clear()

    async def go_down(self, mode: Literal["refuse", "close"] = "refuse", *, seconds: float | None = None) -> None:
        """Become unreachable, as api.telegram.org does in an outage or a network failure.

        ``"refuse"``: the port stops listening (new connections are refused) and every open
        connection is closed, so a long poll in progress ends without an answer. ``"close"``:
        connections are accepted but every request is dropped without an answer (a proxy
        that resets them). Until :meth:`come_back`, or for ``seconds``. Calls that reached the
        emulator meanwhile are not recorded in :attr:`calls` (they never reached "Telegram").
        """
        if self._runner is None:
            raise RuntimeError("the emulator is not running")
        if self._back_up is not None:
            self._back_up.cancel()
            self._back_up = None
        self.down = mode
        if mode == "refuse" and self._site is not None:
            await self._site.stop()
            self._site = None
        self._drop_connections()
        if seconds is not None:
            loop = asyncio.get_running_loop()
            self._back_up = loop.call_later(seconds, lambda: loop.create_task(self.come_back()))

    async def come_back(self) -> None:
        """Answer again after :meth:`go_down` (on the same port)."""
        if self._back_up is not None:
            self._back_up.cancel()
            self._back_up = None
        if self._runner is not None and self._site is None:
            site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
            await site.start()
            self._site = site
        self.down = None

    def _drop_connections(self) -> None:
        server = self._runner.server if self._runner is not None else None
        for handler in list(getattr(server, "connections", ()) or ()):
            transport = handler.transport
            if transport is not None:
                transport.abort()

    # ------------------------------------------------------------------------- HTTP

    def _check_token(self, token: str) -> None:
        if token == self.token:
            return
        if _TOKEN_RE.fullmatch(token):
            raise ApiError(401, "Unauthorized")
        raise ApiError(404, "Not Found")

    async def _handle_api(self, request: web.Request) -> web.StreamResponse:
        if self.down is not None:
            return self._hang_up(request)
        name = request.match_info["method"]
        method = METHODS.get(name.lower())
        try:
            self._check_token(request.match_info["token"])
            params = await decode_request(request)
        except ApiError as error:
            return error.response()
        call = ApiCall(method.name if method else name, params)
        self.state.calls.append(call)
        try:
            if method is None:
                logger.warning("Bot API method %r is not emulated; answering 404 like an unknown method", name)
                raise ApiError(404, "Not Found")
            chat_id = _chat_id_of(params)
            await self._apply_faults(method.name, chat_id)
            if method.sends:
                self._flood.take(chat_id)
            result = await method.handler(self.state, Params(params))
            if method.name == "getUpdates":
                # A long poll that began before a fault ends with it, as Telegram's would
                # (its updates are not confirmed, so they come again with the next poll).
                await self._apply_faults(method.name, chat_id, statuses_only=True)
        except ApiError as error:
            self.state.failures.append(FailedCall(call.method, params, error.status, error.description))
            self.state.changed.fire()
            return error.response()
        return ok_response(result)

    async def _apply_faults(self, method: str, chat_id: int | None, *, statuses_only: bool = False) -> None:
        fault = next((f for f in self.faults if f.matches(method, chat_id)
                      and (f.status is not None or not statuses_only)), None)
        if fault is None:
            return
        fault.hits += 1
        if fault.remaining is not None:
            fault.remaining -= 1
        if fault.delay > 0 and not statuses_only:
            await asyncio.sleep(fault.delay)
        if fault.status is not None:
            raise ApiError.for_status(fault.status, fault.description, fault.retry_after)

    @staticmethod
    def _hang_up(request: web.Request) -> web.StreamResponse:
        """Drop the connection without an answer (the client sees it closed)."""
        if request.transport is not None:
            request.transport.abort()
        return web.Response(status=503)  # never reaches the client

    async def _handle_file(self, request: web.Request) -> web.StreamResponse:
        if self.down is not None:
            return self._hang_up(request)
        try:
            self._check_token(request.match_info["token"])
        except ApiError as error:
            return error.response()
        stored = self.state.file_by_path(request.match_info["path"])
        if stored is None:
            return ApiError(404, "Not Found").response()
        return web.Response(body=stored.data, content_type=stored.mime_type or "application/octet-stream")

    async def _handle_unknown_path(self, request: web.Request) -> web.StreamResponse:
        return ApiError(404, "Not Found").response()

    def __repr__(self) -> str:
        return f"<BotApiEmulator {self.url} bot=@{self.state.bot_username}>"


def _chat_id_of(params: dict[str, Any]) -> int | None:
    try:
        chat_id = Params(params).chat_id()
    except ApiError:
        return None
    return chat_id if isinstance(chat_id, int) else None
