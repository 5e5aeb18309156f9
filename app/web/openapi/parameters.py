"""The reusable parameters and response headers of the document (operations refer to them by
name). Patterns are the server's own, converted to ECMA syntax."""

from typing import Any

from app.web.middlewares import ACCEPTED_REQUEST_ID, REQUEST_ID_HEADER, RETRY_AFTER
from app.web.openapi.examples import (
    AGENT,
    REQUEST_ID,
    RESUME_ID,
    SESSION,
    SESSION_TOKEN,
)
from app.web.openapi.schema_components import ecma_pattern
from schemas.fields import NAME_PATTERN

# The parameter that only a process requiring tokens documents.
TOKEN_PARAMETER = "token"


def parameters(insecure: bool) -> dict[str, dict[str, Any]]:
    """The parameter components, by name (``in`` says where each travels)."""
    name_schema = {"type": "string", "pattern": ecma_pattern(NAME_PATTERN.pattern)}
    found: dict[str, dict[str, Any]] = {
        "session_name": {
            "name": "session_name",
            "in": "path",
            "required": True,
            "description": "A session name (anything else is a 400 `invalid_name`).",
            "schema": dict(name_schema),
            "example": SESSION,
        },
        "agent_id": {
            "name": "agent_id",
            "in": "path",
            "required": True,
            "description": "An agent id (anything else is a 400 `invalid_name`).",
            "schema": dict(name_schema),
            "example": AGENT,
        },
        REQUEST_ID_HEADER: {
            "name": REQUEST_ID_HEADER,
            "in": "header",
            "required": False,
            "description": "A correlation id for the logs, sent back in the answer's "
            f"`{REQUEST_ID_HEADER}`; one that does not match the pattern is replaced by the server's own.",
            "schema": {"type": "string", "pattern": ecma_pattern(ACCEPTED_REQUEST_ID.pattern)},
            "example": REQUEST_ID,
        },
        "Last-Event-ID": {
            "name": "Last-Event-ID",
            "in": "header",
            "required": False,
            "description": "Resume after this event id (browsers send it when they reconnect). "
            "A malformed or unknown id gives a fresh stream with `recovered: false`.",
            "schema": {"type": "string"},
            "example": RESUME_ID,
        },
        "last_event_id": {
            "name": "last_event_id",
            "in": "query",
            "required": False,
            "description": "`Last-Event-ID` for clients that cannot set headers (the header wins).",
            "schema": {"type": "string"},
            "example": RESUME_ID,
        },
        TOKEN_PARAMETER: {
            "name": TOKEN_PARAMETER,
            "in": "query",
            "required": False,
            "description": "The token, for clients that cannot set `Authorization` "
            "(`EventSource`); event streams only.",
            "schema": {"type": "string"},
            "example": SESSION_TOKEN,
        },
    }
    if insecure:
        del found[TOKEN_PARAMETER]
    return found


def response_headers() -> dict[str, dict[str, Any]]:
    """The header components, by name."""
    return {
        REQUEST_ID_HEADER: {
            "description": f"The request's id (the client's `{REQUEST_ID_HEADER}` if acceptable, else "
            "one the server made); log lines carry it.",
            "schema": {"type": "string", "pattern": ecma_pattern(ACCEPTED_REQUEST_ID.pattern)},
        },
        "Retry-After": {
            "description": "Seconds to wait before retrying.",
            "required": True,
            "schema": {"type": "integer", "minimum": 1},
            "example": int(RETRY_AFTER),
        },
        "WWW-Authenticate": {
            "description": "The bearer challenge.",
            "required": True,
            "schema": {"type": "string"},
            "example": 'Bearer realm="switchboard"',
        },
        "Location": {
            "description": "Where to go.",
            "required": True,
            "schema": {"type": "string"},
            "example": "/console/index.html",
        },
        "Cache-Control": {
            "description": "Event streams are never cached.",
            "schema": {"type": "string"},
            "example": "no-cache",
        },
        "X-Accel-Buffering": {
            "description": "Tells nginx not to buffer the stream.",
            "schema": {"type": "string"},
            "example": "no",
        },
    }
