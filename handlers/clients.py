"""/clients: a therapist's clients, a client's page, rename and unlink.

    /clients ──► list (pages) ──[a client]──► client page ──[Rename]──► RENAME ──(alias)──► end
                                                   ├──[Unlink]──► confirm ──[Yes]──► unlinked
                                                   └──[‹ All clients]──► list

Every button names its client in a signed payload (bot.callbacks), and the service checks
at the moment of use that the client is still the presser's own; anything else is refused
and audited. The list and pages are edited in place. Only the rename step waits for text,
so the buttons are entry points too (they work from any earlier message).
"""

from __future__ import annotations

import math

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
from bot.services.invites import NotAllowed
from bot.services.clinic import ClientSummary
from bot.services.names import InvalidAlias
from handlers.access import refuse, requires
from handlers.common import conversation, edit_in_place, keyboard, local_time, packer, say, signed_ids, text
from handlers.parts import chat_id_of, message_of, query_of, user_data_of

RENAME_STATE = "clients_rename"

# Signed button actions (kept short: a payload holds at most 64 bytes).
PAGE = "cl.page"
OPEN = "cl.open"
RENAME = "cl.rename"
UNLINK = "cl.unlink"
UNLINK_OK = "cl.unlink_ok"

PAGE_SIZE = 8
_RENAMING = "clients_renaming"  # user_data key: the client id being renamed (memory only)


# -- the list ------------------------------------------------------------------------------


@requires(Role.THERAPIST)
async def show_clients(update: Update, context: BotContext) -> int:
    """/clients: the first page of the list, as a new message."""
    try:
        body, markup = await _list(update, context, 0)
    except NotAllowed as refused:
        await refuse(update, context, what="/clients", reason=refused.reason)
        return ConversationHandler.END
    await context.bot.send_message(chat_id_of(update), body, reply_markup=markup)
    return ConversationHandler.END


@requires(Role.THERAPIST)
async def turn_page(update: Update, context: BotContext) -> int:
    ids = await signed_ids(update, context, PAGE)
    if ids is None:
        return ConversationHandler.END
    try:
        body, markup = await _list(update, context, ids[0])
    except NotAllowed as refused:
        await refuse(update, context, what=f"button:{PAGE}", reason=refused.reason)
        return ConversationHandler.END
    await query_of(update).answer()
    await edit_in_place(update, body, reply_markup=markup)
    return ConversationHandler.END


async def _list(update: Update, context: BotContext, page: int) -> tuple[str, InlineKeyboardMarkup | None]:
    identity = await context.identity(update)
    clients = await context.services.clinic.clients(identity)
    if not clients:
        return await text(update, context, "clients.empty"), None
    pages = math.ceil(len(clients) / PAGE_SIZE)
    page = max(0, min(page, pages - 1))
    shown = list(enumerate(clients))[page * PAGE_SIZE : (page + 1) * PAGE_SIZE]
    lines = [await text(update, context, "clients.list_title", count=len(clients))]
    if pages > 1:
        lines.append(await text(update, context, "clients.list_page", page=page + 1, pages=pages))
    lines.append("")
    pack = packer(update, context)
    buttons: list[list[tuple[str, str]]] = []
    for number, client in shown:
        name = await _name(update, context, client, number)
        lines.append(await _row(update, context, client, name))
        buttons.append([(name, pack(OPEN, client.client_id))])
    nav: list[tuple[str, str]] = []
    if page > 0:
        nav.append((await text(update, context, "clients.previous_button"), pack(PAGE, page - 1)))
    if page < pages - 1:
        nav.append((await text(update, context, "clients.next_button"), pack(PAGE, page + 1)))
    if nav:
        buttons.append(nav)
    return "\n".join(lines), keyboard(*buttons)


async def _row(update: Update, context: BotContext, client: ClientSummary, name: str) -> str:
    last = await local_time(update, context, client.last_seen_at, "clients.datetime_format")
    parts = [await text(update, context, "clients.row", alias=name, last=last or await text(update, context, "clients.never"))]
    # Only what has data (see ClientSummary); never an answer, only the colour and dates.
    if client.readiness is not None:
        parts.append(await text(update, context, "clients.row_readiness", colour=await _colour(update, context, client)))
    if client.last_check_in is not None:
        day = await local_time(update, context, client.last_check_in, "clients.date_format")
        parts.append(await text(update, context, "clients.row_check_in", date=day))
    if client.next_appointment is not None:
        when = await local_time(update, context, client.next_appointment, "clients.datetime_format")
        parts.append(await text(update, context, "clients.row_appointment", when=when))
    return " · ".join(parts)


async def _colour(update: Update, context: BotContext, client: ClientSummary) -> str:
    """The latest readiness as an emoji and a word (content: readiness.colours)."""
    return await text(update, context, f"readiness.colours.{client.readiness}")


async def _name(update: Update, context: BotContext, client: ClientSummary, number: int) -> str:
    return client.alias or await text(update, context, "clients.no_alias", number=number + 1)


# -- one client ----------------------------------------------------------------------------


async def _client_or_refuse(update: Update, context: BotContext, action: str) -> ClientSummary | None:
    """The client named by a signed button, if it is (still) the presser's own."""
    ids = await signed_ids(update, context, action)
    if ids is None:
        return None
    identity = await context.identity(update)
    try:
        return await context.services.clinic.client(identity, ids[0])
    except NotAllowed as refused:
        await refuse(update, context, what=f"button:{action}", reason=refused.reason)
        return None


@requires(Role.THERAPIST)
async def open_client(update: Update, context: BotContext) -> int:
    client = await _client_or_refuse(update, context, OPEN)
    if client is None:
        return ConversationHandler.END
    await query_of(update).answer()
    await _show_page(update, context, client)
    return ConversationHandler.END


async def _show_page(update: Update, context: BotContext, client: ClientSummary) -> None:
    name = await _name(update, context, client, 0)
    since = await local_time(update, context, client.linked_since, "clients.date_format")
    last = await local_time(update, context, client.last_seen_at, "clients.datetime_format")
    lines = [
        await text(
            update, context, "clients.page", alias=name, since=since,
            last=last or await text(update, context, "clients.never"),
        )
    ]
    if client.readiness is not None:
        lines.append(await text(update, context, "clients.page_readiness", colour=await _colour(update, context, client)))
    if client.last_check_in is not None:
        day = await local_time(update, context, client.last_check_in, "clients.date_format")
        lines.append(await text(update, context, "clients.page_check_in", date=day))
    if client.next_appointment is not None:
        when = await local_time(update, context, client.next_appointment, "clients.datetime_format")
        lines.append(await text(update, context, "clients.page_appointment", when=when))
    pack = packer(update, context)
    markup = keyboard(
        [
            (await text(update, context, "clients.rename_button"), pack(RENAME, client.client_id)),
            (await text(update, context, "clients.unlink_button"), pack(UNLINK, client.client_id)),
        ],
        [(await text(update, context, "clients.back_button"), pack(PAGE, 0))],
    )
    await edit_in_place(update, "\n".join(lines), reply_markup=markup)


# -- rename --------------------------------------------------------------------------------


@requires(Role.THERAPIST)
async def ask_new_alias(update: Update, context: BotContext) -> str | int:
    client = await _client_or_refuse(update, context, RENAME)
    if client is None:
        return ConversationHandler.END
    await query_of(update).answer()
    user_data_of(context)[_RENAMING] = client.client_id
    await say(update, context, "clients.ask_alias", alias=await _name(update, context, client, 0))
    return RENAME_STATE


@requires(Role.THERAPIST)
async def receive_new_alias(update: Update, context: BotContext) -> str | int:
    client_id = user_data_of(context).get(_RENAMING)
    if client_id is None:  # the bot restarted in between
        await say(update, context, "clients.rename_lost")
        return ConversationHandler.END
    identity = await context.identity(update)
    try:
        alias = await context.services.clinic.rename_client(identity, client_id, message_of(update).text or "")
    except InvalidAlias:
        await say(update, context, "clients.alias_invalid")
        return RENAME_STATE
    except NotAllowed as refused:
        user_data_of(context).pop(_RENAMING, None)
        await refuse(update, context, what="clients:rename", reason=refused.reason)
        return ConversationHandler.END
    user_data_of(context).pop(_RENAMING, None)
    await say(update, context, "clients.renamed", alias=alias)
    return ConversationHandler.END


# -- unlink --------------------------------------------------------------------------------


@requires(Role.THERAPIST)
async def confirm_unlink(update: Update, context: BotContext) -> int:
    client = await _client_or_refuse(update, context, UNLINK)
    if client is None:
        return ConversationHandler.END
    await query_of(update).answer()
    pack = packer(update, context)
    markup = keyboard(
        [(await text(update, context, "clients.unlink_yes_button"), pack(UNLINK_OK, client.client_id))],
        [(await text(update, context, "clients.unlink_no_button"), pack(OPEN, client.client_id))],
    )
    body = await text(update, context, "clients.unlink_confirm", alias=await _name(update, context, client, 0))
    await edit_in_place(update, body, reply_markup=markup)
    return ConversationHandler.END


@requires(Role.THERAPIST)
async def unlink(update: Update, context: BotContext) -> int:
    client = await _client_or_refuse(update, context, UNLINK_OK)
    if client is None:
        return ConversationHandler.END
    identity = await context.identity(update)
    try:
        await context.services.clinic.unlink_client(identity, client.client_id)  # the client is told
    except NotAllowed as refused:  # lost in the meantime
        await refuse(update, context, what=f"button:{UNLINK_OK}", reason=refused.reason)
        return ConversationHandler.END
    await query_of(update).answer()
    body = await text(update, context, "clients.unlinked", alias=await _name(update, context, client, 0))
    await edit_in_place(update, body)
    return ConversationHandler.END


def build(fallbacks: list[BaseHandler], free_text: filters.BaseFilter) -> ConversationHandler:
    buttons: list[BaseHandler] = [
        CallbackQueryHandler(turn_page, pattern=CallbackCodec.pattern(PAGE)),
        CallbackQueryHandler(open_client, pattern=CallbackCodec.pattern(OPEN)),
        CallbackQueryHandler(ask_new_alias, pattern=CallbackCodec.pattern(RENAME)),
        CallbackQueryHandler(confirm_unlink, pattern=CallbackCodec.pattern(UNLINK)),
        CallbackQueryHandler(unlink, pattern=CallbackCodec.pattern(UNLINK_OK)),
    ]
    return conversation(
        "clients",
        entry_points=[CommandHandler("clients", show_clients), *buttons],
        states={RENAME_STATE: [MessageHandler(free_text, receive_new_alias)]},
        fallbacks=fallbacks,
    )
