"""/practice: the menu of exercises, Start now under a reminder, and the rating before."""

from __future__ import annotations

from telegram import Update

from bot.context import BotContext
from bot.db.models import Role
from bot.delivery.buttons import REMINDER_START
from bot.exercises import EXERCISES, PACED
from bot.services.reminders import NotYours
from handlers.access import refuse, requires
from handlers.common import keyboard, say, settle, settle_again_ok, signed_ids, text
from handlers.exercises import grounding, paced, safe_place
from handlers.exercises.shared import BEFORE, MENU, PICK, RATE_BEFORE, RUNNING, end_under_way, stop_row
from handlers.parts import button_match, chat_id_of, query_of


@requires(Role.CLIENT)
async def practice(update: Update, context: BotContext) -> str:
    return await show_menu(update, context)


async def show_menu(update: Update, context: BotContext) -> str:
    """The exercises to choose from; an exercise still under way ends as stopped early."""
    await end_under_way(update, context)
    body = await text(update, context, "exercises.menu.title") + "\n\n" + await text(update, context, "exercises.menu.intro")
    rows = [
        [(await text(update, context, f"exercises.{name}.title"), f"px:pick:{name}")] for name in EXERCISES
    ]
    await context.bot.send_message(
        chat_id_of(update), body, reply_markup=keyboard(*rows, await stop_row(update, context))
    )
    return MENU


@requires(Role.CLIENT)
async def start_from_reminder(update: Update, context: BotContext) -> str | None:
    """Start now, under a delivered reminder: the reminder's exercise (its rating before), or
    the menu when the reminder is for any exercise. A payload that is not the presser's own
    reminder is refused and changes nothing (None keeps any conversation where it was)."""
    ids = await signed_ids(update, context, REMINDER_START)
    if not ids:
        return None
    identity = await context.identity(update)
    assert identity.person_id is not None  # a client is registered
    try:
        exercise = await context.services.reminders.delivered_exercise(identity.person_id, ids[0])
    except NotYours:
        await refuse(update, context, what=f"button:{REMINDER_START}", reason="ownership")
        return None
    await settle_again_ok(update)
    if exercise is None:
        return await show_menu(update, context)
    await end_under_way(update, context)
    return await ask_before(update, context, exercise)


def rating_rows(prefix: str) -> list[list[tuple[str, str]]]:
    return [[(str(n), f"{prefix}{n}") for n in range(0, 6)], [(str(n), f"{prefix}{n}") for n in range(6, 11)]]


@requires(Role.CLIENT)
async def pick(update: Update, context: BotContext) -> str:
    await settle(update)
    return await ask_before(update, context, button_match(PICK, update).group(1))


async def ask_before(update: Update, context: BotContext, exercise: str) -> str:
    await say(
        update,
        context,
        "exercises.rating.before",
        reply_markup=keyboard(*rating_rows(f"px:before:{exercise}:"), await stop_row(update, context)),
    )
    return BEFORE


@requires(Role.CLIENT)
async def rate_before(update: Update, context: BotContext) -> str | int:
    match = button_match(RATE_BEFORE, update)
    exercise, rating = match.group(1), int(match.group(2))
    if rating > 10:
        await query_of(update).answer()
        return BEFORE
    await settle(update)
    run_id = await context.services.exercise_log.begin(await context.identity(update), exercise, rating)
    if exercise in PACED:
        await paced.start(update, context, run_id, exercise)
    elif exercise == "safe_place":
        return await safe_place.start(update, context)
    else:
        await grounding.show_step(update, context, None)
    return RUNNING
