"""The document's examples: one timeline (session "demo", agent "alice") that every operation
reuses, so the requests, answers, errors and events shown tell one story.

Each example is checked by the test suite against the schemas the server validates with. What
the server defines elsewhere (limits, the name rule, channel names, metric names, the reconnect
delay, error messages its own exceptions make) is taken from there, not repeated.
"""

from dataclasses import dataclass
from typing import Any

from app.domain.store.base import session_cursor
from app.process.settings import COMPONENTS
from app.web.limits import READY_TIMEOUT
from app.web.metrics import (
    REQUEST_DURATION,
    REQUEST_DURATION_HELP,
    STREAMS_OPEN,
    STREAMS_OPEN_HELP,
)
from realtime import ids
from realtime.events import named_frame

# ---------------------------------------------------------------------------------------
# The timeline.
# ---------------------------------------------------------------------------------------

T0 = 1703246400
SESSION = "demo"
AGENT = "alice"
SUPERVISOR = "sue"
SESSION_TOKEN = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJ0eXAiOiJzZXNzaW9uIiwic3ViIjoiZGVtbyIsImlhdCI6MTcw"
    "MzI0NjQwMCwiZXhwIjoxNzAzMjUzNjAwfQ.FRNBMKoEitDGYDE6MrjnZmG-780QY_41J8Am381FZJs"
)
REQUEST_ID = "7f3a9c1e2b4d6058"
HANDOFF = "customer asked for a human"


def event_id(second: int, ms: int = 0, seq: int = 0) -> str:
    """An event id (``<milliseconds>-<sequence>``) ``ms`` milliseconds into ``second``."""
    return ids.render((second * 1000 + ms, seq))


# Where a reconnecting client resumes in the examples: after the escalation's status_change.
RESUME_ID = event_id(T0 + 20, 151)


INCARNATION = "5f0c2a9e41d7b386"


def _session(status: str, agent_id: str | None, updated: int, seq: int, reason: str | None) -> dict[str, Any]:
    return {
        "session_name": SESSION,
        "status": status,
        "agent_id": agent_id,
        "created_at": T0,
        "updated_at": updated,
        "escalation_reason": reason,
        "handoff_summary": None,
        "status_seq": T0 * 1_000_000 + seq,
        "incarnation": INCARNATION,
    }


def _message(id_: str, role: str, content: str, at: int, agent_id: str | None = None) -> dict[str, Any]:
    return {"id": id_, "role": role, "content": content, "agent_id": agent_id, "created_at": at}


S_NEW = _session("bot_active", None, T0, 1, None)
S_WAITING = _session("waiting_agent", None, T0 + 20, 2, HANDOFF)
S_HELD = _session("agent_active", AGENT, T0 + 60, 3, HANDOFF)
S_RELEASED = _session("bot_active", None, T0 + 300, 4, HANDOFF)
S_CLOSED = _session("closed", None, T0 + 400, 5, HANDOFF)
RATING = {"score": 5, "comment": "Quick and kind, thanks!"}
S_RATED = {**S_CLOSED, "rating": {**RATING, "at": T0 + 410}}
S_OFFERED = {
    **S_WAITING,
    "waiting_since": T0 + 20,
    "offer": {"agent_id": AGENT, "offered_at": T0 + 21, "expires_at": T0 + 51, "kind": "queue"},
}
S_DECLINED = {**S_WAITING, "waiting_since": T0 + 20, "offer": None, "declined": {AGENT: T0 + 25}}
S_TRANSFERRED = {
    **S_HELD,
    "agent_id": "bob",
    "escalation_reason": "transfer",
    "handoff_summary": "Refund approved; needs the new address.",
}
S_REQUEUED = {
    **_session("waiting_agent", None, T0 + 90, 1, "transfer"),
    "handoff_summary": "Billing question: needs someone from billing.",
    "waiting_since": T0 + 90,
    "declined": {AGENT: T0 + 90},
}
M_HELLO = _message("3f9c1a7e5b2d4c60", "customer", "Hello", T0 + 5)
M_HELLO_BOT = _message(
    "8a1e2b3c4d5f6a7b", "bot", "Hello! I'm the Switchboard assistant. How can I help you today?", T0 + 5
)
M_HUMAN = _message("c0ffee1234abcd56", "customer", "I want a human", T0 + 20)
M_HUMAN_BOT = _message(
    "5e6f7a8b9c0d1e2f", "bot", "I'm connecting you with a human agent. Please stay here.", T0 + 20
)
M_LATE = _message("0a1b2c3d4e5f6071", "customer", "My order is late", T0 + 70)
M_AGENT = _message("9f8e7d6c5b4a3928", "agent", "Let me check that for you.", T0 + 80, AGENT)
M_NOTE = _message(
    "7d6c5b4a39281706", "note", "Customer is a reseller: offer the partner discount.", T0 + 85, AGENT
)
TRANSCRIPT = [M_HELLO, M_HELLO_BOT, M_HUMAN, M_HUMAN_BOT, M_LATE, M_AGENT]

# The newest event of a session, as GET .../stream reports it (its time is its id's).
LAST_EVENT_ID = event_id(1732867200)
LAST_EVENT = {"id": LAST_EVENT_ID, "time": ids.parse(LAST_EVENT_ID)[0] / 1000}


# ---------------------------------------------------------------------------------------
# Request bodies and JSON answers.
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Example:
    """A request body or JSON answer, with the summary shown next to it."""

    summary: str
    value: Any
    token_only: bool = False  # only true of a process that requires tokens


# Request bodies (validated by the request schemas in the test suite).
REQUEST_EXAMPLES: dict[str, Example] = {
    "request.create_session.named": Example("Create a session with a name", {"session_name": SESSION}),
    "request.create_session.generated": Example("Let the server name it (s- and 16 hex digits)", {}),
    "request.chat.hello": Example(
        "A greeting: the bot answers", {"session_name": SESSION, "content": "Hello"}
    ),
    "request.chat.human": Example(
        "Asking for a person: the bot answers, then escalates",
        {"session_name": SESSION, "content": "I want a human"},
    ),
    "request.escalate.reason": Example(
        "Ask for a human, with a reason and what the agent should know",
        {
            "session_name": SESSION,
            "reason": "billing question",
            "summary": "Charged twice for order 1234 on 2 December; wants the second charge refunded.",
        },
    ),
    "request.escalate.plain": Example("Ask for a human (reason null)", {"session_name": SESSION}),
    "request.agent_action": Example("As agent alice", {"agent_id": AGENT}),
    "request.agent_action.token": Example(
        "With an agent token: the token says who acts", {}, token_only=True
    ),
    "request.agent_status.online": Example(
        "Online, with room for 4 conversations", {"status": "online", "capacity": 4}
    ),
    "request.agent_status.away": Example("Away (capacity unchanged)", {"status": "away"}),
    "request.transfer.agent": Example(
        "To agent bob, with a note",
        {"agent_id": AGENT, "to_agent_id": "bob", "note": "Refund approved; needs the new address."},
    ),
    "request.transfer.queue": Example(
        "Back to the queue, with a note",
        {"agent_id": AGENT, "to_queue": True, "note": "Billing question: needs someone from billing."},
    ),
    "request.whisper": Example(
        "Sue whispers to the agent holding it", {"supervisor_id": SUPERVISOR, "content": "Offer the refund."}
    ),
    "request.whisper.token": Example(
        "With a supervisor token", {"content": "Offer the refund."}, token_only=True
    ),
    "request.supervisor_action": Example("As supervisor sue", {"supervisor_id": SUPERVISOR}),
    "request.supervisor_action.token": Example(
        "With a supervisor token: the token says who acts", {}, token_only=True
    ),
    "request.reassign": Example(
        "To bob, with a note", {"supervisor_id": SUPERVISOR, "to_agent_id": "bob", "note": "Billing."}
    ),
    "request.reassign.queue": Example(
        "Back to the front of the queue", {"supervisor_id": SUPERVISOR, "to_queue": True}
    ),
    "request.read": Example("Read up to the agent's message", {"up_to": M_AGENT["id"]}),
    "request.agent_read": Example(
        "Alice has read up to the customer's message", {"agent_id": AGENT, "up_to": M_LATE["id"]}
    ),
    "request.agent_read.token": Example(
        "With an agent token: the token says who reads", {"up_to": M_LATE["id"]}, token_only=True
    ),
    "request.note": Example(
        "Alice's note for the next agent",
        {"agent_id": AGENT, "content": "Customer is a reseller: offer the partner discount."},
    ),
    "request.rating": Example("Five stars, with a comment", RATING),
    "request.rating.score": Example("Four stars, no comment", {"score": 4}),
    "request.agent_message": Example(
        "Alice answers", {"agent_id": AGENT, "content": "Let me check that for you."}
    ),
    "request.agent_message.token": Example(
        "With an agent token (agent_id, if given, must be the token's)",
        {"content": "Let me check that for you."},
        token_only=True,
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
    "session.rated": Example("Closed, and rated by its customer", S_RATED),
    "session.offered": Example("Offered to alice until expires_at", S_OFFERED),
    "session.declined": Example("Declined by alice: waiting for the next agent", S_DECLINED),
    "session.transferred": Example("Handed to agent bob with a note", S_TRANSFERRED),
    "session.requeued": Example("Back at the front of the queue, with a note", S_REQUEUED),
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
    "typing.sent": Example("Sent", {"session_name": SESSION, "sent": True}),
    "typing.dropped": Example(
        "Dropped: this sender sent one less than 2 s ago", {"session_name": SESSION, "sent": False}
    ),
    "queue.waiting": Example(
        "Third in the queue, about two minutes",
        {"session_name": SESSION, "status": "waiting_agent", "position": 3, "estimated_wait_seconds": 120},
    ),
    "queue.not_waiting": Example(
        "With the bot: not in the queue",
        {"session_name": SESSION, "status": "bot_active", "position": None, "estimated_wait_seconds": None},
    ),
    "agent.online": Example(
        "Alice is online, holding one conversation",
        {"agent_id": AGENT, "status": "online", "capacity": 4, "active": 1, "updated_at": T0},
    ),
    "agent_list": Example(
        "Two agents",
        {
            "agents": [
                {"agent_id": AGENT, "status": "online", "capacity": 4, "active": 1, "updated_at": T0},
                {"agent_id": "bob", "status": "away", "capacity": 3, "active": 0, "updated_at": T0},
            ]
        },
    ),
    "agent_message.sent": Example("Alice's message", {"session": S_HELD, "message": M_AGENT}),
    "session.read_by_customer": Example(
        "The customer has read the agent's message",
        {**S_HELD, "read": {"customer": M_AGENT["id"]}, "unread": 1},
    ),
    "session.read_by_agent": Example(
        "Alice has read the customer's message: nothing unread",
        {**S_HELD, "read": {"agent": M_LATE["id"]}, "unread": 0},
    ),
    "session.whispered": Example("Held by alice, one whisper", {**S_HELD, "whispers": 1}),
    "session.barged": Example(
        "Held by sue now", {**S_HELD, "agent_id": SUPERVISOR, "escalation_reason": "barge"}
    ),
    "session.reassigned": Example(
        "Held by bob now",
        {**S_HELD, "agent_id": "bob", "escalation_reason": "reassign", "handoff_summary": "Billing."},
    ),
    "note.added": Example("Alice's private note", {"session": S_HELD, "message": M_NOTE}),
    "session_list.waiting": Example(
        "The queue, oldest first: all of it (next_cursor null)",
        {"sessions": [S_WAITING], "next_cursor": None},
    ),
    "session_list.page": Example(
        "A page of a longer queue (?limit=1): ?cursor=<next_cursor> for the next",
        {"sessions": [S_WAITING], "next_cursor": session_cursor(S_WAITING["status_seq"])},
    ),
    "session_list.empty": Example("Nobody waiting", {"sessions": [], "next_cursor": None}),
    "transcript.demo": Example(
        "The conversation so far: all of it (next_cursor null)",
        {"session_name": SESSION, "messages": TRANSCRIPT, "next_cursor": None},
    ),
    "transcript.page": Example(
        "Its first page (?limit=2): ?cursor=<next_cursor> for the next",
        {"session_name": SESSION, "messages": TRANSCRIPT[:2], "next_cursor": TRANSCRIPT[1]["id"]},
    ),
    "stream_health.customer_here": Example(
        "The customer's page is open; an agent's view of it is open in another process",
        {
            "session_name": SESSION,
            "subscribed_processes": 2,
            "streams_in_this_process": 1,
            "customer_connected": True,
            "last_event": LAST_EVENT,
            "scope": "deployment",
        },
    ),
    "stream_health.customer_gone": Example(
        "The customer has left",
        {
            "session_name": SESSION,
            "subscribed_processes": 1,
            "streams_in_this_process": 1,
            "customer_connected": False,
            "last_event": LAST_EVENT,
            "scope": "deployment",
        },
    ),
    "health.ok": Example(
        "Serving on Redis",
        {
            "status": "ok",
            "broker": "redis",
            "degraded": False,
            "components": list(COMPONENTS),
            "streams": 3,
            "insecure": False,
            "pid": 4242,
        },
    ),
    "health.degraded": Example(
        "Redis is away: serving from memory",
        {
            "status": "degraded",
            "broker": "memory",
            "degraded": True,
            "components": list(COMPONENTS),
            "streams": 3,
            "insecure": False,
            "pid": 4242,
        },
    ),
    "ready.yes": Example(
        "The canary came back", {"ready": True, "broker": "redis", "degraded": False, "canary_ms": 1.4}
    ),
    "ready.no": Example(
        f"The canary did not come back in {READY_TIMEOUT:g} s",
        {
            "ready": False,
            "broker": "redis",
            "degraded": True,
            "canary_ms": round(READY_TIMEOUT * 1000 + 1.7, 1),
        },
    ),
}


# ---------------------------------------------------------------------------------------
# Answers that are not JSON.
# ---------------------------------------------------------------------------------------

METRICS_EXAMPLE = f"""\
# HELP {STREAMS_OPEN} {STREAMS_OPEN_HELP}
# TYPE {STREAMS_OPEN} gauge
{STREAMS_OPEN}{{component="chatbot"}} 3.0
{STREAMS_OPEN}{{component="workbench"}} 1.0
# HELP {REQUEST_DURATION} {REQUEST_DURATION_HELP}
# TYPE {REQUEST_DURATION} histogram
{REQUEST_DURATION}_bucket{{le="0.005",method="POST",route="/chatbot/api/chat",status="200"}} 41.0
{REQUEST_DURATION}_count{{method="POST",route="/chatbot/api/chat",status="200"}} 42.0
{REQUEST_DURATION}_sum{{method="POST",route="/chatbot/api/chat",status="200"}} 0.097
"""

CHAT_STREAM_EXAMPLE = "".join(
    named_frame(event, data).decode()
    for event, data in (
        ("chunk", {"session_name": SESSION, "index": 0, "text": "I'm connecting you with a human agent. "}),
        ("chunk", {"session_name": SESSION, "index": 1, "text": "Please stay here."}),
        ("done", {"session": S_WAITING, "message": M_HUMAN, "reply": M_HUMAN_BOT}),
    )
)
