"""The event envelope (type/payload/timestamp/source) and the payload of each event type.

Validation runs on publish (a bad event raises before anything is sent) and on receipt from
Redis (a bad one is dropped), so both checks share :func:`validate_event`.

The schemas below are the definition. Running them costs about 70 µs an event, twice per event
in the process that publishes it (once out, once back from Redis), which was the largest share
of an agent message's CPU after the Redis calls (docs/benchmarks.md, profile). So a plain check
of the event types the server publishes runs first (``_plainly_valid``): it accepts only what
the schemas accept, with stricter types (``tests/test_envelope_check.py`` generates events to
hold it to that), and anything it does not accept goes to the schemas, which decide and say why.
"""

from collections.abc import Callable
from typing import Any

from marshmallow import Schema, ValidationError, fields, validate

from schemas.fields import (
    AGENT_STATUSES,
    MAX_COMMENT,
    MAX_CONTENT,
    MAX_SCORE,
    MAX_SUMMARY,
    MESSAGE_ROLES,
    MIN_SCORE,
    NAME_PATTERN,
    SESSION_STATUSES,
    TRANSCRIPT_ROLES,
    Content,
    MessageId,
    Name,
    Status,
    UnixTime,
)

EVENT_TYPES = (
    "connected",
    "status_change",
    "transfer_request",
    "new_message",
    "agent_joined",
    "agent_left",
    "heartbeat",
    "typing",
    "agent_status",
    "queue_update",
    "offer",
    "offer_ended",
    "note",
    "read",
    "whisper",
    "barge",
    "rating",
)
SOURCES = ("ai_chatbot", "agent_workbench", "system")

# Who can say what: the product never publishes any other pair, so an event from Redis with
# another (an "agent_joined" from the chatbot, an agent's message from the chatbot side) was
# forged by whoever can write to Redis, and is dropped before a browser can show it.
ALLOWED_SOURCES: dict[str, frozenset[str]] = {
    "connected": frozenset({"system"}),
    "heartbeat": frozenset({"system"}),
    # "system": the sweeper closing an idle bot conversation.
    "status_change": frozenset({"ai_chatbot", "agent_workbench", "system"}),
    # The workbench and "system" (the router): a conversation handed back to the queue.
    "transfer_request": frozenset({"ai_chatbot", "agent_workbench", "system"}),
    # "system": a notice of the router to the customer (in the bot's voice).
    "new_message": frozenset({"ai_chatbot", "agent_workbench", "system"}),
    "agent_joined": frozenset({"agent_workbench", "system"}),
    "agent_left": frozenset({"agent_workbench", "system"}),
    "typing": frozenset({"ai_chatbot", "agent_workbench"}),
    # "system": the presence watch setting an agent with no stream open offline.
    "agent_status": frozenset({"agent_workbench", "system"}),
    "queue_update": frozenset({"system"}),
    "offer": frozenset({"agent_workbench", "system"}),
    "offer_ended": frozenset({"agent_workbench", "system"}),
    "note": frozenset({"agent_workbench"}),
    "read": frozenset({"ai_chatbot", "agent_workbench"}),
    "whisper": frozenset({"agent_workbench"}),
    "barge": frozenset({"agent_workbench"}),
    # Only the customer rates (docs/api.md, "Satisfaction").
    "rating": frozenset({"ai_chatbot"}),
}
# Who reads for which side, in read.
READER_BY_SOURCE = {"ai_chatbot": "customer", "agent_workbench": "agent"}
# The roles each side speaks for in new_message (and is typing for, in typing).
MESSAGE_ROLES_BY_SOURCE = {"ai_chatbot": {"customer", "bot"}, "agent_workbench": {"agent"}, "system": {"bot"}}


class EnvelopeSchema(Schema):
    type = fields.String(required=True, validate=validate.OneOf(EVENT_TYPES))
    payload = fields.Dict(required=True, keys=fields.String())
    timestamp = UnixTime(required=True)
    source = fields.String(required=True, validate=validate.OneOf(SOURCES))


class ConnectedPayload(Schema):
    channels = fields.List(fields.String(), required=True)
    session_name = Name()
    agent_id = Name()
    recovered = fields.Boolean()  # whether a resume got every missed event
    filter = fields.Dict(keys=fields.String())  # a supervisor stream's filters


class StatusChangePayload(Schema):
    session_name = Name(required=True)
    status = Status(required=True)
    previous_status = Status(required=True)
    agent_id = Name(required=True, allow_none=True)


class TransferRequestPayload(Schema):
    session_name = Name(required=True)
    status = Status(required=True)
    reason = fields.String(required=True, allow_none=True)
    # Not required: events published before it existed are still in histories.
    summary = fields.String(allow_none=True, validate=validate.Length(max=MAX_SUMMARY))


class MessageSchema(Schema):
    id = fields.String(required=True)
    role = fields.String(required=True, validate=validate.OneOf(TRANSCRIPT_ROLES))
    content = Content(required=True)
    agent_id = Name(required=True, allow_none=True)
    created_at = UnixTime(required=True)


class NewMessagePayload(Schema):
    session_name = Name(required=True)
    message = fields.Nested(MessageSchema, required=True)


class NotePayload(Schema):
    """An agent's private note (docs/api.md, "Private notes"): on agents' streams only."""

    session_name = Name(required=True)
    message = fields.Nested(MessageSchema, required=True)


class RatingPayload(Schema):
    """The customer rated the closed conversation (docs/api.md, "Satisfaction")."""

    session_name = Name(required=True)
    score = fields.Integer(required=True, strict=True, validate=validate.Range(min=MIN_SCORE, max=MAX_SCORE))
    comment = fields.String(required=True, allow_none=True, validate=validate.Length(min=1, max=MAX_COMMENT))


class AgentPresencePayload(Schema):
    session_name = Name(required=True)
    agent_id = Name(required=True)


class HeartbeatPayload(Schema):
    pass


class AgentStatusPayload(Schema):
    agent_id = Name(required=True)
    status = fields.String(required=True, validate=validate.OneOf(AGENT_STATUSES))
    capacity = fields.Integer(required=True, strict=True)


class QueueUpdatePayload(Schema):
    session_name = Name(required=True)
    position = fields.Integer(required=True, strict=True, validate=validate.Range(min=1))
    estimated_wait_seconds = fields.Integer(required=True, strict=True, allow_none=True)


class OfferPayload(Schema):
    """A waiting conversation offered to this agent until ``expires_at`` (docs/routing.md)."""

    session_name = Name(required=True)
    expires_at = fields.Float(required=True)
    reason = fields.String(required=True, allow_none=True)
    summary = fields.String(required=True, allow_none=True, validate=validate.Length(max=MAX_SUMMARY))


OFFER_ENDINGS = ("declined", "expired", "withdrawn")


class OfferEndedPayload(Schema):
    """An offer to this agent ended unaccepted: it declined, it let it expire, or it was
    withdrawn (the agent went offline, the conversation left the queue or was handed on)."""

    session_name = Name(required=True)
    reason = fields.String(required=True, validate=validate.OneOf(OFFER_ENDINGS))


class TypingPayload(Schema):
    """Someone is writing in the session (ephemeral: no id, no history; docs/api.md)."""

    session_name = Name(required=True)
    who = fields.String(required=True, validate=validate.OneOf(MESSAGE_ROLES))
    agent_id = Name(metadata={"description": "the agent writing (`who: agent` only)"})


class ReadPayload(Schema):
    """How far one side of the session has read (docs/api.md, "Read receipts")."""

    session_name = Name(required=True)
    reader = fields.String(required=True, validate=validate.OneOf(("customer", "agent")))
    agent_id = Name(metadata={"description": "the agent who read (`reader: agent` only)"})
    up_to = MessageId(required=True, metadata={"description": "the last message read"})


class WhisperPayload(Schema):
    """A supervisor's whisper to the agent holding a session: that agent's stream and the
    supervisors' only (docs/security.md)."""

    session_name = Name(required=True)
    supervisor_id = Name(required=True)
    agent_id = Name(required=True, metadata={"description": "the agent it is for: the holder"})
    content = Content(required=True)


class BargePayload(Schema):
    """A supervisor took a session over from the agent holding it."""

    session_name = Name(required=True)
    supervisor_id = Name(required=True)
    from_agent_id = Name(required=True)


_ENVELOPE = EnvelopeSchema()
_PAYLOADS: dict[str, Schema] = {
    "connected": ConnectedPayload(),
    "status_change": StatusChangePayload(),
    "transfer_request": TransferRequestPayload(),
    "new_message": NewMessagePayload(),
    "agent_joined": AgentPresencePayload(),
    "agent_left": AgentPresencePayload(),
    "heartbeat": HeartbeatPayload(),
    "typing": TypingPayload(),
    "agent_status": AgentStatusPayload(),
    "queue_update": QueueUpdatePayload(),
    "offer": OfferPayload(),
    "offer_ended": OfferEndedPayload(),
    "note": NotePayload(),
    "read": ReadPayload(),
    "whisper": WhisperPayload(),
    "barge": BargePayload(),
    "rating": RatingPayload(),
}


def validate_event(event: Any) -> dict[str, Any]:
    """Errors of an envelope and its payload, keyed by field; empty when the event is valid."""
    if _plainly_valid(event):
        return {}
    return schema_errors(event)


def schema_errors(event: Any) -> dict[str, Any]:
    """``validate_event`` by the schemas alone."""
    if not isinstance(event, dict):
        return {"_schema": ["event must be a JSON object"]}
    errors = _ENVELOPE.validate(event)
    if errors:
        return errors
    payload_errors = _PAYLOADS[event["type"]].validate(event["payload"])
    if payload_errors:
        return {"payload": payload_errors}
    return _provenance_errors(event)


def _provenance_errors(event: dict[str, Any]) -> dict[str, Any]:
    type_, source = event["type"], event["source"]
    if source not in ALLOWED_SOURCES[type_]:
        return {"source": [f"{source} does not publish {type_} events"]}
    if type_ == "typing":
        who = event["payload"]["who"]
        if who not in MESSAGE_ROLES_BY_SOURCE[source]:
            return {"source": [f"{source} does not type for {who}"]}
        if (who == "agent") != ("agent_id" in event["payload"]):
            return {"payload": {"agent_id": ["given for an agent typing only"]}}
    if type_ == "read":
        reader = event["payload"]["reader"]
        if reader != READER_BY_SOURCE[source]:
            return {"source": [f"{source} does not read for {reader}"]}
        if (reader == "agent") != ("agent_id" in event["payload"]):
            return {"payload": {"agent_id": ["given for an agent's read only"]}}
    if type_ == "note":
        message = event["payload"]["message"]
        if message["role"] != "note" or message["agent_id"] is None:
            return {"payload": {"message": {"role": ["a note's role is note, written by an agent"]}}}
    if type_ == "new_message":
        message = event["payload"]["message"]
        if message["role"] not in MESSAGE_ROLES_BY_SOURCE[source]:
            return {"source": [f"{source} does not speak for role {message['role']}"]}
        if (message["role"] == "agent") != (message["agent_id"] is not None):
            return {"payload": {"message": {"agent_id": ["set for agent messages only"]}}}
    return {}


ENVELOPE_KEYS = frozenset(("type", "payload", "timestamp", "source"))
_STATUSES = frozenset(SESSION_STATUSES)


def _is_status(value: Any) -> bool:
    return type(value) is str and value in _STATUSES


def _is_name(value: Any) -> bool:
    return type(value) is str and NAME_PATTERN.match(value) is not None


def _is_time(value: Any) -> bool:
    return type(value) is int and value >= 0


def _message_ok(message: Any, source: str) -> bool:
    if type(message) is not dict or message.keys() != _MESSAGE_KEYS:
        return False
    role, content, agent_id = message["role"], message["content"], message["agent_id"]
    return (
        type(message["id"]) is str
        and type(role) is str
        and role in MESSAGE_ROLES_BY_SOURCE.get(source, ())
        and type(content) is str
        and 1 <= len(content) <= MAX_CONTENT
        and (_is_name(agent_id) if role == "agent" else agent_id is None)
        and _is_time(message["created_at"])
    )


_MESSAGE_KEYS = frozenset(("id", "role", "content", "agent_id", "created_at"))


def _note_ok(message: Any) -> bool:
    return (
        type(message) is dict
        and message.keys() == _MESSAGE_KEYS
        and type(message["id"]) is str
        and message["role"] == "note"
        and type(message["content"]) is str
        and 1 <= len(message["content"]) <= MAX_CONTENT
        and _is_name(message["agent_id"])
        and _is_time(message["created_at"])
    )


_PLAIN_PAYLOADS: dict[str, tuple[frozenset[str], Callable[[dict[str, Any], str], bool]]] = {
    "new_message": (
        frozenset(("session_name", "message")),
        lambda p, source: _is_name(p["session_name"]) and _message_ok(p["message"], source),
    ),
    "status_change": (
        frozenset(("session_name", "status", "previous_status", "agent_id")),
        lambda p, _: (
            _is_name(p["session_name"])
            and _is_status(p["status"])
            and _is_status(p["previous_status"])
            and (p["agent_id"] is None or _is_name(p["agent_id"]))
        ),
    ),
    "transfer_request": (
        frozenset(("session_name", "status", "reason", "summary")),
        lambda p, _: (
            _is_name(p["session_name"])
            and _is_status(p["status"])
            and (p["reason"] is None or type(p["reason"]) is str)
            and (p["summary"] is None or (type(p["summary"]) is str and len(p["summary"]) <= MAX_SUMMARY))
        ),
    ),
    "agent_joined": (
        frozenset(("session_name", "agent_id")),
        lambda p, _: _is_name(p["session_name"]) and _is_name(p["agent_id"]),
    ),
    "agent_left": (
        frozenset(("session_name", "agent_id")),
        lambda p, _: _is_name(p["session_name"]) and _is_name(p["agent_id"]),
    ),
    "heartbeat": (frozenset(), lambda p, _: True),
    "agent_status": (
        frozenset(("agent_id", "status", "capacity")),
        lambda p, _: _is_name(p["agent_id"]) and p["status"] in AGENT_STATUSES and type(p["capacity"]) is int,
    ),
    "queue_update": (
        frozenset(("session_name", "position", "estimated_wait_seconds")),
        lambda p, _: (
            _is_name(p["session_name"])
            and type(p["position"]) is int
            and p["position"] >= 1
            and (p["estimated_wait_seconds"] is None or type(p["estimated_wait_seconds"]) is int)
        ),
    ),
    "offer": (
        frozenset(("session_name", "expires_at", "reason", "summary")),
        lambda p, _: (
            _is_name(p["session_name"])
            and type(p["expires_at"]) in (int, float)
            and (p["reason"] is None or type(p["reason"]) is str)
            and (p["summary"] is None or (type(p["summary"]) is str and len(p["summary"]) <= MAX_SUMMARY))
        ),
    ),
    "note": (
        frozenset(("session_name", "message")),
        lambda p, _: _is_name(p["session_name"]) and _note_ok(p["message"]),
    ),
    "offer_ended": (
        frozenset(("session_name", "reason")),
        lambda p, _: _is_name(p["session_name"]) and p["reason"] in OFFER_ENDINGS,
    ),
    "rating": (
        frozenset(("session_name", "score", "comment")),
        lambda p, _: (
            _is_name(p["session_name"])
            and type(p["score"]) is int
            and MIN_SCORE <= p["score"] <= MAX_SCORE
            and (
                p["comment"] is None or (type(p["comment"]) is str and 1 <= len(p["comment"]) <= MAX_COMMENT)
            )
        ),
    ),
    "typing": (
        frozenset(("session_name", "who")),
        # An agent's typing names its agent: the schemas check that payload.
        lambda p, source: (
            _is_name(p["session_name"])
            and p["who"] != "agent"
            and p["who"] in MESSAGE_ROLES_BY_SOURCE.get(source, ())
        ),
    ),
}


def _plainly_valid(event: Any) -> bool:
    """True only for an event the schemas accept; False says nothing (ask the schemas)."""
    if type(event) is not dict or event.keys() != ENVELOPE_KEYS:
        return False
    type_, payload, source = event["type"], event["payload"], event["source"]
    if type(type_) is not str or type(source) is not str or type(payload) is not dict:
        return False
    plain = _PLAIN_PAYLOADS.get(type_)
    if plain is None or source not in ALLOWED_SOURCES[type_] or not _is_time(event["timestamp"]):
        return False
    keys, payload_ok = plain
    return payload.keys() == keys and all(type(k) is str for k in payload) and payload_ok(payload, source)


def check_event(event: Any) -> None:
    """Raise ValidationError unless ``event`` is a valid envelope."""
    errors = validate_event(event)
    if errors:
        raise ValidationError(errors)
