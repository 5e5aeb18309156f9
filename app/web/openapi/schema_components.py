"""The schema components: the marshmallow schemas the server validates with, by component
name, the event unions written around them, and the two corrections apispec needs to describe
them exactly (ECMA patterns, a null that is only null)."""

import re
from collections.abc import Sequence
from typing import Any

from marshmallow import Schema, fields

from app.web.openapi.refs import component_path, ref
from realtime.channels import AGENT_PREFIX, BROADCAST, SESSION_PREFIX
from schemas import requests as rq
from schemas import responses as rs
from schemas.envelope import EVENT_TYPES

EVENT_DESCRIPTIONS = {
    "connected": "The first event of every stream, sent once its subscriptions are live; its id is the stream's position.",
    "status_change": "A session changed status.",
    "transfer_request": "A session asks for a human (broadcast channel).",
    "new_message": "A message was added to a session.",
    "agent_joined": "An agent took a session over.",
    "agent_left": "An agent handed a session back to the bot.",
    "heartbeat": "Sent every heartbeat interval on every stream, without an id.",
    "queue_update": (
        "A waiting customer's place in the queue and estimated wait changed; ephemeral (no id)."
    ),
    "agent_status": ("An agent's presence or capacity changed; on every agent stream (the broadcast)."),
    "offer": "A waiting conversation is offered to this agent until expires_at (its own stream).",
    "offer_ended": "An offer to this agent ended unaccepted: declined, expired or withdrawn.",
    "read": (
        "One side (the customer, or the agent holding it) has read the session up to a message; "
        "both sides' streams carry it."
    ),
    "whisper": "A supervisor's whisper to the agent holding a session: that agent and supervisors only.",
    "barge": "A supervisor took a session over from the agent holding it (an audit, and that agent told).",
    "note": "An agent's private note: on agents' and supervisors' streams only, never a customer's.",
    "rating": "The customer rated the closed conversation (once): on every stream of the session.",
    "typing": (
        "Someone is writing in the session: the customer, the agent holding it (`agent_id`), or "
        "the bot preparing a reply. Ephemeral: without an id, never in the history, never "
        "replayed on a resume; at most one per sender every 2 s."
    ),
}

# The union of the events each kind of stream carries (operations.Stream), by kind.
STREAM_UNIONS = {
    "session": "SessionStreamEvent",
    "agent": "AgentStreamEvent",
    "supervisor": "SupervisorStreamEvent",
    "workbench_session": "WorkbenchSessionStreamEvent",
}


def ecma_pattern(pattern: str) -> str:
    """A Python pattern (matched from the start, ``\\Z`` at the end) as OpenAPI wants it: an
    ECMA pattern, which is searched, so anchored at both ends."""
    if pattern.endswith(r"\Z"):
        pattern = pattern[:-2] + "$"
    if not pattern.startswith("^"):
        pattern = "^" + pattern
    return pattern


def regexp_pattern(self: Any, field: fields.Field[Any], **kwargs: Any) -> dict[str, Any]:
    """apispec attribute function: a field's Regexp validator as an ECMA ``pattern``."""
    for validator in field.validators:
        regex = getattr(validator, "regex", None)
        if isinstance(regex, re.Pattern):
            return {"pattern": ecma_pattern(regex.pattern)}
    return {}


def exact_null(self: Any, field: fields.Field[Any], ret: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """apispec writes a nullable nested schema as ``anyOf: [{type: object, nullable: true},
    {$ref}]``, whose first branch admits any object; ``enum: [null]`` makes it admit null only."""
    for branch in ret.get("anyOf", ()):
        if branch == {"type": "object", "nullable": True}:
            branch["enum"] = [None]
    return {}


def event_component(type_: str) -> str:
    """The schema component of one event type: ``status_change`` -> ``StatusChangeEvent``."""
    return "".join(part.title() for part in type_.split("_")) + "Event"


def documented_schemas(insecure: bool = False) -> dict[str, Schema]:
    """Every schema component of the document, by name, as the marshmallow schema behind it
    (the test suite validates examples and real answers with these)."""
    optional_agent = () if insecure else ("agent_id",)
    optional_supervisor = () if insecure else ("supervisor_id",)
    schemas: dict[str, Schema] = {
        "Message": rs.MessageSchema(),
        "Session": rs.SessionSchema(),
        "SessionCreated": rs.SessionCreatedSchema(),
        "ChatResponse": rs.ChatResponseSchema(),
        "AgentMessageResponse": rs.AgentMessageResponseSchema(),
        "SessionList": rs.SessionListSchema(),
        "Agent": rs.AgentSchema(),
        "QueuePlace": rs.QueuePlaceSchema(),
        "TypingAnswer": rs.TypingAnswerSchema(),
        "AgentList": rs.AgentListSchema(),
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
    schemas.update(
        {
            "CreateSessionRequest": rq.CreateSessionSchema(),
            "ChatRequest": rq.ChatSchema(),
            "EscalateRequest": rq.EscalateSchema(),
            "AgentActionRequest": rq.AgentActionSchema(partial=optional_agent),
            "AgentMessageRequest": rq.AgentMessageSchema(partial=optional_agent),
            "ReadRequest": rq.ReadSchema(),
            "AgentReadRequest": rq.AgentReadSchema(partial=optional_agent),
            "WhisperRequest": rq.WhisperSchema(partial=optional_supervisor),
            "SupervisorActionRequest": rq.SupervisorActionSchema(partial=optional_supervisor),
            "ReassignRequest": rq.ReassignSchema(partial=optional_supervisor),
            "AgentStatusRequest": rq.AgentStatusSchema(),
            "TransferRequest": rq.TransferSchema(partial=optional_agent),
            "RatingRequest": rq.RatingSchema(),
        }
    )
    return schemas


def event_union(types: Sequence[str], description: str) -> dict[str, Any]:
    """One of the event components of ``types``, told apart by ``type``."""
    return {
        "description": description,
        "oneOf": [ref("schemas", event_component(t)) for t in types],
        "discriminator": {
            "propertyName": "type",
            "mapping": {t: component_path("schemas", event_component(t)) for t in types},
        },
    }


def json_schema_components() -> dict[str, dict[str, Any]]:
    """The schema components written as JSON Schema (no marshmallow schema behind them)."""
    session_channel = f"{SESSION_PREFIX}{{session_name}}"
    agent_channel = f"{AGENT_PREFIX}{{agent_id}}"
    return {
        "Event": event_union(EVENT_TYPES, "Any event: the envelope, by `type`."),
        STREAM_UNIONS["session"]: event_union(
            rs.SESSION_STREAM_EVENTS, f"What a session stream carries (`{session_channel}`)."
        ),
        STREAM_UNIONS["workbench_session"]: event_union(
            rs.WORKBENCH_SESSION_STREAM_EVENTS,
            f"What an agent's session stream carries: the session's events (`{session_channel}`) "
            "and its private notes (`note`).",
        ),
        STREAM_UNIONS["supervisor"]: event_union(
            rs.SUPERVISOR_STREAM_EVENTS,
            f"What a supervisor stream carries: every session's events (`{session_channel}`), and "
            "the agents' presence (`agent_status`).",
        ),
        STREAM_UNIONS["agent"]: event_union(
            rs.AGENT_STREAM_EVENTS, f"What an agent stream carries (`{agent_channel}` + `{BROADCAST}`)."
        ),
        "OpenApiDocument": {"type": "object", "description": "An OpenAPI 3 document."},
    }
