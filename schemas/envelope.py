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


class EnvelopeSchema(Schema):
    type = fields.String(required=True, validate=validate.OneOf(EVENT_TYPES))
    payload = fields.Dict(required=True, keys=fields.String())
    timestamp = UnixTime(required=True)
    source = fields.String(required=True, validate=validate.OneOf(SOURCES))


class ConnectedPayload(Schema):
    channels = fields.List(fields.String(), required=True)
    session_name = Name()
    agent_id = Name()


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
    return {"payload": payload_errors} if payload_errors else {}


def check_event(event: Any) -> None:
    """Raise ValidationError unless ``event`` is a valid envelope."""
    errors = validate_event(event)
    if errors:
        raise ValidationError(errors)
