"""/practice: calming exercises (issue 6). Built so far: slow breathing, progressive muscle
relaxation, the safe place and grounding 5-4-3-2-1.

    /practice ──► MENU ──[exercise]──► BEFORE (0-10) ──► RUNNING ──► rating after ──► end
                    ▲                   ▲                 (breathing, muscle relaxation: one
    [Start now] ────┴── (any) ──────────┘ (its exercise)   message edited per step by the
    under a reminder                                       JobQueue; grounding: a prompt per
                                                           sense, Next ›)

The rating before is stored as soon as it is given (encrypted, bot.services.practice_log);
the rating after completes the row and the change is shown. ✋ Stop on every step, and
"stop", ✋, /stop or /cancel typed at any moment, end the exercise at once: the breathing job
is cancelled, the exercise is logged as stopped early (its rating kept), and a short
grounding step is offered.

Timing: the phase seconds come from content; the setting PRACTICE_TIME_SCALE (or, in tests,
``application.bot_data["practice_speed"]``) multiplies them. No handler ever sleeps.

A restart: PTB keeps jobs in memory only. The message a timed exercise edits, the step it
shows and since when are stored with the exercise (no clinical content); when this
instance starts consuming updates, ``on_consuming`` resumes every timed exercise under way
at the step the elapsed time gives (or, if it ended meanwhile, shows the closing words and
asks the rating after). An instance that stops consuming drops its timers, so two
instances never edit the same exercise.
"""

from __future__ import annotations

import logging
import re
from datetime import datetime, timedelta
from typing import Any

from telegram import Update
from telegram.error import BadRequest, TelegramError
from telegram.ext import (
    Application,
    BaseHandler,
    CallbackQueryHandler,
    CommandHandler,
    ConversationHandler,
    MessageHandler,
    filters,
)

from bot.callbacks import CallbackCodec
from bot.content import Content
from bot.context import BotContext
from bot.db.models import Role
from bot.db.types import utcnow
from bot.flows import FlowHooks
from bot.delivery.buttons import REMINDER_START
from bot.services.practice_log import SAFE_FIELDS, Run
from bot.services.reminders import NotYours
from handlers import general
from handlers.fallback import stale_button
from handlers.access import public, refuse, requires
from handlers.common import (
    conversation,
    crisis_block,
    keyboard,
    say,
    settle,
    settle_again_ok,
    signed_ids,
    text,
    use_the_buttons,
)

_log = logging.getLogger(__name__)

MENU = "practice:menu"
BEFORE = "practice:before"
RUNNING = "practice:running"

SPEED_KEY = "practice_speed"  # bot_data: a factor on every timing (tests)
RUNS_KEY = "practice_runs"  # bot_data: chat id -> session id of the running timed exercise

EXERCISES = ("breathing", "pmr", "safe_place", "grounding")
TIMED = ("breathing", "pmr")
PICK = re.compile(r"^px:pick:(breathing|pmr|safe_place|grounding)$")
RATE_BEFORE = re.compile(r"^px:before:(breathing|pmr|safe_place|grounding):(\d{1,2})$")
SAFE = re.compile(r"^px:sp:(visit|change|delete)$")
SAFE_STATES = {field: f"practice:safe:{field}" for field in SAFE_FIELDS}
GROUND_NEXT = re.compile(r"^px:gnext:(\d{1,2})$")
STOP = "px:stop"
SKIP = "px:skip"
CALM_YES = "px:calm:yes"
CALM_NO = "px:calm:no"
AFTER = "px.after"  # signed: px.after|<session id>|<rating>
RESUME_WITHIN = timedelta(minutes=30)  # a timed exercise older than this is not resumed


def _job_name(chat_id: int) -> str:
    return f"practice:{chat_id}"


def _runs(context: BotContext) -> dict[int, int]:
    return context.application.bot_data.setdefault(RUNS_KEY, {})


def _speed(context: BotContext) -> float:
    default = context.services.settings.practice_time_scale
    return float(context.application.bot_data.get(SPEED_KEY, default))


def _cancel_job(context: BotContext, chat_id: int) -> None:
    _runs(context).pop(chat_id, None)
    if context.job_queue is not None:
        for job in context.job_queue.get_jobs_by_name(_job_name(chat_id)):
            job.schedule_removal()


async def _stop_row(update: Update, context: BotContext) -> list[tuple[str, str]]:
    return [(await text(update, context, "exercises.buttons.stop"), STOP)]


# -- the menu and the rating before ----------------------------------------------------------


@requires(Role.CLIENT)
async def practice(update: Update, context: BotContext) -> str:
    return await _menu(update, context)


async def _end_under_way(update: Update, context: BotContext) -> None:
    """An exercise still under way ends as stopped early (its ratings kept), its timer too."""
    _cancel_job(context, update.effective_chat.id)
    await context.services.practice_log.stop(await context.identity(update))


async def _menu(update: Update, context: BotContext) -> str:
    """The exercises to choose from; an exercise still under way ends as stopped early."""
    await _end_under_way(update, context)
    body = await text(update, context, "exercises.menu.title") + "\n\n" + await text(update, context, "exercises.menu.intro")
    rows = [
        [(await text(update, context, f"exercises.{name}.title"), f"px:pick:{name}")] for name in EXERCISES
    ]
    await context.bot.send_message(
        update.effective_chat.id, body, reply_markup=keyboard(*rows, await _stop_row(update, context))
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
    try:
        exercise = await context.services.reminders.delivered_exercise(identity.person_id, ids[0])
    except NotYours:
        await refuse(update, context, what=f"button:{REMINDER_START}", reason="ownership")
        return None
    await settle_again_ok(update)
    if exercise is None:
        return await _menu(update, context)
    await _end_under_way(update, context)
    return await _ask_before(update, context, exercise)


def _rating_rows(prefix: str) -> list[list[tuple[str, str]]]:
    return [[(str(n), f"{prefix}{n}") for n in range(0, 6)], [(str(n), f"{prefix}{n}") for n in range(6, 11)]]


@requires(Role.CLIENT)
async def pick(update: Update, context: BotContext) -> str:
    await settle(update)
    return await _ask_before(update, context, PICK.match(update.callback_query.data).group(1))


async def _ask_before(update: Update, context: BotContext, exercise: str) -> str:
    await say(
        update,
        context,
        "exercises.rating.before",
        reply_markup=keyboard(*_rating_rows(f"px:before:{exercise}:"), await _stop_row(update, context)),
    )
    return BEFORE


@requires(Role.CLIENT)
async def rate_before(update: Update, context: BotContext) -> str | int:
    match = RATE_BEFORE.match(update.callback_query.data)
    exercise, rating = match.group(1), int(match.group(2))
    if rating > 10:
        await update.callback_query.answer()
        return BEFORE
    await settle(update)
    session_id = await context.services.practice_log.begin(await context.identity(update), exercise, rating)
    if exercise in TIMED:
        await _start_timed(update, context, session_id, exercise)
    elif exercise == "safe_place":
        return await _safe_place_start(update, context)
    else:
        await _grounding_step(update, context, None)
    return RUNNING


# -- timed exercises: a JobQueue job edits one message per step ------------------------------
#
# Breathing: one step per phase (in 4 s, out 6 s) for N cycles. Muscle relaxation: per
# muscle group a tense step and a release step (Skip this one jumps to the next group).
# The message shows step i; the job fires after step i's seconds (times the speed factor)
# and shows step i + 1, or, after the last step, the closing words and the rating after.


def _timeline(content: Content, lang: str, exercise: str) -> list[tuple[str, float, int]]:
    """The steps of a timed exercise: (text, seconds, group)."""
    steps: list[tuple[str, float, int]] = []
    if exercise == "breathing":
        phases = content.raw("exercises.breathing.phases", lang)
        cycles = int(content.raw("exercises.breathing.cycles", lang))
        for cycle in range(cycles):
            progress = content.text("exercises.breathing.progress", lang, cycle=cycle + 1, cycles=cycles)
            for phase in phases:
                body = phase["text"].replace("{seconds}", str(phase["seconds"]))
                steps.append((f"<i>{progress}</i>\n\n{body}", float(phase["seconds"]), cycle))
        return steps
    groups = content.raw("exercises.pmr.groups", lang)
    tense = int(content.raw("exercises.pmr.tense_seconds", lang))
    release = int(content.raw("exercises.pmr.release_seconds", lang))
    for n, group in enumerate(groups):
        progress = content.text("exercises.pmr.progress", lang, step=n + 1, steps=len(groups))
        for key, seconds in (("tense", tense), ("release", release)):
            body = content.text(
                f"exercises.pmr.{key}_step", lang, name=group["name"], seconds=seconds, text=group[key]
            )
            steps.append((f"<i>{progress}</i>\n\n{body}", float(seconds), n))
    return steps


def _timed_markup(content: Content, lang: str, exercise: str) -> Any:
    stop = (content.text("exercises.buttons.stop", lang), STOP)
    if exercise == "pmr":
        return keyboard([(content.text("exercises.buttons.skip", lang), SKIP)], [stop])
    return keyboard([stop])


async def _start_timed(update: Update, context: BotContext, session_id: int, exercise: str) -> None:
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
    await _run_timed_from(update, context, session_id, exercise, 0)


async def _run_timed_from(update: Update, context: BotContext, session_id: int, exercise: str, step: int) -> None:
    """Show ``step`` of a timed exercise in a new message and time the steps from there."""
    identity = await context.identity(update)
    content = context.services.content
    lang = identity.language
    chat_id = update.effective_chat.id
    steps = _timeline(content, lang, exercise)
    step = min(step, len(steps) - 1)
    message = await context.bot.send_message(
        chat_id, steps[step][0], reply_markup=_timed_markup(content, lang, exercise)
    )
    _cancel_job(context, chat_id)
    _runs(context)[chat_id] = session_id
    await context.services.practice_log.mark_run(identity, session_id, message.message_id, step, utcnow())
    data = {
        "chat_id": chat_id,
        "message_id": message.message_id,
        "session_id": session_id,
        "telegram_id": identity.telegram_id,
        "lang": lang,
        "exercise": exercise,
        "step": step,
    }
    context.job_queue.run_once(_tick, steps[step][1] * _speed(context), data=data, name=_job_name(chat_id))


async def _show_step(context: BotContext, data: dict[str, Any], step: int, delay: float | None = None) -> None:
    """Show ``step`` (or, past the end, finish) and schedule what follows: after the step's
    time, or after ``delay`` seconds (a resumed step that has partly gone by)."""
    chat_id = data["chat_id"]
    content = context.services.content
    lang, exercise = data["lang"], data["exercise"]
    steps = _timeline(content, lang, exercise)
    if step < len(steps):
        try:
            await context.bot.edit_message_text(
                steps[step][0],
                chat_id=chat_id,
                message_id=data["message_id"],
                reply_markup=_timed_markup(content, lang, exercise),
            )
        except BadRequest:
            pass  # e.g. the message is gone: keep the rhythm anyway
        if _runs(context).get(chat_id) != data["session_id"]:
            return  # stopped while the edit was under way
        if delay is None:
            delay = steps[step][1] * _speed(context)
        context.job_queue.run_once(_tick, delay, data={**data, "step": step}, name=_job_name(chat_id))
        return
    _runs(context).pop(chat_id, None)
    try:
        await context.bot.edit_message_text(
            content.text(f"exercises.{exercise}.finished", lang), chat_id=chat_id, message_id=data["message_id"]
        )
    except BadRequest:
        pass
    await _ask_after(context, chat_id, data["telegram_id"], lang, data["session_id"])


@public
async def _tick(context: BotContext) -> None:
    """A job: the current step's time is over."""
    data: dict[str, Any] = context.job.data
    if _runs(context).get(data["chat_id"]) != data["session_id"]:
        return  # stopped (or restarted) meanwhile
    await _show_step(context, data, data["step"] + 1)


@requires(Role.CLIENT)
async def skip_group(update: Update, context: BotContext) -> str:
    """Muscle relaxation: Skip this one: straight to the next muscle group."""
    await update.callback_query.answer()
    chat_id = update.effective_chat.id
    jobs = context.job_queue.get_jobs_by_name(_job_name(chat_id)) if context.job_queue else ()
    job = next((j for j in jobs if j.data and j.data.get("exercise") == "pmr"), None)
    if job is None or _runs(context).get(chat_id) != job.data["session_id"]:
        return RUNNING
    data = job.data
    for old in jobs:
        old.schedule_removal()
    steps = _timeline(context.services.content, data["lang"], "pmr")
    group = steps[data["step"]][2]
    following = next((i for i, s in enumerate(steps) if s[2] > group), len(steps))
    await context.services.practice_log.mark_run(
        await context.identity(update), data["session_id"], data["message_id"], following, utcnow()
    )
    await _show_step(context, data, following)
    return RUNNING


# -- a restart: resume the timed exercises under way -------------------------------------------


async def on_consuming(application: Application, consuming: bool) -> None:
    """This instance started (or stopped) consuming updates (bot.runtime). Starting: resume
    the timed exercises under way, from a job (so that it has a context). Stopping: drop
    this instance's timers; the instance taking over resumes them."""
    job_queue = application.job_queue
    if job_queue is None:
        return
    if consuming:
        job_queue.run_once(_resume, 0, name="practice:resume")
        return
    application.bot_data.get(RUNS_KEY, {}).clear()
    for job in job_queue.jobs():
        if job.name and job.name.startswith("practice:"):
            job.schedule_removal()


@public
async def _resume(context: BotContext) -> None:
    """A job: every timed exercise that showed a step in the last RESUME_WITHIN goes on."""
    now = utcnow()
    for run in await context.services.practice_log.runs_since(now - RESUME_WITHIN):
        if run.exercise not in TIMED or run.telegram_id in _runs(context):
            continue
        try:
            await _resume_run(context, run, now)
        except TelegramError as exc:  # e.g. the client blocked the bot meanwhile
            _runs(context).pop(run.telegram_id, None)
            _log.warning("Could not resume practice session %s: %s", run.session_id, type(exc).__name__)


async def _resume_run(context: BotContext, run: Run, now: datetime) -> None:
    speed = _speed(context)
    steps = _timeline(context.services.content, run.language, run.exercise)
    step, into = run.step, (now - run.since).total_seconds() / speed
    while step < len(steps) and into >= steps[step][1]:
        into -= steps[step][1]
        step += 1
    data = {
        "chat_id": run.telegram_id,  # a private chat's id is the person's
        "message_id": run.message_id,
        "session_id": run.session_id,
        "telegram_id": run.telegram_id,
        "lang": run.language,
        "exercise": run.exercise,
        "step": step,
    }
    _runs(context)[run.telegram_id] = run.session_id
    _log.info("Resuming practice session %s at step %d of %d", run.session_id, step, len(steps))
    delay = (steps[step][1] - into) * speed if step < len(steps) else None
    await _show_step(context, data, step, delay)


# -- grounding 5-4-3-2-1: a prompt per sense, Next › ------------------------------------------


async def _grounding_step(update: Update, context: BotContext, step: int | None) -> None:
    """``None``: the intro (a new message); then step 0.. (the same message, edited)."""
    identity = await context.identity(update)
    content = context.services.content
    lang = identity.language
    steps = content.raw("exercises.grounding.steps", lang)
    next_label = content.text("exercises.buttons.next", lang)
    stop = (content.text("exercises.buttons.stop", lang), STOP)
    if step is None:
        await context.bot.send_message(
            update.effective_chat.id,
            content.text("exercises.grounding.intro", lang),
            reply_markup=keyboard([(next_label, "px:gnext:0")], [stop]),
        )
        return
    body = f"<i>{step + 1} / {len(steps)}</i>\n\n{steps[step]['prompt']}"
    await update.callback_query.edit_message_text(
        body, reply_markup=keyboard([(next_label, f"px:gnext:{step + 1}")], [stop])
    )


@requires(Role.CLIENT)
async def grounding_next(update: Update, context: BotContext) -> str:
    query = update.callback_query
    identity = await context.identity(update)
    steps = context.services.content.raw("exercises.grounding.steps", identity.language)
    step = int(GROUND_NEXT.match(query.data).group(1))
    if step < len(steps):
        await query.answer()
        await _grounding_step(update, context, step)
        return RUNNING
    await settle(update)
    await say(update, context, "exercises.grounding.finished")
    await _ask_after_open(update, context)
    return RUNNING


# -- the safe place: three short answers, stored encrypted, replayed as a cue -----------------


async def _safe_place_start(update: Update, context: BotContext) -> str:
    place = await context.services.practice_log.safe_place(await context.identity(update))
    if place is None or not all(place.values()):
        await say(update, context, "exercises.safe_place.intro")
        await say(update, context, "exercises.safe_place.caution")
        return await _safe_question(update, context, 0)
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
            await _stop_row(update, context),
        ),
    )
    return RUNNING


async def _safe_question(update: Update, context: BotContext, index: int) -> str:
    identity = await context.identity(update)
    questions = context.services.content.raw("exercises.safe_place.questions", identity.language)
    await context.bot.send_message(
        update.effective_chat.id, questions[index]["prompt"], reply_markup=keyboard(await _stop_row(update, context))
    )
    return SAFE_STATES[questions[index]["field"]]


async def _safe_replay(update: Update, context: BotContext) -> str:
    identity = await context.identity(update)
    place = await context.services.practice_log.safe_place(identity) or {}
    await say(update, context, "exercises.safe_place.cue", **{f: place.get(f) or "…" for f in SAFE_FIELDS})
    await say(update, context, "exercises.safe_place.finished")
    await _ask_after_open(update, context)
    return RUNNING


async def _ask_after_open(update: Update, context: BotContext) -> None:
    identity = await context.identity(update)
    open_ids = await context.services.practice_log.open_ids(identity)
    if open_ids:
        await _ask_after(context, update.effective_chat.id, identity.telegram_id, identity.language, open_ids[-1])


@requires(Role.CLIENT)
async def safe_choice(update: Update, context: BotContext) -> str:
    await settle(update)
    choice = SAFE.match(update.callback_query.data).group(1)
    if choice == "visit":
        return await _safe_replay(update, context)
    if choice == "change":
        return await _safe_question(update, context, 0)
    await context.services.practice_log.delete_safe_place(await context.identity(update))
    await say(update, context, "exercises.safe_place.deleted")
    await _ask_after_open(update, context)
    return RUNNING


def _safe_answer(index: int):
    @requires(Role.CLIENT)
    async def answer(update: Update, context: BotContext) -> str:
        identity = await context.identity(update)
        content = context.services.content
        questions = content.raw("exercises.safe_place.questions", identity.language)
        limit = int(content.raw("exercises.safe_place.max_chars", identity.language))
        words = " ".join((update.message.text or "").split())
        if not words or len(words) > limit:
            await say(update, context, "exercises.safe_place.too_long", max=limit)
            return SAFE_STATES[questions[index]["field"]]
        await context.services.practice_log.save_safe_place(identity, questions[index]["field"], words)
        if index + 1 < len(questions):
            return await _safe_question(update, context, index + 1)
        await say(update, context, "exercises.safe_place.saved")
        return await _safe_replay(update, context)

    answer.__qualname__ = f"safe_answer_{index}"
    return answer


# -- the rating after -----------------------------------------------------------------------


async def _ask_after(context: BotContext, chat_id: int, telegram_id: int, lang: str, session_id: int) -> None:
    content = context.services.content
    codec = context.services.callbacks
    rows = [
        [(str(n), codec.pack(telegram_id, AFTER, session_id, n)) for n in range(0, 6)],
        [(str(n), codec.pack(telegram_id, AFTER, session_id, n)) for n in range(6, 11)],
    ]
    await context.bot.send_message(
        chat_id,
        content.text("exercises.rating.after", lang),
        reply_markup=keyboard(*rows, [(content.text("exercises.buttons.stop", lang), STOP)]),
    )


@requires(Role.CLIENT)
async def rate_after(update: Update, context: BotContext) -> str | int | None:
    ids = await signed_ids(update, context, AFTER)
    if ids is None or len(ids) != 2 or not 0 <= ids[1] <= 10:
        return RUNNING
    session_id, rating = ids
    change = await context.services.practice_log.finish(await context.identity(update), session_id, rating)
    if change is None:
        await refuse(update, context, what=f"button:{AFTER}", reason="ownership")
        return RUNNING
    if not change.recorded:  # an exercise that has ended (an older message's button): as it was
        await stale_button(update, context)
        return None
    await settle(update)
    before, after = change.before, change.after
    key = "change_same" if before is None or after == before else ("change_down" if after < before else "change_up")
    params: dict[str, Any] = {"before": before if before is not None else "?", "after": after}
    if key == "change_up":
        params["crisis"] = await crisis_block(update, context)
    body = await text(update, context, f"exercises.rating.{key}", **params)
    logged = await text(update, context, "exercises.rating.logged")
    await context.bot.send_message(update.effective_chat.id, f"{body}\n\n<i>{logged}</i>")
    return ConversationHandler.END


# -- stopping --------------------------------------------------------------------------------


@public  # a fallback of this conversation only (which only clients enter); /cancel is shared
async def stop(update: Update, context: BotContext) -> int:
    """✋ Stop, "stop", ✋, /stop or /cancel: end at once, keep what was answered, offer grounding."""
    await _end_under_way(update, context)
    if update.callback_query:
        await settle(update)
    stopped = await text(update, context, "exercises.stop.stopped")
    offer = await text(update, context, "exercises.stop.grounding_offer")
    await context.bot.send_message(
        update.effective_chat.id,
        f"{stopped}\n\n{offer}",
        reply_markup=keyboard(
            [(await text(update, context, "exercises.buttons.grounding"), CALM_YES)],
            [(await text(update, context, "exercises.buttons.no_thanks"), CALM_NO)],
        ),
    )
    return ConversationHandler.END


@requires(Role.CLIENT)
async def calm(update: Update, context: BotContext) -> int:
    await settle(update)
    if update.callback_query.data == CALM_YES:
        await say(update, context, "exercises.stop.grounding")
    await say(update, context, "exercises.stop.grounding_done")
    return ConversationHandler.END


# -- ended by another flow, paused and resumed (bot.flows) -------------------------------------


async def _ended_by_another(update: Update, context: BotContext, state: object) -> None:
    """Another command or flow took over: an exercise under way ends as stopped early."""
    await _end_under_way(update, context)


async def _pause(update: Update, context: BotContext, state: object) -> None:
    """A timed exercise stops its timer at the step it shows; the rest waits as it is."""
    chat_id = update.effective_chat.id
    session_id = _runs(context).get(chat_id)
    if session_id is None:
        return
    jobs = context.job_queue.get_jobs_by_name(_job_name(chat_id)) if context.job_queue else ()
    step = next((job.data["step"] for job in jobs if job.data and job.data.get("session_id") == session_id), 0)
    _cancel_job(context, chat_id)
    await context.services.practice_log.pause_run(await context.identity(update), session_id, step)


async def _resume_paused(update: Update, context: BotContext, state: object) -> None:
    """Back to where the client was: a timed exercise goes on at the step it had reached (in a
    new message); the menu and the safe-place questions are asked again."""
    identity = await context.identity(update)
    if state == RUNNING:
        paused = await context.services.practice_log.paused_run(identity)
        if paused is not None:
            session_id, exercise, step = paused
            await _run_timed_from(update, context, session_id, exercise, step)
            return
    if state == MENU:
        await _menu(update, context)
        return
    fields = {state_name: n for n, state_name in enumerate(SAFE_STATES.values())}
    if state in fields:
        await _safe_question(update, context, fields[state])
        return
    await say(update, context, "flows.resumed")


def build(fallbacks: list[BaseHandler], free_text: filters.BaseFilter, content: Content) -> ConversationHandler:
    stops: list[BaseHandler] = [
        CommandHandler(["stop", "cancel"], stop),
        MessageHandler(filters.TEXT & general.stop_words(content), stop),
        CallbackQueryHandler(stop, pattern=f"^{re.escape(STOP)}$"),
    ]
    return conversation(
        "practice",
        entry_points=[
            CommandHandler("practice", practice),
            CallbackQueryHandler(start_from_reminder, pattern=CallbackCodec.pattern(REMINDER_START)),
            CallbackQueryHandler(calm, pattern=f"^(?:{re.escape(CALM_YES)}|{re.escape(CALM_NO)})$"),
        ],
        states={
            MENU: [CallbackQueryHandler(pick, pattern=PICK), MessageHandler(free_text, use_the_buttons)],
            BEFORE: [
                CallbackQueryHandler(rate_before, pattern=RATE_BEFORE),
                MessageHandler(free_text, use_the_buttons),
            ],
            RUNNING: [
                CallbackQueryHandler(grounding_next, pattern=GROUND_NEXT),
                CallbackQueryHandler(skip_group, pattern=f"^{re.escape(SKIP)}$"),
                CallbackQueryHandler(safe_choice, pattern=SAFE),
                CallbackQueryHandler(rate_after, pattern=CallbackCodec.pattern(AFTER)),
                MessageHandler(free_text, use_the_buttons),
            ],
            **{
                SAFE_STATES[field]: [MessageHandler(free_text, _safe_answer(n))]
                for n, field in enumerate(SAFE_FIELDS)
            },
        },
        fallbacks=stops + fallbacks,
        hooks=FlowHooks(on_end=_ended_by_another, on_pause=_pause, on_resume=_resume_paused),
    )

