"""Which events a state change publishes, in which order (docs/api.md, "Events each action
publishes"). Requests and the sweeper announce through here, so the table lives once; the store
publishes what these return in the same atomic step as the change (app.domain.store)."""

from typing import Any

from app.domain.agents.base import Agent
from app.domain.store import Action, Message, Session, Transition
from app.domain.store.base import Outgoing
from app.webhooks import events as webhook_events
from realtime.channels import BROADCAST, SUPERVISOR_AGENTS, agent_channel, session_channel
from realtime.events import envelope

PRESENCE = {"takeover": "agent_joined", "release": "agent_left"}


def of_transition(
    transition: Transition,
    *,
    action: Action,
    source: str,
    agent_id: str | None = None,
    webhooks: bool = False,
) -> list[Outgoing]:
    """``webhooks``: the change also goes to the webhook queue (--webhook-url)."""
    if not transition.changed:
        return []
    session = transition.session
    name = session["session_name"]
    channel = session_channel(name)
    events: list[Outgoing] = []
    presence = PRESENCE.get(action)
    if presence is not None:
        events.append((channel, envelope(presence, {"session_name": name, "agent_id": agent_id}, source)))
    events.extend(_moved(session, transition.previous_status, source))
    if webhooks:
        events.append(webhook_events.of_change(action, session, transition.previous_status))
    return events


def _moved(session: Session, previous_status: str, source: str) -> list[Outgoing]:
    """A session's status change (or change of holder): on its channel, and on the broadcast,
    where a session entering the queue is a transfer_request (a conversation needs an agent)."""
    name = session["session_name"]
    status_change = {
        "session_name": name,
        "status": session["status"],
        "previous_status": previous_status,
        "agent_id": session["agent_id"],
    }
    if session["status"] == "waiting_agent":
        transfer = {
            "session_name": name,
            "status": session["status"],
            "reason": session["escalation_reason"],
            "summary": session.get("handoff_summary"),
        }
        broadcast = envelope("transfer_request", transfer, source)
    else:
        broadcast = envelope("status_change", status_change, source)
    return [(session_channel(name), envelope("status_change", status_change, source)), (BROADCAST, broadcast)]


# A routing move's webhook record, by the status the conversation enters.
_ENTERED: dict[str, Action] = {
    "waiting_agent": "escalate",
    "agent_active": "takeover",
    "bot_active": "release",
    "closed": "close",
}


def of_route(
    transition: Transition,
    *,
    source: str,
    said: Message | None = None,
    ended: str = "withdrawn",
    webhooks: bool = False,
) -> list[Outgoing]:
    """A routing move's events (app.domain.routing.moves), worked out from the session before
    and after it: who left and joined, the status change (a conversation entering the queue is
    a transfer_request on the broadcast, as an escalation), a new offer to its agent, the end
    of an offer not accepted (``ended`` says why), and ``said``, the notice to the customer
    that the store appends with the move."""
    if not transition.changed:
        return []
    after, before = transition.session, transition.before
    assert before is not None, "a store's change gives the session before it"
    name = after["session_name"]
    channel = session_channel(name)
    events: list[Outgoing] = []
    for type_, agent_id in (("agent_left", before["agent_id"]), ("agent_joined", after["agent_id"])):
        if agent_id is not None and before["agent_id"] != after["agent_id"]:
            events.append((channel, envelope(type_, {"session_name": name, "agent_id": agent_id}, source)))
    moved = (before["status"], before["agent_id"]) != (after["status"], after["agent_id"])
    if moved:
        events.extend(_moved(after, before["status"], source))
    was, offer = before.get("offer"), after.get("offer")
    accepted = was is not None and after["status"] == "agent_active" and after["agent_id"] == was["agent_id"]
    if was is not None and offer != was and not accepted:
        ending = {"session_name": name, "reason": ended}
        events.append((agent_channel(was["agent_id"]), envelope("offer_ended", ending, source)))
    if offer is not None and offer != was:
        payload = {
            "session_name": name,
            "expires_at": offer["expires_at"],
            "reason": after["escalation_reason"],
            "summary": after.get("handoff_summary"),
        }
        events.append((agent_channel(offer["agent_id"]), envelope("offer", payload, source)))
    if said is not None:
        events.extend(of_message(after, said, source="system", to_holder=True))
    if webhooks and moved:
        events.append(webhook_events.of_change(_ENTERED[after["status"]], after, before["status"]))
    return events


def of_agent(agent: Agent, *, source: str, capacity: int) -> list[Outgoing]:
    """An agent's presence or capacity changed: every agent stream hears it (the broadcast),
    and every supervisor stream;
    ``capacity`` is the agent's own or the default."""
    payload = {"agent_id": agent["agent_id"], "status": agent["status"], "capacity": capacity}
    event = envelope("agent_status", payload, source)
    return [(BROADCAST, event), (SUPERVISOR_AGENTS, event)]


def of_start(session: Session, *, webhooks: bool = False) -> list[Outgoing]:
    """A conversation begins: nothing for streams (nobody watches a session not yet made),
    the webhook queue's conversation.started."""
    return [webhook_events.of_start(session)] if webhooks else []


def of_rating(transition: Transition, *, source: str, webhooks: bool = False) -> list[Outgoing]:
    """A closed conversation rated by its customer: ``rating`` on the session's channel (the
    agents' and supervisors' streams, and the customer's other tabs), and conversation.rated."""
    if not transition.changed:
        return []
    session = transition.session
    rating = session.get("rating")
    assert rating is not None, "a rating's change carries the rating"
    name = session["session_name"]
    payload = {"session_name": name, "score": rating["score"], "comment": rating["comment"]}
    events: list[Outgoing] = [(session_channel(name), envelope("rating", payload, source))]
    if webhooks:
        events.append(webhook_events.of_rating(session))
    return events


def of_note(session: Session, note: Message, *, source: str) -> list[Outgoing]:
    """A private note: on the session's channel, where every customer-side stream skips it
    (realtime.events.INTERNAL_TYPES); no webhook."""
    name = session["session_name"]
    return [(session_channel(name), envelope("note", {"session_name": name, "message": note}, source))]


def of_read(transition: Transition, *, reader: str, agent_id: str | None, source: str) -> list[Outgoing]:
    """A read receipt: on the session's channel, for the other side (both sides hear it)."""
    if not transition.changed:
        return []
    session = transition.session
    name = session["session_name"]
    payload: dict[str, Any] = {"session_name": name, "reader": reader, "up_to": session["read"][reader]}
    if agent_id is not None:
        payload["agent_id"] = agent_id
    return [(session_channel(name), envelope("read", payload, source))]


def of_whisper(transition: Transition, *, supervisor_id: str, content: str, source: str) -> list[Outgoing]:
    """A supervisor's whisper: to the holder's own stream, and to the supervisors' (an audit);
    never on the session's channel, which every agent's view of it and its customer hear."""
    if not transition.changed:
        return []
    session = transition.session
    holder = session["agent_id"]
    assert holder is not None
    payload = {
        "session_name": session["session_name"],
        "supervisor_id": supervisor_id,
        "agent_id": holder,
        "content": content,
    }
    event = envelope("whisper", payload, source)
    return [(agent_channel(holder), event), (SUPERVISOR_AGENTS, event)]


def of_barge(session_name: str, *, supervisor_id: str, holder: str, source: str) -> list[Outgoing]:
    """A supervisor took a conversation over: its holder is told on its own stream, the
    supervisors on theirs (the customer hears agent_left and agent_joined, app.domain.routing)."""
    payload = {"session_name": session_name, "supervisor_id": supervisor_id, "from_agent_id": holder}
    event = envelope("barge", payload, source)
    return [(agent_channel(holder), event), (SUPERVISOR_AGENTS, event)]


def of_message(session: Session, message: Message, *, source: str, to_holder: bool = False) -> list[Outgoing]:
    name = session["session_name"]
    payload: dict[str, Any] = {"session_name": name, "message": message}
    events: list[Outgoing] = [(session_channel(name), envelope("new_message", payload, source))]
    holder = session["agent_id"]
    if to_holder and holder is not None and session["status"] == "agent_active":
        events.append((agent_channel(holder), envelope("new_message", payload, source)))
    return events
