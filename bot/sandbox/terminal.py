"""A plain-text chat with the bot in the terminal, for ``imrs-bot sandbox``.

A person types lines: plain lines are messages from the current identity, lines starting with
":" are commands (``:help`` lists them). The bot's messages to the current identity are printed
as they arrive, prefixed with the identity's name; what it sends to the others is kept until
one switches to them with ``:as``. Input is read by a thread, so the event loop (and the bot in
it) keeps running while nobody types.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Mapping
from pathlib import Path
from typing import TextIO

from bot.sandbox.emulator import BotApiEmulator, BotMessage, ChatEvent, SimUser, StoredFile

DEFAULT_DOWNLOAD_DIR = Path("var/sandbox")
QUIET_PERIOD = 0.3  # :wait returns once the bot has been silent this long after answering

HELP = """\
Commands:
  <text>           send <text> as the current person (start with "::" to send a text beginning with ":")
  :N               press button N of the newest message with buttons (buttons are shown as [1] [2] ...)
  :as NAME         continue as NAME; ":as" alone lists the people
  :open NAME       open the newest invite link the current person received, as NAME
                   (e.g. as admin: /therapists, invite, then ":open therapist")
  :wait [SECONDS]  wait until the bot has answered and gone quiet (default: up to 5 s), handy in scripts
  :commands        show the bot's command menu for the current person
  :block / :unblock  block or unblock the bot as the current person
  :help            this help
  :quit            leave (end of input does the same)"""


async def run_terminal_chat(
    emulator: BotApiEmulator,
    people: Mapping[str, SimUser],
    *,
    initial: str,
    input_stream: TextIO | None = None,
    output: TextIO | None = None,
    download_dir: Path = DEFAULT_DOWNLOAD_DIR,
) -> None:
    """Chat with the bot behind ``emulator`` as ``people`` (by name), starting as ``initial``.

    Reads lines from ``input_stream`` (default: stdin) until ``:quit`` or end of input, and
    writes to ``output`` (default: stdout). Files the bot sends are saved under
    ``download_dir/<name>/``.
    """
    if initial not in people:
        raise ValueError(f"unknown person {initial!r}; choose one of {sorted(people)}")
    chat = TerminalChat(emulator, people, initial=initial, output=output or sys.stdout, download_dir=download_dir)
    await chat.run(read_lines(input_stream or sys.stdin))


async def read_lines(stream: TextIO) -> AsyncIterator[str]:
    """The lines of ``stream``, read by a daemon thread so that waiting for input blocks nothing."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[str | None] = asyncio.Queue()

    def deliver(line: str | None) -> None:
        with contextlib.suppress(RuntimeError):  # RuntimeError: the event loop is gone, nobody listens
            loop.call_soon_threadsafe(queue.put_nowait, line)

    def reader() -> None:
        try:
            for line in iter(stream.readline, ""):
                deliver(line)
        except (OSError, ValueError):  # the stream was closed under us
            pass
        deliver(None)

    threading.Thread(target=reader, name="terminal-input", daemon=True).start()
    while (line := await queue.get()) is not None:
        yield line.rstrip("\r\n")


class TerminalChat:
    def __init__(self, emulator: BotApiEmulator, people: Mapping[str, SimUser], *, initial: str,
                 output: TextIO, download_dir: Path) -> None:
        self._emulator = emulator
        self._people = dict(people)
        self._current = initial
        self._out = output
        self._download_dir = download_dir
        self._shown = {name: 0 for name in people}  # events of each person's chat printed so far
        self._mark = {name: 0 for name in people}  # events there when the person last did something
        self._announced: set[str] = set()  # people told about as having unread messages
        self._failures_shown = len(emulator.failures)

    @property
    def _person(self) -> SimUser:
        return self._people[self._current]

    async def run(self, lines: AsyncIterator[str]) -> None:
        self._write(f"Sandbox chat with @{self._emulator.username} ({self._emulator.first_name}). "
                    f"You are {self._describe(self._current)}. Type :help for commands.")
        follower = asyncio.create_task(self._follow(), name="terminal-follower")
        try:
            async for line in lines:
                if not await self._handle(line):
                    break
            self._show_new()
        finally:
            follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await follower

    # ---------------------------------------------------------------------------- input

    async def _handle(self, line: str) -> bool:
        """Act on one input line; False to stop."""
        text = line.strip()
        if not text:
            return True
        if text.startswith("::") or not text.startswith(":"):
            await self._act(self._person.send(text[1:] if text.startswith("::") else text))
            return True
        command, _, argument = text[1:].partition(" ")
        argument = argument.strip()
        if command.isdigit():
            await self._press(int(command))
        elif command == "as":
            self._switch(argument)
        elif command == "open":
            await self._open_link(argument)
        elif command == "wait":
            await self._wait(float(argument) if argument.replace(".", "", 1).isdigit() else 5.0)
        elif command == "commands":
            self._show_commands()
        elif command == "block":
            self._person.block()
            self._write(f"[{self._current}] you blocked the bot")
        elif command == "unblock":
            self._person.unblock()
            self._write(f"[{self._current}] you unblocked the bot")
        elif command == "help":
            self._write(HELP)
        elif command in ("quit", "q", "exit"):
            return False
        else:
            self._write(f"unknown command :{command} (:help lists the commands)")
        return True

    async def _act(self, action: Awaitable[object]) -> None:
        """Run a person's action (sending, pressing), reporting misuse instead of crashing."""
        self._show_new()
        self._mark[self._current] = len(self._person.events)
        try:
            await action
        except (AssertionError, ValueError) as error:
            self._write(f"[{self._current}] cannot do that: {error}")

    async def _press(self, number: int) -> None:
        message = next((m for m in reversed(self._person.messages) if m.raw_buttons and not m.deleted), None)
        if message is None:
            self._write(f"[{self._current}] there is no message with buttons")
            return
        buttons = message.raw_buttons
        if not 1 <= number <= len(buttons):
            self._write(f"[{self._current}] message #{message.message_id} has buttons 1 to {len(buttons)}")
            return
        button = buttons[number - 1]
        if "callback_data" not in button:
            target = button.get("url", "something else")
            self._write(f"[{self._current}] [{number}] {button.get('text')} opens {target}; nothing is sent to the bot")
            return
        await self._act(self._person.press(number - 1, message))

    def _switch(self, name: str) -> None:
        if not name:
            for other in self._people:
                unread = len(self._people[other].events) - self._shown[other]
                marker = "*" if other == self._current else " "
                extra = f", {unread} unread" if unread and other != self._current else ""
                self._write(f" {marker} {other}: {self._describe(other)}{extra}")
            return
        if name not in self._people:
            self._write(f"nobody called {name!r}; the people are: {', '.join(self._people)}")
            return
        self._show_new()
        self._current = name
        self._announced.discard(name)
        self._write(f"--- you are now {self._describe(name)} ---")
        self._show_new()

    async def _open_link(self, name: str) -> None:
        """What a person does with an invite link sent to them: tap it, which sends
        ``/start <payload>`` from their own account."""
        pattern = re.compile(rf"https://t\.me/{re.escape(self._emulator.username)}\?start=([A-Za-z0-9_-]+)")
        payload = next(
            (found.group(1) for m in reversed(self._person.messages) if (found := pattern.search(m.content))),
            None,
        )
        if payload is None:
            self._write(f"[{self._current}] no invite link in this chat yet")
            return
        if name not in self._people:
            self._write(f"nobody called {name!r}; the people are: {', '.join(self._people)}")
            return
        self._switch(name)
        await self._act(self._person.send(f"/start {payload}"))

    async def _wait(self, seconds: float) -> None:
        """Wait until the bot did something since the person's last action, then until it is quiet."""
        person, mark = self._person, self._mark[self._current]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while len(person.events) <= mark:
            if loop.time() >= deadline:
                self._write(f"[{self._current}] (no answer from the bot within {seconds:g} s)")
                return
            await self._emulator.state.changed.wait(deadline - loop.time())
        seen, quiet_since = len(person.events), loop.time()
        while (now := loop.time()) < deadline and now - quiet_since < QUIET_PERIOD:
            await self._emulator.state.changed.wait(min(QUIET_PERIOD - (now - quiet_since), deadline - now))
            if len(person.events) != seen:
                seen, quiet_since = len(person.events), loop.time()
        self._show_new()

    def _show_commands(self) -> None:
        person = self._person
        commands = self._emulator.visible_commands(person.chat_id, person.id, person.language_code or "")
        if not commands:
            self._write(f"[{self._current}] the bot has set no commands")
        for command in commands:
            self._write(f"[{self._current}]   /{command['command']} - {command['description']}")

    # --------------------------------------------------------------------------- output

    async def _follow(self) -> None:
        """Print what the bot does as it happens."""
        while True:
            self._show_new()
            await self._emulator.state.changed.wait(None)

    def _show_new(self) -> None:
        person = self._person
        events = person.events
        for event in events[self._shown[self._current]:]:
            self._show_event(event)
        self._shown[self._current] = len(events)
        for name, other in self._people.items():
            if name != self._current and name not in self._announced and len(other.events) > self._shown[name]:
                self._announced.add(name)
                self._write(f"(new for {name}; type :as {name} to read it)")
        failures = self._emulator.failures
        for failure in failures[self._failures_shown:]:
            if failure.method == "getUpdates" and failure.status == 409:
                continue  # a polling restart, not something the person could see
            owner = next((n for n, p in self._people.items() if p.chat_id == failure.params.get("chat_id")), None)
            self._write(f"[{owner or 'sandbox'}] ! the bot's {failure.method} failed: "
                        f"{failure.status} {failure.description}")
        self._failures_shown = len(failures)

    def _show_event(self, event: ChatEvent) -> None:
        prefix = f"[{self._current}]"
        if event.kind == "message" and event.message is not None:
            self._show_message(f"{prefix} bot #{event.message.message_id}:", event.message)
        elif event.kind == "edit" and event.message is not None:
            message = event.message
            previous = message.edits[-1] if message.edits else None
            if previous is not None and (previous.text, previous.caption) == (message.text, message.caption):
                # Only the keyboard changed: don't print the whole text again.
                change = "changed the buttons of" if message.raw_buttons else "removed the buttons from"
                self._write(f"{prefix} (bot {change} #{message.message_id})")
            else:
                self._show_message(f"{prefix} bot edited #{message.message_id}:", message)
        elif event.kind == "delete" and event.message is not None:
            self._write(f"{prefix} bot deleted #{event.message.message_id} ({event.message.content[:40]!r})")
        elif event.kind == "answer" and event.answer is not None and event.answer.text:
            kind = "alert" if event.answer.show_alert else "notice"
            self._write(f"{prefix} bot ({kind}): {event.answer.text}")
        elif event.kind == "action" and event.action is not None:
            self._write(f"{prefix} (bot: {event.action.replace('_', ' ')}...)")

    def _show_message(self, head: str, message: BotMessage) -> None:
        indent = " " * (len(head) + 1)
        lines: list[str] = []
        attachment = message.document or message.photo
        if attachment is not None:
            lines.append(self._save(attachment))
        lines.extend(message.content.splitlines() if message.content else [])
        if message.raw_buttons:
            labels = [f"[{i}] {b.get('text')}" + ("" if "callback_data" in b else " (link)")
                      for i, b in enumerate(message.raw_buttons, start=1)]
            lines.append("  ".join(labels))
        if message.keyboard:
            lines.append("keyboard: " + " | ".join(label for row in message.keyboard for label in row))
        self._write(head + " " + f"\n{indent}".join(lines or ["(empty)"]))

    def _save(self, attachment: StoredFile) -> str:
        """Save a file the bot sent under download_dir/<person>/; describe it in one line."""
        folder = self._download_dir / self._current
        folder.mkdir(parents=True, exist_ok=True)
        name = Path(attachment.file_name or attachment.file_path).name
        target = folder / name
        counter = 1
        while target.exists() and target.read_bytes() != attachment.data:
            target = folder / f"{Path(name).stem}-{counter}{Path(name).suffix}"
            counter += 1
        target.write_bytes(attachment.data)
        size = f"{attachment.size / 1024:.0f} kB" if attachment.size >= 1024 else f"{attachment.size} B"
        label = f"photo {attachment.width}x{attachment.height}" if attachment.kind == "photo" else f"document {name}"
        return f"[{label}, {size} saved to {target}]"

    def _describe(self, name: str) -> str:
        person = self._people[name]
        full_name = " ".join(part for part in (person.first_name, person.last_name) if part)
        return f"{name} ({full_name}, id {person.id})"

    def _write(self, text: str) -> None:
        self._out.write(text + "\n")
        self._out.flush()
