"""The application factory: one place that wires python-telegram-bot to the project."""

from __future__ import annotations

import logging
from zoneinfo import ZoneInfo

from telegram.constants import ParseMode
from telegram.ext import Application, ApplicationBuilder, ContextTypes, Defaults, Updater

import handlers
from bot.config import Settings
from bot.context import SERVICES_KEY, BotContext
from bot.delivery import start_delivery
from bot.delivery.ratelimit import bot_rate_limiter
from bot.inbox import InboxQueue, PollingBot
from bot.persistence import SqlPersistence
from bot.services import Services

_log = logging.getLogger(__name__)

# A RetryAfter from Telegram is waited out and the call retried this many times.
RATE_LIMIT_RETRIES = 3


def build_application(
    settings: Settings, services: Services, *, persistence_interval: float = 1.0
) -> Application:
    """Build the bot. Nothing touches the network until the application is initialized."""
    application = (
        ApplicationBuilder()
        .token(settings.require_token())
        .base_url(settings.telegram_api_base_url)
        .base_file_url(settings.telegram_api_file_url)
        .defaults(
            Defaults(
                parse_mode=ParseMode.HTML,
                tzinfo=ZoneInfo(settings.default_timezone),
                # Clinical conversation: messages cannot be forwarded or saved by default.
                # Messages meant to be shared (an invite link, a data export) opt out.
                protect_content=True,
            )
        )
        # AIORateLimiter, with room for the outbox's rate; outbox sends opt out of its
        # RetryAfter retries (see bot.delivery.ratelimit).
        .rate_limiter(
            bot_rate_limiter(settings.outbox_rate_per_second, max_retries=RATE_LIMIT_RETRIES)
        )
        .persistence(SqlPersistence(services.sessions, update_interval=persistence_interval))
        .context_types(ContextTypes(context=BotContext))
        # ConversationHandler needs updates of one person processed in order.
        .concurrent_updates(False)
        .post_init(post_init)
        .updater(None)  # replaced below: polling goes into the inbox
        .build()
    )
    # Polling puts every fetched update into the inbox (committed) before PTB confirms the
    # offset; the inbox consumer, not the Application's update_queue, processes them (bot.inbox).
    queue = InboxQueue(services.inbox)
    application.updater = Updater(PollingBot(application.bot, queue), queue)  # type: ignore[arg-type]
    application.bot_data[SERVICES_KEY] = services
    handlers.register(application)
    return application


async def post_init(application: Application) -> None:
    """After initialize(): the command menus and profile texts, per role and language; the
    outbox dispatcher (it ticks from the JobQueue once the application starts); then, in the
    background, the notice of a new consent version (queued once per client and version)."""
    services: Services = application.bot_data[SERVICES_KEY]
    await services.menus.apply_defaults(application.bot)
    for admin_id in sorted(services.settings.admin_telegram_ids):
        identity = await services.people.identify(admin_id, "", None)
        await services.menus.apply_quietly(application.bot, identity)
    start_delivery(application)
    if application.job_queue is not None:  # in the background: it may be many clients
        application.job_queue.run_once(_announce_consent_version, 1.0, name="consent:new-version")


async def _announce_consent_version(context: BotContext) -> None:
    """A job: every client whose consent is of an earlier version is told, once (a fifth of
    the outbox rate at most; see ConsentService.notify_new_version)."""
    services: Services = context.application.bot_data[SERVICES_KEY]
    queued = await services.consent.notify_new_version(
        services.outbox, per_second=services.settings.outbox_rate_per_second / 5
    )
    if queued:
        _log.info("Consent version %s: %d client(s) will be told", services.consent.current_version, queued)
