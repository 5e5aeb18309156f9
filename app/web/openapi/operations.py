"""The operation table: one entry per (method, path) the server may route, saying what the
operation is for, who may call it, what it takes and what it answers (errors by example name).

The table documents; the router decides: the builder walks the routes a process really serves
and looks each up here. Limits and names the text mentions come from where the server defines
them.
"""

from app.domain.store.base import Bounds
from app.web.limits import MAX_BODY, READY_TIMEOUT
from app.web.openapi.examples import CHAT_STREAM_EXAMPLE, METRICS_EXAMPLE
from app.web.openapi.live_operations import LIVE_OPERATIONS
from app.web.openapi.operation_parts import (
    AGENT_ERRORS,
    AGENT_STREAM_ANSWER,
    BODY_ERRORS,
    CUSTOMER_ERRORS,
    PAGE_ERRORS,
    PAGING,
    SESSION_STREAM_ANSWER,
    STREAM_ERRORS,
    SUPERVISOR_ERRORS,
    TOKEN_ERRORS,
    Answer,
    Operation,
)
from app.web.openapi.routing_operations import ROUTING_OPERATIONS
from app.web.openapi.security_schemes import Auth
from app.web.openapi.supervisor_operations import SUPERVISOR_OPERATIONS
from realtime.channels import (
    AGENT_PREFIX,
    BROADCAST,
    SESSION_PATTERN,
    SESSION_PREFIX,
    SESSIONS_FEED,
)
from schemas import requests as rq
from schemas.fields import MAX_CONTENT

# Where every process serves the document (serving.setup_openapi routes it).
OPENAPI_PATH = "/openapi.json"


def _session_read(component: str) -> dict[tuple[str, str], Operation]:
    """The read endpoints both sub-apps serve (handlers.common.add_session_read_routes)."""
    prefix = f"/{component}/api/sessions/{{session_name}}"
    customer = component == "chatbot"
    auth: Auth = "customer" if customer else "agent"
    who = "the session's customer token" if customer else "an agent token"
    access = (*CUSTOMER_ERRORS,) if customer else (*AGENT_ERRORS,)
    return {
        ("GET", prefix): Operation(
            component,
            "Get a session",
            f"The session's state. Token: {who}.",
            (Answer(200, "The session.", "Session", ("session.bot_active", "session.agent_active")),),
            auth,
            ("error.invalid_name.session", *access, "error.session_not_found", "error.unavailable"),
        ),
        ("GET", f"{prefix}/messages"): Operation(
            component,
            "Get the transcript",
            "A page of the session's transcript, oldest first (it keeps its newest messages: at "
            f"most {Bounds().transcript_messages}, and `--transcript-bytes`). {PAGING} A cursor whose "
            "message has been trimmed from the transcript meanwhile is a 400 `invalid_cursor`: read "
            f"it again from the start. Token: {who}.",
            (Answer(200, "A page of the transcript.", "Transcript", ("transcript.demo", "transcript.page")),),
            auth,
            (
                "error.invalid_name.session",
                *PAGE_ERRORS,
                "error.invalid_cursor.trimmed",
                *access,
                "error.session_not_found",
                "error.unavailable",
            ),
            query=rq.TranscriptQuerySchema,
        ),
        ("GET", f"{prefix}/events"): Operation(
            component,
            "Stream a session's events",
            f"Server-Sent Events of channel `{SESSION_PREFIX}{{session_name}}`: everything about the "
            "conversation. The first event is `connected`; resume with `Last-Event-ID` (or "
            f"`?last_event_id=`). Token: {who}, as a header or as `?token=` (EventSource "
            "cannot set headers). An unknown session is a 404 before any stream opens.",
            (SESSION_STREAM_ANSWER,),
            auth,
            ("error.invalid_name.session", *access, "error.session_not_found", *STREAM_ERRORS),
            stream="session" if customer else "workbench_session",
        ),
    }


# /api/chat and /api/chat/stream check the same body the same way, so they answer the same errors.
CHAT_ERRORS = (
    "error.validation.chat",
    *BODY_ERRORS,
    *CUSTOMER_ERRORS,
    "error.session_not_found",
    "error.conflict.closed",
    "error.rate_limited",
    "error.rate_limited.address",
    "error.unavailable",
)

OPERATIONS: dict[tuple[str, str], Operation] = {
    # -- the process ---------------------------------------------------------------------
    ("GET", "/health"): Operation(
        "process",
        "Liveness and mode",
        "Always 200 while the process serves: its broker, whether it is degraded, the sub-apps "
        "it runs, its open streams and its pid.",
        (Answer(200, "The process is alive.", "Health", ("health.ok", "health.degraded")),),
    ),
    ("GET", "/health/ready"): Operation(
        "process",
        "Readiness",
        "Publishes a canary through the broker: 200 when it comes back to this process within "
        f"{READY_TIMEOUT:g} s, else 503 with Retry-After. Use it as the readiness probe.",
        (
            Answer(200, "Ready: events go through.", "Ready", ("ready.yes",)),
            Answer(
                503,
                "Not ready: the canary did not come back in time.",
                "Ready",
                ("ready.no",),
                headers=("Retry-After",),
            ),
        ),
    ),
    ("GET", "/metrics"): Operation(
        "process",
        "Prometheus metrics",
        "This process's metrics in the Prometheus text exposition format (open streams, events "
        "published and delivered, request latency by route). Meant for the scraper: protect it "
        "at the proxy.",
        (Answer(200, "The metrics.", media="text/plain", example=METRICS_EXAMPLE),),
    ),
    ("GET", OPENAPI_PATH): Operation(
        "process",
        "This document",
        "The OpenAPI document of this process: the sub-apps it serves and its own endpoints.",
        (Answer(200, "The OpenAPI 3 document.", "OpenApiDocument"),),
    ),
    ("GET", "/"): Operation(
        "console",
        "Open the console",
        "Redirects to the browser console (`/console/index.html`, static files).",
        (Answer(302, "To the console.", media=None, headers=("Location",)),),
    ),
    # -- chatbot -------------------------------------------------------------------------
    ("POST", "/chatbot/api/sessions"): Operation(
        "chatbot",
        "Create a session",
        "Creates a session in `bot_active` (a name `s-` + 16 hex digits is generated when none "
        "is given; an empty body counts as `{}`). Needs no token, and answers the session with "
        "its customer `token`. Counts against the client address's `--start-rate` (429 past it).",
        (Answer(201, "The new session.", "SessionCreated", ("session.created", "session.created.insecure")),),
        "optional",
        (
            "error.validation.create_session",
            *BODY_ERRORS,
            *TOKEN_ERRORS,
            "error.session_exists",
            "error.rate_limited",
            "error.rate_limited.address",
            "error.unavailable",
        ),
        body="CreateSessionRequest",
        body_examples=("request.create_session.named", "request.create_session.generated"),
    ),
    ("POST", "/chatbot/api/chat"): Operation(
        "chatbot",
        "Send a customer message",
        "Adds the customer's message. In `bot_active` the bot answers, and a customer asking for "
        "a person is escalated after the answer; otherwise the message goes to the agent and "
        "`reply` is null. Needs the session's token: a conversation starts with `POST "
        "/chatbot/api/sessions`, which hands it out (401 without one). Under `--insecure` a chat "
        "creates its session if new, which counts against the client address's `--start-rate` "
        "(429 past it). A bot's escalation past that rate is skipped: the session stays with the "
        "bot and the chat still answers 200.",
        (
            Answer(
                200,
                "The message, the bot's reply and the session after them.",
                "ChatResponse",
                ("chat.bot_reply", "chat.escalated", "chat.agent_holds"),
            ),
        ),
        "customer",
        CHAT_ERRORS,
        body="ChatRequest",
        body_examples=("request.chat.hello", "request.chat.human"),
    ),
    ("POST", "/chatbot/api/chat/stream"): Operation(
        "chatbot",
        "Send a customer message; stream the bot's reply",
        "Takes the body of `POST /chatbot/api/chat` and checks it the same way (same tokens, rate "
        "limit and errors, answered as JSON before any stream starts). Once the customer's message "
        "is stored and published it answers `text/event-stream`: `chunk` events with the bot's "
        "reply as the responder produces it (`{session_name, index, text}`), then one `done` event "
        "holding exactly what `/api/chat` answers (`{session, message, reply}`); or one "
        "`cancelled` event (the same shape, `reply` null, the session as it is now) when the "
        "conversation left the bot while it answered: an agent took it over, it was escalated or "
        "closed, and no chunk follows that change's answer and nothing of the reply is stored; or "
        "an `error` event holding the JSON error body if the store fails midway; then the response "
        "ends. A bot that fails (unreachable, too slow, unreadable, its breaker open) does not end "
        "in `error`: its last chunk tells the customer, the conversation is escalated with reason "
        "`bot_unavailable`, and `done` follows. Frames have an `event:` line and no `id:`: "
        "they answer one request and are not the pub/sub envelope (chunks are never published; "
        "the session channel gets the same `new_message` events as with `/api/chat`). No chunks "
        "when the bot does not hold the session (`reply` null). A client that leaves mid-reply "
        "does not stop the reply from being stored and published.",
        (
            Answer(
                200,
                "The reply as the bot writes it, then the stored messages.",
                media="text/event-stream",
                headers=("Cache-Control", "X-Accel-Buffering"),
                example=CHAT_STREAM_EXAMPLE,
            ),
        ),
        "customer",
        CHAT_ERRORS,
        body="ChatRequest",
        body_examples=("request.chat.hello", "request.chat.human"),
    ),
    ("POST", "/chatbot/api/manual/escalate"): Operation(
        "chatbot",
        "Ask for a human",
        "Moves a `bot_active` session to `waiting_agent` and asks every agent for it. Already "
        "waiting: 200, unchanged, no event; held or closed: 409. Token: the session's. Counts "
        "against the client address's `--start-rate` (429 past it).",
        (Answer(200, "The session after the escalation.", "Session", ("session.waiting_agent",)),),
        "customer",
        (
            "error.validation.escalate",
            *BODY_ERRORS,
            *CUSTOMER_ERRORS,
            "error.session_not_found",
            "error.conflict.escalate",
            "error.rate_limited",
            "error.rate_limited.address",
            "error.unavailable",
        ),
        body="EscalateRequest",
        body_examples=("request.escalate.reason", "request.escalate.plain"),
    ),
    **_session_read("chatbot"),
    ("GET", "/chatbot/api/sessions/{session_name}/queue"): Operation(
        "chatbot",
        "The conversation's place in the queue",
        "While the conversation waits for an agent: its `position` (1 is next) and "
        "`estimated_wait_seconds`, the time for the conversations ahead and this one to be taken "
        "at the pace of the last 15 minutes' takeovers (null without at least 3 of them, or with "
        "no agent online; docs/routing.md). Both null when it is not waiting. The customer's "
        "stream gets the same as `queue_update` events when they change. Token: the session's "
        "customer token.",
        (Answer(200, "Its place.", "QueuePlace", ("queue.waiting", "queue.not_waiting")),),
        "customer",
        ("error.invalid_name.session", *CUSTOMER_ERRORS, "error.session_not_found", "error.unavailable"),
    ),
    # -- workbench -----------------------------------------------------------------------
    ("GET", "/workbench/api/sessions"): Operation(
        "workbench",
        "List sessions in a status (the queue)",
        "A page of the sessions in one status, first come first served (by `status_seq`): "
        f"`status` (default `waiting_agent`), {PAGING} A session that leaves the status while a "
        "client pages is not listed again (one that comes back is, at its new place at the end). "
        "Token: an agent's.",
        (
            Answer(
                200,
                "A page of the sessions.",
                "SessionList",
                ("session_list.waiting", "session_list.page", "session_list.empty"),
            ),
        ),
        "agent",
        (
            "error.validation.status",
            *PAGE_ERRORS,
            "error.invalid_cursor.queue",
            *AGENT_ERRORS,
            "error.unavailable",
        ),
        query=rq.SessionListQuerySchema,
    ),
    **_session_read("workbench"),
    ("POST", "/workbench/api/sessions/{session_name}/takeover"): Operation(
        "workbench",
        "Take a session over",
        "From `waiting_agent` or `bot_active` to `agent_active`, held by the agent. Of many "
        "agents at once exactly one wins; held (even by the same agent: 200, unchanged, no "
        "event) or closed: 409. Token: an agent's, whose agent acts.",
        (Answer(200, "The session, held by the agent.", "Session", ("session.agent_active",)),),
        "agent",
        (
            "error.invalid_name.session",
            "error.validation.agent_action",
            *BODY_ERRORS,
            *AGENT_ERRORS,
            "error.forbidden.agent_mismatch",
            "error.session_not_found",
            "error.conflict.held",
            "error.conflict.offered",
            "error.at_capacity",
            "error.rate_limited",
            "error.unavailable",
        ),
        body="AgentActionRequest",
        body_examples=("request.agent_action", "request.agent_action.token"),
    ),
    **ROUTING_OPERATIONS,
    **LIVE_OPERATIONS,
    **SUPERVISOR_OPERATIONS,
    ("POST", "/workbench/api/sessions/{session_name}/release"): Operation(
        "workbench",
        "Hand a session back to the bot",
        "From `agent_active`, by the holder, back to `bot_active`; anything else is 409.",
        (Answer(200, "The session, back with the bot.", "Session", ("session.released",)),),
        "agent",
        (
            "error.invalid_name.session",
            "error.validation.agent_action",
            *BODY_ERRORS,
            *AGENT_ERRORS,
            "error.forbidden.agent_mismatch",
            "error.session_not_found",
            "error.conflict.release",
            "error.conflict.held",
            "error.rate_limited",
            "error.unavailable",
        ),
        body="AgentActionRequest",
        body_examples=("request.agent_action", "request.agent_action.token"),
    ),
    ("POST", "/workbench/api/sessions/{session_name}/close"): Operation(
        "workbench",
        "Close a session",
        "From any status but `closed` (a held session by its holder only) to `closed`.",
        (Answer(200, "The closed session.", "Session", ("session.closed",)),),
        "agent",
        (
            "error.invalid_name.session",
            "error.validation.agent_action",
            *BODY_ERRORS,
            *AGENT_ERRORS,
            "error.forbidden.agent_mismatch",
            "error.session_not_found",
            "error.conflict.already_closed",
            "error.conflict.held",
            "error.rate_limited",
            "error.unavailable",
        ),
        body="AgentActionRequest",
        body_examples=("request.agent_action", "request.agent_action.token"),
    ),
    ("GET", "/workbench/api/sessions/{session_name}/stream"): Operation(
        "workbench",
        "Who is listening to a session",
        "How many processes hold a stream of the session (PUBSUB NUMSUB; in memory, this "
        "process), how many streams of it this process holds, whether the customer side has "
        "one open anywhere (every customer stream also subscribes a presence channel whose "
        "subscribers are counted), and the session's newest event. Lets an agent see that the "
        "customer has left before typing an answer. Token: an agent token.",
        (
            Answer(
                200,
                "The session's listeners.",
                "StreamHealth",
                ("stream_health.customer_here", "stream_health.customer_gone"),
            ),
        ),
        "agent",
        ("error.invalid_name.session", *AGENT_ERRORS, "error.session_not_found", "error.unavailable"),
    ),
    ("POST", "/workbench/api/sessions/{session_name}/messages"): Operation(
        "workbench",
        "Send an agent message",
        "The holder's message to the customer (the session must be `agent_active` and held by "
        f"this agent, else 409). Content: 1 to {MAX_CONTENT:,} characters (or the process's "
        "`--max-message`).",
        (Answer(200, "The message and the session.", "AgentMessageResponse", ("agent_message.sent",)),),
        "agent",
        (
            "error.invalid_name.session",
            "error.validation.agent_message",
            *BODY_ERRORS,
            *AGENT_ERRORS,
            "error.forbidden.agent_mismatch",
            "error.session_not_found",
            "error.conflict.agent_message",
            "error.rate_limited",
            "error.unavailable",
        ),
        body="AgentMessageRequest",
        body_examples=("request.agent_message", "request.agent_message.token"),
    ),
    ("GET", "/workbench/api/events"): Operation(
        "workbench",
        "Stream every session's events (supervisor)",
        "Server-Sent Events of every session channel, for a wall board or an audit: one "
        f"pattern subscription (`PSUBSCRIBE {SESSION_PATTERN}`) on the process's pub/sub connection; "
        f"on a Redis Cluster (no patterns in sharded pub/sub) the `{SESSIONS_FEED}` feed, to which "
        "every session event is also published, with its own ids. Resume with `Last-Event-ID` "
        "like any stream. Filters: `status` (sessions in that status: those in it when the "
        "stream opens, then following the `status_change` events, whose moves into and out of "
        "the status are shown) and `sessions` (comma-separated, or `session` repeated; at most "
        f"{rq.MAX_SUPERVISED_SESSIONS}). It also carries the agents' `agent_status`, and the "
        "supervisors' `whisper` and `barge` (an audit). Token: a supervisor's, as a header or as "
        "`?token=` (an agent's is a 403).",
        (SESSION_STREAM_ANSWER,),
        "supervisor",
        (
            "error.validation.status",
            "error.validation.sessions",
            "error.validation.unknown_query",
            *SUPERVISOR_ERRORS,
            *STREAM_ERRORS,
        ),
        query=rq.SupervisorQuerySchema,
        stream="supervisor",
    ),
    ("GET", "/workbench/api/agents/{agent_id}/events"): Operation(
        "workbench",
        "Stream an agent's events",
        f"Server-Sent Events of `{AGENT_PREFIX}{{agent_id}}` (customer messages of the sessions the "
        f"agent holds) and `{BROADCAST}` (transfer requests and queue changes). Token: that "
        "agent's own, as a header or as `?token=`.",
        (AGENT_STREAM_ANSWER,),
        "agent",
        ("error.invalid_name.agent", *AGENT_ERRORS, "error.forbidden.agent_stream", *STREAM_ERRORS),
        stream="agent",
    ),
}

# The document's tags: one per sub-app (its operations' tag is its name), and the process's own.
TAGS = {
    "chatbot": "Customer side, mounted at `/chatbot` (a process started with `--chatbot`, or both).",
    "workbench": "Agent side, mounted at `/workbench` (a process started with `--workbench`, or both).",
    "process": "What every process serves, whatever its sub-apps.",
    "console": "The browser console (static files under `/console/`).",
}

# What each error status means: the description of its answer, before the codes it carries.
STATUS_TEXT = {
    400: "Bad request: invalid JSON, a schema violation, a bad name in the URL, or a cursor the listing cannot continue from.",
    401: "Missing, malformed, badly signed or expired token.",
    403: "The token does not grant this.",
    404: "Unknown session.",
    409: "Not allowed in the session's current state.",
    413: f"Body over {MAX_BODY:,} bytes.",
    415: "A non-empty body that is not `application/json`.",
    429: "Too many requests or streams for this token, or conversations started or escalated from "
    "this client address (`--start-rate`): retry after `Retry-After` seconds.",
    503: "Unavailable now (state store, or this process's stream limit): retry after `Retry-After` seconds.",
}
