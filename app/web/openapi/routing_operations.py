"""The routing operations of the operation table (docs/routing.md): agents' presence, offers
and transfers."""

from app.web.openapi.operation_parts import AGENT_ERRORS, BODY_ERRORS, Answer, Operation

ROUTING_OPERATIONS: dict[tuple[str, str], Operation] = {
    ("POST", "/workbench/api/sessions/{session_name}/accept"): Operation(
        "workbench",
        "Accept an offer",
        "The conversation offered to this agent (an `offer` event on its stream; auto "
        "assignment, or a transfer to it) becomes `agent_active`, held by it. Accepted already: "
        "200, unchanged. No offer to this agent, or an expired one: 409. Token: an agent's.",
        (Answer(200, "The session, held by the agent.", "Session", ("session.agent_active",)),),
        "agent",
        (
            "error.invalid_name.session",
            "error.validation.agent_action",
            *BODY_ERRORS,
            *AGENT_ERRORS,
            "error.forbidden.agent_mismatch",
            "error.session_not_found",
            "error.conflict.no_offer",
            "error.conflict.offer_expired",
            "error.at_capacity",
            "error.rate_limited",
            "error.unavailable",
        ),
        body="AgentActionRequest",
        body_examples=("request.agent_action", "request.agent_action.token"),
    ),
    ("POST", "/workbench/api/sessions/{session_name}/decline"): Operation(
        "workbench",
        "Decline an offer",
        "The offer to this agent ends; the conversation waits for the next agent, and is not "
        "offered to this one again for --offer-timeout. No offer to this agent: 409. Token: an "
        "agent's.",
        (Answer(200, "The session, waiting, without an offer.", "Session", ("session.declined",)),),
        "agent",
        (
            "error.invalid_name.session",
            "error.validation.agent_action",
            *BODY_ERRORS,
            *AGENT_ERRORS,
            "error.forbidden.agent_mismatch",
            "error.session_not_found",
            "error.conflict.no_offer",
            "error.rate_limited",
            "error.unavailable",
        ),
        body="AgentActionRequest",
        body_examples=("request.agent_action", "request.agent_action.token"),
    ),
    ("POST", "/workbench/api/sessions/{session_name}/transfer"): Operation(
        "workbench",
        "Transfer a session",
        "The holder hands the conversation to another agent (`to_agent_id`) or back to the front "
        "of the queue (`to_queue: true`), with an optional `note` for the next agent (the "
        "session's `handoff_summary`); the customer is told. To an agent: directly in manual "
        "assignment (the agent must not be offline and have room: 409 otherwise), as an offer "
        "in auto assignment (the agent must be online; the conversation waits at the front of "
        "the queue meanwhile). Token: the holder's.",
        (
            Answer(
                200,
                "The session after the transfer.",
                "Session",
                ("session.transferred", "session.offered", "session.requeued"),
            ),
        ),
        "agent",
        (
            "error.invalid_name.session",
            "error.validation.transfer",
            *BODY_ERRORS,
            *AGENT_ERRORS,
            "error.forbidden.agent_mismatch",
            "error.session_not_found",
            "error.conflict.held",
            "error.agent_unavailable",
            "error.at_capacity",
            "error.rate_limited",
            "error.unavailable",
        ),
        body="TransferRequest",
        body_examples=("request.transfer.agent", "request.transfer.queue"),
    ),
    ("POST", "/workbench/api/agents/{agent_id}/status"): Operation(
        "workbench",
        "Set an agent's presence and capacity",
        "`online`, `away` or `offline`, and optionally the most conversations the agent holds at "
        "once (absent: unchanged; --agent-capacity until set). A change goes to every agent "
        "stream as `agent_status`. An agent with no stream open on any process for "
        "--agent-grace becomes `offline` by itself. Token: the agent's own.",
        (Answer(200, "The agent after the change.", "Agent", ("agent.online",)),),
        "agent",
        (
            "error.invalid_name.agent",
            "error.validation.agent_status",
            *BODY_ERRORS,
            *AGENT_ERRORS,
            "error.forbidden.agent_mismatch",
            "error.too_many_agents",
            "error.rate_limited",
            "error.unavailable",
        ),
        body="AgentStatusRequest",
        body_examples=("request.agent_status.online", "request.agent_status.away"),
    ),
    ("GET", "/workbench/api/agents"): Operation(
        "workbench",
        "List the agents",
        "Every agent this deployment knows: presence, capacity and the conversations it holds. "
        "Token: an agent's.",
        (Answer(200, "The agents, by id.", "AgentList", ("agent_list",)),),
        "agent",
        (*AGENT_ERRORS, "error.unavailable"),
    ),
}
