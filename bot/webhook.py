"""The webhook server: Telegram POSTs updates here; platforms probe ``/healthcheck``.

A small tornado application (tornado comes with python-telegram-bot's webhook extra), in
the spirit of PTB's ``customwebhookbot`` example: PTB's built-in webhook server has no
health check route. Updates are accepted only with the secret token Telegram was given.
Every instance serves it: an update is stored in the inbox (bot.inbox) and answered 200
once committed (503 when storing failed, so that Telegram sends it again); the leader
consumes the inbox.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
from urllib.parse import urlsplit

import tornado.httpserver
import tornado.web
from telegram import Update
from telegram.ext import Application

from bot.config import Settings
from bot.context import SERVICES_KEY, UPDATE_CONSUMER_KEY
from bot.errors import ConfigError

_log = logging.getLogger(__name__)
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"  # a header name  # nosec B105
SECRET_PATTERN = re.compile(r"^[A-Za-z0-9_-]{16,256}$")


def webhook_config(settings: Settings) -> tuple[str, str, str]:
    """(public URL, local path, secret), or a ConfigError saying what is missing."""
    if not settings.webhook_url:
        raise ConfigError("WEBHOOK_URL is not set: the public https URL Telegram should post updates to.")
    secret = settings.webhook_secret.get_secret_value() if settings.webhook_secret else ""
    if not SECRET_PATTERN.match(secret):
        raise ConfigError(
            "WEBHOOK_SECRET must be 16-256 characters of A-Z, a-z, 0-9, _ and - "
            "(e.g. the output of `python3 -c 'import secrets; print(secrets.token_urlsafe(32))'`)."
        )
    path = urlsplit(settings.webhook_url).path or "/"
    return settings.webhook_url, path, secret


class _UpdateHandler(tornado.web.RequestHandler):
    def initialize(self, bot_application: Application, secret: str) -> None:
        self._application = bot_application
        self._secret = secret

    async def post(self) -> None:
        given = self.request.headers.get(SECRET_HEADER, "")
        if not hmac.compare_digest(given.encode(), self._secret.encode()):
            _log.warning("Webhook call with a missing or wrong secret token refused")
            raise tornado.web.HTTPError(403)
        try:
            update = Update.de_json(json.loads(self.request.body), self._application.bot)
        except (ValueError, TypeError, KeyError):
            raise tornado.web.HTTPError(400) from None
        if update is None:
            raise tornado.web.HTTPError(400)
        # 200 only once the update is committed to the inbox; otherwise Telegram retries.
        inbox = self._application.bot_data[SERVICES_KEY].inbox
        try:
            await inbox.receive(update)
        except Exception as exc:  # noqa: BLE001 - never confirm an update that is not stored
            _log.warning("Webhook: storing update %s failed (%s)", update.update_id, type(exc).__name__)
            self.set_status(503)
            self.finish()

    def log_exception(self, typ, value, tb) -> None:
        # Tornado would log the request (and its body on errors); only the class, here.
        if isinstance(value, tornado.web.HTTPError):
            return  # a refused request (403/400), already explained above
        _log.error("Webhook request failed: %s", typ.__name__ if typ else "error")


class _HealthHandler(tornado.web.RequestHandler):
    def initialize(self, bot_application: Application) -> None:
        self._application = bot_application

    async def get(self) -> None:
        """200 when the bot is running and its database answers, else 503. The body says
        whether this instance consumes updates (``role``: consumer or standby) and how many
        stored updates wait (``inbox_backlog``)."""
        services = self._application.bot_data[SERVICES_KEY]
        try:
            backlog = await services.inbox.backlog()
        except Exception as exc:  # noqa: BLE001 - any failure means unhealthy
            _log.warning("Health check: database unavailable (%s)", type(exc).__name__)
            self.set_status(503)
            self.finish({"status": "database unavailable"})
            return
        if not self._application.running:
            self.set_status(503)
            self.finish({"status": "stopping"})
            return
        consumer = self._application.bot_data.get(UPDATE_CONSUMER_KEY)
        role = "consumer" if consumer is not None and consumer.consuming else "standby"
        self.finish({"status": "ok", "role": role, "inbox_backlog": backlog})


async def start_webhook_server(
    application: Application, settings: Settings
) -> tornado.httpserver.HTTPServer:
    """Listen on ``settings.port`` and point Telegram at ``WEBHOOK_URL``."""
    url, path, secret = webhook_config(settings)
    app = tornado.web.Application(
        [
            (re.escape(path), _UpdateHandler, {"bot_application": application, "secret": secret}),
            (r"/healthcheck", _HealthHandler, {"bot_application": application}),
        ],
        log_function=lambda handler: None,  # no access log: URLs and bodies stay out of logs
    )
    server = tornado.httpserver.HTTPServer(app, xheaders=True)
    server.listen(settings.port)
    await application.bot.set_webhook(
        url=url, secret_token=secret, allowed_updates=Update.ALL_TYPES, drop_pending_updates=False
    )
    _log.info("Webhook server listening on port %s", settings.port)
    return server
