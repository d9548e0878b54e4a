"""Reliable outbound delivery: one outbox for every message the bot sends on its own initiative.

Reminders, check-in prompts, summaries to therapists and staff broadcasts are queued as
rows of the ``outbox`` table (bot.db.delivery_models) and delivered by the dispatcher;
direct replies to an update are not. The database is the source of truth: jobs are not
kept in APScheduler (its job stores must never be shared between schedulers, and
python-telegram-bot does not persist jobs); the JobQueue only runs the dispatcher's tick.

* bot.delivery.outbox       ``OutboxService``: enqueue (idempotency key), cancel, quiet hours
* bot.delivery.schedules    ``ScheduleService``: weekdays + local time + IANA zone, the planner
* bot.delivery.store        claim queries (PostgreSQL ``FOR UPDATE SKIP LOCKED``, SQLite a
                            conditional UPDATE), outcomes, lease recovery
* bot.delivery.dispatcher   the tick, the sender and the outcome writer; crash semantics
* bot.delivery.buttons      buttons under a message (a reminder's), signed at send time
* bot.delivery.pacing       overall rate, one message per second per chat, flood waits
* bot.delivery.ratelimit    replies first: the outbox takes what they leave of Telegram's rate;
                            how outbox pacing and python-telegram-bot's AIORateLimiter agree
* bot.delivery.leadership   several instances: the leader lock, takeover, the shared rate

State machine of a row::

    pending --claim--> sending --accepted--> sent
       ^                  |----403 / 400-----> failed
       |                  |----retries exhausted, past expires_at---> dead
       +---- 429, 5xx, network, quiet hours, lease expired ----+
"""

from __future__ import annotations

import logging

from telegram.ext import Application, CallbackContext

from bot.context import SERVICES_KEY
from bot.db.engine import is_sqlite
from bot.delivery.buttons import OutboxButtons
from bot.delivery.dispatcher import Dispatcher, DispatcherConfig
from bot.delivery.leadership import InstanceRegistry
from bot.delivery.store import OutboxStore

__all__ = ["DISPATCHER_KEY", "Dispatcher", "DispatcherConfig", "dispatcher_of", "start_delivery", "stop_delivery"]

_log = logging.getLogger(__name__)

DISPATCHER_KEY = "outbox_dispatcher"
_JOB_NAME = "outbox-dispatcher"


def dispatcher_of(application: Application) -> Dispatcher | None:
    return application.bot_data.get(DISPATCHER_KEY)


def start_delivery(application: Application) -> Dispatcher:
    """Create the dispatcher for this application and tick it from the JobQueue (it runs
    once the application is started). Called from ``post_init``."""
    existing = dispatcher_of(application)
    if existing is not None:
        return existing
    services = application.bot_data[SERVICES_KEY]
    settings = services.settings
    config = DispatcherConfig.from_settings(settings)
    dispatcher = Dispatcher(
        application.bot,
        OutboxStore(services.sessions, services.crypto),
        services.content,
        config=config,
        planner=services.schedules,
        registry=None if is_sqlite(settings.database_url) else InstanceRegistry(services.sessions),
        may_receive=services.consent.may_receive,
        buttons=OutboxButtons(services.content, services.callbacks),
        documents=services.summaries.document,  # summaries go out as .age documents
        broadcasts=services.broadcasts,  # started, queued and closed on every tick; texts read at send time
    )
    dispatcher.start()
    application.bot_data[DISPATCHER_KEY] = dispatcher
    if application.job_queue is None:
        raise RuntimeError("the outbox needs python-telegram-bot's JobQueue (the job-queue extra)")
    application.job_queue.run_repeating(
        _tick,
        interval=config.tick_seconds,
        first=config.tick_seconds,
        name=_JOB_NAME,
        data=dispatcher,
        # A tick that finds the previous one still busy returns at once (Dispatcher.tick),
        # so overlapping runs are harmless; allowing a few avoids APScheduler's warnings.
        job_kwargs={"max_instances": 3, "coalesce": True, "misfire_grace_time": None},
    )
    _log.info(
        "Outbox dispatcher started (%.0f messages/s overall, %.1f s between messages to a chat)",
        config.rate_per_second, config.per_chat_interval,
    )
    return dispatcher


async def stop_delivery(application: Application) -> None:
    """Stop ticking, then stop the dispatcher cleanly (before the application stops)."""
    if application.job_queue is not None:
        for job in application.job_queue.get_jobs_by_name(_JOB_NAME):
            job.schedule_removal()
    dispatcher = application.bot_data.pop(DISPATCHER_KEY, None)
    if dispatcher is not None:
        await dispatcher.stop()


async def _tick(context: CallbackContext) -> None:
    dispatcher = context.job.data if context.job is not None else None
    if isinstance(dispatcher, Dispatcher):
        await dispatcher.tick()
