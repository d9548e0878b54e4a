"""/invite: a therapist makes a one-time invite link for a client.

    /invite ──► ALIAS ──(an alias)──► end: link + QR code
                  ├──[Skip]─────────► end: link + QR code
                  └──(bad alias)────► ALIAS (re-prompt)

``send_invite`` is also how staff and admins get therapist and staff links
(handlers/therapists.py). Invite messages opt out of ``protect_content``: they are made to
be forwarded.
"""

from __future__ import annotations


from telegram import LinkPreviewOptions, Update
from telegram.ext import (
    BaseHandler,
    CallbackQueryHandler,
    CommandHandler,
    ConversationHandler,
    MessageHandler,
    filters,
)

from bot.context import BotContext
from bot.db.models import InviteKind, Role
from bot.services.invites import NewInvite, NotAllowed
from bot.services.names import InvalidAlias
from handlers.access import refuse, requires
from handlers.common import conversation, keyboard, local_time, say, settle, text
from handlers.parts import chat_id_of, message_of

ALIAS = "invite_alias"
SKIP = "invite:skip"

_LINK_TEXT = {
    InviteKind.THERAPIST: "invite.therapist_link",
    InviteKind.STAFF: "invite.staff_link",
    InviteKind.CLIENT: "invite.client_link_no_alias",
}


async def send_invite(
    update: Update, context: BotContext, kind: InviteKind, *, alias: str | None = None
) -> NewInvite | None:
    """Make an invite of ``kind`` for the asker and send it as text and as a QR code.
    Refused (and audited) when the asker's current role may not make it: None. A button's
    callback query is answered by the refusal, so answer it only when this succeeded."""
    identity = await context.identity(update)
    try:
        made = await context.services.invites.create(
            identity, kind, bot_username=context.bot.username, alias=alias
        )
    except NotAllowed as refused:
        await refuse(update, context, what=f"invite:{kind.value}", reason=refused.reason)
        return None
    key = "invite.client_link" if alias else _LINK_TEXT[kind]
    expires = await local_time(update, context, made.expires_at, "invite.expires_format")
    chat_id = chat_id_of(update)
    await context.bot.send_message(
        chat_id,
        await text(update, context, key, link=made.link, expires=expires, alias=alias or ""),
        protect_content=False,
        link_preview_options=LinkPreviewOptions(is_disabled=True),
    )
    await context.bot.send_photo(
        chat_id,
        photo=context.services.invites.qr_png(made.link),
        caption=await text(update, context, "invite.qr_caption"),
        protect_content=False,
    )
    return made


@requires(Role.THERAPIST)
async def invite(update: Update, context: BotContext) -> str:
    """Entry point: ask for an optional alias."""
    await say(
        update,
        context,
        "invite.ask_alias",
        reply_markup=keyboard([(await text(update, context, "invite.skip_button"), SKIP)]),
    )
    return ALIAS


@requires(Role.THERAPIST)
async def receive_alias(update: Update, context: BotContext) -> str | int:
    try:
        await send_invite(update, context, InviteKind.CLIENT, alias=message_of(update).text or "")
    except InvalidAlias:
        await say(update, context, "invite.alias_invalid")
        return ALIAS
    return ConversationHandler.END


@requires(Role.THERAPIST)
async def skip_alias(update: Update, context: BotContext) -> int:
    if await send_invite(update, context, InviteKind.CLIENT) is not None:  # else refused
        await settle(update)
    return ConversationHandler.END


def build(fallbacks: list[BaseHandler], free_text: filters.BaseFilter) -> ConversationHandler:
    return conversation(
        "client_invite",
        entry_points=[CommandHandler("invite", invite)],
        states={
            ALIAS: [
                MessageHandler(free_text, receive_alias),
                CallbackQueryHandler(skip_alias, pattern=f"^{SKIP}$"),
            ],
        },
        fallbacks=fallbacks,
    )
