"""/practice: calming exercises: slow breathing, progressive muscle relaxation, the safe
place and grounding 5-4-3-2-1. One module per part of the conversation:

    /practice ──► MENU ──[exercise]──► BEFORE (0-10) ──► RUNNING ──► rating after ──► end
                    ▲                   ▲                 (paced.py: breathing, muscle
    [Start now] ────┴── (any) ──────────┘ (its exercise)   relaxation, one message edited per
    under a reminder                                       step; grounding.py: a prompt per
        (menu.py)                                          sense; safe_place.py: three
                                                           questions, then a cue; rating.py)

The rating before is stored as soon as it is given (encrypted, bot.services.exercise_log);
the rating after completes the run and the change is shown. ✋ Stop on every step, and
"stop", ✋, /stop or /cancel typed at any moment, end the exercise at once (stopping.py): the
timer is cancelled, the run is logged as stopped early (its rating kept), and a short
grounding step is offered.

Under the one-active-flow rule (bot.flows): another command or flow ends an exercise under
way as stopped early; /help pauses it (a paced exercise stops its timer) and ↩ Back to where
I was goes on at the step it had reached.
"""

from __future__ import annotations

import re

from telegram import Update
from telegram.ext import BaseHandler, CallbackQueryHandler, CommandHandler, MessageHandler, filters

from bot.callbacks import CallbackCodec
from bot.content import Content
from bot.context import BotContext
from bot.delivery.buttons import REMINDER_START
from bot.flows import Flow, FlowHooks
from bot.services.exercise_log import SAFE_FIELDS
from handlers import general
from handlers.common import conversation, say, use_the_buttons
from handlers.exercises import grounding, menu, paced, rating, safe_place, stopping
from handlers.exercises.paced import on_consuming
from handlers.exercises.shared import (
    AFTER,
    BEFORE,
    CALM_NO,
    CALM_YES,
    GROUND_NEXT,
    MENU,
    PICK,
    RATE_BEFORE,
    RUNNING,
    SAFE,
    SAFE_STATES,
    SKIP,
    STOP,
    end_under_way,
)

__all__ = ["build", "on_consuming"]


async def _ended_by_another(update: Update, context: BotContext, state: object) -> None:
    """Another command or flow took over: an exercise under way ends as stopped early."""
    await end_under_way(update, context)


async def _paused(update: Update, context: BotContext, state: object) -> None:
    await paced.pause(update, context)


async def _resumed(update: Update, context: BotContext, state: object) -> None:
    """Back where the client was: a paced exercise at the step it had reached; the menu and
    a safe-place question asked again; anything else: its last message is above."""
    if state == RUNNING and await paced.resume_paused(update, context):
        return
    if state == MENU:
        await menu.show_menu(update, context)
        return
    question = safe_place.question_of(state)
    if question is not None:
        await safe_place.ask(update, context, question)
        return
    await say(update, context, "flows.resumed")


def build(fallbacks: list[BaseHandler], free_text: filters.BaseFilter, content: Content) -> Flow:
    stops: list[BaseHandler] = [
        CommandHandler(["stop", "cancel"], stopping.stop),
        MessageHandler(filters.TEXT & general.stop_words(content), stopping.stop),
        CallbackQueryHandler(stopping.stop, pattern=f"^{re.escape(STOP)}$"),
    ]
    return conversation(
        "practice",
        entry_points=[
            CommandHandler("practice", menu.practice),
            CallbackQueryHandler(menu.start_from_reminder, pattern=CallbackCodec.pattern(REMINDER_START)),
            CallbackQueryHandler(stopping.calm, pattern=f"^(?:{re.escape(CALM_YES)}|{re.escape(CALM_NO)})$"),
        ],
        states={
            MENU: [CallbackQueryHandler(menu.pick, pattern=PICK), MessageHandler(free_text, use_the_buttons)],
            BEFORE: [
                CallbackQueryHandler(menu.rate_before, pattern=RATE_BEFORE),
                MessageHandler(free_text, use_the_buttons),
            ],
            RUNNING: [
                CallbackQueryHandler(grounding.next_sense, pattern=GROUND_NEXT),
                CallbackQueryHandler(paced.skip_group, pattern=f"^{re.escape(SKIP)}$"),
                CallbackQueryHandler(safe_place.choice, pattern=SAFE),
                CallbackQueryHandler(rating.rate_after, pattern=CallbackCodec.pattern(AFTER)),
                MessageHandler(free_text, use_the_buttons),
            ],
            **{
                SAFE_STATES[field]: [MessageHandler(free_text, safe_place.answer_to(n))]
                for n, field in enumerate(SAFE_FIELDS)
            },
        },
        fallbacks=stops + fallbacks,
        hooks=FlowHooks(on_end=_ended_by_another, on_pause=_paused, on_resume=_resumed),
    )
