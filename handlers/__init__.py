"""Every handler, registered in one explicit order.

python-telegram-bot tries the handlers of a group in order and runs the first that
matches; groups run from the lowest number up. The order below is the product's routing:

  group SEEN (-100)  remember the texts this update carries, so that logs can redact them
  group GUARD (-10)  private chats only: groups get a polite refusal and nothing else runs
  group SECRETS (-7) a pasted private key (age, PEM) is deleted at once and nothing else runs
  group SAFETY (-5)  the safety layer: a client's typed message that takes the crisis path or
                     meets the boundary (memory work) is answered here, and no flow sees it
  group MAIN  (0)    0. the bot blocked or unblocked (my_chat_member: no message, no conflict)
                     1. conversations (their states take precedence while one is active)
                     2. commands without a conversation (/therapists, /staff, /language,
                        /mydata, /delete, /consent, /summaries, /broadcasts) and the buttons of their
                        messages, and the buttons under messages the outbox delivered
                        (reminders, appointment reminders)
                     3. commands available at any time (/help, /about, /cancel or a stop word)
                     4. fallbacks: unknown commands, stray text, stale buttons
  group FLOWS (50)   the one-active-flow rule (bot.flows): the flow that handled the update
                     owns the person's next message, other flows end; a command ends a flow
  group AFTER (100)  write conversation states through to the database after every update

Add a new conversation to ``conversations()``, a command available at any time to
``general.build``; nothing goes after the fallbacks, which match everything.
"""

from __future__ import annotations

from telegram import Update
from telegram.ext import Application, BaseHandler, TypeHandler

from bot.content import Content
from bot.context import CONSUMING_HOOKS_KEY, SERVICES_KEY
from bot.flows import Flows
from bot.logs import remember_update_texts
from handlers import (
    account,
    appointments,
    broadcast,
    checkin,
    clients,
    errors,
    exercises,
    fallback,
    general,
    guard,
    invite,
    join_client,
    learn,
    membership,
    preferences,
    progress,
    reminders,
    safety,
    safety_plan,
    setkey,
    settings,
    start,
    summaries,
    therapists,
)
from handlers.access import public

SEEN, GUARD, SECRETS, SAFETY, MAIN, FLOWS, AFTER = -100, -10, -7, -5, 0, 50, 100


def conversations(content: Content) -> list[BaseHandler]:
    """Every conversation ends on /cancel or a stop word, whatever state it is in."""
    fallbacks = general.cancel_in_conversation(content)
    free_text = general.free_text(content)
    return [
        start.build(fallbacks, free_text),
        invite.build(fallbacks, free_text),  # /invite (therapists)
        clients.build(fallbacks, free_text),  # /clients and its buttons (therapists)
        join_client.build(fallbacks, free_text),  # a client joining: the steps after /start <link>
        preferences.build_timezone(fallbacks, free_text),  # /timezone (everyone enrolled)
        # /settings (everyone enrolled): language and zone; clients turn practice announcements off or on
        settings.build(fallbacks, free_text),
        reminders.build(fallbacks, free_text),  # /reminders (clients)
        exercises.build(fallbacks, free_text, content),  # /practice: calming exercises (clients)
        safety.build(fallbacks, free_text),  # a note for the therapist, inside a safety pause
        # /safetyplan: the client's own safety plan; its buttons work from any message
        # (handlers.safety_plan.show_plan is what the crisis path shows)
        safety_plan.build(fallbacks, free_text, content),
        setkey.build(fallbacks, free_text),  # /setkey: the age key summaries are encrypted to (therapists)
        # /appointments: therapists and staff make, move and cancel; clients read their own
        appointments.build(fallbacks, free_text),
        # /checkin and [Start my check-in] under a prompt: the pre-appointment check-in (clients)
        checkin.build(fallbacks, free_text, content),
        broadcast.build(fallbacks, free_text),  # /broadcast: a message to many clients (staff)
    ]


@public
async def _persist_now(update: Update, context) -> None:
    """PTB writes persistence on an interval; writing after each update means a restart (or
    a crash) loses no step a person has completed. Under the inbox consumer the states are
    collected and written with the update's completion, in one transaction (bot.inbox)."""
    await context.application.update_persistence()


@public
async def _one_active_flow(update: Update, context) -> None:
    await context.flows.settle(update, context)


@public
async def _remember_texts(update: Update, context) -> None:
    remember_update_texts(update)


async def _read_paused_flows_again(application: Application, consuming: bool) -> None:
    Flows.of(application).forget_cache()


def register(application: Application) -> None:
    application.add_handler(TypeHandler(Update, _remember_texts), group=SEEN)
    application.add_handler(guard.handler, group=GUARD)
    application.add_handler(setkey.private_key_guard(), group=SECRETS)  # before any conversation sees it
    application.add_handlers(safety.screening(), group=SAFETY)

    content: Content = application.bot_data[SERVICES_KEY].content
    application.add_handler(membership.handler, group=MAIN)  # blocked / unblocked: reachable or not
    application.add_handlers(conversations(content), group=MAIN)
    application.add_handlers(therapists.build(), group=MAIN)  # /therapists, /staff
    application.add_handlers(preferences.build_language(), group=MAIN)  # /language
    application.add_handlers(account.build(), group=MAIN)  # /mydata, /delete, /consent (clients)
    application.add_handlers(learn.build(), group=MAIN)  # /learn and its buttons (everyone)
    application.add_handlers(progress.build(), group=MAIN)  # /progress (clients)
    application.add_handlers(summaries.build(), group=MAIN)  # /summaries (therapists)
    application.add_handlers(broadcast.build_list(), group=MAIN)  # /broadcasts and Cancel (staff)
    application.add_handlers(reminders.build_buttons(), group=MAIN)  # under a delivered reminder
    application.add_handlers(appointments.build_buttons(), group=MAIN)  # under an appointment reminder
    application.add_handlers(safety.buttons(), group=MAIN)  # under a boundary or crisis message
    application.add_handlers(general.build(content), group=MAIN)
    application.add_handlers(fallback.handlers, group=MAIN)

    Flows.install(application, application.handlers[MAIN])
    application.add_handler(TypeHandler(Update, _one_active_flow), group=FLOWS)
    application.add_handler(TypeHandler(Update, _persist_now), group=AFTER)

    # When this instance starts consuming updates: resume timed exercises a restart stopped.
    application.bot_data.setdefault(CONSUMING_HOOKS_KEY, []).append(exercises.on_consuming)
    application.bot_data[CONSUMING_HOOKS_KEY].append(_read_paused_flows_again)

    # Staff broadcasts: the sender's progress message, edited while it is sent.
    broadcast.start_progress_job(application, 2 * application.bot_data[SERVICES_KEY].settings.outbox_tick_seconds)

    application.add_error_handler(errors.on_error)
