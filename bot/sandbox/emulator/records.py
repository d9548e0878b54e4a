"""What the emulator remembers: messages, files, calls, callback answers, webhook settings."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, NamedTuple

Entity = dict[str, Any]


class _ReadableByName:
    """Lets a dataclass's fields be read by name too (``record["text"]``), like the JSON they stand for."""

    __dataclass_fields__: ClassVar[dict[str, Any]]

    def __getitem__(self, name: str) -> Any:
        if name not in self.__dataclass_fields__:
            raise KeyError(name)
        return getattr(self, name)


class ApiCall(NamedTuple):
    """One Bot API request as received: the method's canonical name and its decoded parameters."""

    method: str
    params: dict[str, Any]


@dataclass(frozen=True)
class FailedCall:
    """A request the emulator answered with an error (validation, fault injection, flood control)."""

    method: str
    params: dict[str, Any]
    status: int
    description: str


class Button(NamedTuple):
    """An inline keyboard button: its label and its callback_data (or url, for link buttons)."""

    text: str
    value: str | None


@dataclass(eq=False)
class StoredFile:
    """A file the bot uploaded; downloadable at ``<base_file_url><token>/<file_path>``."""

    file_id: str
    file_unique_id: str
    kind: Literal["document", "photo"]
    file_name: str | None
    mime_type: str | None
    data: bytes
    file_path: str
    width: int = 0
    height: int = 0

    @property
    def size(self) -> int:
        return len(self.data)

    def to_dict(self) -> dict[str, Any]:
        """The Document, or the one PhotoSize, that the Bot API returns for this file."""
        result: dict[str, Any] = {"file_id": self.file_id, "file_unique_id": self.file_unique_id,
                                  "file_size": self.size}
        if self.kind == "photo":
            result.update(width=self.width, height=self.height)
        else:
            if self.file_name:
                result["file_name"] = self.file_name
            if self.mime_type:
                result["mime_type"] = self.mime_type
        return result


@dataclass(frozen=True)
class MessageVersion:
    """The content a message had before an edit."""

    text: str | None
    caption: str | None
    entities: list[Entity]
    reply_markup: dict[str, Any] | None
    date: int


@dataclass(eq=False)
class BotMessage:
    """A message the bot sent, in its current state (after edits; ``deleted`` once deleted)."""

    message_id: int
    chat_id: int
    date: int
    text: str | None = None
    caption: str | None = None
    parse_mode: str | None = None
    entities: list[Entity] = field(default_factory=list)  # of the text, or of the caption
    reply_markup: dict[str, Any] | None = None
    document: StoredFile | None = None
    photo: StoredFile | None = None
    protect_content: bool = False
    reply_to_message_id: int | None = None
    edits: list[MessageVersion] = field(default_factory=list)  # earlier versions, oldest first
    edit_date: int | None = None
    deleted: bool = False

    @property
    def content(self) -> str:
        """The text, or the caption of a document or photo ("" when there is none)."""
        return self.text if self.text is not None else self.caption or ""

    @property
    def version(self) -> int:
        """How often the message was edited."""
        return len(self.edits)

    @property
    def buttons(self) -> list[list[Button]]:
        """The inline keyboard, row by row."""
        if not self.reply_markup:
            return []
        return [
            [Button(b.get("text", ""), b.get("callback_data", b.get("url"))) for b in row]
            for row in self.reply_markup.get("inline_keyboard", [])
        ]

    @property
    def button_list(self) -> list[Button]:
        """The inline keyboard's buttons in reading order (the order of ``press(index)``)."""
        return [button for row in self.buttons for button in row]

    @property
    def raw_buttons(self) -> list[dict[str, Any]]:
        """The inline keyboard's InlineKeyboardButton objects, as sent, in reading order."""
        if not self.reply_markup:
            return []
        return [button for row in self.reply_markup.get("inline_keyboard", []) for button in row]

    @property
    def keyboard(self) -> list[list[str]]:
        """The labels of a reply keyboard (ReplyKeyboardMarkup) sent with this message."""
        if not self.reply_markup:
            return []
        return [
            [b if isinstance(b, str) else b.get("text", "") for b in row]
            for row in self.reply_markup.get("keyboard", [])
        ]

    def snapshot(self) -> MessageVersion:
        return MessageVersion(self.text, self.caption, copy.deepcopy(self.entities),
                              copy.deepcopy(self.reply_markup), self.edit_date or self.date)

    def __repr__(self) -> str:
        state = " deleted" if self.deleted else (f" edited {self.version}x" if self.edits else "")
        extra = f" buttons={[b.text for b in self.button_list]}" if self.button_list else ""
        attachment = self.document or self.photo
        if attachment is not None:
            extra += f" {attachment.kind}={attachment.file_name or attachment.file_path!r}"
        return f"<BotMessage #{self.message_id} chat={self.chat_id}{state} {self.content[:60]!r}{extra}>"


@dataclass(frozen=True)
class UserMessage:
    """A message a simulated person sent (kept so that ids and replies resolve like Telegram's)."""

    message_id: int
    user_id: int
    text: str
    date: int


@dataclass(frozen=True)
class CallbackAnswer(_ReadableByName):
    """What the bot answered to a button press (answerCallbackQuery); ``answer.text`` or ``answer["text"]``."""

    query_id: str
    user_id: int
    chat_id: int
    text: str | None
    show_alert: bool
    url: str | None
    cache_time: int


@dataclass(frozen=True)
class ChatEvent:
    """Something the bot did in a chat, in order: the feed behind cursors and the terminal chat."""

    kind: Literal["message", "edit", "delete", "answer", "action"]
    message: BotMessage | None = None
    answer: CallbackAnswer | None = None
    action: str | None = None


@dataclass
class WebhookConfig(_ReadableByName):
    """The webhook set with setWebhook, and how delivering to it went; ``webhook.url`` or ``webhook["url"]``."""

    url: str
    secret_token: str | None = None
    allowed_updates: list[str] | None = None
    max_connections: int = 40
    ip_address: str | None = None
    delivered: int = 0
    last_error_date: int | None = None
    last_error_message: str | None = None
