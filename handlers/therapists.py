"""/therapists (staff and admins) and /staff (admins): the practice's people.

    /therapists ──► list ──[Invite a therapist]──► link + QR code
                      └──[a therapist]──► page ──[Deactivate]──► confirm ──[Yes]──► deactivated
                                             └──[Move clients]──► choose a therapist ──► moved
    /staff ──► list ──[Invite a staff member]──► link + QR code

Staff never see clinical data: therapists are listed with counts, never with their
clients' aliases. Buttons carry signed payloads; the service re-checks the presser's role
and the therapist's state at the moment of use. None of this waits for text, so these are
plain handlers, not a conversation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from telegram import InlineKeyboardMarkup, Update
from telegram.ext import BaseHandler, CallbackQueryHandler, CommandHandler

from bot.callbacks import CallbackCodec
from bot.context import BotContext
from bot.db.models import InviteKind, Role
from bot.services.invites import NotAllowed
from bot.services.clinic import TherapistSummary
from handlers.access import refuse, requires
from handlers.common import edit_in_place, keyboard, packer, signed_ids, tell_directly, text
from handlers.invite import send_invite
from handlers.parts import chat_id_of, query_of

# Signed button actions (short: payloads hold at most 64 bytes, some carry two ids).
LIST = "th.list"
OPEN = "th.open"
INVITE = "th.invite"
DEACTIVATE = "th.deact"
DEACTIVATE_OK = "th.deact_ok"
MOVE = "th.move"
MOVE_TO = "th.move_to"
STAFF_INVITE = "st.invite"


async def _name(update: Update, context: BotContext, therapist: TherapistSummary) -> str:
    return therapist.display_name or await text(update, context, "therapists.no_name")


async def _refused(update: Update, context: BotContext, action: str, refused: NotAllowed) -> None:
    """A refusal by the service: "role"/"ownership" are access denials; a changed state
    (deactivated meanwhile, ...) is also answered as not available, and audited."""
    await refuse(update, context, what=f"button:{action}", reason=refused.reason)


# -- the list ------------------------------------------------------------------------------


@requires(Role.STAFF)
async def show_therapists(update: Update, context: BotContext) -> None:
    try:
        body, markup = await _list(update, context)
    except NotAllowed as refused:
        await refuse(update, context, what="/therapists", reason=refused.reason)
        return
    await context.bot.send_message(chat_id_of(update), body, reply_markup=markup)


@requires(Role.STAFF)
async def back_to_list(update: Update, context: BotContext) -> None:
    if await signed_ids(update, context, LIST) is None:
        return
    try:
        body, markup = await _list(update, context)
    except NotAllowed as refused:
        await _refused(update, context, LIST, refused)
        return
    await query_of(update).answer()
    await edit_in_place(update, body, reply_markup=markup)


async def _list(update: Update, context: BotContext) -> tuple[str, InlineKeyboardMarkup]:
    identity = await context.identity(update)
    therapists = await context.services.clinic.therapists(identity)
    invite_row = [(await text(update, context, "therapists.invite_button"), packer(update, context)(INVITE))]
    if not therapists:
        return await text(update, context, "therapists.empty"), keyboard(invite_row)
    lines = [await text(update, context, "therapists.list_title", count=len(therapists)), ""]
    buttons: list[list[tuple[str, str]]] = []
    for therapist in therapists:
        name = await _name(update, context, therapist)
        if therapist.active:
            lines.append(await text(update, context, "therapists.row_active", name=name, clients=therapist.clients))
        else:
            lines.append(
                await text(update, context, "therapists.row_inactive", name=name, waiting=therapist.awaiting_move)
            )
        buttons.append([(name, packer(update, context)(OPEN, therapist.person_id))])
    return "\n".join(lines), keyboard(*buttons, invite_row)


# -- one therapist -------------------------------------------------------------------------


async def _therapist_or_refuse(update: Update, context: BotContext, action: str) -> TherapistSummary | None:
    ids = await signed_ids(update, context, action)
    if ids is None:
        return None
    identity = await context.identity(update)
    try:
        return await context.services.clinic.therapist(identity, ids[0])
    except NotAllowed as refused:
        await _refused(update, context, action, refused)
        return None


@requires(Role.STAFF)
async def open_therapist(update: Update, context: BotContext) -> None:
    therapist = await _therapist_or_refuse(update, context, OPEN)
    if therapist is None:
        return
    await query_of(update).answer()
    await _show_page(update, context, therapist)


async def _show_page(update: Update, context: BotContext, therapist: TherapistSummary) -> None:
    status = "therapists.status_active" if therapist.active else "therapists.status_inactive"
    lines = [
        await text(
            update, context, "therapists.page", name=await _name(update, context, therapist),
            status=await text(update, context, status), clients=therapist.clients,
        )
    ]
    rows: list[list[tuple[str, str]]] = []
    if therapist.active:
        rows.append([(await text(update, context, "therapists.deactivate_button"),
                      packer(update, context)(DEACTIVATE, therapist.person_id))])
    elif therapist.awaiting_move:
        lines.append(await text(update, context, "therapists.page_waiting", waiting=therapist.awaiting_move))
        rows.append([(await text(update, context, "therapists.move_button"),
                      packer(update, context)(MOVE, therapist.person_id))])
    rows.append([(await text(update, context, "therapists.back_button"), packer(update, context)(LIST))])
    await edit_in_place(update, "\n".join(lines), reply_markup=keyboard(*rows))


@requires(Role.STAFF)
async def invite_therapist(update: Update, context: BotContext) -> None:
    if await signed_ids(update, context, INVITE) is None:
        return
    if await send_invite(update, context, InviteKind.THERAPIST) is not None:  # else refused
        await query_of(update).answer()


# -- deactivate ----------------------------------------------------------------------------


@requires(Role.STAFF)
async def confirm_deactivate(update: Update, context: BotContext) -> None:
    therapist = await _therapist_or_refuse(update, context, DEACTIVATE)
    if therapist is None:
        return
    await query_of(update).answer()
    markup = keyboard(
        [(await text(update, context, "therapists.deactivate_yes_button"),
          packer(update, context)(DEACTIVATE_OK, therapist.person_id))],
        [(await text(update, context, "therapists.deactivate_no_button"),
          packer(update, context)(OPEN, therapist.person_id))],
    )
    body = await text(
        update, context, "therapists.deactivate_confirm",
        name=await _name(update, context, therapist), clients=therapist.clients,
    )
    await edit_in_place(update, body, reply_markup=markup)


@requires(Role.STAFF)
async def deactivate(update: Update, context: BotContext) -> None:
    therapist = await _therapist_or_refuse(update, context, DEACTIVATE_OK)
    if therapist is None:
        return
    identity = await context.identity(update)
    try:
        done = await context.services.clinic.deactivate_therapist(identity, therapist.person_id)
    except NotAllowed as refused:
        await _refused(update, context, DEACTIVATE_OK, refused)
        return
    await query_of(update).answer()
    # The clients were told by the service, in the same transaction. The therapist was
    # made inactive just now, so the outbox would not serve them: told directly.
    await tell_directly(context, done.therapist.telegram_id, done.therapist.language, "therapists.deactivated_notice")
    body = await text(
        update, context, "therapists.deactivated",
        name=await _name(update, context, therapist), clients=len(done.clients),
    )
    await edit_in_place(
        update, body, reply_markup=keyboard([(await text(update, context, "therapists.back_button"), packer(update, context)(LIST))])
    )


# -- move clients --------------------------------------------------------------------------


@requires(Role.STAFF)
async def choose_target(update: Update, context: BotContext) -> None:
    therapist = await _therapist_or_refuse(update, context, MOVE)
    if therapist is None:
        return
    identity = await context.identity(update)
    try:
        targets = await context.services.clinic.move_targets(identity, therapist.person_id)
    except NotAllowed as refused:
        await _refused(update, context, MOVE, refused)
        return
    await query_of(update).answer()
    back = [(await text(update, context, "therapists.back_button"), packer(update, context)(LIST))]
    if not targets:
        await edit_in_place(
            update, await text(update, context, "therapists.move_none"), reply_markup=keyboard(back)
        )
        return
    rows = [
        [(await _name(update, context, target), packer(update, context)(MOVE_TO, therapist.person_id, target.person_id))]
        for target in targets
    ]
    body = await text(
        update, context, "therapists.move_choose",
        name=await _name(update, context, therapist), waiting=therapist.awaiting_move,
    )
    await edit_in_place(update, body, reply_markup=keyboard(*rows, back))


@requires(Role.STAFF)
async def move(update: Update, context: BotContext) -> None:
    ids = await signed_ids(update, context, MOVE_TO)
    if ids is None or len(ids) != 2:
        return
    identity = await context.identity(update)
    try:
        done = await context.services.clinic.move_clients(identity, ids[0], ids[1])
    except NotAllowed as refused:
        await _refused(update, context, MOVE_TO, refused)
        return
    await query_of(update).answer()
    name = done.to_display_name or await text(update, context, "therapists.no_name")
    # The clients and the therapist were told by the service, in the same transaction.
    body = await text(update, context, "therapists.moved", name=name, clients=len(done.clients))
    await edit_in_place(
        update, body, reply_markup=keyboard([(await text(update, context, "therapists.back_button"), packer(update, context)(LIST))])
    )


# -- /staff (admins) -----------------------------------------------------------------------


@requires(Role.ADMIN)
async def show_staff(update: Update, context: BotContext) -> None:
    identity = await context.identity(update)
    try:
        staff = await context.services.clinic.staff(identity)
    except NotAllowed as refused:
        await refuse(update, context, what="/staff", reason=refused.reason)
        return
    invite_row = [(await text(update, context, "staff.invite_button"), packer(update, context)(STAFF_INVITE))]
    if not staff:
        body = await text(update, context, "staff.empty")
    else:
        lines = [await text(update, context, "staff.list_title", count=len(staff)), ""]
        for member in staff:
            key = "staff.row" if member.active else "staff.row_inactive"
            name = member.display_name or await text(update, context, "therapists.no_name")
            lines.append(await text(update, context, key, name=name))
        body = "\n".join(lines)
    await context.bot.send_message(chat_id_of(update), body, reply_markup=keyboard(invite_row))


@requires(Role.ADMIN)
async def invite_staff(update: Update, context: BotContext) -> None:
    if await signed_ids(update, context, STAFF_INVITE) is None:
        return
    if await send_invite(update, context, InviteKind.STAFF) is not None:  # else refused
        await query_of(update).answer()


def build() -> list[BaseHandler]:
    def button(callback: Callable[..., Any], action: str) -> CallbackQueryHandler:
        return CallbackQueryHandler(callback, pattern=CallbackCodec.pattern(action))

    return [
        CommandHandler("therapists", show_therapists),
        CommandHandler("staff", show_staff),
        button(back_to_list, LIST),
        button(open_therapist, OPEN),
        button(invite_therapist, INVITE),
        button(confirm_deactivate, DEACTIVATE),
        button(deactivate, DEACTIVATE_OK),
        button(choose_target, MOVE),
        button(move, MOVE_TO),
        button(invite_staff, STAFF_INVITE),
    ]
