"""The session store interface, its records and its errors."""

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Literal, TypedDict

Status = Literal["bot_active", "waiting_agent", "agent_active", "closed"]
Role = Literal["customer", "bot", "agent"]
Action = Literal["escalate", "takeover", "release", "close"]

TRANSCRIPT_LIMIT = 500


class Session(TypedDict):
    session_name: str
    status: Status
    agent_id: str | None
    created_at: int
    updated_at: int
    escalation_reason: str | None
    # Increases every time any session enters a status (one counter for all sessions and
    # processes): the queue order. Seconds are too coarse to tell arrivals apart.
    status_seq: int


class Message(TypedDict):
    id: str
    role: Role
    content: str
    agent_id: str | None
    created_at: int


@dataclass(frozen=True, slots=True)
class Transition:
    """The outcome of an action: the session after it, and whether anything changed."""

    session: Session
    previous_status: Status
    changed: bool


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


class StoreUnavailable(StoreError):
    """The backing store did not answer in time (HTTP 503)."""


class SessionStore(ABC):
    """Every method is atomic: concurrent callers never see or leave a half-done change."""

    name: str

    @abstractmethod
    async def create(self, session_name: str) -> Session:
        """Create a session in ``bot_active``; raises SessionExists."""

    @abstractmethod
    async def get(self, session_name: str) -> Session:
        """Raises SessionNotFound."""

    @abstractmethod
    async def get_or_create(self, session_name: str) -> tuple[Session, bool]:
        """The session, created if new; the flag says whether it was created."""

    @abstractmethod
    async def apply(
        self, session_name: str, action: Action, agent_id: str | None = None, reason: str | None = None
    ) -> Transition:
        """Apply a state transition (see app.domain.store.rules); raises SessionNotFound,
        TransitionRefused."""

    @abstractmethod
    async def add_message(
        self, session_name: str, role: Role, content: str, agent_id: str | None = None
    ) -> tuple[Session, Message]:
        """Append to the transcript if the session's state allows ``role`` to speak now."""

    @abstractmethod
    async def list_sessions(self, status: Status) -> list[Session]:
        """Sessions in ``status``, in the order they entered it (first come, first served)."""

    @abstractmethod
    async def messages(self, session_name: str) -> list[Message]:
        """The transcript, oldest first, at most TRANSCRIPT_LIMIT messages."""

    async def close(self) -> None:  # noqa: B027  # a hook: only the Redis store has connections
        """Release connections (the memory store has none)."""


def queue_order(session: Session) -> tuple[int, str]:
    """First come, first served: by the order sessions entered their status."""
    return session["status_seq"], session["session_name"]
