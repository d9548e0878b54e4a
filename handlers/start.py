"""/start: the welcome, and a short tour of what the bot does and never does.

    /start ──► OFFER ──[Take the tour]──► TOUR ──[Next]/[Back]──► TOUR ──[Done]──► end
                  └────[Not now]──► end

The conversation state is persisted in the database, so a person who is halfway through
the tour when the bot restarts can simply press Next. ``/start <payload>`` (a deep link)
is where invite links arrive.
"""

from __future__ import annotations

import re

from telegram import Update
from telegram.ext import (
    BaseHandler,
    CallbackQueryHandler,
    CommandHandler,
    ConversationHandler,
    MessageHandler,
    filters,
)

from bot.context import BotContext
from handlers import join_client, join_clinic
from handlers.access import public
from handlers.common import conversation, edit_in_place, keyboard, say, settle, text, use_the_buttons
from handlers.parts import button_match, chat_id_of, query_of

# States (strings, so that the persisted value reads well in the database).
OFFER = "offer"
TOUR = "tour"

# Callback data.
BEGIN = "tour:begin"
SKIP = "tour:skip"
DONE = "tour:done"
PAGE = re.compile(r"^tour:page:(\d{1,2})$")


@public
async def start(update: Update, context: BotContext) -> str | int:
    """Entry point. Greets the asker according to who they are, then offers the tour."""
    identity = await context.identity(update)
    if context.args:
        # An invite link (/start <token>): dispatched by the kind of invite. Looking it up
        # stores nothing, whatever the payload.
        view = await context.services.invites.inspect(" ".join(context.args))
        if view.kind in join_clinic.KINDS:
            return await join_clinic.begin(update, context, view)
        return await join_client.begin(update, context, view)  # client links, and bad payloads
    if identity.is_admin:
        identity = await context.services.people.register_admin(identity)
        context.remember_identity(identity)
        await context.services.menus.apply(context.bot, identity)
        key = "start.welcome_admin"
    elif identity.role is not None:
        await say(update, context, "start.welcome_back", name=identity.first_name)
        return ConversationHandler.END
    else:
        key = "start.welcome"
    await say(
        update,
        context,
        key,
        name=identity.first_name,
        reply_markup=keyboard(
            [(await text(update, context, "start.tour_button"), BEGIN)],
            [(await text(update, context, "start.skip_button"), SKIP)],
        ),
    )
    return OFFER


@public
async def skip_tour(update: Update, context: BotContext) -> int:
    await settle(update)
    await say(update, context, "start.skipped")
    return ConversationHandler.END


@public
async def begin_tour(update: Update, context: BotContext) -> str:
    await settle(update)
    await _send_page(update, context, 0, edit=False)
    return TOUR


@public
async def turn_page(update: Update, context: BotContext) -> str:
    """Next / Back: edit the tour message in place to show the requested page."""
    query = query_of(update)
    await query.answer()
    pages = await _pages(update, context)
    page = int(button_match(PAGE, update).group(1))
    await _send_page(update, context, min(page, len(pages) - 1), edit=True)
    return TOUR


@public
async def finish_tour(update: Update, context: BotContext) -> int:
    await settle(update)
    await say(update, context, "tour.finished")
    return ConversationHandler.END



async def _pages(update: Update, context: BotContext) -> list[str]:
    identity = await context.identity(update)
    return context.services.content.texts("tour.pages", identity.language)


async def _send_page(update: Update, context: BotContext, page: int, *, edit: bool) -> None:
    pages = await _pages(update, context)
    counter = await text(update, context, "tour.page_counter", page=page + 1, total=len(pages))
    body = f"{pages[page]}\n\n<i>{counter}</i>"
    buttons: list[tuple[str, str]] = []
    if page > 0:
        buttons.append((await text(update, context, "tour.back"), f"tour:page:{page - 1}"))
    if page < len(pages) - 1:
        buttons.append((await text(update, context, "tour.next"), f"tour:page:{page + 1}"))
    else:
        buttons.append((await text(update, context, "tour.done"), DONE))
    markup = keyboard(buttons)
    if edit:
        await edit_in_place(update, body, reply_markup=markup)
    else:
        await context.bot.send_message(chat_id_of(update), body, reply_markup=markup)


def build(fallbacks: list[BaseHandler], free_text: filters.BaseFilter) -> ConversationHandler:
    return conversation(
        "welcome",
        entry_points=[CommandHandler("start", start)],
        states={
            OFFER: [
                CallbackQueryHandler(begin_tour, pattern=f"^{BEGIN}$"),
                CallbackQueryHandler(skip_tour, pattern=f"^{SKIP}$"),
                MessageHandler(free_text, use_the_buttons),
            ],
            TOUR: [
                CallbackQueryHandler(turn_page, pattern=PAGE),
                CallbackQueryHandler(finish_tour, pattern=f"^{DONE}$"),
                MessageHandler(free_text, use_the_buttons),
            ],
            **join_clinic.states(free_text),  # a therapist or staff member joining
        },
        fallbacks=fallbacks,
    )
