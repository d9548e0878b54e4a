"""/help, /about and /cancel (or typing "stop", ✋): available to everyone at any time.

/help in the middle of a flow (bot.flows) pauses it and offers, under the help text,
↩ Back to where I was (the flow resumes at the step it had reached) or End it."""

from __future__ import annotations

import re

from telegram import Update
from telegram.ext import (
    BaseHandler,
    CallbackQueryHandler,
    CommandHandler,
    ConversationHandler,
    MessageHandler,
    filters,
)

from bot.content import Content
from bot.context import BotContext
from bot.db.models import Role
from handlers.access import allowed_roles, public
from handlers.common import FLOW_BACK, FLOW_END, crisis_block, say, send_with_way_back, settle, text
from handlers.fallback import stale_button
from handlers.parts import chat_id_of


@public
async def help_command(update: Update, context: BotContext) -> None:
    """The help text for the asker's role: each role has its own list of commands. A flow
    under way is paused, and the help ends with the way back to it."""
    identity = await context.identity(update)
    body = await text(update, context, f"help.{identity.menu}", crisis=await crisis_block(update, context))
    paused = await context.flows.pause(update, context)
    if paused is None:
        await context.bot.send_message(chat_id_of(update), body)
        return
    await send_with_way_back(update, context, body, paused)


@public  # acts on the presser's own paused flow only, if they may still begin it
async def back_to_flow(update: Update, context: BotContext) -> None:
    paused = await context.flows.paused(update, context)
    if paused is None:
        await stale_button(update, context)
        return
    if not may_begin(context.flows.flows[paused.flow], (await context.identity(update)).role):
        # e.g. a client who paused their safety plan, then erased their data (/delete): the
        # flow cannot come back to someone it no longer belongs to; it is let go unshown.
        await context.flows.forget_paused(update, context)
        await stale_button(update, context)
        return
    await settle(update)
    await context.flows.resume(update, context)


def may_begin(flow: ConversationHandler, role: Role | None) -> bool:
    """Whether someone of ``role`` may enter ``flow`` by one of its entry points now."""
    for handler in flow.entry_points:
        callback = getattr(handler, "callback", None)
        roles = allowed_roles(callback) if callback is not None else False
        if roles is None or (isinstance(roles, frozenset) and role in roles):
            return True
    return False


@public  # acts on the presser's own paused flow only
async def end_flow(update: Update, context: BotContext) -> None:
    if await context.flows.paused(update, context) is None:
        await stale_button(update, context)
        return
    await settle(update)
    await context.flows.end_paused(update, context)
    await say(update, context, "flows.ended")


@public
async def about(update: Update, context: BotContext) -> None:
    await say(update, context, "about.text", crisis=await crisis_block(update, context))


@public
async def cancel(update: Update, context: BotContext) -> int:
    """Inside a conversation: end it. Whatever was already answered has been saved by then."""
    await context.flows.cancelled(update, context)
    await say(update, context, "cancel.done")
    return ConversationHandler.END


@public
async def nothing_to_cancel(update: Update, context: BotContext) -> None:
    """/cancel or a stop word outside any flow: a paused flow ends; otherwise nothing to stop."""
    if await context.flows.end_paused(update, context) is not None:
        await say(update, context, "cancel.done")
        return
    await say(update, context, "cancel.nothing")


def stop_words(content: Content) -> filters.MessageFilter:
    """A message that is only a stop word ("stop", "stoppen", ✋ …) in any language we have:
    the chat version of raising a hand, honoured whatever language the person uses."""
    words = {w.strip().lower() for lang in content.languages for w in content.texts("cancel.stop_words", lang)}
    pattern = "|".join(sorted((re.escape(w) for w in words), key=len, reverse=True))
    return filters.Regex(re.compile(rf"^\s*(?:{pattern})\s*[.!]?\s*$", re.IGNORECASE))


def free_text(content: Content) -> filters.BaseFilter:
    """Typed text that is neither a command nor a stop word: what a step may answer itself.
    Only new messages: an edit of an earlier message (an ``edited_message`` update, which has
    no ``update.message``) answers no step; it gets the stray-text reply."""
    return filters.UpdateType.MESSAGE & filters.TEXT & ~filters.COMMAND & ~stop_words(content)


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
        CommandHandler(["cancel", "stop"], nothing_to_cancel),
        MessageHandler(filters.TEXT & stop_words(content), nothing_to_cancel),
        CallbackQueryHandler(back_to_flow, pattern=f"^{FLOW_BACK}$"),
        CallbackQueryHandler(end_flow, pattern=f"^{FLOW_END}$"),
    ]
