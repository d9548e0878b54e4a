"""What the steps of /practice share: the states, the button data, the timers under way."""

from __future__ import annotations

import re
from datetime import timedelta

from telegram import Update

from bot.context import BotContext
from bot.exercises import EXERCISES
from bot.services.exercise_log import SAFE_FIELDS
from handlers.common import text
from handlers.parts import chat_id_of

# The conversation's states. The flow keeps the name "practice" (the command's), so states
# persisted by earlier versions still resume.
MENU = "practice:menu"
BEFORE = "practice:before"
RUNNING = "practice:running"
SAFE_STATES = {field: f"practice:safe:{field}" for field in SAFE_FIELDS}  # one per question

_CHOICE = "|".join(EXERCISES)
PICK = re.compile(rf"^px:pick:({_CHOICE})$")
RATE_BEFORE = re.compile(rf"^px:before:({_CHOICE}):(\d{{1,2}})$")
SAFE = re.compile(r"^px:sp:(visit|change|delete)$")
GROUND_NEXT = re.compile(r"^px:gnext:(\d{1,2})$")
STOP = "px:stop"
SKIP = "px:skip"
CALM_YES = "px:calm:yes"
CALM_NO = "px:calm:no"
AFTER = "px.after"  # signed: px.after|<run id>|<rating>

RUNS_KEY = "practice_runs"  # bot_data: chat id -> run id of the paced exercise timed here
RESUME_WITHIN = timedelta(minutes=30)  # a paced exercise older than this is not resumed


def job_name(chat_id: int) -> str:
    return f"practice:{chat_id}"


def timed_runs(context: BotContext) -> dict[int, int]:
    """The paced exercises this instance times: chat id -> run id."""
    return context.application.bot_data.setdefault(RUNS_KEY, {})


def speed(context: BotContext) -> float:
    """The factor on every step's seconds (the setting PRACTICE_TIME_SCALE)."""
    return context.services.settings.practice_time_scale


def cancel_timer(context: BotContext, chat_id: int) -> None:
    timed_runs(context).pop(chat_id, None)
    if context.job_queue is not None:
        for job in context.job_queue.get_jobs_by_name(job_name(chat_id)):
            job.schedule_removal()


async def end_under_way(update: Update, context: BotContext) -> None:
    """An exercise still under way ends as stopped early (its ratings kept), its timer too."""
    cancel_timer(context, chat_id_of(update))
    await context.services.exercise_log.stop(await context.identity(update))


async def stop_row(update: Update, context: BotContext) -> list[tuple[str, str]]:
    return [(await text(update, context, "exercises.buttons.stop"), STOP)]
