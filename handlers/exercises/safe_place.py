"""The safe place: three short answers (what you see, hear, feel), stored encrypted and
replayed as a short cue; visit, change or delete it later."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from telegram import Update

from bot.context import BotContext
from bot.db.models import Role
from bot.services.exercise_log import SAFE_FIELDS
from handlers.access import requires
from handlers.common import keyboard, say, settle, text
from handlers.exercises import rating
from handlers.exercises.shared import RUNNING, SAFE, SAFE_STATES, stop_row
from handlers.parts import button_match, chat_id_of, message_of


async def start(update: Update, context: BotContext) -> str:
    """A new safe place is asked for; one the client has is offered to visit, change or delete."""
    place = await context.services.exercise_log.safe_place(await context.identity(update))
    if place is None or not all(place.values()):
        await say(update, context, "exercises.safe_place.intro")
        await say(update, context, "exercises.safe_place.caution")
        return await ask(update, context, 0)
    await say(
        update,
        context,
        "exercises.safe_place.replay_intro",
        reply_markup=keyboard(
            [(await text(update, context, "exercises.buttons.visit"), "px:sp:visit")],
            [
                (await text(update, context, "exercises.buttons.change"), "px:sp:change"),
                (await text(update, context, "exercises.buttons.delete"), "px:sp:delete"),
            ],
            await stop_row(update, context),
        ),
    )
    return RUNNING


async def ask(update: Update, context: BotContext, index: int) -> str:
    """Question ``index``; its state waits for the answer."""
    identity = await context.identity(update)
    questions = context.services.content.raw("exercises.safe_place.questions", identity.language)
    await context.bot.send_message(
        chat_id_of(update), questions[index]["prompt"], reply_markup=keyboard(await stop_row(update, context))
    )
    return SAFE_STATES[questions[index]["field"]]


def question_of(state: object) -> int | None:
    """The index of the question a state waits on (None: not a question's state)."""
    return next((n for n, name in enumerate(SAFE_STATES.values()) if name == state), None)


async def _replay(update: Update, context: BotContext) -> str:
    identity = await context.identity(update)
    place = await context.services.exercise_log.safe_place(identity) or {}
    words: dict[str, Any] = {f: place.get(f) or "…" for f in SAFE_FIELDS}  # say()'s params
    await say(update, context, "exercises.safe_place.cue", **words)
    await say(update, context, "exercises.safe_place.finished")
    await rating.ask_after_for_open_run(update, context)
    return RUNNING


@requires(Role.CLIENT)
async def choice(update: Update, context: BotContext) -> str:
    await settle(update)
    chosen = button_match(SAFE, update).group(1)
    if chosen == "visit":
        return await _replay(update, context)
    if chosen == "change":
        return await ask(update, context, 0)
    await context.services.exercise_log.delete_safe_place(await context.identity(update))
    await say(update, context, "exercises.safe_place.deleted")
    await rating.ask_after_for_open_run(update, context)
    return RUNNING


def answer_to(index: int) -> Callable[[Update, BotContext], Coroutine[Any, Any, str]]:
    """The step that takes the answer to question ``index``."""

    @requires(Role.CLIENT)
    async def answer(update: Update, context: BotContext) -> str:
        identity = await context.identity(update)
        content = context.services.content
        questions = content.raw("exercises.safe_place.questions", identity.language)
        limit = int(content.raw("exercises.safe_place.max_chars", identity.language))
        words = " ".join((message_of(update).text or "").split())
        if not words or len(words) > limit:
            await say(update, context, "exercises.safe_place.too_long", max=limit)
            return SAFE_STATES[questions[index]["field"]]
        await context.services.exercise_log.save_safe_place(identity, questions[index]["field"], words)
        if index + 1 < len(questions):
            return await ask(update, context, index + 1)
        await say(update, context, "exercises.safe_place.saved")
        return await _replay(update, context)

    answer.__qualname__ = f"safe_answer_{index}"
    return answer
