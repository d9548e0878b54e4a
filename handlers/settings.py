"""/settings: a person's own settings in one place.

    /settings ──► language and time zone (each changed with its own command)
               ├─ client: practice announcements on or off ──► SETTINGS
               │     [Turn practice announcements off | on] ──► saved, said, end
               └─ therapist, staff, admin: nothing to choose here, end

Practice announcements are the messages staff send to many clients at once (/broadcast,
bot.services.broadcasts); only clients receive them, so only clients have the switch. The
button is signed (bot.callbacks: ``set.ann`` with 1 for on, 0 for off) for the client it was
made for; a forged, altered or someone else's payload is refused and audited, and the role is
checked again on use. A flow (bot.flows): another command or flow ends it, and the button
under an ended /settings is stale.
"""

from __future__ import annotations

from telegram import Update
from telegram.ext import BaseHandler, CallbackQueryHandler, CommandHandler, ConversationHandler, filters

from bot.callbacks import CallbackCodec
from bot.context import BotContext
from bot.db.models import Role
from handlers.access import refuse, requires
from handlers.common import conversation, keyboard, packer, settle, signed_ids, text
from handlers.preferences import ENROLLED, stored_identity
from handlers.parts import chat_id_of

FLOW = "settings"
SETTINGS_STATE = "settings"
ANNOUNCEMENTS = "set.ann"  # signed: 1 turns practice announcements on, 0 off


@requires(*ENROLLED)
async def show(update: Update, context: BotContext) -> str | int:
    identity = await stored_identity(update, context)
    services = context.services
    parts = [
        await text(update, context, "settings.title"),
        await text(update, context, "settings.language", language=services.preferences.language_name(identity.language)),
        await text(update, context, "settings.timezone", zone=identity.timezone),
    ]
    if identity.role is not Role.CLIENT:
        await context.bot.send_message(chat_id_of(update), "\n".join(parts))
        return ConversationHandler.END
    on = await services.preferences.announcements(identity)
    parts.append("\n" + await text(update, context, f"settings.announcements_{'on' if on else 'off'}"))
    label = await text(update, context, f"settings.turn_{'off' if on else 'on'}_button")
    markup = keyboard([(label, packer(update, context)(ANNOUNCEMENTS, 0 if on else 1))])
    await context.bot.send_message(chat_id_of(update), "\n".join(parts), reply_markup=markup)
    return SETTINGS_STATE


@requires(Role.CLIENT)
async def announcements_pressed(update: Update, context: BotContext) -> str | int:
    values = await signed_ids(update, context, ANNOUNCEMENTS)
    if values is None:
        return SETTINGS_STATE  # refused (and audited); the real button still works
    if values not in ([0], [1]):
        await refuse(update, context, what=f"button:{ANNOUNCEMENTS}", reason="payload")
        return SETTINGS_STATE
    await settle(update)
    identity = await context.identity(update)
    on = values == [1]
    await context.services.preferences.set_announcements(identity, on)
    await context.bot.send_message(
        chat_id_of(update), await text(update, context, f"settings.turned_{'on' if on else 'off'}")
    )
    return ConversationHandler.END


def build(fallbacks: list[BaseHandler], free_text: filters.BaseFilter) -> ConversationHandler:
    return conversation(
        FLOW,
        entry_points=[CommandHandler("settings", show)],
        states={
            # Typed text is not taken here: it goes where it would go without /settings.
            SETTINGS_STATE: [CallbackQueryHandler(announcements_pressed, pattern=CallbackCodec.pattern(ANNOUNCEMENTS))],
        },
        fallbacks=fallbacks,
    )
