"""Alembic migrations on both backends: up, down, models == schema, ensure_schema."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, MetaData

from bot.db import migrate
from bot.db.engine import create_engine
from bot.db.errors import DatabaseUnavailable, SchemaNotMigrated
from bot.db.migrate import (
    REPO_ROOT,
    current_revision,
    downgrade,
    ensure_schema,
    head_revision,
    upgrade,
)
from bot.db.models import Base

APP_TABLES = {
    "people",
    "therapist_client_links",
    "consent_records",
    "audit_events",
    "conversation_states",
    "invites",
    "outbox", "reminder_schedules", "quiet_hours", "delivery_instances",  # 0004
    "learn_progress", "therapist_questions",  # 0005
    "practice_sessions", "safe_places",  # 0006
    "therapist_keys",  # 0009
    "appointments",  # 0010
    "safety_plans",  # 0011
    "safety_flags",  # 0012
    "check_ins", "summaries",  # 0013
    "broadcasts",  # 0014
    "inbox",  # 0016
}


async def schema_diff(url: str, metadata: MetaData = Base.metadata) -> list[Any]:
    """What ``alembic check`` would report: the autogenerate diff between models and database."""

    def compare(connection: Connection) -> list[Any]:
        context = MigrationContext.configure(
            connection,
            opts={"compare_type": True, "render_as_batch": connection.dialect.name == "sqlite"},
        )
        return list(compare_metadata(context, metadata))

    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(compare)
    finally:
        await engine.dispose()


async def table_names(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            return set(await connection.run_sync(lambda c: sa.inspect(c).get_table_names()))
    finally:
        await engine.dispose()


def test_migrations_form_one_line_from_the_initial_revision() -> None:
    script = ScriptDirectory.from_config(migrate.alembic_config())
    assert script.get_heads() == [head_revision()], "one head: no unmerged branches"
    revisions = [rev.revision for rev in script.walk_revisions("base", "heads")]
    assert revisions[-1] == "0001"
    assert (REPO_ROOT / "migrations" / "versions" / "0001_initial.py").is_file()


async def test_upgrade_from_empty_to_head(database_url: str) -> None:
    assert await current_revision(database_url) is None
    await upgrade(database_url)
    assert await current_revision(database_url) == head_revision()
    assert await table_names(database_url) == APP_TABLES | {"alembic_version"}
    await upgrade(database_url)  # a no-op at head
    assert await current_revision(database_url) == head_revision()


async def test_models_and_migrated_schema_agree(migrated_url: str) -> None:
    assert await schema_diff(migrated_url) == []


async def test_the_schema_comparison_does_notice_differences(migrated_url: str) -> None:
    """Guard against a vacuous check: a model change without a migration must show up."""
    changed = MetaData(naming_convention=Base.metadata.naming_convention)
    for table in Base.metadata.tables.values():
        table.to_metadata(changed)
    changed.tables["people"].append_column(sa.Column("nickname", sa.String(32)))
    changed.tables["audit_events"].c.action.type = sa.String(200)

    diff = await schema_diff(migrated_url, changed)
    kinds = {entry[0] if isinstance(entry, tuple) else entry[0][0] for entry in diff}
    assert "add_column" in kinds
    assert "modify_type" in kinds


async def test_downgrade_to_base_and_up_again(migrated_url: str) -> None:
    await downgrade(migrated_url, "base")
    assert await current_revision(migrated_url) is None
    assert await table_names(migrated_url) <= {"alembic_version"}

    await upgrade(migrated_url)
    assert await current_revision(migrated_url) == head_revision()
    assert await schema_diff(migrated_url) == []


async def test_constraint_names_follow_the_convention(migrated_url: str) -> None:
    def names(connection: Connection) -> dict[str, set[str | None]]:
        inspector = sa.inspect(connection)
        found: dict[str, set[str | None]] = {
            "pk": set(),
            "uq": set(),
            "fk": set(),
            "ck": set(),
            "ix": set(),
        }
        for table in APP_TABLES:
            found["pk"].add(inspector.get_pk_constraint(table)["name"])
            found["uq"] |= {c["name"] for c in inspector.get_unique_constraints(table)}
            found["fk"] |= {c["name"] for c in inspector.get_foreign_keys(table)}
            found["ck"] |= {c["name"] for c in inspector.get_check_constraints(table)}
            found["ix"] |= {i["name"] for i in inspector.get_indexes(table)}
        return found

    engine = create_engine(migrated_url)
    try:
        async with engine.connect() as connection:
            found = await connection.run_sync(names)
    finally:
        await engine.dispose()

    assert found["pk"] == {f"pk_{table}" for table in APP_TABLES}
    assert "uq_people_telegram_id" in found["uq"]
    assert found["fk"] == {
        "fk_therapist_client_links_therapist_id_people",
        "fk_therapist_client_links_client_id_people",
        "fk_consent_records_person_id_people",
        "fk_audit_events_subject_person_id_people",
        "fk_invites_created_by_id_people",
        "fk_broadcasts_created_by_id_people",
        "fk_invites_therapist_id_people",
        "fk_invites_used_by_id_people",
        "fk_outbox_recipient_id_people",
        "fk_outbox_subject_id_people",
        "fk_reminder_schedules_person_id_people",
        "fk_quiet_hours_person_id_people",
        "fk_learn_progress_client_id_people",
        "fk_therapist_questions_client_id_people",
        "fk_practice_sessions_client_id_people",
        "fk_safe_places_client_id_people",
        "fk_safety_flags_client_id_people",
        "fk_safety_plans_client_id_people",
        "fk_therapist_keys_therapist_id_people",
        "fk_appointments_therapist_id_people",
        "fk_appointments_client_id_people",
        "fk_appointments_created_by_id_people",
        "fk_check_ins_client_id_people",
        "fk_check_ins_therapist_id_people",
        "fk_check_ins_appointment_id_appointments",
        "fk_summaries_check_in_id_check_ins",
        "fk_summaries_client_id_people",
        "fk_summaries_therapist_id_people",
    }
    assert found["ck"] == {
        "ck_people_role",
        "ck_consent_records_choice",
        "ck_therapist_client_links_not_self",
        "ck_invites_kind",
        "ck_outbox_kind",
        "ck_outbox_state",
        "ck_outbox_one_payload",
        "ck_outbox_attempts_not_negative",
        "ck_reminder_schedules_kind",
        "ck_reminder_schedules_weekdays",
        "ck_learn_progress_pages_read_not_negative",
        "ck_therapist_questions_page_positive",
        "ck_safety_plans_steps_done_range",
        "ck_appointments_kind",
        "ck_appointments_ends_after_start",
        "ck_appointments_not_self",
        "ck_appointments_client_response",
        "ck_check_ins_state",
        "ck_summaries_state",
        "ck_broadcasts_state",
    }
    assert {
        "ix_audit_events_occurred_at",
        "ix_audit_events_actor_telegram_id",
        "ix_audit_events_subject_person_id",
        "ix_therapist_client_links_therapist_id",
        "ix_therapist_client_links_client_id",
        "ix_consent_records_person_id_recorded_at",
        "uq_therapist_client_links_active_client",
        "ix_invites_therapist_id",
        "ix_broadcasts_created_by_id",
        "ix_broadcasts_state_scheduled_for",
        "ix_outbox_broadcast_id",  # 0015
        "ix_outbox_state_due_at",
        "ix_reminder_schedules_next_due_at",
        "uq_therapist_questions_open",
        "uq_therapist_keys_current",
        "ix_inbox_processed_at_update_id",
        "ix_inbox_chat_id",
        "ix_inbox_user_id",
    } <= found["ix"]


# -- ensure_schema ---------------------------------------------------------------


async def test_ensure_schema_auto_migrates(database_url: str) -> None:
    await ensure_schema(database_url, auto_migrate=True)
    assert await current_revision(database_url) == head_revision()
    await ensure_schema(database_url, auto_migrate=True)  # idempotent
    await ensure_schema(database_url, auto_migrate=False)  # at head: nothing to complain about


async def test_ensure_schema_refuses_an_unmigrated_database(database_url: str) -> None:
    """What the bot does with a server database (and SQLite when auto-migration is off)."""
    with pytest.raises(SchemaNotMigrated) as raised:
        await ensure_schema(database_url, auto_migrate=False)
    message = str(raised.value)
    assert "imrs-bot migrate" in message
    assert head_revision() in message
    assert raised.value.current is None and raised.value.head == head_revision()
    assert await current_revision(database_url) is None  # untouched
    assert await table_names(database_url) <= {"alembic_version"}


async def test_ensure_schema_never_touches_a_database_from_newer_code(migrated_url: str) -> None:
    engine = create_engine(migrated_url)
    try:
        async with engine.begin() as connection:
            await connection.execute(sa.text("UPDATE alembic_version SET version_num = '9999'"))
    finally:
        await engine.dispose()
    for auto_migrate in (True, False):
        with pytest.raises(SchemaNotMigrated, match="9999"):
            await ensure_schema(migrated_url, auto_migrate=auto_migrate)


async def test_ensure_schema_at_head_asks_alembic_nothing(
    migrated_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The start-up path: the version row equals the head the revision files declare, so
    neither Alembic's script directory nor its migration context is consulted."""

    def not_needed(*_args: Any, **_kwargs: Any) -> Any:
        raise AssertionError("Alembic consulted for a database at head")

    monkeypatch.setattr(migrate, "head_revision", not_needed)
    monkeypatch.setattr(migrate, "current_revision", not_needed)
    await ensure_schema(migrated_url, auto_migrate=False)


def test_the_declared_head_is_alembics_head() -> None:
    assert migrate.declared_head(migrate.MIGRATIONS_DIR) == head_revision()
    assert migrate.declared_head(migrate.KEYSTORE_MIGRATIONS_DIR) == migrate.keystore_head_revision()


def test_the_declared_head_leaves_anything_irregular_to_alembic(tmp_path: Path) -> None:
    versions = tmp_path / "versions"
    versions.mkdir()
    line = 'revision: str = "{}"\ndown_revision: str | Sequence[str] | None = {}\n'
    (versions / "a.py").write_text(line.format("a", "None"))
    (versions / "b.py").write_text(line.format("b", '"a"'))
    assert migrate.declared_head(tmp_path) == "b"
    (versions / "c.py").write_text(line.format("c", '"a"'))  # two heads
    assert migrate.declared_head(tmp_path) is None
    (versions / "c.py").write_text(line.format("c", '("a", "b")'))  # a merge: Alembic reads it
    assert migrate.declared_head(tmp_path) is None
    (versions / "c.py").write_text('revision = make_revision()\ndown_revision = "b"\n')
    assert migrate.declared_head(tmp_path) is None
    (versions / "c.py").unlink()
    (versions / "b.py").write_text(line.format("b", '"x"'))  # its parent is missing
    assert migrate.declared_head(tmp_path) is None


def test_starting_the_bot_imports_no_alembic() -> None:
    """Alembic (with Mako and Pygments) is a large share of start-up: imported only when a
    schema must be migrated or checked in full."""
    code = (
        "import sys, bot.cli, bot.config, bot.runtime, bot.crypto.keystore; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('alembic', 'mako', 'pygments')))"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


async def test_ensure_schema_reports_an_unreachable_database() -> None:
    url = "postgresql://imrs:s3cret-pw@127.0.0.1:1/imrs?connect_timeout=3"
    with pytest.raises(DatabaseUnavailable) as raised:
        await ensure_schema(url, auto_migrate=False)
    assert "s3cret-pw" not in str(raised.value)


# -- the alembic command line from a checkout ------------------------------------


@pytest.mark.slow
def test_alembic_command_line_from_the_checkout(database_url: str) -> None:
    """``alembic upgrade head`` / ``downgrade base`` work with $DATABASE_URL (env.py's own loop)."""
    env = os.environ | {"DATABASE_URL": database_url}

    def alembic(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "alembic", *args],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout + done.stderr

    alembic("upgrade", "head")
    assert f"{head_revision()} (head)" in alembic("current")
    alembic("check")  # exits non-zero if the models and the schema differ
    alembic("downgrade", "base")
    assert "(head)" not in alembic("current")


FAILING_REVISION = '''
"""a migration that fails half-way"""
import sqlalchemy as sa
from alembic import op

revision = "9999"
down_revision = "{head}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("half_done", sa.Column("id", sa.Integer(), primary_key=True))
    with op.batch_alter_table("people") as batch_op:
        batch_op.add_column(sa.Column("half_done_column", sa.String(10)))
    op.execute("SELECT * FROM no_such_table")


def downgrade() -> None:
    pass
'''


async def test_a_failing_migration_leaves_the_database_as_it_was(
    migrated_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One transaction per run, on SQLite too: the embedded database auto-migrates at startup,
    so a migration failing half-way must not leave it half-migrated."""
    migrations = tmp_path / "migrations"
    shutil.copytree(
        REPO_ROOT / "migrations", migrations, ignore=shutil.ignore_patterns("__pycache__")
    )
    head = head_revision()
    (migrations / "versions" / "9999_fails.py").write_text(FAILING_REVISION.replace("{head}", head))
    monkeypatch.setattr(migrate, "MIGRATIONS_DIR", migrations)
    assert head_revision() == "9999"

    with pytest.raises(sa.exc.DBAPIError):
        await upgrade(migrated_url)

    assert await current_revision(migrated_url) == head
    assert await table_names(migrated_url) == APP_TABLES | {"alembic_version"}
    assert await schema_diff(migrated_url) == []


async def test_0015_fills_in_the_broadcast_of_existing_outbox_rows(database_url: str) -> None:
    """Rows queued before 0015 name their broadcast only in the key: the migration copies it
    into broadcast_id (other rows, and keys that only look alike, stay NULL)."""
    await upgrade(database_url, "0014")
    engine = create_engine(database_url)
    rows = [  # id, key, kind
        (1, "broadcast:41:7", "broadcast"), (2, "broadcast:41:8", "broadcast"), (3, "broadcast:9000000000:7", "broadcast"),
        (4, "reminder:41:7", "reminder"), (5, "b:7", "broadcast"), (6, "broadcast:x:7", "broadcast"),
    ]
    try:
        async with engine.begin() as connection:
            await connection.execute(sa.text(
                "INSERT INTO people (id, telegram_id, role, language, timezone, active, created_at, updated_at) "
                "VALUES (7, 70, 'client', 'en', 'UTC', true, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP), "
                "(8, 80, 'client', 'en', 'UTC', true, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"))
            for row_id, key, kind in rows:
                await connection.execute(sa.text(
                    "INSERT INTO outbox (id, idempotency_key, kind, recipient_id, content_key, state, due_at, "
                    "attempts, created_at) VALUES (:id, :key, :kind, :person, 'broadcast.message', 'pending', "
                    "CURRENT_TIMESTAMP, 0, CURRENT_TIMESTAMP)"),
                    {"id": row_id, "key": key, "kind": kind, "person": 8 if key.endswith(":8") else 7})
        await upgrade(database_url)
        async with engine.connect() as connection:
            found = dict((await connection.execute(sa.text("SELECT id, broadcast_id FROM outbox"))).all())
            announcements = set((await connection.execute(sa.text("SELECT announcements FROM people"))).scalars())
    finally:
        await engine.dispose()
    assert found == {1: 41, 2: 41, 3: 9000000000, 4: None, 5: None, 6: None}
    assert announcements == {True}  # everyone starts opted in
    await downgrade(database_url, "0014")
    assert await current_revision(database_url) == "0014"
