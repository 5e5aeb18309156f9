"""Middlewares: every failure becomes the JSON error shape; actions run to completion."""

import asyncio
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web
from marshmallow import ValidationError

from app.errors import ApiError, error_response
from app.store import SessionExists, SessionNotFound, StoreUnavailable, TransitionRefused
from realtime.broker import BrokerError

logger = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

RETRY_AFTER = "5"

# Reasons for HTTP errors raised by aiohttp itself (routing, body size).
HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    415: "unsupported_media_type",
}


def _from_exception(exc: Exception) -> web.Response | None:
    if isinstance(exc, ApiError):
        return error_response(
            exc.status, exc.code, exc.message, fields=exc.fields, headers=exc.headers
        )
    if isinstance(exc, ValidationError):
        fields = exc.messages if isinstance(exc.messages, dict) else {"_schema": exc.messages}
        return error_response(400, "validation_error", "invalid request", fields=fields)
    if isinstance(exc, SessionNotFound):
        return error_response(404, "session_not_found", str(exc))
    if isinstance(exc, SessionExists):
        return error_response(409, "session_exists", str(exc))
    if isinstance(exc, TransitionRefused):
        return error_response(409, "conflict", str(exc))
    if isinstance(exc, (StoreUnavailable, BrokerError)):
        return error_response(
            503, "unavailable", "state store unavailable; retry shortly",
            headers={"Retry-After": RETRY_AFTER},
        )
    if isinstance(exc, web.HTTPException) and exc.status >= 400:
        headers = {k: v for k, v in exc.headers.items() if k.lower() == "allow"}
        if exc.status == 413:
            message = "request body is larger than the limit"
        elif exc.status == 405:
            message = f"method {exc.method} not allowed" if hasattr(exc, "method") else exc.reason
        else:
            message = exc.reason
        code = HTTP_CODES.get(exc.status, "http_error")
        return error_response(exc.status, code, message, headers=headers)
    return None


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error a client can cause becomes a JSON 4xx (or 503), never a 500 page; and
    actions are shielded from their client's departure (see ``shielded``)."""
    try:
        return await shielded(request, handler)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = _from_exception(exc)
        assert response is not None
        return response
    except Exception as exc:
        response = _from_exception(exc)
        if response is not None:
            return response
        logger.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, "internal_error", "internal server error")


def shielded(request: web.Request, handler: Handler) -> Awaitable[web.StreamResponse]:
    """Let an action finish even if its client disconnects mid-request.

    The server runs with handler_cancellation so that SSE handlers are cancelled the moment
    their client leaves; a state change must not be cut between its store write and its
    events, or an accepted change would be announced to nobody.

    Called by error_middleware rather than being a middleware of its own: every middleware is
    one more suspended frame for every open stream (two, with aiohttp's sub-app wrapper).
    """
    if request.method in ("GET", "HEAD", "OPTIONS"):
        return handler(request)
    return asyncio.shield(handler(request))
