"""The live-chat operations of the operation table: typing and read receipts both ways, private
notes, and the customer's rating of a closed conversation."""

from app.web.openapi.operation_parts import AGENT_ERRORS, BODY_ERRORS, CUSTOMER_ERRORS, Answer, Operation

TYPING = (
    "Ephemeral: the event has no id, is never in the history and never replayed. At most one per "
    "sender every 2 s, across processes: more are answered 200 with `sent: false` and dropped. A "
    "client sends it while its user writes (every 2 s at most) and shows the other side's for 5 s "
    "after the last one, or until that side's message arrives. Both sides' streams of the "
    "conversation carry every `typing` of it: a client ignores its own side's (`who`)."
)
TYPING_ANSWER = Answer(200, "Whether it went out.", "TypingAnswer", ("typing.sent", "typing.dropped"))
READ = (
    "`up_to` is a message of the conversation (400 otherwise, or once it has left the "
    "transcript). Forward only: a message at or before the side's read position changes nothing "
    "(200, no event). Otherwise the session's `read` takes it and `read` goes out on the "
    "session's channel (an id: resumable), for the other side."
)

LIVE_OPERATIONS: dict[tuple[str, str], Operation] = {
    ("POST", "/chatbot/api/sessions/{session_name}/rating"): Operation(
        "chatbot",
        "Rate the closed conversation",
        "Once the conversation is closed its customer may rate it, once: `score` 1 to 5 (an "
        "integer: a bool, a float or a string is a 400) and an optional `comment` (an empty one is "
        "none). Kept in the session's `rating` and published as `rating` on the session's channel "
        "(agents, supervisors, and the customer's other tabs, where a rating prompt can go away), "
        "with the webhook `conversation.rated`. Not closed yet: 409 `not_closed`; rated already: "
        "409 `already_rated` (of two at once, one is kept). Token: the session's.",
        (Answer(200, "The session with its rating.", "Session", ("session.rated",)),),
        "customer",
        (
            "error.invalid_name.session",
            "error.validation.rating",
            *BODY_ERRORS,
            *CUSTOMER_ERRORS,
            "error.session_not_found",
            "error.not_closed",
            "error.already_rated",
            "error.rate_limited",
            "error.unavailable",
        ),
        body="RatingRequest",
        body_examples=("request.rating", "request.rating.score"),
    ),
    ("POST", "/workbench/api/sessions/{session_name}/notes"): Operation(
        "workbench",
        "Write a private note",
        "A note on the conversation for agents and supervisors, by any agent, in any status: kept "
        "in the transcript as `role: note` and published as `note` on the session's channel, where "
        "the workbench's session streams and the supervisor stream hear it and every stream of the "
        "chatbot side skips it, live and resumed. The chatbot side's transcript, its "
        "streams and their resumes, and the bot's context never hold a note. Token: an agent's.",
        (Answer(200, "The session, and the note as stored.", "AgentMessageResponse", ("note.added",)),),
        "agent",
        (
            "error.invalid_name.session",
            "error.validation.agent_message",
            *BODY_ERRORS,
            *AGENT_ERRORS,
            "error.forbidden.agent_mismatch",
            "error.session_not_found",
            "error.rate_limited",
            "error.unavailable",
        ),
        body="AgentMessageRequest",
        body_examples=("request.note",),
    ),
    ("POST", "/chatbot/api/sessions/{session_name}/typing"): Operation(
        "chatbot",
        "Say the customer is writing",
        "A `typing` event `{session_name, who: customer}` on the session's channel, for the agent "
        f"watching it. {TYPING} A closed conversation is 409. Token: the session's. No body.",
        (TYPING_ANSWER,),
        "customer",
        (
            "error.invalid_name.session",
            *CUSTOMER_ERRORS,
            "error.session_not_found",
            "error.conflict.closed",
            "error.rate_limited",
            "error.unavailable",
        ),
    ),
    ("POST", "/workbench/api/sessions/{session_name}/typing"): Operation(
        "workbench",
        "Say the agent is writing",
        "A `typing` event `{session_name, who: agent, agent_id}` on the session's channel, for its "
        f"customer. Only the agent holding the conversation (409 otherwise). {TYPING} Token: an "
        "agent's.",
        (TYPING_ANSWER,),
        "agent",
        (
            "error.invalid_name.session",
            "error.validation.agent_action",
            *BODY_ERRORS,
            *AGENT_ERRORS,
            "error.forbidden.agent_mismatch",
            "error.session_not_found",
            "error.conflict.not_holder_typing",
            "error.rate_limited",
            "error.unavailable",
        ),
        body="AgentActionRequest",
        body_examples=("request.agent_action", "request.agent_action.token"),
    ),
    ("POST", "/chatbot/api/sessions/{session_name}/read"): Operation(
        "chatbot",
        "Say how far the customer has read",
        f"{READ} The customer reads in any status. Token: the session's.",
        (Answer(200, "The session after it.", "Session", ("session.read_by_customer",)),),
        "customer",
        (
            "error.invalid_name.session",
            "error.validation.read",
            *BODY_ERRORS,
            *CUSTOMER_ERRORS,
            "error.session_not_found",
            "error.rate_limited",
            "error.unavailable",
        ),
        body="ReadRequest",
        body_examples=("request.read",),
    ),
    ("POST", "/workbench/api/sessions/{session_name}/read"): Operation(
        "workbench",
        "Say how far the agent has read",
        f"{READ} Only the agent holding the conversation (409 otherwise); the session's `unread` "
        "becomes the number of customer messages after `up_to`, which every customer message "
        "raises by one. Token: an agent's.",
        (Answer(200, "The session after it.", "Session", ("session.read_by_agent",)),),
        "agent",
        (
            "error.invalid_name.session",
            "error.validation.read",
            *BODY_ERRORS,
            *AGENT_ERRORS,
            "error.forbidden.agent_mismatch",
            "error.session_not_found",
            "error.conflict.not_holder_read",
            "error.rate_limited",
            "error.unavailable",
        ),
        body="AgentReadRequest",
        body_examples=("request.agent_read", "request.agent_read.token"),
    ),
}
