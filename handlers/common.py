"""Small helpers shared by handler modules: words come from content, in the asker's language."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Message, Update
from telegram.error import BadRequest, Forbidden
from telegram.ext import ApplicationHandlerStop, BaseHandler
from telegram.warnings import PTBUserWarning

from bot.callbacks import InvalidPayload
from bot.content import trusted_html
from bot.context import BotContext
from bot.flows import Flow, FlowHooks, Paused
from handlers.access import public, refuse
from handlers.parts import chat_id_of, query_of, user_id_of


async def text(update: Update, context: BotContext, key: str, **params: Any) -> str:
    identity = await context.identity(update)
    return context.services.content.text(key, identity.language, **params)


async def say(
    update: Update,
    context: BotContext,
    key: str,
    *,
    reply_markup: InlineKeyboardMarkup | None = None,
    **params: Any,
) -> Message:
    """Send the content text ``key`` to the chat the update came from."""
    assert update.effective_chat is not None
    return await context.bot.send_message(
        chat_id=update.effective_chat.id,
        text=await text(update, context, key, **params),
        reply_markup=reply_markup,
    )


async def crisis_block(update: Update, context: BotContext) -> str:
    """The crisis-resources paragraph, for embedding into another text: the emergency number
    and crisis lines of the asker's country (from their time zone), in their language, or the
    default (local emergency services, an international directory) when it is not known."""
    identity = await context.identity(update)
    services = context.services
    return trusted_html(services.crisis.render(services.content, identity.language, identity.timezone))


async def settle(update: Update) -> None:
    """A button was pressed: acknowledge it and take the buttons off that message, so the
    same choice cannot be made twice. A second tap that reached the bot before the first
    one's edit reached the person finds the buttons gone ("message is not modified"): that
    choice is made already, so nothing more happens for it (``ApplicationHandlerStop``: no
    other handler, a conversation keeps its state)."""
    query = query_of(update)
    await query.answer()
    try:
        await query.edit_message_reply_markup(reply_markup=None)
    except BadRequest as error:
        if "not modified" not in error.message.lower():
            raise
        raise ApplicationHandlerStop from None


async def edit_in_place(update: Update, body: str, **kwargs: Any) -> None:
    """Show ``body`` in the message whose button was pressed (a page of a list, a step). The
    same button tapped twice asks for the same page twice; Telegram answers the second edit
    with 400 "message is not modified": the person already sees that page, so that is no error."""
    try:
        await query_of(update).edit_message_text(body, **kwargs)
    except BadRequest as error:
        if "not modified" not in error.message.lower():
            raise


async def settle_again_ok(update: Update) -> None:
    """``settle`` for buttons that may be pressed twice before the first press took them off
    (a message sent on the bot's own initiative): the second press is no error and goes on."""
    query = query_of(update)
    await query.answer()
    try:
        await query.edit_message_reply_markup(reply_markup=None)
    except BadRequest:  # "message is not modified": the buttons are gone already
        pass


def conversation(
    name: str,
    *,
    entry_points: list[BaseHandler],
    states: dict[object, list[BaseHandler]],
    fallbacks: list[BaseHandler],
    hooks: FlowHooks | None = None,
) -> Flow:
    """A conversation as the bot's conversations are: persisted in the database under
    ``name`` (a restart resumes it), re-entered by its entry command, one state per person,
    and a flow under the one-active-flow rule (bot.flows; ``hooks`` say what it does when
    another flow ends it, or when it is paused and resumed).

    per_message=False is intended: the state is per person, and buttons are matched by their
    data. python-telegram-bot warns about CallbackQueryHandlers in such conversations; the
    warning is understood, so it is silenced here, once."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*per_message.*", category=PTBUserWarning)
        return Flow(
            name=name,
            persistent=True,
            allow_reentry=True,
            entry_points=entry_points,
            states=states,
            fallbacks=fallbacks,
            hooks=hooks,
        )


@public  # a state handler: the conversation checked the asker when it began
async def use_the_buttons(update: Update, context: BotContext) -> None:
    """Typed text where buttons are expected: say so, and stay in the same step."""
    await say(update, context, "fallback.use_buttons")


FLOW_BACK = "flow:back"  # ↩ Back to where I was: resume the paused flow (handlers.general)
FLOW_END = "flow:end"  # End it: end the paused flow


async def send_with_way_back(update: Update, context: BotContext, body: str, paused: Paused) -> Message:
    """``body``, then a line naming the paused flow, with ↩ Back to where I was and End it."""
    flow = await text(update, context, f"flows.names.{paused.flow}")
    return await context.bot.send_message(
        chat_id_of(update),
        f"{body}\n\n{await text(update, context, 'flows.paused', flow=flow)}",
        reply_markup=keyboard(
            [(await text(update, context, "flows.back"), FLOW_BACK)],
            [(await text(update, context, "flows.end"), FLOW_END)],
        ),
    )


async def offer_grounding(update: Update, context: BotContext, *parts: str | None, yes: str, no: str) -> Message:
    """Something was stopped: say so (``parts``, the empty ones left out) and offer the
    one-minute grounding step (button data ``yes``) or simply ending (``no``)."""
    return await context.bot.send_message(
        chat_id_of(update),
        "\n\n".join(part for part in parts if part),
        reply_markup=keyboard(
            [(await text(update, context, "exercises.buttons.grounding"), yes)],
            [(await text(update, context, "exercises.buttons.no_thanks"), no)],
        ),
    )


def keyboard(*rows: list[tuple[str, str]]) -> InlineKeyboardMarkup:
    """An inline keyboard from rows of (label, callback data)."""
    return InlineKeyboardMarkup(
        [[InlineKeyboardButton(label, callback_data=data) for label, data in row] for row in rows]
    )


def packer(update: Update, context: BotContext) -> Callable[..., str]:
    """``pack(action, *ids)``: a button payload signed for the asker (the inverse of
    ``signed_ids``)."""
    codec = context.services.callbacks
    user_id = user_id_of(update)
    return lambda action, *ids: codec.pack(user_id, action, *ids)


async def signed_ids(update: Update, context: BotContext, action: str) -> list[int] | None:
    """The record ids of a signed button payload (bot.callbacks) made for this presser and
    ``action``. A forged, altered or someone else's payload is refused (and audited): None."""
    identity = await context.identity(update)
    data = update.callback_query.data if update.callback_query else None
    try:
        return [int(arg) for arg in context.services.callbacks.unpack(identity.telegram_id, data, action)]
    except (InvalidPayload, ValueError):
        await refuse(update, context, what=f"button:{action}", reason="payload")
        return None


async def local_time(update: Update, context: BotContext, when: datetime | None, format_key: str) -> str | None:
    """``when`` in the asker's time zone, formatted as the content text ``format_key`` says."""
    if when is None:
        return None
    identity = await context.identity(update)
    return when.astimezone(ZoneInfo(identity.timezone)).strftime(await text(update, context, format_key))


async def tell_directly(context: BotContext, telegram_id: int, language: str, key: str, **params: Any) -> bool:
    """Tell someone other than the asker the content text ``key`` in their language, at
    once, for the one person the outbox no longer serves: someone just made inactive (a
    deactivated therapist hearing so). Every other notice is queued by the service that
    makes the change, in its transaction (bot.services.notices). False when Telegram
    refuses."""
    try:
        await context.bot.send_message(telegram_id, context.services.content.text(key, language, **params))
    except (Forbidden, BadRequest):
        return False
    return True
