"""The ORM models (SQLAlchemy 2 typed declarative).

The schema only ever changes through a new Alembic migration in
``migrations/versions``; ``tests/test_migrations.py`` checks that these models
and the migrated schema agree, so a model change without a migration fails the
tests.

Privacy: anything a person wrote is an encrypted column (``encrypted(owner=...)``, see
bot.crypto.fields): stored as AES-GCM ciphertext under the owner's data key, plaintext in
the objects. ``people.alias`` (a pseudonym, never a real name) is the first one.

Ids: people (and every table with encrypted columns) get random 63-bit ids assigned in
Python, because the row id is bound into the ciphertext and must be known before the
INSERT. Every column referring to a person is therefore ``PersonId`` (BIGINT on
PostgreSQL, SQLite's 64-bit INTEGER).
"""

# (no "from __future__ import annotations": SQLAlchemy would eval every Mapped[...] string at import)

import enum
from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    Enum,
    ForeignKey,
    Index,
    LargeBinary,
    MetaData,
    String,
    Table,
    UniqueConstraint,
    false,
    true,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from bot.crypto.fields import PersonId, encrypted, row_id_column
from bot.db.types import UTCDateTime, utcnow

# The naming convention recommended by Alembic: every constraint and index gets a
# deterministic name, so later migrations can drop/alter them on every backend
# (SQLite batch mode needs names to find constraints again).
NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    # Every model here maps one table (SQLAlchemy types __table__ as any FromClause).
    __table__: ClassVar[Table]

    # Python `datetime` columns default to our UTC-enforcing type.
    type_annotation_map = {datetime: UTCDateTime()}


class Role(enum.StrEnum):
    ADMIN = "admin"
    STAFF = "staff"
    THERAPIST = "therapist"
    CLIENT = "client"


class InviteKind(enum.StrEnum):
    """Who an invite link lets in."""

    THERAPIST = "therapist"
    STAFF = "staff"
    CLIENT = "client"


class AppointmentKind(enum.StrEnum):
    PREPARATION = "preparation"
    IMRS = "imrs"
    EVALUATION = "evaluation"
    OTHER = "other"


class AppointmentResponse(enum.StrEnum):
    ATTENDING = "attending"  # "I'll be there"
    RESCHEDULE = "reschedule"  # "I need to reschedule" (the therapist is told)


class ConsentChoice(enum.StrEnum):
    GRANTED = "granted"
    WITHDRAWN = "withdrawn"


def _string_enum(enum_cls: type[enum.StrEnum], name: str, length: int = 16) -> Enum:
    """A portable "string enum": VARCHAR plus a named CHECK constraint (no native PG enum).

    Values (not member names) are stored, so the database reads ``'admin'``.
    Adding a member later needs a migration that replaces the CHECK constraint.
    """
    return Enum(
        enum_cls,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=length,
        values_callable=lambda members: [m.value for m in members],
        validate_strings=True,
    )


class Person(Base):
    """Anyone who talks to the bot: admins, staff, therapists and clients."""

    __tablename__ = "people"

    id: Mapped[int] = row_id_column()
    telegram_id: Mapped[int] = mapped_column(BigInteger, unique=True)
    role: Mapped[Role] = mapped_column(_string_enum(Role, "role"))
    language: Mapped[str] = mapped_column(String(16))  # BCP 47 tag, e.g. "en", "nl"
    timezone: Mapped[str] = mapped_column(String(64))  # IANA name, e.g. "Europe/Amsterdam"
    alias: Mapped[str | None] = encrypted(owner="id", max_length=64)  # a pseudonym, never a real name
    display_name: Mapped[str | None] = encrypted(owner="id", max_length=64)  # therapists and staff
    active: Mapped[bool] = mapped_column(default=True, server_default=true())
    # Practice announcements (staff broadcasts): False once the person opted out in /settings.
    announcements: Mapped[bool] = mapped_column(default=True, server_default=true())
    # When staff deactivated this therapist: their client links end at exactly this time,
    # which is how "the clients of a deactivated therapist" are found to be moved.
    deactivated_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    last_seen_at: Mapped[datetime | None]

    def __repr__(self) -> str:  # no telegram id / alias in logs
        return f"<Person id={self.id} role={self.role}>"


class TherapistClientLink(Base):
    """Which therapist a client works with; history is kept by ending links, not deleting them."""

    __tablename__ = "therapist_client_links"
    __table_args__ = (CheckConstraint("therapist_id <> client_id", name="not_self"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    therapist_id: Mapped[int] = mapped_column(
        PersonId, ForeignKey("people.id", ondelete="CASCADE"), index=True
    )
    client_id: Mapped[int] = mapped_column(
        PersonId, ForeignKey("people.id", ondelete="CASCADE"), index=True
    )
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    ended_at: Mapped[datetime | None]

    def __repr__(self) -> str:
        return (
            f"<TherapistClientLink id={self.id} therapist_id={self.therapist_id} "
            f"client_id={self.client_id} active={self.ended_at is None}>"
        )


# At most one active (not ended) link per client. A partial unique index expresses
# this on both SQLite and PostgreSQL; declared after the class so that the WHERE
# clause can use the mapped column.
Index(
    "uq_therapist_client_links_active_client",
    TherapistClientLink.client_id,
    unique=True,
    sqlite_where=TherapistClientLink.ended_at.is_(None),
    postgresql_where=TherapistClientLink.ended_at.is_(None),
)


class Invite(Base):
    """A one-time invite link. Only the SHA-256 of its token is stored, never the token.

    Single use: ``used_at`` is set by one conditional UPDATE (InviteRepository.claim).
    ``therapist_id`` is the therapist a client invite links to (NULL for therapist and
    staff invites); ``alias`` is the pseudonym the therapist gave, encrypted under the
    therapist's key.
    """

    __tablename__ = "invites"

    id: Mapped[int] = row_id_column()
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)  # sha256 hex
    kind: Mapped[InviteKind] = mapped_column(_string_enum(InviteKind, "kind"))
    created_by_id: Mapped[int | None] = mapped_column(
        PersonId, ForeignKey("people.id", ondelete="SET NULL"), index=True
    )
    therapist_id: Mapped[int | None] = mapped_column(
        PersonId, ForeignKey("people.id", ondelete="CASCADE"), index=True
    )
    alias: Mapped[str | None] = encrypted(owner="therapist_id", max_length=64)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]
    used_by_id: Mapped[int | None] = mapped_column(
        PersonId, ForeignKey("people.id", ondelete="SET NULL"), index=True
    )
    revoked_at: Mapped[datetime | None]

    def __repr__(self) -> str:  # no token hash, no alias
        return f"<Invite id={self.id} kind={self.kind} used={self.used_at is not None}>"


class ConsentRecord(Base):
    """One consent decision. Append-only by convention: a withdrawal is a new row."""

    __tablename__ = "consent_records"
    # "The latest consent of a person" is the common query.
    __table_args__ = (
        Index("ix_consent_records_person_id_recorded_at", "person_id", "recorded_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    person_id: Mapped[int] = mapped_column(PersonId, ForeignKey("people.id", ondelete="CASCADE"))
    consent_version: Mapped[str] = mapped_column(String(32))
    choice: Mapped[ConsentChoice] = mapped_column(_string_enum(ConsentChoice, "choice"))
    recorded_at: Mapped[datetime] = mapped_column(default=utcnow)

    def __repr__(self) -> str:
        return (
            f"<ConsentRecord id={self.id} person_id={self.person_id} "
            f"version={self.consent_version!r} choice={self.choice}>"
        )


class AuditEvent(Base):
    """Who did what, when. ``detail`` holds ids and codes only, never clinical text."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    occurred_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    # NULL actor = the system itself (scheduled jobs, migrations, ...).
    actor_telegram_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
    actor_role: Mapped[str | None] = mapped_column(String(16))
    action: Mapped[str] = mapped_column(String(64))  # e.g. "person.created"
    # Audit history outlives the person it was about: deleting them only unlinks.
    subject_person_id: Mapped[int | None] = mapped_column(
        PersonId, ForeignKey("people.id", ondelete="SET NULL"), index=True
    )
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))

    def __repr__(self) -> str:
        return f"<AuditEvent id={self.id} action={self.action!r} at={self.occurred_at}>"


class ConversationState(Base):
    """The state of a persistent python-telegram-bot ConversationHandler (see bot.persistence).

    ``key`` is the conversation key tuple, JSON-encoded (e.g. ``[123,456]``);
    ``state`` is the handler state (an int or a string), stored as JSON.
    """

    __tablename__ = "conversation_states"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    state: Mapped[Any] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    def __repr__(self) -> str:
        return f"<ConversationState name={self.name!r} key={self.key!r}>"



class LearnProgress(Base):
    """How far a client got in one /learn module (people without a role get no rows).

    Pages are reached in order (Next), so ``pages_read`` is the furthest page reached;
    ``completed_at`` is set when the client reached the module's last page.
    """

    __tablename__ = "learn_progress"
    __table_args__ = (
        UniqueConstraint("client_id", "module_id"),
        CheckConstraint("pages_read >= 0", name="pages_read_not_negative"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    client_id: Mapped[int] = mapped_column(PersonId, ForeignKey("people.id", ondelete="CASCADE"))
    module_id: Mapped[str] = mapped_column(String(64))
    pages_read: Mapped[int] = mapped_column(default=0, server_default="0")
    completed_at: Mapped[datetime | None]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    def __repr__(self) -> str:
        return (
            f"<LearnProgress client_id={self.client_id} module={self.module_id!r} "
            f"pages_read={self.pages_read} completed={self.completed_at is not None}>"
        )


class TherapistQuestion(Base):
    """"Ask my therapist about this" on a /learn page: the module and page, no typed words.

    Open until a summary includes it (``included_in_summary_at``); at most one open question
    per client and module (``uq_therapist_questions_open``).
    """

    __tablename__ = "therapist_questions"
    __table_args__ = (CheckConstraint("page >= 1", name="page_positive"),)

    id: Mapped[int] = row_id_column()
    client_id: Mapped[int] = mapped_column(
        PersonId, ForeignKey("people.id", ondelete="CASCADE"), index=True
    )
    module_id: Mapped[str] = mapped_column(String(64))
    page: Mapped[int]  # 1-based
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    included_in_summary_at: Mapped[datetime | None]

    def __repr__(self) -> str:
        return (
            f"<TherapistQuestion id={self.id} client_id={self.client_id} "
            f"module={self.module_id!r} page={self.page}>"
        )


Index(
    "uq_therapist_questions_open",
    TherapistQuestion.client_id,
    TherapistQuestion.module_id,
    unique=True,
    sqlite_where=TherapistQuestion.included_in_summary_at.is_(None),
    postgresql_where=TherapistQuestion.included_in_summary_at.is_(None),
)


class ExerciseRun(Base):
    """One calming exercise of /practice (bot.services.exercise_log). The 0-10 distress
    ratings are clinical: encrypted under the client's key (the number as text)."""

    # The table keeps its first name: every encrypted value's associated data binds the
    # table name (bot.crypto.fields), so renaming the table would make them unreadable.
    __tablename__ = "practice_sessions"

    id: Mapped[int] = row_id_column()
    client_id: Mapped[int] = mapped_column(PersonId, ForeignKey("people.id", ondelete="CASCADE"), index=True)
    exercise: Mapped[str] = mapped_column(String(16))
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    ended_at: Mapped[datetime | None]
    stopped_early: Mapped[bool] = mapped_column(default=False, server_default=false())
    distress_before: Mapped[str | None] = encrypted(owner="client_id", max_length=2)
    distress_after: Mapped[str | None] = encrypted(owner="client_id", max_length=2)
    # Where a timed exercise is (nothing clinical): the message it edits and the step shown
    # since ``run_step_since``. A restart resumes the exercise from them (handlers/exercises).
    run_message_id: Mapped[int | None] = mapped_column(BigInteger)
    run_step: Mapped[int | None]
    run_step_since: Mapped[datetime | None] = mapped_column(index=True)

    def __repr__(self) -> str:  # no ratings in logs
        return f"<ExerciseRun id={self.id} exercise={self.exercise!r}>"


class SafePlace(Base):
    """A client's own safe place (/practice), in their words: what they see, hear and feel
    there. One per client; a resource, never a memory. Encrypted under the client's key."""

    __tablename__ = "safe_places"

    id: Mapped[int] = row_id_column()
    client_id: Mapped[int] = mapped_column(
        PersonId, ForeignKey("people.id", ondelete="CASCADE"), unique=True, index=True
    )
    see: Mapped[str | None] = encrypted(owner="client_id", max_length=200)
    hear: Mapped[str | None] = encrypted(owner="client_id", max_length=200)
    feel: Mapped[str | None] = encrypted(owner="client_id", max_length=200)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    def __repr__(self) -> str:  # no words in logs
        return f"<SafePlace id={self.id}>"


# The six steps of a safety plan (Stanley & Brown, 2012), in order: the attribute names of
# SafetyPlan, the names of their texts in content (safetyplan.steps.<step>) and of the
# conversation's states. Never rename one: its values are bound to the column name.
SAFETY_PLAN_STEPS = (
    "warning_signs",  # 1 the signs that a crisis may be coming
    "coping",  # 2 what I can do on my own to feel a little better
    "distraction",  # 3 people and places that take my mind off things
    "ask_for_help",  # 4 people I can ask for help
    "professionals",  # 5 professionals and services I can contact
    "safe_environment",  # 6 making my surroundings safer
)
SAFETY_PLAN_STEP_MAX = 1000  # characters per step (a few short items, one a line)


class SafetyPlan(Base):
    """A client's own safety plan (/safetyplan, bot.services.safety_plan): six steps in their
    words, each encrypted under the client's key. One per client. ``steps_done`` (how many
    steps the client has gone through, answered or skipped) is where building it resumes;
    the therapist may read it only while ``shared_with_therapist`` is true."""

    __tablename__ = "safety_plans"
    __table_args__ = (CheckConstraint("steps_done BETWEEN 0 AND 6", name="steps_done_range"),)

    id: Mapped[int] = row_id_column()
    client_id: Mapped[int] = mapped_column(
        PersonId, ForeignKey("people.id", ondelete="CASCADE"), unique=True, index=True
    )
    warning_signs: Mapped[str | None] = encrypted(owner="client_id", max_length=SAFETY_PLAN_STEP_MAX)
    coping: Mapped[str | None] = encrypted(owner="client_id", max_length=SAFETY_PLAN_STEP_MAX)
    distraction: Mapped[str | None] = encrypted(owner="client_id", max_length=SAFETY_PLAN_STEP_MAX)
    ask_for_help: Mapped[str | None] = encrypted(owner="client_id", max_length=SAFETY_PLAN_STEP_MAX)
    professionals: Mapped[str | None] = encrypted(owner="client_id", max_length=SAFETY_PLAN_STEP_MAX)
    safe_environment: Mapped[str | None] = encrypted(owner="client_id", max_length=SAFETY_PLAN_STEP_MAX)
    steps_done: Mapped[int] = mapped_column(default=0, server_default="0")
    shared_with_therapist: Mapped[bool] = mapped_column(default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    def __repr__(self) -> str:  # no words in logs
        return f"<SafetyPlan id={self.id} steps_done={self.steps_done} shared={self.shared_with_therapist}>"
class TherapistKey(Base):
    """An age public key (recipient, ``age1…``) a therapist registered with /setkey: what the
    readiness summaries are encrypted to (bot.crypto.age). History is kept: a new key ends
    the current one (``replaced_at``), and nothing encrypted earlier is re-encrypted.

    A row is *proposed* (``set_at`` NULL) while the therapist confirms that it replaces
    their current key, *current* once set and not replaced, *history* after that.

    The key is not secret, but it decides who can read the summaries, so it is stored as an
    encrypted column under the therapist's own data key: AES-GCM binds it to this row and
    this therapist, so a key written into the database by anyone without the keyring, or
    copied from another therapist's row, does not decrypt and is never used. The fingerprint
    is plain (it is shown and audited) and checked against the key on every read.
    """

    __tablename__ = "therapist_keys"

    id: Mapped[int] = row_id_column()
    therapist_id: Mapped[int] = mapped_column(
        PersonId, ForeignKey("people.id", ondelete="CASCADE"), index=True
    )
    recipient: Mapped[str] = encrypted(owner="therapist_id", max_length=128)
    fingerprint: Mapped[str] = mapped_column(String(19))  # "3F9A 12BC 7D01 E4A2"
    proposed_at: Mapped[datetime] = mapped_column(default=utcnow)
    set_at: Mapped[datetime | None]  # NULL: proposed, waiting for the therapist to confirm
    replaced_at: Mapped[datetime | None]

    def __repr__(self) -> str:  # no key in logs
        return f"<TherapistKey id={self.id} current={self.set_at is not None and self.replaced_at is None}>"


# At most one current key per therapist.
Index(
    "uq_therapist_keys_current",
    TherapistKey.therapist_id,
    unique=True,
    sqlite_where=TherapistKey.set_at.is_not(None) & TherapistKey.replaced_at.is_(None),
    postgresql_where=TherapistKey.set_at.is_not(None) & TherapistKey.replaced_at.is_(None),
)


class Appointment(Base):
    """A client's appointment with their therapist (bot.services.appointments). Times are UTC;
    ``timezone`` is the therapist's IANA zone the time was given in. A cancelled appointment
    keeps its row (``cancelled_at``) so that its reminders can be withdrawn. Nothing a person
    wrote is stored here; the kind is chosen from a list."""

    __tablename__ = "appointments"
    __table_args__ = (
        CheckConstraint("ends_at > starts_at", name="ends_after_start"),
        CheckConstraint("therapist_id <> client_id", name="not_self"),
        Index("ix_appointments_therapist_id_starts_at", "therapist_id", "starts_at"),
        Index("ix_appointments_client_id_starts_at", "client_id", "starts_at"),
    )

    id: Mapped[int] = row_id_column()
    therapist_id: Mapped[int] = mapped_column(PersonId, ForeignKey("people.id", ondelete="CASCADE"))
    client_id: Mapped[int] = mapped_column(PersonId, ForeignKey("people.id", ondelete="CASCADE"))
    kind: Mapped[AppointmentKind] = mapped_column(_string_enum(AppointmentKind, "kind"))
    starts_at: Mapped[datetime]
    ends_at: Mapped[datetime]
    timezone: Mapped[str] = mapped_column(String(64))
    created_by_id: Mapped[int | None] = mapped_column(
        PersonId, ForeignKey("people.id", ondelete="SET NULL"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    cancelled_at: Mapped[datetime | None]
    # The client's answer under a reminder ("I'll be there" / "I need to reschedule"), if any.
    client_response: Mapped[AppointmentResponse | None] = mapped_column(
        _string_enum(AppointmentResponse, "client_response"), nullable=True
    )
    responded_at: Mapped[datetime | None]

    def __repr__(self) -> str:
        return f"<Appointment id={self.id} kind={self.kind} cancelled={self.cancelled_at is not None}>"


from bot.db import delivery_models as _delivery_models  # noqa: E402,F401  (outbox, schedules: their tables join the metadata)


class SafetyFlagKind(enum.StrEnum):
    MEMORY_WORK = "memory_work"  # the client wants to work on a memory: for the session
    RISK = "risk"  # the client answered yes to the crisis question
    UNSAFE = "unsafe"  # in a check-in, the client said they feel unsafe at home or with someone


class SafetyFlag(Base):
    """Something the safety layer (handlers/safety.py) keeps for the client's therapist: a
    wish to work on a memory (never the memory itself), or a crisis answered yes. The
    client's own short note, if they added one, is encrypted under their key. Open until a
    summary includes it (``included_in_summary_at``); ``alerted_at``: the therapist was
    alerted at once."""

    __tablename__ = "safety_flags"

    id: Mapped[int] = row_id_column()
    client_id: Mapped[int] = mapped_column(PersonId, ForeignKey("people.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    note: Mapped[str | None] = encrypted(owner="client_id", max_length=1000)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    alerted_at: Mapped[datetime | None]
    included_in_summary_at: Mapped[datetime | None]

    def __repr__(self) -> str:
        return f"<SafetyFlag id={self.id} client_id={self.client_id} kind={self.kind}>"


class CheckInState(enum.StrEnum):
    DRAFT = "draft"  # being answered now; /cancel deletes it
    SAVED = "saved"  # the client chose "save and finish later"
    COMPLETED = "completed"  # answered in full; a summary follows


class CheckIn(Base):
    """A client's pre-appointment check-in (bot.services.checkins). The answers, and the
    readiness worked out from them (colour and reasons), are encrypted under the client's
    key; in clear are only ids, the state, the step reached (a question's name) and times.
    ``appointment_id`` is the appointment it prepares (NULL: none ahead, marked as such);
    ``therapist_id`` the client's therapist when it was completed."""

    __tablename__ = "check_ins"
    __table_args__ = (Index("ix_check_ins_client_id_state", "client_id", "state"),)

    id: Mapped[int] = row_id_column()
    client_id: Mapped[int] = mapped_column(PersonId, ForeignKey("people.id", ondelete="CASCADE"))
    therapist_id: Mapped[int | None] = mapped_column(
        PersonId, ForeignKey("people.id", ondelete="SET NULL"), index=True
    )
    appointment_id: Mapped[int | None] = mapped_column(
        PersonId, ForeignKey("appointments.id", ondelete="SET NULL"), index=True
    )
    state: Mapped[CheckInState] = mapped_column(_string_enum(CheckInState, "state"))
    step: Mapped[str | None] = mapped_column(String(32))  # the question reached (a name, not an answer)
    answers: Mapped[str | None] = encrypted(owner="client_id", max_length=8192)  # JSON
    readiness: Mapped[str | None] = encrypted(owner="client_id", max_length=2048)  # JSON: colour, reasons
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    completed_at: Mapped[datetime | None] = mapped_column(index=True)

    def __repr__(self) -> str:  # never the answers
        return f"<CheckIn id={self.id} client_id={self.client_id} state={self.state}>"


class SummaryState(enum.StrEnum):
    WAITING_FOR_KEY = "waiting_for_key"  # the therapist has no key yet: nothing encrypted, nothing sent
    QUEUED = "queued"  # encrypted to the therapist's key and handed to the outbox


class Summary(Base):
    """A readiness summary of one completed check-in for one therapist. ``ciphertext`` is
    the report in the age format, encrypted to ``recipient`` (the therapist's key at the
    time; its fingerprint is kept to say which key opens it); NULL while waiting for a key.
    Deleting the client or the check-in deletes it."""

    __tablename__ = "summaries"
    __table_args__ = (UniqueConstraint("check_in_id", "therapist_id"),)  # one per therapist

    id: Mapped[int] = row_id_column()
    check_in_id: Mapped[int] = mapped_column(PersonId, ForeignKey("check_ins.id", ondelete="CASCADE"))
    client_id: Mapped[int] = mapped_column(PersonId, ForeignKey("people.id", ondelete="CASCADE"), index=True)
    therapist_id: Mapped[int] = mapped_column(PersonId, ForeignKey("people.id", ondelete="CASCADE"), index=True)
    state: Mapped[SummaryState] = mapped_column(_string_enum(SummaryState, "state", length=20))
    recipient_fingerprint: Mapped[str | None] = mapped_column(String(32))
    ciphertext: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    encrypted_at: Mapped[datetime | None]

    def __repr__(self) -> str:
        return f"<Summary id={self.id} check_in_id={self.check_in_id} state={self.state}>"


class BroadcastState(enum.StrEnum):
    DRAFT = "draft"  # being written (not used by the chat flow today, which keeps its draft in bot.flows)
    SCHEDULED = "scheduled"  # waiting for scheduled_for
    SENDING = "sending"  # being queued into the outbox and delivered
    DONE = "done"  # every recipient's message is sent, failed or given up
    CANCELLED = "cancelled"  # stopped by staff; what was not sent yet was withdrawn


class Broadcast(Base):
    """A message from staff to many clients (bot.services.broadcasts). The text is what the
    staff member wrote, encrypted under their own key (owner = ``created_by_id``); the
    audience is a kind and parameters (ids, a number of days: never clinical content). Each
    recipient gets one outbox row keyed ``broadcast:{id}:{recipient id}`` (and carrying
    ``broadcast_id``), so a restart or a second instance cannot send twice. ``queued`` and the ``skipped_*`` counts are written
    when the rows have all been queued; the final figures (``sent`` ...) when it is done, as
    finished outbox rows are purged after a while."""

    __tablename__ = "broadcasts"
    __table_args__ = (Index("ix_broadcasts_state_scheduled_for", "state", "scheduled_for"),)

    id: Mapped[int] = row_id_column()
    created_by_id: Mapped[int] = mapped_column(PersonId, ForeignKey("people.id", ondelete="CASCADE"), index=True)
    text: Mapped[str] = encrypted(owner="created_by_id", max_length=4096)  # empty for a template
    # A ready-made text from content/ (broadcast.templates.<name>), in each recipient's language.
    template: Mapped[str | None] = mapped_column(String(64))
    audience: Mapped[dict[str, Any]] = mapped_column(JSON)  # {"kind": "all" | "therapist" | "appointments", ...}
    language: Mapped[str | None] = mapped_column(String(16))  # only recipients of this language; NULL: all
    state: Mapped[BroadcastState] = mapped_column(_string_enum(BroadcastState, "state"))
    scheduled_for: Mapped[datetime]  # UTC: when sending starts
    # Where the sender's live progress message is (edited while sending).
    progress_chat_id: Mapped[int | None] = mapped_column(BigInteger)
    progress_message_id: Mapped[int | None] = mapped_column(BigInteger)
    audience_size: Mapped[int | None]  # clients matching when queued (active or not)
    queued: Mapped[int | None]  # outbox rows made (active recipients)
    sent: Mapped[int | None]
    failed: Mapped[int | None]
    blocked: Mapped[int | None]  # blocked the bot, or inactive when their turn came
    skipped_no_consent: Mapped[int | None]
    skipped_opted_out: Mapped[int | None]  # opted out of practice announcements (/settings)
    withdrawn: Mapped[int | None]  # not sent because it was cancelled
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    queued_at: Mapped[datetime | None]  # every row is in the outbox
    finished_at: Mapped[datetime | None]  # done or cancelled
    reported_at: Mapped[datetime | None]  # the final report was shown to the sender

    def __repr__(self) -> str:  # never the text
        return f"<Broadcast id={self.id} state={self.state}>"
