"""/reminders: a client's practice reminders, and the buttons under a delivered reminder.

    /reminders ──► list ──[a reminder]──► page ──[Change time]──► TIME ──(HH:MM)──► changed
                    │                       ├──[Change days]──► DAYS ──[Next]──► changed
                    │                       ├──[Change exercise]──► EXERCISE ──[one]──► changed
                    │                       ├──[Pause] / [Resume]──► page
                    │                       └──[Delete]──► confirm ──[Yes]──► deleted
                    └──[+ Add]──► EXERCISE ──[one, or Any]──► DAYS ──[toggle days, Next]──►
                                  TIME ──[a time / typed]──► added

    a delivered reminder: [Snooze 15 min] [Skip today] here; [Start now] opens /practice on
    the reminder's exercise (handlers/exercises)

Buttons that name a reminder (or a delivered message) carry signed payloads, made for the
presser (bot.callbacks); the service (bot.services.reminders) checks ownership at the moment
of use. Day and time buttons name no record (``rmd:…``, ``rmt:HH:MM``); the reminder being
edited is a typed draft (``ReminderDraft``), kept in the database by bot.flows, so a restart
or a pause (/help) loses no choice made.
Times are the client's local time in their own zone; the outbox delivers them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import time
from typing import Any

from telegram import InlineKeyboardMarkup, Update
from telegram.ext import (
    BaseHandler,
    CallbackQueryHandler,
    CommandHandler,
    ConversationHandler,
    MessageHandler,
    filters,
)

from bot.callbacks import CallbackCodec
from bot.context import BotContext
from bot.db.models import Role
from bot.flows import FlowHooks, TypedDrafts
from bot.delivery.buttons import REMINDER_SKIP as SKIP
from bot.delivery.buttons import REMINDER_SNOOZE as SNOOZE
from bot.exercises import EXERCISES
from bot.services.reminders import NotYours, Reminder, TooMany
from handlers.access import refuse, requires
from handlers.common import (
    conversation,
    edit_in_place,
    keyboard,
    packer,
    say,
    settle,
    settle_again_ok,
    signed_ids,
    text,
    use_the_buttons,
)
from handlers.parts import button_match, chat_id_of, message_of, query_of

EXERCISE_STATE = "reminders_exercise"
DAYS_STATE = "reminders_days"
TIME_STATE = "reminders_time"

# Signed actions (short: a payload holds at most 64 bytes).
LIST = "rem.list"
ADD = "rem.add"
OPEN = "rem.open"
EDIT_TIME = "rem.time"
EDIT_DAYS = "rem.days"
EDIT_EXERCISE = "rem.ex"
PAUSE = "rem.pause"
RESUME = "rem.resume"
DELETE = "rem.del"
DELETE_OK = "rem.del_ok"

EXERCISE_BUTTON = re.compile(rf"^rmx:({'|'.join(EXERCISES)}|any)$")
DAY_BUTTON = re.compile(r"^rmd:([0-6]|all|ok)$")
TIME_BUTTON = re.compile(r"^rmt:(\d{2}):(\d{2})$")
TYPED_TIME = re.compile(r"^\s*(\d{1,2})\s*[:.hH]\s*(\d{2})\s*$|^\s*(\d{1,2})\s*$")
COMMON_TIMES = ["08:00", "09:00", "12:00", "17:00", "19:00", "21:00"]

FLOW = "reminders"


@dataclass
class ReminderDraft:
    """What the client has chosen so far: for a new reminder (``id`` None) its exercise and
    days; for a change, the reminder's id (and the days being chosen)."""

    id: int | None = None
    days: list[int] | None = None
    exercise: str | None = None


_drafts = TypedDrafts(FLOW, ReminderDraft)
_draft, _keep, _drop = _drafts.get, _drafts.keep, _drafts.drop


# -- words -------------------------------------------------------------------------------------


async def _days(update: Update, context: BotContext, days: frozenset[int] | set[int]) -> str:
    if len(days) == 7:
        return await text(update, context, "reminders.every_day")
    identity = await context.identity(update)
    names = context.services.content.texts("reminders.days", identity.language)
    return ", ".join(names[day] for day in sorted(days))


async def _exercise(update: Update, context: BotContext, exercise: str | None) -> str:
    if exercise is None:
        return await text(update, context, "reminders.any_exercise")
    return await text(update, context, f"exercises.{exercise}.title")


async def _words(update: Update, context: BotContext, reminder: Reminder) -> dict[str, Any]:  # say()'s params
    identity = await context.identity(update)
    return {
        "days": await _days(update, context, reminder.weekdays),
        "time": reminder.at.strftime("%H:%M"),
        "zone": identity.timezone,
        "exercise": await _exercise(update, context, reminder.exercise),
    }


async def _person(update: Update, context: BotContext) -> int:
    identity = await context.identity(update)
    assert identity.person_id is not None
    return identity.person_id


# -- the list and one reminder -----------------------------------------------------------------


async def _list(update: Update, context: BotContext) -> tuple[str, InlineKeyboardMarkup]:
    identity = await context.identity(update)
    reminders = await context.services.reminders.list(await _person(update, context))
    pack = packer(update, context)
    buttons: list[list[tuple[str, str]]] = []
    if reminders:
        lines = [await text(update, context, "reminders.title", zone=identity.timezone)]
        for reminder in reminders:
            words = await _words(update, context, reminder)
            key = "reminders.row" if reminder.active else "reminders.row_paused"
            lines.append(await text(update, context, key, **words))
            label = f"{'⏸ ' if not reminder.active else ''}{words['time']} · {words['days']}"
            buttons.append([(label, pack(OPEN, reminder.id))])
        body = "\n".join(lines)
    else:
        body = await text(update, context, "reminders.empty")
    buttons.append([(await text(update, context, "reminders.add_button"), pack(ADD))])
    return body, keyboard(*buttons)


@requires(Role.CLIENT)
async def show_list(update: Update, context: BotContext) -> int:
    """/reminders: the list, as a new message."""
    await _drop(update, context)
    body, markup = await _list(update, context)
    await context.bot.send_message(chat_id_of(update), body, reply_markup=markup)
    return ConversationHandler.END


@requires(Role.CLIENT)
async def back_to_list(update: Update, context: BotContext) -> int:
    if await signed_ids(update, context, LIST) is None:
        return ConversationHandler.END
    await query_of(update).answer()
    body, markup = await _list(update, context)
    await edit_in_place(update, body, reply_markup=markup)
    return ConversationHandler.END


async def _mine(update: Update, context: BotContext, action: str) -> Reminder | None:
    """The reminder a signed button names, if it is (still) the presser's own."""
    ids = await signed_ids(update, context, action)
    if not ids:
        return None
    try:
        return await context.services.reminders.get(await _person(update, context), ids[0])
    except NotYours:
        await refuse(update, context, what=f"button:{action}", reason="ownership")
        return None


async def _show_page(update: Update, context: BotContext, reminder: Reminder) -> None:
    pack = packer(update, context)
    key = "reminders.page" if reminder.active else "reminders.page_paused"
    toggle = (
        (await text(update, context, "reminders.pause_button"), pack(PAUSE, reminder.id))
        if reminder.active
        else (await text(update, context, "reminders.resume_button"), pack(RESUME, reminder.id))
    )
    markup = keyboard(
        [
            (await text(update, context, "reminders.time_button"), pack(EDIT_TIME, reminder.id)),
            (await text(update, context, "reminders.days_button"), pack(EDIT_DAYS, reminder.id)),
        ],
        [(await text(update, context, "reminders.exercise_button"), pack(EDIT_EXERCISE, reminder.id))],
        [toggle, (await text(update, context, "reminders.delete_button"), pack(DELETE, reminder.id))],
        [(await text(update, context, "reminders.back_button"), pack(LIST))],
    )
    body = await text(update, context, key, **await _words(update, context, reminder))
    await edit_in_place(update, body, reply_markup=markup)


@requires(Role.CLIENT)
async def open_reminder(update: Update, context: BotContext) -> int:
    reminder = await _mine(update, context, OPEN)
    if reminder is not None:
        await query_of(update).answer()
        await _show_page(update, context, reminder)
    return ConversationHandler.END


async def _set_active(update: Update, context: BotContext, action: str, active: bool) -> int:
    reminder = await _mine(update, context, action)
    if reminder is None:
        return ConversationHandler.END
    reminder = await context.services.reminders.change(
        await _person(update, context), reminder.id, active=active
    )
    if active:
        answer = await text(update, context, "reminders.resumed", **await _words(update, context, reminder))
    else:
        answer = await text(update, context, "reminders.paused")
    await query_of(update).answer(answer)
    await _show_page(update, context, reminder)
    return ConversationHandler.END


@requires(Role.CLIENT)
async def pause(update: Update, context: BotContext) -> int:
    return await _set_active(update, context, PAUSE, False)


@requires(Role.CLIENT)
async def resume(update: Update, context: BotContext) -> int:
    return await _set_active(update, context, RESUME, True)


@requires(Role.CLIENT)
async def confirm_delete(update: Update, context: BotContext) -> int:
    reminder = await _mine(update, context, DELETE)
    if reminder is None:
        return ConversationHandler.END
    await query_of(update).answer()
    pack = packer(update, context)
    markup = keyboard(
        [(await text(update, context, "reminders.delete_yes_button"), pack(DELETE_OK, reminder.id))],
        [(await text(update, context, "reminders.delete_no_button"), pack(OPEN, reminder.id))],
    )
    body = await text(update, context, "reminders.delete_confirm", **await _words(update, context, reminder))
    await edit_in_place(update, body, reply_markup=markup)
    return ConversationHandler.END


@requires(Role.CLIENT)
async def delete(update: Update, context: BotContext) -> int:
    reminder = await _mine(update, context, DELETE_OK)
    if reminder is None:
        return ConversationHandler.END
    try:
        await context.services.reminders.delete(await _person(update, context), reminder.id)
    except NotYours:
        await refuse(update, context, what=f"button:{DELETE_OK}", reason="ownership")
        return ConversationHandler.END
    await query_of(update).answer()
    pack = packer(update, context)
    await edit_in_place(
        update, await text(update, context, "reminders.deleted"),
        reply_markup=keyboard([(await text(update, context, "reminders.back_button"), pack(LIST))]),
    )
    return ConversationHandler.END


# -- adding, and changing days or time ------------------------------------------------------------


async def _days_keyboard(update: Update, context: BotContext, chosen: set[int]) -> InlineKeyboardMarkup:
    identity = await context.identity(update)
    names = context.services.content.texts("reminders.days", identity.language)
    day = [(f"✓ {names[d]}" if d in chosen else names[d], f"rmd:{d}") for d in range(7)]
    return keyboard(
        day[:4],
        day[4:],
        [(await text(update, context, "reminders.every_day_button"), "rmd:all")],
        [(await text(update, context, "reminders.days_done_button"), "rmd:ok")],
    )


async def _ask_exercise(update: Update, context: BotContext, reminder: Reminder | None) -> str:
    await _keep(update, context, ReminderDraft(id=reminder.id if reminder else None))
    rows = [[(await _exercise(update, context, name), f"rmx:{name}")] for name in EXERCISES]
    rows.append([(await _exercise(update, context, None), "rmx:any")])
    await say(update, context, "reminders.ask_exercise", reply_markup=keyboard(*rows))
    return EXERCISE_STATE


async def _ask_days(update: Update, context: BotContext, reminder: Reminder | None) -> str:
    chosen = set(reminder.weekdays) if reminder else set()
    draft = await _draft(update, context) or ReminderDraft()
    await _keep(update, context, ReminderDraft(
        id=reminder.id if reminder else None,
        days=sorted(chosen),
        exercise=draft.exercise if reminder is None else None,
    ))
    await say(update, context, "reminders.ask_days", reply_markup=await _days_keyboard(update, context, chosen))
    return DAYS_STATE


async def _ask_time(update: Update, context: BotContext) -> str:
    identity = await context.identity(update)
    buttons = [(t, f"rmt:{t}") for t in COMMON_TIMES]
    await say(
        update, context, "reminders.ask_time", zone=identity.timezone,
        reply_markup=keyboard(buttons[:3], buttons[3:]),
    )
    return TIME_STATE


@requires(Role.CLIENT)
async def add(update: Update, context: BotContext) -> str | int:
    if await signed_ids(update, context, ADD) is None:
        return ConversationHandler.END
    await query_of(update).answer()
    return await _ask_exercise(update, context, None)


async def _editing(update: Update, context: BotContext, action: str) -> Reminder | None:
    """The reminder a Change … button names, if it is the presser's (the press answered)."""
    reminder = await _mine(update, context, action)
    if reminder is not None:
        await query_of(update).answer()
    return reminder


@requires(Role.CLIENT)
async def edit_exercise(update: Update, context: BotContext) -> str | int:
    reminder = await _editing(update, context, EDIT_EXERCISE)
    return ConversationHandler.END if reminder is None else await _ask_exercise(update, context, reminder)


@requires(Role.CLIENT)
async def exercise_pressed(update: Update, context: BotContext) -> str | int:
    draft = await _draft(update, context)
    await settle(update)
    if draft is None:
        await say(update, context, "reminders.lost")
        return ConversationHandler.END
    choice = button_match(EXERCISE_BUTTON, update).group(1)
    exercise = None if choice == "any" else choice
    if draft.id is None:
        await _keep(update, context, ReminderDraft(exercise=exercise))
        return await _ask_days(update, context, None)
    return await _save(update, context, draft.id, exercise=exercise, any_exercise=exercise is None)


@requires(Role.CLIENT)
async def edit_days(update: Update, context: BotContext) -> str | int:
    reminder = await _editing(update, context, EDIT_DAYS)
    return ConversationHandler.END if reminder is None else await _ask_days(update, context, reminder)


@requires(Role.CLIENT)
async def edit_time(update: Update, context: BotContext) -> str | int:
    reminder = await _editing(update, context, EDIT_TIME)
    if reminder is None:
        return ConversationHandler.END
    await _keep(update, context, ReminderDraft(id=reminder.id))
    return await _ask_time(update, context)


@requires(Role.CLIENT)
async def day_pressed(update: Update, context: BotContext) -> str | int:
    draft = await _draft(update, context)
    match = DAY_BUTTON.match(query_of(update).data or "")
    if draft is None or draft.days is None or match is None:
        await settle(update)
        await say(update, context, "reminders.lost")
        return ConversationHandler.END
    chosen = set(draft.days)
    choice = match.group(1)
    if choice == "ok":
        if not chosen:
            await query_of(update).answer(await text(update, context, "reminders.no_days"), show_alert=True)
            return DAYS_STATE
        await settle(update)
        if draft.id is None:
            return await _ask_time(update, context)
        return await _save(update, context, draft.id, weekdays=chosen)
    if choice == "all":
        chosen = set() if len(chosen) == 7 else set(range(7))
    else:
        chosen ^= {int(choice)}
    draft.days = sorted(chosen)
    await _keep(update, context, draft)
    await query_of(update).answer()
    await query_of(update).edit_message_reply_markup(await _days_keyboard(update, context, chosen))
    return DAYS_STATE


def _parse_time(value: str) -> time | None:
    match = TYPED_TIME.match(value)
    if match is None:
        return None
    hours, minutes = (match.group(1), match.group(2)) if match.group(1) else (match.group(3), "00")
    if not (0 <= int(hours) <= 23 and 0 <= int(minutes) <= 59):
        return None
    return time(int(hours), int(minutes))


@requires(Role.CLIENT)
async def time_pressed(update: Update, context: BotContext) -> str | int:
    await settle(update)
    match = TIME_BUTTON.match(query_of(update).data or "")
    at = _parse_time(f"{match.group(1)}:{match.group(2)}") if match else None
    return await _time_chosen(update, context, at)


@requires(Role.CLIENT)
async def time_typed(update: Update, context: BotContext) -> str | int:
    return await _time_chosen(update, context, _parse_time(message_of(update).text or ""))


async def _time_chosen(update: Update, context: BotContext, at: time | None) -> str | int:
    draft = await _draft(update, context)
    if draft is None:
        await say(update, context, "reminders.lost")
        return ConversationHandler.END
    if at is None:
        await say(update, context, "reminders.bad_time")
        return TIME_STATE
    if draft.id is None:
        days = set(draft.days or ())
        exercise = draft.exercise
        try:
            await context.services.reminders.add(await _person(update, context), days, at, exercise)
        except TooMany:
            await _drop(update, context)
            await say(update, context, "reminders.too_many")
            return ConversationHandler.END
        await _drop(update, context)
        await say(
            update, context, "reminders.added", days=await _days(update, context, days),
            time=at.strftime("%H:%M"), exercise=await _exercise(update, context, exercise),
        )
        return ConversationHandler.END
    return await _save(update, context, draft.id, at=at)


async def _save(update: Update, context: BotContext, reminder_id: int, **change: object) -> int:
    """Apply ``change`` (days, time or exercise: see ReminderService.change) and say so."""
    await _drop(update, context)
    try:
        reminder = await context.services.reminders.change(
            await _person(update, context), reminder_id, **change  # type: ignore[arg-type]
        )
    except NotYours:
        await refuse(update, context, what="reminders:change", reason="ownership")
        return ConversationHandler.END
    await say(update, context, "reminders.changed", **await _words(update, context, reminder))
    return ConversationHandler.END


# -- the buttons under a delivered reminder --------------------------------------------------------


async def _delivered(update: Update, context: BotContext, action: str) -> int | None:
    ids = await signed_ids(update, context, action)
    return ids[0] if ids else None


@requires(Role.CLIENT)
async def snooze(update: Update, context: BotContext) -> None:
    message_id = await _delivered(update, context, SNOOZE)
    if message_id is None:
        return
    try:
        await context.services.reminders.snooze(await _person(update, context), message_id)
    except NotYours:
        await refuse(update, context, what=f"button:{SNOOZE}", reason="ownership")
        return
    await settle_again_ok(update)
    await say(update, context, "reminders.snoozed")


@requires(Role.CLIENT)
async def skip_today(update: Update, context: BotContext) -> None:
    message_id = await _delivered(update, context, SKIP)
    if message_id is None:
        return
    try:
        await context.services.reminders.skip_today(await _person(update, context), message_id)
    except NotYours:
        await refuse(update, context, what=f"button:{SKIP}", reason="ownership")
        return
    await settle_again_ok(update)
    await say(update, context, "reminders.skipped")


def build(fallbacks: list[BaseHandler], free_text: filters.BaseFilter) -> ConversationHandler:
    buttons: list[BaseHandler] = [
        CallbackQueryHandler(back_to_list, pattern=CallbackCodec.pattern(LIST)),
        CallbackQueryHandler(add, pattern=CallbackCodec.pattern(ADD)),
        CallbackQueryHandler(open_reminder, pattern=CallbackCodec.pattern(OPEN)),
        CallbackQueryHandler(edit_time, pattern=CallbackCodec.pattern(EDIT_TIME)),
        CallbackQueryHandler(edit_days, pattern=CallbackCodec.pattern(EDIT_DAYS)),
        CallbackQueryHandler(edit_exercise, pattern=CallbackCodec.pattern(EDIT_EXERCISE)),
        CallbackQueryHandler(pause, pattern=CallbackCodec.pattern(PAUSE)),
        CallbackQueryHandler(resume, pattern=CallbackCodec.pattern(RESUME)),
        CallbackQueryHandler(confirm_delete, pattern=CallbackCodec.pattern(DELETE)),
        CallbackQueryHandler(delete, pattern=CallbackCodec.pattern(DELETE_OK)),
    ]
    return conversation(
        "reminders",
        entry_points=[CommandHandler("reminders", show_list), *buttons],
        states={
            EXERCISE_STATE: [
                CallbackQueryHandler(exercise_pressed, pattern=EXERCISE_BUTTON),
                MessageHandler(free_text, use_the_buttons),
            ],
            DAYS_STATE: [
                CallbackQueryHandler(day_pressed, pattern=DAY_BUTTON),
                MessageHandler(free_text, use_the_buttons),
            ],
            TIME_STATE: [
                CallbackQueryHandler(time_pressed, pattern=TIME_BUTTON),
                MessageHandler(free_text, time_typed),
            ],
        },
        fallbacks=fallbacks,
        hooks=FlowHooks(keeps_draft=True),
    )


def build_buttons() -> list[BaseHandler]:
    """Snooze and Skip under a delivered reminder: available at any time. (Start now is an
    entry point of the /practice conversation.)"""
    return [
        CallbackQueryHandler(snooze, pattern=CallbackCodec.pattern(SNOOZE)),
        CallbackQueryHandler(skip_today, pattern=CallbackCodec.pattern(SKIP)),
    ]
