"""Read receipts (docs/api.md, "Read receipts"): how far each side of a conversation has read,
and how many of the customer's messages the agents' side has not.

A session keeps ``read`` (the id of the last message each side read) and ``unread`` (customer
messages since the agents' side last read: one more with each customer message, in the
message's own atomic step, app.domain.store.rules.after_message). A read names a message; only
the transcript knows which messages follow it, so the reader's handler reads the session, then
the transcript after that message, and the move commits only if neither ``unread`` nor the read
position moved in between (a customer message or another read): else it reads again.
"""

from dataclasses import dataclass
from typing import Literal

from app.domain.pages import MAX_PAGE
from app.domain.store import Session, SessionStore, Transition, TransitionRefused
from app.domain.store.base import Announce, InvalidCursor, Move

Reader = Literal["customer", "agent"]

# Reads racing other changes of one conversation: tries before answering 409.
TRIES = 10


class UnknownMessage(ValueError):
    """``up_to`` is no message of the reader's transcript (or has left it): HTTP 400."""


class _Moved(TransitionRefused):
    """The conversation changed between the reader's reads and its commit."""


@dataclass(frozen=True, slots=True)
class _Seen:
    """What a reader's handler read: the session's read position and unread count then, and
    what the transcript holds after ``up_to``."""

    read: str | None
    unread: int
    customer_after: int
    passes_read: bool


def read_position(session: Session, reader: Reader) -> str | None:
    return session.get("read", {}).get(reader)


def _marked(
    session: Session, reader: Reader, agent_id: str | None, up_to: str, seen: _Seen
) -> Session | None:
    if reader == "agent" and (session["status"] != "agent_active" or session["agent_id"] != agent_id):
        raise TransitionRefused("only the agent holding the conversation reads it for the agents' side")
    if read_position(session, reader) != seen.read or session.get("unread", 0) != seen.unread:
        raise _Moved("the conversation changed while it was read")
    if seen.passes_read:
        return None  # already read this far (or further): nothing changes, nothing is said
    after = session.copy()
    after["read"] = {**session.get("read", {}), reader: up_to}
    if reader == "agent":
        after["unread"] = seen.customer_after
    return after


def mark(reader: Reader, agent_id: str | None, up_to: str, seen: _Seen) -> Move:
    return lambda session: _marked(session, reader, agent_id, up_to, seen)


async def mark_read(
    store: SessionStore,
    session_name: str,
    reader: Reader,
    up_to: str,
    *,
    agent_id: str | None = None,
    announce: Announce,
    incarnation: str | None = None,
) -> Transition:
    """Move ``reader``'s read position to ``up_to`` (forward only: an earlier message changes
    nothing); an agent reads only a conversation it holds (``agent_id``). Raises UnknownMessage,
    and TransitionRefused (also after TRIES races)."""
    notes = reader == "agent"  # an agent may read up to a note; a customer sees none
    for _ in range(TRIES):
        session = await store.get(session_name)
        try:
            page = await store.messages(session_name, after=up_to, limit=MAX_PAGE, notes=notes)
        except InvalidCursor:
            raise UnknownMessage(f"no message {up_to} in this conversation's transcript") from None
        read = read_position(session, reader)
        seen = _Seen(
            read=read,
            unread=session.get("unread", 0),
            customer_after=sum(1 for m in page.items if m["role"] == "customer"),
            # The position is already at up_to, or at a message after it.
            passes_read=read == up_to or any(m["id"] == read for m in page.items),
        )
        try:
            return await store.change(
                session_name, mark(reader, agent_id, up_to, seen), announce=announce, incarnation=incarnation
            )
        except _Moved:
            continue
    raise TransitionRefused("the conversation kept changing while it was read: try again")
