"""Services: what handlers call. Each owns its database work through repositories.

The ``Services`` container is built once per process (``bot.runtime.open_services``) and
reached from handlers as ``context.services``.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot.callbacks import CallbackCodec
from bot.config import Settings
from bot.content import Content
from bot.crypto.fields import FieldCrypto
from bot.crypto.keyring import Keyring
from bot.delivery.outbox import OutboxService
from bot.delivery.schedules import ScheduleService
from bot.services.audit import AuditService
from bot.services.consent import ConsentService
from bot.services.data_rights import DataRightsService
from bot.services.enrollment import ClientEnrollmentService
from bot.services.invites import InviteService
from bot.services.learning import LearningService
from bot.services.clinic import ClinicService
from bot.services.exercise_log import ExerciseLogService
from bot.services.progress import ProgressService
from bot.services.menus import CommandMenus
from bot.services.people import PeopleService
from bot.services.preferences import PreferencesService
from bot.services.reminders import ReminderService
from bot.safety import SafetyDetector
from bot.services.safety_flags import SafetyFlagService
from bot.services.safety_plan import SafetyPlanService
from bot.safety.resources import CrisisResources
from bot.services.therapist_keys import TherapistKeyService
from bot.services.appointments import AppointmentService
from bot.services.checkins import CheckInService
from bot.services.summaries import SummaryService
from bot.services.broadcasts import BroadcastService
from bot.inbox import Inbox


@dataclass
class Services:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    content: Content
    keyring: Keyring
    people: PeopleService
    menus: CommandMenus
    crypto: FieldCrypto  # encrypted columns: data keys (key store) + cache; sessions use it
    audit: AuditService
    callbacks: CallbackCodec  # signed button payloads
    invites: InviteService  # one-time invite links (therapists, staff, clients)
    clinic: ClinicService  # therapists and staff joining; /clients, /therapists, /staff
    consent: ConsentService  # consent records; has_active_consent() before reminders/summaries
    preferences: PreferencesService  # language and time zone
    enrollment: ClientEnrollmentService  # clients joining or switching therapist
    data_rights: DataRightsService  # /mydata export and /delete erasure
    outbox: OutboxService  # messages the bot sends on its own initiative (bot.delivery)
    schedules: ScheduleService  # recurring reminders, planned into the outbox
    exercise_log: ExerciseLogService  # /practice: calming exercises and their ratings
    progress: ProgressService  # /progress: a client's own practice as a chart and one line
    reminders: ReminderService  # a client's own /reminders (owner-checked), snooze / skip
    learning: LearningService  # /learn: modules read, "Ask my therapist" questions for summaries
    safety: SafetyDetector  # routes a client's typed message: risk, boundary or none (handlers/safety.py)
    safety_flags: SafetyFlagService  # what the safety layer keeps for the therapist; risk alerts
    safety_plans: SafetyPlanService  # /safetyplan: a client's own safety plan (owner-checked)
    crisis: CrisisResources  # emergency numbers and crisis lines per country (content/crisis_lines.yaml)
    therapist_keys: TherapistKeyService  # /setkey: the age key a therapist's summaries are encrypted to
    appointments: AppointmentService  # /appointments: in the therapist's zone; reminders, check-in prompts
    checkins: CheckInService  # /checkin: a client's own pre-appointment check-in (answers encrypted)
    summaries: SummaryService  # readiness of check-ins; summaries encrypted to the therapist's key
    broadcasts: BroadcastService  # /broadcast: staff messages to many clients, through the outbox
    inbox: Inbox  # every update, stored before Telegram is told it arrived (bot.inbox)

    async def close(self) -> None:
        try:
            await self.crypto.aclose()
        finally:
            await self.engine.dispose()
