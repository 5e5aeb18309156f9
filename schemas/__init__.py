"""Marshmallow schemas: the event envelope, its payloads, and every request body."""

from schemas.envelope import (
    EVENT_TYPES,
    SOURCES,
    EnvelopeSchema,
    validate_event,
)
from schemas.fields import NAME_PATTERN, is_valid_name
from schemas.requests import (
    AgentActionSchema,
    AgentMessageSchema,
    AgentStatusSchema,
    ChatSchema,
    CreateSessionSchema,
    EscalateSchema,
    RatingSchema,
    SessionListQuerySchema,
    SupervisorQuerySchema,
    TranscriptQuerySchema,
    TransferSchema,
)

__all__ = [
    "EVENT_TYPES",
    "NAME_PATTERN",
    "SOURCES",
    "AgentActionSchema",
    "AgentMessageSchema",
    "AgentStatusSchema",
    "ChatSchema",
    "CreateSessionSchema",
    "EnvelopeSchema",
    "EscalateSchema",
    "RatingSchema",
    "SessionListQuerySchema",
    "SupervisorQuerySchema",
    "TranscriptQuerySchema",
    "TransferSchema",
    "is_valid_name",
    "validate_event",
]
