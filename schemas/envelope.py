"""The event envelope (type/payload/timestamp/source) and the payload of each event type.

Validation runs on publish (a bad event raises before anything is sent) and on receipt from
Redis (a bad one is dropped), so both checks share :func:`validate_event`.
"""

from typing import Any

from marshmallow import Schema, ValidationError, fields, validate

from schemas.fields import MESSAGE_ROLES, Content, Name, Status, UnixTime

EVENT_TYPES = (
    "connected",
    "status_change",
    "transfer_request",
    "new_message",
    "agent_joined",
    "agent_left",
    "heartbeat",
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
    "transfer_request": frozenset({"ai_chatbot"}),
    "new_message": frozenset({"ai_chatbot", "agent_workbench"}),
    "agent_joined": frozenset({"agent_workbench"}),
    "agent_left": frozenset({"agent_workbench"}),
}
# The roles each side speaks for in new_message.
MESSAGE_ROLES_BY_SOURCE = {"ai_chatbot": {"customer", "bot"}, "agent_workbench": {"agent"}}


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


class MessageSchema(Schema):
    id = fields.String(required=True)
    role = fields.String(required=True, validate=validate.OneOf(MESSAGE_ROLES))
    content = Content(required=True)
    agent_id = Name(required=True, allow_none=True)
    created_at = UnixTime(required=True)


class NewMessagePayload(Schema):
    session_name = Name(required=True)
    message = fields.Nested(MessageSchema, required=True)


class AgentPresencePayload(Schema):
    session_name = Name(required=True)
    agent_id = Name(required=True)


class HeartbeatPayload(Schema):
    pass


_ENVELOPE = EnvelopeSchema()
_PAYLOADS: dict[str, Schema] = {
    "connected": ConnectedPayload(),
    "status_change": StatusChangePayload(),
    "transfer_request": TransferRequestPayload(),
    "new_message": NewMessagePayload(),
    "agent_joined": AgentPresencePayload(),
    "agent_left": AgentPresencePayload(),
    "heartbeat": HeartbeatPayload(),
}


def validate_event(event: Any) -> dict[str, Any]:
    """Errors of an envelope and its payload, keyed by field; empty when the event is valid."""
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
    if type_ == "new_message":
        message = event["payload"]["message"]
        if message["role"] not in MESSAGE_ROLES_BY_SOURCE[source]:
            return {"source": [f"{source} does not speak for role {message['role']}"]}
        if (message["role"] == "agent") != (message["agent_id"] is not None):
            return {"payload": {"message": {"agent_id": ["set for agent messages only"]}}}
    return {}


def check_event(event: Any) -> None:
    """Raise ValidationError unless ``event`` is a valid envelope."""
    errors = validate_event(event)
    if errors:
        raise ValidationError(errors)
