"""Delivering updates to the bot's webhook, the way Telegram does.

Each pending update is POSTed as JSON, oldest first and one at a time, with the
``X-Telegram-Bot-Api-Secret-Token`` header when a secret was set. A 2xx answer confirms the
update; anything else (or no answer) is recorded as the webhook's last error and the same update
is retried after a growing pause, so nothing is lost or reordered.
"""

from __future__ import annotations

import asyncio
import json
import logging

import aiohttp

from bot.sandbox.emulator.records import WebhookConfig
from bot.sandbox.emulator.state import EmulatorState, now

logger = logging.getLogger(__name__)

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"  # a header name  # nosec B105
# Pauses before retrying an update after the 1st, 2nd, ... failed attempt (Telegram's are longer).
RETRY_DELAYS = (0.05, 0.1, 0.25, 0.5, 1.0)
REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=10.0)


class WebhookDelivery:
    def __init__(self, state: EmulatorState) -> None:
        self._state = state

    async def run(self) -> None:
        """Deliver until cancelled."""
        queue = self._state.updates
        current: WebhookConfig | None = None
        failures = 0  # consecutive failed attempts at the current webhook
        async with aiohttp.ClientSession(timeout=REQUEST_TIMEOUT) as session:
            while True:
                webhook = self._state.webhook
                if webhook is not current:
                    current, failures = webhook, 0
                if webhook is None or not queue.pending:
                    await queue.changed.wait(None)
                    continue
                update = queue.pending[0]
                error = await self._post(session, webhook.url, webhook.secret_token, update)
                if self._state.webhook is not webhook:
                    continue  # the webhook changed meanwhile; start over with the new one
                if error is None:
                    queue.confirm(update["update_id"] + 1)
                    webhook.delivered += 1
                    failures = 0
                    continue
                webhook.last_error_date, webhook.last_error_message = now(), error
                logger.info("webhook delivery of update %s failed: %s", update["update_id"], error)
                delay = RETRY_DELAYS[min(failures, len(RETRY_DELAYS) - 1)]
                failures += 1
                loop = asyncio.get_running_loop()
                deadline = loop.time() + delay
                # Pause before retrying; setting another webhook (or none) ends the pause early.
                while self._state.webhook is webhook and (remaining := deadline - loop.time()) > 0:
                    await queue.changed.wait(remaining)

    @staticmethod
    async def _post(session: aiohttp.ClientSession, url: str, secret: str | None,
                    update: dict[str, object]) -> str | None:
        """POST one update; None on success, else Telegram's wording of what went wrong."""
        headers = {"Content-Type": "application/json"}
        if secret:
            headers[SECRET_HEADER] = secret
        try:
            async with session.post(url, data=json.dumps(update), headers=headers) as response:
                await response.read()
                if 200 <= response.status < 300:
                    return None
                return f"Wrong response from the webhook: {response.status} {response.reason}"
        except TimeoutError:
            return "Read timeout expired"
        except aiohttp.ClientConnectorError:
            return "Connection refused"
        except aiohttp.ClientError as error:
            return f"Failed to deliver the update: {error.__class__.__name__}"
