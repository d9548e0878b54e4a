"""The safety layer: every typed message from a client (or from someone not yet enrolled)
passes the detector (bot.safety) before any flow sees it, in a handler group of its own.

    message ──► detector ──► none ─────► on to the flows, as if nothing happened
                    │
                    ├──► boundary ─► pause the flow (state kept; a paced exercise stops its
                    │                timer) · explain kindly why memory work is for the session
                    │                · [A calming minute] [Let my therapist know] [↩ Back]
                    │                  └─ flag (never the memory) ─► [Add a short note] (itself
                    │                     checked by this layer) [No note]
                    │
                    └──► risk ─────► pause the flow · a direct, warm question WITH the crisis
                                     lines in the same message · [Yes] [No, I'm OK]
                                       Yes: the lines again, the practice's instructions, the
                                            safety plan; the therapist alerted (policy
                                            RISK_ALERT, immediate by default; nothing clinical)
                                       No:  thanks; the lines stay where they were shown

The client's words are never stored or logged here: only the route and the rule's id are
logged, and a note the client chooses to add is stored encrypted (bot.services.safety_flags).
Therapists, staff and admins type names and pseudonyms, not clinical text: their messages
are not screened.
"""

from __future__ import annotations

import logging
import re

from telegram import Update
from telegram.ext import (
    ApplicationHandlerStop,
    BaseHandler,
    CallbackQueryHandler,
    ConversationHandler,
    MessageHandler,
    filters,
)

from bot.callbacks import CallbackCodec
from bot.context import BotContext
from bot.db.models import Role
from bot.flows import FlowHooks
from bot.services.safety_flags import NotAClient, NoteTooLong
from handlers.access import public, requires
from handlers.safety_plan import show_plan
from handlers.common import (
    FLOW_BACK,
    FLOW_END,
    conversation,
    crisis_block,
    keyboard,
    say,
    send_with_way_back,
    settle,
    signed_ids,
    text,
)
from handlers.parts import chat_id_of, message_of, query_of, user_id_of

_log = logging.getLogger(__name__)

SCREENED = filters.TEXT & ~filters.COMMAND  # typed words; commands and buttons are not screened
UNSCREENED_ROLES = (Role.THERAPIST, Role.STAFF, Role.ADMIN)

GROUND = "sf:ground"
FLAG = "sf:flag"
NO_THANKS = "sf:done"
NOTE = "sf.note"  # signed: sf.note|<flag id>
NO_NOTE = "sf:nonote"
CRISIS_YES = "sf:crisis:yes"
CRISIS_NO = "sf:crisis:no"
NOTE_STATE = "safety:note"


@public  # every typed message passes here; the routes act only for the asker themselves
async def screen(update: Update, context: BotContext) -> None:
    message = update.effective_message
    if message is None or not message.text:
        return
    identity = await context.identity(update)
    if identity.role in UNSCREENED_ROLES:
        return
    verdict = context.services.safety.classify(message.text, identity.language)
    if verdict.route == "none":
        return
    _log.info("Safety route %s (rule %s)", verdict.route, verdict.rule)
    if verdict.route == "risk":
        await _ask_about_risk(update, context)
    else:
        await _hold_the_boundary(update, context)
    await context.application.update_persistence()  # the pause, before nothing else runs
    raise ApplicationHandlerStop  # no flow sees this message


async def _pause(update: Update, context: BotContext) -> bool:
    """Pause the person's flow, if any; whether one is paused now (this one or an earlier)."""
    return await context.flows.pause(update, context) is not None or await context.flows.paused(update, context) is not None


# -- boundary ------------------------------------------------------------------------------------


async def _hold_the_boundary(update: Update, context: BotContext) -> None:
    paused = await _pause(update, context)
    rows = [
        [(await text(update, context, "safety.boundary.ground_button"), GROUND)],
        [(await text(update, context, "safety.boundary.flag_button"), FLAG)],
    ]
    if paused:
        rows.append([(await text(update, context, "flows.back"), FLOW_BACK)])
        rows.append([(await text(update, context, "flows.end"), FLOW_END)])
    else:
        rows.append([(await text(update, context, "safety.boundary.no_thanks_button"), NO_THANKS)])
    await say(update, context, "safety.boundary.explain", reply_markup=keyboard(*rows))


@public  # acts for the presser only
async def calming_minute(update: Update, context: BotContext) -> None:
    await query_of(update).answer()
    await say(update, context, "exercises.stop.grounding")
    paused = await context.flows.paused(update, context)
    body = await text(update, context, "safety.boundary.grounded")
    if paused is None:
        await context.bot.send_message(chat_id_of(update), body)
    else:
        await send_with_way_back(update, context, body, paused)


@public  # acts for the presser only; the service refuses anyone but an enrolled client
async def flag_for_therapist(update: Update, context: BotContext) -> None:
    await query_of(update).answer()
    try:
        flagged = await context.services.safety_flags.wants_memory_work(await context.identity(update))
    except NotAClient:
        await say(update, context, "safety.boundary.flagged_no_therapist")
        return
    if not flagged.has_therapist:
        await say(update, context, "safety.boundary.flagged_no_therapist")
        return
    pack = context.services.callbacks.pack
    await say(
        update,
        context,
        "safety.boundary.flagged",
        reply_markup=keyboard(
            [(await text(update, context, "safety.boundary.note_button"), pack(user_id_of(update), NOTE, flagged.flag_id))],
            [(await text(update, context, "safety.boundary.no_note_button"), NO_NOTE)],
        ),
    )


@public
async def no_thanks(update: Update, context: BotContext) -> None:
    await settle(update)


# The note: a small flow inside the pause (it leaves a paused flow paused).


@requires(Role.CLIENT)
async def ask_note(update: Update, context: BotContext) -> str | int:
    ids = await signed_ids(update, context, NOTE)
    if not ids:
        return ConversationHandler.END
    await settle(update)
    await context.flows.keep_draft(update, context, "safety_note", {"flag_id": ids[0]})
    await say(update, context, "safety.boundary.ask_note")
    return NOTE_STATE


@requires(Role.CLIENT)
async def save_note(update: Update, context: BotContext) -> str | int:
    draft = await context.flows.draft(update, context, "safety_note") or {}
    try:
        saved = await context.services.safety_flags.add_note(
            await context.identity(update), int(draft.get("flag_id", 0)), message_of(update).text or ""
        )
    except NoteTooLong:
        await say(update, context, "safety.boundary.note_invalid")
        return NOTE_STATE
    await context.flows.drop_draft(update, context, "safety_note")
    await _say_with_way_back(update, context, "safety.boundary.note_saved" if saved else "safety.boundary.note_gone")
    return ConversationHandler.END


@public
async def no_note(update: Update, context: BotContext) -> None:
    await settle(update)
    paused = await context.flows.paused(update, context)
    if paused is not None:
        await send_with_way_back(update, context, await text(update, context, "safety.boundary.no_note"), paused)


async def _say_with_way_back(update: Update, context: BotContext, key: str) -> None:
    paused = await context.flows.paused(update, context)
    body = await text(update, context, key)
    if paused is None:
        await context.bot.send_message(chat_id_of(update), body)
    else:
        await send_with_way_back(update, context, body, paused)


# -- risk ----------------------------------------------------------------------------------------


async def _ask_about_risk(update: Update, context: BotContext) -> None:
    await _pause(update, context)
    await say(
        update,
        context,
        "safety.crisis.question",
        crisis=await crisis_block(update, context),
        reply_markup=keyboard(
            [(await text(update, context, "safety.crisis.yes_button"), CRISIS_YES)],
            [(await text(update, context, "safety.crisis.no_button"), CRISIS_NO)],
        ),
    )


@public  # acts for the presser only; a flag and an alert only for an enrolled client
async def crisis_answer(update: Update, context: BotContext) -> None:
    await settle(update)  # the buttons go; the question and its crisis lines stay in the chat
    if query_of(update).data == CRISIS_NO:
        await _say_with_way_back(update, context, "safety.crisis.denied")
        return
    await crisis_confirmed(update, context)


async def crisis_confirmed(update: Update, context: BotContext) -> None:
    """The crisis path once the client has said yes (here, or to the check-in's question on
    thoughts of self-harm): the lines again, the practice's instructions, a flag and the
    therapist's alert (RISK_ALERT), and the client's safety plan."""
    await say(update, context, "safety.crisis.confirmed", crisis=await crisis_block(update, context))
    await say(update, context, "safety.crisis.instructions")
    try:
        flagged = await context.services.safety_flags.crisis_confirmed(await context.identity(update))
    except NotAClient:
        flagged = None
    if flagged is not None and flagged.therapist_alerted:
        await say(update, context, "safety.crisis.therapist_alerted")
    elif flagged is not None and flagged.has_therapist:
        await say(update, context, "safety.crisis.therapist_flagged")
    await _offer_safety_plan(update, context)


async def _offer_safety_plan(update: Update, context: BotContext) -> None:
    """The client's own safety plan, shown at once, or offered to be made."""
    await show_plan(update, context)


def screening() -> list[BaseHandler]:
    """The handler of the safety group: before every flow."""
    return [MessageHandler(SCREENED, screen)]


def build(fallbacks: list[BaseHandler], free_text: filters.BaseFilter) -> BaseHandler:
    """The note for the therapist: a small flow inside the pause."""
    return conversation(
        "safety_note",
        entry_points=[CallbackQueryHandler(ask_note, pattern=CallbackCodec.pattern(NOTE))],
        states={NOTE_STATE: [MessageHandler(free_text, save_note)]},
        fallbacks=fallbacks,
        hooks=FlowHooks(keeps_draft=True, interlude=True),
    )


def buttons() -> list[BaseHandler]:
    """The buttons of the boundary and crisis messages."""
    return [
        CallbackQueryHandler(calming_minute, pattern=f"^{GROUND}$"),
        CallbackQueryHandler(flag_for_therapist, pattern=f"^{FLAG}$"),
        CallbackQueryHandler(no_thanks, pattern=f"^{NO_THANKS}$"),
        CallbackQueryHandler(no_note, pattern=f"^{NO_NOTE}$"),
        CallbackQueryHandler(crisis_answer, pattern=f"^(?:{re.escape(CRISIS_YES)}|{re.escape(CRISIS_NO)})$"),
    ]
