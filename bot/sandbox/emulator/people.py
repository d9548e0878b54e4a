"""Simulated people and groups: the client side of the emulator, for tests and the terminal chat."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from bot.sandbox.emulator.records import BotMessage, CallbackAnswer, ChatEvent
from bot.sandbox.emulator.state import Chat, EmulatorState, Person

Predicate = Callable[[BotMessage], bool]


class ChatView:
    """What the bot did in one chat, with a cursor over the messages it sent.

    :meth:`next_message` and :meth:`wait_for` hand out each message once, in the order the bot
    sent it (the objects are live: they show later edits too); :attr:`messages` shows them all.
    """

    def __init__(self, state: EmulatorState, chat: Chat) -> None:
        self._state = state
        self._chat = chat
        self._cursor = 0  # index into chat.bot_messages of the first message not handed out
        self._seen_versions: dict[int, int] = {}  # message id -> version last handed out
        self._failures_reported = 0  # failed calls before this index were explained by an earlier wait

    @property
    def chat_id(self) -> int:
        return self._chat.id

    @property
    def messages(self) -> list[BotMessage]:
        """Every message the bot sent to this chat, oldest first, in its current state."""
        return list(self._chat.bot_messages)

    @property
    def last_message(self) -> BotMessage | None:
        """The newest message of the bot here that is not deleted."""
        return next((m for m in reversed(self._chat.bot_messages) if not m.deleted), None)

    def holds_message(self, message_id: int) -> bool:
        """Whether the message ``message_id`` (the person's or the bot's) is still in the chat,
        not deleted (e.g. after the bot deleted something a person should not have sent)."""
        message = self._chat.messages.get(message_id)
        return message is not None and not getattr(message, "deleted", False)

    @property
    def events(self) -> list[ChatEvent]:
        """Everything the bot did here, in order: messages, edits, deletions, answers, chat actions."""
        return list(self._chat.events)

    @property
    def actions(self) -> list[str]:
        """The chat actions (``typing``, ``upload_document``, ...) the bot sent here."""
        return [e.action for e in self._chat.events if e.action is not None]

    async def next_message(self, timeout: float | None = None) -> BotMessage:
        """The next message the bot sends here that was not handed out yet.

        Every wait fails after ``timeout`` seconds, by default the emulator's ``patience``
        (5 s; the tests allow more, so that a busy machine does not fail them: a wait ends
        as soon as what it waits for happens)."""
        return await self._take(lambda _: True, self._timeout(timeout), "new message")

    async def wait_for(self, predicate: Predicate, timeout: float | None = None) -> BotMessage:
        """The next message (not handed out yet) matching ``predicate``; messages before it are skipped."""
        return await self._take(predicate, self._timeout(timeout), "message matching the predicate")

    async def wait_for_edit(self, message: BotMessage, timeout: float | None = None) -> BotMessage:
        """Wait until ``message`` has an edit this view has not handed out yet; returns the message."""
        timeout = self._timeout(timeout)
        seen = self._seen_versions.get(message.message_id, 0)
        await self._until(lambda: message.version > seen or message.deleted, timeout,
                          f"edit of message #{message.message_id} ({message.content[:40]!r})")
        if message.version <= seen:
            raise AssertionError(f"message #{message.message_id} was deleted instead of edited")
        self._seen_versions[message.message_id] = message.version
        return message

    async def expect_silence(self, seconds: float, *, processing_timeout: float = 15.0) -> None:
        """Assert that the bot sends no message here during the next ``seconds`` (failing at the first one).

        When the bot reports the updates it has processed (the tests' ``emulator`` fixture
        arranges that), the silence also lasts until the bot has processed every update
        created so far, however long that takes on a busy machine (up to
        ``processing_timeout``; a bot that is not running cannot answer anyway), so the
        window cannot end before the bot has even read what it should not answer.
        """
        cursor = len(self._chat.bot_messages)
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = started + seconds
        newest = self._state.updates.last_id

        def waiting() -> bool:
            if len(self._chat.bot_messages) != cursor:
                return False
            if loop.time() < deadline:
                return True
            return bool(self._state.unprocessed_updates(newest)) and loop.time() < started + processing_timeout

        while waiting():
            remaining = deadline - loop.time()
            if remaining <= 0:
                remaining = started + processing_timeout - loop.time()
            await self._state.changed.wait(max(remaining, 0.001))
        if len(self._chat.bot_messages) > cursor:
            sent = self._chat.bot_messages[cursor:]
            raise AssertionError(f"expected silence for {seconds}s, but the bot sent {sent}")

    def _timeout(self, timeout: float | None) -> float:
        return self._state.patience if timeout is None else timeout

    async def _take(self, predicate: Predicate, timeout: float, what: str) -> BotMessage:
        skipped: list[BotMessage] = []
        found: list[BotMessage] = []

        def scan() -> bool:
            while self._cursor < len(self._chat.bot_messages):
                message = self._chat.bot_messages[self._cursor]
                self._cursor += 1
                if predicate(message):
                    found.append(message)
                    return True
                skipped.append(message)
            return False

        await self._until(scan, timeout, what, skipped)
        message = found[0]
        self._seen_versions[message.message_id] = message.version
        self._failures_reported = len(self._state.failures)
        return message

    async def _until(self, condition: Callable[[], bool], timeout: float, what: str,
                     skipped: list[BotMessage] | None = None) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        first_event = len(self._chat.events)
        while not condition():
            remaining = deadline - loop.time()
            if remaining <= 0:
                report = self._report(what, timeout, skipped or [], first_event, self._failures_reported)
                self._failures_reported = len(self._state.failures)
                raise AssertionError(report)
            await self._state.changed.wait(remaining)

    def _report(self, what: str, timeout: float, skipped: list[BotMessage], first_event: int,
                first_failure: int) -> str:
        """Why a wait failed: what the bot did meanwhile, which of its calls failed lately, what is pending."""
        lines = [f"no {what} from the bot in chat {self.chat_id} within {timeout}s"]
        if skipped:
            lines.append(f"  skipped (not matching): {skipped}")
        for event in self._chat.events[first_event:]:
            if event.kind != "message":
                detail = event.message or event.answer or event.action
                lines.append(f"  meanwhile: {event.kind} {detail}")
        for failure in self._state.failures[first_failure:]:
            if failure.params.get("chat_id") in (None, self.chat_id):
                lines.append(f"  failed call: {failure.method} -> {failure.status} {failure.description}")
        pending = len(self._state.updates.pending)
        if pending:
            lines.append(f"  {pending} update(s) still pending: the bot has not fetched or confirmed them")
        return "\n".join(lines)


class SimUser(ChatView):
    """A person in a private chat with the bot (the chat id is the user id, as on Telegram)."""

    def __init__(self, state: EmulatorState, chat: Chat, person: Person) -> None:
        super().__init__(state, chat)
        self.person = person

    @property
    def id(self) -> int:
        return self.person.id

    @property
    def first_name(self) -> str:
        return self.person.first_name

    @property
    def last_name(self) -> str | None:
        return self.person.last_name

    @property
    def username(self) -> str | None:
        return self.person.username

    @property
    def language_code(self) -> str | None:
        return self.person.language_code

    @property
    def blocked(self) -> bool:
        return self._chat.blocked

    @property
    def callback_answers(self) -> list[CallbackAnswer]:
        """The bot's answerCallbackQuery calls for this person's button presses, in order."""
        return [a for a in self._state.callback_answers if a.user_id == self.id]

    async def send(self, text: str) -> int:
        """Send ``text`` to the bot; returns the message id. ``/command`` gets its bot_command entity."""
        self._check_can_write()
        if not text.strip():
            raise ValueError("Telegram clients do not send empty messages")
        return self._state.send_user_message(self._chat, self.person, text)

    async def edit(self, message_id: int, text: str) -> None:
        """Edit a message this person sent (``send`` returned its id): an edited_message update."""
        self._check_can_write()
        self._state.edit_user_message(self._chat, self.person, message_id, text)

    async def press(self, button: str | int, message: BotMessage | None = None) -> str:
        """Press an inline button of ``message`` (default: the newest one with buttons); returns the query id.

        ``button`` is the button's exact label or its 0-based index in reading order.
        """
        self._check_can_write()
        return press(self._state, self._chat, self.person, button, message)

    async def press_data(self, data: str, message: BotMessage | None = None) -> str:
        """What a modified client can do: send a callback query with any ``data``, as if from a
        button under ``message`` (default: the bot's newest message here). For forgery tests."""
        self._check_can_write()
        if message is None:
            message = next((m for m in reversed(self._chat.bot_messages) if not m.deleted), None)
            if message is None:
                raise AssertionError(f"the bot has sent nothing in chat {self._chat.id} to press under")
        return self._state.press_button(self._chat, self.person, message, data)

    async def wait_for_callback_answer(self, query_id: str, timeout: float | None = None) -> CallbackAnswer:
        """The bot's answer to the button press ``query_id``."""
        timeout = self._timeout(timeout)
        found: list[CallbackAnswer] = []

        def answered() -> bool:
            found.extend(a for a in self._state.callback_answers if a.query_id == query_id)
            return bool(found)

        await self._until(answered, timeout, f"answer to callback query {query_id}")
        return found[0]

    def block(self) -> None:
        """Block the bot: its sends here answer 403 "Forbidden: bot was blocked by the user"."""
        self._state.set_blocked(self._chat, True)

    def unblock(self) -> None:
        self._state.set_blocked(self._chat, False)

    def _check_can_write(self) -> None:
        if self._chat.blocked:
            raise AssertionError(f"{self.first_name} has blocked the bot; call unblock() first")

    def __repr__(self) -> str:
        return f"<SimUser {self.id} {self.first_name!r}>"


class SimGroup(ChatView):
    """A group the bot is a member of; people write in it with :meth:`send`."""

    @property
    def id(self) -> int:
        return self._chat.id

    @property
    def title(self) -> str:
        return self._chat.title or ""

    @property
    def bot_is_member(self) -> bool:
        """False once the bot has left the group (its messages here then answer 403)."""
        return not self._chat.bot_left

    def add_bot(self, by: SimUser) -> None:
        """``by`` adds the bot (back) to the group; the bot gets a my_chat_member update."""
        self._state.set_bot_membership(self._chat, True, by.person.to_dict())

    async def send(self, user: SimUser, text: str) -> int:
        """``user`` writes ``text`` in the group (the bot gets it while it is a member); returns the message id."""
        if not text.strip():
            raise ValueError("Telegram clients do not send empty messages")
        return self._state.send_user_message(self._chat, user.person, text)

    async def press(self, user: SimUser, button: str | int, message: BotMessage | None = None) -> str:
        """``user`` presses an inline button of a message in the group; returns the query id."""
        return press(self._state, self._chat, user.person, button, message)

    def __repr__(self) -> str:
        return f"<SimGroup {self.id} {self.title!r}>"


def press(state: EmulatorState, chat: Chat, person: Person, button: str | int, message: BotMessage | None) -> str:
    if message is None:
        message = next((m for m in reversed(chat.bot_messages) if not m.deleted and m.button_list), None)
        if message is None:
            raise AssertionError(f"no message with inline buttons in chat {chat.id}")
    if message.deleted:
        raise AssertionError(f"message #{message.message_id} was deleted; its buttons are gone")
    buttons = message.raw_buttons
    labels = [b.get("text") for b in buttons]
    if isinstance(button, int):
        if not 0 <= button < len(buttons):
            raise AssertionError(f"message #{message.message_id} has no button {button}: {labels}")
        chosen = buttons[button]
    else:
        if button not in labels:
            raise AssertionError(f"message #{message.message_id} has no button {button!r}: {labels}")
        chosen = buttons[labels.index(button)]
    if "callback_data" not in chosen:
        raise AssertionError(f"button {chosen.get('text')!r} sends no callback query (it has {sorted(chosen)})")
    return state.press_button(chat, person, message, chosen["callback_data"])
