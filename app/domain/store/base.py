"""The session store interface, its records and its errors."""

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Literal, NotRequired, TypedDict, TypeVar

from app.domain.pages import DEFAULT_PAGE as DEFAULT_PAGE
from app.domain.pages import MAX_PAGE as MAX_PAGE

Status = Literal["bot_active", "waiting_agent", "agent_active", "closed"]
Role = Literal["customer", "bot", "agent", "note"]
Action = Literal["escalate", "takeover", "release", "close"]

T = TypeVar("T")

DAY = 86_400.0


@dataclass(frozen=True, slots=True)
class Bounds:
    """How much a conversation may hold and how long it lives (docs/security.md, "Bounds")."""

    # Closed sessions and their transcripts are deleted this long after closing.
    retention: float = 30 * DAY
    # A bot_active session without a message or a change for this long is closed.
    idle_ttl: float = DAY
    # A transcript keeps its newest messages within both limits.
    transcript_messages: int = 500
    transcript_bytes: int = 512 * 1024

    def ttl(self, status: "Status") -> float:
        """How long a session's keys live after its last write: a closed one for the
        retention, an open one past the idle time too (the sweeper closes it before that;
        the expiry is the backstop when no process runs the sweeper)."""
        return self.retention if status == "closed" else self.idle_ttl + self.retention


class Offer(TypedDict):
    """A waiting conversation offered to one agent (docs/routing.md, "Offers")."""

    agent_id: str
    offered_at: float  # unix seconds
    expires_at: float
    # Why it went to this agent: "queue" (the router's pick) or "transfer" (a named agent).
    kind: str


class Rating(TypedDict):
    """The customer's rating of a closed conversation (docs/api.md, "Satisfaction")."""

    score: int  # 1 to 5
    comment: str | None
    at: int  # unix seconds


class Session(TypedDict):
    session_name: str
    status: Status
    agent_id: str | None
    created_at: int
    updated_at: int
    escalation_reason: str | None
    # What the bot (or whoever escalated) tells the agent so that the customer need not repeat
    # it; set by an escalation, kept through the takeover, cleared when the bot has it back.
    # Absent from sessions stored before it existed.
    handoff_summary: NotRequired[str | None]
    # Increases every time any session enters a status (one counter for all sessions and
    # processes): the queue order. Microseconds since the epoch when it entered its status
    # (or one more than the previous number, if that was later): the sweeper finds sessions
    # idle or past retention by it.
    status_seq: int
    # Routing (docs/routing.md); absent from sessions stored before it existed. When the
    # session last entered waiting_agent (unix seconds): its wait, whatever its place.
    waiting_since: NotRequired[float | None]
    # The one outstanding offer of a waiting session, and the agents who declined it or let
    # it expire (by id, when: not offered again for --offer-timeout), bounded.
    offer: NotRequired[Offer | None]
    declined: NotRequired[dict[str, float]]
    # Waiting past --wait-timeout with the customer's message for later (absent: no).
    message_taken: NotRequired[bool]
    # Held by an agent who has not written yet: since when the customer has waited for its
    # first word (unix seconds); the metric of the time to the first agent answer.
    answer_due: NotRequired[float]
    # Why the server closed it by itself ("customer_idle"); absent when a person closed it.
    closed_reason: NotRequired[str]
    # Read receipts (app.domain.reads): the last message each side ("customer", "agent") read,
    # and the customer's messages the agents' side has not read. Absent: nothing read, 0.
    read: NotRequired[dict[str, str]]
    unread: NotRequired[int]
    # Supervisors' whispers to the agents who held it (docs/security.md); absent: none.
    whispers: NotRequired[int]
    # The customer's rating, once given (only after closing, at most once); absent before.
    rating: NotRequired[Rating | None]
    # Random, given at creation: tokens carry it, so a session re-created under the same name
    # (after retention or data loss) refuses the tokens of the one before.
    incarnation: str


class Message(TypedDict):
    id: str
    role: Role
    content: str
    agent_id: str | None
    created_at: int


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """Part of a listing; ``next_cursor`` continues it (None: nothing more now). A page may
    hold fewer items than asked for (entries of the index that moved on are skipped)."""

    items: list[T]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class Swept:
    """What one sweep did: the idle sessions it closed (announced with ``announce``), and how
    many closed sessions it deleted past retention."""

    closed: list["Transition"]
    deleted: int


@dataclass(frozen=True, slots=True)
class Transition:
    """The outcome of an action: the session after it, whether anything changed, and the
    session before it (None where the caller has no need: the sweeper's closes)."""

    session: Session
    previous_status: Status
    changed: bool
    before: Session | None = None


# A change's status_seq markers: the store numbers a session entering a status at the back of
# its queue (NEW_SEQ, the next number) or at its front (FRONT_SEQ: one before the first).
NEW_SEQ = -1
FRONT_SEQ = -2

# A change of one session, as a pure function: the session after it, or None if it changes
# nothing (answered 200, no event); raises TransitionRefused. A session that enters a status
# has NEW_SEQ or FRONT_SEQ as its status_seq; one that keeps it keeps its number.
Move = Callable[[Session], Session | None]


# An event a change causes: its channel and its envelope (app.domain.announcements says which).
Outgoing = tuple[str, dict[str, Any]]
# The events of a transition, and of a message added to a session. A store publishes them with
# the change, in one atomic step where it can (one Redis script): the change is never made
# without its events, nor its events published without the change.
Announce = Callable[[Transition], Sequence[Outgoing]]
AnnounceMessage = Callable[[Session, Message], Sequence[Outgoing]]
AnnounceStart = Callable[[Session], Sequence[Outgoing]]


class StoreError(Exception):
    pass


class SessionNotFound(StoreError):
    def __init__(self, session_name: str) -> None:
        super().__init__(f"session {session_name!r} does not exist")
        self.session_name = session_name


class SessionExists(StoreError):
    def __init__(self, session_name: str) -> None:
        super().__init__(f"session {session_name!r} already exists")
        self.session_name = session_name


class TransitionRefused(StoreError):
    """The action is not allowed from the session's current state (HTTP 409)."""


class OtherConversation(StoreError):
    """A token of an earlier conversation under this session's name (HTTP 401): the session
    was deleted and started again, with another incarnation."""

    def __init__(self) -> None:
        super().__init__("this token belongs to an earlier conversation under this name")


# How long a bot's lease lasts at most (bot_may_speak): a change that moves the session waits
# this long at worst for a process that died holding one.
BOT_LEASE = 1.0


class InvalidCursor(StoreError):
    """A cursor this listing did not hand out, or one whose place is gone (HTTP 400)."""


class StoreUnavailable(StoreError):
    """The backing store did not answer in time (HTTP 503)."""


class SessionStore(ABC):
    """Every method is atomic: concurrent callers never see or leave a half-done change."""

    name: str

    @abstractmethod
    async def create(self, session_name: str, *, announce: AnnounceStart | None = None) -> Session:
        """Create a session in ``bot_active`` (and publish what ``announce`` makes of it);
        raises SessionExists."""

    @abstractmethod
    async def get(self, session_name: str) -> Session:
        """Raises SessionNotFound."""

    @abstractmethod
    async def get_many(self, session_names: list[str]) -> dict[str, Session]:
        """The sessions of those names that exist."""

    @abstractmethod
    async def get_or_create(
        self, session_name: str, *, announce: AnnounceStart | None = None
    ) -> tuple[Session, bool]:
        """The session, created if new (publishing what ``announce`` makes of it); the flag
        says whether it was created."""

    @abstractmethod
    async def apply(
        self,
        session_name: str,
        action: Action,
        agent_id: str | None = None,
        reason: str | None = None,
        *,
        summary: str | None = None,
        announce: Announce | None = None,
        incarnation: str | None = None,
    ) -> Transition:
        """Apply a state transition (see app.domain.store.rules) and publish what ``announce``
        makes of it, if it changed anything; raises SessionNotFound, TransitionRefused, and
        OtherConversation if ``incarnation`` is given and is not the session's."""

    @abstractmethod
    async def change(
        self,
        session_name: str,
        move: Move,
        *,
        say: Message | None = None,
        announce: Announce | None = None,
        incarnation: str | None = None,
    ) -> Transition:
        """Apply ``move`` (app.domain.store.rules, app.domain.routing.moves) atomically, with
        ``say`` appended to the transcript in the same step if it changed anything, and
        publish what ``announce`` makes of it; raises SessionNotFound, TransitionRefused,
        OtherConversation. ``apply`` is the actions of docs/api.md through here."""

    @abstractmethod
    async def add_message(
        self,
        session_name: str,
        role: Role,
        content: str,
        agent_id: str | None = None,
        *,
        announce: AnnounceMessage | None = None,
        incarnation: str | None = None,
        status_seq: int | None = None,
    ) -> tuple[Session, Message]:
        """Append to the transcript if the session's state allows ``role`` to speak now (and
        ``incarnation``, if given, is the session's; and ``status_seq``, if given, is still
        its status_seq: a bot's reply is refused once the session has moved since the bot
        began it), and publish what ``announce`` makes of it."""

    @abstractmethod
    async def bot_may_speak(self, session_name: str, status_seq: int, token: str) -> bool:
        """The fence of a streamed bot reply (docs/bots.md, "The race"): True if the session is
        still bot_active at ``status_seq``, and then ``token`` holds a short lease until
        ``bot_has_spoken``. A change that moves a bot_active session waits, after it commits,
        for the leases held then, so that nothing the bot was let say is written after the
        change's answer."""

    @abstractmethod
    async def bot_has_spoken(self, session_name: str, token: str) -> None:
        """Give back the lease ``bot_may_speak`` took (its piece is written)."""

    @abstractmethod
    async def list_sessions(
        self, status: Status, *, limit: int = DEFAULT_PAGE, after: str | None = None
    ) -> Page[Session]:
        """Sessions in ``status``, in the order they entered it (first come, first served),
        from after the cursor ``after``; raises InvalidCursor."""

    @abstractmethod
    async def queue_position(self, session_name: str) -> int | None:
        """The session's place among those waiting for an agent, first come first served (1 is
        next); None if it is not waiting."""

    @abstractmethod
    async def count(self, status: Status) -> int:
        """How many sessions are in ``status`` (may count one that has just left it)."""

    @abstractmethod
    async def messages(
        self, session_name: str, *, limit: int = DEFAULT_PAGE, after: str | None = None, notes: bool = False
    ) -> Page[Message]:
        """The transcript (its newest messages within the bounds), oldest first, from after
        the cursor ``after``; the agents' private notes only with ``notes`` (the workbench's
        reads; a customer's, the bot's and everything else never ask); raises SessionNotFound,
        InvalidCursor."""

    @abstractmethod
    async def sweep(self, now: float, *, announce: Announce | None = None) -> Swept:
        """Close sessions idle past ``bounds.idle_ttl`` and delete closed ones past
        ``bounds.retention``, as of ``now`` (unix seconds)."""

    async def close(self) -> None:  # noqa: B027  # a hook: only the Redis store has connections
        """Release connections (the memory store has none)."""


def queue_order(session: Session) -> tuple[int, str]:
    """First come, first served: by the order sessions entered their status."""
    return session["status_seq"], session["session_name"]


def seq_at(unix_seconds: float) -> int:
    """The status_seq of a session that entered its status at ``unix_seconds``."""
    return int(unix_seconds * 1_000_000)


def session_cursor(status_seq: int) -> str:
    return str(status_seq)


def parse_session_cursor(cursor: str | None) -> int:
    """The status_seq a queue page continues after (0: from the start)."""
    if cursor is None:
        return 0
    if not cursor.isascii() or not cursor.isdigit() or len(cursor) > 20:
        raise InvalidCursor(f"not a cursor of this listing: {cursor[:40]!r}")
    return int(cursor)


def page_after(
    messages: list[Message], limit: int, after: str | None, *, notes: bool = False
) -> Page[Message]:
    """A page of a transcript (oldest first); the cursor is the id of a page's last message,
    which must still be in the transcript. Without ``notes`` the agents' private notes are not
    in it at all (nor their ids as cursors)."""
    if not notes:
        messages = [m for m in messages if m["role"] != "note"]
    start = 0
    if after is not None:
        start = next((i + 1 for i, m in enumerate(messages) if m["id"] == after), -1)
        if start < 0:
            raise InvalidCursor("unknown cursor, or its message has left the transcript: start again")
    items = messages[start : start + limit]
    more = start + limit < len(messages)
    return Page(items, items[-1]["id"] if more and items else None)
