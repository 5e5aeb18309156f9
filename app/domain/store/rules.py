"""The state machine of docs/api.md, as pure functions shared by both stores.

Each store runs these inside its own atomic step (a compare-and-set script on Redis), so the
rules live in one place and cannot drift between the Redis and memory implementations.
"""

import secrets
import time
from typing import Any

import orjson

from app.domain.store.base import (
    NEW_SEQ,
    Action,
    Message,
    OtherConversation,
    Role,
    Session,
    Status,
    TransitionRefused,
)


def clock() -> float:
    """Unix seconds, to the microsecond (the routing timers' times)."""
    return time.time()


def now() -> int:
    """Unix seconds, whole (records' times)."""
    return int(clock())


def new_session(session_name: str, status_seq: int) -> Session:
    t = now()
    return Session(
        session_name=session_name,
        status="bot_active",
        agent_id=None,
        created_at=t,
        updated_at=t,
        escalation_reason=None,
        handoff_summary=None,
        status_seq=status_seq,
        incarnation=secrets.token_hex(8),
    )


def encode(record: Session | Message) -> str:
    """A record as stored: compact JSON, non-ASCII text as UTF-8 (an emoji costs its 4 bytes,
    not the 12 of two escapes): what the transcript's byte bound counts."""
    return orjson.dumps(record).decode()


def decode(raw: bytes | str) -> Any:
    """A record as ``encode`` wrote it."""
    return orjson.loads(raw)


def size(record: Any) -> int:
    return len(orjson.dumps(record))


def next_seq(last: int, unix_seconds: float) -> int:
    """The next status_seq: the time in microseconds, or one past the last if that is later."""
    return max(last + 1, int(unix_seconds * 1_000_000))


def last_active(session: Session, newest: Message | None) -> int:
    """When anything last happened in a session: a change of it or its newest message."""
    return max(session["updated_at"], newest["created_at"] if newest is not None else 0)


def is_idle(session: Session, newest: Message | None, now_s: float, idle_ttl: float) -> bool:
    """A bot conversation nobody has touched for ``idle_ttl``."""
    return session["status"] == "bot_active" and last_active(session, newest) <= now_s - idle_ttl


def new_message(role: Role, content: str, agent_id: str | None) -> Message:
    return Message(id=secrets.token_hex(8), role=role, content=content, agent_id=agent_id, created_at=now())


def apply(
    session: Session, action: Action, agent_id: str | None, reason: str | None, summary: str | None = None
) -> Session | None:
    """The session after ``action``; None when the action is a no-op (200, no event).

    Raises TransitionRefused (409) when the action is not allowed from the current state.
    A moved session's ``status_seq`` is NEW_SEQ: the store numbers it.
    """
    status, holder = session["status"], session["agent_id"]
    if action == "takeover" and agent_id is None:
        raise ValueError("takeover needs an agent_id: a session is never held by nobody")
    if action == "escalate":
        if status == "waiting_agent":
            return None
        if status != "bot_active":
            raise TransitionRefused(f"cannot escalate a session that is {status}")
        waiting = moved(session, "waiting_agent", None)
        waiting["escalation_reason"] = reason
        waiting["handoff_summary"] = summary
        return waiting
    if action == "takeover":
        if status == "agent_active":
            if holder == agent_id:
                return None
            raise TransitionRefused(f"session is held by agent {holder}")
        if status not in ("waiting_agent", "bot_active"):
            raise TransitionRefused(f"cannot take over a session that is {status}")
        offer = session.get("offer")
        if offer is not None and offer["agent_id"] != agent_id and offer["expires_at"] > time.time():
            raise TransitionRefused(f"session is offered to agent {offer['agent_id']}")
        return moved(session, "agent_active", agent_id)
    if action == "release":
        _require_holder(session, agent_id, "release")
        released = moved(session, "bot_active", None)
        released["handoff_summary"] = None  # the bot has the conversation back
        return released
    if action == "close":
        if status == "closed":
            raise TransitionRefused("session is already closed")
        if status == "agent_active" and holder != agent_id:
            raise TransitionRefused(f"session is held by agent {holder}")
        return moved(session, "closed", None)
    raise ValueError(f"unknown action {action!r}")


def check_conversation(session: Session, incarnation: str | None) -> None:
    """Raises OtherConversation unless ``incarnation`` (a token's) is None or the session's."""
    if incarnation is not None and incarnation != session["incarnation"]:
        raise OtherConversation()


def check_can_speak(session: Session, role: Role, agent_id: str | None) -> None:
    """Raises TransitionRefused unless ``role`` may add a message to the session now."""
    status = session["status"]
    if role == "customer":
        if status == "closed":
            raise TransitionRefused("session is closed")
    elif role == "bot":
        if status != "bot_active":
            raise TransitionRefused(f"the bot does not answer a session that is {status}")
    elif role == "agent":
        _require_holder(session, agent_id, "send messages to")
    elif role == "note" and agent_id is None:
        raise ValueError("a note is written by an agent")  # any agent, in any status


def check_turn(session: Session, status_seq: int | None) -> None:
    """Raises TransitionRefused if ``status_seq`` is given and the session has moved since."""
    if status_seq is not None and session["status_seq"] != status_seq:
        raise TransitionRefused("the conversation changed hands since the bot began its reply")


def bot_may_speak(session: Session, status_seq: int) -> bool:
    """Whether a bot reply begun at ``status_seq`` may still be written to the customer."""
    return session["status"] == "bot_active" and session["status_seq"] == status_seq


def _require_holder(session: Session, agent_id: str | None, verb: str) -> None:
    status, holder = session["status"], session["agent_id"]
    if status != "agent_active":
        raise TransitionRefused(f"cannot {verb} a session that is {status}")
    if holder != agent_id:
        raise TransitionRefused(f"session is held by agent {holder}")


def moved(session: Session, status: Status, agent_id: str | None, *, seq: int = NEW_SEQ) -> Session:
    """The session entering ``status`` (at the back of its queue, or where ``seq`` says)
    held by ``agent_id``; any offer ends, and a wait begins or ends."""
    after = session.copy()
    after["status"], after["agent_id"], after["updated_at"] = status, agent_id, now()
    after["status_seq"] = seq
    # Absent: none (records stay as small as before routing).
    after.pop("offer", None), after.pop("declined", None), after.pop("waiting_since", None)
    after.pop("answer_due", None), after.pop("message_taken", None)
    if status == "waiting_agent":
        after["waiting_since"] = round(clock(), 3)  # the wait timeout's start, to the ms
    elif status == "agent_active":
        # Since when the customer has waited for this agent's first word.
        after["answer_due"] = session.get("waiting_since") or after["updated_at"]
    return after


def after_message(session: Session, message: Message) -> Session | None:
    """The session after ``message``, if the message changes it (written in the message's own
    atomic step); None if not. A customer message is one more the agents have not read
    (app.domain.reads); an agent's first message since it took the conversation ends the wait
    for an answer (``answer_due``)."""
    if message["role"] == "customer":
        after = session.copy()
        after["unread"] = session.get("unread", 0) + 1
        return after
    if message["role"] != "agent" or session.get("answer_due") is None:
        return None
    after = session.copy()
    del after["answer_due"]
    return after
