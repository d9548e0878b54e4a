"""Running the bot: open the database and keyring, build the application, serve updates.

``run_bot`` is the one code path for production (``imrs-bot run``), the sandbox and the
tests: they differ only in the settings (which Bot API server, which database) and in who
sets the stop event.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from pathlib import Path
from typing import Any

from telegram import Update
from telegram.ext import Application

from bot.app import build_application
from bot.callbacks import CallbackCodec
from bot.config import Settings
from bot.content import Content
from bot.context import CONSUMING_HOOKS_KEY, SERVICES_KEY, UPDATE_CONSUMER_KEY
from bot.crypto.fields import FieldCrypto
from bot.crypto.keyring import EMBEDDED_KEYS_FILE, Keyring, load_keyring
from bot.crypto.keystore import SHARED_KEYSTORE_WARNING, KeyStore, resolve_keystore_url
from bot.db.engine import check_database, create_engine, session_factory
from bot.db.migrate import ensure_schema
from bot.delivery import dispatcher_of, stop_delivery
from bot.delivery.leadership import UpdateConsumer, leader_lock_for
from bot.delivery.outbox import OutboxService
from bot.delivery.schedules import ScheduleService
from bot.services.reminders import ReminderService
from bot.safety import SafetyDetector
from bot.services.safety_flags import SafetyFlagService
from bot.services import Services
from bot.services.audit import AuditService
from bot.services.consent import ConsentService
from bot.services.data_rights import DataRightsService
from bot.services.enrollment import ClientEnrollmentService
from bot.services.invites import InviteService
from bot.services.learning import LearningService
from bot.services.clinic import ClinicService
from bot.services.exercise_log import ExerciseLogService
from bot.services.therapist_keys import TherapistKeyService
from bot.services.appointments import AppointmentService, Planning
from bot.services.checkins import CheckInService
from bot.services.summaries import SummaryService
from bot.services.progress import ProgressService
from bot.services.menus import CommandMenus
from bot.services.people import PeopleService
from bot.services.notices import Notices
from bot.services.preferences import PreferencesService
from bot.services.safety_plan import SafetyPlanService
from bot.safety.resources import load_crisis_lines
from bot.services.broadcasts import BroadcastService
from bot.inbox import Inbox, InboxConsumer

_log = logging.getLogger(__name__)


async def open_services(
    settings: Settings, *, embedded_keys_file: Path = EMBEDDED_KEYS_FILE
) -> Services:
    """Everything the handlers need, checked: a reachable, migrated database, a keyring and
    the key store (bot.crypto.keystore) behind the encrypted columns.

    The embedded SQLite default migrates itself; any other database must have been
    migrated with ``imrs-bot migrate`` (a release step), so two instances never race.
    The key store always migrates itself (see bot.db.migrate.ensure_keystore_schema)."""
    content = Content(default_language=settings.default_language)
    crisis = load_crisis_lines(override=settings.crisis_lines_file)  # a malformed entry stops here
    keyring = load_keyring(
        keys_json=settings.imrs_keys.get_secret_value() if settings.imrs_keys else None,
        keys_file=settings.imrs_keys_file,
        embedded=settings.embedded,
        embedded_file=embedded_keys_file,
    )
    # Enough pooled connections for the updates processed at once (bot.inbox) and the rest
    # (outbox, jobs): a connection beyond the pool is opened and closed for each use, which
    # costs a PostgreSQL server a new backend process and SQLite a new thread.
    engine = create_engine(settings.database_url, pool_size=settings.inbox_concurrency + 4)
    try:
        await check_database(engine)
        await ensure_schema(settings.database_url, auto_migrate=settings.embedded)
        keystore = await _open_keystore(settings, keyring, embedded_keys_file)
    except BaseException:
        await engine.dispose()
        raise
    crypto = FieldCrypto(keystore)
    sessions = crypto.attach(session_factory(engine))
    invites = InviteService(sessions)
    outbox = OutboxService(sessions)
    schedules = ScheduleService(sessions, outbox, default_grace_minutes=settings.reminder_grace_minutes)
    notices = Notices(outbox, content)  # queued by the services, in the transaction of the change
    # Listens to completed check-ins (CheckInService listeners) and to a therapist's first key.
    summaries = SummaryService(sessions, content, outbox, notices)
    appointments = AppointmentService(
        sessions,
        outbox=outbox,
        content=content,
        planning=Planning(
            reminder_hours=settings.appointment_reminder_hours,
            checkin_prompt=timedelta(hours=settings.checkin_prompt_hours),
            checkin_reminder_after=timedelta(hours=settings.checkin_reminder_after_hours),
        ),
    )
    consent = ConsentService(sessions, content, notices)
    broadcasts = BroadcastService(
        sessions, outbox=outbox, content=content, may_receive=consent.may_receive,
        rate_per_second=settings.outbox_rate_per_second,
    )
    return Services(
        settings=settings,
        engine=engine,
        sessions=sessions,
        content=content,
        keyring=keyring,
        people=PeopleService(
            sessions,
            content,
            admin_ids=settings.admin_telegram_ids,
            default_timezone=settings.default_timezone,
        ),
        menus=CommandMenus(content),
        crypto=crypto,
        audit=AuditService(sessions),
        callbacks=CallbackCodec(keyring),
        invites=invites,
        clinic=ClinicService(sessions, invites, notices, crypto, appointments=appointments),
        consent=consent,
        preferences=PreferencesService(sessions, content, schedules),
        enrollment=ClientEnrollmentService(sessions, invites, notices, appointments=appointments),
        data_rights=DataRightsService(sessions, crypto),
        outbox=outbox,
        schedules=schedules,
        exercise_log=ExerciseLogService(sessions),
        progress=ProgressService(sessions),
        reminders=ReminderService(sessions, schedules, outbox),
        learning=LearningService(sessions, content),
        safety=SafetyDetector.from_content(content.root, settings.default_language),
        safety_flags=SafetyFlagService(sessions, notices, alert_policy=settings.risk_alert),
        safety_plans=SafetyPlanService(sessions),
        crisis=crisis,
        therapist_keys=TherapistKeyService(sessions, on_key_set=summaries.release_waiting),
        appointments=appointments,
        # A completed check-in's summary is made in the same transaction (a listener).
        checkins=CheckInService(sessions, outbox, listeners=[summaries.on_check_in_completed]),
        summaries=summaries,
        broadcasts=broadcasts,
        inbox=Inbox(sessions, crypto, retention_seconds=settings.inbox_retention_seconds),
    )


async def _open_keystore(settings: Settings, keyring: Keyring, embedded_keys_file: Path) -> KeyStore:
    """The key store (IMRS_KEYSTORE_URL, or its default), migrated. A keyring from a file is
    followed when ``imrs-bot keys add/rotate/retire`` rewrite it; one from IMRS_KEYS is fixed."""
    location = resolve_keystore_url(settings.database_url, settings.imrs_keystore_url)
    if location.shared_with_clinical:
        _log.warning(SHARED_KEYSTORE_WARNING)
    keyring_file: Path | None = None
    if not settings.imrs_keys:
        keyring_file = settings.imrs_keys_file or (embedded_keys_file if settings.embedded else None)
    return await KeyStore.open(location.url, keyring, keyring_file=keyring_file)


async def run_bot(
    settings: Settings,
    *,
    webhook: bool = False,
    stop: asyncio.Event | None = None,
    ready: asyncio.Future[Application] | None = None,
    services: Services | None = None,
    poll_timeout: int = 30,
) -> None:
    """Serve updates until ``stop`` is set (or forever), then shut down cleanly.

    Polling by default; with ``webhook`` the project's webhook server on ``settings.port``
    (see ``bot.webhook``), on every instance: each stores what it receives in the inbox
    (bot.inbox). ``ready`` gets the application once updates are being consumed: with
    PostgreSQL, once this instance holds the leader lock (a standby delivers the outbox, and
    stores webhook updates, meanwhile; see ``bot.delivery.leadership``)."""
    stop = stop or asyncio.Event()
    owns_services = services is None
    services = services or await open_services(settings)
    application = build_application(settings, services)
    try:
        async with application:  # initialize(): getMe, persistence loaded
            if application.post_init:
                await application.post_init(application)  # also starts the outbox dispatcher

            def consuming() -> None:
                if ready is not None and not ready.done():
                    ready.set_result(application)

            servers: list[Any] = []
            try:
                await application.start()
                if webhook:  # every instance takes webhook updates into the inbox
                    from bot.webhook import start_webhook_server

                    servers.append(await start_webhook_server(application, settings))
                # Every instance delivers the outbox; with PostgreSQL only the one holding the
                # leader lock consumes updates (bot.delivery.leadership). Returns once `stop` is set.
                consumer = _update_consumer(application, settings, webhook=webhook, poll_timeout=poll_timeout)
                await consumer.run(stop, on_consuming=consuming)
            finally:
                _log.info("Stopping")
                while servers:
                    servers.pop().stop()
                await stop_delivery(application)
            await application.stop()
    finally:
        if owns_services:
            await services.close()


async def start_bot_task(
    settings: Settings, *, stop: asyncio.Event, timeout: float | None = None, **options: object
) -> tuple[asyncio.Task[None], Application]:
    """``run_bot`` in a background task, once it serves updates: for the sandbox and tests.
    A start-up failure is raised here, as it would be by ``run_bot`` itself."""
    ready: asyncio.Future[Application] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(run_bot(settings, stop=stop, ready=ready, **options))  # type: ignore[arg-type]
    waiting: set[asyncio.Future[Any]] = {task, ready}
    done, _ = await asyncio.wait(waiting, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    if ready in done:
        return task, ready.result()
    if task in done:
        task.result()  # raises what went wrong
        raise RuntimeError("the bot stopped during start-up")
    stop.set()
    raise TimeoutError(f"the bot did not start within {timeout} s")


def _update_consumer(
    application: Application, settings: Settings, *, webhook: bool, poll_timeout: int
) -> UpdateConsumer:
    """While this instance holds the leader lock: polling into the inbox (not with webhooks:
    every instance's server stores them) and the inbox consumer."""
    mode = "webhook" if webhook else "polling"
    services = application.bot_data[SERVICES_KEY]
    inbox_consumer = InboxConsumer(
        application, services.inbox, poll_seconds=settings.inbox_poll_seconds, concurrency=settings.inbox_concurrency
    )

    async def start() -> None:
        inbox_consumer.start()
        if not webhook:
            await _start_polling(application, poll_timeout)
        _log.info("Bot @%s is running (%s)", application.bot.username, mode)

    async def stop() -> None:
        if application.updater and application.updater.running:
            await application.updater.stop()  # confirms only what the inbox stored
        await inbox_consumer.stop()

    async def changed(consuming: bool) -> None:
        dispatcher = dispatcher_of(application)
        if dispatcher is not None:
            dispatcher.consuming_updates = consuming
        for hook in application.bot_data.get(CONSUMING_HOOKS_KEY, ()):
            await hook(application, consuming)

    consumer = UpdateConsumer(
        application,
        leader_lock_for(settings.database_url),
        start=start,
        stop=stop,
        retry_seconds=settings.leader_retry_seconds,
        on_change=changed,
    )
    application.bot_data[UPDATE_CONSUMER_KEY] = consumer  # /healthcheck reports the role
    return consumer


async def _start_polling(application: Application, poll_timeout: int) -> None:
    assert application.updater is not None
    # A webhook left over from a webhook deployment would make getUpdates fail.
    await application.bot.delete_webhook(drop_pending_updates=False)
    await application.updater.start_polling(
        poll_interval=0,
        timeout=poll_timeout,
        allowed_updates=Update.ALL_TYPES,
        drop_pending_updates=False,
    )
