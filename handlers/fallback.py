"""Last resort: what nobody else handled gets a helpful answer instead of silence."""

from __future__ import annotations

from telegram import Update
from telegram.error import BadRequest
from telegram.ext import CallbackQueryHandler, MessageHandler, filters

from bot.context import BotContext
from handlers.access import public
from handlers.common import crisis_block, say, send_with_way_back, text
from handlers.parts import query_of


@public
async def unknown_command(update: Update, context: BotContext) -> None:
    await say(update, context, "fallback.unknown_command")


@public
async def stray_text(update: Update, context: BotContext) -> None:
    """Free text outside any step. The bot does not chat; it points to help and to people,
    and to a paused flow (bot.flows), if there is one."""
    paused = await context.flows.paused(update, context)
    if paused is None:
        await say(update, context, "fallback.text", crisis=await crisis_block(update, context))
        return
    body = await text(update, context, "fallback.text", crisis=await crisis_block(update, context))
    await send_with_way_back(update, context, body, paused)


@public
async def stale_button(update: Update, context: BotContext) -> None:
    """A button from an old message (a finished conversation, or before a restart)."""
    query = query_of(update)
    await query.answer(await text(update, context, "fallback.stale_button"))
    if query.message is not None and query.message.is_accessible:
        try:
            await query.edit_message_reply_markup(reply_markup=None)
        except BadRequest:  # "message is not modified": a second tap, the buttons are gone already
            pass


handlers = [
    MessageHandler(filters.COMMAND, unknown_command),
    MessageHandler(filters.ALL & ~filters.StatusUpdate.ALL, stray_text),
    CallbackQueryHandler(stale_button),
]
