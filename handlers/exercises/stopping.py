"""Stopping an exercise at any moment (the chat version of raising a hand), and the short
grounding step offered after it."""

from __future__ import annotations

from telegram import Update
from telegram.ext import ConversationHandler

from bot.context import BotContext
from bot.db.models import Role
from handlers.access import public, requires
from handlers.common import offer_grounding, say, settle, text
from handlers.exercises.shared import CALM_NO, CALM_YES, end_under_way
from handlers.support import note_on_stop
from handlers.parts import query_of


@public  # a fallback of this conversation only (which only clients enter); /cancel is shared
async def stop(update: Update, context: BotContext) -> int:
    """✋ Stop, "stop", ✋, /stop or /cancel: end at once, keep what was answered, offer grounding."""
    support = await note_on_stop(update, context)  # before it ends: a high rating before gets support
    await end_under_way(update, context)
    if update.callback_query:
        await settle(update)
    await offer_grounding(
        update, context,
        await text(update, context, "exercises.stop.stopped"),
        support,
        await text(update, context, "exercises.stop.grounding_offer"),
        yes=CALM_YES, no=CALM_NO,
    )
    return ConversationHandler.END


@requires(Role.CLIENT)
async def calm(update: Update, context: BotContext) -> int:
    await settle(update)
    if query_of(update).data == CALM_YES:
        await say(update, context, "exercises.stop.grounding")
    await say(update, context, "exercises.stop.grounding_done")
    return ConversationHandler.END
