"""/broadcast and /broadcasts: staff (and admins) send one message to many clients.

    /broadcast ──► TEXT (typed, or [a ready-made text]) ──► AUDIENCE [all clients | one
                   therapist's | preparation or ImRS session soon]
                                      ──[one therapist's]──► THERAPIST [a therapist]
                                      ──[session soon]──► DAYS (typed 1-60)
               ──► LANGUAGE [all | English | Dutch] ──► preview per language, count, clinical-word
                   warning ──► DECIDE [Send now | Send later | Discard]
               ──[Send later]──► TIME (typed, the sender's zone) ──► CONFIRM [Yes | No]
               ──[Send now]────────────────────────────────────────► CONFIRM [Yes | No]
               ──[Yes]──► a progress message, edited while it is sent (``report_progress``)
    /broadcasts ──► scheduled, running and past ones, 10 a page, [Cancel: <when>] under the open
                    ones, [‹ Newer] [Older ›] (the same message, edited)

Bad input (an empty or too long text, formatting Telegram cannot read, an audience nobody in
it can receive, a number of days or a time that cannot be used) is explained and asked again
in the same step. The text is kept encrypted in the database as a draft from the moment it is
typed (bot.services.broadcasts); the conversation's draft holds only its id and the choices. A
ready-made text (``broadcast.templates`` in content/) is kept by name: the preview shows it in
each language as its recipients will read it.
The progress message's figures come from the database, so a restart (or another instance)
brings it up to date where it stopped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from telegram import InlineKeyboardMarkup, Update
from telegram.error import BadRequest, Forbidden
from telegram.ext import (
    Application,
    BaseHandler,
    CallbackQueryHandler,
    CommandHandler,
    ConversationHandler,
    MessageHandler,
    filters,
)

from bot.callbacks import CallbackCodec
from bot.context import SERVICES_KEY, BotContext
from bot.db.models import BroadcastState, Role
from bot.flows import FlowHooks, TypedDrafts
from bot.services.broadcasts import Audience, BroadcastError, BroadcastView, Progress, Reach
from bot.services.invites import NotAllowed
from handlers.access import refuse, requires
from handlers.common import conversation, keyboard, packer, say, settle, signed_ids, text, use_the_buttons
from handlers.parts import button_match, chat_id_of, message_of, query_of

FLOW = "broadcast"
TEXT_STATE = "broadcast_text"
AUDIENCE_STATE = "broadcast_audience"
THERAPIST_STATE = "broadcast_therapist"
DAYS_STATE = "broadcast_days"
LANGUAGE_STATE = "broadcast_language"
DECIDE_STATE = "broadcast_decide"
TIME_STATE = "broadcast_time"
CONFIRM_STATE = "broadcast_confirm"

THERAPIST = "bc.th"  # signed: the therapist whose clients receive it
CANCEL = "bc.cancel"  # signed: cancel a scheduled or running broadcast (/broadcasts)
PAGE = "bc.page"  # signed: another page of /broadcasts (the page number)

TEMPLATE_BUTTON = re.compile(r"^bct:([a-z_]{1,32})$")  # a ready-made text, by name (checked on use)

AUDIENCE_BUTTON = re.compile(r"^bca:(all|therapist|appointments)$")
LANGUAGE_BUTTON = re.compile(r"^bcl:(all|[a-z]{2})$")
DECIDE_BUTTON = re.compile(r"^bcd:(now|later|discard)$")
CONFIRM_BUTTON = re.compile(r"^bcc:(yes|no)$")
PROGRESS_JOB = "broadcast-progress"
SHOWN_KEY = "broadcast_progress_shown"  # bot_data: the text each progress message shows now
TIME_ERRORS = frozenset({"unparseable", "past", "too_far", "nonexistent", "ambiguous"})


@dataclass
class BroadcastDraft:
    """The choices so far: the draft broadcast's id (its text is in the database), the audience
    and, for a later send, the moment (UTC, ISO)."""

    broadcast_id: int
    kind: str | None = None
    therapist_id: int | None = None
    days: int | None = None
    language: str | None = None
    at: str | None = None

    def audience(self) -> Audience:
        return Audience(self.kind or "all", self.therapist_id, self.days, self.language)


_drafts = TypedDrafts(FLOW, BroadcastDraft)
_draft, _keep, _drop = _drafts.get, _drafts.keep, _drafts.drop


async def _lost(update: Update, context: BotContext) -> int:
    await _drop(update, context)
    await say(update, context, "broadcast.lost")
    return ConversationHandler.END


async def _refused(update: Update, context: BotContext, what: str, exc: NotAllowed) -> int:
    await _drop(update, context)
    await refuse(update, context, what=what, reason=exc.reason)
    return ConversationHandler.END


def _example(zone: str) -> str:
    return (datetime.now(ZoneInfo(zone)) + timedelta(days=1)).replace(hour=18, minute=0).strftime("%Y-%m-%d %H:%M")


# -- /broadcast ----------------------------------------------------------------------------------


async def _with_record(update: Update, context: BotContext) -> None:
    """An administrator from the configuration who has no record yet gets one: a broadcast's
    text is encrypted under its sender's key."""
    identity = await context.identity(update)
    if identity.role is Role.ADMIN and identity.person_id is None:
        await context.services.people.register_admin(identity)


async def _ask_text(update: Update, context: BotContext, key: str = "broadcast.ask_text") -> None:
    """``key`` with a button for each ready-made text."""
    identity = await context.identity(update)
    rows = [[(label, f"bct:{name}")] for name, label in context.services.broadcasts.templates(identity.language)]
    await say(update, context, key, reply_markup=keyboard(*rows) if rows else None)


@requires(Role.STAFF)
async def start(update: Update, context: BotContext) -> str:
    await _drop(update, context)
    await _with_record(update, context)
    await _ask_text(update, context)
    return TEXT_STATE


@requires(Role.STAFF)
async def template_chosen(update: Update, context: BotContext) -> str | int:
    await settle(update)
    identity = await context.identity(update)
    name = button_match(TEMPLATE_BUTTON, update).group(1)
    try:
        broadcast_id = await context.services.broadcasts.draft(identity, "", template=name)
    except NotAllowed as exc:
        return await _refused(update, context, "broadcast:template", exc)
    except BroadcastError as exc:
        await _ask_text(update, context, f"broadcast.errors.{exc.reason}")
        return TEXT_STATE
    await _keep(update, context, BroadcastDraft(broadcast_id=broadcast_id))
    await _ask_audience(update, context)
    return AUDIENCE_STATE


@requires(Role.STAFF)
async def text_typed(update: Update, context: BotContext) -> str | int:
    identity = await context.identity(update)
    message = message_of(update)
    # What was typed, as Telegram HTML (bold, italic and links the sender's app made are kept).
    typed = message.text_html if message.entities else (message.text or "")
    try:
        broadcast_id = await context.services.broadcasts.draft(identity, typed)
    except NotAllowed as exc:
        return await _refused(update, context, "broadcast:text", exc)
    except BroadcastError as exc:
        await say(update, context, f"broadcast.errors.{exc.reason}")
        return TEXT_STATE
    await _keep(update, context, BroadcastDraft(broadcast_id=broadcast_id))
    await _ask_audience(update, context)
    return AUDIENCE_STATE


async def _ask_audience(update: Update, context: BotContext) -> None:
    rows = [[(await text(update, context, f"broadcast.audiences.{kind}"), f"bca:{kind}")]
            for kind in ("all", "therapist", "appointments")]
    await say(update, context, "broadcast.choose_audience", reply_markup=keyboard(*rows))


@requires(Role.STAFF)
async def audience_chosen(update: Update, context: BotContext) -> str | int:
    draft = await _draft(update, context)
    await settle(update)
    if draft is None:
        return await _lost(update, context)
    draft.kind = button_match(AUDIENCE_BUTTON, update).group(1)
    draft.therapist_id = draft.days = None
    await _keep(update, context, draft)
    if draft.kind == "appointments":
        await say(update, context, "broadcast.ask_days")
        return DAYS_STATE
    if draft.kind == "therapist":
        try:
            therapists = await context.services.broadcasts.therapists(await context.identity(update))
        except NotAllowed as exc:
            return await _refused(update, context, "broadcast:therapists", exc)
        if not therapists:
            await say(update, context, "broadcast.no_therapists")
            await _ask_audience(update, context)
            return AUDIENCE_STATE
        pack = packer(update, context)
        rows = [[(name or await text(update, context, "broadcast.no_therapist_name"), pack(THERAPIST, person_id))]
                for person_id, name in therapists]
        await say(update, context, "broadcast.choose_therapist", reply_markup=keyboard(*rows))
        return THERAPIST_STATE
    return await _ask_language(update, context)


@requires(Role.STAFF)
async def therapist_chosen(update: Update, context: BotContext) -> str | int:
    ids = await signed_ids(update, context, THERAPIST)
    if not ids:
        return THERAPIST_STATE
    draft = await _draft(update, context)
    await settle(update)
    if draft is None:
        return await _lost(update, context)
    draft.therapist_id = ids[0]
    await _keep(update, context, draft)
    return await _ask_language(update, context)


@requires(Role.STAFF)
async def days_typed(update: Update, context: BotContext) -> str | int:
    draft = await _draft(update, context)
    if draft is None:
        return await _lost(update, context)
    typed = (message_of(update).text or "").strip()
    if not typed.isdigit() or not 1 <= int(typed) <= 60:
        await say(update, context, "broadcast.errors.bad_days")
        return DAYS_STATE
    draft.days = int(typed)
    await _keep(update, context, draft)
    return await _ask_language(update, context)


async def _ask_language(update: Update, context: BotContext) -> str:
    rows = [[(await text(update, context, "broadcast.all_languages"), "bcl:all")]]
    rows += [[(await text(update, context, f"broadcast.languages.{lang}"), f"bcl:{lang}")]
             for lang in context.services.content.languages]
    await say(update, context, "broadcast.choose_language", reply_markup=keyboard(*rows))
    return LANGUAGE_STATE


@requires(Role.STAFF)
async def language_chosen(update: Update, context: BotContext) -> str | int:
    draft = await _draft(update, context)
    await settle(update)
    if draft is None:
        return await _lost(update, context)
    chosen = button_match(LANGUAGE_BUTTON, update).group(1)
    if chosen != "all" and chosen not in context.services.content.languages:
        return LANGUAGE_STATE
    draft.language = None if chosen == "all" else chosen
    await _keep(update, context, draft)
    return await _preview(update, context, draft)


async def _reach(update: Update, context: BotContext, draft: BroadcastDraft) -> Reach | None:
    """How many it would reach; None (said, and the audience asked again) when nobody."""
    try:
        reach = await context.services.broadcasts.reach(await context.identity(update), draft.audience())
    except BroadcastError as exc:
        await say(update, context, f"broadcast.errors.{exc.reason}")
        await _ask_audience(update, context)
        return None
    if reach.total == 0:
        await say(update, context, "broadcast.errors.empty_audience")
        await _ask_audience(update, context)
        return None
    return reach


async def _preview(update: Update, context: BotContext, draft: BroadcastDraft) -> str | int:
    """Exactly what recipients will see, in each language they read, then the count, the
    clinical-word warning and Send now / Send later / Discard."""
    services = context.services
    identity = await context.identity(update)
    try:
        body, template = await services.broadcasts.draft_text(identity, draft.broadcast_id)
        reach = await _reach(update, context, draft)
    except NotAllowed as exc:
        return await _refused(update, context, "broadcast:preview", exc)
    except BroadcastError:
        return await _lost(update, context)
    if reach is None:
        return AUDIENCE_STATE
    chat = chat_id_of(update)
    words: list[str] = []
    for language in sorted(reach.by_language):
        title = await text(update, context, "broadcast.preview_title",
                           language=await text(update, context, f"broadcast.languages.{language}"))
        shown = services.broadcasts.message(body, language, template)
        words += [word for word in services.broadcasts.warnings(shown) if word not in words]
        await context.bot.send_message(chat, f"{title}\n\n{shown}")
    items = [
        await text(update, context, "broadcast.by_language_item",
                   language=await text(update, context, f"broadcast.languages.{language}"), count=count)
        for language, count in sorted(reach.by_language.items())
    ]
    parts = [await text(update, context, "broadcast.summary", count=reach.total, by_language=", ".join(items))]
    if reach.unreachable:
        parts.append(await text(update, context, "broadcast.unreachable", count=reach.unreachable))
    if reach.opted_out:
        parts.append(await text(update, context, "broadcast.opted_out", count=reach.opted_out))
    if words:
        parts.append(await text(update, context, "broadcast.clinical_warning", words=", ".join(words)))
    markup = keyboard(
        [(await text(update, context, "broadcast.send_now_button"), "bcd:now"),
         (await text(update, context, "broadcast.schedule_button"), "bcd:later")],
        [(await text(update, context, "broadcast.discard_button"), "bcd:discard")],
    )
    await context.bot.send_message(chat, "\n\n".join(parts), reply_markup=markup)
    return DECIDE_STATE


@requires(Role.STAFF)
async def decided(update: Update, context: BotContext) -> str | int:
    draft = await _draft(update, context)
    await settle(update)
    if draft is None:
        return await _lost(update, context)
    choice = button_match(DECIDE_BUTTON, update).group(1)
    identity = await context.identity(update)
    if choice == "discard":
        return await _discard(update, context, draft)
    if choice == "later":
        await say(update, context, "broadcast.ask_time", zone=identity.timezone, example=_example(identity.timezone))
        return TIME_STATE
    draft.at = None
    await _keep(update, context, draft)
    return await _confirm(update, context, draft)


async def _discard(update: Update, context: BotContext, draft: BroadcastDraft) -> int:
    try:
        await context.services.broadcasts.discard(await context.identity(update), draft.broadcast_id)
    except (BroadcastError, NotAllowed):
        pass
    await _drop(update, context)
    await say(update, context, "broadcast.discarded")
    return ConversationHandler.END


@requires(Role.STAFF)
async def time_typed(update: Update, context: BotContext) -> str | int:
    draft = await _draft(update, context)
    if draft is None:
        return await _lost(update, context)
    identity = await context.identity(update)
    zone = identity.timezone
    try:
        at = context.services.broadcasts.check_time(message_of(update).text or "", zone)
    except BroadcastError as exc:
        await say(update, context, f"broadcast.errors.{exc.reason}", zone=zone, example=_example(zone))
        return TIME_STATE
    draft.at = at.isoformat()
    await _keep(update, context, draft)
    return await _confirm(update, context, draft)


def _local(when: datetime, zone: str) -> str:
    return when.astimezone(ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M")


async def _confirm(update: Update, context: BotContext, draft: BroadcastDraft) -> str | int:
    reach = await _reach(update, context, draft)
    if reach is None:
        return AUDIENCE_STATE
    identity = await context.identity(update)
    if draft.at is None:
        question = await text(update, context, "broadcast.confirm_now", count=reach.total)
    else:
        question = await text(update, context, "broadcast.confirm_later", count=reach.total,
                              when=_local(datetime.fromisoformat(draft.at), identity.timezone), zone=identity.timezone)
    markup = keyboard(
        [(await text(update, context, "broadcast.yes_button"), "bcc:yes")],
        [(await text(update, context, "broadcast.no_button"), "bcc:no")],
    )
    await context.bot.send_message(chat_id_of(update), question, reply_markup=markup)
    return CONFIRM_STATE


@requires(Role.STAFF)
async def confirmed(update: Update, context: BotContext) -> str | int:
    draft = await _draft(update, context)
    await settle(update)
    if draft is None:
        return await _lost(update, context)
    if button_match(CONFIRM_BUTTON, update).group(1) == "no":
        return await _discard(update, context, draft)
    identity = await context.identity(update)
    at = datetime.fromisoformat(draft.at) if draft.at else None
    try:
        view, _ = await context.services.broadcasts.send(identity, draft.broadcast_id, draft.audience(), at)
    except NotAllowed as exc:
        return await _refused(update, context, "broadcast:send", exc)
    except BroadcastError as exc:
        if exc.reason == "past":
            await say(update, context, "broadcast.errors.past", zone=identity.timezone, example=_example(identity.timezone))
            return TIME_STATE
        if exc.reason in ("empty_audience", "unknown_therapist"):
            await say(update, context, f"broadcast.errors.{exc.reason}")
            await _ask_audience(update, context)
            return AUDIENCE_STATE
        return await _lost(update, context)
    await _drop(update, context)
    if at is not None:
        body = await text(update, context, "broadcast.scheduled", when=_local(at, identity.timezone), zone=identity.timezone)
    else:
        figures = await context.services.broadcasts.progress(view.id)
        body = progress_text(context.services.content, identity.language, figures)
    sent = await context.bot.send_message(chat_id_of(update), body)
    await context.services.broadcasts.attach_progress(view.id, sent.chat_id, sent.message_id)
    return ConversationHandler.END


# -- progress ------------------------------------------------------------------------------------


def progress_text(content, language: str, figures: Progress) -> str:
    if figures.eta_seconds < 60:
        eta = content.text("broadcast.eta_seconds", language, count=figures.eta_seconds)
    else:
        eta = content.text("broadcast.eta_minutes", language, count=-(-figures.eta_seconds // 60))
    cancelled = (
        content.text("broadcast.progress_cancelled", language, withdrawn=figures.withdrawn)
        if figures.state is BroadcastState.CANCELLED else ""
    )
    return content.text(
        "broadcast.progress", language,
        state=content.text(f"broadcast.states.{figures.state.value}", language),
        sent=figures.sent, blocked=figures.blocked, no_consent=figures.no_consent, failed=figures.failed,
        opted_out=figures.opted_out, remaining=figures.remaining, eta=eta, cancelled=cancelled,
    ).rstrip()


async def report_progress(context: BotContext) -> None:
    """A repeating job: bring every running broadcast's progress message up to date, and show
    the final figures once it is done or cancelled (then it is left alone)."""
    services = context.application.bot_data[SERVICES_KEY]
    shown: dict[int, str] = context.application.bot_data.setdefault(SHOWN_KEY, {})
    for view, language in await services.broadcasts.to_report():
        figures = await services.broadcasts.progress(view.id)
        body = progress_text(services.content, language, figures)
        if shown.get(view.id) != body:
            try:
                await context.bot.edit_message_text(body, chat_id=view.progress_chat_id, message_id=view.progress_message_id)
            except BadRequest:  # "message is not modified" (another instance), or deleted
                pass
            except Forbidden:
                await services.broadcasts.reported(view.id)
                continue
            shown[view.id] = body
        if figures.state in (BroadcastState.DONE, BroadcastState.CANCELLED):
            await services.broadcasts.reported(view.id)
            shown.pop(view.id, None)


def start_progress_job(application: Application, interval: float) -> None:
    if application.job_queue is not None:
        application.job_queue.run_repeating(
            report_progress, interval=interval, first=interval, name=PROGRESS_JOB,
            job_kwargs={"max_instances": 1, "coalesce": True, "misfire_grace_time": None},
        )


# -- /broadcasts ---------------------------------------------------------------------------------


async def _row(update: Update, context: BotContext, view: BroadcastView, zone: str) -> str:
    figures = await context.services.broadcasts.progress(view.id)
    total = figures.queued if figures.queued else figures.audience
    return await text(
        update, context, "broadcast.list_row",
        when=_local(view.scheduled_for, zone),
        audience=await text(update, context, f"broadcast.audiences.{view.audience.kind}"),
        state=await text(update, context, f"broadcast.states.{view.state.value}"),
        sent=figures.sent, total=total,
    )


async def _listing(update: Update, context: BotContext, number: int) -> tuple[str, InlineKeyboardMarkup | None] | None:
    """Page ``number`` of /broadcasts: its text and buttons (None: there are none at all)."""
    identity = await context.identity(update)
    page = await context.services.broadcasts.page(identity, number)
    if not page.views:
        return None
    lines = [await text(update, context, "broadcast.list_title")]
    pack = packer(update, context)
    rows = []
    for view in page.views:
        lines.append(await _row(update, context, view, identity.timezone))
        if view.state in (BroadcastState.SCHEDULED, BroadcastState.SENDING):
            label = await text(update, context, "broadcast.cancel_button", when=_local(view.scheduled_for, identity.timezone))
            rows.append([(label, pack(CANCEL, view.id))])
    if page.count > 1:
        lines.append(await text(update, context, "broadcast.list_page", number=page.number + 1, count=page.count))
        turn = []
        if page.number > 0:
            turn.append((await text(update, context, "broadcast.newer_button"), pack(PAGE, page.number - 1)))
        if page.number < page.count - 1:
            turn.append((await text(update, context, "broadcast.older_button"), pack(PAGE, page.number + 1)))
        rows.append(turn)
    return "\n".join(lines), keyboard(*rows) if rows else None


@requires(Role.STAFF)
async def show(update: Update, context: BotContext) -> None:
    await _with_record(update, context)
    listing = await _listing(update, context, 0)
    if listing is None:
        await say(update, context, "broadcast.list_empty")
        return
    body, markup = listing
    await context.bot.send_message(chat_id_of(update), body, reply_markup=markup)


@requires(Role.STAFF)
async def turn_page(update: Update, context: BotContext) -> None:
    """[‹ Newer] / [Older ›]: the same message shows another page."""
    ids = await signed_ids(update, context, PAGE)
    if not ids:
        return
    await query_of(update).answer()
    listing = await _listing(update, context, ids[0])
    if listing is None:
        await query_of(update).edit_message_reply_markup(reply_markup=None)
        await say(update, context, "broadcast.list_empty")
        return
    body, markup = listing
    try:
        await query_of(update).edit_message_text(body, reply_markup=markup)
    except BadRequest:  # "message is not modified": pressed twice
        pass


@requires(Role.STAFF)
async def cancel(update: Update, context: BotContext) -> None:
    ids = await signed_ids(update, context, CANCEL)
    if not ids:
        return
    identity = await context.identity(update)
    try:
        view = await context.services.broadcasts.cancel(identity, ids[0])
    except NotAllowed as exc:
        await refuse(update, context, what=f"button:{CANCEL}", reason=exc.reason)
        return
    except BroadcastError:
        await settle(update)
        await say(update, context, "broadcast.already_finished")
        return
    await settle(update)
    figures = await context.services.broadcasts.progress(view.id)
    await say(update, context, "broadcast.cancelled", when=_local(view.scheduled_for, identity.timezone),
              withdrawn=figures.withdrawn)


def build(fallbacks: list[BaseHandler], free_text: filters.BaseFilter) -> ConversationHandler:
    return conversation(
        FLOW,
        entry_points=[CommandHandler("broadcast", start)],
        states={
            TEXT_STATE: [MessageHandler(free_text, text_typed),
                         CallbackQueryHandler(template_chosen, pattern=TEMPLATE_BUTTON)],
            AUDIENCE_STATE: [CallbackQueryHandler(audience_chosen, pattern=AUDIENCE_BUTTON),
                             MessageHandler(free_text, use_the_buttons)],
            THERAPIST_STATE: [CallbackQueryHandler(therapist_chosen, pattern=CallbackCodec.pattern(THERAPIST)),
                              MessageHandler(free_text, use_the_buttons)],
            DAYS_STATE: [MessageHandler(free_text, days_typed)],
            LANGUAGE_STATE: [CallbackQueryHandler(language_chosen, pattern=LANGUAGE_BUTTON),
                             MessageHandler(free_text, use_the_buttons)],
            DECIDE_STATE: [CallbackQueryHandler(decided, pattern=DECIDE_BUTTON),
                           MessageHandler(free_text, use_the_buttons)],
            TIME_STATE: [MessageHandler(free_text, time_typed)],
            CONFIRM_STATE: [CallbackQueryHandler(confirmed, pattern=CONFIRM_BUTTON),
                            MessageHandler(free_text, use_the_buttons)],
        },
        fallbacks=fallbacks,
        hooks=FlowHooks(keeps_draft=True),
    )


def build_list() -> list[BaseHandler]:
    """/broadcasts, its Cancel and page buttons: at any time."""
    return [
        CommandHandler("broadcasts", show),
        CallbackQueryHandler(cancel, pattern=CallbackCodec.pattern(CANCEL)),
        CallbackQueryHandler(turn_page, pattern=CallbackCodec.pattern(PAGE)),
    ]
