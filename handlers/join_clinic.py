"""A therapist or staff member joins through their invite link (``/start <token>``).

    /start <token> ──► TERMS ──[I accept]──► NAME ──(a valid name)──► end: registered
                         └────[Not now]──► end          └─(bad name)─► NAME (re-prompt)

These steps are states of the welcome conversation (handlers/start.py), which dispatches a
therapist or staff invite here with :func:`begin`. Between steps only the token's *hash* is
kept, in memory (``user_data``, never persisted): after a restart the person is asked to
open the link again. Nothing is stored before the name step, which enrols the person and
uses the invite up in one transaction (bot.services.clinic.ClinicService.join).
"""

from __future__ import annotations

from telegram import Update
from telegram.ext import BaseHandler, CallbackQueryHandler, ConversationHandler, MessageHandler, filters

from bot.context import BotContext
from bot.db.models import InviteKind
from bot.services.invites import InviteView
from bot.services.names import InvalidDisplayName, clean_display_name
from bot.services.clinic import JoinRefused
from handlers.access import public
from handlers.common import keyboard, say, settle, text, use_the_buttons
from handlers.setkey import send_reader
from handlers.parts import message_of, user_data_of

# States of the welcome conversation.
TERMS = "practice_terms"
NAME = "practice_name"

# Callback data (no record ids: the invite is known from the conversation).
ACCEPT = "practice:accept"
DECLINE = "practice:decline"

#: The invite kinds this module handles; /start dispatches these here.
KINDS = frozenset({InviteKind.THERAPIST, InviteKind.STAFF})

_PENDING = "practice_invite"  # user_data key: (token hash, kind); memory only


async def begin(update: Update, context: BotContext, view: InviteView) -> str | int:
    """Entry from /start with a therapist or staff invite: show the terms, or say why not."""
    identity = await context.identity(update)
    if not view.valid or view.kind not in KINDS or view.token_hash is None:
        await say(update, context, f"clinic.link.{view.status.value}")
        return ConversationHandler.END
    if identity.role is not None:
        await say(update, context, "clinic.link.enrolled")
        return ConversationHandler.END
    user_data_of(context)[_PENDING] = (view.token_hash, view.kind.value)
    role = await text(update, context, f"clinic.role_name.{view.kind.value}")
    await say(
        update,
        context,
        "clinic.terms",
        role=role,
        reply_markup=keyboard(
            [(await text(update, context, "clinic.accept_button"), ACCEPT)],
            [(await text(update, context, "clinic.decline_button"), DECLINE)],
        ),
    )
    return TERMS


@public
async def accept_terms(update: Update, context: BotContext) -> str | int:
    await settle(update)
    if _PENDING not in user_data_of(context):
        return await _lost(update, context)
    await say(update, context, "clinic.ask_name")
    return NAME


@public
async def decline_terms(update: Update, context: BotContext) -> int:
    await settle(update)
    user_data_of(context).pop(_PENDING, None)
    await say(update, context, "clinic.declined")
    return ConversationHandler.END


@public
async def receive_name(update: Update, context: BotContext) -> str | int:
    """The display name: enrol, claim the invite, set the menu. Bad input: ask again."""
    pending = user_data_of(context).get(_PENDING)
    if pending is None:
        return await _lost(update, context)
    token_hash, kind = pending
    identity = await context.identity(update)
    try:
        joined = await context.services.clinic.join(identity, token_hash, message_of(update).text or "")
    except InvalidDisplayName:
        await say(update, context, "clinic.name_invalid")
        return NAME
    except JoinRefused as refused:
        user_data_of(context).pop(_PENDING, None)
        await say(update, context, f"clinic.link.{refused.reason}")
        return ConversationHandler.END
    user_data_of(context).pop(_PENDING, None)
    context.remember_identity(joined)
    await context.services.menus.apply(context.bot, joined)
    name = clean_display_name(message_of(update).text) or ""
    await say(update, context, f"clinic.joined_{kind}", name=name)
    if kind == InviteKind.THERAPIST.value:  # the page that makes their key and opens summaries
        await send_reader(update, context)
    return ConversationHandler.END



async def _lost(update: Update, context: BotContext) -> int:
    """The bot restarted between steps: the invite (kept in memory only) is gone."""
    await say(update, context, "clinic.restart_link")
    return ConversationHandler.END


def states(free_text: filters.BaseFilter) -> dict[object, list[BaseHandler]]:
    """This module's states, for the welcome conversation (handlers/start.py)."""
    return {
        TERMS: [
            CallbackQueryHandler(accept_terms, pattern=f"^{ACCEPT}$"),
            CallbackQueryHandler(decline_terms, pattern=f"^{DECLINE}$"),
            MessageHandler(free_text, use_the_buttons),
        ],
        NAME: [MessageHandler(free_text, receive_name)],
    }
