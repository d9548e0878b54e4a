"""/help, /about and /cancel (or typing "stop", ✋): available to everyone at any time."""

from __future__ import annotations

import re

from telegram import Update
from telegram.ext import BaseHandler, CommandHandler, ConversationHandler, MessageHandler, filters

from bot.content import Content
from bot.context import BotContext
from handlers.access import public
from handlers.common import crisis_block, say


@public
async def help_command(update: Update, context: BotContext) -> None:
    """The help text for the asker's role: each role has its own list of commands."""
    identity = await context.identity(update)
    await say(update, context, f"help.{identity.menu}", crisis=await crisis_block(update, context))


@public
async def about(update: Update, context: BotContext) -> None:
    await say(update, context, "about.text", crisis=await crisis_block(update, context))


@public
async def cancel(update: Update, context: BotContext) -> int:
    """Inside a conversation: end it. Whatever was already answered has been saved by then."""
    await say(update, context, "cancel.done")
    return ConversationHandler.END


@public
async def nothing_to_cancel(update: Update, context: BotContext) -> None:
    await say(update, context, "cancel.nothing")


def stop_words(content: Content) -> filters.MessageFilter:
    """A message that is only a stop word ("stop", "stoppen", ✋ …) in any language we have:
    the chat version of raising a hand, honoured whatever language the person uses."""
    words = {w.strip().lower() for lang in content.languages for w in content.texts("cancel.stop_words", lang)}
    pattern = "|".join(sorted((re.escape(w) for w in words), key=len, reverse=True))
    return filters.Regex(re.compile(rf"^\s*(?:{pattern})\s*[.!]?\s*$", re.IGNORECASE))


def free_text(content: Content) -> filters.BaseFilter:
    """Typed text that is neither a command nor a stop word: what a step may answer itself."""
    return filters.TEXT & ~filters.COMMAND & ~stop_words(content)


def cancel_in_conversation(content: Content) -> list[BaseHandler]:
    """The fallbacks every conversation uses: /cancel, or a stop word."""
    return [
        CommandHandler("cancel", cancel),
        MessageHandler(filters.TEXT & stop_words(content), cancel),
    ]


def build(content: Content) -> list[BaseHandler]:
    return [
        CommandHandler("help", help_command),
        CommandHandler("about", about),
        CommandHandler("cancel", nothing_to_cancel),
        MessageHandler(filters.TEXT & stop_words(content), nothing_to_cancel),
    ]
