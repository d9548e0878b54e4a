"""/checkin: the client's pre-appointment check-in, one question at a time
(bot.services.checkins; the questions in bot.checkins; the words in content/<language>/checkin.yaml).

    /checkin or [Start my check-in] under the prompt
        ├──► nothing open: intro (which appointment, or "no appointment ahead") ──► question 1
        └──► one open: [Continue where I left off] [Start again]
    question 1 … 12 (each: its buttons or, for the note, typed text; ↩ Back; 💾 Save and finish later)
        distress 0-10 · stressors (toggles, Done) · sleep · practice days and help (filled in
        from the practice log: [That's right] [Change it]) · support · detached · substances ·
        unsafe (yes: the therapist is alerted at once, nothing clinical) · self_harm (yes: the
        crisis path at once, then the way back here) · ready 0-10 · note (≤ 1000 characters,
        or [No note]; the safety layer reads it first)
    ──► review: every answer ──► [Send to my therapist] ──► thanks (never "you can't")
                               └► [Change an answer] ──► which? ──► that question ──► review

Each answer is stored (encrypted) the moment it is given, and the conversation's state names
the question, so a restart resumes at the same question. /cancel or a stop word ends it:
a draft is deleted, a check-in saved earlier is kept. Another command ending it keeps the
draft: /checkin offers to continue it. The buttons act on the presser's own open check-in
(no record ids); the prompt's button is signed for its recipient and checked against the
outbox row. Answers are never logged.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Coroutine
from typing import Any

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
from bot.checkins import CHOICES, NOTE_LIMIT, QUESTIONS, SCALES, STRESSORS, InvalidAnswer
from bot.content import Content, trusted_html
from bot.context import BotContext
from bot.db.models import CheckInState, Role
from bot.delivery.buttons import CHECK_IN_START
from bot.flows import FlowHooks
from bot.services.checkins import REVIEW, CheckInView, NoCheckIn
from bot.services.invites import NotAllowed
from handlers import general
from handlers.access import public, refuse, requires
from handlers.common import (
    conversation,
    crisis_block,
    keyboard,
    local_time,
    say,
    send_with_way_back,
    signed_ids,
    text,
    use_the_buttons,
)
from handlers.common import settle_again_ok as settle  # an old message's second press is no error
from handlers.safety import crisis_confirmed
from handlers.parts import button_match, chat_id_of, message_of, query_of

FLOW = "checkin"
TOTAL = len(QUESTIONS)
PREFILLED = ("practice_days", "practice_help")

# States: one per question (a restart resumes it), the review, which answer to change, and
# whether to continue a check-in begun earlier.
ASK = {question: f"{FLOW}:q:{question}" for question in QUESTIONS}
REVIEWING = f"{FLOW}:review"
PICK = f"{FLOW}:pick"
RESUME = f"{FLOW}:resume"

# Button data: no record ids (each acts on the presser's own open check-in); the question
# named, so that an older question's button is stale.
ANSWER = "ci:a:{question}:{value}"
TOGGLE = "ci:t:{value}"
DONE = "ci:done"
CONFIRM = "ci:ok:{question}"
CHANGE = "ci:chg:{question}"
BACK = "ci:back:{step}"
SAVE = "ci:save"
NO_NOTE = "ci:nonote"
SEND = "ci:send"
EDIT = "ci:edit"
PICKED = re.compile(r"^ci:pick:([a-z_]+)$")
GO_ON = "ci:go_on"
OVER = "ci:over"


# -- words ---------------------------------------------------------------------------------------


async def _choice(update: Update, context: BotContext, question: str, value: str) -> str:
    return await text(update, context, f"checkin.choices.{question}.{value}")


async def _answer_words(update: Update, context: BotContext, question: str, value: object) -> str:
    """An answer as the client reads it (escaped: the note is their own words)."""
    if question == "practice_days":
        return await text(update, context, "checkin.answers.days", days=value)
    if question in SCALES:
        return str(value)
    if question == "stressors":
        if not value:
            return await text(update, context, "checkin.answers.no_stressors")
        assert isinstance(value, (tuple, list))  # stressors: a tuple once validated (bot.checkins)
        return ", ".join([await _choice(update, context, question, v) for v in value])
    if question == "note":
        return html.escape(str(value)) if value else await text(update, context, "checkin.answers.no_note")
    return await _choice(update, context, question, str(value))


async def _appointment_line(update: Update, context: BotContext, view: CheckInView) -> str:
    if view.appointment is None:
        return await text(update, context, "checkin.no_appointment")
    when = await local_time(update, context, view.appointment.starts_at, "checkin.when_format")
    return await text(update, context, "checkin.for_appointment", when=when)


# -- asking --------------------------------------------------------------------------------------


def _scale_rows(question: str) -> list[list[tuple[str, str]]]:
    low, high = SCALES[question]
    values = list(range(low, high + 1))
    half = (len(values) + 1) // 2
    return [
        [(str(v), ANSWER.format(question=question, value=v)) for v in part]
        for part in (values[:half], values[half:])
    ]


async def _choice_rows(update: Update, context: BotContext, question: str) -> list[list[tuple[str, str]]]:
    buttons = [
        (await _choice(update, context, question, value), ANSWER.format(question=question, value=value))
        for value in CHOICES[question]
    ]
    if len(buttons) <= 3:
        return [buttons]
    return [buttons[n : n + 2] for n in range(0, len(buttons), 2)]


async def _stressor_rows(update: Update, context: BotContext, chosen: tuple[str, ...]) -> list[list[tuple[str, str]]]:
    rows = [
        [(("✓ " if value in chosen else "") + await _choice(update, context, "stressors", value), TOGGLE.format(value=value))]
        for value in STRESSORS
    ]
    rows.append([(await text(update, context, "checkin.buttons.done"), DONE)])
    return rows


async def _footer(update: Update, context: BotContext, step: str) -> list[list[tuple[str, str]]]:
    rows = []
    if step != QUESTIONS[0]:
        rows.append([(await text(update, context, "checkin.buttons.back"), BACK.format(step=step))])
    rows.append([(await text(update, context, "checkin.buttons.save"), SAVE)])
    return rows


async def _question_markup(
    update: Update, context: BotContext, view: CheckInView, question: str, *, changing: bool = False
) -> InlineKeyboardMarkup:
    if question == "stressors":
        rows = await _stressor_rows(update, context, tuple(view.answers.get("stressors", ())))
    elif question in PREFILLED and question not in view.answers and not changing:
        rows = [
            [(await text(update, context, "checkin.buttons.confirm"), CONFIRM.format(question=question))],
            [(await text(update, context, "checkin.buttons.change"), CHANGE.format(question=question))],
        ]
    elif question in SCALES:
        rows = _scale_rows(question)
    elif question == "note":
        rows = [[(await text(update, context, "checkin.buttons.no_note"), NO_NOTE)]]
    else:
        rows = await _choice_rows(update, context, question)
    return keyboard(*rows, *await _footer(update, context, question))


async def _suggestion(update: Update, context: BotContext, question: str) -> str:
    """The practice log's suggestion for a practice question, as a sentence."""
    suggested = await context.services.checkins.suggestions(await context.identity(update))
    if question == "practice_days":
        return await text(update, context, "checkin.suggested.days", days=suggested.days)
    answer = await _choice(update, context, "practice_help", suggested.help)
    key = "checkin.suggested.help" if suggested.average_drop is not None else "checkin.suggested.help_no_ratings"
    return await text(update, context, key, answer=answer)


async def ask(update: Update, context: BotContext, view: CheckInView, *, changing: bool = False) -> str:
    """Show the step the check-in has reached (a question, or the review); its state."""
    if view.step == REVIEW:
        return await review(update, context, view)
    question = view.step
    identity = await context.identity(update)
    content = context.services.content
    parts = [
        content.text("checkin.header", identity.language, number=QUESTIONS.index(question) + 1, total=TOTAL),
        content.text(f"checkin.questions.{question}", identity.language, **({"max": NOTE_LIMIT} if question == "note" else {})),
    ]
    if question in view.answers and question != "stressors":
        words = await _answer_words(update, context, question, view.answers.get(question))
        parts.append(await text(update, context, "checkin.current", answer=trusted_html(words)))
    elif question in PREFILLED and not changing:
        parts.append(await _suggestion(update, context, question))
    await context.bot.send_message(
        chat_id_of(update),
        "\n\n".join(parts),
        reply_markup=await _question_markup(update, context, view, question, changing=changing),
    )
    return ASK[question]


async def review(update: Update, context: BotContext, view: CheckInView) -> str:
    lines = [
        await text(
            update, context, "checkin.review_line",
            question=trusted_html(await text(update, context, f"checkin.short.{q}")),
            answer=trusted_html(await _answer_words(update, context, q, view.answers.get(q))),
        )
        for q in QUESTIONS
    ]
    await say(
        update, context, "checkin.review",
        answers=trusted_html("\n".join(lines)),
        appointment=trusted_html(await _appointment_line(update, context, view)),
        reply_markup=keyboard(
            [(await text(update, context, "checkin.buttons.send"), SEND)],
            [(await text(update, context, "checkin.buttons.edit"), EDIT)],
            [(await text(update, context, "checkin.buttons.back"), BACK.format(step=REVIEW))],
            [(await text(update, context, "checkin.buttons.save"), SAVE)],
        ),
    )
    return REVIEWING


async def _gone(update: Update, context: BotContext) -> int:
    """The check-in was sent, stopped or is out of date meanwhile (an old message's button)."""
    await say(update, context, "checkin.gone")
    return ConversationHandler.END


# -- beginning -----------------------------------------------------------------------------------


async def _begin(update: Update, context: BotContext) -> str | int:
    identity = await context.identity(update)
    service = context.services.checkins
    open_one = await service.current(identity)
    if open_one is not None:
        key = "checkin.resume_saved" if open_one.state is CheckInState.SAVED else "checkin.resume"
        await say(
            update, context, key, answered=open_one.answered, total=TOTAL,
            reply_markup=keyboard(
                [(await text(update, context, "checkin.buttons.continue"), GO_ON)],
                [(await text(update, context, "checkin.buttons.start_again"), OVER)],
            ),
        )
        return RESUME
    return await _start(update, context, fresh=False)


async def _start(update: Update, context: BotContext, *, fresh: bool) -> str:
    view = await context.services.checkins.start(await context.identity(update), fresh=fresh)
    if view.resumed:
        return await ask(update, context, view)
    await say(update, context, "checkin.intro", appointment=trusted_html(await _appointment_line(update, context, view)))
    return await ask(update, context, view)


@requires(Role.CLIENT)
async def checkin_command(update: Update, context: BotContext) -> str | int:
    return await _begin(update, context)


@requires(Role.CLIENT)
async def start_from_prompt(update: Update, context: BotContext) -> str | int | None:
    """[Start my check-in] under a delivered prompt: only the prompt's own recipient; another
    person's (or an altered) payload is refused and changes nothing."""
    ids = await signed_ids(update, context, CHECK_IN_START)
    if not ids:
        return None
    identity = await context.identity(update)
    if not await context.services.checkins.prompt_is_theirs(identity, ids[0]):
        await refuse(update, context, what=f"button:{CHECK_IN_START}", reason="ownership")
        return None
    await settle(update)
    return await _begin(update, context)


@requires(Role.CLIENT)
async def go_on(update: Update, context: BotContext) -> str | int:
    await settle(update)
    view = await context.services.checkins.current(await context.identity(update))
    if view is None:
        return await _start(update, context, fresh=False)
    return await ask(update, context, view)


@requires(Role.CLIENT)
async def start_again(update: Update, context: BotContext) -> str:
    await settle(update)
    return await _start(update, context, fresh=True)


# -- one small step per question ------------------------------------------------------------------


async def _store(update: Update, context: BotContext, question: str, value: object) -> CheckInView | None:
    try:
        return await context.services.checkins.answer(await context.identity(update), question, value)
    except NoCheckIn:
        return None


def _pressed_value(update: Update) -> str:
    return (query_of(update).data or "").rsplit(":", 1)[1]


def scale_answer(question: str) -> Callable[[Update, BotContext], Coroutine[Any, Any, str | int]]:
    """distress, practice_days (after Change it) and ready: a number from the grid."""

    @requires(Role.CLIENT)
    async def answered(update: Update, context: BotContext) -> str | int:
        await settle(update)
        view = await _store(update, context, question, int(_pressed_value(update)))
        return await ask(update, context, view) if view else await _gone(update, context)

    answered.__qualname__ = f"checkin_scale_{question}"
    return answered


def choice_answer(question: str) -> Callable[[Update, BotContext], Coroutine[Any, Any, str | int]]:
    """sleep, practice_help (after Change it), support, detached, substances."""

    @requires(Role.CLIENT)
    async def answered(update: Update, context: BotContext) -> str | int:
        await settle(update)
        view = await _store(update, context, question, _pressed_value(update))
        return await ask(update, context, view) if view else await _gone(update, context)

    answered.__qualname__ = f"checkin_choice_{question}"
    return answered


@requires(Role.CLIENT)
async def toggle_stressor(update: Update, context: BotContext) -> str | int:
    """A stressor on or off; the same message shows the choice (Done goes on)."""
    await query_of(update).answer()
    identity = await context.identity(update)
    service = context.services.checkins
    view = await service.current(identity)
    if view is None:
        await query_of(update).edit_message_reply_markup(reply_markup=None)
        return await _gone(update, context)
    chosen = set(view.answers.get("stressors", ()))
    chosen ^= {_pressed_value(update)}
    view = await service.answer(identity, "stressors", tuple(chosen), advance=False)
    await query_of(update).edit_message_reply_markup(
        reply_markup=await _question_markup(update, context, view, "stressors")
    )
    return ASK["stressors"]


@requires(Role.CLIENT)
async def stressors_done(update: Update, context: BotContext) -> str | int:
    await settle(update)
    view = await context.services.checkins.current(await context.identity(update))
    if view is None:
        return await _gone(update, context)
    view = await _store(update, context, "stressors", tuple(view.answers.get("stressors", ())))
    return await ask(update, context, view) if view else await _gone(update, context)


def confirm_suggestion(question: str) -> Callable[[Update, BotContext], Coroutine[Any, Any, str | int]]:
    """That's right: the practice log's suggestion becomes the answer."""

    @requires(Role.CLIENT)
    async def confirmed(update: Update, context: BotContext) -> str | int:
        await settle(update)
        suggested = await context.services.checkins.suggestions(await context.identity(update))
        value = suggested.days if question == "practice_days" else suggested.help
        view = await _store(update, context, question, value)
        return await ask(update, context, view) if view else await _gone(update, context)

    confirmed.__qualname__ = f"checkin_confirm_{question}"
    return confirmed


def change_suggestion(question: str) -> Callable[[Update, BotContext], Coroutine[Any, Any, str | int]]:
    """Change it: the question again, with all its answers to choose from."""

    @requires(Role.CLIENT)
    async def change(update: Update, context: BotContext) -> str | int:
        await settle(update)
        view = await context.services.checkins.current(await context.identity(update))
        if view is None:
            return await _gone(update, context)
        return await ask(update, context, view, changing=True)

    change.__qualname__ = f"checkin_change_{question}"
    return change


@requires(Role.CLIENT)
async def unsafe_answer(update: Update, context: BotContext) -> str | int:
    """Feeling unsafe at home or with someone. Yes: the therapist is alerted at once (nothing
    clinical), the client sees the crisis lines, and the check-in goes on."""
    await settle(update)
    value = _pressed_value(update)
    view = await _store(update, context, "unsafe", value)
    if view is None:
        return await _gone(update, context)
    if value == "yes":
        flagged = await context.services.safety_flags.unsafe_reported(await context.identity(update), view.id)
        key = "checkin.unsafe_alerted" if flagged is None or flagged.therapist_alerted else "checkin.unsafe_noted"
        await say(update, context, key, crisis=await crisis_block(update, context))
    return await ask(update, context, view)


@requires(Role.CLIENT)
async def self_harm_answer(update: Update, context: BotContext) -> str | int:
    """Thoughts of harming themselves. Yes: at once the crisis path (the lines, the practice's
    instructions, the therapist alerted, the safety plan), with the check-in paused at the
    next question and the way back to it."""
    await settle(update)
    value = _pressed_value(update)
    view = await _store(update, context, "self_harm", value)
    if view is None:
        return await _gone(update, context)
    if value != "yes":
        return await ask(update, context, view)
    flows = context.flows
    key = flows.key_in(update)
    flows.flows[FLOW].set_state(key, ASK[view.step] if view.step in ASK else REVIEWING)
    paused = await flows.pause(update, context)
    await crisis_confirmed(update, context)
    body = await text(update, context, "checkin.after_crisis")
    if paused is not None:
        await send_with_way_back(update, context, body, paused)
    return ConversationHandler.END


@requires(Role.CLIENT)
async def note_typed(update: Update, context: BotContext) -> str | int:
    """The note (the safety layer has read it already: one that took the crisis or boundary
    route never gets here). Too long: said so, nothing kept, the same question again."""
    words = (message_of(update).text or "").strip()
    view = await context.services.checkins.current(await context.identity(update))
    if view is None:
        return await _gone(update, context)
    if len(words) > NOTE_LIMIT:
        await say(
            update, context, "checkin.note_too_long", length=len(words), max=NOTE_LIMIT,
            reply_markup=await _question_markup(update, context, view, "note"),
        )
        return ASK["note"]
    view = await _store(update, context, "note", words)
    return await ask(update, context, view) if view else await _gone(update, context)


@requires(Role.CLIENT)
async def no_note(update: Update, context: BotContext) -> str | int:
    await settle(update)
    view = await _store(update, context, "note", "")
    return await ask(update, context, view) if view else await _gone(update, context)


def typed_at_buttons(question: str) -> Callable[[Update, BotContext], Coroutine[Any, Any, str | int]]:
    """Typed text where buttons are expected: said so, and the question again."""

    @requires(Role.CLIENT)
    async def typed(update: Update, context: BotContext) -> str | int:
        await say(update, context, "checkin.use_buttons")
        view = await context.services.checkins.current(await context.identity(update))
        if view is None:
            return await _gone(update, context)
        return await ask(update, context, view)

    typed.__qualname__ = f"checkin_typed_at_{question}"
    return typed


# -- back, save, review, send ---------------------------------------------------------------------


@requires(Role.CLIENT)
async def back(update: Update, context: BotContext) -> str | int:
    await settle(update)
    step = (query_of(update).data or "").split(":", 2)[2]
    try:
        view = await context.services.checkins.back(await context.identity(update), step)
    except NoCheckIn:
        return await _gone(update, context)
    return await ask(update, context, view)


@requires(Role.CLIENT)
async def save_for_later(update: Update, context: BotContext) -> int:
    await settle(update)
    try:
        await context.services.checkins.save_for_later(await context.identity(update))
    except NoCheckIn:
        return await _gone(update, context)
    await say(update, context, "checkin.saved")
    return ConversationHandler.END


@requires(Role.CLIENT)
async def edit_asked(update: Update, context: BotContext) -> str:
    await settle(update)
    rows = [
        [(f"{n}. {await text(update, context, f'checkin.short.{q}')}", f"ci:pick:{q}")]
        for n, q in enumerate(QUESTIONS, start=1)
    ]
    await say(update, context, "checkin.pick", reply_markup=keyboard(*rows))
    return PICK


@requires(Role.CLIENT)
async def picked(update: Update, context: BotContext) -> str | int:
    await settle(update)
    question = button_match(PICKED, update).group(1)
    try:
        view = await context.services.checkins.go_to(await context.identity(update), question)
    except (NoCheckIn, InvalidAnswer):
        return await _gone(update, context)
    return await ask(update, context, view, changing=True)


@requires(Role.CLIENT)
async def send(update: Update, context: BotContext) -> str | int:
    await settle(update)
    identity = await context.identity(update)
    try:
        view = await context.services.checkins.complete(identity)
    except NoCheckIn:
        return await _gone(update, context)
    except InvalidAnswer as missing:  # a question left unanswered (should not happen): ask it
        view = await context.services.checkins.go_to(identity, missing.question)
        return await ask(update, context, view)
    await say(update, context, "checkin.sent" if view.appointment is not None else "checkin.sent_no_appointment")
    return ConversationHandler.END


# -- stopping, pausing ----------------------------------------------------------------------------


@public  # a fallback of this conversation only (which only clients enter)
async def cancel(update: Update, context: BotContext) -> int:
    """/cancel, /stop or a stop word: a draft is deleted; a check-in saved earlier is kept."""
    identity = await context.identity(update)
    try:
        deleted = await context.services.checkins.discard(identity)
    except NotAllowed:
        deleted = True
    if deleted or await context.services.checkins.current(identity) is None:
        await say(update, context, "checkin.cancelled")
    else:
        await say(update, context, "checkin.cancelled_saved")
    return ConversationHandler.END


async def _resumed(update: Update, context: BotContext, state: object) -> None:
    """↩ Back to where I was (after /help, the safety layer or the crisis path): the step again."""
    view = await context.services.checkins.current(await context.identity(update))
    if view is None:
        await _gone(update, context)
        context.flows.flows[FLOW].set_state(context.flows.key_in(update), ConversationHandler.END)
        return
    if state == RESUME:
        await _begin(update, context)
    elif state == PICK:
        await review(update, context, view)
        context.flows.flows[FLOW].set_state(context.flows.key_in(update), REVIEWING)
    else:
        shown = await ask(update, context, view)
        if shown != state:
            context.flows.flows[FLOW].set_state(context.flows.key_in(update), shown)


def build(fallbacks: list[BaseHandler], free_text: filters.BaseFilter, content: Content) -> BaseHandler:
    def button(callback, data: str) -> CallbackQueryHandler:
        return CallbackQueryHandler(callback, pattern=f"^{re.escape(data)}$")

    def common(step: str) -> list[BaseHandler]:
        return [button(back, BACK.format(step=step)), button(save_for_later, SAVE)]

    states: dict[object, list[BaseHandler]] = {}
    for question in QUESTIONS:
        handlers: list[BaseHandler] = []
        answers = rf"^ci:a:{question}:[a-z_0-9]+$"
        if question in SCALES:
            handlers.append(CallbackQueryHandler(scale_answer(question), pattern=answers))
        elif question == "unsafe":
            handlers.append(CallbackQueryHandler(unsafe_answer, pattern=answers))
        elif question == "self_harm":
            handlers.append(CallbackQueryHandler(self_harm_answer, pattern=answers))
        elif question in CHOICES and question != "stressors":
            handlers.append(CallbackQueryHandler(choice_answer(question), pattern=answers))
        if question == "stressors":
            handlers += [CallbackQueryHandler(toggle_stressor, pattern=r"^ci:t:[a-z_]+$"), button(stressors_done, DONE)]
        if question in PREFILLED:
            handlers += [
                button(confirm_suggestion(question), CONFIRM.format(question=question)),
                button(change_suggestion(question), CHANGE.format(question=question)),
            ]
        if question == "note":
            handlers += [MessageHandler(free_text, note_typed), button(no_note, NO_NOTE)]
        else:
            handlers.append(MessageHandler(free_text, typed_at_buttons(question)))
        states[ASK[question]] = handlers + common(question)
    states[REVIEWING] = [
        button(send, SEND),
        button(edit_asked, EDIT),
        MessageHandler(free_text, typed_at_buttons(REVIEW)),
        *common(REVIEW),
    ]
    states[PICK] = [CallbackQueryHandler(picked, pattern=PICKED), MessageHandler(free_text, use_the_buttons)]
    states[RESUME] = [button(go_on, GO_ON), button(start_again, OVER), MessageHandler(free_text, use_the_buttons)]
    stops: list[BaseHandler] = [
        CommandHandler(["cancel", "stop"], cancel),
        MessageHandler(filters.TEXT & general.stop_words(content), cancel),
    ]
    return conversation(
        FLOW,
        entry_points=[
            CommandHandler("checkin", checkin_command),
            CallbackQueryHandler(start_from_prompt, pattern=CallbackCodec.pattern(CHECK_IN_START)),
        ],
        states=states,
        fallbacks=stops + fallbacks,
        hooks=FlowHooks(on_resume=_resumed),
    )
