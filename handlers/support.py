"""Support after a hard moment in an exercise: a distress rating at or above the threshold in
content (``exercises.support.threshold``) adds a kind note with the therapist contact and the
crisis lines (``exercises.support.high``), without alarm. Used by /practice when the rating
after is given, and when an exercise is stopped after a high rating before."""

from __future__ import annotations

from telegram import Update

from bot.context import BotContext
from handlers.common import crisis_block, text


async def high_distress_note(update: Update, context: BotContext, rating: int | None) -> str:
    """The support note for ``rating`` (0-10), or "" below the threshold (or no rating)."""
    if rating is None:
        return ""
    identity = await context.identity(update)
    threshold = int(context.services.content.raw("exercises.support.threshold", identity.language))
    if rating < threshold:
        return ""
    return await text(update, context, "exercises.support.high", crisis=await crisis_block(update, context))


async def note_on_stop(update: Update, context: BotContext) -> str:
    """Before an exercise under way is stopped: the support note when its rating before was
    high, else "". Call it before the exercise ends (its rating before is read)."""
    identity = await context.identity(update)
    before = await context.services.exercise_log.open_rating_before(identity)
    return await high_distress_note(update, context, before)
