"""Private chats only: what people share must never be read out in a group.

Runs before every other handler. In a group, supergroup or channel the bot answers a
message once with a polite refusal, then leaves; nothing else is processed.
"""

from __future__ import annotations

import logging

from telegram import Chat, Update
from telegram.constants import ChatType
from telegram.error import TelegramError
from telegram.ext import ApplicationHandlerStop, TypeHandler

from bot.context import BotContext
from handlers.access import public

_log = logging.getLogger(__name__)


@public
async def private_chats_only(update: Update, context: BotContext) -> None:
    chat: Chat | None = update.effective_chat
    if chat is None or chat.type == ChatType.PRIVATE:
        return  # let the other handlers run
    if update.callback_query:
        await update.callback_query.answer()
    if update.effective_message and chat.type != ChatType.CHANNEL:
        language = context.services.content.resolve_language(
            update.effective_user.language_code if update.effective_user else None
        )
        try:
            await update.effective_message.reply_text(
                context.services.content.text("group.refusal", language)
            )
            await context.bot.leave_chat(chat.id)
        except TelegramError as exc:  # e.g. no right to write there: nothing more to do
            _log.info("Could not refuse in a non-private chat: %s", type(exc).__name__)
    raise ApplicationHandlerStop


handler = TypeHandler(Update, private_chats_only)
