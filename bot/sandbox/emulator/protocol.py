"""The wire format of the Bot API: how parameters arrive, how answers and errors leave.

Clients may pass parameters in the query string, as ``application/x-www-form-urlencoded``, as
``multipart/form-data`` (with uploads) or as an ``application/json`` object. In the form
encodings every value is a string, and python-telegram-bot puts non-string values (numbers,
booleans, reply_markup, entities, scope, ...) there JSON-encoded; :func:`decode_request` turns
them back into Python values, keeping the parameters that are strings by definition as they are.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from aiohttp import web

# Parameters whose values are strings in the Bot API, whatever they look like ("123", "true").
_STRING_PARAMETERS = frozenset(
    {
        "action", "business_connection_id", "callback_query_id", "caption", "description",
        "document", "emoji", "file_id", "inline_message_id", "ip_address", "language_code",
        "message_effect_id", "name", "parse_mode", "photo", "secret_token", "short_description",
        "text", "thumbnail", "url",
    }
)


class ApiError(Exception):
    """An unsuccessful answer: ``{"ok": false, "error_code": status, "description": ...}``."""

    def __init__(self, status: int, description: str, *, retry_after: int | None = None) -> None:
        super().__init__(description)
        self.status = status
        self.description = description
        self.retry_after = retry_after

    @classmethod
    def bad_request(cls, message: str) -> ApiError:
        return cls(400, f"Bad Request: {message}")

    @classmethod
    def forbidden(cls, message: str) -> ApiError:
        return cls(403, f"Forbidden: {message}")

    @classmethod
    def conflict(cls, message: str) -> ApiError:
        return cls(409, f"Conflict: {message}")

    @classmethod
    def too_many_requests(cls, retry_after: int) -> ApiError:
        return cls(429, f"Too Many Requests: retry after {retry_after}", retry_after=retry_after)

    @classmethod
    def for_status(cls, status: int, description: str | None = None, retry_after: int | None = None) -> ApiError:
        """An error as Telegram would word it for ``status``, unless ``description`` is given."""
        if status == 429:
            retry_after = retry_after or 1
            return cls(429, description or f"Too Many Requests: retry after {retry_after}", retry_after=retry_after)
        if description is None:
            description = {
                400: "Bad Request",
                401: "Unauthorized",
                403: "Forbidden: bot was blocked by the user",
                404: "Not Found",
                409: "Conflict",
            }.get(status) or HTTPStatus(status).phrase
        return cls(status, description, retry_after=retry_after)

    def response(self) -> web.Response:
        body: dict[str, Any] = {"ok": False, "error_code": self.status, "description": self.description}
        if self.retry_after is not None:
            body["parameters"] = {"retry_after": self.retry_after}
        return web.json_response(body, status=self.status)


def ok_response(result: Any) -> web.Response:
    return web.json_response({"ok": True, "result": result})


@dataclass(frozen=True)
class UploadedFile:
    """A file sent as a ``multipart/form-data`` part."""

    file_name: str | None
    mime_type: str | None
    data: bytes


async def decode_request(request: web.Request) -> dict[str, Any]:
    """All parameters of ``request``, decoded; uploads appear as :class:`UploadedFile` values.

    A parameter that points at an upload with ``attach://<part>`` is replaced by that upload.
    """
    raw: dict[str, str] = dict(request.query)
    values: dict[str, Any] = {}
    uploads: dict[str, UploadedFile] = {}
    if request.method == "POST" and request.body_exists:
        if request.content_type == "application/json":
            try:
                body = await request.json()
            except ValueError:
                raise ApiError.bad_request("can't parse JSON object") from None
            if not isinstance(body, dict):
                raise ApiError.bad_request("JSON object expected")
            values.update(body)
        else:
            form = await request.post()
            for name, value in form.items():
                if isinstance(value, web.FileField):
                    uploads[name] = UploadedFile(value.filename or None, value.content_type, value.file.read())
                else:
                    raw[name] = value if isinstance(value, str) else bytes(value).decode("utf-8", "replace")
    decoded = {name: _decode_form_value(name, value) for name, value in raw.items() if name not in values}
    params = {**decoded, **values}
    for name, value in list(params.items()):
        if isinstance(value, str) and value.startswith("attach://") and value[len("attach://"):] in uploads:
            params[name] = uploads.pop(value[len("attach://"):])
    params.update(uploads)
    return params


def _decode_form_value(name: str, value: str) -> Any:
    if name in _STRING_PARAMETERS:
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value


class Params:
    """Typed, Telegram-tolerant access to the parameters of one call.

    Like the Bot API, an empty string counts as an absent parameter and numbers or booleans
    may arrive as strings.
    """

    def __init__(self, values: dict[str, Any]) -> None:
        self.values = values

    def has(self, name: str) -> bool:
        return self.values.get(name) not in (None, "")

    def string(self, name: str) -> str | None:
        value = self.values.get(name)
        if value is None or value == "" or isinstance(value, UploadedFile):
            return None
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, dict | list):
            return json.dumps(value)
        return str(value)

    def integer(self, name: str, default: int | None = None) -> int | None:
        value = self.values.get(name)
        if value is None or value == "":
            return default
        if isinstance(value, bool):
            return int(value)
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        try:
            return int(str(value).strip())
        except ValueError:
            raise ApiError.bad_request(f'parameter "{name}" must be a Number') from None

    def number(self, name: str, default: float) -> float:
        value = self.values.get(name)
        if value is None or value == "":
            return default
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ApiError.bad_request(f'parameter "{name}" must be a Number') from None

    def flag(self, name: str) -> bool:
        value = self.values.get(name)
        if isinstance(value, str):
            return value.strip().lower() in ("true", "1")
        return bool(value)

    def structure(self, name: str, error: str) -> Any:
        """A JSON object or array parameter; ``error`` is the Bad Request message for garbage."""
        value = self.values.get(name)
        if value is None or value == "":
            return None
        if isinstance(value, str):
            try:
                return json.loads(value)
            except ValueError:
                raise ApiError.bad_request(error) from None
        return value

    def file(self, name: str) -> UploadedFile | str | None:
        value = self.values.get(name)
        if isinstance(value, UploadedFile):
            return value
        return self.string(name)

    def chat_id(self) -> int | str:
        """``chat_id``: a number, or an ``@username`` (returned as given)."""
        value = self.values.get("chat_id")
        if value is None or value == "":
            raise ApiError.bad_request("chat_id is empty")
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        text = str(value).strip()
        try:
            return int(text)
        except ValueError:
            return text
