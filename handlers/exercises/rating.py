"""The 0-10 rating after an exercise, and the change shown against the rating before."""

from __future__ import annotations

from typing import Any

from telegram import Update
from telegram.ext import ConversationHandler

from bot.context import BotContext
from bot.db.models import Role
from handlers.access import refuse, requires
from handlers.common import crisis_block, keyboard, settle, signed_ids, text
from handlers.exercises.shared import AFTER, RUNNING, STOP
from handlers.fallback import stale_button
from handlers.support import high_distress_note
from handlers.parts import chat_id_of


async def ask_after(context: BotContext, chat_id: int, telegram_id: int, lang: str, run_id: int) -> None:
    """The rating after, for ``run_id``: its buttons are signed for the client."""
    content = context.services.content
    codec = context.services.callbacks
    rows = [
        [(str(n), codec.pack(telegram_id, AFTER, run_id, n)) for n in range(0, 6)],
        [(str(n), codec.pack(telegram_id, AFTER, run_id, n)) for n in range(6, 11)],
    ]
    await context.bot.send_message(
        chat_id,
        content.text("exercises.rating.after", lang),
        reply_markup=keyboard(*rows, [(content.text("exercises.buttons.stop", lang), STOP)]),
    )


async def ask_after_for_open_run(update: Update, context: BotContext) -> None:
    """The rating after, for the asker's newest exercise not ended yet (if any)."""
    identity = await context.identity(update)
    open_ids = await context.services.exercise_log.open_ids(identity)
    if open_ids:
        await ask_after(context, chat_id_of(update), identity.telegram_id, identity.language, open_ids[-1])


@requires(Role.CLIENT)
async def rate_after(update: Update, context: BotContext) -> str | int | None:
    ids = await signed_ids(update, context, AFTER)
    if ids is None or len(ids) != 2 or not 0 <= ids[1] <= 10:
        return RUNNING
    run_id, rating = ids
    change = await context.services.exercise_log.finish(await context.identity(update), run_id, rating)
    if change is None:
        await refuse(update, context, what=f"button:{AFTER}", reason="ownership")
        return RUNNING
    if not change.recorded:  # an exercise that has ended (an older message's button): as it was
        await stale_button(update, context)
        return None
    await settle(update)
    before, after = change.before, change.after
    key = "change_same" if before is None or after is None or after == before else ("change_down" if after < before else "change_up")
    params: dict[str, Any] = {"before": before if before is not None else "?", "after": after}
    if key == "change_up":
        params["crisis"] = await crisis_block(update, context)
    body = await text(update, context, f"exercises.rating.{key}", **params)
    logged = await text(update, context, "exercises.rating.logged")
    support = "" if key == "change_up" else await high_distress_note(update, context, after)  # change_up has it
    await context.bot.send_message(chat_id_of(update), "\n\n".join(filter(None, [body, f"<i>{logged}</i>", support])))
    return ConversationHandler.END
