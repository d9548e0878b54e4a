"""The Bot API methods the emulator implements, with Telegram's validation and error texts.

Each handler takes the emulator's state and the call's parameters and returns the ``result``
of a successful answer, or raises :class:`ApiError`.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

from bot.sandbox.emulator.markup import MarkupError, normalize_url, parse_text, trim
from bot.sandbox.emulator.protocol import ApiError, Params, UploadedFile
from bot.sandbox.emulator.records import BotMessage, ChatEvent, Entity, UserMessage, WebhookConfig
from bot.sandbox.emulator.state import Chat, CommandScope, EmulatorState, now

Handler = Callable[[EmulatorState, Params], Awaitable[Any]]

MAX_TEXT_LENGTH = 4096
MAX_CAPTION_LENGTH = 1024
MAX_CALLBACK_DATA_BYTES = 64
MAX_INLINE_BUTTONS = 100
NOT_MODIFIED = (
    "message is not modified: specified new message content and reply markup are exactly the same "
    "as a current content and reply markup of the message"
)
CHAT_ACTIONS = frozenset({
    "typing", "upload_photo", "record_video", "upload_video", "record_voice", "upload_voice",
    "upload_document", "choose_sticker", "find_location", "record_video_note", "upload_video_note",
})
_INLINE_BUTTON_ACTIONS = (
    "url", "callback_data", "web_app", "login_url", "switch_inline_query",
    "switch_inline_query_current_chat", "switch_inline_query_chosen_chat", "copy_text",
    "callback_game", "pay",
)
_COMMAND_RE = re.compile(r"[a-z0-9_]{1,32}")
_SECRET_TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{1,256}")


@dataclass(frozen=True)
class Method:
    name: str  # as the Bot API documentation spells it
    handler: Handler
    sends: bool  # sends or edits a message, so flood control applies


METHODS: dict[str, Method] = {}


def api_method(name: str, *, sends: bool = False) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        METHODS[name.lower()] = Method(name, handler, sends)
        return handler

    return register


# ------------------------------------------------------------------------------- helpers


def formatted_text(p: Params, name: str, entities_name: str, *, limit: int, too_long: str) -> tuple[str, list[Entity]]:
    """The text (or caption) parameter ``name``, parsed with parse_mode or given ``entities_name``."""
    raw = p.string(name) or ""
    parse_mode = p.string("parse_mode")
    if parse_mode:
        try:
            text, entities = parse_text(raw, parse_mode)
        except KeyError:
            raise ApiError.bad_request("unsupported parse_mode") from None
        except MarkupError as error:
            raise ApiError.bad_request(f"can't parse entities: {error}") from None
    else:
        given = p.structure(entities_name, "can't parse entities JSON object") or []
        if not isinstance(given, list) or not all(_is_entity(e) for e in given):
            raise ApiError.bad_request("can't parse entities JSON object")
        text, entities = trim(raw, given)
    if len(text) > limit:
        raise ApiError.bad_request(too_long)
    return text, entities


def _is_entity(entity: Any) -> bool:
    return (isinstance(entity, dict) and isinstance(entity.get("type"), str)
            and isinstance(entity.get("offset"), int) and isinstance(entity.get("length"), int))


def message_text(p: Params) -> tuple[str, list[Entity]]:
    text, entities = formatted_text(p, "text", "entities", limit=MAX_TEXT_LENGTH, too_long="message is too long")
    if not text:
        raise ApiError.bad_request("message text is empty")
    return text, entities


def caption_text(p: Params) -> tuple[str | None, list[Entity]]:
    caption, entities = formatted_text(p, "caption", "caption_entities", limit=MAX_CAPTION_LENGTH,
                                       too_long="message caption is too long")
    return caption or None, entities


def reply_markup(p: Params, *, inline_only: bool = False) -> dict[str, Any] | None:
    """The validated reply_markup parameter."""
    markup = p.structure("reply_markup", "can't parse reply keyboard markup JSON object")
    if markup is None:
        return None
    if not isinstance(markup, dict):
        raise ApiError.bad_request("can't parse reply keyboard markup JSON object")
    if "inline_keyboard" in markup:
        _check_inline_keyboard(markup["inline_keyboard"])
    elif inline_only:
        raise ApiError.bad_request("can't parse inline keyboard markup JSON object")
    elif "keyboard" in markup:
        _check_reply_keyboard(markup["keyboard"])
    elif not (markup.get("remove_keyboard") or markup.get("force_reply")):
        raise ApiError.bad_request("can't parse reply keyboard markup JSON object")
    return markup


def _check_inline_keyboard(rows: Any) -> None:
    if not isinstance(rows, list):
        raise ApiError.bad_request('field "inline_keyboard" of the InlineKeyboardMarkup must be an Array')
    count = 0
    for row in rows:
        if not isinstance(row, list):
            raise ApiError.bad_request('field "inline_keyboard" of the InlineKeyboardMarkup must be an Array of Arrays')
        for button in row:
            count += 1
            _check_inline_button(button)
    if count > MAX_INLINE_BUTTONS:
        raise ApiError.bad_request("REPLY_MARKUP_TOO_LONG")


def _check_inline_button(button: Any) -> None:
    prefix = "can't parse inline keyboard button: "
    if not isinstance(button, dict):
        raise ApiError.bad_request(prefix + "InlineKeyboardButton must be an Object")
    if "text" not in button:
        raise ApiError.bad_request(prefix + "Can't find field \"text\"")
    if not isinstance(button["text"], str):
        raise ApiError.bad_request(prefix + 'Field "text" must be of type String')
    if not any(action in button for action in _INLINE_BUTTON_ACTIONS):
        raise ApiError.bad_request(prefix + "Text buttons are unallowed in the inline keyboard")
    if "callback_data" in button:
        data = button["callback_data"]
        if not isinstance(data, str):
            raise ApiError.bad_request(prefix + 'Field "callback_data" must be of type String')
        if not 1 <= len(data.encode("utf-8")) <= MAX_CALLBACK_DATA_BYTES:
            raise ApiError.bad_request("BUTTON_DATA_INVALID")
    if "url" in button:
        url = button["url"]
        if not isinstance(url, str):
            raise ApiError.bad_request(prefix + 'Field "url" must be of type String')
        if normalize_url(url) is None:
            raise ApiError.bad_request(f"inline keyboard button URL '{url}' is invalid: Wrong HTTP URL")


def _check_reply_keyboard(rows: Any) -> None:
    if not isinstance(rows, list) or not all(isinstance(row, list) for row in rows):
        raise ApiError.bad_request('field "keyboard" of the ReplyKeyboardMarkup must be an Array of Arrays')
    for row in rows:
        for button in row:
            text = button if isinstance(button, str) else button.get("text") if isinstance(button, dict) else None
            if not isinstance(text, str):
                raise ApiError.bad_request("can't parse keyboard button: Field \"text\" must be of type String")


def reply_target(chat: Chat, p: Params) -> int | None:
    """The message id to reply to (reply_parameters, or the older reply_to_message_id)."""
    parameters = p.structure("reply_parameters", "can't parse reply parameters JSON object") or {}
    if not isinstance(parameters, dict):
        raise ApiError.bad_request("can't parse reply parameters JSON object")
    message_id = parameters.get("message_id") or p.integer("reply_to_message_id")
    if not message_id:
        return None
    message = chat.messages.get(int(message_id))
    if message is None or getattr(message, "deleted", False):
        if parameters.get("allow_sending_without_reply") or p.flag("allow_sending_without_reply"):
            return None
        raise ApiError.bad_request("message to be replied not found")
    return int(message_id)


def editable_message(state: EmulatorState, p: Params) -> tuple[Chat, BotMessage]:
    if p.has("inline_message_id"):
        raise ApiError.bad_request("MESSAGE_ID_INVALID")  # the emulator has no inline mode
    chat = state.chat(p.chat_id())
    return chat, state.editable_message(chat, p.integer("message_id"))


def apply_edit(state: EmulatorState, chat: Chat, message: BotMessage, *, text: str | None,
               caption: str | None, entities: list[Entity], markup: dict[str, Any] | None,
               parse_mode: str | None) -> dict[str, Any]:
    """Change a message like an edit* method does; an edit without reply_markup drops the inline keyboard."""
    if markup is None and message.reply_markup is not None and "inline_keyboard" not in message.reply_markup:
        markup = message.reply_markup  # a reply keyboard is not part of the message's content: it stays
    if (text, caption, entities, markup) == (message.text, message.caption, message.entities, message.reply_markup):
        raise ApiError.bad_request(NOT_MODIFIED)
    message.edits.append(message.snapshot())
    message.text, message.caption, message.entities, message.reply_markup = text, caption, entities, markup
    message.parse_mode = parse_mode
    message.edit_date = now()
    state.record(chat, ChatEvent("edit", message))
    return state.message_dict(chat, message)


def command_scope(state: EmulatorState, p: Params) -> CommandScope:
    scope = p.structure("scope", "can't parse BotCommandScope JSON object") or {"type": "default"}
    if not isinstance(scope, dict):
        raise ApiError.bad_request("can't parse BotCommandScope JSON object")
    kind = scope.get("type")
    if kind in ("default", "all_private_chats", "all_group_chats", "all_chat_administrators"):
        return (kind,)
    if kind in ("chat", "chat_administrators", "chat_member"):
        chat = state.chat(Params(scope).chat_id())
        if kind == "chat_member":
            return (kind, chat.id, Params(scope).integer("user_id"))
        return (kind, chat.id)
    raise ApiError.bad_request("unsupported bot command scope type specified")


def webhook_info(state: EmulatorState) -> dict[str, Any]:
    info: dict[str, Any] = {"url": "", "has_custom_certificate": False,
                            "pending_update_count": len(state.updates.pending)}
    webhook = state.webhook
    if webhook is not None:
        info.update(url=webhook.url, max_connections=webhook.max_connections)
        if webhook.allowed_updates is not None:
            info["allowed_updates"] = webhook.allowed_updates
        if webhook.ip_address:
            info["ip_address"] = webhook.ip_address
        if webhook.last_error_date is not None:
            info.update(last_error_date=webhook.last_error_date, last_error_message=webhook.last_error_message)
    return info


def _check_webhook_url(url: str) -> None:
    """Telegram insists on HTTPS on ports 443/80/88/8443; the emulator instead only delivers locally."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ApiError.bad_request("bad webhook: An HTTPS URL must be provided for webhook")
    host = parts.hostname
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ApiError.bad_request(
            "bad webhook: the emulator delivers only to loopback addresses (127.0.0.1, ::1, localhost)"
        )


# ----------------------------------------------------------------------- identity & setup


@api_method("getMe")
async def get_me(state: EmulatorState, p: Params) -> Any:
    return state.get_me()


@api_method("logOut")
async def log_out(state: EmulatorState, p: Params) -> Any:
    return True


@api_method("close")
async def close(state: EmulatorState, p: Params) -> Any:
    return True


@api_method("setMyCommands")
async def set_my_commands(state: EmulatorState, p: Params) -> Any:
    commands = p.structure("commands", "can't parse commands JSON object")
    if not isinstance(commands, list):
        raise ApiError.bad_request("can't parse commands JSON object")
    cleaned: list[dict[str, str]] = []
    for entry in commands:
        if not isinstance(entry, dict):
            raise ApiError.bad_request("can't parse BotCommand JSON object")
        command = str(entry.get("command", "")).removeprefix("/")
        description = str(entry.get("description", ""))
        if not _COMMAND_RE.fullmatch(command):
            raise ApiError.bad_request("BOT_COMMAND_INVALID")
        if not 1 <= len(description) <= 256:
            raise ApiError.bad_request("BOT_COMMAND_DESCRIPTION_INVALID")
        cleaned.append({"command": command, "description": description})
    key = (command_scope(state, p), p.string("language_code") or "")
    if cleaned:
        state.commands[key] = cleaned
    else:
        state.commands.pop(key, None)
    return True


@api_method("getMyCommands")
async def get_my_commands(state: EmulatorState, p: Params) -> Any:
    return state.commands.get((command_scope(state, p), p.string("language_code") or ""), [])


@api_method("deleteMyCommands")
async def delete_my_commands(state: EmulatorState, p: Params) -> Any:
    state.commands.pop((command_scope(state, p), p.string("language_code") or ""), None)
    return True


def _set_localized(store: dict[str, str], p: Params, name: str) -> bool:
    value = p.string(name)
    language = p.string("language_code") or ""
    if value:
        store[language] = value
    else:
        store.pop(language, None)
    return True


@api_method("setMyDescription")
async def set_my_description(state: EmulatorState, p: Params) -> Any:
    return _set_localized(state.descriptions, p, "description")


@api_method("getMyDescription")
async def get_my_description(state: EmulatorState, p: Params) -> Any:
    return {"description": state.descriptions.get(p.string("language_code") or "", "")}


@api_method("setMyShortDescription")
async def set_my_short_description(state: EmulatorState, p: Params) -> Any:
    return _set_localized(state.short_descriptions, p, "short_description")


@api_method("getMyShortDescription")
async def get_my_short_description(state: EmulatorState, p: Params) -> Any:
    return {"short_description": state.short_descriptions.get(p.string("language_code") or "", "")}


@api_method("setMyName")
async def set_my_name(state: EmulatorState, p: Params) -> Any:
    return _set_localized(state.names, p, "name")


@api_method("getMyName")
async def get_my_name(state: EmulatorState, p: Params) -> Any:
    return {"name": state.names.get(p.string("language_code") or "", state.bot_first_name)}


@api_method("setChatMenuButton")
async def set_chat_menu_button(state: EmulatorState, p: Params) -> Any:
    button = p.structure("menu_button", "can't parse menu button JSON object") or {"type": "default"}
    if not isinstance(button, dict) or button.get("type") not in ("default", "commands", "web_app"):
        raise ApiError.bad_request("can't parse menu button JSON object")
    chat_id = state.chat(p.chat_id()).id if p.has("chat_id") else None
    state.menu_buttons[chat_id] = button
    return True


@api_method("getChatMenuButton")
async def get_chat_menu_button(state: EmulatorState, p: Params) -> Any:
    chat_id = state.chat(p.chat_id()).id if p.has("chat_id") else None
    return state.menu_buttons.get(chat_id) or state.menu_buttons.get(None) or {"type": "default"}


@api_method("leaveChat")
async def leave_chat(state: EmulatorState, p: Params) -> Any:
    chat = state.chat(p.chat_id())
    if chat.type == "private":
        raise ApiError.bad_request("chat member status can't be changed in private chats")
    if chat.bot_left:
        raise ApiError.forbidden(f"bot is not a member of the {chat.type} chat")
    state.set_bot_membership(chat, False, state.bot_user())
    return True


@api_method("getChat")
async def get_chat(state: EmulatorState, p: Params) -> Any:
    chat = state.chat(p.chat_id())
    return {
        **chat.to_dict(),
        "accent_color_id": 0,
        "max_reaction_count": 11,
        "accepted_gift_types": {"unlimited_gifts": False, "limited_gifts": False, "unique_gifts": False,
                                "premium_subscription": False, "gifts_from_channels": False},
    }


# ------------------------------------------------------------------------------- updates


@api_method("getUpdates")
async def get_updates(state: EmulatorState, p: Params) -> Any:
    if state.webhook is not None:
        raise ApiError.conflict(
            "can't use getUpdates method while webhook is active; use deleteWebhook to delete the webhook first"
        )
    allowed = p.structure("allowed_updates", "can't parse allowed updates JSON object")
    if allowed is not None and not isinstance(allowed, list):
        raise ApiError.bad_request("can't parse allowed updates JSON object")
    state.updates.set_allowed_updates(allowed)
    limit = min(max(p.integer("limit", 100) or 100, 1), 100)
    timeout = max(p.number("timeout", 0.0), 0.0)
    return await state.updates.get_updates(p.integer("offset"), limit, timeout)


@api_method("setWebhook")
async def set_webhook(state: EmulatorState, p: Params) -> Any:
    url = p.string("url")
    if p.flag("drop_pending_updates"):
        state.updates.drop_pending()
    if not url:
        state.webhook = None
        state.updates.changed.fire()
        return True
    _check_webhook_url(url)
    secret = p.string("secret_token")
    if secret is not None and not _SECRET_TOKEN_RE.fullmatch(secret):
        raise ApiError.bad_request("bad webhook: secret token contains unallowed characters")
    allowed = p.structure("allowed_updates", "can't parse allowed updates JSON object")
    if allowed is not None and not isinstance(allowed, list):
        raise ApiError.bad_request("can't parse allowed updates JSON object")
    state.updates.set_allowed_updates(allowed)
    state.webhook = WebhookConfig(url=url, secret_token=secret, allowed_updates=allowed,
                                  max_connections=p.integer("max_connections", 40) or 40,
                                  ip_address=p.string("ip_address"))
    state.updates.changed.fire()
    return True


@api_method("deleteWebhook")
async def delete_webhook(state: EmulatorState, p: Params) -> Any:
    if p.flag("drop_pending_updates"):
        state.updates.drop_pending()
    state.webhook = None
    state.updates.changed.fire()
    return True


@api_method("getWebhookInfo")
async def get_webhook_info(state: EmulatorState, p: Params) -> Any:
    return webhook_info(state)


# ------------------------------------------------------------------------------ messages


@api_method("sendMessage", sends=True)
async def send_message(state: EmulatorState, p: Params) -> Any:
    markup = reply_markup(p)
    chat = state.writable_chat(p.chat_id())
    text, entities = message_text(p)
    message = BotMessage(
        chat.next_message_id(), chat.id, now(), text=text, parse_mode=p.string("parse_mode"),
        entities=entities, reply_markup=markup, protect_content=p.flag("protect_content"),
        reply_to_message_id=reply_target(chat, p),
    )
    state.add_bot_message(chat, message)
    return state.message_dict(chat, message)


async def _send_media(state: EmulatorState, p: Params, kind: Literal["document", "photo"]) -> Any:
    markup = reply_markup(p)
    chat = state.writable_chat(p.chat_id())
    value = p.file(kind)
    if value is None:
        raise ApiError.bad_request(f"there is no {kind} in the request")
    caption, entities = caption_text(p)
    stored = state.store_file(value, kind) if isinstance(value, UploadedFile) else state.resend_file(value, kind)
    message = BotMessage(
        chat.next_message_id(), chat.id, now(), caption=caption, parse_mode=p.string("parse_mode"),
        entities=entities, reply_markup=markup, protect_content=p.flag("protect_content"),
        reply_to_message_id=reply_target(chat, p),
        document=stored if kind == "document" else None, photo=stored if kind == "photo" else None,
    )
    state.add_bot_message(chat, message)
    return state.message_dict(chat, message)


@api_method("sendDocument", sends=True)
async def send_document(state: EmulatorState, p: Params) -> Any:
    return await _send_media(state, p, "document")


@api_method("sendPhoto", sends=True)
async def send_photo(state: EmulatorState, p: Params) -> Any:
    return await _send_media(state, p, "photo")


@api_method("editMessageText", sends=True)
async def edit_message_text(state: EmulatorState, p: Params) -> Any:
    markup = reply_markup(p, inline_only=True)
    chat, message = editable_message(state, p)
    if message.text is None:
        raise ApiError.bad_request("there is no text in the message to edit")
    text, entities = message_text(p)
    return apply_edit(state, chat, message, text=text, caption=None, entities=entities, markup=markup,
                      parse_mode=p.string("parse_mode"))


@api_method("editMessageCaption", sends=True)
async def edit_message_caption(state: EmulatorState, p: Params) -> Any:
    markup = reply_markup(p, inline_only=True)
    chat, message = editable_message(state, p)
    if message.text is not None:
        raise ApiError.bad_request("there is no caption in the message to edit")
    caption, entities = caption_text(p)
    return apply_edit(state, chat, message, text=None, caption=caption, entities=entities, markup=markup,
                      parse_mode=p.string("parse_mode"))


@api_method("editMessageReplyMarkup", sends=True)
async def edit_message_reply_markup(state: EmulatorState, p: Params) -> Any:
    markup = reply_markup(p, inline_only=True)
    chat, message = editable_message(state, p)
    return apply_edit(state, chat, message, text=message.text, caption=message.caption,
                      entities=message.entities, markup=markup, parse_mode=message.parse_mode)


def _delete(state: EmulatorState, chat: Chat, message_id: int) -> bool:
    message = chat.messages.get(message_id)
    if isinstance(message, UserMessage):
        del chat.messages[message_id]
        return True
    if message is None or message.deleted:
        return False
    message.deleted = True
    state.record(chat, ChatEvent("delete", message))
    return True


@api_method("deleteMessage")
async def delete_message(state: EmulatorState, p: Params) -> Any:
    chat = state.chat(p.chat_id())
    if not _delete(state, chat, p.integer("message_id") or 0):
        raise ApiError.bad_request("message to delete not found")
    return True


@api_method("deleteMessages")
async def delete_messages(state: EmulatorState, p: Params) -> Any:
    chat = state.chat(p.chat_id())
    ids = p.structure("message_ids", "can't parse message identifiers JSON object")
    if not isinstance(ids, list) or not 1 <= len(ids) <= 100 or not all(isinstance(i, int) for i in ids):
        raise ApiError.bad_request("message identifiers are not specified")
    for message_id in ids:  # messages that cannot be found are skipped, as documented
        _delete(state, chat, message_id)
    return True


@api_method("answerCallbackQuery")
async def answer_callback_query(state: EmulatorState, p: Params) -> Any:
    query_id = p.string("callback_query_id")
    if not query_id:
        raise ApiError.bad_request('parameter "callback_query_id" is required')
    state.answer_callback(query_id, p.string("text"), p.flag("show_alert"), p.string("url"),
                          p.integer("cache_time", 0) or 0)
    return True


@api_method("sendChatAction")
async def send_chat_action(state: EmulatorState, p: Params) -> Any:
    chat = state.writable_chat(p.chat_id())
    action = p.string("action")
    if action not in CHAT_ACTIONS:
        raise ApiError.bad_request("wrong parameter action in request")
    state.record(chat, ChatEvent("action", action=action))
    return True


@api_method("getFile")
async def get_file(state: EmulatorState, p: Params) -> Any:
    stored = state.files.get(p.string("file_id") or "")
    if stored is None:
        raise ApiError.bad_request("wrong file_id or the file is temporarily unavailable")
    return {"file_id": stored.file_id, "file_unique_id": stored.file_unique_id, "file_size": stored.size,
            "file_path": stored.file_path}
