"""Everything the emulated Telegram knows: chats and their messages, files, settings, updates."""

from __future__ import annotations

import base64
import secrets
import struct
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from bot.sandbox.emulator.protocol import ApiError, UploadedFile
from bot.sandbox.emulator.records import (
    ApiCall,
    BotMessage,
    CallbackAnswer,
    ChatEvent,
    FailedCall,
    StoredFile,
    UserMessage,
    WebhookConfig,
)
from bot.sandbox.emulator.updates import Pulse, UpdateQueue

CommandScope = tuple[Any, ...]


def now() -> int:
    return int(time.time())


@dataclass(frozen=True)
class Person:
    """A Telegram user (not a bot)."""

    id: int
    first_name: str
    last_name: str | None = None
    username: str | None = None
    language_code: str | None = "en"

    def to_dict(self) -> dict[str, Any]:
        result: dict[str, Any] = {"id": self.id, "is_bot": False, "first_name": self.first_name}
        for key in ("last_name", "username", "language_code"):
            if getattr(self, key):
                result[key] = getattr(self, key)
        return result


@dataclass(eq=False)
class Chat:
    """A chat the bot is in: a private chat with one person, or a group."""

    id: int
    type: Literal["private", "group", "supergroup"]
    title: str | None = None
    person: Person | None = None  # the other side of a private chat
    # A bot may only write to a person who has written to it first; a group it belongs to, always.
    reachable: bool = False
    blocked: bool = False
    bot_left: bool = False  # the bot left the group (leaveChat)
    messages: dict[int, BotMessage | UserMessage] = field(default_factory=dict)
    bot_messages: list[BotMessage] = field(default_factory=list)
    events: list[ChatEvent] = field(default_factory=list)
    last_message_id: int = 0

    def next_message_id(self) -> int:
        self.last_message_id += 1
        return self.last_message_id

    def to_dict(self) -> dict[str, Any]:
        result: dict[str, Any] = {"id": self.id, "type": self.type}
        if self.person is not None:
            person = self.person.to_dict()
            result.update({k: person[k] for k in ("first_name", "last_name", "username") if k in person})
        else:
            result["title"] = self.title
        return result


@dataclass
class PendingQuery:
    """A callback query the bot has not answered yet."""

    chat_id: int
    user_id: int


class EmulatorState:
    """The emulated world. API methods change it; simulated people read it and add updates."""

    def __init__(self, *, bot_id: int, username: str, first_name: str) -> None:
        self.bot_id = bot_id
        self.bot_username = username
        self.bot_first_name = first_name
        self.chats: dict[int, Chat] = {}
        self.files: dict[str, StoredFile] = {}
        self.updates = UpdateQueue()
        self.callback_queries: dict[str, PendingQuery] = {}
        self.callback_answers: list[CallbackAnswer] = []
        self.commands: dict[tuple[CommandScope, str], list[dict[str, str]]] = {}
        self.descriptions: dict[str, str] = {}
        self.short_descriptions: dict[str, str] = {}
        self.names: dict[str, str] = {}
        self.menu_buttons: dict[int | None, dict[str, Any]] = {}
        self.webhook: WebhookConfig | None = None
        self.calls: list[ApiCall] = []
        self.failures: list[FailedCall] = []
        self.changed = Pulse()  # fired on every chat event
        #: How long SimUser/SimGroup waits last by default before they fail (seconds).
        self.patience = 5.0
        #: Ids of the updates the bot reported as processed (see :meth:`update_processed`);
        #: None while nobody reports them (the emulator cannot see it by itself).
        self.processed_updates: set[int] | None = None
        self._reported_from = 1  # the first update id the reports cover
        self._file_counter = 0
        self._query_counter = 0

    # ------------------------------------------------------------------------ identities

    def bot_user(self) -> dict[str, Any]:
        return {"id": self.bot_id, "is_bot": True, "first_name": self.bot_first_name,
                "username": self.bot_username}

    def get_me(self) -> dict[str, Any]:
        return {**self.bot_user(), "can_join_groups": True, "can_read_all_group_messages": False,
                "supports_inline_queries": False, "can_connect_to_business": False,
                "has_main_web_app": False}

    # ----------------------------------------------------------------------------- chats

    def chat(self, chat_id: int | str) -> Chat:
        """The chat the bot addresses as ``chat_id``, or 400 "chat not found"."""
        chat = self.chats.get(chat_id) if isinstance(chat_id, int) else None
        if chat is None:
            raise ApiError.bad_request("chat not found")
        return chat

    def writable_chat(self, chat_id: int | str) -> Chat:
        """A chat the bot may send to now: known, not blocked, and the person has started the bot."""
        chat = self.chat(chat_id)
        if chat.bot_left:
            raise ApiError.forbidden(f"bot is not a member of the {chat.type} chat")
        if chat.blocked:
            raise ApiError.forbidden("bot was blocked by the user")
        if not chat.reachable:
            raise ApiError.forbidden("bot can't initiate conversation with a user")
        return chat

    def editable_message(self, chat: Chat, message_id: int | None) -> BotMessage:
        """A message of the bot's that it may edit, or Telegram's 400."""
        message = chat.messages.get(message_id) if message_id else None
        if message is None or (isinstance(message, BotMessage) and message.deleted):
            raise ApiError.bad_request("message to edit not found")
        if not isinstance(message, BotMessage):
            raise ApiError.bad_request("message can't be edited")
        return message

    def record(self, chat: Chat, event: ChatEvent) -> None:
        chat.events.append(event)
        self.changed.fire()

    def add_bot_message(self, chat: Chat, message: BotMessage) -> None:
        chat.messages[message.message_id] = message
        chat.bot_messages.append(message)
        self.record(chat, ChatEvent("message", message))

    def message_dict(self, chat: Chat, message: BotMessage, *, with_reply: bool = True) -> dict[str, Any]:
        """The Message object the Bot API returns for a message the bot sent."""
        result: dict[str, Any] = {"message_id": message.message_id, "from": self.bot_user(),
                                  "chat": chat.to_dict(), "date": message.date}
        if message.text is not None:
            result["text"] = message.text
            if message.entities:
                result["entities"] = message.entities
        if message.document is not None:
            result["document"] = message.document.to_dict()
        if message.photo is not None:
            result["photo"] = [message.photo.to_dict()]
        if message.caption:
            result["caption"] = message.caption
            if message.entities:
                result["caption_entities"] = message.entities
        if message.reply_markup and "inline_keyboard" in message.reply_markup:
            result["reply_markup"] = message.reply_markup
        if message.protect_content:
            result["has_protected_content"] = True
        if message.edit_date is not None:
            result["edit_date"] = message.edit_date
        replied = chat.messages.get(message.reply_to_message_id or 0) if with_reply else None
        if isinstance(replied, BotMessage):  # like Telegram, one level deep
            result["reply_to_message"] = self.message_dict(chat, replied, with_reply=False)
        elif isinstance(replied, UserMessage):
            result["reply_to_message"] = self.user_message_dict(chat, replied)
        return result

    def user_message_dict(self, chat: Chat, message: UserMessage) -> dict[str, Any]:
        """The Message object of something a person sent."""
        from_user = self.person(chat, message.user_id)
        result: dict[str, Any] = {"message_id": message.message_id, "from": from_user.to_dict(),
                                  "chat": chat.to_dict(), "date": message.date, "text": message.text}
        entities = command_entities(message.text)
        if entities:
            result["entities"] = entities
        return result

    def person(self, chat: Chat, user_id: int) -> Person:
        if chat.person is not None and chat.person.id == user_id:
            return chat.person
        other = self.chats.get(user_id)
        if other is None or other.person is None:
            raise KeyError(user_id)
        return other.person

    # ------------------------------------------------------- what the bot has processed

    def report_processing(self) -> None:
        """From now on the bot reports each update it has processed (a test hook does)."""
        if self.processed_updates is None:
            self.processed_updates = set()
            self._reported_from = self.updates.last_id + 1

    def update_processed(self, update_id: int) -> None:
        """The bot has finished handling update ``update_id`` (all its handlers ran)."""
        self.report_processing()
        assert self.processed_updates is not None
        self.processed_updates.add(update_id)
        self.changed.fire()

    def unprocessed_updates(self, up_to: int) -> list[int]:
        """Of the updates created so far (ids up to ``up_to``) and still wanted by the bot,
        those not reported processed; empty when nobody reports processing."""
        done = self.processed_updates
        if done is None:
            return []
        skip = self.updates.dropped
        return [u for u in range(self._reported_from, up_to + 1) if u not in done and u not in skip]

    # ------------------------------------------------------------------- person → bot

    def send_user_message(self, chat: Chat, person: Person, text: str) -> int:
        """A person writes ``text`` in ``chat``: store it and create the message update."""
        message = UserMessage(chat.next_message_id(), person.id, text, now())
        chat.messages[message.message_id] = message
        if chat.type == "private":
            chat.reachable = True
        if not chat.bot_left:
            self.updates.push("message", self.user_message_dict(chat, message))
        return message.message_id

    def edit_user_message(self, chat: Chat, person: Person, message_id: int, text: str) -> None:
        """A person edits a message they sent: the new text and the edited_message update."""
        message = chat.messages.get(message_id)
        if not isinstance(message, UserMessage) or message.user_id != person.id:
            raise KeyError(f"no message #{message_id} of {person.id} in chat {chat.id}")
        message = UserMessage(message.message_id, message.user_id, text, message.date)
        chat.messages[message_id] = message
        edited = self.user_message_dict(chat, message)
        edited["edit_date"] = now()
        if not chat.bot_left:
            self.updates.push("edited_message", edited)

    def press_button(self, chat: Chat, person: Person, message: BotMessage, data: str) -> str:
        """A person presses an inline button with ``data`` under ``message``: the callback_query update."""
        self._query_counter += 1
        query_id = str(4_242_000_000_000_000_000 + self._query_counter)  # shaped like Telegram's
        self.callback_queries[query_id] = PendingQuery(chat.id, person.id)
        if chat.type == "private":
            chat.reachable = True
        self.updates.push("callback_query", {
            "id": query_id,
            "from": person.to_dict(),
            "message": self.message_dict(chat, message),
            "chat_instance": str((chat.id * 2_654_435_761) % 2**63),
            "data": data,
        })
        return query_id

    def set_blocked(self, chat: Chat, blocked: bool) -> None:
        """A person blocks or unblocks the bot; the bot gets a my_chat_member update, as on Telegram."""
        if chat.blocked == blocked or chat.person is None:
            return
        chat.blocked = blocked
        statuses = ("member", "kicked") if blocked else ("kicked", "member")
        self._bot_status_changed(chat, chat.person.to_dict(), *statuses)

    def set_bot_membership(self, chat: Chat, member: bool, by: dict[str, Any]) -> None:
        """The bot leaves a group (``by`` itself) or is added back to it (``by`` a person)."""
        if chat.bot_left != member:
            return
        chat.bot_left = not member
        self._bot_status_changed(chat, by, *(("left", "member") if member else ("member", "left")))

    def _bot_status_changed(self, chat: Chat, by: dict[str, Any], old: str, new: str) -> None:
        """The my_chat_member update Telegram sends when the bot's status in a chat changes."""

        def member(status: str) -> dict[str, Any]:
            return {"status": status, "user": self.bot_user(), **({"until_date": 0} if status == "kicked" else {})}

        self.updates.push("my_chat_member", {"chat": chat.to_dict(), "from": by, "date": now(),
                                             "old_chat_member": member(old), "new_chat_member": member(new)})

    def answer_callback(self, query_id: str, text: str | None, show_alert: bool, url: str | None,
                        cache_time: int) -> None:
        """The bot answers a button press (each one only once, as on Telegram)."""
        query = self.callback_queries.pop(query_id, None)
        if query is None:
            raise ApiError.bad_request("query is too old and response timeout expired or query ID is invalid")
        answer = CallbackAnswer(query_id, query.user_id, query.chat_id, text, show_alert, url, cache_time)
        self.callback_answers.append(answer)
        self.record(self.chats[query.chat_id], ChatEvent("answer", answer=answer))

    # ----------------------------------------------------------------------------- files

    def store_file(self, upload: UploadedFile, kind: Literal["document", "photo"]) -> StoredFile:
        """Keep an uploaded file; photos must be images (PNG, JPEG, GIF or WebP)."""
        if not upload.data:
            raise ApiError.bad_request("file must be non-empty")
        width = height = 0
        file_name = upload.file_name
        if kind == "photo":
            image = image_info(upload.data)
            if image is None:
                raise ApiError.bad_request("IMAGE_PROCESS_FAILED")
            extension, width, height = image
            file_name = None  # a PhotoSize has no name; Telegram keeps photos as photos/file_N.<type>
        else:
            extension = upload.file_name.rsplit(".", 1)[-1] if upload.file_name and "." in upload.file_name else ""
        self._file_counter += 1
        prefix = "BQACAgIAAxkBAAI" if kind == "document" else "AgACAgIAAxkBAAI"
        file_id = prefix + base64.urlsafe_b64encode(secrets.token_bytes(42)).decode().rstrip("=")
        unique_id = "AgAD" + base64.urlsafe_b64encode(secrets.token_bytes(9)).decode()
        path = f"{kind}s/file_{self._file_counter}" + (f".{extension}" if extension else "")
        stored = StoredFile(file_id, unique_id, kind, file_name, upload.mime_type, upload.data, path, width, height)
        self.files[file_id] = stored
        return stored

    def resend_file(self, value: str, kind: Literal["document", "photo"]) -> StoredFile:
        """A file given as a string: the file_id of an earlier upload, or a URL (unreachable here)."""
        if value.lower().startswith(("http://", "https://")):
            raise ApiError.bad_request("failed to get HTTP URL content")
        stored = self.files.get(value)
        if stored is None:
            raise ApiError.bad_request("wrong file identifier/HTTP URL specified")
        if stored.kind != kind:
            raise ApiError.bad_request("type of file mismatch")
        return stored

    def file_by_path(self, path: str) -> StoredFile | None:
        return next((f for f in self.files.values() if f.file_path == path), None)

    # -------------------------------------------------------------------------- commands

    def visible_commands(self, chat_id: int, user_id: int | None = None,
                         language_code: str = "") -> list[dict[str, str]]:
        """The command menu a person sees in ``chat_id``: Telegram's scope order, language then default."""
        chat = self.chat(chat_id)
        scopes: list[CommandScope] = []
        if user_id is not None and chat.type != "private":
            scopes.append(("chat_member", chat_id, user_id))
        scopes.append(("chat", chat_id))
        scopes.append(("all_private_chats",) if chat.type == "private" else ("all_group_chats",))
        scopes.append(("default",))
        for scope in scopes:
            for language in dict.fromkeys((language_code, "")):
                commands = self.commands.get((scope, language))
                if commands:
                    return commands
        return []


def command_entities(text: str) -> list[dict[str, Any]]:
    """The bot_command entity Telegram puts on a message starting with ``/command`` (or ``/command@bot``)."""
    if not text.startswith("/"):
        return []
    end = 1
    while end < len(text) and (text[end].isascii() and (text[end].isalnum() or text[end] in "_@")):
        end += 1
    command = text[1:end]
    name, _, bot = command.partition("@")
    if not name or len(name) > 64 or (bot and not 3 <= len(bot) <= 32) or "@" in bot:
        return []
    return [{"type": "bot_command", "offset": 0, "length": end}]


def image_info(data: bytes) -> tuple[str, int, int] | None:
    """(file extension, width, height) of a PNG, GIF, JPEG or WebP image; None for anything else."""
    if data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) >= 24:
        width, height = struct.unpack(">II", data[16:24])
        return "png", width, height
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        width, height = struct.unpack("<HH", data[6:10])
        return "gif", width, height
    if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return "webp", 0, 0  # the dimensions are not worth decoding VP8 headers for
    if data.startswith(b"\xff\xd8"):
        i = 2
        while i + 9 < len(data):
            if data[i] != 0xFF:
                return None
            marker = data[i + 1]
            length = struct.unpack(">H", data[i + 2:i + 4])[0]
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                height, width = struct.unpack(">HH", data[i + 5:i + 9])
                return "jpg", width, height
            i += 2 + length
    return None
