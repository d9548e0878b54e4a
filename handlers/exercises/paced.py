"""Slow breathing and muscle relaxation: one message, edited step by step by a JobQueue job.

The message shows step i; the job fires after step i's seconds (times PRACTICE_TIME_SCALE)
and shows step i + 1, or, after the last step, the closing words and the rating after. No
handler ever sleeps. Which step is when is bot.exercises.Timeline's business.

A restart: PTB keeps jobs in memory only. The message an exercise edits, the step it shows
and since when are stored with the run (no clinical content); when this instance starts
consuming updates, ``on_consuming`` resumes every paced exercise under way at the step the
elapsed time gives (or, if it ended meanwhile, shows the closing words and asks the rating
after). An instance that stops consuming drops its timers, so two instances never edit the
same exercise. A paused exercise (bot.flows) has no message and is not resumed by a restart.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any, cast

from telegram import InlineKeyboardMarkup, Update
from telegram.error import BadRequest, TelegramError
from telegram.ext import Application, JobQueue

from bot.content import Content
from bot.context import BotContext
from bot.db.models import Role
from bot.db.types import utcnow
from bot.exercises import PACED, Timeline
from bot.services.exercise_log import Run
from handlers.access import public, requires
from handlers.common import keyboard, say
from handlers.exercises import rating
from handlers.exercises.shared import (
    RESUME_WITHIN,
    RUNNING,
    RUNS_KEY,
    SKIP,
    STOP,
    cancel_timer,
    job_name,
    speed,
    timed_runs,
)
from handlers.parts import chat_id_of, query_of

_log = logging.getLogger(__name__)


def _markup(content: Content, lang: str, exercise: str) -> InlineKeyboardMarkup:
    stop = (content.text("exercises.buttons.stop", lang), STOP)
    if exercise == "pmr":
        return keyboard([(content.text("exercises.buttons.skip", lang), SKIP)], [stop])
    return keyboard([stop])


async def start(update: Update, context: BotContext, run_id: int, exercise: str) -> None:
    """The exercise's introduction and caution, then its first step."""
    identity = await context.identity(update)
    content = context.services.content
    lang = identity.language
    if exercise == "pmr":
        tense = content.raw("exercises.pmr.tense_seconds", lang)
        release = content.raw("exercises.pmr.release_seconds", lang)
        await say(update, context, "exercises.pmr.intro", tense=tense, release=release)
    else:
        await say(update, context, f"exercises.{exercise}.intro")
    await say(update, context, f"exercises.{exercise}.caution")
    await run_from(update, context, run_id, exercise, 0)


async def run_from(update: Update, context: BotContext, run_id: int, exercise: str, step: int) -> None:
    """Show ``step`` in a new message and time the steps from there."""
    identity = await context.identity(update)
    content = context.services.content
    lang = identity.language
    chat_id = chat_id_of(update)
    timeline = Timeline.of(content, lang, exercise)
    step = min(step, len(timeline) - 1)
    message = await context.bot.send_message(chat_id, timeline[step].text, reply_markup=_markup(content, lang, exercise))
    cancel_timer(context, chat_id)
    timed_runs(context)[chat_id] = run_id
    await context.services.exercise_log.mark_run(identity, run_id, message.message_id, step, utcnow())
    data = {
        "chat_id": chat_id,
        "message_id": message.message_id,
        "run_id": run_id,
        "telegram_id": identity.telegram_id,
        "lang": lang,
        "exercise": exercise,
        "step": step,
    }
    _jobs(context).run_once(_tick, timeline[step].seconds * speed(context), data=data, name=job_name(chat_id))


def _jobs(context: BotContext) -> JobQueue[BotContext]:
    """The application's job queue (the bot is always built with one)."""
    if context.job_queue is None:
        raise RuntimeError("no job queue")
    # python-telegram-bot types it JobQueue[ST] with ST left unbound
    return cast("JobQueue[BotContext]", context.job_queue)


async def _show_step(context: BotContext, data: dict[str, Any], step: int, delay: float | None = None) -> None:
    """Show ``step`` (or, past the end, finish) and schedule what follows: after the step's
    time, or after ``delay`` seconds (a resumed step that has partly gone by)."""
    chat_id = data["chat_id"]
    content = context.services.content
    lang, exercise = data["lang"], data["exercise"]
    timeline = Timeline.of(content, lang, exercise)
    if step < len(timeline):
        try:
            await context.bot.edit_message_text(
                timeline[step].text,
                chat_id=chat_id,
                message_id=data["message_id"],
                reply_markup=_markup(content, lang, exercise),
            )
        except BadRequest:
            pass  # e.g. the message is gone: keep the rhythm anyway
        if timed_runs(context).get(chat_id) != data["run_id"]:
            return  # stopped while the edit was under way
        if delay is None:
            delay = timeline[step].seconds * speed(context)
        _jobs(context).run_once(_tick, delay, data={**data, "step": step}, name=job_name(chat_id))
        return
    timed_runs(context).pop(chat_id, None)
    try:
        await context.bot.edit_message_text(
            content.text(f"exercises.{exercise}.finished", lang), chat_id=chat_id, message_id=data["message_id"]
        )
    except BadRequest:
        pass
    await rating.ask_after(context, chat_id, data["telegram_id"], lang, data["run_id"])


@public
async def _tick(context: BotContext) -> None:
    """A job: the current step's time is over."""
    assert context.job is not None and isinstance(context.job.data, dict)  # run_once's data
    data: dict[str, Any] = context.job.data
    if timed_runs(context).get(data["chat_id"]) != data["run_id"]:
        return  # stopped (or restarted) meanwhile
    await _show_step(context, data, data["step"] + 1)


def _timer_data(context: BotContext, chat_id: int) -> dict[str, Any] | None:
    """The data of the timer running in ``chat_id`` (its run, the step shown), if any."""
    jobs = context.job_queue.get_jobs_by_name(job_name(chat_id)) if context.job_queue else ()
    run_id = timed_runs(context).get(chat_id)
    return next((job.data for job in jobs if isinstance(job.data, dict) and job.data.get("run_id") == run_id), None)


@requires(Role.CLIENT)
async def skip_group(update: Update, context: BotContext) -> str:
    """Muscle relaxation: Skip this one: straight to the next muscle group."""
    await query_of(update).answer()
    chat_id = chat_id_of(update)
    data = _timer_data(context, chat_id)
    if data is None or data.get("exercise") != "pmr":
        return RUNNING
    for job in _jobs(context).get_jobs_by_name(job_name(chat_id)):
        job.schedule_removal()
    following = Timeline.of(context.services.content, data["lang"], "pmr").next_group(data["step"])
    await context.services.exercise_log.mark_run(
        await context.identity(update), data["run_id"], data["message_id"], following, utcnow()
    )
    await _show_step(context, data, following)
    return RUNNING


# -- paused and resumed (bot.flows) ----------------------------------------------------------


async def pause(update: Update, context: BotContext) -> None:
    """Stop the timer at the step it shows; the run remembers the step, with no message."""
    chat_id = chat_id_of(update)
    data = _timer_data(context, chat_id)
    run_id = timed_runs(context).get(chat_id)
    if run_id is None:
        return
    cancel_timer(context, chat_id)
    await context.services.exercise_log.pause_run(await context.identity(update), run_id, data["step"] if data else 0)


async def resume_paused(update: Update, context: BotContext) -> bool:
    """Go on with the paused exercise at the step it had reached, in a new message. False
    when there is none."""
    paused = await context.services.exercise_log.paused_run(await context.identity(update))
    if paused is None:
        return False
    run_id, exercise, step = paused
    await run_from(update, context, run_id, exercise, step)
    return True


# -- a restart: resume the paced exercises under way -------------------------------------------


async def on_consuming(application: Application, consuming: bool) -> None:
    """This instance started (or stopped) consuming updates (bot.runtime). Starting: resume
    the paced exercises under way, from a job (so that it has a context). Stopping: drop
    this instance's timers; the instance taking over resumes them."""
    job_queue = application.job_queue
    if job_queue is None:
        return
    if consuming:
        job_queue.run_once(_resume_all, 0, name="practice:resume")
        return
    application.bot_data.get(RUNS_KEY, {}).clear()
    for job in job_queue.jobs():
        if job.name and job.name.startswith("practice:"):
            job.schedule_removal()


@public
async def _resume_all(context: BotContext) -> None:
    """A job: every paced exercise that showed a step in the last RESUME_WITHIN goes on."""
    now = utcnow()
    for run in await context.services.exercise_log.runs_since(now - RESUME_WITHIN):
        if run.exercise not in PACED or run.telegram_id in timed_runs(context):
            continue
        try:
            await _resume_after_restart(context, run, now)
        except TelegramError as exc:  # e.g. the client blocked the bot meanwhile
            timed_runs(context).pop(run.telegram_id, None)
            _log.warning("Could not resume exercise run %s: %s", run.run_id, type(exc).__name__)


async def _resume_after_restart(context: BotContext, run: Run, now: datetime) -> None:
    factor = speed(context)
    timeline = Timeline.of(context.services.content, run.language, run.exercise)
    step, into = timeline.position(run.step, (now - run.since).total_seconds() / factor)
    data = {
        "chat_id": run.telegram_id,  # a private chat's id is the person's
        "message_id": run.message_id,
        "run_id": run.run_id,
        "telegram_id": run.telegram_id,
        "lang": run.language,
        "exercise": run.exercise,
        "step": step,
    }
    timed_runs(context)[run.telegram_id] = run.run_id
    _log.info("Resuming exercise run %s at step %d of %d", run.run_id, step, len(timeline))
    delay = (timeline[step].seconds - into) * factor if step < len(timeline) else None
    await _show_step(context, data, step, delay)
