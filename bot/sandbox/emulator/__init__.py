"""A local emulator of the Telegram Bot API: a real HTTP server plus simulated people.

``BotApiEmulator`` serves ``http://127.0.0.1:<port>/bot<token>/<method>`` the way
api.telegram.org does (query string, form, multipart or JSON parameters; ``{"ok": ...}``
answers with Telegram's error descriptions), so python-telegram-bot runs against it unchanged.
``SimUser`` and ``SimGroup`` are the people on the other side: they send messages and press
buttons (creating updates) and read what the bot sent them.

Emulated:
  * getMe, logOut, close; getUpdates (offset confirmation, limit, long polling, allowed_updates,
    409 when another getUpdates takes over or a webhook is set); setWebhook, deleteWebhook and
    getWebhookInfo, with delivery by POST, the secret-token header and retries until a 2xx;
  * sendMessage, sendDocument, sendPhoto (uploads, file_ids, URLs refused for lack of network),
    editMessageText/Caption/ReplyMarkup, deleteMessage(s), answerCallbackQuery, sendChatAction,
    getFile and file downloads, leaveChat, getChat;
  * set/get/deleteMyCommands (scopes, languages), set/getMyDescription, ...ShortDescription,
    ...Name, set/getChatMenuButton;
  * validation with Telegram's descriptions: empty and over-long texts and captions (counted
    after entity parsing), HTML / MarkdownV2 / Markdown markup, inline keyboards and
    callback_data, unknown chats and messages, unchanged edits, reused callback queries;
  * the people's side: bot_command entities, edited messages, my_chat_member updates on block/unblock and when
    the bot leaves a group, the rule that a bot cannot write first to a person;
  * flood control (429 with retry_after) and injected faults (any status, slow answers, for a
    number of calls or a number of seconds), and outages (``go_down``: connections refused, or
    accepted and dropped without an answer, until ``come_back``).

Not emulated (a method not listed answers 404 "Not Found", like an unknown one, and is logged):
inline mode, payments, media groups and other media types, forwarding and copying, reactions,
chat administration, business connections, topics, group privacy mode (the bot sees every group
message), the url/mention/hashtag entities Telegram adds to people's texts, HTTPS-only and port
rules for webhooks (which must point to a loopback address here), file size limits other than
the 50 MB upload limit, and the expiry of callback queries.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bot.sandbox.emulator.flood import FloodLimits
    from bot.sandbox.emulator.people import ChatView, SimGroup, SimUser
    from bot.sandbox.emulator.records import (
        ApiCall,
        BotMessage,
        Button,
        CallbackAnswer,
        ChatEvent,
        FailedCall,
        MessageVersion,
        StoredFile,
        WebhookConfig,
    )
    from bot.sandbox.emulator.server import BotApiEmulator, Fault

# Imported when first used: the bot itself imports only bot.sandbox.emulator.markup (the
# Telegram HTML parser behind broadcasts and the content check), and importing it must not
# load the server and aiohttp into every bot process (~1/4 of a production start's imports).
_WHERE = {
    "FloodLimits": "flood",
    "ChatView": "people", "SimGroup": "people", "SimUser": "people",
    "ApiCall": "records", "BotMessage": "records", "Button": "records", "CallbackAnswer": "records",
    "ChatEvent": "records", "FailedCall": "records", "MessageVersion": "records",
    "StoredFile": "records", "WebhookConfig": "records",
    "BotApiEmulator": "server", "Fault": "server",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


__all__ = [
    "ApiCall",
    "BotApiEmulator",
    "BotMessage",
    "Button",
    "CallbackAnswer",
    "ChatEvent",
    "ChatView",
    "FailedCall",
    "Fault",
    "FloodLimits",
    "MessageVersion",
    "SimGroup",
    "SimUser",
    "StoredFile",
    "WebhookConfig",
]
