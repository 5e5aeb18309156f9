"""What a webhook receiver is told: one record per lifecycle change of a conversation, made
with the change (app.domain.announcements) and written in the same atomic step.

A record is ``{"type", "created_at", "session", "previous_status"}`` (``conversation.rated``
adds ``rating``); the delivery adds its id (the idempotency key) and, for
``conversation.closed``, the transcript (app.webhooks.delivery).
"""

import time
from typing import Any

from app.domain.store import Action, Session
from app.domain.store.base import Outgoing
from realtime.channels import QUEUE_PREFIX

# The delivery queue of every webhook event (its readers: one consumer group per receiver).
WEBHOOK_QUEUE = QUEUE_PREFIX + "webhooks"
TYPES = {
    "escalate": "conversation.escalated",
    "takeover": "conversation.assigned",
    "release": "conversation.released",
    "close": "conversation.closed",
}
STARTED = "conversation.started"
RATED = "conversation.rated"
SESSION_FIELDS = (
    "session_name",
    "status",
    "agent_id",
    "escalation_reason",
    "handoff_summary",
    "created_at",
    "updated_at",
)


def record(type_: str, session: Session, previous_status: str | None) -> Outgoing:
    fields: dict[str, Any] = {key: session.get(key) for key in SESSION_FIELDS}
    body = {
        "type": type_,
        "created_at": int(time.time()),
        "session": fields,
        "previous_status": previous_status,
    }
    return (WEBHOOK_QUEUE, body)


def of_change(action: Action, session: Session, previous_status: str) -> Outgoing:
    return record(TYPES[action], session, previous_status)


def of_start(session: Session) -> Outgoing:
    return record(STARTED, session, None)


def of_rating(session: Session) -> Outgoing:
    """The customer rated the closed conversation: its status did not change (still closed)."""
    channel, body = record(RATED, session, session["status"])
    return channel, {**body, "rating": session.get("rating")}
