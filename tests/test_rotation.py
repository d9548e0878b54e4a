"""KEK rotation: ``keys add | rotate | retire``, in batches, resumable, while the bot runs."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

import bot.crypto.rotation as rotation
from bot.cli import main
from bot.config import Settings
from bot.crypto.fields import FieldCrypto
from bot.crypto.keyring import Keyring, read_keyring, write_keyring
from bot.crypto.keystore import KeyStore, data_keys
from bot.crypto.rotation import RotationProgress, retire_key, rewrap_data_keys, rotate_keys
from bot.db.engine import create_engine, session_factory
from bot.db.migrate import upgrade
from bot.db.models import Person
from bot.errors import KeyringError, OperatorError
from tests.fixtures_crypto import *  # noqa: F403
from tests.fixtures_crypto import make_person


async def _aliases(sessions: object) -> dict[int, str | None]:
    async with sessions() as session:  # type: ignore[operator]
        return {p.id: p.alias for p in (await session.scalars(sa.select(Person))).all()}


async def _raw_aliases(engine: AsyncEngine) -> dict[int, bytes]:
    async with engine.connect() as connection:
        rows = await connection.execute(sa.text("SELECT id, alias FROM people"))
        return {row[0]: bytes(row[1]) for row in rows}


@pytest.fixture
def keyring_file(tmp_path: Path, keyring: Keyring) -> Path:
    path = tmp_path / "keys.json"
    write_keyring(path, keyring)
    return path


@pytest.fixture
def settings(migrated_url: str, keystore_url: str, keyring_file: Path) -> Settings:
    return Settings(  # type: ignore[call-arg]
        _env_file=None,
        database_url=migrated_url,
        imrs_keys_file=keyring_file,
        imrs_keystore_url=keystore_url,
    )


async def test_rotate_in_batches_resume_and_retire_while_the_bot_runs(
    settings: Settings, keystore_url: str, keyring: Keyring, keyring_file: Path, engine: AsyncEngine
) -> None:
    # The running bot: its keyring came from the file, which it follows.
    bot_store = await KeyStore.open(keystore_url, keyring, keyring_file=keyring_file)
    bot_crypto = FieldCrypto(bot_store)
    bot_sessions = bot_crypto.attach(session_factory(engine))
    try:
        async with bot_sessions.begin() as session:
            session.add_all(make_person(i, f"client {i}") for i in range(7))
        expected = await _aliases(bot_sessions)
        ciphertext = await _raw_aliases(engine)
        old = keyring.active

        # Rotation, interrupted after one batch of 3.
        added, first = await rotate_keys(settings, batch_size=3, max_batches=1)
        assert added is not None and added != old
        assert (first.kek_id, first.rewrapped, first.batches, first.remaining) == (added, 3, 1, 4)
        assert read_keyring(keyring_file).active == added
        assert set(read_keyring(keyring_file).keys) == {old, added}

        # The old key cannot be retired yet.
        with pytest.raises(OperatorError, match="4 data key"):
            await retire_key(settings, old)
        with pytest.raises(KeyringError, match="active"):
            await retire_key(settings, added)

        # Half-rotated, the bot reads everything (cold cache: keys under both KEKs) and
        # wraps the data keys it creates under the new KEK.
        bot_crypto.clear_cache()
        assert await _aliases(bot_sessions) == expected

        async def the_bot_keeps_working(progress: RotationProgress) -> None:
            bot_crypto.clear_cache()
            assert await _aliases(bot_sessions) == {**expected, **newcomers}
            async with bot_sessions.begin() as session:
                person = make_person(100 + progress.batches, f"newcomer {progress.batches}")
                session.add(person)
            newcomers[person.id] = person.alias

        newcomers: dict[int, str | None] = {}
        _, rest = await rotate_keys(
            settings, resume=True, batch_size=3, on_batch=the_bot_keeps_working
        )
        assert rest.complete and rest.kek_id == added
        assert rest.rewrapped == 4 and rest.batches == 2
        assert await bot_store.counts_by_kek() == {added: 7 + len(newcomers)}
        async with bot_store.engine.connect() as connection:
            stamps = (await connection.execute(sa.select(data_keys.c.rewrapped_at))).scalars().all()
        assert sum(s is not None for s in stamps) == 7  # the newcomers were born under it

        # Only the data keys were re-wrapped: the clinical ciphertext did not change.
        after = await _raw_aliases(engine)
        assert {k: v for k, v in after.items() if k in ciphertext} == ciphertext

        # Now the old key goes, and everything still reads with the new keyring alone.
        smaller = await retire_key(settings, old)
        assert set(smaller.keyring.keys) == {added} == set(read_keyring(keyring_file).keys)
        fresh_store = await KeyStore.open(keystore_url, read_keyring(keyring_file))
        try:
            fresh = FieldCrypto(fresh_store).attach(session_factory(engine))
            assert await _aliases(fresh) == {**expected, **newcomers}
        finally:
            await fresh_store.close()
    finally:
        await bot_store.close()


async def test_a_failing_batch_changes_nothing_and_the_next_run_completes(
    settings: Settings, keystore_url: str, keyring: Keyring, keyring_file: Path,
    sessions: object, crypto: FieldCrypto, monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with sessions.begin() as session:  # type: ignore[attr-defined]
        session.add_all(make_person(i, f"client {i}") for i in range(10))
    rotation.add_key(settings)
    new = read_keyring(keyring_file)
    store = await KeyStore.open(keystore_url, new, keyring_file=keyring_file)
    real_wrap, calls = rotation.wrap_data_key, 0

    def crash_on_the_sixth(*args: object) -> bytes:
        nonlocal calls
        calls += 1
        if calls == 6:
            raise RuntimeError("power cut")
        return real_wrap(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(rotation, "wrap_data_key", crash_on_the_sixth)
    try:
        with pytest.raises(RuntimeError, match="power cut"):
            await rewrap_data_keys(store, batch_size=4)
        # the first batch (4) committed, the second rolled back as a whole
        assert await store.counts_by_kek() == {new.active: 4, keyring.active: 6}
        monkeypatch.setattr(rotation, "wrap_data_key", real_wrap)
        result = await rewrap_data_keys(store, batch_size=4)
        assert (result.rewrapped, result.remaining) == (6, 0)
        assert await store.counts_by_kek() == {new.active: 10}
    finally:
        await store.close()
    crypto.clear_cache()
    crypto.keystore.replace_keyring(Keyring(active=new.active, keys={new.active: new.active_key}))
    assert sorted((await _aliases(sessions)).values()) == sorted(f"client {i}" for i in range(10))  # type: ignore[type-var]


# -- the command line ------------------------------------------------------------------------


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_keys_add_rotate_retire_from_the_command_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("IMRS_KEYS", "IMRS_KEYS_FILE", "IMRS_KEYSTORE_URL", "DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    database_url = f"sqlite:///{tmp_path}/var/imrs.sqlite3"
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("IMRS_KEYS_FILE", "keys.json")

    assert _run(["keys", "init", "--file", "keys.json"], capsys)[0] == 0
    first = read_keyring(tmp_path / "keys.json")

    async def enrol() -> None:
        await upgrade(database_url)
        store = await KeyStore.open(f"sqlite:///{tmp_path}/var/keystore.sqlite3", first)
        engine = create_engine(database_url)
        try:
            async with FieldCrypto(store).attach(session_factory(engine)).begin() as session:
                session.add(make_person(1, "Sparrow"))
        finally:
            await engine.dispose()
            await store.close()

    asyncio.run(enrol())

    code, _, err = _run(["keys", "retire", first.active], capsys)
    assert code == 2 and "active key" in err and len(err.strip().splitlines()) == 1

    code, out, err = _run(["keys", "add"], capsys)
    assert code == 0, err
    second = read_keyring(tmp_path / "keys.json")
    assert second.active != first.active and set(second.keys) == {first.active, second.active}
    assert second.active in out

    code, _, err = _run(["keys", "retire", first.active], capsys)
    assert code == 2 and "1 data key(s) are still wrapped" in err and "rotate --resume" in err

    code, out, err = _run(["keys", "rotate"], capsys)
    assert code == 0, err
    third = read_keyring(tmp_path / "keys.json")
    assert len(third.keys) == 3
    assert f"Re-wrapped 1 data key(s) under {third.active}" in out

    for old in (first.active, second.active):
        code, out, err = _run(["keys", "retire", old], capsys)
        assert code == 0, err
    assert set(read_keyring(tmp_path / "keys.json").keys) == {third.active}
    code, _, err = _run(["keys", "retire", "k-nope"], capsys)
    assert code == 2 and "no key 'k-nope'" in err

    # With IMRS_KEYS the keyring is printed, never written; `rotate` needs `--resume`.
    monkeypatch.setenv("IMRS_KEYS", (tmp_path / "keys.json").read_text())
    code, out, err = _run(["keys", "add"], capsys)
    assert code == 0, err
    printed = json.loads(out)
    assert printed["active"] != third.active and len(printed["keys"]) == 2
    assert "IMRS_KEYS" in err
    code, _, err = _run(["keys", "rotate"], capsys)
    assert code == 2 and "--resume" in err
    monkeypatch.setenv("IMRS_KEYS", out)
    code, out, err = _run(["keys", "rotate", "--resume"], capsys)
    assert code == 0, err
    assert f"Re-wrapped 1 data key(s) under {printed['active']}" in out
    assert "Sparrow" not in out + err
