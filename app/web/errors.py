"""The JSON error shape of docs/api.md, and the exception handlers raise to produce it."""

from typing import Any

from aiohttp import web

from app.process.logs import request_id
from app.web.answers import json_answer


class ApiError(Exception):
    """An error a client caused or must retry; becomes ``{"error": {...}}`` with ``status``."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        fields: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.fields = fields
        self.headers = headers


# The answer's header to a missing or refused token (RFC 6750).
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="switchboard"'}


def error_response(
    status: int,
    code: str,
    message: str,
    *,
    fields: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    error: dict[str, Any] = {"code": code, "message": message}
    if fields is not None:
        error["fields"] = fields
    error["request_id"] = request_id.get()  # the id in the X-Request-ID header and the logs
    return json_answer({"error": error}, status=status, headers=headers)
