"""/learn: psychoeducation in short chat-sized pages, open to everyone.

    /learn ──► MENU ──[module]──► page 1 ──[Next]/[Back]──► page n ──[Done]──► "You have read …"
                 ▲                   │                                              │
                 └──────[Menu]───────┴──────────────────[Menu]──────────────────────┘
    any page ──[Ask my therapist about this]──► saved once for the next summary

No conversation state: every button carries what it shows (module id, page number) in a
signed payload (bot.callbacks), so a button on an old message still does what it says (it
edits that message), a restart changes nothing, and a forged payload is refused. A module
that no longer exists, or a page past its end, brings the menu back.

Enrolled clients get their progress stored (bot.services.learning); anyone else reads the
same pages and nothing is stored about them.
"""

from __future__ import annotations

from telegram import InlineKeyboardMarkup, Update
from telegram.error import BadRequest
from telegram.ext import BaseHandler, CallbackQueryHandler, CommandHandler

from bot.callbacks import CallbackCodec, InvalidPayload
from bot.content import ContentError, Module
from bot.context import BotContext
from bot.db.models import Role
from bot.services.learning import Asked
from handlers.access import public, refuse
from handlers.common import keyboard, packer, say, text
from handlers.parts import chat_id_of, query_of, user_id_of

# Signed callback actions.
MENU = "lrn.menu"  # no arguments
PAGE = "lrn.page"  # module id, page (1-based)
DONE = "lrn.done"  # module id, page (the last)
ASK = "lrn.ask"  # module id, page (1-based)

ASKED_KEYS = {
    Asked.SAVED: "learn.ask_saved",
    Asked.ALREADY: "learn.ask_already",
    Asked.UNAVAILABLE: "learn.ask_unavailable",
}


@public
async def learn(update: Update, context: BotContext) -> None:
    """/learn: the menu, as a new message."""
    body, markup = await _menu(update, context)
    await context.bot.send_message(chat_id_of(update), body, reply_markup=markup)


@public
async def show_menu(update: Update, context: BotContext) -> None:
    """[Menu]: the menu, in place of the page."""
    if await _args(update, context, MENU) is None:
        return
    await query_of(update).answer()
    body, markup = await _menu(update, context)
    await _edit(update, body, markup)


@public
async def show_page(update: Update, context: BotContext) -> None:
    """A module in the menu, [Next] or [Back]: that page, in place of the message."""
    found = await _module_and_page(update, context, PAGE)
    if found is None:
        return
    module, page = found
    await query_of(update).answer()
    identity = await context.identity(update)
    await context.services.learning.page_seen(identity, module.id, page, len(module.pages))
    await _edit(update, await _page_text(update, context, module, page), await _page_buttons(update, context, module, page))


@public
async def finish_module(update: Update, context: BotContext) -> None:
    """[Done] on the last page: "You have read …", with the progress and the menu button."""
    found = await _module_and_page(update, context, DONE)
    if found is None:
        return
    module, _ = found
    await query_of(update).answer()
    identity = await context.identity(update)
    last = len(module.pages)
    await context.services.learning.page_seen(identity, module.id, last, last)
    progress = ""
    if _stored(identity):
        read, total = await _progress(update, context)
        progress = await text(update, context, "learn.progress", read=read, total=total)
    body = await text(update, context, "learn.module_done", title=module.title, progress=progress)
    if progress and read == total:
        body += "\n\n" + await text(update, context, "learn.all_read")
    await _edit(update, body, await _menu_button(update, context))


@public
async def ask_therapist(update: Update, context: BotContext) -> None:
    """[Ask my therapist about this]: saved once for the next summary; the page stays."""
    found = await _module_and_page(update, context, ASK)
    if found is None:
        return
    module, page = found
    await query_of(update).answer()
    identity = await context.identity(update)
    asked = await context.services.learning.ask(identity, module.id, page)
    await say(update, context, ASKED_KEYS[asked], title=module.title)


# -- what the messages look like --------------------------------------------------------------


def _stored(identity) -> bool:
    """Whether reading is remembered for this person (enrolled clients only)."""
    return identity.role is Role.CLIENT and identity.person_id is not None


async def _progress(update: Update, context: BotContext) -> tuple[int, int]:
    identity = await context.identity(update)
    modules = context.services.content.modules(identity.language)
    read = await context.services.learning.read_modules(identity)
    return sum(1 for m in modules if m.id in read), len(modules)


async def _menu(update: Update, context: BotContext) -> tuple[str, InlineKeyboardMarkup]:
    identity = await context.identity(update)
    modules = context.services.content.modules(identity.language)
    read = await context.services.learning.read_modules(identity)
    progress = ""
    if _stored(identity):
        progress = await text(update, context, "learn.progress", read=sum(1 for m in modules if m.id in read),
                              total=len(modules))
    mark = await text(update, context, "learn.read_mark")
    rows = [
        [(f"{mark} {m.title}" if m.id in read else m.title, packer(update, context)(PAGE, m.id, 1))]
        for m in modules
    ]
    body = await text(update, context, "learn.menu", progress=progress)
    return body, keyboard(*rows)


async def _page_text(update: Update, context: BotContext, module: Module, page: int) -> str:
    header = await text(update, context, "learn.page_header", title=module.title)
    counter = await text(update, context, "learn.page_counter", page=page, pages=len(module.pages))
    parts = [header, module.pages[page - 1]]
    if page == len(module.pages) and module.sources:
        heading = await text(update, context, "learn.sources_heading")
        parts.append("\n".join([heading, *(source.citation() for source in module.sources)]))
    parts.append(f"<i>{counter}</i>")
    return "\n\n".join(parts)


async def _page_buttons(update: Update, context: BotContext, module: Module, page: int) -> InlineKeyboardMarkup:
    moves: list[tuple[str, str]] = []
    if page > 1:
        moves.append((await text(update, context, "learn.back_button"), packer(update, context)(PAGE, module.id, page - 1)))
    if page < len(module.pages):
        moves.append((await text(update, context, "learn.next_button"), packer(update, context)(PAGE, module.id, page + 1)))
    else:
        moves.append((await text(update, context, "learn.done_button"), packer(update, context)(DONE, module.id, page)))
    return keyboard(
        moves,
        [(await text(update, context, "learn.ask_button"), packer(update, context)(ASK, module.id, page))],
        [(await text(update, context, "learn.menu_button"), packer(update, context)(MENU))],
    )


async def _menu_button(update: Update, context: BotContext) -> InlineKeyboardMarkup:
    return keyboard([(await text(update, context, "learn.menu_button"), packer(update, context)(MENU))])


async def _edit(update: Update, body: str, markup: InlineKeyboardMarkup) -> None:
    try:
        await query_of(update).edit_message_text(body, reply_markup=markup)
    except BadRequest as exc:
        if "not modified" in str(exc).lower():  # the same page pressed twice: nothing to change
            return
        # The message can no longer be edited (too old, or gone): show it as a new one.
        await update.get_bot().send_message(chat_id_of(update), body, reply_markup=markup)


# -- payloads ---------------------------------------------------------------------------------


async def _args(update: Update, context: BotContext, action: str) -> list[str] | None:
    """The arguments of a payload signed for this presser and ``action``; a forged one is
    refused (and audited): None."""
    try:
        return context.services.callbacks.unpack(user_id_of(update), query_of(update).data, action)
    except InvalidPayload:
        await refuse(update, context, what=f"button:{action}", reason="payload")
        return None


async def _module_and_page(update: Update, context: BotContext, action: str) -> tuple[Module, int] | None:
    """The module and page a signed button names. When the module no longer exists (content
    changed since the button was made) or the payload is malformed: the menu again, None."""
    args = await _args(update, context, action)
    if args is None:
        return None
    identity = await context.identity(update)
    try:
        module = context.services.content.module(args[0], identity.language)
        page = int(args[1])
    except (ContentError, IndexError, ValueError):
        await query_of(update).answer(await text(update, context, "fallback.stale_button"))
        body, markup = await _menu(update, context)
        await _edit(update, body, markup)
        return None
    return module, min(max(page, 1), len(module.pages))


def build() -> list[BaseHandler]:
    return [
        CommandHandler("learn", learn),
        CallbackQueryHandler(show_page, pattern=CallbackCodec.pattern(PAGE)),
        CallbackQueryHandler(show_menu, pattern=CallbackCodec.pattern(MENU)),
        CallbackQueryHandler(finish_module, pattern=CallbackCodec.pattern(DONE)),
        CallbackQueryHandler(ask_therapist, pattern=CallbackCodec.pattern(ASK)),
    ]
