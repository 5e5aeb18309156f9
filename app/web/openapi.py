"""The OpenAPI 3 document of a process, served at ``GET /openapi.json``.

Built with apispec and its marshmallow plugin from the schemas the server itself uses
(``schemas/requests.py`` for bodies and query strings, ``schemas/envelope.py`` for events,
``schemas/responses.py`` for answers), for the routes the process really serves: the paths come
from the app's router, and each is described by its entry in ``OPERATIONS`` below, the one
table of operation docs. A route without an entry still appears, marked ``x-undocumented``
(the test suite fails on it), so a new route cannot stay undocumented unnoticed; an entry
without a route (the other sub-app's, in a one-component process) is left out.

The document says what the answering process does: a process that runs with ``--insecure``
documents no security and no 401/403/429 answers, and ``agent_id`` is then required in
workbench bodies (with a token it is optional: the agent is the token's).

Wiring: ``setup_openapi(app)`` in ``create_app`` adds the route and the per-app cache (the
document is built at the first request, when the routes are final, then served from memory).
"""

from __future__ import annotations

import copy
import json
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Literal

from aiohttp import web
from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from marshmallow import Schema, fields

from app.keys import SETTINGS, TOKENS
from realtime.events import encode, named_frame, sse_frame
from schemas import requests as rq
from schemas import responses as rs
from schemas.envelope import EVENT_TYPES

logger = logging.getLogger(__name__)

OPENAPI_VERSION = "3.0.3"
OPENAPI_PATH = "/openapi.json"
TITLE = "Switchboard"
FALLBACK_VERSION = "0.1.0"
# The pattern of session names and agent ids (schemas.fields.NAME_PATTERN) in ECMA syntax.
NAME_PATTERN = "^[A-Za-z0-9_-]{1,64}$"
# What the request middleware keeps of a client's X-Request-ID (else it makes its own).
REQUEST_ID_PATTERN = "^[A-Za-z0-9._:-]{1,128}$"
MAX_BODY = 65536
# Statuses that only a process requiring tokens answers (tokens, per-token limits).
TOKEN_STATUSES = frozenset({401, 403, 429})


def package_version() -> str:
    try:
        return metadata.version("switchboard")
    except metadata.PackageNotFoundError:
        return FALLBACK_VERSION


def ref(kind: str, name: str) -> dict[str, str]:
    return {"$ref": f"#/components/{kind}/{name}"}


# ---------------------------------------------------------------------------------------
# Examples: one timeline (session "demo", agent "alice"), reused by every operation.
# ---------------------------------------------------------------------------------------

T0 = 1703246400
SESSION_TOKEN = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJ0eXAiOiJzZXNzaW9uIiwic3ViIjoiZGVtbyIsImlhdCI6MTcw"
    "MzI0NjQwMCwiZXhwIjoxNzAzMjUzNjAwfQ.FRNBMKoEitDGYDE6MrjnZmG-780QY_41J8Am381FZJs"
)
REQUEST_ID = "7f3a9c1e2b4d6058"
HANDOFF = "customer asked for a human"


def _session(status: str, agent_id: str | None, updated: int, seq: int, reason: str | None) -> dict[str, Any]:
    return {
        "session_name": "demo", "status": status, "agent_id": agent_id, "created_at": T0,
        "updated_at": updated, "escalation_reason": reason, "status_seq": seq,
    }


def _message(id_: str, role: str, content: str, at: int, agent_id: str | None = None) -> dict[str, Any]:
    return {"id": id_, "role": role, "content": content, "agent_id": agent_id, "created_at": at}


S_NEW = _session("bot_active", None, T0, 1, None)
S_WAITING = _session("waiting_agent", None, T0 + 20, 2, HANDOFF)
S_HELD = _session("agent_active", "alice", T0 + 60, 3, HANDOFF)
S_RELEASED = _session("bot_active", None, T0 + 300, 4, HANDOFF)
S_CLOSED = _session("closed", None, T0 + 400, 5, HANDOFF)
M_HELLO = _message("3f9c1a7e5b2d4c60", "customer", "Hello", T0 + 5)
M_HELLO_BOT = _message(
    "8a1e2b3c4d5f6a7b", "bot", "Hello! I'm the Switchboard assistant. How can I help you today?", T0 + 5
)
M_HUMAN = _message("c0ffee1234abcd56", "customer", "I want a human", T0 + 20)
M_HUMAN_BOT = _message(
    "5e6f7a8b9c0d1e2f", "bot", "I'm connecting you with a human agent. Please stay here.", T0 + 20
)
M_LATE = _message("0a1b2c3d4e5f6071", "customer", "My order is late", T0 + 70)
M_AGENT = _message("9f8e7d6c5b4a3928", "agent", "Let me check that for you.", T0 + 80, "alice")


@dataclass(frozen=True, slots=True)
class Example:
    summary: str
    value: Any
    token_only: bool = False  # only true of a process that requires tokens


# Request bodies (validated by the request schemas in the test suite).
REQUEST_EXAMPLES: dict[str, Example] = {
    "request.create_session.named": Example("Create a session with a name", {"session_name": "demo"}),
    "request.create_session.generated": Example("Let the server name it (s- and 16 hex digits)", {}),
    "request.chat.hello": Example("A greeting: the bot answers", {"session_name": "demo", "content": "Hello"}),
    "request.chat.human": Example(
        "Asking for a person: the bot answers, then escalates",
        {"session_name": "demo", "content": "I want a human"},
    ),
    "request.escalate.reason": Example(
        "Ask for a human, with a reason", {"session_name": "demo", "reason": "billing question"}
    ),
    "request.escalate.plain": Example("Ask for a human (reason null)", {"session_name": "demo"}),
    "request.agent_action": Example("As agent alice", {"agent_id": "alice"}),
    "request.agent_action.token": Example(
        "With an agent token: the token says who acts", {}, token_only=True
    ),
    "request.agent_message": Example(
        "Alice answers", {"agent_id": "alice", "content": "Let me check that for you."}
    ),
    "request.agent_message.token": Example(
        "With an agent token (agent_id, if given, must be the token's)",
        {"content": "Let me check that for you."}, token_only=True,
    ),
}

# JSON answers (validated by the response schemas in the test suite).
RESPONSE_EXAMPLES: dict[str, Example] = {
    "session.created": Example(
        "A new session and its customer token", {**S_NEW, "token": SESSION_TOKEN}, token_only=True
    ),
    "session.created.insecure": Example("A new session (--insecure: no token)", S_NEW),
    "session.bot_active": Example("The bot holds the conversation", S_NEW),
    "session.waiting_agent": Example("Waiting for an agent", S_WAITING),
    "session.agent_active": Example("Held by agent alice", S_HELD),
    "session.released": Example("Handed back to the bot", S_RELEASED),
    "session.closed": Example("Closed", S_CLOSED),
    "chat.bot_reply": Example(
        "The bot answers", {"session": S_NEW, "message": M_HELLO, "reply": M_HELLO_BOT}
    ),
    "chat.escalated": Example(
        "The bot answers, then the session waits for an agent",
        {"session": S_WAITING, "message": M_HUMAN, "reply": M_HUMAN_BOT},
    ),
    "chat.agent_holds": Example(
        "An agent holds the session: no bot reply", {"session": S_HELD, "message": M_LATE, "reply": None}
    ),
    "chat.new_session": Example(
        "The chat created the session: its token comes with the answer",
        {"session": S_NEW, "message": M_HELLO, "reply": M_HELLO_BOT, "token": SESSION_TOKEN},
        token_only=True,
    ),
    "agent_message.sent": Example("Alice's message", {"session": S_HELD, "message": M_AGENT}),
    "session_list.waiting": Example("The queue, oldest first", {"sessions": [S_WAITING]}),
    "session_list.empty": Example("Nobody waiting", {"sessions": []}),
    "transcript.demo": Example(
        "The conversation so far",
        {"session_name": "demo", "messages": [M_HELLO, M_HELLO_BOT, M_HUMAN, M_HUMAN_BOT, M_LATE, M_AGENT]},
    ),
    "stream_health.customer_here": Example(
        "The customer's page is open; an agent's view of it is open in another process",
        {"session_name": "demo", "subscribed_processes": 2, "streams_in_this_process": 1,
         "customer_connected": True, "last_event": {"id": "1732867200000-0", "time": 1732867200.0},
         "scope": "deployment"},
    ),
    "stream_health.customer_gone": Example(
        "The customer has left",
        {"session_name": "demo", "subscribed_processes": 1, "streams_in_this_process": 1,
         "customer_connected": False, "last_event": {"id": "1732867200000-0", "time": 1732867200.0},
         "scope": "deployment"},
    ),
    "health.ok": Example(
        "Serving on Redis",
        {"status": "ok", "broker": "redis", "degraded": False, "components": ["chatbot", "workbench"],
         "streams": 3, "insecure": False, "pid": 4242},
    ),
    "health.degraded": Example(
        "Redis is away: serving from memory",
        {"status": "degraded", "broker": "memory", "degraded": True, "components": ["chatbot", "workbench"],
         "streams": 3, "insecure": False, "pid": 4242},
    ),
    "ready.yes": Example(
        "The canary came back", {"ready": True, "broker": "redis", "degraded": False, "canary_ms": 1.4}
    ),
    "ready.no": Example(
        "The canary did not come back in 2 s",
        {"ready": False, "broker": "redis", "degraded": True, "canary_ms": 2001.7},
    ),
}


@dataclass(frozen=True, slots=True)
class ErrorExample:
    status: int
    code: str
    message: str
    fields: Mapping[str, Any] | None = None

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.fields is not None:
            error["fields"] = dict(self.fields)
        error["request_id"] = REQUEST_ID
        return {"error": error}


NAME_MESSAGE = "must match ^[A-Za-z0-9_-]{1,64}$ (letters, digits, _ and -)"
ERROR_EXAMPLES: dict[str, ErrorExample] = {
    "error.bad_json": ErrorExample(
        400, "bad_json", "request body is not valid JSON: Expecting value: line 1 column 1 (char 0)"
    ),
    "error.validation.create_session": ErrorExample(
        400, "validation_error", "invalid request", {"session_name": [NAME_MESSAGE]}
    ),
    "error.validation.chat": ErrorExample(
        400, "validation_error", "invalid request", {"content": ["Missing data for required field."]}
    ),
    "error.validation.escalate": ErrorExample(
        400, "validation_error", "invalid request", {"reason": ["Longer than maximum length 500."]}
    ),
    "error.validation.agent_action": ErrorExample(
        400, "validation_error", "invalid request", {"agent_id": [NAME_MESSAGE]}
    ),
    "error.validation.agent_message": ErrorExample(
        400, "validation_error", "invalid request", {"content": ["Length must be between 1 and 4000."]}
    ),
    "error.validation.status": ErrorExample(
        400, "validation_error", "invalid request",
        {"status": ["Must be one of: bot_active, waiting_agent, agent_active, closed."]},
    ),
    "error.validation.sessions": ErrorExample(
        400, "validation_error", "invalid request", {"sessions": {"0": [NAME_MESSAGE]}}
    ),
    "error.validation.unknown_query": ErrorExample(
        400, "validation_error", "invalid request", {"limit": ["Unknown field."]}
    ),
    "error.invalid_name.session": ErrorExample(
        400, "invalid_name", "invalid session_name", {"session_name": [NAME_MESSAGE]}
    ),
    "error.invalid_name.agent": ErrorExample(
        400, "invalid_name", "invalid agent_id", {"agent_id": [NAME_MESSAGE]}
    ),
    "error.unauthorized": ErrorExample(401, "unauthorized", "a token is required"),
    "error.unauthorized.expired": ErrorExample(401, "unauthorized", "token expired"),
    "error.forbidden.session": ErrorExample(
        403, "forbidden", "this token does not grant access to that session"
    ),
    "error.forbidden.workbench": ErrorExample(403, "forbidden", "the workbench needs an agent token"),
    "error.forbidden.agent_stream": ErrorExample(403, "forbidden", "an agent's stream is its own"),
    "error.forbidden.agent_mismatch": ErrorExample(403, "forbidden", "agent_id does not match the token"),
    "error.session_not_found": ErrorExample(404, "session_not_found", "session 'demo' does not exist"),
    "error.session_exists": ErrorExample(409, "session_exists", "session 'demo' already exists"),
    "error.conflict.closed": ErrorExample(409, "conflict", "session is closed"),
    "error.conflict.held": ErrorExample(409, "conflict", "session is held by agent bob"),
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
    "error.too_many_streams.token": ErrorExample(
        429, "too_many_streams", "this token holds as many streams as it may; close one first"
    ),
    "error.too_many_streams.process": ErrorExample(
        503, "too_many_streams", "this process holds as many streams as it may; retry shortly"
    ),
    "error.unavailable": ErrorExample(503, "unavailable", "state store unavailable; retry shortly"),
}

# Events (validated by schemas.envelope.validate_event in the test suite): (id, envelope).
EVENT_EXAMPLES: dict[str, tuple[str, str | None, dict[str, Any]]] = {
    "event.connected.session": (
        "First event of a session stream", f"{T0}000-0",
        {"type": "connected", "payload": {"channels": ["sse:session:demo"], "session_name": "demo",
                                          "recovered": False}, "timestamp": T0, "source": "system"},
    ),
    "event.connected.agent": (
        "First event of an agent stream", f"{T0}000-0",
        {"type": "connected", "payload": {"channels": ["sse:agent:alice", "sse:broadcast"],
                                          "agent_id": "alice", "recovered": False},
         "timestamp": T0, "source": "system"},
    ),
    "event.new_message.customer": (
        "The customer wrote", f"{T0 + 20}117-0",
        {"type": "new_message", "payload": {"session_name": "demo", "message": M_HUMAN},
         "timestamp": T0 + 20, "source": "ai_chatbot"},
    ),
    "event.new_message.bot": (
        "The bot answered", f"{T0 + 20}142-0",
        {"type": "new_message", "payload": {"session_name": "demo", "message": M_HUMAN_BOT},
         "timestamp": T0 + 20, "source": "ai_chatbot"},
    ),
    "event.status_change.escalated": (
        "The session now waits for an agent", f"{T0 + 20}151-0",
        {"type": "status_change", "payload": {"session_name": "demo", "status": "waiting_agent",
                                              "previous_status": "bot_active", "agent_id": None},
         "timestamp": T0 + 20, "source": "ai_chatbot"},
    ),
    "event.transfer_request": (
        "A session asks for a human (broadcast)", f"{T0 + 20}152-0",
        {"type": "transfer_request", "payload": {"session_name": "demo", "status": "waiting_agent",
                                                 "reason": HANDOFF},
         "timestamp": T0 + 20, "source": "ai_chatbot"},
    ),
    "event.agent_joined": (
        "Alice took the session over", f"{T0 + 60}310-0",
        {"type": "agent_joined", "payload": {"session_name": "demo", "agent_id": "alice"},
         "timestamp": T0 + 60, "source": "agent_workbench"},
    ),
    "event.status_change.takeover": (
        "Held by alice now", f"{T0 + 60}311-0",
        {"type": "status_change", "payload": {"session_name": "demo", "status": "agent_active",
                                              "previous_status": "waiting_agent", "agent_id": "alice"},
         "timestamp": T0 + 60, "source": "agent_workbench"},
    ),
    "event.new_message.held": (
        "A customer message of a session alice holds (her agent channel)", f"{T0 + 70}020-0",
        {"type": "new_message", "payload": {"session_name": "demo", "message": M_LATE},
         "timestamp": T0 + 70, "source": "ai_chatbot"},
    ),
    "event.new_message.agent": (
        "Alice answered", f"{T0 + 80}505-0",
        {"type": "new_message", "payload": {"session_name": "demo", "message": M_AGENT},
         "timestamp": T0 + 80, "source": "agent_workbench"},
    ),
    "event.agent_left": (
        "Alice handed the session back", f"{T0 + 300}001-0",
        {"type": "agent_left", "payload": {"session_name": "demo", "agent_id": "alice"},
         "timestamp": T0 + 300, "source": "agent_workbench"},
    ),
    "event.status_change.released": (
        "The bot holds the session again", f"{T0 + 300}002-0",
        {"type": "status_change", "payload": {"session_name": "demo", "status": "bot_active",
                                              "previous_status": "agent_active", "agent_id": None},
         "timestamp": T0 + 300, "source": "agent_workbench"},
    ),
    "event.heartbeat": (
        "Every heartbeat interval (no id)", None,
        {"type": "heartbeat", "payload": {}, "timestamp": T0 + 30, "source": "system"},
    ),
}

# What each kind of stream shows in its examples, in wire order.
SESSION_STREAM_EXAMPLES = (
    "event.connected.session", "event.new_message.customer", "event.new_message.bot",
    "event.status_change.escalated", "event.heartbeat", "event.agent_joined",
    "event.status_change.takeover", "event.new_message.agent", "event.agent_left",
    "event.status_change.released",
)
AGENT_STREAM_EXAMPLES = (
    "event.connected.agent", "event.transfer_request", "event.heartbeat",
    "event.status_change.takeover", "event.new_message.held",
)

METRICS_EXAMPLE = """\
# HELP switchboard_streams_open Open SSE streams, by sub-app.
# TYPE switchboard_streams_open gauge
switchboard_streams_open{component="chatbot"} 3.0
switchboard_streams_open{component="workbench"} 1.0
# HELP switchboard_request_duration_seconds Time to answer a request (event streams excluded: they last as long as their client).
# TYPE switchboard_request_duration_seconds histogram
switchboard_request_duration_seconds_bucket{le="0.005",method="POST",route="/chatbot/api/chat",status="200"} 41.0
switchboard_request_duration_seconds_count{method="POST",route="/chatbot/api/chat",status="200"} 42.0
switchboard_request_duration_seconds_sum{method="POST",route="/chatbot/api/chat",status="200"} 0.097
"""


def wire_text(names: Sequence[str]) -> str:
    """The events as they travel, framed by the same code that writes the streams."""
    frames = []
    for name in names:
        _, event_id, event = EVENT_EXAMPLES[name]
        frames.append(sse_frame(encode(event), event_id).decode())
    return "".join(frames)


CHAT_STREAM_EXAMPLE = "".join(
    named_frame(event, data).decode()
    for event, data in (
        ("chunk", {"session_name": "demo", "index": 0, "text": "I'm connecting you with a human agent. "}),
        ("chunk", {"session_name": "demo", "index": 1, "text": "Please stay here."}),
        ("done", {"session": S_WAITING, "message": M_HUMAN, "reply": M_HUMAN_BOT}),
    )
)


# ---------------------------------------------------------------------------------------
# The operation table: one entry per (method, path) the server may route.
# ---------------------------------------------------------------------------------------

Auth = Literal["none", "optional", "customer", "agent"]
Stream = Literal["session", "agent"]


@dataclass(frozen=True, slots=True)
class Answer:
    """A documented non-error answer."""

    status: int
    description: str
    schema: str | None = None  # a components/schemas name, for application/json
    examples: tuple[str, ...] = ()  # RESPONSE_EXAMPLES names
    media: str | None = "application/json"  # None: no body
    headers: tuple[str, ...] = ()  # components/headers names
    example: str | None = None  # a literal example (non-JSON media)


@dataclass(frozen=True, slots=True)
class Operation:
    tag: str
    summary: str
    description: str
    answers: tuple[Answer, ...]
    auth: Auth = "none"
    errors: tuple[str, ...] = ()  # ERROR_EXAMPLES names; grouped by status
    body: str | None = None  # request schema component
    body_examples: tuple[str, ...] = ()
    query: type[Schema] | None = None
    stream: Stream | None = None


BODY_ERRORS = ("error.bad_json", "error.body_too_large", "error.unsupported_media_type")
TOKEN_ERRORS = ("error.unauthorized", "error.unauthorized.expired")
CUSTOMER_ERRORS = (*TOKEN_ERRORS, "error.forbidden.session")
AGENT_ERRORS = (*TOKEN_ERRORS, "error.forbidden.workbench")
STREAM_ERRORS = ("error.too_many_streams.token", "error.too_many_streams.process", "error.unavailable")
SESSION_STREAM_ANSWER = Answer(200, "The session's event stream.")
AGENT_STREAM_ANSWER = Answer(200, "The agent's event stream.")


def _session_read(component: str) -> dict[tuple[str, str], Operation]:
    """The read endpoints both sub-apps serve (handlers.common.add_session_read_routes)."""
    prefix = f"/{component}/api/sessions/{{session_name}}"
    customer = component == "chatbot"
    auth: Auth = "customer" if customer else "agent"
    who = "the session's customer token" if customer else "an agent token"
    access = (*CUSTOMER_ERRORS,) if customer else (*AGENT_ERRORS,)
    return {
        ("GET", prefix): Operation(
            component, "Get a session", f"The session's state. Token: {who}.",
            (Answer(200, "The session.", "Session", ("session.bot_active", "session.agent_active")),),
            auth, ("error.invalid_name.session", *access, "error.session_not_found", "error.unavailable"),
        ),
        ("GET", f"{prefix}/messages"): Operation(
            component, "Get the transcript",
            f"The session's transcript, oldest first (the last 500 messages). Token: {who}.",
            (Answer(200, "The transcript.", "Transcript", ("transcript.demo",)),),
            auth, ("error.invalid_name.session", *access, "error.session_not_found", "error.unavailable"),
        ),
        ("GET", f"{prefix}/events"): Operation(
            component, "Stream a session's events",
            "Server-Sent Events of channel `sse:session:{session_name}`: everything about the "
            "conversation. The first event is `connected`; resume with `Last-Event-ID` (or "
            f"`?last_event_id=`). Token: {who}, as a header or as `?token=` (EventSource "
            "cannot set headers). An unknown session is a 404 before any stream opens.",
            (SESSION_STREAM_ANSWER,),
            auth, ("error.invalid_name.session", *access, "error.session_not_found", *STREAM_ERRORS),
            stream="session",
        ),
    }


OPERATIONS: dict[tuple[str, str], Operation] = {
    # -- the process ---------------------------------------------------------------------
    ("GET", "/health"): Operation(
        "process", "Liveness and mode",
        "Always 200 while the process serves: its broker, whether it is degraded, the sub-apps "
        "it runs, its open streams and its pid.",
        (Answer(200, "The process is alive.", "Health", ("health.ok", "health.degraded")),),
    ),
    ("GET", "/health/ready"): Operation(
        "process", "Readiness",
        "Publishes a canary through the broker: 200 when it comes back to this process within "
        "2 s, else 503 with Retry-After. Use it as the readiness probe.",
        (
            Answer(200, "Ready: events go through.", "Ready", ("ready.yes",)),
            Answer(503, "Not ready: the canary did not come back in time.", "Ready", ("ready.no",),
                   headers=("Retry-After",)),
        ),
    ),
    ("GET", "/metrics"): Operation(
        "process", "Prometheus metrics",
        "This process's metrics in the Prometheus text exposition format (open streams, events "
        "published and delivered, request latency by route). Meant for the scraper: protect it "
        "at the proxy.",
        (Answer(200, "The metrics.", media="text/plain", example=METRICS_EXAMPLE),),
    ),
    ("GET", OPENAPI_PATH): Operation(
        "process", "This document",
        "The OpenAPI document of this process: the sub-apps it serves and its own endpoints.",
        (Answer(200, "The OpenAPI 3 document.", "OpenApiDocument"),),
    ),
    ("GET", "/"): Operation(
        "console", "Open the console",
        "Redirects to the browser console (`/console/index.html`, static files).",
        (Answer(302, "To the console.", media=None, headers=("Location",)),),
    ),
    # -- chatbot -------------------------------------------------------------------------
    ("POST", "/chatbot/api/sessions"): Operation(
        "chatbot", "Create a session",
        "Creates a session in `bot_active` (a name `s-` + 16 hex digits is generated when none "
        "is given; an empty body counts as `{}`). Needs no token, and answers the session with "
        "its customer `token`.",
        (Answer(201, "The new session.", "SessionCreated", ("session.created", "session.created.insecure")),),
        "optional",
        ("error.validation.create_session", *BODY_ERRORS, *TOKEN_ERRORS, "error.session_exists",
         "error.rate_limited", "error.unavailable"),
        body="CreateSessionRequest",
        body_examples=("request.create_session.named", "request.create_session.generated"),
    ),
    ("POST", "/chatbot/api/chat"): Operation(
        "chatbot", "Send a customer message",
        "Adds the customer's message (creating the session if new). In `bot_active` the bot "
        "answers, and a customer asking for a person is escalated after the answer; otherwise "
        "the message goes to the agent and `reply` is null. Without a token only a new session "
        "may be started (its `token` comes back); a chat to an existing session needs the "
        "session's token (401).",
        (Answer(200, "The message, the bot's reply and the session after them.", "ChatResponse",
                ("chat.bot_reply", "chat.escalated", "chat.agent_holds", "chat.new_session")),),
        "optional",
        ("error.validation.chat", *BODY_ERRORS, *CUSTOMER_ERRORS, "error.session_not_found",
         "error.conflict.closed", "error.rate_limited", "error.unavailable"),
        body="ChatRequest", body_examples=("request.chat.hello", "request.chat.human"),
    ),
    ("POST", "/chatbot/api/chat/stream"): Operation(
        "chatbot", "Send a customer message; stream the bot's reply",
        "Takes the body of `POST /chatbot/api/chat` and checks it the same way (same tokens, rate "
        "limit and errors, answered as JSON before any stream starts). Once the customer's message "
        "is stored and published it answers `text/event-stream`: `chunk` events with the bot's "
        "reply as the responder produces it (`{session_name, index, text}`), then one `done` event "
        "holding exactly what `/api/chat` answers (`{session, message, reply}`, plus `token` when "
        "the chat created the session), or an `error` event holding the JSON error body if the "
        "reply fails midway; then the response ends. Frames have an `event:` line and no `id:`: "
        "they answer one request and are not the pub/sub envelope (chunks are never published; "
        "the session channel gets the same `new_message` events as with `/api/chat`). No chunks "
        "when the bot does not hold the session (`reply` null). A client that leaves mid-reply "
        "does not stop the reply from being stored and published.",
        (Answer(200, "The reply as the bot writes it, then the stored messages.",
                media="text/event-stream", headers=("Cache-Control", "X-Accel-Buffering"),
                example=CHAT_STREAM_EXAMPLE),),
        "optional",
        ("error.validation.chat", *BODY_ERRORS, *CUSTOMER_ERRORS, "error.session_not_found",
         "error.conflict.closed", "error.rate_limited", "error.unavailable"),
        body="ChatRequest", body_examples=("request.chat.hello", "request.chat.human"),
    ),
    ("POST", "/chatbot/api/manual/escalate"): Operation(
        "chatbot", "Ask for a human",
        "Moves a `bot_active` session to `waiting_agent` and asks every agent for it. Already "
        "waiting: 200, unchanged, no event; held or closed: 409. Token: the session's.",
        (Answer(200, "The session after the escalation.", "Session", ("session.waiting_agent",)),),
        "customer",
        ("error.validation.escalate", *BODY_ERRORS, *CUSTOMER_ERRORS, "error.session_not_found",
         "error.conflict.escalate", "error.rate_limited", "error.unavailable"),
        body="EscalateRequest", body_examples=("request.escalate.reason", "request.escalate.plain"),
    ),
    **_session_read("chatbot"),
    # -- workbench -----------------------------------------------------------------------
    ("GET", "/workbench/api/sessions"): Operation(
        "workbench", "List sessions in a status (the queue)",
        "Sessions in one status, first come first served (by `status_seq`); `status` defaults "
        "to `waiting_agent`, any other query parameter is a 400. Token: an agent's.",
        (Answer(200, "The sessions.", "SessionList", ("session_list.waiting", "session_list.empty")),),
        "agent",
        ("error.validation.status", "error.validation.unknown_query", *AGENT_ERRORS, "error.unavailable"),
        query=rq.SessionListQuerySchema,
    ),
    **_session_read("workbench"),
    ("POST", "/workbench/api/sessions/{session_name}/takeover"): Operation(
        "workbench", "Take a session over",
        "From `waiting_agent` or `bot_active` to `agent_active`, held by the agent. Of many "
        "agents at once exactly one wins; held (even by the same agent: 200, unchanged, no "
        "event) or closed: 409. Token: an agent's, whose agent acts.",
        (Answer(200, "The session, held by the agent.", "Session", ("session.agent_active",)),),
        "agent",
        ("error.invalid_name.session", "error.validation.agent_action", *BODY_ERRORS, *AGENT_ERRORS,
         "error.forbidden.agent_mismatch", "error.session_not_found", "error.conflict.held",
         "error.rate_limited", "error.unavailable"),
        body="AgentActionRequest", body_examples=("request.agent_action", "request.agent_action.token"),
    ),
    ("POST", "/workbench/api/sessions/{session_name}/release"): Operation(
        "workbench", "Hand a session back to the bot",
        "From `agent_active`, by the holder, back to `bot_active`; anything else is 409.",
        (Answer(200, "The session, back with the bot.", "Session", ("session.released",)),),
        "agent",
        ("error.invalid_name.session", "error.validation.agent_action", *BODY_ERRORS, *AGENT_ERRORS,
         "error.forbidden.agent_mismatch", "error.session_not_found", "error.conflict.release",
         "error.conflict.held", "error.rate_limited", "error.unavailable"),
        body="AgentActionRequest", body_examples=("request.agent_action", "request.agent_action.token"),
    ),
    ("POST", "/workbench/api/sessions/{session_name}/close"): Operation(
        "workbench", "Close a session",
        "From any status but `closed` (a held session by its holder only) to `closed`.",
        (Answer(200, "The closed session.", "Session", ("session.closed",)),),
        "agent",
        ("error.invalid_name.session", "error.validation.agent_action", *BODY_ERRORS, *AGENT_ERRORS,
         "error.forbidden.agent_mismatch", "error.session_not_found", "error.conflict.already_closed",
         "error.conflict.held", "error.rate_limited", "error.unavailable"),
        body="AgentActionRequest", body_examples=("request.agent_action", "request.agent_action.token"),
    ),
    ("GET", "/workbench/api/sessions/{session_name}/stream"): Operation(
        "workbench", "Who is listening to a session",
        "How many processes hold a stream of the session (PUBSUB NUMSUB; in memory, this "
        "process), how many streams of it this process holds, whether the customer side has "
        "one open anywhere (every customer stream also subscribes a presence channel whose "
        "subscribers are counted), and the session's newest event. Lets an agent see that the "
        "customer has left before typing an answer. Token: an agent token.",
        (Answer(200, "The session's listeners.", "StreamHealth",
                ("stream_health.customer_here", "stream_health.customer_gone")),),
        "agent", ("error.invalid_name.session", *AGENT_ERRORS, "error.session_not_found", "error.unavailable"),
    ),
    ("POST", "/workbench/api/sessions/{session_name}/messages"): Operation(
        "workbench", "Send an agent message",
        "The holder's message to the customer (the session must be `agent_active` and held by "
        "this agent, else 409). Content: 1 to 4,000 characters (or the process's "
        "`--max-message`).",
        (Answer(200, "The message and the session.", "AgentMessageResponse", ("agent_message.sent",)),),
        "agent",
        ("error.invalid_name.session", "error.validation.agent_message", *BODY_ERRORS, *AGENT_ERRORS,
         "error.forbidden.agent_mismatch", "error.session_not_found", "error.conflict.agent_message",
         "error.rate_limited", "error.unavailable"),
        body="AgentMessageRequest",
        body_examples=("request.agent_message", "request.agent_message.token"),
    ),
    ("GET", "/workbench/api/events"): Operation(
        "workbench", "Stream every session's events (supervisor)",
        "Server-Sent Events of every session channel, for a wall board or an audit: one "
        "pattern subscription (`PSUBSCRIBE sse:session:*`) on the process's pub/sub connection; "
        "on a Redis Cluster (no patterns in sharded pub/sub) the `sse:sessions` feed, to which "
        "every session event is also published, with its own ids. Resume with `Last-Event-ID` "
        "like any stream. Filters: `status` (sessions in that status: those in it when the "
        "stream opens, then following the `status_change` events, whose moves into and out of "
        "the status are shown) and `sessions` (comma-separated, or `session` repeated; at most "
        "100). Token: an agent's, as a header or as `?token=`.",
        (SESSION_STREAM_ANSWER,),
        "agent",
        ("error.validation.status", "error.validation.sessions", "error.validation.unknown_query",
         *AGENT_ERRORS, *STREAM_ERRORS),
        query=rq.SupervisorQuerySchema,
        stream="session",
    ),
    ("GET", "/workbench/api/agents/{agent_id}/events"): Operation(
        "workbench", "Stream an agent's events",
        "Server-Sent Events of `sse:agent:{agent_id}` (customer messages of the sessions the "
        "agent holds) and `sse:broadcast` (transfer requests and queue changes). Token: that "
        "agent's own, as a header or as `?token=`.",
        (AGENT_STREAM_ANSWER,),
        "agent",
        ("error.invalid_name.agent", *AGENT_ERRORS, "error.forbidden.agent_stream", *STREAM_ERRORS),
        stream="agent",
    ),
}

TAGS = {
    "chatbot": "Customer side, mounted at `/chatbot` (a process started with `--chatbot`, or both).",
    "workbench": "Agent side, mounted at `/workbench` (a process started with `--workbench`, or both).",
    "process": "What every process serves, whatever its sub-apps.",
    "console": "The browser console (static files under `/console/`).",
}

STATUS_TEXT = {
    400: "Bad request: invalid JSON, a schema violation, or a bad name in the URL.",
    401: "Missing, malformed, badly signed or expired token.",
    403: "The token does not grant this.",
    404: "Unknown session.",
    409: "Not allowed in the session's current state.",
    413: f"Body over {MAX_BODY:,} bytes.",
    415: "A non-empty body that is not `application/json`.",
    429: "Too many requests or streams for this token: retry after `Retry-After` seconds.",
    503: "Unavailable now (state store, or this process's stream limit): retry after `Retry-After` seconds.",
}


# ---------------------------------------------------------------------------------------
# Building the document.
# ---------------------------------------------------------------------------------------


def _ecma_pattern(self: Any, field: fields.Field, **kwargs: Any) -> dict[str, Any]:
    """marshmallow's Regexp patterns end in ``\\Z`` and are matched from the start (Python);
    OpenAPI wants ECMA patterns, which are searched: anchor both ends instead."""
    for validator in field.validators:
        regex = getattr(validator, "regex", None)
        if isinstance(regex, re.Pattern):
            pattern = regex.pattern
            if pattern.endswith(r"\Z"):
                pattern = pattern[:-2] + "$"
            if not pattern.startswith("^"):
                pattern = "^" + pattern
            return {"pattern": pattern}
    return {}


def _exact_null(self: Any, field: fields.Field, ret: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """apispec writes a nullable nested schema as ``anyOf: [{type: object, nullable: true},
    {$ref}]``, whose first branch admits any object; ``enum: [null]`` makes it admit null only."""
    for branch in ret.get("anyOf", ()):
        if branch == {"type": "object", "nullable": True}:
            branch["enum"] = [None]
    return {}


def documented_schemas(insecure: bool = False) -> dict[str, Schema]:
    """Every schema component of the document, by name, as the marshmallow schema behind it
    (the test suite validates examples and real answers with these)."""
    optional_agent = () if insecure else ("agent_id",)
    schemas: dict[str, Schema] = {
        "Message": rs.MessageSchema(),
        "Session": rs.SessionSchema(),
        "SessionCreated": rs.SessionCreatedSchema(),
        "ChatResponse": rs.ChatResponseSchema(),
        "AgentMessageResponse": rs.AgentMessageResponseSchema(),
        "SessionList": rs.SessionListSchema(),
        "Transcript": rs.TranscriptSchema(),
        "StreamHealth": rs.StreamHealthSchema(),
        "ErrorDetail": rs.ErrorDetailSchema(),
        "Error": rs.ErrorSchema(),
        "Health": rs.HealthSchema(),
        "Ready": rs.ReadySchema(),
        "ConnectedPayload": rs.ConnectedPayloadSchema(),
        "StatusChangePayload": rs.StatusChangePayloadSchema(),
        "TransferRequestPayload": rs.TransferRequestPayloadSchema(),
        "NewMessagePayload": rs.NewMessagePayloadSchema(),
        "AgentPresencePayload": rs.AgentPresencePayloadSchema(),
        "HeartbeatPayload": rs.HeartbeatPayloadSchema(),
    }
    for type_ in EVENT_TYPES:
        schemas[event_component(type_)] = rs.EVENT_SCHEMAS[type_]()
    schemas.update({
        "CreateSessionRequest": rq.CreateSessionSchema(),
        "ChatRequest": rq.ChatSchema(),
        "EscalateRequest": rq.EscalateSchema(),
        "AgentActionRequest": rq.AgentActionSchema(partial=optional_agent),
        "AgentMessageRequest": rq.AgentMessageSchema(partial=optional_agent),
    })
    return schemas


def event_component(type_: str) -> str:
    return "".join(part.title() for part in type_.split("_")) + "Event"


EVENT_DESCRIPTIONS = {
    "connected": "The first event of every stream, sent once its subscriptions are live; its id is the stream's position.",
    "status_change": "A session changed status.",
    "transfer_request": "A session asks for a human (broadcast channel).",
    "new_message": "A message was added to a session.",
    "agent_joined": "An agent took a session over.",
    "agent_left": "An agent handed a session back to the bot.",
    "heartbeat": "Sent every heartbeat interval on every stream, without an id.",
}


def _event_union(types: Sequence[str], description: str) -> dict[str, Any]:
    return {
        "description": description,
        "oneOf": [ref("schemas", event_component(t)) for t in types],
        "discriminator": {
            "propertyName": "type",
            "mapping": {t: f"#/components/schemas/{event_component(t)}" for t in types},
        },
    }


def _info_description(components: Sequence[str], insecure: bool) -> str:
    served = " and ".join(f"`/{c}`" for c in components)
    auth = (
        "This process runs with `--insecure`: no token is asked for, and workbench bodies must "
        "name their `agent_id`."
        if insecure else
        "Every request needs a token (`Authorization: Bearer <token>`, or `?token=` on event "
        "streams): the session's customer token on the chatbot side (from `POST "
        "/chatbot/api/sessions`), an agent token on the workbench side (`run.py token --agent "
        "ID`). `POST /chatbot/api/sessions`, and a chat that starts a session, need none."
    )
    return (
        f"Realtime customer service: customers talk to a bot, agents take conversations over. "
        f"This process serves {served}.\n\n"
        f"{auth}\n\n"
        "Errors are JSON: `{\"error\": {\"code\", \"message\", \"fields\"?}}` (see the `Error` "
        "schema). Besides the answers listed per operation, any path answers 404 `not_found` "
        "when unknown (the other sub-app's paths included) and 405 `method_not_allowed` (with "
        "`Allow`) for a wrong method. A request that fails changes nothing and publishes "
        "nothing. Every answer carries `X-Request-ID`.\n\n"
        "Events reach clients over Server-Sent Events: each is an `id:` line (none on "
        "heartbeats) and a `data:` line holding the envelope `{type, payload, timestamp, "
        "source}`, with no `event:` line. Objects may gain keys as the product grows: ignore "
        "keys you do not know (the envelope's four keys are fixed)."
    )


def _parameters() -> dict[str, dict[str, Any]]:
    return {
        "session_name": {
            "name": "session_name", "in": "path", "required": True,
            "description": "A session name (anything else is a 400 `invalid_name`).",
            "schema": {"type": "string", "pattern": NAME_PATTERN}, "example": "demo",
        },
        "agent_id": {
            "name": "agent_id", "in": "path", "required": True,
            "description": "An agent id (anything else is a 400 `invalid_name`).",
            "schema": {"type": "string", "pattern": NAME_PATTERN}, "example": "alice",
        },
        "X-Request-ID": {
            "name": "X-Request-ID", "in": "header", "required": False,
            "description": "A correlation id for the logs, sent back in the answer's "
            "`X-Request-ID`; one that does not match the pattern is replaced by the server's own.",
            "schema": {"type": "string", "pattern": REQUEST_ID_PATTERN}, "example": REQUEST_ID,
        },
        "Last-Event-ID": {
            "name": "Last-Event-ID", "in": "header", "required": False,
            "description": "Resume after this event id (browsers send it when they reconnect). "
            "A malformed or unknown id gives a fresh stream with `recovered: false`.",
            "schema": {"type": "string"}, "example": f"{T0 + 20}151-0",
        },
        "last_event_id": {
            "name": "last_event_id", "in": "query", "required": False,
            "description": "`Last-Event-ID` for clients that cannot set headers (the header wins).",
            "schema": {"type": "string"}, "example": f"{T0 + 20}151-0",
        },
        "token": {
            "name": "token", "in": "query", "required": False,
            "description": "The token, for clients that cannot set `Authorization` "
            "(`EventSource`); event streams only.",
            "schema": {"type": "string"}, "example": SESSION_TOKEN,
        },
    }


def _headers() -> dict[str, dict[str, Any]]:
    return {
        "X-Request-ID": {
            "description": "The request's id (the client's `X-Request-ID` if acceptable, else "
            "one the server made); log lines carry it.",
            "schema": {"type": "string", "pattern": REQUEST_ID_PATTERN},
        },
        "Retry-After": {
            "description": "Seconds to wait before retrying.", "required": True,
            "schema": {"type": "integer", "minimum": 1}, "example": 5,
        },
        "WWW-Authenticate": {
            "description": "The bearer challenge.", "required": True,
            "schema": {"type": "string"}, "example": 'Bearer realm="switchboard"',
        },
        "Location": {
            "description": "Where to go.", "required": True,
            "schema": {"type": "string"}, "example": "/console/index.html",
        },
        "Cache-Control": {
            "description": "Event streams are never cached.", "schema": {"type": "string"},
            "example": "no-cache",
        },
        "X-Accel-Buffering": {
            "description": "Tells nginx not to buffer the stream.", "schema": {"type": "string"},
            "example": "no",
        },
    }


def _security(auth: Auth, stream: Stream | None) -> list[dict[str, list[str]]]:
    if auth == "none":
        return []
    schemes: list[dict[str, list[str]]] = [{"bearerAuth": []}]
    if stream is not None:
        schemes.append({"streamToken": []})
    if auth == "optional":
        schemes.insert(0, {})
    return schemes


def _examples(names: Iterable[str], source: Mapping[str, Example], insecure: bool) -> dict[str, Any]:
    return {
        name: ref("examples", name) for name in names if not (insecure and source[name].token_only)
    }


def _answer(answer: Answer, op: Operation, insecure: bool) -> dict[str, Any]:
    headers = {"X-Request-ID": ref("headers", "X-Request-ID")}
    headers.update({name: ref("headers", name) for name in answer.headers})
    response: dict[str, Any] = {"description": answer.description, "headers": headers}
    if op.stream is not None:
        names = SESSION_STREAM_EXAMPLES if op.stream == "session" else AGENT_STREAM_EXAMPLES
        union = "SessionStreamEvent" if op.stream == "session" else "AgentStreamEvent"
        response["description"] = (
            f"{answer.description} Each event is an `id:` line (none on heartbeats) and a "
            f"`data:` line holding one envelope (the `{union}` schema), then a blank line; no "
            "`event:` line, so browsers read them with `onmessage` and switch on `data.type`. A "
            "stream the server ends (shutdown, a client too slow, a gap the history cannot "
            "fill) gets a `retry: <1000..3000>` line first. On the wire:\n\n"
            f"```text\n{wire_text(names)}```"
        )
        headers.update({h: ref("headers", h) for h in ("Cache-Control", "X-Accel-Buffering")})
        response["content"] = {
            "text/event-stream": {
                "schema": ref("schemas", union),
                "examples": {name: ref("examples", name) for name in dict.fromkeys(names)},
            }
        }
    elif answer.schema is not None:
        media: dict[str, Any] = {"schema": ref("schemas", answer.schema)}
        examples = _examples(answer.examples, RESPONSE_EXAMPLES, insecure)
        if examples:
            media["examples"] = examples
        response["content"] = {answer.media or "application/json": media}
    elif answer.media is not None:
        response["content"] = {answer.media: {"schema": {"type": "string"}, "example": answer.example}}
    return response


def _errors(op: Operation, insecure: bool) -> dict[str, dict[str, Any]]:
    by_status: dict[int, list[str]] = {}
    for name in op.errors:
        status = ERROR_EXAMPLES[name].status
        if insecure and status in TOKEN_STATUSES:
            continue
        by_status.setdefault(status, []).append(name)
    responses = {}
    for status, names in sorted(by_status.items()):
        codes = ", ".join(f"`{c}`" for c in dict.fromkeys(ERROR_EXAMPLES[n].code for n in names))
        headers = {"X-Request-ID": ref("headers", "X-Request-ID")}
        if status in (429, 503):
            headers["Retry-After"] = ref("headers", "Retry-After")
        if status == 401:
            headers["WWW-Authenticate"] = ref("headers", "WWW-Authenticate")
        responses[str(status)] = {
            "description": f"{STATUS_TEXT[status]} Codes: {codes}.",
            "headers": headers,
            "content": {
                "application/json": {
                    "schema": ref("schemas", "Error"),
                    "examples": {name: ref("examples", name) for name in names},
                }
            },
        }
    return responses


def _operation(
    method: str, path: str, op: Operation, schemas: Mapping[str, Schema], insecure: bool
) -> dict[str, Any]:
    # Parameter components by name (apispec turns the names into references).
    parameters: list[Any] = re.findall(r"{(\w+)}", path)
    if op.query is not None:
        parameters.append({"in": "query", "schema": op.query})
    if op.stream is not None:
        parameters += ["Last-Event-ID", "last_event_id"]
        if not insecure:
            parameters.append("token")
    parameters.append("X-Request-ID")
    operation: dict[str, Any] = {
        "tags": [op.tag],
        "summary": op.summary,
        "description": op.description,
        "operationId": _operation_id(method, path),
        "parameters": parameters,
        "responses": {},
    }
    if not insecure:
        operation["security"] = _security(op.auth, op.stream)
    if op.body is not None:
        schema = schemas[op.body]
        needs_body = any(
            f.required and not (schema.partial is True or f.name in (schema.partial or ()))
            for f in schema.fields.values()
        )
        operation["requestBody"] = {
            "required": needs_body,
            "content": {
                "application/json": {
                    "schema": ref("schemas", op.body),
                    "examples": _examples(op.body_examples, REQUEST_EXAMPLES, insecure),
                }
            },
        }
    for answer in op.answers:
        operation["responses"][str(answer.status)] = _answer(answer, op, insecure)
    operation["responses"].update(_errors(op, insecure))
    return operation


def _operation_id(method: str, path: str) -> str:
    words = [w.strip("{}") for w in path.strip("/").replace(".", "_").split("/") if w and w != "api"]
    return "_".join([method.lower(), *words]) if words else f"{method.lower()}_root"


def _undocumented(method: str, path: str) -> dict[str, Any]:
    tag = path.strip("/").split("/", 1)[0]
    return {
        "tags": [tag if tag in TAGS else "process"],
        "summary": "Undocumented",
        "description": "This route has no entry in app/web/openapi.py OPERATIONS yet.",
        "operationId": _operation_id(method, path),
        "parameters": re.findall(r"{(\w+)}", path),
        "responses": {"default": {"description": "Not documented."}},
        "x-undocumented": True,
    }


def build_spec(
    components: Sequence[str],
    routes: Iterable[tuple[str, str]] | None = None,
    *,
    insecure: bool = False,
) -> dict[str, Any]:
    """The OpenAPI document (a JSON-ready dict) of a process serving ``components``.

    ``routes``: the (METHOD, path template) pairs it serves (``routes_of(app)``); None
    documents every table entry of those components plus the process's own endpoints.
    """
    if routes is None:
        prefixes = tuple(f"/{c}/" for c in components)
        routes = [
            key for key in OPERATIONS
            if key[1].startswith(prefixes) or not key[1].startswith(("/chatbot/", "/workbench/"))
        ]
    plugin = MarshmallowPlugin()
    spec = APISpec(
        title=TITLE,
        version=package_version(),
        openapi_version=OPENAPI_VERSION,
        plugins=[plugin],
        info={
            "description": _info_description(components, insecure),
            "license": {"name": "MIT"},
        },
        servers=[{"url": "/"}],
        tags=[{"name": name, "description": text} for name, text in TAGS.items()],
    )
    assert plugin.converter is not None
    plugin.converter.add_attribute_function(_ecma_pattern)
    plugin.converter.add_attribute_function(_exact_null)
    schemas = documented_schemas(insecure)

    event_types = {event_component(t): t for t in EVENT_TYPES}
    for name, schema in schemas.items():
        component: dict[str, Any] = {}
        if name in event_types:
            component["description"] = EVENT_DESCRIPTIONS[event_types[name]]
        spec.components.schema(name, component, schema=schema)
    spec.components.schema("Event", _event_union(EVENT_TYPES, "Any event: the envelope, by `type`."))
    spec.components.schema("SessionStreamEvent", _event_union(
        rs.SESSION_STREAM_EVENTS, "What a session stream carries (`sse:session:{session_name}`)."
    ))
    spec.components.schema("AgentStreamEvent", _event_union(
        rs.AGENT_STREAM_EVENTS, "What an agent stream carries (`sse:agent:{agent_id}` + `sse:broadcast`)."
    ))
    spec.components.schema("OpenApiDocument", {"type": "object", "description": "An OpenAPI 3 document."})

    for name, parameter in _parameters().items():
        if insecure and name == "token":
            continue
        location = parameter.pop("in")
        spec.components.parameter(name, location, parameter)
    for name, header in _headers().items():
        spec.components.header(name, header)
    for name, example in {**REQUEST_EXAMPLES, **RESPONSE_EXAMPLES}.items():
        if not (insecure and example.token_only):
            spec.components.example(name, {"summary": example.summary, "value": copy.deepcopy(example.value)})
    for name, error in ERROR_EXAMPLES.items():
        if not (insecure and error.status in TOKEN_STATUSES):
            spec.components.example(name, {"summary": f"{error.status} {error.code}", "value": error.body()})
    for name, (summary, event_id, event) in EVENT_EXAMPLES.items():
        description = f"On the wire: `id: {event_id}`" if event_id else "On the wire: no `id:` line"
        spec.components.example(
            name, {"summary": summary, "description": description, "value": copy.deepcopy(event)}
        )
    if not insecure:
        spec.components.security_scheme("bearerAuth", {
            "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
            "description": "A customer token (bound to one session) or an agent token.",
        })
        spec.components.security_scheme("streamToken", {
            "type": "apiKey", "in": "query", "name": "token",
            "description": "The same token as `?token=`, on event streams only.",
        })

    paths: dict[str, dict[str, Any]] = {}
    for method, path in routes:
        op = OPERATIONS.get((method, path))
        if op is None:
            logger.warning("route %s %s has no OpenAPI documentation", method, path)
            operation = _undocumented(method, path)
        else:
            operation = _operation(method, path, op, schemas, insecure)
        paths.setdefault(path, {})[method.lower()] = operation
    for path in sorted(paths):
        spec.path(path=path, operations=paths[path])
    return spec.to_dict()


def routes_of(app: web.Application) -> list[tuple[str, str]]:
    """(METHOD, path template) of every route the app serves, sub-apps included, without
    HEAD/OPTIONS (aiohttp and CORS add them) and the console's static files."""
    found = []
    for route in app.router.routes():
        method = route.method.upper()
        resource = route.resource
        if method in ("HEAD", "OPTIONS") or resource is None or isinstance(resource, web.StaticResource):
            continue
        found.append((method, resource.canonical))
    return list(dict.fromkeys(found))


def spec_for_app(app: web.Application) -> dict[str, Any]:
    """The document of a (root) app: its sub-apps, its routes, its mode."""
    return build_spec(app[SETTINGS].components, routes_of(app), insecure=TOKENS not in app)


# ---------------------------------------------------------------------------------------
# Serving it.
# ---------------------------------------------------------------------------------------


class OpenApiDocument:
    """The rendered document of one app, made at the first request (the routes are final
    by then) and kept: the app is frozen once it runs, so this holder is set before."""

    __slots__ = ("body",)

    def __init__(self) -> None:
        self.body: bytes | None = None


OPENAPI_DOCUMENT = web.AppKey("openapi_document", OpenApiDocument)


def setup_openapi(app: web.Application) -> None:
    """Serve ``GET /openapi.json`` from the root app (call it in create_app)."""
    app[OPENAPI_DOCUMENT] = OpenApiDocument()
    app.router.add_get(OPENAPI_PATH, openapi_json)


def _render(app: web.Application) -> bytes:
    return json.dumps(spec_for_app(app), ensure_ascii=False).encode()


async def openapi_json(request: web.Request) -> web.Response:
    """The document of the process answering (built once per app, then from memory)."""
    app = request.app
    holder = app.get(OPENAPI_DOCUMENT)
    if holder is None:  # routed without setup_openapi: nowhere to keep it
        body = _render(app)
    else:
        if holder.body is None:
            holder.body = _render(app)
        body = holder.body
    return web.Response(body=body, content_type="application/json")
