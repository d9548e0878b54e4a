"""/language and /timezone: any enrolled person changes their own.

    /language ──► buttons ──[a language]──► saved (answered in the new language)

    /timezone ──► TIMEZONE ──[a suggested zone]──────────────► saved, end
                     ├──(a city or zone name, found)──────────► saved, end
                     ├──(a name that fits several)──► choices ──[one]──► saved, end
                     └──(nothing found)──► TIMEZONE (re-prompt)

The steps are also used by the client join conversation (handlers/join_client.py), which
asks for both right after consent; the same buttons (``lang:…``, ``tz:…``) work there.
"""

from __future__ import annotations

import re

from telegram import InlineKeyboardMarkup, Update
from telegram.ext import (
    BaseHandler,
    CallbackQueryHandler,
    CommandHandler,
    ConversationHandler,
    MessageHandler,
    filters,
)

from bot.context import BotContext
from bot.db.models import Role
from bot.services.people import Identity
from bot.services.preferences import UnknownLanguage, UnknownZone, local_now
from handlers.access import requires
from handlers.common import conversation, keyboard, say, settle
from handlers.parts import message_of, query_of

ENROLLED = (Role.CLIENT, Role.THERAPIST, Role.STAFF)  # admins may do what staff do

TIMEZONE = "timezone"  # the /timezone conversation's one state

# Button data: no record ids (each changes only the presser's own setting); checked again
# on use, so an invented value is simply not accepted.
LANGUAGE_BUTTON = re.compile(r"^lang:([a-z]{2,8})$")
ZONE_BUTTON = re.compile(r"^tz:([A-Za-z0-9_+\-/]{1,60})$")


# -- shared steps (also used by handlers/join_client.py) ---------------------------------------


async def stored_identity(update: Update, context: BotContext) -> Identity:
    """The asker with a stored record: an administrator from the configuration who never
    sent /start gets theirs now (preferences live on the record)."""
    identity = await context.identity(update)
    if identity.person_id is None and identity.is_admin:
        identity = await context.services.people.register_admin(identity)
        context.remember_identity(identity)
    return identity


async def language_buttons(update: Update, context: BotContext) -> InlineKeyboardMarkup:
    """One button per language; the current one is ticked."""
    identity = await context.identity(update)
    return keyboard(
        [
            (f"✓ {name}" if code == identity.language else name, f"lang:{code}")
            for code, name in context.services.preferences.languages()
        ]
    )


async def save_language(update: Update, context: BotContext) -> Identity | None:
    """A language button was pressed: store it. None for a language we do not have."""
    await settle(update)
    match = LANGUAGE_BUTTON.match(query_of(update).data or "")
    identity = await stored_identity(update, context)
    try:
        identity = await context.services.preferences.set_language(identity, match.group(1) if match else "")
    except UnknownLanguage:
        return None
    context.remember_identity(identity)
    return identity


async def ask_timezone(update: Update, context: BotContext, key: str) -> None:
    """The question ``key`` with the short list of zones for the asker's language."""
    identity = await context.identity(update)
    suggestions = context.services.preferences.suggested_zones(identity.language)
    rows = [suggestions[i : i + 2] for i in range(0, len(suggestions), 2)]
    await say(
        update,
        context,
        key,
        zone=identity.timezone,
        time=local_now(identity.timezone).strftime("%H:%M"),
        reply_markup=keyboard(*[[(s.label, f"tz:{s.zone}") for s in row] for row in rows]),
    )


async def zone_from_button(update: Update, context: BotContext) -> str | None:
    await settle(update)
    match = ZONE_BUTTON.match(query_of(update).data or "")
    return match.group(1) if match else None


async def zone_from_text(update: Update, context: BotContext) -> str | None:
    """A typed city or zone name. When it is unknown or fits several zones, say so (with
    the choices as buttons) and return None: the step stays where it is."""
    lookup = context.services.preferences.resolve_zone(message_of(update).text or "")
    if lookup.zone is not None:
        return lookup.zone
    if lookup.choices:
        buttons = [[(zone.replace("_", " "), f"tz:{zone}")] for zone in lookup.choices]
        await say(update, context, "account.timezone.choices", reply_markup=keyboard(*buttons))
    else:
        await say(update, context, "account.timezone.unknown")
    return None


async def save_timezone(update: Update, context: BotContext, zone: str | None) -> Identity | None:
    """Store ``zone`` for the asker (their reminders are planned anew in it); None (after
    saying so) when it is not a valid zone."""
    identity = await stored_identity(update, context)
    try:
        identity = await context.services.preferences.set_timezone(identity, zone or "")
    except UnknownZone:
        await say(update, context, "account.timezone.unknown")
        return None
    context.remember_identity(identity)
    return identity


# -- /language ---------------------------------------------------------------------------------


@requires(*ENROLLED)
async def language_command(update: Update, context: BotContext) -> None:
    identity = await context.identity(update)
    await say(
        update,
        context,
        "account.language.question",
        language=context.services.preferences.language_name(identity.language),
        reply_markup=await language_buttons(update, context),
    )


@requires(*ENROLLED)
async def language_chosen(update: Update, context: BotContext) -> None:
    identity = await save_language(update, context)
    if identity is None:
        await language_command(update, context)
        return
    await context.services.menus.apply(context.bot, identity)  # the menu in the new language
    await say(update, context, "account.language.changed")


# -- /timezone ---------------------------------------------------------------------------------


@requires(*ENROLLED)
async def timezone_command(update: Update, context: BotContext) -> str:
    await stored_identity(update, context)
    await ask_timezone(update, context, "account.timezone.question")
    return TIMEZONE


@requires(*ENROLLED)
async def timezone_pressed(update: Update, context: BotContext) -> str | int:
    return await _timezone_saved(update, context, await zone_from_button(update, context))


@requires(*ENROLLED)
async def timezone_typed(update: Update, context: BotContext) -> str | int:
    zone = await zone_from_text(update, context)
    if zone is None:
        return TIMEZONE
    return await _timezone_saved(update, context, zone)


async def _timezone_saved(update: Update, context: BotContext, zone: str | None) -> str | int:
    identity = await save_timezone(update, context, zone)
    if identity is None:
        return TIMEZONE
    await say(
        update,
        context,
        "account.timezone.changed",
        zone=identity.timezone,
        time=local_now(identity.timezone).strftime("%H:%M"),
    )
    return ConversationHandler.END


def build_timezone(fallbacks: list[BaseHandler], free_text: filters.BaseFilter) -> ConversationHandler:
    return conversation(
        "timezone",
        entry_points=[CommandHandler("timezone", timezone_command)],
        states={
            TIMEZONE: [
                CallbackQueryHandler(timezone_pressed, pattern=ZONE_BUTTON),
                MessageHandler(free_text, timezone_typed),
            ],
        },
        fallbacks=fallbacks,
    )


def build_language() -> list[BaseHandler]:
    """/language and its buttons: available at any time (no state to keep)."""
    return [
        CommandHandler("language", language_command),
        CallbackQueryHandler(language_chosen, pattern=LANGUAGE_BUTTON),
    ]
