"""The document's error answers (app.web.openapi.examples tells the story they belong to): each
the body the server would send, in the words its own exceptions and schemas use."""

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from app.domain.rating import AlreadyRated, NotClosed
from app.domain.store import SessionExists, SessionNotFound
from app.domain.store.base import InvalidCursor, page_after, parse_session_cursor
from app.web.limits import START_RATE_MESSAGE
from app.web.openapi.examples import M_HELLO, REQUEST_ID, SESSION
from app.web.openapi.security_schemes import TOKEN_STATUSES
from schemas.fields import (
    CURSOR_ERROR,
    LIMIT_ERROR,
    MAX_CONTENT,
    MAX_REASON,
    NAME_ERROR,
    SESSION_STATUSES,
)


@dataclass(frozen=True, slots=True)
class ErrorExample:
    """An error answer: its status, and the body the server would send (``body()``).
    ``anonymous``: answered without a token too, though its status is one of the token-only
    ones (the per-address limit's 429)."""

    status: int
    code: str
    message: str
    fields: Mapping[str, Any] | None = None
    anonymous: bool = False

    @property
    def token_only(self) -> bool:
        """Only a process that requires tokens answers this status."""
        return self.status in TOKEN_STATUSES and not self.anonymous

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.fields is not None:
            error["fields"] = dict(self.fields)
        error["request_id"] = REQUEST_ID
        return {"error": error}


# marshmallow's messages for the limits of schemas.fields.
TOO_LONG_REASON = f"Longer than maximum length {MAX_REASON}."
CONTENT_LENGTH = f"Length must be between 1 and {MAX_CONTENT}."
NOT_A_STATUS = f"Must be one of: {', '.join(SESSION_STATUSES)}."


def _refused(read: Callable[[], object]) -> str:
    """The message of the InvalidCursor that ``read`` raises (the store's own words)."""
    try:
        read()
    except InvalidCursor as exc:
        return str(exc)
    raise AssertionError("the cursor was accepted")


# A transcript's cursor sent to the queue; a cursor whose message has been trimmed away.
NOT_A_QUEUE_CURSOR = _refused(lambda: parse_session_cursor(M_HELLO["id"]))
TRIMMED_CURSOR = _refused(lambda: page_after([], 1, M_HELLO["id"]))

ERROR_EXAMPLES: dict[str, ErrorExample] = {
    "error.bad_json": ErrorExample(
        400, "bad_json", "request body is not valid JSON: Expecting value: line 1 column 1 (char 0)"
    ),
    "error.validation.create_session": ErrorExample(
        400, "validation_error", "invalid request", {"session_name": [NAME_ERROR]}
    ),
    "error.validation.chat": ErrorExample(
        400, "validation_error", "invalid request", {"content": ["Missing data for required field."]}
    ),
    "error.validation.escalate": ErrorExample(
        400, "validation_error", "invalid request", {"reason": [TOO_LONG_REASON]}
    ),
    "error.validation.agent_action": ErrorExample(
        400, "validation_error", "invalid request", {"agent_id": [NAME_ERROR]}
    ),
    "error.validation.agent_status": ErrorExample(
        400, "validation_error", "invalid request", {"status": ["Must be one of: online, away, offline."]}
    ),
    "error.validation.agent_message": ErrorExample(
        400, "validation_error", "invalid request", {"content": [CONTENT_LENGTH]}
    ),
    "error.validation.status": ErrorExample(
        400,
        "validation_error",
        "invalid request",
        {"status": [NOT_A_STATUS]},
    ),
    "error.validation.sessions": ErrorExample(
        400, "validation_error", "invalid request", {"sessions": {"0": [NAME_ERROR]}}
    ),
    "error.validation.unknown_query": ErrorExample(
        400, "validation_error", "invalid request", {"order": ["Unknown field."]}
    ),
    "error.validation.limit": ErrorExample(
        400, "validation_error", "invalid request", {"limit": [LIMIT_ERROR]}
    ),
    "error.validation.cursor": ErrorExample(
        400, "validation_error", "invalid request", {"cursor": [CURSOR_ERROR]}
    ),
    "error.invalid_cursor.queue": ErrorExample(400, "invalid_cursor", NOT_A_QUEUE_CURSOR),
    "error.invalid_cursor.trimmed": ErrorExample(400, "invalid_cursor", TRIMMED_CURSOR),
    "error.invalid_name.session": ErrorExample(
        400, "invalid_name", "invalid session_name", {"session_name": [NAME_ERROR]}
    ),
    "error.invalid_name.agent": ErrorExample(
        400, "invalid_name", "invalid agent_id", {"agent_id": [NAME_ERROR]}
    ),
    "error.unauthorized": ErrorExample(401, "unauthorized", "a token is required"),
    "error.unauthorized.expired": ErrorExample(401, "unauthorized", "token expired"),
    "error.forbidden.session": ErrorExample(
        403, "forbidden", "this token does not grant access to that session"
    ),
    "error.forbidden.workbench": ErrorExample(403, "forbidden", "the workbench needs an agent token"),
    "error.forbidden.agent_stream": ErrorExample(403, "forbidden", "an agent's stream is its own"),
    "error.forbidden.agent_mismatch": ErrorExample(403, "forbidden", "agent_id does not match the token"),
    "error.forbidden.supervisor": ErrorExample(403, "forbidden", "this needs a supervisor token"),
    "error.forbidden.supervisor_mismatch": ErrorExample(
        403, "forbidden", "supervisor_id does not match the token"
    ),
    "error.conflict.not_held": ErrorExample(
        409, "conflict", "no agent holds this conversation (it is waiting_agent)"
    ),
    "error.session_not_found": ErrorExample(404, "session_not_found", str(SessionNotFound(SESSION))),
    "error.session_exists": ErrorExample(409, "session_exists", str(SessionExists(SESSION))),
    "error.conflict.closed": ErrorExample(409, "conflict", "session is closed"),
    "error.conflict.held": ErrorExample(409, "conflict", "session is held by agent bob"),
    "error.conflict.not_holder_typing": ErrorExample(
        409, "conflict", "only the agent holding the conversation types to its customer"
    ),
    "error.conflict.not_holder_read": ErrorExample(
        409, "conflict", "only the agent holding the conversation reads it for the agents' side"
    ),
    "error.validation.read": ErrorExample(
        400,
        "validation_error",
        "invalid request",
        {"up_to": ["no message 0f1e2d3c4b5a6978 in this conversation's transcript"]},
    ),
    "error.conflict.no_offer": ErrorExample(409, "conflict", "no offer of this conversation to this agent"),
    "error.conflict.offer_expired": ErrorExample(409, "conflict", "the offer has expired"),
    "error.conflict.offered": ErrorExample(409, "conflict", "session is offered to agent bob"),
    "error.not_closed": ErrorExample(409, "not_closed", str(NotClosed("agent_active"))),
    "error.already_rated": ErrorExample(409, "already_rated", str(AlreadyRated())),
    "error.validation.rating": ErrorExample(
        400, "validation_error", "invalid request", {"score": ["Not a valid integer."]}
    ),
    "error.agent_unavailable": ErrorExample(
        409, "agent_unavailable", "agent bob is offline: cannot take a transfer now"
    ),
    "error.validation.transfer": ErrorExample(
        400,
        "validation_error",
        "invalid request",
        {"to_agent_id": ["give to_agent_id or to_queue: true (one of them)"]},
    ),
    "error.at_capacity": ErrorExample(409, "at_capacity", "agent alice holds 3 conversations, its capacity"),
    "error.too_many_agents": ErrorExample(
        409, "too_many_agents", "this deployment knows 10000 agents already"
    ),
    "error.conflict.escalate": ErrorExample(
        409, "conflict", "cannot escalate a session that is agent_active"
    ),
    "error.conflict.release": ErrorExample(409, "conflict", "cannot release a session that is bot_active"),
    "error.conflict.already_closed": ErrorExample(409, "conflict", "session is already closed"),
    "error.conflict.agent_message": ErrorExample(
        409, "conflict", "cannot send messages to a session that is waiting_agent"
    ),
    "error.body_too_large": ErrorExample(413, "body_too_large", "request body is larger than the limit"),
    "error.unsupported_media_type": ErrorExample(
        415, "unsupported_media_type", "request body must be application/json"
    ),
    "error.rate_limited": ErrorExample(429, "rate_limited", "too many requests; slow down"),
    "error.rate_limited.address": ErrorExample(429, "rate_limited", START_RATE_MESSAGE, anonymous=True),
    "error.too_many_streams.token": ErrorExample(
        429, "too_many_streams", "this token holds as many streams as it may; close one first"
    ),
    "error.too_many_streams.process": ErrorExample(
        503, "too_many_streams", "this process holds as many streams as it may; retry shortly"
    ),
    "error.unavailable": ErrorExample(503, "unavailable", "state store unavailable; retry shortly"),
}
