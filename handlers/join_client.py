"""A client joins their therapist through a client invite link (``/start <token>``).

    /start <token> ─► welcome ─[Continue]─► what I am and am not ─[Read the consent]─► consent
        consent ─[Not now]─► end: nothing stored
                └[I agree]─► enrolled ─► LANGUAGE ─[a language]─► TIMEZONE ─[a zone / a city]─► done
                                                                      └(not found)─► TIMEZONE

    A client of another therapist ─► confirm ─[Switch]─► switched (the old therapist is told)
                                             └[Keep things as they are]─► nothing changes

/start dispatches here with :func:`begin` (handlers/start.py) for every payload that is not
a therapist or staff invite, so the unhappy paths (malformed, unknown, expired, used,
revoked) are answered here too. Nothing is stored before [I agree], which enrolls the client
in one transaction (bot.services.enrollment). Until then the buttons carry the invite id in
a signed payload (bot.callbacks), so the steps need no memory and survive a restart; they
are entry points of this conversation. After [I agree] the person exists, and the language
and time zone steps are ordinary persisted states.
"""

from __future__ import annotations


from telegram import InlineKeyboardMarkup, Update
from telegram.ext import (
    BaseHandler,
    CallbackQueryHandler,
    ConversationHandler,
    MessageHandler,
    filters,
)

from bot.callbacks import CallbackCodec
from bot.context import BotContext
from bot.db.models import InviteKind, Role
from bot.services.enrollment import AlreadyEnrolled, InviteUnavailable, JoinSituation
from bot.services.invites import InviteStatus, InviteView
from handlers.access import public, requires
from handlers.common import (
    conversation,
    crisis_block,
    keyboard,
    say,
    settle,
    signed_ids,
    text,
    use_the_buttons,
)
from handlers.preferences import (
    LANGUAGE_BUTTON,
    ZONE_BUTTON,
    ask_timezone,
    language_buttons,
    save_language,
    save_timezone,
    zone_from_button,
    zone_from_text,
)

# States (after enrolment).
LANGUAGE = "client_join_language"
TIMEZONE = "client_join_timezone"

# Signed button actions; each carries the invite id.
ABOUT = "cj.about"
CONSENT = "cj.consent"
AGREE = "cj.agree"
DECLINE = "cj.decline"
SWITCH = "cj.switch"
KEEP = "cj.keep"


# -- /start <payload> --------------------------------------------------------------------------


async def begin(update: Update, context: BotContext, view: InviteView) -> int:
    """From /start: answer the payload. Only reads; returns END for the welcome conversation
    (the next steps are this conversation's entry points)."""
    if not view.valid or view.kind is not InviteKind.CLIENT or view.id is None:
        status = view.status if not view.valid else InviteStatus.UNKNOWN
        await say(update, context, f"client_join.link.{status.value}")
        return ConversationHandler.END
    identity = await context.identity(update)
    assessment = await context.services.enrollment.assess(identity, view)
    therapist = await _therapist_name(update, context, view.therapist_display_name)
    situation = assessment.situation
    if situation is JoinSituation.NOT_A_CLIENT:
        await say(update, context, "client_join.link.staff_member")
    elif situation is JoinSituation.ALREADY_CONNECTED:
        await say(update, context, "client_join.link.already_connected", therapist=therapist)
    elif situation is JoinSituation.RECONNECT:
        await _offer_switch(update, context, view.id, therapist, current=None)
    elif situation is JoinSituation.SWITCH:
        current = await _therapist_name(update, context, assessment.current_therapist_name)
        await _offer_switch(update, context, view.id, therapist, current=current)
    else:
        await say(
            update,
            context,
            "client_join.welcome",
            name=identity.first_name,
            therapist=therapist,
            reply_markup=await _buttons(update, context, view.id, ("client_join.continue_button", ABOUT)),
        )
    return ConversationHandler.END


# -- before consent: stateless, the invite id rides in the buttons -----------------------------


@public
async def show_about(update: Update, context: BotContext) -> int:
    view = await _pressed_invite(update, context, ABOUT)
    if view is not None:
        assert view.id is not None  # a usable invite is a stored one
        await say(
            update,
            context,
            "client_join.about",
            therapist=await _therapist_name(update, context, view.therapist_display_name),
            reply_markup=await _buttons(update, context, view.id, ("client_join.to_consent_button", CONSENT)),
        )
    return ConversationHandler.END


@public
async def show_consent(update: Update, context: BotContext) -> int:
    view = await _pressed_invite(update, context, CONSENT)
    if view is not None:
        assert view.id is not None  # a usable invite is a stored one
        await say(
            update,
            context,
            "consent.text",
            version=context.services.consent.current_version,
            crisis=await crisis_block(update, context),
            reply_markup=await _buttons(
                update,
                context,
                view.id,
                ("client_join.agree_button", AGREE),
                ("client_join.decline_button", DECLINE),
            ),
        )
    return ConversationHandler.END


@public
async def decline(update: Update, context: BotContext) -> int:
    """[Not now]: nothing is stored, not even that they were here."""
    if await signed_ids(update, context, DECLINE) is None:
        return ConversationHandler.END
    await settle(update)
    await say(update, context, "client_join.declined")
    return ConversationHandler.END


@public
async def agree(update: Update, context: BotContext) -> str | int:
    """[I agree]: enrol (claim the invite, client, link, consent, audit), then ask the language."""
    ids = await signed_ids(update, context, AGREE)
    if ids is None:
        return ConversationHandler.END
    await settle(update)
    identity = await context.identity(update)
    try:
        enrolled = await context.services.enrollment.enroll(
            ids[0],
            identity,
            language=identity.language,
            timezone=identity.timezone,
            consent_version=context.services.consent.current_version,
        )
    except InviteUnavailable as gone:
        await say(update, context, f"client_join.link.{gone.status.value}")
        return ConversationHandler.END
    except AlreadyEnrolled:
        await say(update, context, "client_join.link.used")
        return ConversationHandler.END
    except PermissionError:
        await say(update, context, "client_join.link.staff_member")
        return ConversationHandler.END
    context.remember_identity(enrolled.identity)
    await say(
        update,
        context,
        "client_join.agreed",
        version=enrolled.consent_version,
        therapist=await _therapist_name(update, context, enrolled.therapist_name),
    )
    await _ask_language(update, context)
    return LANGUAGE


# -- after consent: language and time zone -----------------------------------------------------


@requires(Role.CLIENT)
async def language_chosen(update: Update, context: BotContext) -> str:
    if await save_language(update, context) is None:
        await _ask_language(update, context)
        return LANGUAGE
    await ask_timezone(update, context, "client_join.timezone_question")
    return TIMEZONE


@requires(Role.CLIENT)
async def timezone_pressed(update: Update, context: BotContext) -> str | int:
    return await _finish(update, context, await zone_from_button(update, context))


@requires(Role.CLIENT)
async def timezone_typed(update: Update, context: BotContext) -> str | int:
    zone = await zone_from_text(update, context)
    if zone is None:
        return TIMEZONE
    return await _finish(update, context, zone)


async def _finish(update: Update, context: BotContext, zone: str | None) -> str | int:
    identity = await save_timezone(update, context, zone)
    if identity is None:
        return TIMEZONE
    await context.services.menus.apply(context.bot, identity)
    crisis = await crisis_block(update, context)
    await say(update, context, "client_join.done", zone=identity.timezone, crisis=crisis)
    return ConversationHandler.END


async def _ask_language(update: Update, context: BotContext) -> None:
    buttons = await language_buttons(update, context)
    await say(update, context, "client_join.language_question", reply_markup=buttons)



# -- a client of another therapist (or of none any more) ----------------------------------------


async def _offer_switch(
    update: Update, context: BotContext, invite_id: int, therapist: str, *, current: str | None
) -> None:
    """Ask to switch from ``current`` to ``therapist`` (or, with no current therapist, to
    connect); the buttons carry the invite id."""
    if current is None:
        key, button = "client_join.switch.reconnect", "client_join.switch.connect_button"
        params = {"therapist": therapist}
    else:
        key, button = "client_join.switch.confirm", "client_join.switch.switch_button"
        params = {"therapist": therapist, "current": current}
    await say(
        update,
        context,
        key,
        reply_markup=await _buttons(
            update, context, invite_id, (button, SWITCH), ("client_join.switch.keep_button", KEEP)
        ),
        **params,
    )


@requires(Role.CLIENT)
async def switch(update: Update, context: BotContext) -> int:
    ids = await signed_ids(update, context, SWITCH)
    if ids is None:
        return ConversationHandler.END
    await settle(update)
    try:
        switched = await context.services.enrollment.switch(ids[0], await context.identity(update))
    except InviteUnavailable as gone:
        await say(update, context, f"client_join.link.{gone.status.value}")
        return ConversationHandler.END
    except AlreadyEnrolled:
        await say(update, context, "client_join.switch.kept")
        return ConversationHandler.END
    therapist = await _therapist_name(update, context, switched.therapist_name)
    await say(update, context, "client_join.switch.switched", therapist=therapist)
    return ConversationHandler.END


@requires(Role.CLIENT)
async def keep(update: Update, context: BotContext) -> int:
    if await signed_ids(update, context, KEEP) is None:
        return ConversationHandler.END
    await settle(update)
    await say(update, context, "client_join.switch.kept")
    return ConversationHandler.END


# -- helpers -----------------------------------------------------------------------------------


async def _pressed_invite(update: Update, context: BotContext, action: str) -> InviteView | None:
    """The invite a pressed button names, if it can still be used (else say why: None)."""
    ids = await signed_ids(update, context, action)
    if ids is None:
        return None
    await settle(update)
    view = await context.services.enrollment.invite(ids[0])
    if not view.valid:
        await say(update, context, f"client_join.link.{view.status.value}")
        return None
    return view


async def _buttons(
    update: Update, context: BotContext, invite_id: int, *buttons: tuple[str, str]
) -> InlineKeyboardMarkup:
    """One row per button: (content key of the label, signed action with the invite id)."""
    identity = await context.identity(update)
    pack = context.services.callbacks.pack
    return keyboard(
        *[
            [(await text(update, context, label), pack(identity.telegram_id, action, invite_id))]
            for label, action in buttons
        ]
    )


async def _therapist_name(update: Update, context: BotContext, name: str | None) -> str:
    return name if name else await text(update, context, "client_join.your_therapist")


def build(fallbacks: list[BaseHandler], free_text: filters.BaseFilter) -> ConversationHandler:
    pattern = CallbackCodec.pattern
    return conversation(
        "client_join",
        entry_points=[
            CallbackQueryHandler(show_about, pattern=pattern(ABOUT)),
            CallbackQueryHandler(show_consent, pattern=pattern(CONSENT)),
            CallbackQueryHandler(agree, pattern=pattern(AGREE)),
            CallbackQueryHandler(decline, pattern=pattern(DECLINE)),
            CallbackQueryHandler(switch, pattern=pattern(SWITCH)),
            CallbackQueryHandler(keep, pattern=pattern(KEEP)),
        ],
        states={
            LANGUAGE: [
                CallbackQueryHandler(language_chosen, pattern=LANGUAGE_BUTTON),
                MessageHandler(free_text, use_the_buttons),
            ],
            TIMEZONE: [
                CallbackQueryHandler(timezone_pressed, pattern=ZONE_BUTTON),
                MessageHandler(free_text, timezone_typed),
            ],
        },
        fallbacks=fallbacks,
    )
