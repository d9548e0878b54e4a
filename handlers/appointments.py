"""/appointments: a therapist's (or staff's) appointments with clients, a client's own, and the
buttons under a delivered appointment reminder.

    therapist:  /appointments ──► list ──[an appointment]──► page ──[Move]──► MOVE (typed time) ──► moved
                                   │                           ├──[Cancel]──► confirm ──[Yes]──► cancelled
                                   │                           └──[‹ All appointments]──► list
                                   └──[+ New appointment]──► [a client] ──► KIND [preparation, ImRS,
                                        evaluation, other] ──► TIME (typed) ──► made
    staff, admins: /appointments ──► [a therapist] ──► that therapist's list, as above
    client:     /appointments ──► their coming appointments, in their own zone (no buttons)

    under a delivered reminder: [I'll be there] [I need to reschedule] (the therapist is told)

Times are typed in the therapist's zone (bot.services.appointments.parse_local, strict formats);
a time that cannot be read, has passed, is too far ahead, does not exist or exists twice at a
DST change, or overlaps another appointment is explained and asked again, in the same step.
Buttons that name a record (a therapist, a client, an appointment, a delivered reminder) carry
signed payloads made for the presser (bot.callbacks); the service checks, at the moment of
use, that the asker may manage that client (a therapist only their own linked clients). Staff
see aliases and times only: an appointment holds nothing clinical, and no check-in or
readiness is shown here. What is being made is a typed draft (``AppointmentDraft``) kept by
bot.flows, so a restart or a pause (/help) loses nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

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
from bot.db.models import AppointmentKind, AppointmentResponse, Role
from bot.delivery.buttons import APPOINTMENT_ATTENDING as ATTENDING
from bot.delivery.buttons import APPOINTMENT_RESCHEDULE as RESCHEDULE
from bot.delivery.rendering import local_moment
from bot.flows import FlowHooks, TypedDrafts
from bot.services.appointments import AppointmentError, AppointmentView, parse_naive
from bot.services.invites import NotAllowed
from handlers.access import refuse, requires
from handlers.common import (
    conversation,
    edit_in_place,
    keyboard,
    packer,
    say,
    settle,
    settle_again_ok,
    signed_ids,
    text,
    use_the_buttons,
)
from handlers.preferences import stored_identity
from handlers.parts import button_match, chat_id_of, message_of, query_of

FLOW = "appointments"
KIND_STATE = "appointments_kind"
TIME_STATE = "appointments_time"
MOVE_STATE = "appointments_move"

MANAGERS = (Role.THERAPIST, Role.STAFF)  # admins may do what staff do

# Signed actions (short: a payload holds at most 64 bytes).
THERAPIST = "ap.th"  # staff: one therapist's appointments
LIST = "ap.list"  # a therapist's list again
NEW = "ap.new"  # + New appointment (the therapist's id)
CLIENT = "ap.client"  # the client of a new appointment
OPEN = "ap.open"
MOVE = "ap.move"
CANCEL = "ap.cancel"
CANCEL_OK = "ap.cancel_ok"

KIND_BUTTON = re.compile(rf"^apk:({'|'.join(k.value for k in AppointmentKind)})$")
MOST_SHOWN = 20  # appointments listed with a button each


@dataclass
class AppointmentDraft:
    """What has been chosen so far: a new appointment's client (and its therapist and zone)
    and kind, or the appointment being moved."""

    client_id: int | None = None
    therapist_id: int | None = None
    zone: str | None = None
    kind: str | None = None
    appointment_id: int | None = None


_drafts = TypedDrafts(FLOW, AppointmentDraft)
_draft, _keep, _drop = _drafts.get, _drafts.keep, _drafts.drop


# -- words -------------------------------------------------------------------------------------


async def _when(update: Update, context: BotContext, moment: datetime, zone: str) -> str:
    identity = await context.identity(update)
    return local_moment(context.services.content, identity.language, zone, moment)


async def _kind(update: Update, context: BotContext, kind: AppointmentKind | str) -> str:
    return await text(update, context, f"appointments.kinds.{AppointmentKind(kind).value}")


async def _alias(update: Update, context: BotContext, alias: str | None) -> str:
    return alias or await text(update, context, "appointments.no_alias")


async def _short(appointment: AppointmentView, zone: str) -> str:
    return appointment.starts_at.astimezone(ZoneInfo(zone)).strftime("%d-%m %H:%M")


async def _formats(update: Update, context: BotContext, zone: str) -> str:
    """The accepted formats, shown with a date a week ahead as the example."""
    example = (datetime.now(ZoneInfo(zone)) + timedelta(days=7)).replace(hour=14, minute=30)
    return await text(
        update, context, "appointments.formats", zone=zone,
        iso=example.strftime("%Y-%m-%d %H:%M"), dashes=example.strftime("%d-%m-%Y %H:%M"),
        slashes=example.strftime("%d/%m/%Y %H:%M"), dots=example.strftime("%d.%m.%Y %H:%M"),
    )


# -- /appointments -------------------------------------------------------------------------------


@requires(Role.THERAPIST, Role.STAFF, Role.CLIENT)
async def show(update: Update, context: BotContext) -> int:
    """/appointments: by role, the client's own list, the therapist's list, or (staff) the
    therapists to choose from."""
    await _drop(update, context)
    identity = await stored_identity(update, context)
    try:
        if identity.role is Role.CLIENT:
            await _show_own(update, context)
        elif identity.role is Role.THERAPIST:
            assert identity.person_id is not None  # a therapist is registered
            body, markup = await _list(update, context, identity.person_id)
            await context.bot.send_message(chat_id_of(update), body, reply_markup=markup)
        else:
            await _show_therapists(update, context)
    except NotAllowed as exc:  # e.g. a therapist deactivated by the practice
        await refuse(update, context, what="/appointments", reason=exc.reason)
    return ConversationHandler.END


async def _show_own(update: Update, context: BotContext) -> None:
    """A client's coming appointments, in their own zone; nothing to press."""
    identity = await context.identity(update)
    appointments = await context.services.appointments.upcoming(identity)
    if not appointments:
        await say(update, context, "appointments.client_empty")
        return
    lines = [await text(update, context, "appointments.client_title", zone=identity.timezone)]
    for appointment in appointments:
        lines.append(await text(
            update, context, "appointments.client_row",
            kind=await _kind(update, context, appointment.kind),
            when=await _when(update, context, appointment.starts_at, identity.timezone),
            therapist=appointment.therapist_name or await text(update, context, "appointments.no_therapist_name"),
        ))
    await context.bot.send_message(chat_id_of(update), "\n".join(lines))


async def _show_therapists(update: Update, context: BotContext) -> None:
    identity = await context.identity(update)
    therapists = await context.services.appointments.therapists(identity)
    if not therapists:
        await say(update, context, "appointments.no_therapists")
        return
    pack = packer(update, context)
    rows = [
        [(t.name or await text(update, context, "appointments.no_therapist_name"), pack(THERAPIST, t.person_id))]
        for t in therapists
    ]
    await say(update, context, "appointments.choose_therapist", reply_markup=keyboard(*rows))


async def _list(update: Update, context: BotContext, therapist_id: int) -> tuple[str, InlineKeyboardMarkup]:
    """A therapist's coming appointments (in the therapist's zone) with a button each, and
    + New appointment."""
    identity = await context.identity(update)
    appointments = await context.services.appointments.upcoming(identity, therapist_id)
    zone = appointments[0].timezone if appointments else identity.timezone
    if identity.role is Role.THERAPIST:
        zone = identity.timezone
    pack = packer(update, context)
    rows: list[list[tuple[str, str]]] = []
    if appointments:
        lines = [await text(update, context, "appointments.title", zone=zone)]
        for appointment in appointments[:MOST_SHOWN]:
            alias = await _alias(update, context, appointment.client_alias)
            lines.append(await text(
                update, context, "appointments.row",
                when=await _when(update, context, appointment.starts_at, zone),
                alias=alias, kind=await _kind(update, context, appointment.kind),
            ))
            rows.append([(f"{await _short(appointment, zone)} · {alias}", pack(OPEN, appointment.id))])
        if len(appointments) > MOST_SHOWN:
            lines.append(await text(update, context, "appointments.more", count=len(appointments) - MOST_SHOWN))
        body = "\n".join(lines)
    else:
        body = await text(update, context, "appointments.empty")
    rows.append([(await text(update, context, "appointments.new_button"), pack(NEW, therapist_id))])
    return body, keyboard(*rows)


async def _refused(update: Update, context: BotContext, action: str, exc: NotAllowed) -> int:
    await _drop(update, context)
    await refuse(update, context, what=f"button:{action}", reason=exc.reason)
    return ConversationHandler.END


@requires(*MANAGERS)
async def therapist_chosen(update: Update, context: BotContext) -> int:
    """Staff chose a therapist: that therapist's list."""
    ids = await signed_ids(update, context, THERAPIST)
    if not ids:
        return ConversationHandler.END
    try:
        body, markup = await _list(update, context, ids[0])
    except NotAllowed as exc:
        return await _refused(update, context, THERAPIST, exc)
    await settle(update)
    await context.bot.send_message(chat_id_of(update), body, reply_markup=markup)
    return ConversationHandler.END


@requires(*MANAGERS)
async def back_to_list(update: Update, context: BotContext) -> int:
    ids = await signed_ids(update, context, LIST)
    if not ids:
        return ConversationHandler.END
    try:
        body, markup = await _list(update, context, ids[0])
    except NotAllowed as exc:
        return await _refused(update, context, LIST, exc)
    await query_of(update).answer()
    await edit_in_place(update, body, reply_markup=markup)
    return ConversationHandler.END


# -- one appointment: move, cancel ---------------------------------------------------------------


async def _editable(update: Update, context: BotContext, action: str) -> AppointmentView | None:
    """The appointment a signed button names, if the presser may change it now (else said)."""
    ids = await signed_ids(update, context, action)
    if not ids:
        return None
    identity = await context.identity(update)
    try:
        return await context.services.appointments.get(identity, ids[0])
    except NotAllowed as exc:
        await _refused(update, context, action, exc)
    except AppointmentError as exc:
        await settle(update)
        await say(update, context, f"appointments.gone.{_gone(exc.reason)}")
    return None


def _gone(reason: str) -> str:
    return reason if reason in ("cancelled", "past") else "not_found"


@requires(*MANAGERS)
async def open_appointment(update: Update, context: BotContext) -> int:
    appointment = await _editable(update, context, OPEN)
    if appointment is None:
        return ConversationHandler.END
    await query_of(update).answer()
    pack = packer(update, context)
    markup = keyboard(
        [
            (await text(update, context, "appointments.move_button"), pack(MOVE, appointment.id)),
            (await text(update, context, "appointments.cancel_button"), pack(CANCEL, appointment.id)),
        ],
        [(await text(update, context, "appointments.back_button"), pack(LIST, appointment.therapist_id))],
    )
    body = await text(update, context, "appointments.page", **await _page_words(update, context, appointment))
    await edit_in_place(update, body, reply_markup=markup)
    return ConversationHandler.END


async def _page_words(update: Update, context: BotContext, appointment: AppointmentView) -> dict[str, str]:
    return {
        "alias": await _alias(update, context, appointment.client_alias),
        "kind": await _kind(update, context, appointment.kind),
        "when": await _when(update, context, appointment.starts_at, appointment.timezone),
        "zone": appointment.timezone,
        "answer": await text(
            update, context,
            f"appointments.answers.{appointment.client_response.value if appointment.client_response else 'none'}",
        ),
    }


@requires(*MANAGERS)
async def ask_move(update: Update, context: BotContext) -> str | int:
    appointment = await _editable(update, context, MOVE)
    if appointment is None:
        return ConversationHandler.END
    # The service reads the new time in the therapist's zone as it is now, which may not be
    # the zone the appointment was made in: ask in that zone.
    try:
        zone = (await context.services.appointments.booking(await context.identity(update), appointment.client_id)).zone
    except NotAllowed as exc:
        return await _refused(update, context, MOVE, exc)
    except AppointmentError:
        await settle(update)
        await say(update, context, "appointments.errors.not_a_client")
        return ConversationHandler.END
    await settle(update)
    await _keep(update, context, AppointmentDraft(appointment_id=appointment.id, zone=zone))
    words = await _page_words(update, context, appointment) | {
        "when": await _when(update, context, appointment.starts_at, zone), "zone": zone,
    }
    await context.bot.send_message(
        chat_id_of(update),
        await text(update, context, "appointments.ask_move", **words) + "\n\n" + await _formats(update, context, zone),
    )
    return MOVE_STATE


@requires(*MANAGERS)
async def move_typed(update: Update, context: BotContext) -> str | int:
    draft = await _draft(update, context)
    if draft is None or draft.appointment_id is None:
        await say(update, context, "appointments.lost")
        return ConversationHandler.END
    identity = await context.identity(update)
    typed = message_of(update).text or ""
    try:
        moved = await context.services.appointments.move(identity, draft.appointment_id, typed)
    except NotAllowed as exc:
        return await _refused(update, context, "appointments:move", exc)
    except AppointmentError as exc:
        if exc.reason == "past" and await _begun(update, context, draft.appointment_id):
            return ConversationHandler.END
        return await _bad_time(update, context, exc, draft, typed, MOVE_STATE)
    await _drop(update, context)
    await say(
        update, context, "appointments.moved",
        when=await _when(update, context, moved.starts_at, moved.timezone), zone=moved.timezone,
    )
    return ConversationHandler.END


async def _begun(update: Update, context: BotContext, appointment_id: int) -> bool:
    """The service says "past" both for a typed time that has passed and for an appointment
    that began while the new time was being typed: the latter is said (and the move ends)."""
    try:
        await context.services.appointments.get(await context.identity(update), appointment_id)
    except NotAllowed as exc:
        await _refused(update, context, "appointments:move", exc)
        return True
    except AppointmentError as exc:
        await _drop(update, context)
        await say(update, context, f"appointments.gone.{_gone(exc.reason)}")
        return True
    return False


@requires(*MANAGERS)
async def confirm_cancel(update: Update, context: BotContext) -> int:
    appointment = await _editable(update, context, CANCEL)
    if appointment is None:
        return ConversationHandler.END
    await query_of(update).answer()
    pack = packer(update, context)
    markup = keyboard(
        [(await text(update, context, "appointments.cancel_yes_button"), pack(CANCEL_OK, appointment.id))],
        [(await text(update, context, "appointments.cancel_no_button"), pack(OPEN, appointment.id))],
    )
    body = await text(update, context, "appointments.cancel_confirm", **await _page_words(update, context, appointment))
    await edit_in_place(update, body, reply_markup=markup)
    return ConversationHandler.END


@requires(*MANAGERS)
async def cancel(update: Update, context: BotContext) -> int:
    ids = await signed_ids(update, context, CANCEL_OK)
    if not ids:
        return ConversationHandler.END
    identity = await context.identity(update)
    try:
        cancelled = await context.services.appointments.cancel(identity, ids[0])
    except NotAllowed as exc:
        return await _refused(update, context, CANCEL_OK, exc)
    except AppointmentError as exc:
        await settle(update)
        await say(update, context, f"appointments.gone.{_gone(exc.reason)}")
        return ConversationHandler.END
    await query_of(update).answer()
    pack = packer(update, context)
    await edit_in_place(
        update, await text(update, context, "appointments.cancelled",
                   when=await _when(update, context, cancelled.starts_at, cancelled.timezone)),
        reply_markup=keyboard([(await text(update, context, "appointments.back_button"), pack(LIST, cancelled.therapist_id))]),
    )
    return ConversationHandler.END


# -- a new appointment ---------------------------------------------------------------------------


@requires(*MANAGERS)
async def new(update: Update, context: BotContext) -> int:
    """+ New appointment: choose the client (the therapist's linked clients)."""
    ids = await signed_ids(update, context, NEW)
    if not ids:
        return ConversationHandler.END
    identity = await context.identity(update)
    try:
        clients = await context.services.appointments.clients(identity, ids[0])
    except NotAllowed as exc:
        return await _refused(update, context, NEW, exc)
    await settle(update)
    if not clients:
        await say(update, context, "appointments.no_clients")
        return ConversationHandler.END
    pack = packer(update, context)
    rows = [[(await _alias(update, context, c.name), pack(CLIENT, c.person_id))] for c in clients]
    await say(update, context, "appointments.choose_client", reply_markup=keyboard(*rows))
    return ConversationHandler.END


@requires(*MANAGERS)
async def client_chosen(update: Update, context: BotContext) -> str | int:
    ids = await signed_ids(update, context, CLIENT)
    if not ids:
        return ConversationHandler.END
    identity = await context.identity(update)
    try:
        booking = await context.services.appointments.booking(identity, ids[0])
    except NotAllowed as exc:
        return await _refused(update, context, CLIENT, exc)
    except AppointmentError:
        await settle(update)
        await say(update, context, "appointments.errors.not_a_client")
        return ConversationHandler.END
    await settle(update)
    await _keep(update, context, AppointmentDraft(
        client_id=booking.client_id, therapist_id=booking.therapist_id, zone=booking.zone,
    ))
    rows = [[(await _kind(update, context, kind), f"apk:{kind.value}")] for kind in AppointmentKind]
    await say(
        update, context, "appointments.ask_kind", alias=await _alias(update, context, booking.alias),
        reply_markup=keyboard(*rows),
    )
    return KIND_STATE


@requires(*MANAGERS)
async def kind_chosen(update: Update, context: BotContext) -> str | int:
    draft = await _draft(update, context)
    await settle(update)
    if draft is None or draft.client_id is None or draft.zone is None:
        await say(update, context, "appointments.lost")
        return ConversationHandler.END
    draft.kind = button_match(KIND_BUTTON, update).group(1)
    await _keep(update, context, draft)
    await context.bot.send_message(
        chat_id_of(update),
        await text(update, context, "appointments.ask_time", kind=await _kind(update, context, draft.kind))
        + "\n\n" + await _formats(update, context, draft.zone),
    )
    return TIME_STATE


@requires(*MANAGERS)
async def time_typed(update: Update, context: BotContext) -> str | int:
    draft = await _draft(update, context)
    if draft is None or draft.client_id is None or draft.kind is None:
        await say(update, context, "appointments.lost")
        return ConversationHandler.END
    identity = await context.identity(update)
    typed = message_of(update).text or ""
    try:
        made = await context.services.appointments.create(identity, draft.client_id, typed, AppointmentKind(draft.kind))
    except NotAllowed as exc:
        return await _refused(update, context, "appointments:create", exc)
    except AppointmentError as exc:
        return await _bad_time(update, context, exc, draft, typed, TIME_STATE)
    await _drop(update, context)
    await say(
        update, context, "appointments.made",
        kind=await _kind(update, context, made.kind),
        when=await _when(update, context, made.starts_at, made.timezone), zone=made.timezone,
    )
    return ConversationHandler.END


#: Refusals that a new time can put right: explained, then asked again in the same step.
RETRY = frozenset({"unparseable", "past", "too_far", "nonexistent", "ambiguous", "overlap"})


async def _bad_time(
    update: Update, context: BotContext, exc: AppointmentError, draft: AppointmentDraft, typed: str, state: str
) -> str | int:
    """Say why the typed time cannot be used; ask again (same step) when another time helps."""
    zone = draft.zone or (await context.identity(update)).timezone
    if exc.reason not in RETRY:
        await _drop(update, context)
        await say(update, context, f"appointments.gone.{_gone(exc.reason)}"
                  if exc.reason in ("cancelled", "not_found") else "appointments.errors.not_a_client")
        return ConversationHandler.END
    params: dict[str, str] = {"zone": zone}
    naive = parse_naive(typed)
    if naive is not None:
        params |= {"date": naive.strftime("%d-%m-%Y"), "time": naive.strftime("%H:%M")}
    if exc.conflict is not None:
        params |= {
            "when": await _when(update, context, exc.conflict.starts_at, zone),
            "until": exc.conflict.ends_at.astimezone(ZoneInfo(zone)).strftime("%H:%M"),
        }
    await context.bot.send_message(
        chat_id_of(update),
        await text(update, context, f"appointments.errors.{exc.reason}", **params)
        + "\n\n" + await _formats(update, context, zone),
    )
    return state


# -- under a delivered reminder --------------------------------------------------------------------


async def _respond(update: Update, context: BotContext, action: str, response: AppointmentResponse) -> None:
    ids = await signed_ids(update, context, action)
    if not ids:
        return
    identity = await context.identity(update)
    try:
        await context.services.appointments.respond(identity, ids[0], response)
    except NotAllowed:
        await refuse(update, context, what=f"button:{action}", reason="ownership")
        return
    except AppointmentError as exc:
        await settle_again_ok(update)
        reason = exc.reason if exc.reason in ("cancelled", "past", "moved") else "not_found"
        await say(update, context, f"appointments.response_gone.{reason}")
        return
    await settle_again_ok(update)
    await say(update, context, f"appointments.response.{response.value}")


@requires(Role.CLIENT)
async def attending(update: Update, context: BotContext) -> None:
    await _respond(update, context, ATTENDING, AppointmentResponse.ATTENDING)


@requires(Role.CLIENT)
async def reschedule(update: Update, context: BotContext) -> None:
    await _respond(update, context, RESCHEDULE, AppointmentResponse.RESCHEDULE)


def build(fallbacks: list[BaseHandler], free_text: filters.BaseFilter) -> ConversationHandler:
    buttons: list[BaseHandler] = [
        CallbackQueryHandler(therapist_chosen, pattern=CallbackCodec.pattern(THERAPIST)),
        CallbackQueryHandler(back_to_list, pattern=CallbackCodec.pattern(LIST)),
        CallbackQueryHandler(new, pattern=CallbackCodec.pattern(NEW)),
        CallbackQueryHandler(client_chosen, pattern=CallbackCodec.pattern(CLIENT)),
        CallbackQueryHandler(open_appointment, pattern=CallbackCodec.pattern(OPEN)),
        CallbackQueryHandler(ask_move, pattern=CallbackCodec.pattern(MOVE)),
        CallbackQueryHandler(confirm_cancel, pattern=CallbackCodec.pattern(CANCEL)),
        CallbackQueryHandler(cancel, pattern=CallbackCodec.pattern(CANCEL_OK)),
    ]
    return conversation(
        FLOW,
        entry_points=[CommandHandler("appointments", show), *buttons],
        states={
            KIND_STATE: [
                CallbackQueryHandler(kind_chosen, pattern=KIND_BUTTON),
                MessageHandler(free_text, use_the_buttons),
            ],
            TIME_STATE: [MessageHandler(free_text, time_typed)],
            MOVE_STATE: [MessageHandler(free_text, move_typed)],
        },
        fallbacks=fallbacks,
        hooks=FlowHooks(keeps_draft=True),
    )


def build_buttons() -> list[BaseHandler]:
    """I'll be there / I need to reschedule under a delivered appointment reminder: at any time."""
    return [
        CallbackQueryHandler(attending, pattern=CallbackCodec.pattern(ATTENDING)),
        CallbackQueryHandler(reschedule, pattern=CallbackCodec.pattern(RESCHEDULE)),
    ]
