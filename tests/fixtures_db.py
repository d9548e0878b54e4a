"""Database fixtures: every test using them runs on SQLite and on PostgreSQL.

* ``database_url``: an empty database, ``[sqlite]`` (a fresh file under tmp_path)
  or ``[postgresql]`` (a fresh database ``imrs_t_<hex>`` created on the server at
  ``$TEST_DATABASE_URL`` and dropped afterwards).
* ``migrated_url``: the same, migrated to head.
* ``engine`` / ``session_factory``: an async engine and sessions on ``migrated_url``.

Without ``TEST_DATABASE_URL`` the PostgreSQL variants are skipped, unless
``CI=true``: then they fail, so a CI job can never silently test SQLite only.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot.crypto.fields import FieldCrypto
from bot.crypto.keyring import generate_keyring
from bot.crypto.keystore import KeyStore
from bot.db.engine import create_engine, safe_url
from bot.db.engine import session_factory as make_session_factory
from bot.db.migrate import upgrade

BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres),
]


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() == "true"


def _skip_or_fail(reason: str) -> None:
    if _in_ci():
        pytest.fail(f"CI=true but {reason}: the PostgreSQL tests must run in CI", pytrace=False)
    pytest.skip(reason)


def _libpq_url(url: str) -> str:
    """TEST_DATABASE_URL as libpq understands it (no "+driver" in the scheme)."""
    parsed = make_url(url)
    return parsed.set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture
def postgres_server_url() -> str:
    """The maintenance URL of the test server (skips or fails as described above)."""
    url = os.environ.get("TEST_DATABASE_URL", "").strip()
    if not url:
        _skip_or_fail("TEST_DATABASE_URL is not set")
    try:
        with psycopg.connect(_libpq_url(url), autocommit=True, connect_timeout=5) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        _skip_or_fail(f"TEST_DATABASE_URL ({safe_url(url)}) is unreachable: {first_line}")
    return _libpq_url(url)


@pytest.fixture
def fresh_postgres_url(postgres_server_url: str) -> Iterator[str]:
    """A brand-new, empty PostgreSQL database, dropped (WITH FORCE) after the test."""
    name = f"imrs_t_{secrets.token_hex(6)}"
    with psycopg.connect(postgres_server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield make_url(postgres_server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(postgres_server_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: os.PathLike[str]) -> str:
    """An empty database on each backend. The URLs are the plain ones people write
    (``sqlite:///...``, ``postgresql://...``): the code under test picks the drivers."""
    if request.param == "sqlite":
        # A folder that does not exist yet: create_engine must create it.
        return f"sqlite:///{tmp_path}/db/imrs.sqlite3"
    return str(request.getfixturevalue("fresh_postgres_url"))


@pytest.fixture
async def migrated_url(database_url: str) -> str:
    await upgrade(database_url)
    return database_url


@pytest.fixture
async def engine(migrated_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(migrated_url)
    try:
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture
async def session_factory(
    engine: AsyncEngine, tmp_path: Path
) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """Sessions as the bot has them: with field encryption (a key store in tmp_path)."""
    keystore = await KeyStore.open(f"sqlite:///{tmp_path}/keystore.sqlite3", generate_keyring())
    try:
        yield FieldCrypto(keystore).attach(make_session_factory(engine))
    finally:
        await keystore.close()
