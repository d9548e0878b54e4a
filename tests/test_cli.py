"""The `imrs-bot` command as an operator meets it: a real process, real exit codes and output.

Configuration mistakes end with one line and exit status 2, never a traceback; the real
bot process answers /start through any Bot-API-compatible server (here, the emulator);
it survives `kill -9` mid-conversation; the webhook server takes updates and health checks.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import stat
import sys
from pathlib import Path

import aiohttp
import pytest
from sqlalchemy import select

from bot.crypto.keyring import generate_keyring
from bot.db.engine import create_engine, is_sqlite, session_factory
from bot.db.migrate import upgrade
from bot.db.repositories import AuditRepository
from bot.db.models import ConversationState
from bot.sandbox.emulator import BotApiEmulator
from tests.fixtures_bot import prepare_database

IMRS_BOT = str(Path(sys.executable).parent / "imrs-bot")
OUR_VARIABLES = (
    "TELEGRAM_", "DATABASE_URL", "IMRS_", "ADMIN_TELEGRAM_IDS", "WEBHOOK_", "PORT",
    "DEFAULT_TIMEZONE", "DEFAULT_LANGUAGE", "LOG_LEVEL", "CRISIS_LINES_FILE",
)
pytestmark = pytest.mark.slow


def clean_env(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(OUR_VARIABLES)}
    env.update(values)
    return env


async def run_cli(*args: str, cwd: Path, timeout: float = 60, **env: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        IMRS_BOT, *args, cwd=cwd, env=clean_env(**env),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, stdin=asyncio.subprocess.DEVNULL,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    return proc.returncode, out.decode(), err.decode()


def assert_one_clear_line(code: int, err: str, *needles: str) -> None:
    """Exit status 2 and, after any progress logging, one line that says what to do."""
    assert code == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("imrs-bot: "), err
    assert sum(line.startswith("imrs-bot: ") for line in lines) == 1, err
    for needle in needles:
        assert needle in lines[-1], lines[-1]


@contextlib.asynccontextmanager
async def db_session_factory(database_url: str):
    engine = create_engine(database_url)
    try:
        yield session_factory(engine)
    finally:
        await engine.dispose()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_help_lists_the_commands(tmp_path):
    code, out, _ = await run_cli("--help", cwd=tmp_path)
    assert code == 0
    for command in ("run", "start", "sandbox", "migrate", "keys"):
        assert command in out


async def test_missing_and_malformed_tokens(tmp_path):
    code, _, err = await run_cli("run", cwd=tmp_path)
    assert_one_clear_line(code, err, "TELEGRAM_BOT_TOKEN is not set")
    code, _, err = await run_cli("run", cwd=tmp_path, TELEGRAM_BOT_TOKEN="not-a-token")
    assert_one_clear_line(code, err, "TELEGRAM_BOT_TOKEN", "does not look like a bot token")
    assert "not-a-token" not in err


async def test_bad_settings_name_the_variable(tmp_path):
    code, _, err = await run_cli("run", cwd=tmp_path, DEFAULT_TIMEZONE="Mars/Olympus")
    assert_one_clear_line(code, err, "DEFAULT_TIMEZONE", "IANA")
    code, _, err = await run_cli("run", cwd=tmp_path, ADMIN_TELEGRAM_IDS="12,abc")
    assert_one_clear_line(code, err, "ADMIN_TELEGRAM_IDS")


async def test_unreachable_database_and_missing_keys(tmp_path, emulator: BotApiEmulator):
    common = {"TELEGRAM_BOT_TOKEN": emulator.token, "TELEGRAM_API_BASE_URL": emulator.base_url}
    code, _, err = await run_cli(
        "run", cwd=tmp_path, DATABASE_URL="postgresql://postgres:s3cret@127.0.0.1:1/nowhere",
        IMRS_KEYS=generate_keyring().to_json(), **common,
    )
    assert_one_clear_line(code, err, "database")
    assert "s3cret" not in err
    code, _, err = await run_cli(
        "run", cwd=tmp_path, DATABASE_URL="postgresql://postgres@127.0.0.1:1/nowhere", **common
    )
    assert_one_clear_line(code, err, "keyring", "imrs-bot keys init")


async def test_a_wrong_token_is_one_line(tmp_path, emulator: BotApiEmulator):
    code, _, err = await run_cli(
        "run", cwd=tmp_path, TELEGRAM_BOT_TOKEN="123456:" + "x" * 35, TELEGRAM_API_BASE_URL=emulator.base_url,
    )
    assert_one_clear_line(code, err, "rejected TELEGRAM_BOT_TOKEN")


async def test_keys_init_writes_a_private_file_once(tmp_path):
    code, out, err = await run_cli("keys", "init", "--file", "secret/keys.json", cwd=tmp_path)
    assert code == 0, err
    path = tmp_path / "secret" / "keys.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text())["format"] == "imrs-keyring/1"
    before = path.read_text()
    code, _, err = await run_cli("keys", "init", "--file", "secret/keys.json", cwd=tmp_path)
    assert_one_clear_line(code, err, "refusing to overwrite")
    assert path.read_text() == before


async def test_a_server_database_must_be_migrated_first(tmp_path, emulator: BotApiEmulator, database_url: str):
    if is_sqlite(database_url):
        pytest.skip("the embedded SQLite default migrates itself")
    env = {
        "TELEGRAM_BOT_TOKEN": emulator.token, "TELEGRAM_API_BASE_URL": emulator.base_url,
        "DATABASE_URL": database_url, "IMRS_KEYS": generate_keyring().to_json(),
    }
    code, _, err = await run_cli("run", cwd=tmp_path, **env)
    assert_one_clear_line(code, err, "imrs-bot migrate")
    code, out, err = await run_cli("migrate", cwd=tmp_path, **env)
    assert code == 0, err
    assert "migrated" in out
    code, out, _ = await run_cli("migrate", cwd=tmp_path, **env)
    assert code == 0 and "already up to date" in out


class BotProcess:
    """`imrs-bot run` as a child process (what the Procfile's worker runs)."""

    def __init__(self, cwd: Path, env: dict[str, str], *args: str):
        self.cwd, self.env, self.args = cwd, env, args
        self.proc: asyncio.subprocess.Process | None = None
        self.log = cwd / f"bot-{id(self)}.log"  # a file, so a chatty process never blocks on a pipe

    async def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                IMRS_BOT, "run", *self.args, cwd=self.cwd, env=clean_env(**self.env),
                stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log,
            )

    async def running(self, timeout: float = 180) -> None:
        """Wait until the process says it serves updates ("Bot @... is running"): starting a
        Python process and the bot takes seconds on a quiet machine and far longer beside other
        CPU-heavy jobs, so a test waits for that line, not for a time. Fails at once with the
        process's output if it exits instead; ``timeout`` only ends a hung start."""
        assert self.proc is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while " is running (" not in self.log.read_text(errors="replace"):
            if self.proc.returncode is not None:
                raise AssertionError(f"imrs-bot run exited ({self.proc.returncode}):\n{self.log.read_text()}")
            if loop.time() > deadline:
                raise AssertionError(f"imrs-bot run did not start within {timeout} s:\n{self.log.read_text()}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.proc.wait(), 0.05)  # the log grows, or the process ends

    async def terminate(self, sig: int = signal.SIGTERM) -> str:
        """Signal the process, wait for it, and return everything it printed."""
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(sig)
        await asyncio.wait_for(self.proc.wait(), 20)
        return self.log.read_text()


def bot_env(emulator: BotApiEmulator, database_url: str, **extra: str) -> dict[str, str]:
    return {
        "TELEGRAM_BOT_TOKEN": emulator.token,
        "TELEGRAM_API_BASE_URL": emulator.base_url,
        "TELEGRAM_API_FILE_URL": emulator.base_file_url,
        "DATABASE_URL": database_url,
        "IMRS_KEYS": generate_keyring().to_json(),
        **extra,
    }


async def test_the_real_process_answers_start_and_survives_kill_9(
    tmp_path, emulator: BotApiEmulator, database_url: str, db_sessions
):
    await prepare_database(database_url)
    process = BotProcess(tmp_path, bot_env(emulator, database_url))
    await process.start()
    await process.running()
    client = emulator.user(first_name="Kim")
    await client.send("/start")
    welcome = await client.next_message(timeout=30)
    assert welcome.text.startswith("Hello Kim, welcome.")
    await client.press("Take the tour")
    page = await client.next_message()
    assert "1 of 4" in page.text

    # Wait until the step is durable, then kill the process without any chance to clean up.
    for _ in range(2400):  # up to two minutes on a very busy machine; a moment on a quiet one
        async with db_sessions() as session:
            if [s.state for s in (await session.scalars(select(ConversationState))).all()] == ["tour"]:
                break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("the tour step never reached the database")
    output = await process.terminate(signal.SIGKILL)
    assert "MARKER" not in output

    restarted = BotProcess(tmp_path, process.env)
    await restarted.start()
    await restarted.running()
    try:
        await client.press("Next ›", page)
        page = await client.wait_for_edit(page, timeout=30)
        assert "2 of 4" in page.text
    finally:
        output = await restarted.terminate()
    assert "Traceback" not in output and " ERROR " not in output, output


async def test_webhook_mode_takes_updates_and_answers_health_checks(
    tmp_path, emulator: BotApiEmulator, database_url: str
):
    await prepare_database(database_url)
    port = free_port()
    secret = "s" * 32
    process = BotProcess(
        tmp_path,
        bot_env(
            emulator, database_url, PORT=str(port), WEBHOOK_URL=f"http://127.0.0.1:{port}/telegram",
            WEBHOOK_SECRET=secret,
        ),
        "--webhook",
    )
    await process.start()
    await process.running()
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(200):
                try:
                    async with http.get(f"http://127.0.0.1:{port}/healthcheck") as response:
                        if response.status == 200:
                            assert (await response.json())["status"] == "ok"
                            break
                except aiohttp.ClientConnectionError:
                    pass
                await asyncio.sleep(0.1)
            else:
                raise AssertionError("the webhook server never became healthy")
            async with http.post(
                f"http://127.0.0.1:{port}/telegram", json={"update_id": 1},
                headers={"X-Telegram-Bot-Api-Secret-Token": "wrong"},
            ) as response:
                assert response.status == 403

        client = emulator.user(first_name="Lou")
        await client.send("/start")
        assert (await client.next_message(timeout=30)).text.startswith("Hello Lou, welcome.")
        assert emulator.webhook["url"] == f"http://127.0.0.1:{port}/telegram"
    finally:
        output = await process.terminate()
    assert "Traceback" not in output and " ERROR " not in output, output


async def test_make_run_without_a_token_opens_the_sandbox(tmp_path):
    """`imrs-bot start` (what `make run` runs) with no token: the sandbox, driven by a script."""
    script = (
        "/start\n:wait\n:1\n:wait\n:as admin\n/help\n:wait\n"
        "/therapists\n:wait\n:1\n:wait\n:open therapist\n:wait\n:1\n:wait\nDr Theo Visser\n:wait\n:quit\n"
    )
    proc = await asyncio.create_subprocess_exec(
        IMRS_BOT, "start", cwd=tmp_path, env=clean_env(),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:  # a hang guard only: the script's ":wait" lines wait for the bot, however busy the machine
        out, err = await asyncio.wait_for(proc.communicate(script.encode()), 240)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    out_text, err_text = out.decode(), err.decode()
    assert proc.returncode == 0, err_text
    assert "opening the sandbox" in err_text
    assert "[client] bot #2: Hello Sam, welcome." in out_text
    assert "1 of 4" in out_text
    assert "(administrator)" in out_text
    assert "Invite link for a therapist" in out_text
    assert "[therapist] bot #5: Welcome, Dr Theo Visser." in out_text, "the invite opened as the therapist"
    assert (tmp_path / "var" / "sandbox" / "sandbox.sqlite3").exists()
    assert not (tmp_path / "var" / "imrs.sqlite3").exists(), "the sandbox keeps out of the real database"


async def test_key_rotation_is_audited_and_the_audit_log_filters(tmp_path, database_url: str):
    await upgrade(database_url)  # the key commands write audit events into this database
    env = {"DATABASE_URL": database_url, "IMRS_KEYS_FILE": "keys.json"}
    code, _, err = await run_cli("keys", "init", "--file", "keys.json", cwd=tmp_path)
    assert code == 0, err
    code, out, err = await run_cli("keys", "add", cwd=tmp_path, **env)
    assert code == 0 and "Added key" in out, err
    code, out, err = await run_cli("keys", "rotate", "--resume", cwd=tmp_path, **env)
    assert code == 0 and "Every data key is wrapped under the active key" in out, err
    async with db_session_factory(database_url) as sessions, sessions.begin() as session:
        await AuditRepository(session).record(
            actor_telegram_id=77, actor_role="staff", action="invite.created", detail={"kind": "therapist"}
        )
    code, out, err = await run_cli("audit", "--action", "keys.*", cwd=tmp_path, **env)
    assert code == 0, err
    lines = out.strip().splitlines()
    assert len(lines) == 2 and "keys.rotated" in lines[0] and "keys.added" in lines[1]
    assert "operator" in lines[0]
    code, out, _ = await run_cli("audit", "--actor", "77", cwd=tmp_path, **env)
    assert out.strip().splitlines() == [out.strip()] and "invite.created" in out and "staff:77" in out
    code, out, _ = await run_cli("audit", "--action", "nothing.like.this", cwd=tmp_path, **env)
    assert out.strip() == "No audit events match."
