"""Which events a state change publishes, in which order (docs/api.md, "Events each action
publishes"). Requests and the sweeper announce through here, so the table lives once."""

from collections.abc import Awaitable, Callable
from typing import Any

from app.domain.store import Action, Message, Session, Transition
from realtime.channels import BROADCAST, agent_channel, session_channel

# Publishes (channel, event type, payload) with the publisher's source; returns the event id.
Publish = Callable[[str, str, dict[str, Any]], Awaitable[str]]

PRESENCE = {"takeover": "agent_joined", "release": "agent_left"}


async def announce_transition(
    publish: Publish, action: Action, transition: Transition, agent_id: str | None = None
) -> None:
    if not transition.changed:
        return
    session = transition.session
    name = session["session_name"]
    channel = session_channel(name)
    presence = PRESENCE.get(action)
    if presence is not None:
        await publish(channel, presence, {"session_name": name, "agent_id": agent_id})
    status_change = {
        "session_name": name,
        "status": session["status"],
        "previous_status": transition.previous_status,
        "agent_id": session["agent_id"],
    }
    await publish(channel, "status_change", status_change)
    if action == "escalate":
        transfer = {
            "session_name": name,
            "status": session["status"],
            "reason": session["escalation_reason"],
        }
        await publish(BROADCAST, "transfer_request", transfer)
    else:
        await publish(BROADCAST, "status_change", status_change)


async def announce_message(
    publish: Publish, session: Session, message: Message, *, to_holder: bool = False
) -> None:
    name = session["session_name"]
    payload: dict[str, Any] = {"session_name": name, "message": message}
    await publish(session_channel(name), "new_message", payload)
    holder = session["agent_id"]
    if to_holder and holder is not None and session["status"] == "agent_active":
        await publish(agent_channel(holder), "new_message", payload)
