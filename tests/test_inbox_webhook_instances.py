"""Two webhook instances (`imrs-bot run --webhook`, real processes, one PostgreSQL database)
behind a small round-robin proxy, as a platform's load balancer would put them: both bind
their port and store what they receive in the inbox, one consumes; updates posted to either
are answered, a replayed update is answered once, and killing the consumer (``kill -9``)
hands consumption to the other within 10 s. About 20 s: marked slow."""

from __future__ import annotations

import asyncio
import itertools
import json
import signal
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from bot.sandbox.emulator import BotApiEmulator, FloodLimits
from tests.fixtures_bot import prepare_database
from tests.test_cli import BotProcess, bot_env, free_port
from tests.test_inbox import SECRET, answer_keys
from tests.test_inbox_crash import wait_until


class RoundRobin:
    """An aiohttp reverse proxy: each request goes to the next backend; 502 if it is down."""

    def __init__(self, backends: list[int]) -> None:
        self.backends = backends
        self._next = itertools.cycle(range(len(backends)))
        self.served = [0] * len(backends)
        self.bodies: list[bytes] = []
        self.port = free_port()
        self._runner: web.AppRunner | None = None

    async def __aenter__(self) -> RoundRobin:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._http.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _forward(self, request: web.Request) -> web.Response:
        index = next(self._next)
        body = await request.read()
        if request.method == "POST":
            self.bodies.append(body)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
        try:
            async with self._http.request(
                request.method, f"http://127.0.0.1:{self.backends[index]}{request.path_qs}", data=body, headers=headers
            ) as response:
                payload = await response.read()
                self.served[index] += 1
                return web.Response(status=response.status, body=payload)
        except (aiohttp.ClientError, TimeoutError):
            return web.Response(status=502)


async def health(port: int) -> dict | None:
    try:
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/healthcheck") as response:
            return await response.json() if response.status == 200 else None
    except aiohttp.ClientError:
        return None


@pytest.mark.slow
@pytest.mark.timeout(360)  # a hang guard: two real processes behind a proxy, a kill -9 and a takeover
@pytest.mark.postgres
async def test_two_webhook_instances_behind_a_proxy_and_the_consumer_killed(
    tmp_path: Path, fresh_postgres_url: str
):
    url = fresh_postgres_url
    await prepare_database(url)
    ports = [free_port(), free_port()]
    emulator = BotApiEmulator(flood=FloodLimits(overall_per_second=None))
    async with emulator, RoundRobin(ports) as proxy:
        env = bot_env(  # one keyring for both
            emulator, url, WEBHOOK_URL=f"http://127.0.0.1:{proxy.port}/telegram", WEBHOOK_SECRET=SECRET,
            LEADER_RETRY_SECONDS="1", LOG_LEVEL="INFO",
        )
        processes = [BotProcess(tmp_path, env | {"PORT": str(port)}, "--webhook") for port in ports]
        try:
            for process in processes:
                await process.start()

            async def both_up() -> bool:
                found = [await health(port) for port in ports]
                return all(found) and sorted(h["role"] for h in found) == ["consumer", "standby"]  # type: ignore[index]

            await wait_until(both_up, 180, "both instances healthy, one consuming", interval=0.1)
            roles = [(await health(port))["role"] for port in ports]  # type: ignore[index]
            leader = roles.index("consumer")

            users = [emulator.user(first_name=f"W{i}") for i in range(6)]
            for user in users:
                await user.send("/help")
                await user.send("/about")

            async def answered(n: int) -> bool:
                return all(len(u.messages) >= n for u in users)

            await wait_until(lambda: answered(2), 30, "every update answered")
            assert all(n > 0 for n in proxy.served), proxy.served  # both instances took updates
            for user in users:
                assert answer_keys(user.messages) == ["help.everyone", "about.text"]

            # A replay of an update, posted through the proxy to whichever instance: stored once.
            replayed = json.loads(proxy.bodies[0])
            for _ in range(2):  # one to each instance
                async with aiohttp.ClientSession() as http, http.post(
                    f"http://127.0.0.1:{proxy.port}/telegram", json=replayed,
                    headers={"X-Telegram-Bot-Api-Secret-Token": SECRET},
                ) as response:
                    assert response.status == 200

            await processes[leader].terminate(signal.SIGKILL)
            loop = asyncio.get_running_loop()
            killed_at = loop.time()
            for user in users:
                await user.send("/nosuch")
            await wait_until(lambda: answered(3), 15, "answers after the consumer was killed")
            took_over = loop.time() - killed_at
            assert took_over < 10, f"took {took_over:.1f}s"
            assert (await health(ports[1 - leader]))["role"] == "consumer"  # type: ignore[index]
            for user in users:
                assert answer_keys(user.messages) == ["help.everyone", "about.text", "fallback.unknown_command"]
        finally:
            outputs = [await p.terminate() for p in processes]
    assert "Traceback" not in outputs[1 - leader], outputs[1 - leader]
    print(f"\nproxy served {proxy.served}; the standby answered {took_over:.1f}s after the kill")
