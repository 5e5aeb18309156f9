"""Marshmallow schemas: the event envelope, its payloads, and every request body."""

from schemas.envelope import (
    EVENT_TYPES,
    SOURCES,
    EnvelopeSchema,
    validate_event,
)
from schemas.requests import (
    AgentActionSchema,
    AgentMessageSchema,
    ChatSchema,
    CreateSessionSchema,
    EscalateSchema,
    SessionListQuerySchema,
    SupervisorQuerySchema,
)
from schemas.fields import NAME_PATTERN, is_valid_name

__all__ = [
    "EVENT_TYPES",
    "SOURCES",
    "NAME_PATTERN",
    "AgentActionSchema",
    "AgentMessageSchema",
    "ChatSchema",
    "CreateSessionSchema",
    "EnvelopeSchema",
    "EscalateSchema",
    "SessionListQuerySchema",
    "SupervisorQuerySchema",
    "is_valid_name",
    "validate_event",
]
