"""The request middleware: a request id for every request, one log line and one latency
observation when it ends, every failure as the JSON error shape, actions run to completion."""

import asyncio
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from marshmallow import ValidationError

from app.domain.store import SessionExists, SessionNotFound, StoreUnavailable, TransitionRefused
from app.domain.store.base import InvalidCursor, OtherConversation
from app.keys import METRICS, SENT
from app.process.logs import request_id
from app.web.errors import CHALLENGE, ApiError, error_response
from realtime.broker import BrokerError

logger = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

RETRY_AFTER = "5"
REQUEST_ID_HEADER = "X-Request-ID"
# A client's request id is kept if it is short and plain (it goes into log lines as is).
ACCEPTED_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}\Z")
CLIENT_LEFT = 499  # logged for a request whose client went away before any answer
QUIET_PATHS = ("/health", "/health/ready", "/metrics")  # probes: their lines at DEBUG

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
        return error_response(exc.status, exc.code, exc.message, fields=exc.fields, headers=exc.headers)
    if isinstance(exc, ValidationError):
        fields = exc.messages if isinstance(exc.messages, dict) else {"_schema": exc.messages}
        return error_response(400, "validation_error", "invalid request", fields=fields)
    if isinstance(exc, SessionNotFound):
        return error_response(404, "session_not_found", str(exc))
    if isinstance(exc, OtherConversation):
        return error_response(401, "unauthorized", str(exc), headers=CHALLENGE)
    if isinstance(exc, InvalidCursor):
        return error_response(400, "invalid_cursor", str(exc))
    if isinstance(exc, SessionExists):
        return error_response(409, "session_exists", str(exc))
    if isinstance(exc, TransitionRefused):
        return error_response(409, "conflict", str(exc))
    if isinstance(exc, (StoreUnavailable, BrokerError)):
        return error_response(
            503,
            "unavailable",
            "state store unavailable; retry shortly",
            headers={"Retry-After": RETRY_AFTER},
        )
    if isinstance(exc, web.RequestPayloadError):
        # A body whose framing or encoding breaks mid-way (a bad chunk, bad gzip): the client's.
        return error_response(400, "bad_request", "the request body could not be read")
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
async def request_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error a client can cause becomes a JSON 4xx (or 503), never a 500 page; actions
    are shielded from their client's departure (see ``shielded``); and each request gets an
    id, a log line and a latency observation. One middleware, not three: each is two
    suspended frames for every open stream."""
    claimed = request.headers.get(REQUEST_ID_HEADER, "")
    request_id.set(claimed if ACCEPTED_REQUEST_ID.match(claimed) else secrets.token_hex(8))
    started = time.monotonic()
    response: web.StreamResponse | None = None
    try:
        response = await shielded(request, handler)
    except web.HTTPException as exc:
        if exc.status < 400:
            response = exc  # a redirect: aiohttp sends it
            raise
        response = _from_exception(exc)
    except ConnectionResetError:
        # The client left before any answer: nobody to answer, nothing went wrong. Its log
        # line says 499; aiohttp takes a cancelled handler for the departure it is.
        raise asyncio.CancelledError from None
    except Exception as exc:
        response = _from_exception(exc)
        if response is None:
            logger.exception("unhandled error on %s %s", request.method, request.rel_url.raw_path)
            response = error_response(500, "internal_error", "internal server error")
    finally:
        _finished(request, response, time.monotonic() - started)
    assert response is not None
    return response


def _finished(request: web.Request, response: web.StreamResponse | None, seconds: float) -> None:
    """The request's log line (path without its query: tokens travel there) and, unless it
    was an event stream (whose duration is its client's stay), its latency."""
    # A stream notes what it answered when it ends (SENT); others are sent after this returns.
    status, streamed = request.get(SENT, (CLIENT_LEFT, False))
    if response is not None and SENT not in request:
        status = response.status
        streamed = response.content_type == "text/event-stream"
    route = request.match_info.route.resource
    template = route.canonical if route is not None else "unmatched"
    # Still percent-encoded: a decoded path could carry a newline and forge a log line.
    path = request.rel_url.raw_path
    level = logging.DEBUG if request.path in QUIET_PATHS else logging.INFO
    logger.log(
        level,
        "%s %s %d %.1f ms",
        request.method,
        path,
        status,
        seconds * 1000,
        extra={
            "method": request.method,
            "path": path,
            "route": template,
            "status": status,
            "ms": round(seconds * 1000, 1),
        },
    )
    if not streamed:
        request.config_dict[METRICS].observe_request(request.method, template, status, seconds)


def shielded(request: web.Request, handler: Handler) -> Awaitable[web.StreamResponse]:
    """Let an action finish even if its client disconnects mid-request.

    The server runs with handler_cancellation so that SSE handlers are cancelled the moment
    their client leaves; a state change must not be cut between its store write and its
    events, or an accepted change would be announced to nobody.

    Called by request_middleware rather than being a middleware of its own: every middleware is
    one more suspended frame for every open stream (two, with aiohttp's sub-app wrapper).
    """
    if request.method in ("GET", "HEAD", "OPTIONS"):
        return handler(request)
    return asyncio.shield(handler(request))
