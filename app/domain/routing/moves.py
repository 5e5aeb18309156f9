"""The routing moves of a conversation, as pure functions of the session (app.domain.store.base
.Move): each store runs them inside its atomic step, as it runs the actions of
app.domain.store.rules. Every one checks the state it starts from, so that of two processes
doing the same thing (two routers expiring one offer, an accept racing an expiry) one changes
the session and the other is refused or finds nothing to do."""

from app.domain.store.base import FRONT_SEQ, Move, Offer, Session, TransitionRefused
from app.domain.store.rules import moved

# Agents a conversation remembers as having declined it (or let its offer expire).
MAX_DECLINED = 20


def counted_against(session: Session) -> set[str]:
    """The agents a conversation counts against: its holder, or the agent it is offered to."""
    if session["status"] == "agent_active" and session["agent_id"] is not None:
        return {session["agent_id"]}
    offer = session.get("offer")
    if session["status"] == "waiting_agent" and offer is not None:
        return {offer["agent_id"]}
    return set()


def _holding(session: Session, agent_id: str) -> None:
    if session["status"] != "agent_active":
        raise TransitionRefused(f"cannot hand over a session that is {session['status']}")
    if session["agent_id"] != agent_id:
        raise TransitionRefused(f"session is held by agent {session['agent_id']}")


def requeue(holder: str, reason: str, now: float, note: str | None = None) -> Move:
    """The holder's conversation goes back to the front of the queue (its customer has waited
    already): the holder went offline, or handed it to the queue with a note."""

    return lambda session: _requeued(session, holder, reason, now, note)


def _requeued(session: Session, holder: str, reason: str, now: float, note: str | None) -> Session:
    _holding(session, holder)
    waiting = moved(session, "waiting_agent", None, seq=FRONT_SEQ)
    waiting["escalation_reason"] = reason
    if note is not None:
        waiting["handoff_summary"] = note
    # The agent who handed it on is not offered it back at once (as if it had declined it).
    waiting["declined"] = {holder: now}
    return waiting


def _handed(session: Session, to_agent: str, reason: str, note: str | None = None) -> Session:
    """Held by ``to_agent`` now, for ``reason``, with the note for it (if any)."""
    held = moved(session, "agent_active", to_agent)
    held["escalation_reason"] = reason
    if note is not None:
        held["handoff_summary"] = note
    return held


def transfer(holder: str, to_agent: str, note: str | None) -> Move:
    """The holder hands the conversation straight to another agent."""

    def move(session: Session) -> Session:
        _holding(session, holder)
        if to_agent == holder:
            raise TransitionRefused("a conversation is transferred to another agent")
        return _handed(session, to_agent, "transfer", note)

    return move


def _offered(session: Session, agent_id: str, now: float, timeout: float, kind: str) -> Session:
    offered = session.copy()
    offered["offer"] = Offer(agent_id=agent_id, offered_at=now, expires_at=now + timeout, kind=kind)
    return offered


def offer(agent_id: str, status_seq: int, now: float, timeout: float) -> Move:
    """The router offers a waiting conversation (as it read it: ``status_seq``) to an agent,
    unless another offer is out."""

    def move(session: Session) -> Session:
        if session["status"] != "waiting_agent" or session["status_seq"] != status_seq:
            raise TransitionRefused("the conversation has moved since the router read it")
        if session.get("offer") is not None:
            raise TransitionRefused("the conversation is offered already")
        return _offered(session, agent_id, now, timeout, "queue")

    return move


def transfer_offer(holder: str, to_agent: str, note: str | None, now: float, timeout: float) -> Move:
    """In auto assignment a transfer to a named agent is an offer to that agent, the
    conversation waiting at the front of the queue meanwhile (where it stays if declined)."""

    def move(session: Session) -> Session:
        if to_agent == holder:
            raise TransitionRefused("a conversation is transferred to another agent")
        return _offered(_requeued(session, holder, "transfer", now, note), to_agent, now, timeout, "transfer")

    return move


def accept(agent_id: str, now: float) -> Move:
    def move(session: Session) -> Session | None:
        if session["status"] == "agent_active" and session["agent_id"] == agent_id:
            return None  # accepted already
        offer = session.get("offer")
        if session["status"] != "waiting_agent" or offer is None or offer["agent_id"] != agent_id:
            raise TransitionRefused("no offer of this conversation to this agent")
        if offer["expires_at"] <= now:
            raise TransitionRefused("the offer has expired")
        return moved(session, "agent_active", agent_id)

    return move


def withdraw(agent_id: str, now: float, *, offered_at: float | None = None) -> Move:
    """The agent's offer ends unaccepted: declined by the agent, or (``offered_at``: that very
    offer) expired, or withdrawn because the agent went offline. The agent is not offered the
    conversation again for a while."""

    def move(session: Session) -> Session | None:
        offer = session.get("offer")
        if offer is None or offer["agent_id"] != agent_id:
            if offered_at is not None:
                return None  # that offer has ended otherwise
            raise TransitionRefused("no offer of this conversation to this agent")
        if offered_at is not None and offer["offered_at"] != offered_at:
            return None
        left = session.copy()
        left["offer"] = None
        declined = dict(session.get("declined") or {})
        declined[agent_id] = now
        left["declined"] = dict(sorted(declined.items(), key=lambda kv: kv[1])[-MAX_DECLINED:])
        return left

    return move


def time_out(status_seq: int) -> Move:
    """A conversation that waited too long goes back to the bot."""

    def move(session: Session) -> Session | None:
        if session["status"] != "waiting_agent" or session["status_seq"] != status_seq:
            return None
        back = moved(session, "bot_active", None)
        back["escalation_reason"], back["handoff_summary"] = "wait_timeout", None
        return back

    return move


def take_message(status_seq: int) -> Move:
    """A conversation that waited too long keeps its place, and takes the customer's message
    for later (--wait-timeout-action message): its wait timer does not fire again, and its
    customer may leave (it is not closed for being idle)."""

    def move(session: Session) -> Session | None:
        if session["status"] != "waiting_agent" or session["status_seq"] != status_seq:
            return None
        if session.get("message_taken"):
            return None
        taking = session.copy()
        taking["message_taken"] = True
        return taking

    return move


def close_idle(session: Session) -> Session | None:
    """A conversation whose customer has gone is closed, whoever holds it (not one waiting
    with the customer's message for later)."""
    if session["status"] == "closed" or (
        session["status"] == "waiting_agent" and session.get("message_taken")
    ):
        return None
    closed = moved(session, "closed", None)
    closed["closed_reason"] = "customer_idle"
    return closed


# A supervisor's moves (docs/security.md, "Who may do what"). Each names the holder the
# supervisor saw, so that a conversation that changed hands meanwhile is refused, not taken from
# somebody the supervisor never chose to take it from.


def barge(holder: str, supervisor: str) -> Move:
    """The supervisor takes the conversation over from its holder."""

    def move(session: Session) -> Session:
        _holding(session, holder)
        if supervisor == holder:
            raise TransitionRefused("the supervisor holds this conversation already")
        return _handed(session, supervisor, "barge")

    return move


def whispered(holder: str) -> Move:
    """A supervisor's whisper to the holder: counted on the conversation (``whispers``), so that
    it goes out with the check that the holder still holds it, in one atomic step."""

    def move(session: Session) -> Session:
        _holding(session, holder)
        after = session.copy()
        after["whispers"] = session.get("whispers", 0) + 1
        return after

    return move


def reassign(holder: str | None, to_agent: str | None, note: str | None, now: float) -> Move:
    """The supervisor gives the conversation to ``to_agent`` (None: the front of the queue):
    from its holder, or (``holder`` None) from the queue, directly, whatever the assignment."""

    def move(session: Session) -> Session:
        if holder is None:
            if session["status"] != "waiting_agent":
                raise TransitionRefused(f"cannot assign a session that is {session['status']}")
            if to_agent is None:
                raise TransitionRefused("the conversation is in the queue already")
            return _handed(session, to_agent, "reassign", note)
        if to_agent is None:
            return _requeued(session, holder, "reassign", now, note)
        _holding(session, holder)
        if to_agent == holder:
            raise TransitionRefused("the conversation is held by that agent already")
        return _handed(session, to_agent, "reassign", note)

    return move
