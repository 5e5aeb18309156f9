"""The document's event examples (app.web.openapi.examples has the timeline they belong to):
each event type as a stream carries it, and the streams' examples on the wire."""

from collections.abc import Sequence
from typing import Any

from app.web.openapi.examples import (
    AGENT,
    HANDOFF,
    M_AGENT,
    M_HUMAN,
    M_HUMAN_BOT,
    M_LATE,
    RESUME_ID,
    SESSION,
    SUPERVISOR,
    T0,
    event_id,
)
from realtime.channels import BROADCAST, agent_channel, session_channel
from realtime.events import encode, sse_frame

# ---------------------------------------------------------------------------------------
# Events: (summary, id on the wire or None, envelope), validated by
# schemas.envelope.validate_event in the test suite.
# ---------------------------------------------------------------------------------------

EVENT_EXAMPLES: dict[str, tuple[str, str | None, dict[str, Any]]] = {
    "event.connected.session": (
        "First event of a session stream",
        event_id(T0),
        {
            "type": "connected",
            "payload": {"channels": [session_channel(SESSION)], "session_name": SESSION, "recovered": False},
            "timestamp": T0,
            "source": "system",
        },
    ),
    "event.connected.agent": (
        "First event of an agent stream",
        event_id(T0),
        {
            "type": "connected",
            "payload": {"channels": [agent_channel(AGENT), BROADCAST], "agent_id": AGENT, "recovered": False},
            "timestamp": T0,
            "source": "system",
        },
    ),
    "event.new_message.customer": (
        "The customer wrote",
        event_id(T0 + 20, 117),
        {
            "type": "new_message",
            "payload": {"session_name": SESSION, "message": M_HUMAN},
            "timestamp": T0 + 20,
            "source": "ai_chatbot",
        },
    ),
    "event.new_message.bot": (
        "The bot answered",
        event_id(T0 + 20, 142),
        {
            "type": "new_message",
            "payload": {"session_name": SESSION, "message": M_HUMAN_BOT},
            "timestamp": T0 + 20,
            "source": "ai_chatbot",
        },
    ),
    "event.status_change.escalated": (
        "The session now waits for an agent",
        RESUME_ID,
        {
            "type": "status_change",
            "payload": {
                "session_name": SESSION,
                "status": "waiting_agent",
                "previous_status": "bot_active",
                "agent_id": None,
            },
            "timestamp": T0 + 20,
            "source": "ai_chatbot",
        },
    ),
    "event.transfer_request": (
        "A session asks for a human (broadcast)",
        event_id(T0 + 20, 152),
        {
            "type": "transfer_request",
            "payload": {
                "session_name": SESSION,
                "status": "waiting_agent",
                "reason": HANDOFF,
                "summary": None,
            },
            "timestamp": T0 + 20,
            "source": "ai_chatbot",
        },
    ),
    "event.agent_joined": (
        "Alice took the session over",
        event_id(T0 + 60, 310),
        {
            "type": "agent_joined",
            "payload": {"session_name": SESSION, "agent_id": AGENT},
            "timestamp": T0 + 60,
            "source": "agent_workbench",
        },
    ),
    "event.status_change.takeover": (
        "Held by alice now",
        event_id(T0 + 60, 311),
        {
            "type": "status_change",
            "payload": {
                "session_name": SESSION,
                "status": "agent_active",
                "previous_status": "waiting_agent",
                "agent_id": AGENT,
            },
            "timestamp": T0 + 60,
            "source": "agent_workbench",
        },
    ),
    "event.new_message.held": (
        "A customer message of a session alice holds (her agent channel)",
        event_id(T0 + 70, 20),
        {
            "type": "new_message",
            "payload": {"session_name": SESSION, "message": M_LATE},
            "timestamp": T0 + 70,
            "source": "ai_chatbot",
        },
    ),
    "event.new_message.agent": (
        "Alice answered",
        event_id(T0 + 80, 505),
        {
            "type": "new_message",
            "payload": {"session_name": SESSION, "message": M_AGENT},
            "timestamp": T0 + 80,
            "source": "agent_workbench",
        },
    ),
    "event.agent_left": (
        "Alice handed the session back",
        event_id(T0 + 300, 1),
        {
            "type": "agent_left",
            "payload": {"session_name": SESSION, "agent_id": AGENT},
            "timestamp": T0 + 300,
            "source": "agent_workbench",
        },
    ),
    "event.status_change.released": (
        "The bot holds the session again",
        event_id(T0 + 300, 2),
        {
            "type": "status_change",
            "payload": {
                "session_name": SESSION,
                "status": "bot_active",
                "previous_status": "agent_active",
                "agent_id": None,
            },
            "timestamp": T0 + 300,
            "source": "agent_workbench",
        },
    ),
    "event.heartbeat": (
        "Every heartbeat interval (no id)",
        None,
        {"type": "heartbeat", "payload": {}, "timestamp": T0 + 30, "source": "system"},
    ),
    "event.agent_status": (
        "Alice is online (every agent stream: the broadcast)",
        event_id(T0 + 5, 0),
        {
            "type": "agent_status",
            "payload": {"agent_id": AGENT, "status": "online", "capacity": 4},
            "timestamp": T0 + 5,
            "source": "agent_workbench",
        },
    ),
    "event.offer": (
        "A conversation offered to Alice for 30 s (her own stream)",
        event_id(T0 + 61, 0),
        {
            "type": "offer",
            "payload": {
                "session_name": SESSION,
                "expires_at": T0 + 91,
                "reason": "customer_request",
                "summary": "Wants a refund for order 1234.",
            },
            "timestamp": T0 + 61,
            "source": "system",
        },
    ),
    "event.offer_ended": (
        "Alice let the offer expire (her own stream)",
        event_id(T0 + 91, 0),
        {
            "type": "offer_ended",
            "payload": {"session_name": SESSION, "reason": "expired"},
            "timestamp": T0 + 91,
            "source": "system",
        },
    ),
    "event.note": (
        "Alice's private note (agents and supervisors only)",
        event_id(T0 + 85, 0),
        {
            "type": "note",
            "payload": {
                "session_name": SESSION,
                "message": {
                    "id": "7d6c5b4a39281706",
                    "role": "note",
                    "content": "Customer is a reseller: offer the partner discount.",
                    "agent_id": AGENT,
                    "created_at": T0 + 85,
                },
            },
            "timestamp": T0 + 85,
            "source": "agent_workbench",
        },
    ),
    "event.rating": (
        "The customer rated the closed conversation",
        event_id(T0 + 410, 0),
        {
            "type": "rating",
            "payload": {"session_name": SESSION, "score": 5, "comment": "Quick and kind, thanks!"},
            "timestamp": T0 + 410,
            "source": "ai_chatbot",
        },
    ),
    "event.queue_update": (
        "Second in the queue now (ephemeral: no id)",
        None,
        {
            "type": "queue_update",
            "payload": {"session_name": SESSION, "position": 2, "estimated_wait_seconds": 80},
            "timestamp": T0 + 61,
            "source": "system",
        },
    ),
    "event.whisper": (
        "Sue whispers to alice (alice's stream and the supervisors' only)",
        event_id(T0 + 95, 0),
        {
            "type": "whisper",
            "payload": {
                "session_name": SESSION,
                "supervisor_id": SUPERVISOR,
                "agent_id": AGENT,
                "content": "Offer the refund.",
            },
            "timestamp": T0 + 95,
            "source": "agent_workbench",
        },
    ),
    "event.barge": (
        "Sue took the conversation over from alice",
        event_id(T0 + 100, 0),
        {
            "type": "barge",
            "payload": {"session_name": SESSION, "supervisor_id": SUPERVISOR, "from_agent_id": AGENT},
            "timestamp": T0 + 100,
            "source": "agent_workbench",
        },
    ),
    "event.read.customer": (
        "The customer has read Alice's message",
        event_id(T0 + 90, 0),
        {
            "type": "read",
            "payload": {"session_name": SESSION, "reader": "customer", "up_to": "9f8e7d6c5b4a3928"},
            "timestamp": T0 + 90,
            "source": "ai_chatbot",
        },
    ),
    "event.typing.bot": (
        "The bot is preparing its reply (ephemeral: no id, never replayed)",
        None,
        {
            "type": "typing",
            "payload": {"session_name": SESSION, "who": "bot"},
            "timestamp": T0,
            "source": "ai_chatbot",
        },
    ),
}

# What each kind of stream shows in its examples, in wire order.
SESSION_STREAM_EXAMPLES = (
    "event.connected.session",
    "event.new_message.customer",
    "event.typing.bot",
    "event.new_message.bot",
    "event.status_change.escalated",
    "event.queue_update",
    "event.heartbeat",
    "event.agent_joined",
    "event.status_change.takeover",
    "event.new_message.agent",
    "event.read.customer",
    "event.agent_left",
    "event.status_change.released",
    "event.rating",
)
AGENT_STREAM_EXAMPLES = (
    "event.connected.agent",
    "event.agent_status",
    "event.transfer_request",
    "event.offer",
    "event.offer_ended",
    "event.heartbeat",
    "event.status_change.takeover",
    "event.new_message.held",
    "event.whisper",
    "event.barge",
)
WORKBENCH_SESSION_STREAM_EXAMPLES = (*SESSION_STREAM_EXAMPLES, "event.note")
SUPERVISOR_STREAM_EXAMPLES = (
    *WORKBENCH_SESSION_STREAM_EXAMPLES,
    "event.agent_status",
    "event.whisper",
    "event.barge",
)
STREAM_EXAMPLES = {
    "session": SESSION_STREAM_EXAMPLES,
    "workbench_session": WORKBENCH_SESSION_STREAM_EXAMPLES,
    "agent": AGENT_STREAM_EXAMPLES,
    "supervisor": SUPERVISOR_STREAM_EXAMPLES,
}


def wire_text(names: Sequence[str]) -> str:
    """The events as they travel, framed by the same code that writes the streams."""
    frames = []
    for name in names:
        _, id_, event = EVENT_EXAMPLES[name]
        frames.append(sse_frame(encode(event), id_).decode())
    return "".join(frames)
