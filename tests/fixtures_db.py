"""Database fixtures: every test using them runs on SQLite and on PostgreSQL.

* ``database_url``: an empty database, ``[sqlite]`` (a fresh file under tmp_path)
  or ``[postgresql]`` (a fresh database ``imrs_t_<hex>`` created on the server at
  ``$TEST_DATABASE_URL`` and dropped afterwards).
* ``migrated_url``: the same, migrated to head.
* ``engine`` / ``session_factory``: an async engine and sessions on ``migrated_url``.

Migrating costs a few tenths of a second, and hundreds of tests need a migrated database, so
the migrations run once per test session, on a template (``migration_templates``): a
migrated database is then a copy of the template file (SQLite) or ``CREATE DATABASE ...
TEMPLATE`` (PostgreSQL). A test that starts the bot (``bot``) gets such a copy too, as if its
release step had run. The migrations themselves are tested from an empty database in
tests/test_migrations.py.

Without ``TEST_DATABASE_URL`` the PostgreSQL variants are skipped, unless
``CI=true``: then they fail, so a CI job can never silently test SQLite only.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import queue
import secrets
import shutil
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

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
from bot.db.migrate import ensure_keystore_schema, upgrade

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


class MigrationTemplates:
    """Databases migrated once per test session, copied for each test that needs one."""

    def __init__(self, folder: Path) -> None:
        self._folder = folder
        self._sqlite: Path | None = None
        self._keystore: Path | None = None
        self._postgres: dict[tuple[str, bool], str] = {}  # (server URL, with key store) -> template name

    def sqlite(self) -> Path:
        """A SQLite file migrated to head (make copies; never open it)."""
        if self._sqlite is None:
            path = self._folder / "clinical.sqlite3"
            _run_outside_the_loop(upgrade(f"sqlite:///{path}"))
            self._sqlite = _checkpointed(path)
        return self._sqlite

    def keystore(self) -> Path:
        """A SQLite key store at its head revision, without keys."""
        if self._keystore is None:
            path = self._folder / "keystore.sqlite3"
            _run_outside_the_loop(ensure_keystore_schema(f"sqlite:///{path}"))
            self._keystore = _checkpointed(path)
        return self._keystore

    def postgres(self, server_url: str, *, with_keystore: bool = False) -> str:
        """The name of a database on ``server_url`` migrated to head (a template: nobody may
        be connected to it while a copy is made, so tests never open it). ``with_keystore``:
        with the key store's table too, for a test that starts the bot: the bot keeps its data
        keys in the clinical database when IMRS_KEYSTORE_URL is unset (as in the tests) and
        makes that table at start, ~0.15 s a start (the SQLite key store has its template)."""
        key = (server_url, with_keystore)
        if key not in self._postgres:
            name = f"imrs_tmpl_{secrets.token_hex(6)}"
            with psycopg.connect(server_url, autocommit=True) as conn:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            self._postgres[key] = name
            url = make_url(server_url).set(database=name).render_as_string(hide_password=False)
            _run_outside_the_loop(upgrade(url))
            if with_keystore:
                _run_outside_the_loop(ensure_keystore_schema(url))
        return self._postgres[key]

    def drop_postgres(self) -> None:
        for (server_url, _), name in self._postgres.items():
            with psycopg.connect(server_url, autocommit=True) as conn:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        self._postgres.clear()


def _run_outside_the_loop(coroutine: Any) -> None:
    """Run ``coroutine`` to the end in a loop of its own (in a thread: the caller may be a
    fixture running inside the test's event loop)."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(coroutine)
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            errors.append(exc)

    thread = threading.Thread(target=run, name="migrate-template")
    thread.start()
    thread.join()
    if errors:
        raise errors[0]


def _checkpointed(path: Path) -> Path:
    """Every engine on ``path`` is disposed, so SQLite has folded its WAL into the file."""
    for suffix in ("-wal", "-shm", "-journal"):
        leftover = path.with_name(path.name + suffix)
        if leftover.exists() and leftover.stat().st_size:
            raise RuntimeError(f"{leftover} is not empty: the template is not self-contained")
    return path


def copy_sqlite_template(template: Path, url: str) -> None:
    """Put a copy of ``template`` where the SQLite ``url`` points (creating the folder)."""
    target = Path(make_url(url).database or "")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(template, target)


@pytest.fixture(scope="session")
def migration_templates(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MigrationTemplates]:
    templates = MigrationTemplates(tmp_path_factory.mktemp("templates"))
    try:
        yield templates
    finally:
        _NEXT_COPY.finish()  # the copy being made ahead, before its template goes
        templates.drop_postgres()


#: Fixtures whose test needs the database migrated before it starts (see the module docstring).
_WANT_MIGRATED = frozenset({"migrated_url", "bot"})
#: The URLs handed out as copies of a template, hence at the head revision already.
_COPIED_FROM_TEMPLATE: set[str] = set()


def copied_from_template(url: str) -> bool:
    return url in _COPIED_FROM_TEMPLATE


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
    yield from _postgres_database(postgres_server_url)


def _create_postgres_database(postgres_server_url: str, template: str | None) -> str:
    name = f"imrs_t_{secrets.token_hex(6)}"
    create = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if template is not None:
        create = sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(template))
    with psycopg.connect(postgres_server_url, autocommit=True) as conn:
        conn.execute(create)
    return name


class _NextCopy:
    """The next copy of a template database, made in a thread of its own while a test runs.

    Each test on PostgreSQL needs a fresh copy of the migrated template; making it (a
    connection and ``CREATE DATABASE ... TEMPLATE``) took 0.2-0.5 s inside the test's set-up,
    while the server also checkpoints for the last test's drop. One copy is made ahead; a
    test takes it (or makes its own when none is ready yet) and the next is begun. The copies
    no test took are dropped at the end of the session."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._making: dict[tuple[str, str], concurrent.futures.Future[str]] = {}
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None

    def take(self, server_url: str, template: str) -> str:
        key = (server_url, template)
        with self._lock:
            ahead = self._making.pop(key, None)
        name = None
        if ahead is not None:
            with contextlib.suppress(Exception):  # e.g. the server was away: make one now
                name = ahead.result()
        if name is None:
            name = _create_postgres_database(server_url, template)
        with self._lock:
            if self._pool is None:
                self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="next-test-database")
            self._making[key] = self._pool.submit(_create_postgres_database, server_url, template)
        return name

    def finish(self) -> None:
        with self._lock:
            making, self._making = self._making, {}
            pool, self._pool = self._pool, None
        for (server_url, _), future in making.items():
            with contextlib.suppress(Exception):
                _DROPPER.drop(server_url, future.result())
        if pool is not None:
            pool.shutdown(wait=True)


_NEXT_COPY = _NextCopy()


def _postgres_database(postgres_server_url: str, template: str | None = None) -> Iterator[str]:
    if template is None:
        name = _create_postgres_database(postgres_server_url, None)
    else:
        name = _NEXT_COPY.take(postgres_server_url, template)
    try:
        yield make_url(postgres_server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        _DROPPER.drop(postgres_server_url, name)


class _BackgroundDropper:
    """Drops the tests' PostgreSQL databases in a thread of its own, one after the other.

    ``DROP DATABASE`` makes the server write a checkpoint: 0.1 s on a quiet machine, more than
    a second on a busy one, and the test that used the database has no reason to wait for
    it. The next test runs meanwhile (on other databases); the end of the session waits for
    every drop (``pytest_sessionfinish``)."""

    def __init__(self) -> None:
        self._queue: queue.Queue[tuple[str, str] | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self.errors: list[str] = []

    def drop(self, server_url: str, name: str) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="drop-test-databases", daemon=True)
            self._thread.start()
        self._queue.put((server_url, name))

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            server_url, name = item
            try:
                with psycopg.connect(server_url, autocommit=True) as conn:
                    conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
            except psycopg.Error as exc:
                self.errors.append(f"{name}: {type(exc).__name__}")

    def finish(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None


_DROPPER = _BackgroundDropper()


def pytest_sessionfinish(session: pytest.Session) -> None:
    _NEXT_COPY.finish()
    _DROPPER.finish()
    if _DROPPER.errors:
        print(f"\nCould not drop {len(_DROPPER.errors)} test database(s): {_DROPPER.errors[:3]}")


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: os.PathLike[str]) -> Iterator[str]:
    """An empty database on each backend. The URLs are the plain ones people write
    (``sqlite:///...``, ``postgresql://...``): the code under test picks the drivers.

    A test that asks for ``migrated_url`` or ``bot`` gets it already migrated, as a copy of
    the session's template (nothing can look at it before those fixtures migrate it)."""
    migrated = not _WANT_MIGRATED.isdisjoint(request.fixturenames)
    if request.param == "sqlite":
        # A folder that does not exist yet: create_engine must create it.
        url = f"sqlite:///{tmp_path}/db/imrs.sqlite3"
        if migrated:
            templates: MigrationTemplates = request.getfixturevalue("migration_templates")
            copy_sqlite_template(templates.sqlite(), url)
            if "bot" in request.fixturenames:  # the bot's key store, next to the database
                copy_sqlite_template(templates.keystore(), f"sqlite:///{tmp_path}/db/keystore.sqlite3")
            _COPIED_FROM_TEMPLATE.add(url)
        yield url
        _COPIED_FROM_TEMPLATE.discard(url)
        return
    server: str = request.getfixturevalue("postgres_server_url")
    if not migrated:
        yield str(request.getfixturevalue("fresh_postgres_url"))
        return
    templates = request.getfixturevalue("migration_templates")
    template = templates.postgres(server, with_keystore="bot" in request.fixturenames)
    for url in _postgres_database(server, template):
        _COPIED_FROM_TEMPLATE.add(url)
        yield url
        _COPIED_FROM_TEMPLATE.discard(url)


@pytest.fixture
async def migrated_url(database_url: str) -> str:
    """``database_url`` at the head revision (a copy of the template, see ``database_url``)."""
    if not copied_from_template(database_url):  # e.g. a test that asked for it dynamically
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
