"""Request bodies and query strings. Unknown fields are rejected (marshmallow's default RAISE)."""

from typing import Any

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from schemas.fields import (
    AGENT_STATUSES,
    MAX_CAPACITY,
    MAX_COMMENT,
    MAX_REASON,
    MAX_SCORE,
    MAX_SUMMARY,
    MIN_SCORE,
    Content,
    Cursor,
    MessageId,
    Name,
    PageLimit,
    Status,
)

# The most sessions a supervisor stream may name.
MAX_SUPERVISED_SESSIONS = 100


class CreateSessionSchema(Schema):
    session_name = Name(load_default=None, allow_none=True)


class ChatSchema(Schema):
    session_name = Name(required=True)
    content = Content(required=True)


class EscalateSchema(Schema):
    session_name = Name(required=True)
    reason = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=MAX_REASON))
    summary = fields.String(
        load_default=None,
        allow_none=True,
        validate=validate.Length(max=MAX_SUMMARY),
        metadata={"description": "what the agent should know (the session's `handoff_summary`)"},
    )


# With a token, agent_id is optional (the agent is the token's; a body agent_id must agree):
# handlers then load these with partial=("agent_id",).
class AgentActionSchema(Schema):
    agent_id = Name(required=True)


class _HandOverSchema(Schema):
    """To another agent (``to_agent_id``) or back to the queue (``to_queue``), not both."""

    to_agent_id = Name(load_default=None, metadata={"description": "the agent to hand it to"})
    to_queue = fields.Boolean(
        load_default=False,
        truthy={True},
        falsy={False},
        metadata={"description": "true: back to the front of the queue"},
    )
    note = fields.String(
        load_default=None,
        allow_none=True,
        validate=validate.Length(max=MAX_SUMMARY),
        metadata={"description": "for the next agent (the session's `handoff_summary`)"},
    )

    @validates_schema
    def _one_place(self, data: dict[str, Any], **_: Any) -> None:
        if (data.get("to_agent_id") is None) == (not data.get("to_queue")):
            raise ValidationError("give to_agent_id or to_queue: true (one of them)", "to_agent_id")


class TransferSchema(_HandOverSchema):
    """The holder hands its conversation on."""

    agent_id = Name(required=True)


class ReassignSchema(_HandOverSchema):
    """A supervisor hands a conversation (held or waiting) to an agent, or back to the queue."""

    supervisor_id = Name(required=True)


class SupervisorActionSchema(Schema):
    supervisor_id = Name(required=True)


class WhisperSchema(Schema):
    supervisor_id = Name(required=True)
    content = Content(required=True)


class AgentStatusSchema(Schema):
    status = fields.String(required=True, validate=validate.OneOf(AGENT_STATUSES))
    capacity = fields.Integer(
        strict=True,
        validate=validate.Range(min=0, max=MAX_CAPACITY),
        metadata={"description": "conversations this agent holds at most (absent: unchanged)"},
    )


class AgentMessageSchema(Schema):
    agent_id = Name(required=True)
    content = Content(required=True)


class ReadSchema(Schema):
    up_to = MessageId(required=True, metadata={"description": "the last message read (its id)"})


class AgentReadSchema(ReadSchema):
    agent_id = Name(required=True)


class RatingSchema(Schema):
    """A closed conversation's rating by its customer (a bool, a float or a numeric string is
    not a score)."""

    score = fields.Integer(
        required=True,
        strict=True,
        validate=validate.Range(min=MIN_SCORE, max=MAX_SCORE),
        metadata={"description": f"{MIN_SCORE} (worst) to {MAX_SCORE} (best)"},
    )
    comment = fields.String(
        load_default=None,
        allow_none=True,
        validate=validate.Length(max=MAX_COMMENT),
        metadata={"description": "in the customer's words; empty or null: no comment"},
    )


# ?cursor= on a listing.
CURSOR_DESCRIPTION = (
    "The `next_cursor` of the page before: this page continues after it (absent: the first "
    "page). Send it back as given: a malformed one is a 400 `validation_error`, one this listing "
    "cannot continue from (another listing's, or a transcript's whose message has since been "
    "trimmed away) a 400 `invalid_cursor`: start again without it."
)


class SessionListQuerySchema(Schema):
    """The queue listing: one status, a page of it."""

    status = Status(load_default="waiting_agent")
    limit = PageLimit()
    cursor = Cursor(metadata={"description": CURSOR_DESCRIPTION})


class TranscriptQuerySchema(Schema):
    """A page of a transcript."""

    limit = PageLimit()
    cursor = Cursor(metadata={"description": CURSOR_DESCRIPTION})


class SupervisorQuerySchema(Schema):
    """The supervisor stream's filters: sessions now in a status, and/or named sessions
    (``?session=a&session=b`` or ``?sessions=a,b``)."""

    status = Status(load_default=None)
    sessions = fields.List(Name(), load_default=list, validate=validate.Length(max=MAX_SUPERVISED_SESSIONS))
