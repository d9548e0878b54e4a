"""/safetyplan: the client's own safety plan, Stanley & Brown's six steps in their words
(bot.services.safety_plan; the texts in content/<language>/safetyplan.yaml).

    /safetyplan ──► no plan: intro ──► step 1 … step 6 ──► the whole plan ──► share? Yes / Not now
        │            (each: typed answer, saved at once; Skip; ✋ Stop)
        ├──► a plan begun: what it holds, then [Go on at step N] or [Start over] (confirmed)
        └──► a plan made: shown at once, with [Change a step] [Share | Stop sharing] [Delete]
                                                    └──► which step? ──► its question, with
                                                         what it holds now ──► the plan again

In a crisis the plan must be one command away: a finished plan is shown at once, without a
question first, and ``show_plan`` shows it from anywhere (the crisis path calls it).

The buttons under a shown plan (and the share question, the delete confirmation, the offer
to make a plan) are entry points: they act on the presser's own plan only, carry no record
id, and work from the message they are under, also when no step is under way. Typed answers
are clinical: they go to the service and are never logged. ✋ Stop, "stop", ✋, /stop or
/cancel end the conversation at once (what was written is kept) and offer a one-minute
grounding step. /help pauses it; ↩ Back to where I was asks the step's question again.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Coroutine
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

from bot.content import Content, trusted_html
from bot.context import BotContext
from bot.db.models import Role
from bot.flows import Flow, FlowHooks
from bot.services.safety_plan import STEPS, AnswerTooLong, EmptyAnswer, NoPlan, Plan
from handlers import general
from handlers.access import public, requires
from handlers.common import conversation, keyboard, offer_grounding, say, text, use_the_buttons
from handlers.common import settle_again_ok as settle  # a second press (or an old message) is no error
from handlers.parts import button_match, chat_id_of, message_of, query_of

FLOW = "safetyplan"
TOTAL = len(STEPS)
MAX_MESSAGE = 4096  # Telegram's limit for a message text, after entity parsing

# States: building (answers go on to the next step), editing one step (answers go back to
# the plan), and three button steps. Each names its step, so a restart resumes it.
BUILD = {step: f"{FLOW}:build:{step}" for step in STEPS}
EDIT = {step: f"{FLOW}:edit:{step}" for step in STEPS}
RESUME = f"{FLOW}:resume"  # go on or start over
RESTART = f"{FLOW}:restart"  # start over: sure?
PICK = f"{FLOW}:pick"  # which step to change

# Button data. No record ids: each acts on the presser's own plan.
BEGIN = "splan:begin"  # make my plan / go on with it
EDIT_ASK = "splan:edit"
SHARE = "splan:share"
UNSHARE = "splan:unshare"
NOT_NOW = "splan:notnow"
DELETE_ASK = "splan:delete"
DELETE_YES = "splan:delete_yes"
DELETE_NO = "splan:delete_no"
CALM_YES = "splan:calm_yes"
CALM_NO = "splan:calm_no"
STOP = "splan:stop"
GO_ON = "splan:go_on"
OVER = "splan:over"
OVER_YES = "splan:over_yes"
OVER_NO = "splan:over_no"
KEEP = "splan:keep"
CLEAR = "splan:clear"
SKIP = "splan:skip:{n}"  # the step's number: an older question's Skip is stale
PICKED = re.compile(r"^splan:pick:([0-5])$")


# -- showing the plan -------------------------------------------------------------------------


def _visible_length(fragment: str) -> int:
    return len(html.unescape(re.sub(r"<[^>]+>", "", fragment)))


def plan_messages(content: Content, language: str, plan: Plan) -> list[str]:
    """The plan as Telegram HTML, in as few messages as Telegram's limit allows (six full
    steps are longer than one message). The client's words are escaped."""
    sections = [content.text("safetyplan.plan.title", language)]
    for number, step in enumerate(STEPS, start=1):
        words = plan.steps.get(step)
        items = (
            "\n".join(f"• {line}" for line in words.splitlines())
            if words
            else trusted_html(content.text("safetyplan.plan.nothing", language))
        )
        section = content.text(
            "safetyplan.plan.step",
            language,
            number=number,
            title=trusted_html(content.text(f"safetyplan.steps.{step}.title", language)),
            items=items,
        )
        if step == "professionals":
            section += "\n" + content.text("safetyplan.steps.professionals.note", language)
        sections.append(section)
    footer = [content.text("safetyplan.plan.shared" if plan.shared_with_therapist else "safetyplan.plan.private", language)]
    if not plan.complete:
        footer.insert(0, content.text("safetyplan.plan.unfinished", language, step=plan.steps_done + 1, total=TOTAL))
    sections.append("\n".join(footer))

    messages: list[str] = []
    for section in sections:
        if messages and _visible_length(messages[-1]) + 2 + _visible_length(section) <= MAX_MESSAGE:
            messages[-1] += "\n\n" + section
        else:
            messages.append(section)
    return messages


async def _plan_buttons(update: Update, context: BotContext, plan: Plan) -> InlineKeyboardMarkup:
    rows = []
    if not plan.complete:
        rows.append([(await text(update, context, "safetyplan.buttons.continue", step=plan.steps_done + 1), GO_ON)])
    rows.append([(await text(update, context, "safetyplan.buttons.edit"), EDIT_ASK)])
    if plan.shared_with_therapist:
        rows.append([(await text(update, context, "safetyplan.buttons.unshare"), UNSHARE)])
    else:
        rows.append([(await text(update, context, "safetyplan.buttons.share"), SHARE)])
    rows.append([(await text(update, context, "safetyplan.buttons.delete"), DELETE_ASK)])
    return keyboard(*rows)


async def _send_plan(update: Update, context: BotContext, plan: Plan, *, buttons: bool = True) -> None:
    identity = await context.identity(update)
    messages = plan_messages(context.services.content, identity.language, plan)
    markup = await _plan_buttons(update, context, plan) if buttons else None
    for n, body in enumerate(messages):
        last = n == len(messages) - 1
        await context.bot.send_message(chat_id_of(update), body, reply_markup=markup if last else None)


async def _offer_to_make(update: Update, context: BotContext) -> None:
    await say(
        update,
        context,
        "safetyplan.none",
        reply_markup=keyboard([(await text(update, context, "safetyplan.buttons.make"), BEGIN)]),
    )


async def show_plan(update: Update, context: BotContext) -> bool:
    """Show the asker's safety plan at once, with its buttons (for the crisis path and
    /safetyplan). A plan with no words yet is offered to be made (a button), and False is
    returned; for anyone but a client nothing is sent and the answer is False. Changes no
    conversation state: the buttons work from the message they are under."""
    identity = await context.identity(update)
    if identity.role is not Role.CLIENT:
        return False
    plan = await context.services.safety_plans.plan(identity)
    if plan is None or not plan.has_words:
        await _offer_to_make(update, context)
        return False
    await _send_plan(update, context, plan)
    return True


# -- one step's question ----------------------------------------------------------------------


async def _stop_row(update: Update, context: BotContext) -> list[tuple[str, str]]:
    return [(await text(update, context, "safetyplan.buttons.stop"), STOP)]


async def _question(update: Update, context: BotContext, index: int) -> str:
    step = STEPS[index]
    identity = await context.identity(update)
    content = context.services.content
    parts = [
        content.text(
            "safetyplan.step_header",
            identity.language,
            number=index + 1,
            total=TOTAL,
            title=trusted_html(content.text(f"safetyplan.steps.{step}.title", identity.language)),
        ),
        content.text(f"safetyplan.steps.{step}.question", identity.language),
        content.text(f"safetyplan.steps.{step}.example", identity.language),
    ]
    if step == "professionals":
        parts.append(content.text("safetyplan.steps.professionals.note", identity.language))
    parts.append(content.text("safetyplan.how_to_answer", identity.language))
    return "\n\n".join(parts)


async def _step_buttons(update: Update, context: BotContext, index: int, *, building: bool) -> InlineKeyboardMarkup:
    if building:
        return keyboard(
            [(await text(update, context, "safetyplan.buttons.skip"), SKIP.format(n=index + 1))],
            await _stop_row(update, context),
        )
    return keyboard(
        [(await text(update, context, "safetyplan.buttons.keep"), KEEP)],
        [(await text(update, context, "safetyplan.buttons.clear"), CLEAR)],
        await _stop_row(update, context),
    )


async def ask(update: Update, context: BotContext, index: int, *, building: bool) -> str:
    """Ask step ``index``; while editing, with what the plan holds for it now. Its state
    waits for the answer."""
    body = await _question(update, context, index)
    if not building:
        plan = await context.services.safety_plans.plan(await context.identity(update))
        words = plan.steps.get(STEPS[index]) if plan else None
        current = (
            await text(update, context, "safetyplan.current", words=words)
            if words
            else await text(update, context, "safetyplan.current_empty")
        )
        body = f"{body}\n\n{current}"
    await context.bot.send_message(
        chat_id_of(update), body, reply_markup=await _step_buttons(update, context, index, building=building)
    )
    return (BUILD if building else EDIT)[STEPS[index]]


async def _after(update: Update, context: BotContext, index: int, plan: Plan) -> str | int:
    """While building: the next step, or, after the sixth, the whole plan and the question
    whether to share it."""
    if index + 1 < TOTAL:
        return await ask(update, context, index + 1, building=True)
    await _send_plan(update, context, plan, buttons=False)
    await say(update, context, "safetyplan.finished")
    await say(
        update,
        context,
        "safetyplan.share_question",
        reply_markup=keyboard(
            [(await text(update, context, "safetyplan.buttons.share_yes"), SHARE)],
            [(await text(update, context, "safetyplan.buttons.share_no"), NOT_NOW)],
        ),
    )
    return ConversationHandler.END


def answer_to(index: int, *, building: bool) -> Callable[[Update, BotContext], Coroutine[Any, Any, str | int]]:
    """The step that takes the typed answer to step ``index``."""
    step = STEPS[index]
    state = (BUILD if building else EDIT)[step]

    @requires(Role.CLIENT)
    async def answer(update: Update, context: BotContext) -> str | int:
        identity = await context.identity(update)
        try:
            plan = await context.services.safety_plans.answer(
                identity, step, message_of(update).text or "", building=building
            )
        except EmptyAnswer:
            await say(update, context, "safetyplan.empty", reply_markup=await _step_buttons(update, context, index, building=building))
            return state
        except AnswerTooLong as too_long:
            await say(
                update,
                context,
                "safetyplan.too_long",
                length=too_long.length,
                max=too_long.limit,
                reply_markup=await _step_buttons(update, context, index, building=building),
            )
            return state
        if building:
            return await _after(update, context, index, plan)
        await say(update, context, "safetyplan.saved")
        await _send_plan(update, context, plan)
        return ConversationHandler.END

    answer.__qualname__ = f"safety_plan_{'build' if building else 'edit'}_{step}"
    return answer


def skip_step(index: int) -> Callable[[Update, BotContext], Coroutine[Any, Any, str | int]]:
    step = STEPS[index]

    @requires(Role.CLIENT)
    async def skip(update: Update, context: BotContext) -> str | int:
        await settle(update)
        plan = await context.services.safety_plans.skip(await context.identity(update), step)
        return await _after(update, context, index, plan)

    skip.__qualname__ = f"safety_plan_skip_{step}"
    return skip


def _editing(state: object) -> int | None:
    return next((n for n, step in enumerate(STEPS) if EDIT[step] == state), None)


@requires(Role.CLIENT)
async def keep_step(update: Update, context: BotContext) -> int:
    await settle(update)
    await say(update, context, "safetyplan.kept")
    return await _show_again(update, context)


def clear_step(index: int) -> Callable[[Update, BotContext], Coroutine[Any, Any, int]]:
    step = STEPS[index]

    @requires(Role.CLIENT)
    async def clear(update: Update, context: BotContext) -> int:
        await settle(update)
        try:
            await context.services.safety_plans.clear_step(await context.identity(update), step)
        except NoPlan:  # deleted meanwhile (from another message)
            await _offer_to_make(update, context)
            return ConversationHandler.END
        await say(update, context, "safetyplan.cleared")
        return await _show_again(update, context)

    clear.__qualname__ = f"safety_plan_clear_{step}"
    return clear


async def _show_again(update: Update, context: BotContext) -> int:
    await show_plan(update, context)
    return ConversationHandler.END


# -- beginning, going on, starting over --------------------------------------------------------


async def _begin(update: Update, context: BotContext, *, show_first: bool) -> str | int:
    """No plan (or nothing in it): the intro and step 1. A plan begun: (what it holds and)
    go on or start over. A plan made: shown."""
    identity = await context.identity(update)
    service = context.services.safety_plans
    plan = await service.plan(identity)
    if plan is None or (not plan.has_words and (plan.steps_done == 0 or plan.complete)):
        if plan is not None:
            await service.start_over(identity)
        await say(update, context, "safetyplan.intro")
        return await ask(update, context, 0, building=True)
    if plan.complete:
        await _send_plan(update, context, plan)
        return ConversationHandler.END
    if show_first and plan.has_words:
        await _send_plan(update, context, plan, buttons=False)
    return await _offer_to_go_on(update, context, plan)


async def _offer_to_go_on(update: Update, context: BotContext, plan: Plan) -> str:
    step = plan.steps_done + 1
    await say(
        update,
        context,
        "safetyplan.resume",
        step=step,
        total=TOTAL,
        reply_markup=keyboard(
            [(await text(update, context, "safetyplan.buttons.continue", step=step), GO_ON)],
            [(await text(update, context, "safetyplan.buttons.start_over"), OVER)],
            await _stop_row(update, context),
        ),
    )
    return RESUME


@requires(Role.CLIENT)
async def safetyplan_command(update: Update, context: BotContext) -> str | int:
    return await _begin(update, context, show_first=True)


@requires(Role.CLIENT)
async def begin_button(update: Update, context: BotContext) -> str | int:
    await settle(update)
    return await _begin(update, context, show_first=False)


@requires(Role.CLIENT)
async def go_on(update: Update, context: BotContext) -> str | int:
    await settle(update)
    plan = await context.services.safety_plans.plan(await context.identity(update))
    if plan is None or plan.complete:
        return await _begin(update, context, show_first=False)
    return await ask(update, context, plan.steps_done, building=True)


@requires(Role.CLIENT)
async def start_over_asked(update: Update, context: BotContext) -> str:
    await settle(update)
    await say(
        update,
        context,
        "safetyplan.start_over_confirm",
        reply_markup=keyboard(
            [(await text(update, context, "safetyplan.buttons.start_over_yes"), OVER_YES)],
            [(await text(update, context, "safetyplan.buttons.start_over_no"), OVER_NO)],
        ),
    )
    return RESTART


@requires(Role.CLIENT)
async def start_over_confirmed(update: Update, context: BotContext) -> str:
    await settle(update)
    await context.services.safety_plans.start_over(await context.identity(update))
    await say(update, context, "safetyplan.intro")
    return await ask(update, context, 0, building=True)


# -- changing a step, sharing, deleting ----------------------------------------------------------


@requires(Role.CLIENT)
async def edit_asked(update: Update, context: BotContext) -> str | int:
    await settle(update)
    if await context.services.safety_plans.plan(await context.identity(update)) is None:
        await _offer_to_make(update, context)
        return ConversationHandler.END
    return await _ask_which(update, context)


async def _ask_which(update: Update, context: BotContext) -> str:
    rows = [
        [(f"{n}. {await text(update, context, f'safetyplan.steps.{step}.title')}", f"splan:pick:{n - 1}")]
        for n, step in enumerate(STEPS, start=1)
    ]
    await say(update, context, "safetyplan.pick_step", reply_markup=keyboard(*rows, await _stop_row(update, context)))
    return PICK


@requires(Role.CLIENT)
async def step_picked(update: Update, context: BotContext) -> str:
    await settle(update)
    return await ask(update, context, int(button_match(PICKED, update).group(1)), building=False)


async def _share(update: Update, context: BotContext, shared: bool, said: str) -> int:
    await settle(update)
    try:
        plan = await context.services.safety_plans.share(await context.identity(update), shared)
    except NoPlan:
        await _offer_to_make(update, context)
        return ConversationHandler.END
    await say(update, context, said, reply_markup=await _plan_buttons(update, context, plan))
    return ConversationHandler.END


@requires(Role.CLIENT)
async def share(update: Update, context: BotContext) -> int:
    return await _share(update, context, True, "safetyplan.shared")


@requires(Role.CLIENT)
async def unshare(update: Update, context: BotContext) -> int:
    return await _share(update, context, False, "safetyplan.unshared")


@requires(Role.CLIENT)
async def not_now(update: Update, context: BotContext) -> int:
    await settle(update)
    await say(update, context, "safetyplan.not_shared")
    return ConversationHandler.END


@requires(Role.CLIENT)
async def delete_asked(update: Update, context: BotContext) -> int:
    await settle(update)
    await say(
        update,
        context,
        "safetyplan.delete_confirm",
        reply_markup=keyboard(
            [(await text(update, context, "safetyplan.buttons.delete_yes"), DELETE_YES)],
            [(await text(update, context, "safetyplan.buttons.delete_no"), DELETE_NO)],
        ),
    )
    return ConversationHandler.END


@requires(Role.CLIENT)
async def delete_confirmed(update: Update, context: BotContext) -> int:
    await settle(update)
    if await context.services.safety_plans.delete(await context.identity(update)):
        await say(update, context, "safetyplan.deleted")
    else:
        await _offer_to_make(update, context)
    return ConversationHandler.END


@requires(Role.CLIENT)
async def delete_declined(update: Update, context: BotContext) -> int:
    await settle(update)
    await say(update, context, "safetyplan.not_deleted")
    return ConversationHandler.END


# -- stopping ----------------------------------------------------------------------------------


@public  # a fallback of this conversation only (which only clients enter)
async def stop(update: Update, context: BotContext) -> int:
    """✋ Stop, "stop", ✋, /stop or /cancel: end at once (what was written is kept), and
    offer a one-minute grounding step or simply ending."""
    if update.callback_query:
        await settle(update)
    await offer_grounding(
        update, context,
        await text(update, context, "safetyplan.stop.stopped"),
        await text(update, context, "safetyplan.stop.grounding_offer"),
        yes=CALM_YES, no=CALM_NO,
    )
    return ConversationHandler.END


@requires(Role.CLIENT)
async def calm(update: Update, context: BotContext) -> int:
    await settle(update)
    if query_of(update).data == CALM_YES:
        await say(update, context, "exercises.stop.grounding")  # the bot's one grounding step
    await say(update, context, "safetyplan.stop.done")
    return ConversationHandler.END


# -- pausing (/help) and coming back -------------------------------------------------------------


async def _resumed(update: Update, context: BotContext, state: object) -> None:
    """↩ Back to where I was: the step's question (or buttons) again."""
    for n, step in enumerate(STEPS):
        if state == BUILD[step]:
            await ask(update, context, n, building=True)
            return
    editing = _editing(state)
    if editing is not None:
        await ask(update, context, editing, building=False)
        return
    plan = await context.services.safety_plans.plan(await context.identity(update))
    if state == RESUME and plan is not None and not plan.complete:
        await _offer_to_go_on(update, context, plan)
    elif state == PICK:
        await _ask_which(update, context)
    else:
        await say(update, context, "flows.resumed")


def build(fallbacks: list[BaseHandler], free_text: filters.BaseFilter, content: Content) -> Flow:
    def button(callback, data: str) -> CallbackQueryHandler:
        return CallbackQueryHandler(callback, pattern=f"^{re.escape(data)}$")

    stops: list[BaseHandler] = [
        CommandHandler(["stop", "cancel"], stop),
        MessageHandler(filters.TEXT & general.stop_words(content), stop),
        button(stop, STOP),
    ]
    waiting_for_buttons = MessageHandler(free_text, use_the_buttons)
    states: dict[object, list[BaseHandler]] = {
        RESUME: [button(start_over_asked, OVER), waiting_for_buttons],  # Go on: an entry point
        RESTART: [button(start_over_confirmed, OVER_YES), button(go_on, OVER_NO), waiting_for_buttons],
        PICK: [CallbackQueryHandler(step_picked, pattern=PICKED), waiting_for_buttons],
    }
    for n, step in enumerate(STEPS):
        states[BUILD[step]] = [
            MessageHandler(free_text, answer_to(n, building=True)),
            button(skip_step(n), SKIP.format(n=n + 1)),
        ]
        states[EDIT[step]] = [
            MessageHandler(free_text, answer_to(n, building=False)),
            button(keep_step, KEEP),
            button(clear_step(n), CLEAR),
        ]
    return conversation(
        FLOW,
        entry_points=[
            CommandHandler("safetyplan", safetyplan_command),
            # The buttons of a shown plan and of the questions after it: from any message.
            button(begin_button, BEGIN),
            button(go_on, GO_ON),
            button(edit_asked, EDIT_ASK),
            button(share, SHARE),
            button(unshare, UNSHARE),
            button(not_now, NOT_NOW),
            button(delete_asked, DELETE_ASK),
            button(delete_confirmed, DELETE_YES),
            button(delete_declined, DELETE_NO),
            button(calm, CALM_YES),
            button(calm, CALM_NO),
        ],
        states=states,
        fallbacks=stops + fallbacks,
        hooks=FlowHooks(on_resume=_resumed),
    )
