"""What the API answers: documentation schemas for the OpenAPI document (app/web/openapi/),
also used by the tests to check real answers against what the document says.

Every schema here keeps marshmallow's default ``unknown=RAISE``, so validating an answer with
one of them fails on a key the documentation does not know about (that keeps the docs honest).
The published document still lets these objects grow: each schema with a ``Meta.description``
is emitted without ``additionalProperties: false`` (docs/api.md: clients ignore keys they do not
know). Event envelopes are the exception: their four keys are fixed, so the ``*EventSchema``
classes carry no ``Meta.description`` and are emitted closed.
"""

from marshmallow import Schema, fields, validate

from schemas import envelope
from schemas.envelope import ALLOWED_SOURCES, EVENT_TYPES
from schemas.fields import (
    AGENT_STATUSES,
    MAX_COMMENT,
    MAX_REASON,
    MAX_SCORE,
    MAX_SUMMARY,
    MIN_SCORE,
    Cursor,
    MessageId,
    Name,
    Status,
    UnixTime,
)

COMPONENTS = ("chatbot", "workbench")
BROKER_MODES = ("redis", "redis-cluster", "memory")
HEALTH_STATUSES = ("ok", "degraded")

# Every ``error.code`` the server answers with (docs/api.md, "Error codes"; app/web/middlewares.py):
# ``bad_request`` and ``http_error`` are aiohttp's own 400 and other HTTP errors.
ERROR_CODES = (
    "agent_unavailable",
    "already_rated",
    "at_capacity",
    "bad_json",
    "bad_request",
    "body_too_large",
    "conflict",
    "forbidden",
    "http_error",
    "internal_error",
    "invalid_cursor",
    "invalid_name",
    "method_not_allowed",
    "not_closed",
    "not_found",
    "rate_limited",
    "session_exists",
    "session_not_found",
    "too_many_agents",
    "too_many_channels",
    "too_many_streams",
    "unauthorized",
    "unavailable",
    "unsupported_media_type",
    "validation_error",
)


# -- sessions and messages ----------------------------------------------------------------


class TypingAnswerSchema(Schema):
    class Meta:
        description = (
            "Whether the `typing` event went out: false when this sender sent one within the last "
            "2 s (accepted and dropped, not an error)."
        )

    session_name = Name(required=True)
    sent = fields.Boolean(required=True)


class OfferSchema(Schema):
    class Meta:
        description = "A waiting conversation offered to one agent until `expires_at`."

    agent_id = Name(required=True)
    offered_at = fields.Float(required=True, metadata={"description": "unix seconds"})
    expires_at = fields.Float(required=True, metadata={"description": "unix seconds"})
    kind = fields.String(
        required=True,
        validate=validate.OneOf(["queue", "transfer"]),
        metadata={
            "description": "`queue`: the router's pick; `transfer`: named by the agent handing it over"
        },
    )


class ReadPositionsSchema(Schema):
    class Meta:
        description = "The last message each side read (its id); a side absent has read nothing."

    customer = MessageId()
    agent = MessageId()


class SessionRatingSchema(Schema):
    class Meta:
        description = "The customer's rating of the closed conversation (`at`: unix seconds)."

    score = fields.Integer(required=True, strict=True, validate=validate.Range(min=MIN_SCORE, max=MAX_SCORE))
    comment = fields.String(required=True, allow_none=True, validate=validate.Length(min=1, max=MAX_COMMENT))
    at = UnixTime(required=True)


class SessionSchema(Schema):
    class Meta:
        description = (
            "A conversation's state. Times are integer unix seconds; `status_seq` orders the "
            "queue (it increases every time any session enters a status: the microsecond it "
            "did, or one more than the last number if that is later)."
        )

    session_name = Name(required=True, metadata={"example": "demo"})
    status = Status(required=True)
    agent_id = Name(
        required=True,
        allow_none=True,
        metadata={"description": "the agent holding the session (`agent_active`), else null"},
    )
    created_at = UnixTime(required=True)
    updated_at = UnixTime(required=True)
    escalation_reason = fields.String(
        required=True,
        allow_none=True,
        validate=validate.Length(max=MAX_REASON),
        metadata={"description": "why the session was escalated; null when not given"},
    )
    handoff_summary = fields.String(
        allow_none=True,
        validate=validate.Length(max=MAX_SUMMARY),
        metadata={
            "description": "what the bot (or whoever escalated) tells the agent, so that the customer "
            "need not repeat it; set by an escalation, cleared when the session is released to the "
            "bot; null when none (absent on conversations stored before it existed)"
        },
    )
    status_seq = fields.Integer(strict=True, required=True, validate=validate.Range(min=0))
    waiting_since = fields.Float(
        allow_none=True,
        metadata={
            "description": "when it last entered `waiting_agent` (unix seconds, to the ms): its wait; "
            "absent otherwise"
        },
    )
    offer = fields.Nested(
        OfferSchema,
        allow_none=True,
        metadata={"description": "the outstanding offer of a waiting session (docs/routing.md)"},
    )
    declined = fields.Dict(
        keys=Name(),
        values=fields.Float(),
        metadata={"description": "agents who declined it or let its offer expire, and when (unix seconds)"},
    )
    answer_due = fields.Float(
        metadata={
            "description": "held, and its agent has not written yet: since when the customer has waited "
            "for the agent's first word; absent otherwise"
        }
    )
    message_taken = fields.Boolean(
        metadata={
            "description": "waiting past --wait-timeout with the customer's message for later "
            "(--wait-timeout-action message); absent otherwise"
        }
    )
    closed_reason = fields.String(
        metadata={"description": "why the server closed it by itself (`customer_idle`); absent otherwise"}
    )
    read = fields.Nested(
        ReadPositionsSchema,
        metadata={
            "description": 'how far each side has read (docs/api.md, "Read receipts"); absent: neither'
        },
    )
    whispers = fields.Integer(
        strict=True,
        validate=validate.Range(min=0),
        metadata={"description": "supervisors' whispers to its holders (docs/security.md); absent: none"},
    )
    unread = fields.Integer(
        strict=True,
        validate=validate.Range(min=0),
        metadata={
            "description": "the customer's messages the agents' side has not read (since the holding "
            "agent's last `read`); absent: none yet"
        },
    )
    rating = fields.Nested(
        SessionRatingSchema,
        allow_none=True,
        metadata={"description": "the customer's rating once closed (at most one); absent before"},
    )
    incarnation = fields.String(
        required=True,
        validate=validate.Regexp(r"^[0-9a-f]{16}$"),
        metadata={
            "description": "random, given when the conversation starts; its tokens carry it, so a "
            "conversation started again under the same name refuses the tokens of the one before",
            "example": "5f0c2a9e41d7b386",
        },
    )


class SessionCreatedSchema(SessionSchema):
    class Meta:
        description = (
            "The session just created. `token` (a JWT bound to this session) is present unless "
            "the process runs with `--insecure`; the customer sends it as `Authorization: "
            "Bearer <token>` (or `?token=` on the event stream)."
        )

    token = fields.String(metadata={"description": "the session's customer token (JWT)"})


class MessageSchema(envelope.MessageSchema):
    class Meta:
        description = (
            "One transcript message. `agent_id` is set on agent messages and notes only; ids are 16 "
            "hex digits. `role: note` (an agent's private note) is in the workbench's transcript only."
        )


class ChatResponseSchema(Schema):
    class Meta:
        description = (
            "The customer's message, the session after it, and the bot's reply (null when the "
            "bot did not answer: an agent holds or is awaited)."
        )

    session = fields.Nested(SessionSchema, required=True)
    message = fields.Nested(MessageSchema, required=True)
    reply = fields.Nested(MessageSchema, required=True, allow_none=True)


class AgentMessageResponseSchema(Schema):
    class Meta:
        description = "The agent's message and the session it was added to."

    session = fields.Nested(SessionSchema, required=True)
    message = fields.Nested(MessageSchema, required=True)


# What every page of a listing says of the next one.
PAGE_TEXT = (
    "A page may hold fewer items than `limit`, even none, while more follow (the queue skips "
    "sessions that moved on meanwhile): only `next_cursor: null` means the end."
)


def NextCursor() -> fields.String:
    return Cursor(
        required=True,
        allow_none=True,
        metadata={
            "description": "Send it as `?cursor=` (with the same `limit`, or another) for the next page; "
            "null: nothing more now. Opaque: a queue position or a message id, not to be made up."
        },
    )


class SessionListSchema(Schema):
    class Meta:
        description = (
            "A page of the sessions in one status, in the order they entered it (first come, first "
            f"served). {PAGE_TEXT}"
        )

    sessions = fields.List(fields.Nested(SessionSchema), required=True)
    next_cursor = NextCursor()


class QueuePlaceSchema(Schema):
    class Meta:
        description = (
            "A conversation's place in the queue: `position` (1 is next) and "
            "`estimated_wait_seconds` while it waits for an agent, both null otherwise; the "
            "estimate is null too without a recent pace or with no agent online."
        )

    session_name = Name(required=True)
    status = Status(required=True)
    position = fields.Integer(required=True, strict=True, allow_none=True)
    estimated_wait_seconds = fields.Integer(required=True, strict=True, allow_none=True)


class AgentSchema(Schema):
    class Meta:
        description = (
            "An agent: its presence, its capacity (its own, or --agent-capacity) and how many "
            "conversations it holds now."
        )

    agent_id = Name(required=True)
    status = fields.String(required=True, validate=validate.OneOf(AGENT_STATUSES))
    capacity = fields.Integer(required=True, strict=True)
    active = fields.Integer(required=True, strict=True)
    updated_at = UnixTime(required=True)


class AgentListSchema(Schema):
    class Meta:
        description = "Every agent this deployment knows, by id."

    agents = fields.List(fields.Nested(AgentSchema), required=True)


class TranscriptSchema(Schema):
    class Meta:
        description = (
            "A page of a session's transcript, oldest first (the transcript keeps its newest "
            f"messages within its bounds). {PAGE_TEXT}"
        )

    session_name = Name(required=True)
    messages = fields.List(fields.Nested(MessageSchema), required=True)
    next_cursor = NextCursor()


class LastEventSchema(Schema):
    id = fields.String(required=True, metadata={"description": "Its event id (`ms-seq`)"})
    time = fields.Float(required=True, metadata={"description": "When it was published (unix seconds)"})


class StreamHealthSchema(Schema):
    class Meta:
        description = (
            "Who listens to a session. Redis counts pub/sub connections, one per process, so "
            "the counts are of processes, across all of them; in memory, this process alone."
        )

    session_name = Name(required=True)
    subscribed_processes = fields.Integer(
        required=True, metadata={"description": "Processes with at least one stream of the session open"}
    )
    streams_in_this_process = fields.Integer(
        required=True, metadata={"description": "The session's open streams in the process that answered"}
    )
    customer_connected = fields.Boolean(
        required=True, metadata={"description": "Whether the customer side has a stream of it open anywhere"}
    )
    last_event = fields.Nested(LastEventSchema, required=True, allow_none=True)
    scope = fields.String(
        required=True,
        validate=validate.OneOf(["deployment", "process"]),
        metadata={
            "description": (
                "`deployment`: counted by Redis across every process; `process`: in memory, or while "
                "Redis is away, what this process alone knows (its own streams; `last_event` from "
                "its own history in memory, null while Redis is away)"
            )
        },
    )


# -- errors --------------------------------------------------------------------------------


class ErrorDetailSchema(Schema):
    class Meta:
        description = (
            "`code` is machine-readable, `message` is for people. `fields` (validation "
            "errors, bad names) maps each offending field to its messages."
        )

    code = fields.String(required=True, validate=validate.OneOf(ERROR_CODES))
    message = fields.String(required=True)
    fields_ = fields.Dict(
        data_key="fields",
        keys=fields.String(),
        values=fields.Raw(),
        metadata={"description": "offending field -> list of messages (nested for nested fields)"},
    )
    request_id = fields.String(
        metadata={"description": "the request's id, as in the X-Request-ID header and the logs"}
    )


class ErrorSchema(Schema):
    class Meta:
        description = 'Every error answer: `{"error": {"code", "message", "fields"?}}`.'

    error = fields.Nested(ErrorDetailSchema, required=True)


# -- process endpoints ---------------------------------------------------------------------


class HealthSchema(Schema):
    class Meta:
        description = "Liveness and mode of the process that answered."

    status = fields.String(required=True, validate=validate.OneOf(HEALTH_STATUSES))
    broker = fields.String(required=True, validate=validate.OneOf(BROKER_MODES))
    degraded = fields.Boolean(
        required=True,
        metadata={"description": "Redis is configured but unusable now: events stay in this process"},
    )
    components = fields.List(
        fields.String(validate=validate.OneOf(COMPONENTS)),
        required=True,
        metadata={"description": "the sub-apps this process serves"},
    )
    streams = fields.Integer(strict=True, required=True, validate=validate.Range(min=0))
    insecure = fields.Boolean(required=True, metadata={"description": "runs without authentication"})
    pid = fields.Integer(strict=True, required=True, validate=validate.Range(min=1))


class ReadySchema(Schema):
    class Meta:
        description = "Readiness: whether a canary event went through the broker and came back."

    ready = fields.Boolean(required=True)
    broker = fields.String(required=True, validate=validate.OneOf(BROKER_MODES))
    degraded = fields.Boolean(required=True)
    canary_ms = fields.Float(
        required=True,
        validate=validate.Range(min=0),
        metadata={"description": "milliseconds the probe took"},
    )


# -- events (documentation of the envelope and each payload) -------------------------------


class ConnectedPayloadSchema(envelope.ConnectedPayload):
    class Meta:
        description = (
            "First event of every stream: its channels, and `session_name` (session stream) or "
            "`agent_id` (agent stream). `recovered` says whether a resumed stream got every "
            "missed event (false on a fresh stream)."
        )

    recovered = fields.Boolean(required=True)


class StatusChangePayloadSchema(envelope.StatusChangePayload):
    class Meta:
        description = "A session changed status; `agent_id` is the holder after it (null when none)."


class TransferRequestPayloadSchema(envelope.TransferRequestPayload):
    class Meta:
        description = "A session asks for a human (broadcast to every agent)."


class NewMessagePayloadSchema(envelope.NewMessagePayload):
    class Meta:
        description = "A message was added to a session's transcript."

    message = fields.Nested(MessageSchema, required=True)


class AgentPresencePayloadSchema(envelope.AgentPresencePayload):
    class Meta:
        description = "An agent joined (took over) or left (released) a session."


class HeartbeatPayloadSchema(envelope.HeartbeatPayload):
    class Meta:
        description = "Always empty."


class AgentStatusPayloadSchema(envelope.AgentStatusPayload):
    class Meta:
        description = (
            "An agent's presence or capacity changed (docs/routing.md): set by the agent, or "
            "`offline` from `system` once no stream of the agent has been open for --agent-grace."
        )


class OfferPayloadSchema(envelope.OfferPayload):
    class Meta:
        description = (
            "A waiting conversation is offered to this agent (auto assignment, or a transfer to "
            "it): accept it with `POST .../accept` before `expires_at` (unix seconds), or "
            "`POST .../decline`; unanswered, it goes to the next agent (docs/routing.md)."
        )


class NotePayloadSchema(envelope.NotePayload):
    class Meta:
        description = (
            "An agent's private note (`message.role` is `note`): on the workbench's session "
            "stream and the supervisor stream only, never on a customer's."
        )

    message = fields.Nested(MessageSchema, required=True)


class RatingPayloadSchema(envelope.RatingPayload):
    class Meta:
        description = (
            "The customer rated the closed conversation (`comment` null when none): on the session's "
            "channel, so agents, supervisors and the customer's other tabs hear it."
        )


class OfferEndedPayloadSchema(envelope.OfferEndedPayload):
    class Meta:
        description = (
            "An offer to this agent ended unaccepted: `declined` (by this agent), `expired` (not "
            "accepted in time), or `withdrawn` (the agent went offline, or the conversation left "
            "the queue or was handed on); the conversation goes to the next agent."
        )


class QueueUpdatePayloadSchema(envelope.QueueUpdatePayload):
    class Meta:
        description = (
            "A waiting customer's place in the queue changed (1 is next), with the estimated wait "
            "in seconds (null: no recent pace, or no agent online; docs/routing.md). Ephemeral: no "
            "`id:`, never replayed; at most one a second; a resumed client asks `GET .../queue`."
        )


class TypingPayloadSchema(envelope.TypingPayload):
    class Meta:
        description = (
            "`who` is writing in the session (`bot`: the bot is preparing a reply). Ephemeral: no "
            "`id:`, never in the history, never replayed; sent again every few seconds while it "
            "lasts. Show it until a `new_message` from `who`, a `status_change`, or 6 s without "
            "another `typing`."
        )


class ReadPayloadSchema(envelope.ReadPayload):
    class Meta:
        description = (
            "`reader` (the customer, or the agent holding the conversation: `agent_id`) has read "
            "up to the message `up_to`. Both sides' streams carry it: a client shows the other "
            "side's as read marks and ignores its own."
        )


class WhisperPayloadSchema(envelope.WhisperPayload):
    class Meta:
        description = (
            "A supervisor's whisper to the agent holding the session (`agent_id`): on that agent's "
            "stream and the supervisor stream only; not in the transcript."
        )


class BargePayloadSchema(envelope.BargePayload):
    class Meta:
        description = (
            "A supervisor took the session over from `from_agent_id`: on that agent's stream and "
            "the supervisor stream (an audit); the session's stream has agent_left, agent_joined."
        )


PAYLOAD_SCHEMAS: dict[str, type[Schema]] = {
    "connected": ConnectedPayloadSchema,
    "status_change": StatusChangePayloadSchema,
    "transfer_request": TransferRequestPayloadSchema,
    "new_message": NewMessagePayloadSchema,
    "agent_joined": AgentPresencePayloadSchema,
    "agent_left": AgentPresencePayloadSchema,
    "heartbeat": HeartbeatPayloadSchema,
    "typing": TypingPayloadSchema,
    "agent_status": AgentStatusPayloadSchema,
    "queue_update": QueueUpdatePayloadSchema,
    "offer": OfferPayloadSchema,
    "offer_ended": OfferEndedPayloadSchema,
    "note": NotePayloadSchema,
    "read": ReadPayloadSchema,
    "whisper": WhisperPayloadSchema,
    "barge": BargePayloadSchema,
    "rating": RatingPayloadSchema,
}


def _event_schema(type_: str) -> type[Schema]:
    """The envelope of one event type: ``type`` fixed, its payload, the sources that say it."""
    class_name = "".join(part.title() for part in type_.split("_")) + "EventSchema"
    attrs = {
        "type": fields.String(required=True, validate=validate.OneOf([type_])),
        "payload": fields.Nested(PAYLOAD_SCHEMAS[type_], required=True),
        "timestamp": UnixTime(required=True, metadata={"description": "unix seconds, set by the server"}),
        "source": fields.String(
            required=True,
            validate=validate.OneOf(sorted(ALLOWED_SOURCES[type_])),
            metadata={"description": "the sub-app that published it (`system`: the stream itself)"},
        ),
    }
    return type(class_name, (Schema,), attrs)


EVENT_SCHEMAS: dict[str, type[Schema]] = {type_: _event_schema(type_) for type_ in EVENT_TYPES}

# Which events each kind of stream carries (handlers/announce.py, handlers/sse.py).
SESSION_STREAM_EVENTS = (
    "connected",
    "status_change",
    "new_message",
    "agent_joined",
    "agent_left",
    "heartbeat",
    "typing",
    "queue_update",
    "read",
    "rating",
)
AGENT_STREAM_EVENTS = (
    "connected",
    "status_change",
    "transfer_request",
    "new_message",
    "agent_status",
    "offer",
    "offer_ended",
    "whisper",
    "barge",
    "heartbeat",
)
# An agent's stream of a session: the customer's events and the private notes.
WORKBENCH_SESSION_STREAM_EVENTS = (*SESSION_STREAM_EVENTS, "note")
# The supervisor stream: every session's events and notes, the agents' presence, and the
# supervisors' whispers and barges.
SUPERVISOR_STREAM_EVENTS = (*WORKBENCH_SESSION_STREAM_EVENTS, "agent_status", "whisper", "barge")

__all__ = [
    "AGENT_STREAM_EVENTS",
    "ERROR_CODES",
    "EVENT_SCHEMAS",
    "PAYLOAD_SCHEMAS",
    "SESSION_STREAM_EVENTS",
    "SUPERVISOR_STREAM_EVENTS",
    "WORKBENCH_SESSION_STREAM_EVENTS",
    "AgentMessageResponseSchema",
    "ChatResponseSchema",
    "ErrorDetailSchema",
    "ErrorSchema",
    "HealthSchema",
    "MessageSchema",
    "ReadySchema",
    "SessionCreatedSchema",
    "SessionListSchema",
    "SessionSchema",
    "TranscriptSchema",
]
