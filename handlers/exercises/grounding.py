"""Grounding 5-4-3-2-1: a prompt per sense in one message, edited on Next ›."""

from __future__ import annotations

from telegram import Update

from bot.context import BotContext
from bot.db.models import Role
from handlers.access import requires
from handlers.common import edit_in_place, keyboard, say, settle
from handlers.exercises import rating
from handlers.exercises.shared import GROUND_NEXT, RUNNING, STOP
from handlers.parts import button_match, chat_id_of, query_of


async def show_step(update: Update, context: BotContext, step: int | None) -> None:
    """``None``: the intro (a new message); then step 0.. (the same message, edited)."""
    identity = await context.identity(update)
    content = context.services.content
    lang = identity.language
    steps = content.raw("exercises.grounding.steps", lang)
    next_label = content.text("exercises.buttons.next", lang)
    stop = (content.text("exercises.buttons.stop", lang), STOP)
    if step is None:
        await context.bot.send_message(
            chat_id_of(update),
            content.text("exercises.grounding.intro", lang),
            reply_markup=keyboard([(next_label, "px:gnext:0")], [stop]),
        )
        return
    body = f"<i>{step + 1} / {len(steps)}</i>\n\n{steps[step]['prompt']}"
    await edit_in_place(
        update, body, reply_markup=keyboard([(next_label, f"px:gnext:{step + 1}")], [stop])
    )


@requires(Role.CLIENT)
async def next_sense(update: Update, context: BotContext) -> str:
    query = query_of(update)
    identity = await context.identity(update)
    steps = context.services.content.raw("exercises.grounding.steps", identity.language)
    step = int(button_match(GROUND_NEXT, update).group(1))
    if step < len(steps):
        await query.answer()
        await show_step(update, context, step)
        return RUNNING
    await settle(update)
    await say(update, context, "exercises.grounding.finished")
    await rating.ask_after_for_open_run(update, context)
    return RUNNING
