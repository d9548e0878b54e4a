"""/setkey: a therapist registers the age public key their summaries will be encrypted to.
Summaries that waited for a first key are encrypted to it and queued in the same transaction
(bot.services.summaries), and the answer says how many are on their way.

    /setkey age1…  ─┐
    /setkey ──(explanation, the reader page)──► KEY ┴─(a key)──► no key yet ─────────► set: fingerprint, end
                 │                ├─ the same key ─────► "already yours", end
                 │                └─ another key ──► CONFIRM ──[Replace]──► replaced, end
                 │                                      └──────[Keep]─────► kept, end
                 ├─(a private key)──► message deleted, warning ──► KEY (re-prompt)
                 └─(anything else wrong)──► what is wrong ──────► KEY (re-prompt)

``/setkey`` alone also sends the therapist's reader (bot/reader: a page that makes the key in
their browser and later opens the summaries), as it is sent after a therapist joins.

The key itself is checked in bot.crypto.age and stored by bot.services.therapist_keys; the
proposal waiting in CONFIRM is a database row, named by a signed button, so a restart
between the two steps loses nothing. A private key pasted anywhere, in this conversation or
any other, is caught earlier still by ``private_key_guard`` (its own handler group).
"""

from __future__ import annotations

from telegram import InputFile, Update
from telegram.error import BadRequest, Forbidden
from telegram.ext import (
    ApplicationHandlerStop,
    BaseHandler,
    CallbackQueryHandler,
    CommandHandler,
    ConversationHandler,
    MessageHandler,
    filters,
)

from bot.callbacks import CallbackCodec
from bot.context import BotContext
from bot.crypto.age import SECRET_KEY_PATTERN, AgeKeyError, contains_secret_key
from bot.db.models import Role
from bot.reader import FILE_NAME, reader_page
from bot.services.invites import NotAllowed
from bot.services.therapist_keys import Outcome
from handlers.access import public, refuse, requires
from handlers.common import conversation, keyboard, local_time, packer, say, settle, signed_ids, text, use_the_buttons
from handlers.parts import chat_id_of, message_of

KEY = "setkey_key"
CONFIRM = "setkey_confirm"
REPLACE = "sk.replace"  # signed: the proposal's id
KEEP = "sk.keep"


@requires(Role.THERAPIST)
async def setkey(update: Update, context: BotContext) -> str | int:
    """``/setkey age1…`` takes the key at once; ``/setkey`` alone asks for it."""
    given = " ".join(context.args or [])
    if given:
        return await _take(update, context, given)
    identity = await context.identity(update)
    current = await context.services.therapist_keys.current(identity)
    if current is None:
        await say(update, context, "setkey.ask")
    else:
        date = await local_time(update, context, current.set_at, "setkey.date_format")
        await say(update, context, "setkey.ask_replace", fingerprint=current.fingerprint, date=date)
    await send_reader(update, context)
    return KEY


async def send_reader(update: Update, context: BotContext) -> None:
    """The reader page as a document, in the therapist's language. It holds no personal data,
    so the therapist may save and keep it (protect_content off)."""
    identity = await context.identity(update)
    await context.bot.send_document(
        chat_id_of(update),
        document=InputFile(reader_page(context.services.content, identity.language), filename=FILE_NAME),
        caption=await text(update, context, "reader.caption"),
        protect_content=False,
    )


@requires(Role.THERAPIST)
async def key_typed(update: Update, context: BotContext) -> str | int:
    return await _take(update, context, message_of(update).text or "")


async def _take(update: Update, context: BotContext, given: str) -> str | int:
    identity = await context.identity(update)
    if contains_secret_key(given):
        return await _secret_key_pasted(update, context)
    try:
        change = await context.services.therapist_keys.submit(identity, given)
    except AgeKeyError as wrong:
        await say(update, context, f"setkey.wrong.{wrong.reason}")
        return KEY
    except NotAllowed as refused:  # their role changed since the conversation began
        await refuse(update, context, what="/setkey", reason=refused.reason)
        return ConversationHandler.END
    if change.outcome is Outcome.SET:
        await say(update, context, "setkey.set", fingerprint=change.key.fingerprint)
        await _released(update, context, change.released)
        return ConversationHandler.END
    if change.outcome is Outcome.SAME:
        await say(update, context, "setkey.same", fingerprint=change.key.fingerprint)
        return ConversationHandler.END
    pack = packer(update, context)
    assert change.previous is not None  # CONFIRM: replacing the current key
    await say(
        update,
        context,
        "setkey.confirm",
        old=change.previous.fingerprint,
        new=change.key.fingerprint,
        reply_markup=keyboard(
            [(await text(update, context, "setkey.replace_button"), pack(REPLACE, change.key.id))],
            [(await text(update, context, "setkey.keep_button"), pack(KEEP))],
        ),
    )
    return CONFIRM


async def _secret_key_pasted(update: Update, context: BotContext) -> str:
    """A private key in the chat: take it out of the chat at once, and say what to do."""
    deleted = True
    try:
        message = update.effective_message  # the new message, or one edited into a key
        if message is not None:
            await message.delete()
    except (BadRequest, Forbidden):
        deleted = False
    await context.services.therapist_keys.secret_key_refused(await context.identity(update))
    await say(update, context, "setkey.wrong.secret_key" if deleted else "setkey.wrong.secret_key_not_deleted")
    return KEY


@requires(Role.THERAPIST)
async def replace(update: Update, context: BotContext) -> int:
    ids = await signed_ids(update, context, REPLACE)
    if ids is None:
        return ConversationHandler.END
    await settle(update)
    change = await context.services.therapist_keys.confirm(await context.identity(update), ids[0])
    if change is None:
        await say(update, context, "setkey.expired")
    elif change.outcome is Outcome.REPLACED:
        await say(update, context, "setkey.replaced", fingerprint=change.key.fingerprint)
        await _released(update, context, change.released)
    else:  # the old key was gone meanwhile: this one is simply set
        await say(update, context, "setkey.set", fingerprint=change.key.fingerprint)
        await _released(update, context, change.released)
    return ConversationHandler.END


async def _released(update: Update, context: BotContext, count: int) -> None:
    """Summaries that waited for a key were encrypted to this one and are on their way."""
    if count:
        await say(update, context, "setkey.released", count=count)


@requires(Role.THERAPIST)
async def keep(update: Update, context: BotContext) -> int:
    if await signed_ids(update, context, KEEP) is None:
        return ConversationHandler.END
    await settle(update)
    identity = await context.identity(update)
    await context.services.therapist_keys.withdraw_proposal(identity)
    current = await context.services.therapist_keys.current(identity)
    await say(update, context, "setkey.kept", fingerprint=current.fingerprint if current else "—")
    return ConversationHandler.END


@public  # whoever it is: the message must leave the chat
async def private_key_anywhere(update: Update, context: BotContext) -> None:
    """A private key in any message, in any step of any conversation (say, the contents of
    key.txt pasted without /setkey): deleted and warned about before anything else sees it.
    The conversation the person is in stays where it was."""
    await _secret_key_pasted(update, context)
    raise ApplicationHandlerStop


def private_key_guard() -> MessageHandler:
    """For a handler group that runs before the conversations (handlers/__init__.py)."""
    return MessageHandler(filters.TEXT & filters.Regex(SECRET_KEY_PATTERN), private_key_anywhere)


def build(fallbacks: list[BaseHandler], free_text: filters.BaseFilter) -> ConversationHandler:
    buttons: list[BaseHandler] = [
        CallbackQueryHandler(replace, pattern=CallbackCodec.pattern(REPLACE)),
        CallbackQueryHandler(keep, pattern=CallbackCodec.pattern(KEEP)),
    ]
    return conversation(
        "setkey",
        entry_points=[CommandHandler("setkey", setkey)],
        states={
            KEY: [MessageHandler(free_text, key_typed)],
            CONFIRM: [*buttons, MessageHandler(free_text, use_the_buttons)],
        },
        fallbacks=fallbacks,
    )
