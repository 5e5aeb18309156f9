"""The supervisors' operations of the operation table: whisper, barge in, re-assign."""

from app.web.openapi.operation_parts import BODY_ERRORS, SUPERVISOR_ERRORS, Answer, Operation

SUPERVISOR = (
    "Token: a supervisor's (`run.py token --supervisor ID`); an agent's is a 403. Under "
    "`--insecure`, the body's `supervisor_id` says who acts."
)
ERRORS = (
    "error.invalid_name.session",
    *BODY_ERRORS,
    *SUPERVISOR_ERRORS,
    "error.forbidden.supervisor_mismatch",
    "error.session_not_found",
)

SUPERVISOR_OPERATIONS: dict[tuple[str, str], Operation] = {
    ("POST", "/workbench/api/sessions/{session_name}/whisper"): Operation(
        "workbench",
        "Whisper to the agent holding a conversation",
        "A note only the agent holding the conversation sees: `whisper {session_name, "
        "supervisor_id, agent_id, content}` on that agent's own channel (its stream, resumable) "
        "and on the supervisor stream, in one atomic step with the check that the agent still "
        "holds it (the session's `whispers` counts them). Never on the session's channel, so "
        "neither the customer nor another agent watching the conversation hears it; not in the "
        f"transcript. A conversation no agent holds is 409. {SUPERVISOR}",
        (Answer(200, "The session after it.", "Session", ("session.whispered",)),),
        "supervisor",
        (
            *ERRORS,
            "error.validation.agent_message",
            "error.conflict.not_held",
            "error.rate_limited",
            "error.unavailable",
        ),
        body="WhisperRequest",
        body_examples=("request.whisper", "request.whisper.token"),
    ),
    ("POST", "/workbench/api/sessions/{session_name}/barge"): Operation(
        "workbench",
        "Barge in: take a conversation over from its agent",
        "The supervisor holds the conversation from now on (`escalation_reason: barge`), counted "
        "against its capacity like a takeover (409 `at_capacity`); the agent holding it is given "
        "its count back. The customer hears `agent_left`, `agent_joined` and a notice; the agent "
        "`barge {session_name, supervisor_id, from_agent_id}` on its own stream, and the "
        "supervisors the same on theirs (an audit). A conversation no agent holds (or one held by "
        f"another agent than when it was read) is 409. {SUPERVISOR}",
        (Answer(200, "The session after it.", "Session", ("session.barged",)),),
        "supervisor",
        (*ERRORS, "error.conflict.not_held", "error.at_capacity", "error.rate_limited", "error.unavailable"),
        body="SupervisorActionRequest",
        body_examples=("request.supervisor_action", "request.supervisor_action.token"),
    ),
    ("POST", "/workbench/api/sessions/{session_name}/reassign"): Operation(
        "workbench",
        "Re-assign a conversation",
        "A held conversation to another agent, or back to the front of the queue; a waiting one "
        "to an agent: directly, in manual and auto assignment alike (no offer), counted against "
        "that agent's capacity (409 `at_capacity`), never to an offline agent (409 "
        "`agent_unavailable`). `note` becomes the session's `handoff_summary`; the customer is "
        f"told. {SUPERVISOR}",
        (Answer(200, "The session after it.", "Session", ("session.reassigned",)),),
        "supervisor",
        (
            *ERRORS,
            "error.validation.transfer",
            "error.conflict.closed",
            "error.at_capacity",
            "error.agent_unavailable",
            "error.rate_limited",
            "error.unavailable",
        ),
        body="ReassignRequest",
        body_examples=("request.reassign", "request.reassign.queue"),
    ),
}
