"""Small helpers shared by handler modules: words come from content, in the asker's language."""

from __future__ import annotations

from typing import Any

from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Message, Update

from bot.content import trusted_html
from bot.context import BotContext


async def text(update: Update, context: BotContext, key: str, **params: Any) -> str:
    identity = await context.identity(update)
    return context.services.content.text(key, identity.language, **params)


async def say(
    update: Update,
    context: BotContext,
    key: str,
    *,
    reply_markup: InlineKeyboardMarkup | None = None,
    **params: Any,
) -> Message:
    """Send the content text ``key`` to the chat the update came from."""
    assert update.effective_chat is not None
    return await context.bot.send_message(
        chat_id=update.effective_chat.id,
        text=await text(update, context, key, **params),
        reply_markup=reply_markup,
    )


async def crisis_block(update: Update, context: BotContext) -> str:
    """The crisis-resources paragraph, for embedding into another text."""
    return trusted_html(await text(update, context, "crisis.short"))


async def settle(update: Update) -> None:
    """A button was pressed: acknowledge it and take the buttons off that message, so the
    same choice cannot be made twice."""
    query = update.callback_query
    await query.answer()
    await query.edit_message_reply_markup(reply_markup=None)


def keyboard(*rows: list[tuple[str, str]]) -> InlineKeyboardMarkup:
    """An inline keyboard from rows of (label, callback data)."""
    return InlineKeyboardMarkup(
        [[InlineKeyboardButton(label, callback_data=data) for label, data in row] for row in rows]
    )
