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
    AgentReadSchema,
    AgentStatusSchema,
    ChatSchema,
    CreateSessionSchema,
    EscalateSchema,
    RatingSchema,
    ReadSchema,
    ReassignSchema,
    SessionListQuerySchema,
    SupervisorActionSchema,
    SupervisorQuerySchema,
    TranscriptQuerySchema,
    TransferSchema,
    WhisperSchema,
)

__all__ = [
    "EVENT_TYPES",
    "NAME_PATTERN",
    "SOURCES",
    "AgentActionSchema",
    "AgentMessageSchema",
    "AgentReadSchema",
    "AgentStatusSchema",
    "ChatSchema",
    "CreateSessionSchema",
    "EnvelopeSchema",
    "EscalateSchema",
    "RatingSchema",
    "ReadSchema",
    "ReassignSchema",
    "SessionListQuerySchema",
    "SupervisorActionSchema",
    "SupervisorQuerySchema",
    "TranscriptQuerySchema",
    "TransferSchema",
    "WhisperSchema",
    "is_valid_name",
    "validate_event",
]
