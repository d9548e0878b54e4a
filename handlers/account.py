"""A client's data rights: /mydata, /delete and /consent.

    /mydata  ──► a JSON document with everything stored about them (they may save it)

    /delete  ──► confirm ──[Yes, delete everything]──► are you sure? ──[Delete for good]──► erased
                    └──[No, keep my data]──► nothing changes       └──[No…]──► nothing changes

    /consent ──► version, date and choice ──[Read the consent]──► the text
                    ├──[Withdraw my consent]──► confirm ──[Withdraw]──► withdrawn, therapist told
                    └──[Give consent again]──► the text ──[I agree]──► granted, therapist told

No step waits for typed text, so there is no conversation state: the buttons work from the
message they are under. They change only the presser's own record (no ids in them), and
each is checked again on use (``@requires(Role.CLIENT)``): after an erasure the presser is
no longer a client, so a second [Delete for good] is refused and changes nothing.
"""

from __future__ import annotations

from dataclasses import replace

from telegram import InlineKeyboardMarkup, InputFile, Update
from telegram.ext import BaseHandler, CallbackQueryHandler, CommandHandler

from bot.context import BotContext
from bot.db.models import Role
from bot.services.people import Identity
from bot.services.preferences import local_now
from handlers.access import requires
from handlers.common import crisis_block, keyboard, local_time, say, settle, text
from handlers.parts import chat_id_of, query_of

# Button data (no record ids: each acts on the presser's own record only).
ERASE_ASK = "acct:erase_ask"
ERASE_NOW = "acct:erase_now"
ERASE_KEEP = "acct:erase_keep"
CONSENT_READ = "acct:consent_read"
WITHDRAW_ASK = "acct:withdraw_ask"
WITHDRAW_NOW = "acct:withdraw_now"
GRANT_ASK = "acct:grant_ask"
GRANT_NOW = "acct:grant_now"
CONSENT_KEEP = "acct:consent_keep"


# -- /mydata -----------------------------------------------------------------------------------


@requires(Role.CLIENT)
async def my_data(update: Update, context: BotContext) -> None:
    """The export as a document, which the client may save or forward (protect_content off)."""
    identity = await context.identity(update)
    document = await context.services.data_rights.export(identity)
    day = local_now(identity.timezone).date().isoformat()
    await context.bot.send_document(
        chat_id_of(update),
        document=InputFile(document, filename=f"my-data-{day}.json"),
        caption=await text(update, context, "account.mydata.caption"),
        protect_content=False,
    )


# -- /delete -----------------------------------------------------------------------------------


@requires(Role.CLIENT)
async def delete_command(update: Update, context: BotContext) -> None:
    await say(
        update,
        context,
        "account.delete.confirm",
        reply_markup=await _buttons(
            update,
            context,
            ("account.delete.confirm_button", ERASE_ASK),
            ("account.delete.keep_button", ERASE_KEEP),
        ),
    )


@requires(Role.CLIENT)
async def delete_confirmed_once(update: Update, context: BotContext) -> None:
    await settle(update)
    await say(
        update,
        context,
        "account.delete.confirm_again",
        reply_markup=await _buttons(
            update,
            context,
            ("account.delete.final_button", ERASE_NOW),
            ("account.delete.keep_button", ERASE_KEEP),
        ),
    )


@requires(Role.CLIENT)
async def delete_now(update: Update, context: BotContext) -> None:
    """Crypto-shredding, then the rows (bot.crypto.erasure); audited as person.erased."""
    await settle(update)
    identity = await context.identity(update)
    goodbye = await text(update, context, "account.delete.done")  # their language, before it goes
    await context.services.data_rights.erase(identity)
    stranger = _as_stranger(identity)
    context.remember_identity(stranger)
    await context.services.menus.apply(context.bot, stranger)
    await context.bot.send_message(chat_id_of(update), goodbye)


@requires(Role.CLIENT)
async def delete_kept(update: Update, context: BotContext) -> None:
    await settle(update)
    await say(update, context, "account.delete.kept")


# -- /consent ----------------------------------------------------------------------------------


@requires(Role.CLIENT)
async def consent_command(update: Update, context: BotContext) -> None:
    """What the client agreed to (version, date, choice) and what they can do about it."""
    identity = await context.identity(update)
    assert identity.person_id is not None  # a client is registered
    status = await context.services.consent.current(identity.person_id)
    if status is None:  # a client always has one; should it be missing, offer to give it
        await _offer_consent(update, context)
        return
    date = await local_time(update, context, status.recorded_at, "account.consent.date_format")
    current = context.services.consent.current_version
    withdraw = ("account.consent.withdraw_button", WITHDRAW_ASK)
    if status.outdated(current):  # a new version since: read it and decide
        key, buttons = "account.consent.granted_older", [("account.consent.read_new_button", GRANT_ASK), withdraw]
    elif status.active:
        key, buttons = "account.consent.granted", [("account.consent.read_button", CONSENT_READ), withdraw]
    else:
        key = "account.consent.withdrawn"
        buttons = [("account.consent.read_button", CONSENT_READ), ("account.consent.grant_button", GRANT_ASK)]
    await say(
        update,
        context,
        key,
        version=status.version,
        current=current,
        date=date,
        reply_markup=await _buttons(update, context, *buttons),
    )


@requires(Role.CLIENT)
async def consent_read(update: Update, context: BotContext) -> None:
    """The consent text, for reading (the status message keeps its buttons)."""
    await query_of(update).answer()
    await say(
        update,
        context,
        "consent.text",
        version=context.services.consent.current_version,
        crisis=await crisis_block(update, context),
    )


@requires(Role.CLIENT)
async def withdraw_asked(update: Update, context: BotContext) -> None:
    await settle(update)
    await say(
        update,
        context,
        "account.consent.confirm_withdraw",
        reply_markup=await _buttons(
            update,
            context,
            ("account.consent.confirm_withdraw_button", WITHDRAW_NOW),
            ("account.consent.keep_button", CONSENT_KEEP),
        ),
    )


@requires(Role.CLIENT)
async def withdraw_now(update: Update, context: BotContext) -> None:
    """Recorded at once: features that remind or summarise check has_active_consent."""
    await settle(update)
    await context.services.consent.withdraw(await context.identity(update))  # the therapist is told
    await say(update, context, "account.consent.now_withdrawn")


@requires(Role.CLIENT)
async def grant_asked(update: Update, context: BotContext) -> None:
    await settle(update)
    await _offer_consent(update, context)


@requires(Role.CLIENT)
async def grant_now(update: Update, context: BotContext) -> None:
    """A grant after a withdrawal (the therapist is told), or of a new version of the text
    while an earlier grant was in force (nothing changes for the therapist)."""
    await settle(update)
    change = await context.services.consent.grant(await context.identity(update))
    if change.was_granted:
        await say(update, context, "account.consent.updated", version=change.status.version)
        return
    await say(update, context, "account.consent.regranted", version=change.status.version)


@requires(Role.CLIENT)
async def consent_kept(update: Update, context: BotContext) -> None:
    await settle(update)
    await say(update, context, "account.consent.kept")


# -- helpers -----------------------------------------------------------------------------------


async def _offer_consent(update: Update, context: BotContext) -> None:
    await say(
        update,
        context,
        "consent.text",
        version=context.services.consent.current_version,
        crisis=await crisis_block(update, context),
        reply_markup=await _buttons(
            update,
            context,
            ("client_join.agree_button", GRANT_NOW),
            ("client_join.decline_button", CONSENT_KEEP),
        ),
    )


async def _buttons(
    update: Update, context: BotContext, *buttons: tuple[str, str]
) -> InlineKeyboardMarkup:
    """One row per button: (content key of the label, callback data)."""
    return keyboard(*[[(await text(update, context, label), data)] for label, data in buttons])


def _as_stranger(identity: Identity) -> Identity:
    """The asker after their erasure: nobody the practice knows."""
    return replace(identity, role=None, person_id=None)


def build() -> list[BaseHandler]:
    """Commands available at any time, and the buttons of their messages."""
    return [
        CommandHandler("mydata", my_data),
        CommandHandler("delete", delete_command),
        CommandHandler("consent", consent_command),
        CallbackQueryHandler(delete_confirmed_once, pattern=f"^{ERASE_ASK}$"),
        CallbackQueryHandler(delete_now, pattern=f"^{ERASE_NOW}$"),
        CallbackQueryHandler(delete_kept, pattern=f"^{ERASE_KEEP}$"),
        CallbackQueryHandler(consent_read, pattern=f"^{CONSENT_READ}$"),
        CallbackQueryHandler(withdraw_asked, pattern=f"^{WITHDRAW_ASK}$"),
        CallbackQueryHandler(withdraw_now, pattern=f"^{WITHDRAW_NOW}$"),
        CallbackQueryHandler(grant_asked, pattern=f"^{GRANT_ASK}$"),
        CallbackQueryHandler(grant_now, pattern=f"^{GRANT_NOW}$"),
        CallbackQueryHandler(consent_kept, pattern=f"^{CONSENT_KEEP}$"),
    ]
